//! The store's client of the placement driver.
//!
//! Key types: the object-safe [`PdClient`] trait (what a store needs of PD: bootstrap, ids,
//! store registration and heartbeats, the region heartbeat stream, split ids and reports,
//! region lookups, the GC safe point, timestamps) and [`RpcPdClient`], its implementation over
//! tonic. Tests substitute the trait.
//!
//! Flow: [`RpcPdClient::connect`] asks each endpoint for its members until one answers and
//! learns the cluster id from it; every call then carries that id, is bounded by a timeout and
//! retried with exponential backoff (reconnecting through the endpoints) on transport
//! failures. PD's own errors (`ResponseHeader.error`) are returned as [`PdError::Pd`], never
//! retried. The region heartbeat stream lives in a background task that re-opens it when it
//! breaks.
//!
//! This crate depends on `proto` only; it must not depend on `pd` (except in tests) nor on the
//! store's crates.
#![deny(missing_docs)]

mod heartbeat;
mod rpc;

use futures::future::BoxFuture;
use proto::metapb::{Peer, Region, Store};
use proto::pdpb::{
    ErrorType, RegionHeartbeatRequest, RegionHeartbeatResponse, SplitId, StoreStats,
};
use tokio::sync::mpsc;

pub use rpc::{PdClientConfig, RpcPdClient};

/// Result with [`PdError`].
pub type Result<T> = std::result::Result<T, PdError>;

/// Errors of the PD client.
#[derive(Debug, thiserror::Error)]
pub enum PdError {
    /// PD could not be reached, or the call failed in transport after every retry.
    #[error("transport: {0}")]
    Transport(String),
    /// PD answered with an error in its response header.
    #[error("pd error {kind:?}: {message}")]
    Pd {
        /// The protocol's error type.
        kind: ErrorType,
        /// PD's message.
        message: String,
    },
    /// PD answered something the protocol does not allow (e.g. a missing field).
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// The endpoints disagree on the cluster id.
    #[error("cluster id mismatch: expected {expected}, got {got}")]
    ClusterIdMismatch {
        /// The id learned first.
        expected: u64,
        /// The id another endpoint reported.
        got: u64,
    },
    /// Bad endpoint address or argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl PdError {
    /// Whether PD said the cluster is already bootstrapped.
    pub fn is_already_bootstrapped(&self) -> bool {
        matches!(
            self,
            PdError::Pd {
                kind: ErrorType::AlreadyBootstrapped,
                ..
            }
        )
    }
}

/// A region and its leader as PD knows them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionWithLeader {
    /// The region.
    pub region: Region,
    /// Its leader, if PD knows one.
    pub leader: Option<Peer>,
}

/// Sender half of the region heartbeat stream (bounded; the client fills the header).
pub type RegionHeartbeatSender = mpsc::Sender<RegionHeartbeatRequest>;
/// Receiver half of the region heartbeat stream: PD's steps for the regions this store leads.
pub type RegionHeartbeatReceiver = mpsc::Receiver<RegionHeartbeatResponse>;

/// What a store needs of PD. Object-safe so that tests can substitute it.
pub trait PdClient: Send + Sync {
    /// The cluster id learned at connection.
    fn cluster_id(&self) -> u64;
    /// Bootstraps the cluster with the first store and region.
    fn bootstrap(&self, store: Store, region: Region) -> BoxFuture<'_, Result<()>>;
    /// Whether the cluster is bootstrapped.
    fn is_bootstrapped(&self) -> BoxFuture<'_, Result<bool>>;
    /// A new unique id.
    fn alloc_id(&self) -> BoxFuture<'_, Result<u64>>;
    /// Registers or updates a store.
    fn put_store(&self, store: Store) -> BoxFuture<'_, Result<()>>;
    /// The store with this id.
    fn get_store(&self, store_id: u64) -> BoxFuture<'_, Result<Store>>;
    /// Every store, tombstones included.
    fn get_all_stores(&self) -> BoxFuture<'_, Result<Vec<Store>>>;
    /// Reports a store's stats.
    fn store_heartbeat(&self, stats: StoreStats) -> BoxFuture<'_, Result<()>>;
    /// Opens the region heartbeat stream, re-established in the background when it breaks.
    /// Must be called within a tokio runtime; the stream ends when the sender is dropped.
    fn region_heartbeat_stream(&self) -> (RegionHeartbeatSender, RegionHeartbeatReceiver);
    /// Ids for `count` new regions split from `region`.
    fn ask_batch_split(&self, region: Region, count: u32) -> BoxFuture<'_, Result<Vec<SplitId>>>;
    /// Reports the regions a split produced.
    fn report_batch_split(&self, regions: Vec<Region>) -> BoxFuture<'_, Result<()>>;
    /// The region holding the encoded `key`.
    fn get_region(&self, key: Vec<u8>) -> BoxFuture<'_, Result<Option<RegionWithLeader>>>;
    /// The region with this id.
    fn get_region_by_id(&self, region_id: u64) -> BoxFuture<'_, Result<Option<RegionWithLeader>>>;
    /// The GC safe point.
    fn get_gc_safe_point(&self) -> BoxFuture<'_, Result<u64>>;
    /// One timestamp, composed as `physical_ms << 18 | logical`.
    fn get_tso(&self) -> BoxFuture<'_, Result<u64>>;
}
