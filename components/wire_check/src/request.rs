//! Checks of client requests: key and value sizes against [`Limits`], ranges in order, and
//! every key in the key mode of its API (TiKV API V2: raw keys start with `r`, transactional keys with `x`,
//! each followed by a 3-byte keyspace id). A raw request naming a transactional key would
//! otherwise write raw bytes among another transaction's locks and commit records.
//!
//! The number of keys in a batch and the `limit` of a scan are not checked, as in TiKV: a
//! request is bounded by its bytes (the gRPC message limit), a write by its raft entry and a
//! read by its response (both checked by the server where they are made).

use codec::keys::{RAW_MODE_PREFIX, TXN_MODE_PREFIX};
use proto::kvrpcpb;

/// Bytes of the API V2 keyspace prefix (mode byte + 3-byte keyspace id); the key limit is
/// measured after it.
pub const KEYSPACE_PREFIX_BYTES: usize = 4;

/// The limits of single keys and values (the server builds them from its storage
/// configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest key, in bytes after the keyspace prefix.
    pub key_max_bytes: usize,
    /// Largest value, in bytes.
    pub value_max_bytes: usize,
}

/// Which API a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// Raw keys: `r` + keyspace id.
    Raw,
    /// Transactional keys: `x` + keyspace id.
    Txn,
}

impl KeyMode {
    fn prefix(self) -> u8 {
        match self {
            KeyMode::Raw => RAW_MODE_PREFIX,
            KeyMode::Txn => TXN_MODE_PREFIX,
        }
    }
}

/// Why a request is refused before it reaches a region. Nothing is read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A key is longer than the limit (measured after the keyspace prefix).
    #[error("key of {size} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge {
        /// Size of the key after its prefix.
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
    /// A range whose start is after its end.
    #[error("invalid range: start {start:?} > end {end:?}")]
    InvalidRange {
        /// Lower bound.
        start: Vec<u8>,
        /// Upper bound.
        end: Vec<u8>,
    },
    /// A key that is not in the key mode of the request's API (or lacks its keyspace prefix).
    #[error("invalid key mode: {key:?} is not a {mode:?} key")]
    InvalidKeyMode {
        /// The key (or range bound).
        key: Vec<u8>,
        /// The mode the request needs.
        mode: KeyMode,
    },
}

/// Result of a check.
pub type Result<T> = std::result::Result<T, RequestError>;

impl Limits {
    /// One key's size and mode.
    pub fn check_key(&self, key: &[u8], mode: KeyMode) -> Result<()> {
        if key.len() < KEYSPACE_PREFIX_BYTES || key[0] != mode.prefix() {
            return Err(RequestError::InvalidKeyMode {
                key: key.to_vec(),
                mode,
            });
        }
        self.check_key_size(key)
    }

    /// One key's size (the keyspace prefix does not count).
    pub fn check_key_size(&self, key: &[u8]) -> Result<()> {
        let size = key.len().saturating_sub(KEYSPACE_PREFIX_BYTES);
        if size > self.key_max_bytes {
            return Err(RequestError::KeyTooLarge {
                size,
                max: self.key_max_bytes,
            });
        }
        Ok(())
    }

    /// One value's size.
    pub fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.value_max_bytes {
            return Err(RequestError::ValueTooLarge {
                size: value.len(),
                max: self.value_max_bytes,
            });
        }
        Ok(())
    }

    /// Each key of a batch.
    pub fn check_keys<K: AsRef<[u8]>>(&self, keys: &[K], mode: KeyMode) -> Result<()> {
        keys.iter()
            .try_for_each(|k| self.check_key(k.as_ref(), mode))
    }

    /// A `[lower, upper)` range of `mode`: sizes, order (an empty `upper` is unbounded), and
    /// modes. `upper` may also be the first key past the mode (`mode + 1` then zeros), which
    /// is where the last keyspace of a mode ends.
    pub fn check_range(&self, lower: &[u8], upper: &[u8], mode: KeyMode) -> Result<()> {
        self.check_key(lower, mode)?;
        self.check_key_size(upper)?;
        let upper_ok = match upper.split_first() {
            None => true,
            Some((&m, rest)) => {
                m == mode.prefix() || (m == mode.prefix() + 1 && rest.iter().all(|b| *b == 0))
            }
        };
        if !upper_ok {
            return Err(RequestError::InvalidKeyMode {
                key: upper.to_vec(),
                mode,
            });
        }
        if !upper.is_empty() && lower > upper {
            return Err(RequestError::InvalidRange {
                start: lower.to_vec(),
                end: upper.to_vec(),
            });
        }
        Ok(())
    }

    /// A range that may be empty at both ends (region-wide operations), else as
    /// [`Limits::check_range`] without the mode: sizes and order.
    pub fn check_any_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        self.check_key_size(start)?;
        self.check_key_size(end)?;
        if !end.is_empty() && start > end {
            return Err(RequestError::InvalidRange {
                start: start.to_vec(),
                end: end.to_vec(),
            });
        }
        Ok(())
    }
}

/// `(lower, upper)` of a scan: a reverse scan sends its upper bound (exclusive) as `start_key`
/// and its lower bound (inclusive) as `end_key`, as tikv-client does.
pub fn scan_bounds<'a>(
    start_key: &'a [u8],
    end_key: &'a [u8],
    reverse: bool,
) -> (&'a [u8], &'a [u8]) {
    if reverse {
        (end_key, start_key)
    } else {
        (start_key, end_key)
    }
}

/// A request the store serves, checked before it reaches a region.
pub trait CheckRequest {
    /// Fails if a key or value of the request breaks a limit, names a key outside its API's key mode, or has a
    /// range out of order.
    fn check(&self, limits: &Limits) -> Result<()>;
}

use KeyMode::{Raw, Txn};

macro_rules! check_impls {
    ($($t:ty => |$r:ident, $l:ident| $body:expr;)*) => {$(
        impl CheckRequest for $t {
            fn check(&self, $l: &Limits) -> Result<()> {
                let $r = self;
                $body
            }
        }
    )*};
}

check_impls! {
    kvrpcpb::RawGetRequest => |r, l| l.check_key(&r.key, Raw);
    kvrpcpb::RawBatchGetRequest => |r, l| l.check_keys(&r.keys, Raw);
    kvrpcpb::RawGetKeyTtlRequest => |r, l| l.check_key(&r.key, Raw);
    kvrpcpb::RawPutRequest => |r, l| {
        l.check_key(&r.key, Raw)?;
        l.check_value(&r.value)
    };
    kvrpcpb::RawBatchPutRequest => |r, l| {
        r.pairs.iter().try_for_each(|p| {
            l.check_key(&p.key, Raw)?;
            l.check_value(&p.value)
        })
    };
    kvrpcpb::RawDeleteRequest => |r, l| l.check_key(&r.key, Raw);
    kvrpcpb::RawBatchDeleteRequest => |r, l| l.check_keys(&r.keys, Raw);
    kvrpcpb::RawDeleteRangeRequest => |r, l| l.check_range(&r.start_key, &r.end_key, Raw);
    kvrpcpb::RawScanRequest => |r, l| {
        let (lower, upper) = scan_bounds(&r.start_key, &r.end_key, r.reverse);
        l.check_range(lower, upper, Raw)
    };
    kvrpcpb::RawBatchScanRequest => |r, l| {
        r.ranges.iter().try_for_each(|range| {
            let (lower, upper) = scan_bounds(&range.start_key, &range.end_key, r.reverse);
            l.check_range(lower, upper, Raw)
        })
    };
    kvrpcpb::RawCasRequest => |r, l| {
        l.check_key(&r.key, Raw)?;
        l.check_value(&r.value)?;
        l.check_value(&r.previous_value)
    };
    kvrpcpb::UnsafeDestroyRangeRequest => |r, l| l.check_any_range(&r.start_key, &r.end_key);
    kvrpcpb::GetRequest => |r, l| l.check_key(&r.key, Txn);
    kvrpcpb::BatchGetRequest => |r, l| l.check_keys(&r.keys, Txn);
    kvrpcpb::ScanRequest => |r, l| {
        let (lower, upper) = scan_bounds(&r.start_key, &r.end_key, r.reverse);
        l.check_range(lower, upper, Txn)
    };
    kvrpcpb::PrewriteRequest => |r, l| {
        for m in &r.mutations {
            l.check_key(&m.key, Txn)?;
            l.check_value(&m.value)?;
        }
        l.check_key(&r.primary_lock, Txn)?;
        l.check_keys(&r.secondaries, Txn)
    };
    kvrpcpb::PessimisticLockRequest => |r, l| {
        for m in &r.mutations {
            l.check_key(&m.key, Txn)?;
        }
        l.check_key(&r.primary_lock, Txn)
    };
    kvrpcpb::PessimisticRollbackRequest => |r, l| l.check_keys(&r.keys, Txn);
    kvrpcpb::TxnHeartBeatRequest => |r, l| l.check_key(&r.primary_lock, Txn);
    kvrpcpb::CheckTxnStatusRequest => |r, l| l.check_key(&r.primary_key, Txn);
    kvrpcpb::CheckSecondaryLocksRequest => |r, l| l.check_keys(&r.keys, Txn);
    kvrpcpb::CommitRequest => |r, l| l.check_keys(&r.keys, Txn);
    kvrpcpb::CleanupRequest => |r, l| l.check_key(&r.key, Txn);
    kvrpcpb::BatchRollbackRequest => |r, l| l.check_keys(&r.keys, Txn);
    kvrpcpb::ScanLockRequest => |r, l| l.check_any_range(&r.start_key, &r.end_key);
    kvrpcpb::ResolveLockRequest => |r, l| l.check_keys(&r.keys, Txn);
    kvrpcpb::GcRequest => |_r, _l| Ok(());
    kvrpcpb::DeleteRangeRequest => |r, l| l.check_any_range(&r.start_key, &r.end_key);
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        key_max_bytes: 4,
        value_max_bytes: 3,
    };

    fn raw(k: &str) -> Vec<u8> {
        [b"r\0\0\0".as_slice(), k.as_bytes()].concat()
    }

    fn txn(k: &str) -> Vec<u8> {
        [b"x\0\0\0".as_slice(), k.as_bytes()].concat()
    }

    #[test]
    fn sizes() {
        assert!(LIMITS.check_key(&raw("abcd"), Raw).is_ok());
        assert_eq!(
            LIMITS.check_key(&raw("abcde"), Raw),
            Err(RequestError::KeyTooLarge { size: 5, max: 4 })
        );
        assert!(LIMITS.check_value(b"abc").is_ok());
        assert!(matches!(
            LIMITS.check_value(b"abcd"),
            Err(RequestError::ValueTooLarge { .. })
        ));
        assert!(matches!(
            LIMITS.check_keys(&[raw("a"), raw("abcde")], Raw),
            Err(RequestError::KeyTooLarge { .. })
        ));
    }

    #[test]
    fn counts_are_not_limited() {
        // As in TiKV: bytes bound a request (gRPC), a write (its raft entry) and a read (its
        // response), not the number of its keys or the limit of a scan.
        let batch = kvrpcpb::RawBatchPutRequest {
            pairs: (0..20_000)
                .map(|i| kvrpcpb::KvPair {
                    key: raw(&format!("{}", i % 1000)),
                    value: b"v".to_vec(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        assert!(batch.check(&LIMITS).is_ok());
        let scan = kvrpcpb::RawScanRequest {
            start_key: raw("a"),
            limit: u32::MAX,
            ..Default::default()
        };
        assert!(scan.check(&LIMITS).is_ok());
        let scan_lock = kvrpcpb::ScanLockRequest {
            limit: 65_536,
            ..Default::default()
        };
        assert!(scan_lock.check(&LIMITS).is_ok());
    }

    #[test]
    fn key_modes() {
        for bad in [b"".to_vec(), b"r\0\0".to_vec(), txn("a"), b"zzzz".to_vec()] {
            assert!(
                matches!(
                    LIMITS.check_key(&bad, Raw),
                    Err(RequestError::InvalidKeyMode { mode: Raw, .. })
                ),
                "{bad:?}"
            );
        }
        assert!(LIMITS.check_key(b"r\0\0\0", Raw).is_ok());
        assert!(LIMITS.check_key(&txn("a"), Txn).is_ok());
        assert!(LIMITS.check_key(&raw("a"), Txn).is_err());
        let put = kvrpcpb::RawPutRequest {
            key: txn("a"),
            ..Default::default()
        };
        assert!(put.check(&LIMITS).is_err());
        let prewrite = kvrpcpb::PrewriteRequest {
            mutations: vec![kvrpcpb::Mutation {
                key: txn("a"),
                ..Default::default()
            }],
            primary_lock: raw("a"),
            ..Default::default()
        };
        assert!(prewrite.check(&LIMITS).is_err());
    }

    #[test]
    fn ranges() {
        assert!(LIMITS.check_range(&raw("a"), b"", Raw).is_ok());
        assert!(LIMITS.check_range(&raw("a"), b"r\0\0\x01", Raw).is_ok());
        assert!(LIMITS.check_range(&raw("a"), b"s\0\0\0", Raw).is_ok());
        assert!(matches!(
            LIMITS.check_range(&raw("b"), &raw("a"), Raw),
            Err(RequestError::InvalidRange { .. })
        ));
        assert!(matches!(
            LIMITS.check_range(&raw("a"), &txn("a"), Raw),
            Err(RequestError::InvalidKeyMode { .. })
        ));
        assert!(LIMITS.check_range(b"", &raw("a"), Raw).is_err());
        // A reverse scan names its upper bound first.
        let scan = kvrpcpb::RawScanRequest {
            start_key: raw("d"),
            end_key: raw("b"),
            reverse: true,
            ..Default::default()
        };
        assert!(scan.check(&LIMITS).is_ok());
        let scan = kvrpcpb::RawScanRequest {
            reverse: false,
            ..scan
        };
        assert!(matches!(
            scan.check(&LIMITS),
            Err(RequestError::InvalidRange { .. })
        ));
        assert!(LIMITS.check_any_range(b"", b"").is_ok());
        assert!(LIMITS.check_any_range(b"b", b"a").is_err());
    }
}
