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
    /// A read would return more than the response limit; nothing is returned, so that no
    /// caller mistakes a cut answer for the whole one.
    #[error("the response would exceed {max_bytes} bytes (storage.response_max_bytes): ask for fewer keys or a smaller limit")]
    ResponseTooLarge {
        /// The limit.
        max_bytes: usize,
    },
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

/// What a read may still return: the bytes of the keys and values it has collected are
/// charged against [`crate::StorageConfig::response_max_bytes`] as it goes, so an oversize read
/// stops at the limit instead of after it has gathered everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseBudget {
    left_bytes: usize,
    max_bytes: usize,
}

impl ResponseBudget {
    /// A budget of `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        ResponseBudget {
            left_bytes: max_bytes,
            max_bytes,
        }
    }

    /// A budget no read reaches (for the store's own bounded scans).
    pub fn unlimited() -> Self {
        ResponseBudget::new(usize::MAX)
    }

    /// Charges `bytes` (of keys and values) to the response; fails once it would pass the
    /// limit.
    pub fn charge(&mut self, bytes: usize) -> Result<()> {
        match self.left_bytes.checked_sub(bytes) {
            Some(left) => {
                self.left_bytes = left;
                Ok(())
            }
            None => Err(StorageError::ResponseTooLarge {
                max_bytes: self.max_bytes,
            }),
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, StorageError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_stops_at_the_limit() {
        let mut b = ResponseBudget::new(10);
        b.charge(7).unwrap();
        b.charge(3).unwrap();
        assert_eq!(
            b.charge(1),
            Err(StorageError::ResponseTooLarge { max_bytes: 10 })
        );
        ResponseBudget::unlimited().charge(1 << 40).unwrap();
    }
}
