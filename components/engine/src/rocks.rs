//! [`RocksEngine`]: the RocksDB implementation of [`KvEngine`].

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, BoundColumnFamily, Cache, ColumnFamilyDescriptor,
    DBRawIteratorWithThreadMode, ErrorKind, MultiThreaded, Options, ReadOptions,
    SnapshotWithThreadMode, WriteOptions,
};
use serde::{Deserialize, Serialize};

use crate::{
    check_cf, CfName, EngineError, EngineIterator, EngineSnapshot, KvEngine, Modify, Result,
    WriteBatch, ALL_CFS,
};

type Db = rocksdb::DBWithThreadMode<MultiThreaded>;

/// Tuning of the RocksDB engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RocksConfig {
    /// LRU block cache shared by every CF. Default 128 MiB.
    pub block_cache_bytes: usize,
    /// Memtable size per CF before it is flushed. Default 64 MiB.
    pub write_buffer_bytes: usize,
    /// Background flush and compaction threads. Default 2 (one per core on the target box).
    pub max_background_jobs: i32,
}

impl Default for RocksConfig {
    fn default() -> Self {
        RocksConfig {
            block_cache_bytes: 128 << 20,
            write_buffer_bytes: 64 << 20,
            max_background_jobs: 2,
        }
    }
}

impl From<rocksdb::Error> for EngineError {
    fn from(e: rocksdb::Error) -> Self {
        let kind = e.kind();
        let message = e.into_string();
        if message.contains("No space left") {
            EngineError::NoSpace(message)
        } else if kind == ErrorKind::Corruption {
            EngineError::Corruption(message)
        } else {
            EngineError::Io(message)
        }
    }
}

/// RocksDB with the column families in [`ALL_CFS`]. Cloning shares the database.
#[derive(Clone)]
pub struct RocksEngine {
    db: Arc<Db>,
}

impl RocksEngine {
    /// Opens (creating if missing) the database at `path`, with every CF in [`ALL_CFS`].
    pub fn open(path: impl AsRef<Path>, cfg: &RocksConfig) -> Result<RocksEngine> {
        let path = path.as_ref();
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(cfg.max_background_jobs);
        let cache = Cache::new_lru_cache(cfg.block_cache_bytes);
        let mut block_opts = BlockBasedOptions::default();
        block_opts.set_block_cache(&cache);
        // Bloom filters make point gets on absent keys (lock checks) cheap.
        block_opts.set_bloom_filter(10.0, false);
        let mut cf_opts = Options::default();
        cf_opts.set_write_buffer_size(cfg.write_buffer_bytes);
        cf_opts.set_block_based_table_factory(&block_opts);
        // RocksDB refuses to open a database without naming every CF it has.
        let mut names: Vec<String> = ALL_CFS.iter().map(|cf| cf.to_string()).collect();
        if let Ok(existing) = Db::list_cf(&db_opts, path) {
            for name in existing {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let descriptors = names
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, cf_opts.clone()));
        let db = Db::open_cf_descriptors(&db_opts, path, descriptors)?;
        Ok(RocksEngine { db: Arc::new(db) })
    }

    /// Directory of the database.
    pub fn path(&self) -> &Path {
        self.db.path()
    }
}

fn cf_handle<'a>(db: &'a Db, cf: &str) -> Result<Arc<BoundColumnFamily<'a>>> {
    check_cf(cf)?;
    db.cf_handle(cf)
        .ok_or_else(|| EngineError::UnknownCf(cf.to_owned()))
}

impl KvEngine for RocksEngine {
    fn get_cf(&self, cf: CfName, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let handle = cf_handle(&self.db, cf)?;
        Ok(self.db.get_cf(&handle, key)?)
    }

    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for modify in batch {
            let handle = cf_handle(&self.db, modify.cf())?;
            match modify {
                Modify::Put { key, value, .. } => wb.put_cf(&handle, key, value),
                Modify::Delete { key, .. } => wb.delete_cf(&handle, key),
                Modify::DeleteRange { start, end, .. } => wb.delete_range_cf(&handle, start, end),
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        Ok(self.db.write_opt(wb, &opts)?)
    }

    fn snapshot(&self) -> Arc<dyn EngineSnapshot> {
        Arc::new(RocksSnapshot::new(self.db.clone()))
    }

    fn sync_wal(&self) -> Result<()> {
        Ok(self.db.flush_wal(true)?)
    }

    /// Scans the range, summing key and value bytes: exact, but costs a scan.
    fn approximate_size_and_keys(
        &self,
        cf: CfName,
        start: &[u8],
        end: &[u8],
    ) -> Result<(u64, u64)> {
        let handle = cf_handle(&self.db, cf)?;
        let upper = if end.is_empty() { None } else { Some(end) };
        let mut iter = self
            .db
            .raw_iterator_cf_opt(&handle, bounded_read_opts(start, upper, false));
        iter.seek_to_first();
        let (mut size, mut keys) = (0u64, 0u64);
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            size += (key.len() + value.len()) as u64;
            keys += 1;
            iter.next();
        }
        iter.status()?;
        Ok((size, keys))
    }
}

fn bounded_read_opts(lower: &[u8], upper: Option<&[u8]>, fill_cache: bool) -> ReadOptions {
    let mut opts = ReadOptions::default();
    opts.fill_cache(fill_cache);
    opts.set_iterate_lower_bound(lower.to_vec());
    if let Some(upper) = upper {
        opts.set_iterate_upper_bound(upper.to_vec());
    }
    opts
}

/// A RocksDB snapshot that owns a handle on its database, so it can outlive the engine borrow.
struct RocksSnapshot {
    // Field order matters: fields drop in declaration order, so the snapshot is released while
    // `db` still keeps the database alive.
    snap: SnapshotWithThreadMode<'static, Db>,
    db: Arc<Db>,
}

impl RocksSnapshot {
    fn new(db: Arc<Db>) -> Self {
        let snap = db.snapshot();
        // SAFETY: the snapshot borrows the `Db` inside the Arc, whose heap address is stable.
        // We store a clone of that Arc next to the snapshot and drop the snapshot first (field
        // order), so the borrowed `Db` outlives the snapshot. Nothing hands out the 'static
        // lifetime: iterators and reads are tied to `&self`.
        let snap = unsafe {
            std::mem::transmute::<SnapshotWithThreadMode<'_, Db>, SnapshotWithThreadMode<'static, Db>>(
                snap,
            )
        };
        RocksSnapshot { snap, db }
    }

    fn db(&self) -> &Db {
        &self.db
    }
}

impl EngineSnapshot for RocksSnapshot {
    fn get_cf(&self, cf: CfName, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let handle = cf_handle(self.db(), cf)?;
        Ok(self.snap.get_cf(&handle, key)?)
    }

    fn iter_cf(
        &self,
        cf: CfName,
        lower: &[u8],
        upper: Option<&[u8]>,
    ) -> Result<Box<dyn EngineIterator + '_>> {
        let handle = cf_handle(self.db(), cf)?;
        let iter = self
            .snap
            .raw_iterator_cf_opt(&handle, bounded_read_opts(lower, upper, true));
        Ok(Box::new(RocksIterator { iter }))
    }
}

struct RocksIterator<'a> {
    iter: DBRawIteratorWithThreadMode<'a, Db>,
}

impl RocksIterator<'_> {
    fn checked(&self) -> Result<bool> {
        self.iter.status()?;
        Ok(self.iter.valid())
    }
}

impl EngineIterator for RocksIterator<'_> {
    fn seek(&mut self, key: &[u8]) -> Result<bool> {
        self.iter.seek(key);
        self.checked()
    }

    fn seek_for_prev(&mut self, key: &[u8]) -> Result<bool> {
        self.iter.seek_for_prev(key);
        self.checked()
    }

    fn seek_to_first(&mut self) -> Result<bool> {
        self.iter.seek_to_first();
        self.checked()
    }

    fn seek_to_last(&mut self) -> Result<bool> {
        self.iter.seek_to_last();
        self.checked()
    }

    fn next(&mut self) -> Result<bool> {
        assert!(self.iter.valid(), "next on an invalid iterator");
        self.iter.next();
        self.checked()
    }

    fn prev(&mut self) -> Result<bool> {
        assert!(self.iter.valid(), "prev on an invalid iterator");
        self.iter.prev();
        self.checked()
    }

    fn valid(&self) -> bool {
        self.iter.valid()
    }

    fn key(&self) -> &[u8] {
        self.iter.key().expect("iterator is not valid")
    }

    fn value(&self) -> &[u8] {
        self.iter.value().expect("iterator is not valid")
    }
}
