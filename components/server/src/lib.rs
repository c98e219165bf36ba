//! One Flotilla store process: the client-facing `tikvpb.Tikv` service over tonic, the
//! store-to-store raft transport over gRPC, the PD worker, the status HTTP server (metrics,
//! status, CPU profiles), and start-up.
//!
//! Key types: [`Node`] (start a store on a [`ServerConfig`], stop it), [`KvService`] (raw
//! requests: limits, latches, reads through a leader's read view, writes through raft, region
//! errors as data), [`GrpcTransport`] and [`RaftService`] (the two ends of the raft transport),
//! [`ServerError`].
//!
//! Flow at start-up: open RocksDB and the raft log under the data dir, connect to PD, load or
//! allocate the store id, bootstrap the cluster's first region if PD has none, register the
//! store, start the raftstore, then serve gRPC and HTTP. A client request is checked against
//! the storage limits, latched, read or written through the raftstore's router, and answered.
//!
//! This crate joins `storage` (raw semantics) with `raftstore` (replication); it is the only
//! store-side crate that knows tonic and `pd_client`. Nothing else depends on it but the binary
//! and the test harness.
//!
//! The handlers count each region's traffic (keys and bytes written and read, [`FlowMeter`])
//! and the PD worker reports it in region and store heartbeats.
#![deny(missing_docs)]

mod bootstrap;
mod config;
pub mod disk;
mod error;
pub mod fault;
mod flow;
mod gc_worker;
mod kv;
mod load_split;
pub mod metrics;
mod node;
mod pd;
mod pd_worker;
mod profile;
mod raft_service;
mod status;
mod transport;

pub use bootstrap::{first_region, load_store_ident, StoreIdent};
pub use config::{PdWorkerConfig, ServerConfig, TransportConfig};
pub use error::ServerError;
pub use flow::{write_size, Flow, FlowMeter, Queries, QueryKind};
pub use kv::KvService;
pub use load_split::{split_key, KeyRange, LoadSplitConfig};
pub use node::Node;
pub use pd::{BootstrapOutcome, Pd, PdResolver};
pub use profile::{PROFILE_FREQUENCY_HZ, PROFILE_SECONDS_DEFAULT, PROFILE_SECONDS_MAX};
pub use raft_service::RaftService;
pub use status::{store_status, RegionStatus, StoreStatus};
pub use transport::{is_snapshot_message, snapshot_chunks, GrpcTransport, StoreResolver};
