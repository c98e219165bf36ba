//! The store's shared raft log: entries, hard state and small metadata of every region.
//!
//! Key types: [`RaftLogStore`] (the trait), [`LogBatch`] (an owned, engine-agnostic batch that
//! can span many regions), [`RaftState`] (hard state + last index, persisted per region), and
//! two implementations passing one conformance suite: [`RaftEngineLog`] (one `raft-engine`
//! instance per store) and [`MemRaftLog`] (ordered maps, for tests). For crash tests,
//! [`RaftEngineLog::open_with_faults`] puts raft-engine on a [`FaultFileSystem`] that can drop
//! unsynced writes (power loss) and inject I/O errors, steered by a shared [`FaultInjector`].
//!
//! Flow: the store writer gathers the ready entries and hard states of many regions into one
//! [`LogBatch`] and persists it with one [`RaftLogStore::write`] (one fsync: group commit across
//! regions); peers read entries back with [`RaftLogStore::fetch_entries`]; log GC calls
//! [`RaftLogStore::compact_to`]; at restart [`RaftLogStore::region_ids`] lists what to recover.
//!
//! Appends follow raft's overwrite rule: entries at index `i` replace every entry `>= i`. An
//! append that would leave a hole or rewrite compacted entries is rejected before anything is
//! written ([`RaftLogError::NonContiguousAppend`]), because raft-engine would panic on it, at
//! write time and again at every restart.
//!
//! This crate is the only one that knows raft-engine. It must not depend on RocksDB, the
//! storage engine, raftstore or the RPC layer.
#![deny(missing_docs)]

mod batch;
mod engine_log;
mod fault_fs;
mod mem;
mod recovery;
mod state;

#[cfg(test)]
mod conformance;

pub use batch::LogBatch;
pub use engine_log::{RaftEngineLog, RaftLogConfig};
pub use fault_fs::{FaultFileSystem, FaultInjector, FsOp, PowerLossReport};
pub use mem::MemRaftLog;
pub use raft::eraftpb::{Entry, HardState};
pub use recovery::RecoveryMode;
pub use state::RaftState;

/// Errors of the raft log.
#[derive(Debug, thiserror::Error)]
pub enum RaftLogError {
    /// An I/O error other than a full disk.
    #[error("raft log I/O error: {0}")]
    Io(String),
    /// The disk is full; the store should refuse writes rather than crash.
    #[error("no space left on device: {0}")]
    NoSpace(String),
    /// Stored data could not be decoded.
    #[error("raft log corruption: {0}")]
    Corruption(String),
    /// The requested entry was compacted away.
    #[error("region {region_id}: entry {index} is compacted")]
    EntryCompacted {
        /// Region.
        region_id: u64,
        /// First requested index.
        index: u64,
    },
    /// The requested entry is not (yet) in the log.
    #[error("region {region_id}: entry {index} is unavailable")]
    EntryUnavailable {
        /// Region.
        region_id: u64,
        /// An index that is missing.
        index: u64,
    },
    /// An append would leave a hole after the last entry or rewrite compacted entries.
    #[error(
        "region {region_id}: cannot append at {append_index} to log [{first_index}, {last_index}]"
    )]
    NonContiguousAppend {
        /// Region.
        region_id: u64,
        /// First index currently in the log.
        first_index: u64,
        /// Last index currently in the log.
        last_index: u64,
        /// Index of the first appended entry.
        append_index: u64,
    },
    /// The configuration is invalid.
    #[error("invalid raft log config: {0}")]
    InvalidConfig(String),
    /// Any other error reported by the log engine.
    #[error("raft log engine error: {0}")]
    Engine(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, RaftLogError>;

/// Per-store storage of every region's raft log.
pub trait RaftLogStore: Send + Sync + 'static {
    /// Persists `batch` as one write (one fsync when `sync`), across regions; returns the bytes
    /// written. Rejects the whole batch, writing nothing, if an append is not contiguous.
    fn write(&self, batch: LogBatch, sync: bool) -> Result<usize>;
    /// The region's persisted raft state, if any.
    fn raft_state(&self, region_id: u64) -> Result<Option<RaftState>>;
    /// A metadata value stored with [`LogBatch::put_meta`].
    fn get_meta(&self, region_id: u64, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Appends entries `[low, high)` to `out`, stopping once their encoded size would pass
    /// `max_size_bytes` (at least one entry is returned); returns how many were appended.
    fn fetch_entries(
        &self,
        region_id: u64,
        low: u64,
        high: u64,
        max_size_bytes: Option<u64>,
        out: &mut Vec<Entry>,
    ) -> Result<usize>;
    /// The entry at `index`, if it is in the log.
    fn entry(&self, region_id: u64, index: u64) -> Result<Option<Entry>>;
    /// Index of the first entry in the log.
    fn first_index(&self, region_id: u64) -> Option<u64>;
    /// Index of the last entry in the log.
    fn last_index(&self, region_id: u64) -> Option<u64>;
    /// Removes entries `< index`; returns how many were removed. Not synced: entries that come
    /// back after a crash are harmless.
    fn compact_to(&self, region_id: u64, index: u64) -> Result<u64>;
    /// Lets the engine drop obsolete files; returns regions it asks to compact (their old
    /// entries pin files), if any.
    fn purge_expired_files(&self) -> Result<Vec<u64>>;
    /// Every region holding entries, raft state or metadata, ascending (for recovery).
    fn region_ids(&self) -> Result<Vec<u64>>;
}
