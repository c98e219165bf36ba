//! Snapshot-isolation reads over the Percolator column families.
//!
//! A read at `read_ts` first looks at the key's lock (`lock` CF at `z + key`): a prewritten
//! put or delete of a transaction that started at or before `read_ts` may commit below it, so
//! the read reports [`TxnError::KeyIsLocked`] instead of guessing ([`check_lock_conflict`]).
//! Otherwise it walks the key's records in the `write` CF from `z + key + !read_ts` (newest
//! first), skipping `Lock` and `Rollback` records, up to the first `Put` (the value, inline or
//! in the `default` CF at `key + start_ts`) or `Delete` (absent).
//!
//! Scans ([`scan`]) merge one cursor over the `lock` CF with one over the `write` CF, visit each
//! user key once, and position with one seek into the key's versions and one seek past them.
//!
//! Must not depend on the raftstore, the RPC layer or a clock: everything comes in as arguments.

mod reader;
mod scan;

#[cfg(test)]
mod tests;

/// Exclusive bound past the versions of a key, for tests of other modules.
#[cfg(test)]
pub(crate) use reader::versions_end as tests_versions_end;
pub use reader::{batch_get, check_lock_conflict, get, TxnKvPair};
pub(crate) use reader::{
    get_txn_commit_record, latest_data_write, load_lock, read_value, seek_write, CommitRecord,
};
pub use scan::{scan, scan_locks, ScanEntry, TxnScanOptions};
