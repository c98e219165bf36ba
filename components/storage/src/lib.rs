//! Raw and transactional key-value semantics of a store, pure over an engine snapshot.
//!
//! Key types: [`StorageConfig`] (key, value and response limits; keys and values are checked
//! with `wire_check` before anything is read or written), [`ResponseBudget`] (the response
//! limit, charged as a read collects pairs),
//! [`StorageError`] (typed request errors, answered in the response's `error` string),
//! [`Modify`] (a change to apply through raft, keys memcomparable-encoded), [`Latches`]
//! (per-key serialization of CAS and writes on one store), and the functions of [`raw`].
//!
//! Flow: the server checks a request against the [`StorageConfig`] limits, takes the latches of the keys it
//! writes, obtains a read view of the region from the raftstore, calls a `raw_*` function here
//! (reads return user keys and values, writes return [`Modify`] lists), and proposes the
//! modifications to raft. Values carry an optional expiry (see [`raw::value`]); `now_secs` is
//! always passed in, so nothing here reads a clock or does I/O besides reading the snapshot.
//!
//! Transactions: [`mvcc`] reads at a timestamp (snapshot isolation), [`txn`] holds the
//! Percolator write actions (prewrite, commit, rollback, lock resolution, pessimistic locks,
//! GC), each returning the [`Modify`]s to propose; [`ConcurrencyManager`] keeps the store's
//! `max_ts` and in-memory locks for async commit. Types come from `txn_types`.
//!
//! Must not depend on: `raftstore`, `pd_client`, `proto`, tonic. The server joins this crate
//! with the raftstore.
#![deny(missing_docs)]

mod concurrency_manager;
mod config;
mod errors;
mod latch;
pub mod mvcc;
pub mod raw;
pub mod txn;

#[cfg(test)]
mod test_util;

pub use concurrency_manager::{ConcurrencyManager, MemoryLockGuard};
pub use config::StorageConfig;
pub use errors::{ResponseBudget, Result, StorageError};
pub use latch::{LatchGuard, Latches};
pub use raw::{CasExpect, CasOutcome, KvPair, Modify, RegionRange, ScanOptions, ScanRange};

use engine::{CfName, CF_DEFAULT, CF_LOCK, CF_WRITE};

/// Maps a request's column family name to the engine's; empty means `default`.
/// Only data column families are reachable by clients.
pub fn cf_from_request(cf: &str) -> Result<CfName> {
    match cf {
        "" | "default" => Ok(CF_DEFAULT),
        "lock" => Ok(CF_LOCK),
        "write" => Ok(CF_WRITE),
        other => Err(StorageError::InvalidCf(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cf_names() {
        assert_eq!(cf_from_request("").unwrap(), CF_DEFAULT);
        assert_eq!(cf_from_request("default").unwrap(), CF_DEFAULT);
        assert_eq!(cf_from_request("write").unwrap(), CF_WRITE);
        assert!(matches!(
            cf_from_request("raft"),
            Err(StorageError::InvalidCf(_))
        ));
    }
}
