//! Request limits of the raw API, with documented defaults.

use serde::{Deserialize, Serialize};

use crate::{Result, StorageError};

/// Bytes of the API V2 keyspace prefix (`r` + 3-byte keyspace id) that clients put in front of
/// every key; the key limit is measured after it.
pub const KEYSPACE_PREFIX_BYTES: usize = 4;

/// Limits every raw request is checked against before anything is read or written.
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

    /// Checks one key's size (the keyspace prefix does not count).
    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        let size = key.len().saturating_sub(KEYSPACE_PREFIX_BYTES);
        if size > self.key_max_bytes {
            return Err(StorageError::KeyTooLarge {
                size,
                max: self.key_max_bytes,
            });
        }
        Ok(())
    }

    /// Checks one value's size.
    pub fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.value_max_bytes {
            return Err(StorageError::ValueTooLarge {
                size: value.len(),
                max: self.value_max_bytes,
            });
        }
        Ok(())
    }

    /// Checks the number of items in a batch.
    pub fn check_batch(&self, size: usize) -> Result<()> {
        if size > self.batch_keys_max {
            return Err(StorageError::BatchTooLarge {
                size,
                max: self.batch_keys_max,
            });
        }
        Ok(())
    }

    /// Checks a batch of keys: their count and each size.
    pub fn check_keys<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<()> {
        self.check_batch(keys.len())?;
        keys.iter().try_for_each(|k| self.check_key(k.as_ref()))
    }

    /// Checks a scan's limit.
    pub fn check_scan_limit(&self, limit: usize) -> Result<()> {
        if limit > self.scan_limit_max {
            return Err(StorageError::ScanLimitTooLarge {
                limit,
                max: self.scan_limit_max,
            });
        }
        Ok(())
    }

    /// Checks a `[start, end)` range: both key sizes, and `start <= end` unless `end` is empty
    /// (unbounded).
    pub fn check_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        self.check_key(start)?;
        self.check_key(end)?;
        if !end.is_empty() && start > end {
            return Err(StorageError::InvalidRange {
                start: start.to_vec(),
                end: end.to_vec(),
            });
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
        assert!(cfg.check_key(b"r\0\0\0abcd").is_ok());
        assert_eq!(
            cfg.check_key(b"r\0\0\0abcde"),
            Err(StorageError::KeyTooLarge { size: 5, max: 4 })
        );
        assert!(cfg.check_value(b"abc").is_ok());
        assert!(matches!(
            cfg.check_value(b"abcd"),
            Err(StorageError::ValueTooLarge { .. })
        ));
        assert!(matches!(
            cfg.check_keys(&[b"a", b"b", b"c"]),
            Err(StorageError::BatchTooLarge { .. })
        ));
        assert!(cfg.check_range(b"a", b"").is_ok());
        assert!(matches!(
            cfg.check_range(b"b", b"a"),
            Err(StorageError::InvalidRange { .. })
        ));
        assert!(StorageConfig {
            latch_slots: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
