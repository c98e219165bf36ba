//! PD's typed errors and their mapping to `pdpb::ErrorType`.

use proto::pdpb::ErrorType;

/// Result with [`PdError`].
pub type Result<T> = std::result::Result<T, PdError>;

/// Everything PD can answer as an error.
#[derive(Debug, thiserror::Error)]
pub enum PdError {
    /// The cluster has not been bootstrapped yet.
    #[error("cluster is not bootstrapped")]
    NotBootstrapped,
    /// Bootstrap was asked twice.
    #[error("cluster is already bootstrapped")]
    AlreadyBootstrapped,
    /// No region with this id or holding this key.
    #[error("region {0} not found")]
    RegionNotFound(u64),
    /// No store with this id.
    #[error("store {0} not found")]
    StoreNotFound(u64),
    /// The store has been removed for good.
    #[error("store {0} is tombstone")]
    StoreTombstone(u64),
    /// Taking this store out would leave fewer Up stores than regions need replicas.
    #[error(
        "store {store_id} not removed: {up_after} Up stores would be left, fewer than \
         max_replicas {max_replicas} (add stores first, or force)"
    )]
    StoresNotEnough {
        /// The store asked to be removed.
        store_id: u64,
        /// Up stores once it is gone.
        up_after: usize,
        /// Configured voters per region.
        max_replicas: usize,
    },
    /// A region report older than what PD knows.
    #[error("stale region {region_id}: {reason}")]
    StaleRegion {
        /// The reported region.
        region_id: u64,
        /// Which newer region made it stale.
        reason: String,
    },
    /// The request carries a bad argument.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// Two regions asked to merge cannot.
    #[error("region {source_id} cannot merge into region {target_id}: {reason}")]
    MergeRefused {
        /// The source region.
        source_id: u64,
        /// The target region.
        target_id: u64,
        /// Why not.
        reason: crate::scheduler::MergeRefusal,
    },
    /// The request's header names another cluster.
    #[error("cluster id mismatch: request {request}, PD {pd}")]
    ClusterIdMismatch {
        /// Cluster id in the request.
        request: u64,
        /// This PD's cluster id.
        pd: u64,
    },
    /// A configured limit was reached.
    #[error("busy: {0}")]
    Busy(String),
    /// The configuration is invalid.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The embedded storage failed.
    #[error("storage: {0}")]
    Storage(String),
    /// Persisted data failed to decode.
    #[error("corrupted metadata: {0}")]
    Corrupted(String),
    /// This PD member is not the leader of the PD group (or lost leadership mid-write).
    #[error("not leader")]
    NotLeader,
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl PdError {
    /// The protocol's error type for this error.
    pub fn error_type(&self) -> ErrorType {
        match self {
            PdError::NotBootstrapped => ErrorType::NotBootstrapped,
            PdError::AlreadyBootstrapped => ErrorType::AlreadyBootstrapped,
            PdError::RegionNotFound(_) => ErrorType::RegionNotFound,
            PdError::StoreTombstone(_) => ErrorType::StoreTombstone,
            PdError::InvalidValue(_) | PdError::MergeRefused { .. } => ErrorType::InvalidValue,
            _ => ErrorType::Unknown,
        }
    }
}

impl From<prost::DecodeError> for PdError {
    fn from(e: prost::DecodeError) -> Self {
        PdError::Corrupted(e.to_string())
    }
}
