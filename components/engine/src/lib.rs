//! The store's state-machine storage engine, behind a trait.
//!
//! Key types: [`KvEngine`] (point reads, atomic [`WriteBatch`] writes across column families,
//! point-in-time [`EngineSnapshot`]s), [`EngineIterator`] (a bounded cursor over one CF of a
//! snapshot), and two implementations that pass one conformance suite: [`RocksEngine`] (RocksDB
//! with the column families in [`ALL_CFS`]) and [`MemEngine`] (ordered maps, for tests).
//!
//! Flow: the apply worker collects a region's [`Modify`]s into a [`WriteBatch`] together with
//! the region's apply state and writes it in one atomic [`KvEngine::write`]; readers take a
//! [`KvEngine::snapshot`] and scan it without blocking writers.
//!
//! This crate is the only one that knows RocksDB. It must not depend on raft, raft-engine, the
//! RPC layer or any crate above it; key layout lives in `codec`.
#![deny(missing_docs)]

mod mem;
mod rocks;
mod write_batch;

#[cfg(test)]
mod conformance;

use std::sync::Arc;

pub use mem::MemEngine;
pub use rocks::{RocksConfig, RocksEngine};
pub use write_batch::{Modify, WriteBatch};

/// Name of a column family.
pub type CfName = &'static str;
/// Values, and anything not in another CF.
pub const CF_DEFAULT: CfName = "default";
/// Percolator locks.
pub const CF_LOCK: CfName = "lock";
/// Percolator commit and rollback records.
pub const CF_WRITE: CfName = "write";
/// Region metadata (region state, apply state, store identity).
pub const CF_RAFT: CfName = "raft";
/// Every column family of the engine.
pub const ALL_CFS: &[CfName] = &[CF_DEFAULT, CF_LOCK, CF_WRITE, CF_RAFT];
/// Column families that hold user data (what a region snapshot carries).
pub const DATA_CFS: &[CfName] = &[CF_DEFAULT, CF_LOCK, CF_WRITE];

/// Errors of the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An I/O or engine error that is not one of the more specific kinds below.
    #[error("engine I/O error: {0}")]
    Io(String),
    /// The disk is full; the store should stop accepting writes rather than crash.
    #[error("no space left on device: {0}")]
    NoSpace(String),
    /// The column family does not exist.
    #[error("unknown column family {0:?}")]
    UnknownCf(String),
    /// Stored data is corrupt.
    #[error("engine data corruption: {0}")]
    Corruption(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, EngineError>;

/// Returns `Err(UnknownCf)` unless `cf` is one of [`ALL_CFS`].
pub fn check_cf(cf: &str) -> Result<()> {
    if ALL_CFS.contains(&cf) {
        Ok(())
    } else {
        Err(EngineError::UnknownCf(cf.to_owned()))
    }
}

/// A key-value engine with column families.
pub trait KvEngine: Send + Sync + 'static {
    /// Reads the latest value of `key` in `cf`.
    fn get_cf(&self, cf: CfName, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Applies `batch` atomically across CFs; with `sync`, it is durable when this returns.
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()>;
    /// A consistent point-in-time view that outlives any borrow of the engine.
    fn snapshot(&self) -> Arc<dyn EngineSnapshot>;
    /// Makes every write so far durable.
    fn sync_wal(&self) -> Result<()>;
    /// Approximate `(bytes, keys)` in `[start, end)` of `cf`; an empty `end` means unbounded.
    /// Implementations may scan the range: call it from a background worker.
    fn approximate_size_and_keys(&self, cf: CfName, start: &[u8], end: &[u8])
        -> Result<(u64, u64)>;
}

/// The visitor of [`EngineSnapshot::scan_cf`]: gets each key and value, returns `Ok(false)` to
/// stop.
pub type ScanCallback<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// A consistent, read-only, point-in-time view of an engine.
pub trait EngineSnapshot: Send + Sync {
    /// Reads `key` in `cf` as of the snapshot.
    fn get_cf(&self, cf: CfName, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// A cursor over `[lower, upper)` of `cf` (`upper` `None` = unbounded).
    fn iter_cf(
        &self,
        cf: CfName,
        lower: &[u8],
        upper: Option<&[u8]>,
    ) -> Result<Box<dyn EngineIterator + '_>>;

    /// Iterates `[lower, upper)` (`upper` `None` = unbounded) forward, or backward from the
    /// largest key `< upper` when `reverse`; the callback returns `Ok(false)` to stop.
    fn scan_cf(
        &self,
        cf: CfName,
        lower: &[u8],
        upper: Option<&[u8]>,
        reverse: bool,
        f: &mut ScanCallback<'_>,
    ) -> Result<()> {
        let mut iter = self.iter_cf(cf, lower, upper)?;
        let mut valid = if reverse {
            iter.seek_to_last()?
        } else {
            iter.seek_to_first()?
        };
        while valid {
            if !f(iter.key(), iter.value())? {
                break;
            }
            valid = if reverse { iter.prev()? } else { iter.next()? };
        }
        Ok(())
    }
}

/// A cursor over one CF of a snapshot, confined to the bounds it was created with.
///
/// Movements return whether the cursor is valid afterwards. `seek` positions at the first key
/// `>= key` (a key below the lower bound seeks to the lower bound), `seek_for_prev` at the last
/// key `<= key` (a key at or above the upper bound seeks to the last key in bounds).
/// `key` and `value` panic when the cursor is not valid.
pub trait EngineIterator {
    /// Positions at the first key `>= key` within bounds.
    fn seek(&mut self, key: &[u8]) -> Result<bool>;
    /// Positions at the last key `<= key` within bounds.
    fn seek_for_prev(&mut self, key: &[u8]) -> Result<bool>;
    /// Positions at the first key within bounds.
    fn seek_to_first(&mut self) -> Result<bool>;
    /// Positions at the last key within bounds.
    fn seek_to_last(&mut self) -> Result<bool>;
    /// Moves to the next key. Panics if not valid.
    fn next(&mut self) -> Result<bool>;
    /// Moves to the previous key. Panics if not valid.
    fn prev(&mut self) -> Result<bool>;
    /// Whether the cursor is at a key.
    fn valid(&self) -> bool;
    /// The current key. Panics if not valid.
    fn key(&self) -> &[u8];
    /// The current value. Panics if not valid.
    fn value(&self) -> &[u8];
}
