//! Byte codecs and the store's key layout.
//!
//! This crate is the single place that knows how keys are laid out as bytes:
//! [`memcomparable`] encodes user keys so that byte order equals key order (byte-identical to
//! TiKV's `codec::bytes::encode_bytes`, which the official client relies on when it talks to PD),
//! [`number`] encodes integers in ascending or descending big-endian order, and [`keys`] builds
//! the keys of a store's RocksDB: data keys (`z` + encoded key), local region-metadata keys
//! (`0x01 ..`), TiKV API V2 keyspace prefixes and MVCC keys (encoded key + descending ts).
//!
//! Flow: a client key `k` in keyspace `n` becomes `r|x + n(3 bytes) + k`, is memcomparable
//! encoded (that is what region boundaries hold), gets a descending timestamp appended for MVCC,
//! and is prefixed with `z` before it reaches the engine.
//!
//! Every decoder returns a typed [`CodecError`] on malformed input and never panics.
//! This crate must not depend on anything but `thiserror`: engines, raft and RPC build on it.
#![deny(missing_docs)]

pub mod hex;
pub mod keys;
pub mod memcomparable;
pub mod number;

pub use memcomparable::{decode_bytes, encode_bytes, encode_bytes_to, encoded_len};
pub use number::{decode_u64, decode_u64_desc, encode_u64, encode_u64_desc};

/// Errors from decoding malformed bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended before a complete value was read.
    #[error("truncated input: needed {needed_bytes} bytes, {available_bytes} available")]
    Truncated {
        /// Bytes required to decode the next item.
        needed_bytes: usize,
        /// Bytes that were left in the input.
        available_bytes: usize,
    },
    /// A memcomparable group's marker byte is not in `0xF7..=0xFF`.
    #[error("bad memcomparable marker {marker:#04x} at offset {offset}")]
    BadMarker {
        /// The marker byte found.
        marker: u8,
        /// Offset of the marker byte in the input.
        offset: usize,
    },
    /// A memcomparable group's padding bytes are not all zero.
    #[error("bad memcomparable padding in group at offset {offset}")]
    BadPadding {
        /// Offset of the group in the input.
        offset: usize,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, CodecError>;
