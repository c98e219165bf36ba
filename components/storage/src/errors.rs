//! Errors of the storage layer: bad requests and unreadable data.

/// Why a raw request cannot be served. Answered in the response's `error` string; nothing is
/// written when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// A key is longer than the limit (measured after the 4-byte keyspace prefix).
    #[error("key of {size} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge {
        /// Size of the key.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A value is longer than the limit.
    #[error("value of {size} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// Size of the value.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A batch names more keys or ranges than the limit.
    #[error("batch of {size} items exceeds the limit of {max}")]
    BatchTooLarge {
        /// Items in the batch.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A scan asks for more pairs than the limit.
    #[error("scan limit {limit} exceeds the maximum {max}")]
    ScanLimitTooLarge {
        /// The requested limit.
        limit: usize,
        /// The maximum.
        max: usize,
    },
    /// The column family is unknown or not open to clients.
    #[error("invalid column family {0:?}")]
    InvalidCf(String),
    /// A range whose start is after its end.
    #[error("invalid range: start {start:?} > end {end:?}")]
    InvalidRange {
        /// Start key.
        start: Vec<u8>,
        /// End key.
        end: Vec<u8>,
    },
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
