//! Request limits and storage settings, with documented defaults.

use serde::{Deserialize, Serialize};

/// Limits every request is checked against before anything is read or written (the checks
/// are `wire_check`'s, which the server runs with these numbers), and latch and orphan-lock
/// settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Largest key, in bytes after the keyspace prefix. Default 8 KiB.
    pub key_max_bytes: usize,
    /// Largest value, in bytes. Default 8 MiB.
    pub value_max_bytes: usize,
    /// Most keys (or ranges) in one batch request. Default 10 000.
    pub batch_keys_max: usize,
    /// Largest `limit` of one scan (per range for batch scans). Default 10 240.
    pub scan_limit_max: usize,
    /// Number of latch slots keys are hashed into. Default 2 048.
    pub latch_slots: usize,
    /// A transaction at least this old (by its start timestamp against the request's
    /// current_ts) whose primary key has neither a lock nor a commit record is rolled back by
    /// `CheckTxnStatus` even when the caller did not ask for `rollback_if_not_exist`. Its
    /// primary prewrite never landed, so a rollback record there makes sure it never commits.
    /// `tikv-client` 0.4 cannot act on the `txn_not_found` error it would otherwise get (its
    /// retry path never sees the error unwrapped), so without this an orphaned secondary lock
    /// blocks its readers for good. Default 10 s (the client's locks live 3 s, 20 s at most
    /// with heartbeats, which go to the primary lock this transaction does not have).
    pub orphan_txn_rollback_after_ms: u64,
    /// Below this many available bytes the store refuses writes that add data (answered with
    /// the `DiskFull` region error; deletes, GC and reads go on) until space returns. The room
    /// keeps RocksDB and the raft log clear of a real "no space left". 0 never refuses.
    /// Default 256 MiB.
    pub reserve_space_bytes: u64,
    /// Space the store may use for its data dir; 0 (default) means the whole filesystem.
    /// Available bytes are then the smaller of the filesystem's free space and this minus the
    /// bytes under the data dir (set it to test disk-full handling, or to share a disk).
    pub capacity_bytes: u64,
    /// How often the free space is measured. Default 1 s.
    pub disk_check_interval_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            key_max_bytes: 8 << 10,
            value_max_bytes: 8 << 20,
            batch_keys_max: 10_000,
            scan_limit_max: 10_240,
            latch_slots: 2_048,
            orphan_txn_rollback_after_ms: 10_000,
            reserve_space_bytes: 256 << 20,
            capacity_bytes: 0,
            disk_check_interval_ms: 1_000,
        }
    }
}

impl StorageConfig {
    /// Rejects limits that cannot work; called at start-up.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.key_max_bytes == 0 || self.value_max_bytes == 0 {
            return Err("key_max_bytes and value_max_bytes must be > 0".into());
        }
        if self.batch_keys_max == 0 || self.scan_limit_max == 0 {
            return Err("batch_keys_max and scan_limit_max must be > 0".into());
        }
        if self.latch_slots == 0 {
            return Err("latch_slots must be > 0".into());
        }
        if self.disk_check_interval_ms == 0 {
            return Err("disk_check_interval_ms must be > 0".into());
        }
        if self.capacity_bytes != 0 && self.capacity_bytes <= self.reserve_space_bytes {
            return Err("capacity_bytes must be 0 or above reserve_space_bytes".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let cfg = StorageConfig {
            key_max_bytes: 4,
            value_max_bytes: 3,
            batch_keys_max: 2,
            ..Default::default()
        };
        cfg.validate().unwrap();
        assert!(StorageConfig {
            latch_slots: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
