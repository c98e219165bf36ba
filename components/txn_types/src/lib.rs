//! The vocabulary of Percolator transactions: timestamps, keys, locks, commit records and
//! mutations, with their stored byte formats.
//!
//! Key types: [`TimeStamp`] (a TSO timestamp, `physical_ms << 18 | logical`), [`Key`] (a
//! memcomparable-encoded client key, the form keys take in every column family), [`Lock`] (a
//! record of the `lock` CF), [`Write`] (a commit or rollback record of the `write` CF),
//! [`Mutation`] (one key of a prewrite) and [`LockInfo`] (what a reader is told about a lock).
//!
//! Flow: the MVCC layer in `storage` parses what it reads from the engine with [`Lock::parse`]
//! and [`Write::parse`] and stores records built with `to_bytes`. Values up to
//! [`SHORT_VALUE_MAX_LEN`] bytes are kept inline in the lock and the write record; longer ones go
//! to the `default` CF at `key + start_ts`.
//!
//! The byte formats are our own (not TiKV's): a leading tag byte names the record kind and its
//! format version, integers are fixed-width big-endian, byte strings are length-prefixed.
//! Decoders return a typed [`Error`] on truncated or malformed input and never panic.
//!
//! Must not depend on anything but `codec` and `thiserror`.
#![deny(missing_docs)]

mod bytes;
mod lock;
mod types;
mod write;

pub use lock::{Lock, LockInfo, LockType};
pub use types::{Key, Mutation, TimeStamp};
pub use write::{Write, WriteType};

/// Values up to this many bytes live inline in locks and write records.
pub const SHORT_VALUE_MAX_LEN: usize = 255;

/// Errors from decoding stored keys and records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A key is not a valid memcomparable encoding (or lacks its timestamp).
    #[error("bad key: {0}")]
    Codec(#[from] codec::CodecError),
    /// The record ended before a field could be read.
    #[error("truncated {record}: needed {needed_bytes} more bytes")]
    Truncated {
        /// Kind of record being decoded.
        record: &'static str,
        /// Bytes the next field needs beyond what is left.
        needed_bytes: usize,
    },
    /// The leading tag byte is not one this version writes.
    #[error("unknown {record} format tag {tag:#04x}")]
    BadTag {
        /// Kind of record being decoded.
        record: &'static str,
        /// The tag found.
        tag: u8,
    },
    /// A field holds a value outside its domain.
    #[error("bad {field} {value} in {record}")]
    BadField {
        /// Kind of record being decoded.
        record: &'static str,
        /// Field name.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// Bytes remain after the last field.
    #[error("{extra_bytes} trailing bytes after {record}")]
    TrailingBytes {
        /// Kind of record being decoded.
        record: &'static str,
        /// Bytes left over.
        extra_bytes: usize,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
