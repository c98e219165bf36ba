//! Where PD persists its state: a small key-value trait with a RocksDB implementation (the
//! real one, fsync'd writes) and an in-memory twin for tests.

use std::collections::BTreeMap;
use std::path::Path;

use engine::{KvEngine, RocksConfig, RocksEngine, WriteBatch, CF_DEFAULT};
use parking_lot::Mutex;

use crate::{PdError, Result};

/// PD's durable key-value storage. `write` is atomic and durable when it returns.
pub trait MetaStore: Send + Sync {
    /// The value of `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Writes every pair atomically and durably; an empty value deletes the key.
    fn write(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()>;
    /// Every non-deleted pair whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// In-memory [`MetaStore`] for tests.
#[derive(Default)]
pub struct MemMetaStore {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MetaStore for MemMetaStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.lock().get(key).cloned())
    }

    fn write(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut map = self.map.lock();
        for (k, v) in pairs {
            if v.is_empty() {
                map.remove(k);
            } else {
                map.insert(k.clone(), v.clone());
            }
        }
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let map = self.map.lock();
        Ok(map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// [`MetaStore`] on the `engine` crate's RocksDB, every write fsync'd.
pub struct RocksMetaStore {
    engine: RocksEngine,
}

impl RocksMetaStore {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let engine = RocksEngine::open(dir, &RocksConfig::default()).map_err(storage_err)?;
        Ok(RocksMetaStore { engine })
    }

    /// The engine underneath (PD's replication keeps its raft log in the `raft` CF).
    pub(crate) fn engine(&self) -> &RocksEngine {
        &self.engine
    }
}

fn storage_err(e: impl std::fmt::Display) -> PdError {
    PdError::Storage(e.to_string())
}

/// The smallest key greater than every key starting with `prefix` (None: no bound).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Every pair of `cf` whose key starts with `prefix` (an empty prefix: the whole CF), in key
/// order.
pub(crate) fn scan_cf_prefix(
    engine: &RocksEngine,
    cf: &'static str,
    prefix: &[u8],
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let upper = prefix_end(prefix);
    engine
        .snapshot()
        .scan_cf(cf, prefix, upper.as_deref(), false, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })
        .map_err(storage_err)?;
    Ok(out)
}

impl MetaStore for RocksMetaStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let value = self.engine.get_cf(CF_DEFAULT, key).map_err(storage_err)?;
        Ok(value.filter(|v| !v.is_empty()))
    }

    fn write(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut wb = WriteBatch::default();
        for (k, v) in pairs {
            if v.is_empty() {
                wb.delete_cf(CF_DEFAULT, k);
            } else {
                wb.put_cf(CF_DEFAULT, k, v);
            }
        }
        self.engine.write(&wb, true).map_err(storage_err)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut pairs = scan_cf_prefix(&self.engine, CF_DEFAULT, prefix)?;
        pairs.retain(|(_, v)| !v.is_empty());
        Ok(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bumps_last_byte() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
    }

    #[test]
    fn mem_store_deletes_on_empty_value() {
        let s = MemMetaStore::default();
        s.write(&[
            (b"a/1".to_vec(), b"x".to_vec()),
            (b"b".to_vec(), b"y".to_vec()),
        ])
        .unwrap();
        assert_eq!(s.scan_prefix(b"a/").unwrap().len(), 1);
        s.write(&[(b"a/1".to_vec(), Vec::new())]).unwrap();
        assert!(s.get(b"a/1").unwrap().is_none());
    }
}
