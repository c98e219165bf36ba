//! Request limits and storage settings, with documented defaults.

use serde::{Deserialize, Serialize};

/// Limits of what one request may carry and one response may return, and latch, orphan-lock
/// and disk settings.
///
/// Keys and values are checked before anything is read or written (`wire_check`, which the
/// server runs with these numbers). The number of items in a request is not limited, as in
/// TiKV: a request is bounded by its bytes (the server's `grpc_message_max_bytes`), a write
/// by the raft entry it makes (`raftstore.raft_entry_max_bytes`, answered `RaftEntryTooLarge`)
/// and a read by the response it makes ([`StorageConfig::response_max_bytes`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Largest key, in bytes after the keyspace prefix. Default 8 KiB.
    pub key_max_bytes: usize,
    /// Largest value, in bytes. Default 8 MiB.
    pub value_max_bytes: usize,
    /// Largest response of a read that returns many pairs or locks (batch get, scan, scan
    /// lock), counted as the bytes of its keys and values. A read that would return more is
    /// answered with [`crate::StorageError::ResponseTooLarge`] rather than cut short, because
    /// tikv-client 0.4 takes a short answer from a region for the whole of it. Default 10 MiB,
    /// TiKV's `max-grpc-send-msg-len`; it must hold one largest key and value.
    pub response_max_bytes: usize,
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
            response_max_bytes: 10 << 20,
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
        if self.response_max_bytes < self.key_max_bytes + self.value_max_bytes {
            return Err("response_max_bytes must hold key_max_bytes + value_max_bytes".into());
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
            ..Default::default()
        };
        cfg.validate().unwrap();
        assert!(StorageConfig {
            response_max_bytes: 8 << 20,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(StorageConfig {
            latch_slots: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
