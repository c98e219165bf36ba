//! The placement driver (PD) of Flotilla: the cluster's single source of ids, timestamps and
//! the region directory, speaking TiKV's `pdpb.PD` and `keyspacepb.Keyspace` gRPC services and
//! PD's HTTP API (`/pd/api/v1/regions`, `/pd/api/v1/stores`, `/metrics`, `/status`) on one port.
//!
//! Key types: [`PdServer`] starts the service and returns a [`PdHandle`]; [`Cluster`] holds
//! the state (persisted through a [`MetaStore`]: cluster id, [`IdAllocator`], [`Tso`], stores,
//! the [`RegionDirectory`], the GC safe point); [`Operator`]s are produced by the pure
//! schedulers of [`scheduler`] from a [`ClusterSnapshot`].
//!
//! Flow: a store's region leader heartbeats its region on a stream; the cluster updates the
//! directory (epoch rules), advances the region's operator or asks the schedulers for a new
//! one, and answers at most one step on the stream. Every state change is persisted (fsync'd)
//! before it is acknowledged; ids and timestamps are handed out only below a persisted bound.
//! Periodic runs (balance-leader, balance-region, hot-region, the merge checker) queue operators
//! the same way; a merge is a pair (the source's steps, the target's passive hold) that ends
//! together.
//!
//! Replication: with an initial cluster of several members, PD's writes go through a raft group
//! of the members (`replication`). Only the leader changes state and hands out ids and
//! timestamps; every member answers the clients' lookups (regions, stores, keyspaces) from its
//! `replica_view` of the persisted state, and a member that does not lead forwards a client's
//! TSO stream to the leader, waiting out an election. GetMembers names the leader while this
//! member hears from it, else the member itself (tikv-client 0.4 drops requests whose lookup
//! fails, so a client must always have a member that answers); `etcd_leader` names the raft
//! leader, which the stores' PD client follows. Stores' own calls (heartbeats, splits, ids) are
//! the leader's alone: others answer `Unavailable`.
//!
//! PD depends on `codec`, `engine`, `proto` and `raft` only; it must not depend on the store's crates
//! (`raftstore`, `storage`, `server`).
#![deny(missing_docs)]

mod balance_region;
mod cluster;
mod config;
mod error;
mod hot_region;
mod http;
mod id_alloc;
mod keyspace_group;
mod merge;
mod meta_store;
mod metrics;
mod operator;
mod peer_check;
mod region_dir;
mod replica_view;
mod replication;
pub mod scheduler;
mod server;
mod service;
mod store_limit;
mod tso;

pub use cluster::{Cluster, StoreInfo, StoreStatus};
pub use config::{PdConfig, PdMember, TSO_COUNT_MAX};
pub use error::{PdError, Result};
pub use id_alloc::IdAllocator;
pub use meta_store::{MemMetaStore, MetaStore, RocksMetaStore};
pub use operator::{OpStatus, Operator, Step};
pub use region_dir::{
    read_queries, write_queries, RegionDirectory, RegionFlow, RegionInfo, StoreTally,
};
pub use scheduler::{ClusterSnapshot, RegionSnap, StoreSnap};
pub use server::{PdHandle, PdServer};
pub use tso::{compose_ts, Tso, TsoAlloc, TsoState, LOGICAL_BITS};
