//! Errors of the storage layer: bad requests and unreadable data.

/// Why a raw request cannot be served. Answered in the response's `error` string; nothing is
/// written when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The column family is unknown or not open to clients.
    #[error("invalid column family {0:?}")]
    InvalidCf(String),
    /// `ttls` does not have one entry per pair.
    #[error("{ttls} ttls for {pairs} pairs")]
    TtlCountMismatch {
        /// Number of TTLs.
        ttls: usize,
        /// Number of pairs.
        pairs: usize,
    },
    /// A stored value or key could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The engine failed while reading.
    #[error("engine: {0}")]
    Engine(String),
}

impl From<engine::EngineError> for StorageError {
    fn from(e: engine::EngineError) -> Self {
        StorageError::Engine(e.to_string())
    }
}

impl From<codec::CodecError> for StorageError {
    fn from(e: codec::CodecError) -> Self {
        StorageError::Corrupt(e.to_string())
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, StorageError>;
