//! Errors of the server layer (start-up, PD, transport).

/// Why a store could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is not usable.
    #[error("config: {0}")]
    Config(String),
    /// A file or socket operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The KV engine failed.
    #[error("engine: {0}")]
    Engine(#[from] engine::EngineError),
    /// The raft log failed.
    #[error("raft log: {0}")]
    RaftLog(#[from] raft_log::RaftLogError),
    /// The raftstore failed.
    #[error("raftstore: {0}")]
    Store(#[from] raftstore::StoreError),
    /// PD says this store was decommissioned (a Tombstone): it may not serve again.
    #[error(
        "this store was removed from the cluster (PD: {0}); its data dir cannot rejoin: \
         start a new store on an empty data dir"
    )]
    Tombstone(String),
    /// PD refused or could not be reached.
    #[error("pd: {0}")]
    Pd(String),
    /// The gRPC server failed.
    #[error("grpc: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The data directory belongs to another cluster or holds unreadable metadata.
    #[error("store identity: {0}")]
    Ident(String),
}
