//! The raftstore: every region peer of one store, each a raft-rs `RawNode`, driven by one
//! poller thread, persisted through one shared raft log with group commit, and applied to the
//! store's KV engine by one apply thread.
//!
//! Key types: [`RaftStore`] (start and stop the threads), [`RaftRouter`] (the way in: raft
//! messages from other stores, client writes and reads, PD's answers), [`Transport`] (the way
//! out to other stores), [`PdTask`] (work for the PD worker), [`RegionError`] (answered to
//! clients as data).
//!
//! Flow: a write reaches the poller through the router and is proposed to its region's raft
//! group. Each poller round gathers the ready state of every region, sends leader messages at
//! once, writes all new entries and hard states in one raft-log batch with one fsync, then sends
//! the follower messages. Committed entries go to the apply thread, which writes the data and
//! the region's apply state in one engine batch, answers the client and reports back. Reads
//! are answered on the caller's thread from an engine snapshot while this store's leader holds
//! a lease (`lease.rs`); otherwise they get a ReadIndex (safe mode, with check-quorum) and are
//! answered once the region has applied up to it. A split checker thread measures regions;
//! splits and membership changes go through raft as admin commands. Idle regions hibernate:
//! their peers stop ticking until something arrives, and stores exchange keepalives so that a
//! dead store's regions still wake (`poller/hibernate.rs`).
//!
//! Crash windows (raft-log write, apply, split, snapshot send and apply) carry failpoints,
//! compiled in with the `failpoints` feature (see `failpoints.rs` for the names).
//!
//! Must not depend on: `storage` (the raw and transactional semantics), `pd_client`, tonic.
#![deny(missing_docs)]

#[macro_use]
mod failpoints;

mod apply;
mod config;
mod lease;
mod logger;
mod msg;
mod peer;
mod peer_storage;
mod poller;
mod repair;
mod router;
mod snapshot_worker;
mod split_check;
mod transport;
mod util;

pub use config::StoreConfig;
pub use lease::{clock_offset_ns, set_clock_offset_ns};
pub use msg::{
    DataModify, PdTask, PeerId, PollerStats, ReadCallback, ReadResponse, RegionError, RegionId,
    RegionInfo, RequestHeader, StoreId, WriteCallback,
};
pub use peer_storage::{
    bootstrap_first_region, clear_region_meta, load_region_states, RAFT_INIT_LOG_INDEX,
    RAFT_INIT_LOG_TERM,
};
pub use poller::RaftStore;
pub use router::RaftRouter;
pub use transport::Transport;

/// Failures of the raftstore as a whole (start-up, recovery, storage).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The KV engine failed.
    #[error("engine: {0}")]
    Engine(#[from] engine::EngineError),
    /// The raft log failed.
    #[error("raft log: {0}")]
    RaftLog(#[from] raft_log::RaftLogError),
    /// raft-rs refused.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The configuration is not usable.
    #[error("config: {0}")]
    Config(String),
    /// Stored metadata could not be decoded.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// The store already holds regions.
    #[error("store already bootstrapped")]
    AlreadyBootstrapped,
}
