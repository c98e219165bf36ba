//! [`Lock`]: a record of the `lock` CF, and [`LockInfo`], what a blocked reader is told.

use crate::bytes::{Reader, Writer};
use crate::{Result, TimeStamp};

/// Tag byte of format version 1 of a lock record.
const LOCK_TAG_V1: u8 = b'L';
const RECORD: &str = "lock";

/// What a lock stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockType {
    /// A prewritten put.
    Put,
    /// A prewritten delete.
    Delete,
    /// A prewritten read lock: commits to a `Lock` record, never changes the value.
    Lock,
    /// A pessimistic lock taken before prewrite; carries no value and never blocks readers.
    Pessimistic,
}

impl LockType {
    fn to_u8(self) -> u8 {
        match self {
            LockType::Put => b'P',
            LockType::Delete => b'D',
            LockType::Lock => b'L',
            LockType::Pessimistic => b'S',
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            b'P' => LockType::Put,
            b'D' => LockType::Delete,
            b'L' => LockType::Lock,
            b'S' => LockType::Pessimistic,
            _ => return None,
        })
    }
}

/// A Percolator lock on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// What the lock stands for.
    pub lock_type: LockType,
    /// Raw client key of the transaction's primary lock.
    pub primary: Vec<u8>,
    /// The transaction's start ts.
    pub ts: TimeStamp,
    /// Time to live after `ts`'s physical time, in ms.
    pub ttl_ms: u64,
    /// The value, when at most [`crate::SHORT_VALUE_MAX_LEN`] bytes.
    pub short_value: Option<Vec<u8>>,
    /// The pessimistic transaction's for_update_ts (zero for optimistic ones).
    pub for_update_ts: TimeStamp,
    /// Number of keys the transaction writes (a hint for lock resolution).
    pub txn_size: u64,
    /// The transaction cannot commit below this ts (zero: no bound).
    pub min_commit_ts: TimeStamp,
    /// Whether the transaction commits asynchronously (commit ts decided by the locks).
    pub use_async_commit: bool,
    /// Raw keys of the secondaries (only on the primary of an async-commit transaction).
    pub secondaries: Vec<Vec<u8>>,
}

impl Lock {
    /// A lock with the given type, primary, start ts and ttl, and every other field empty.
    pub fn new(lock_type: LockType, primary: Vec<u8>, ts: TimeStamp, ttl_ms: u64) -> Self {
        Lock {
            lock_type,
            primary,
            ts,
            ttl_ms,
            short_value: None,
            for_update_ts: TimeStamp::zero(),
            txn_size: 0,
            min_commit_ts: TimeStamp::zero(),
            use_async_commit: false,
            secondaries: Vec::new(),
        }
    }

    /// Whether this is a pessimistic lock (not yet prewritten).
    pub fn is_pessimistic_lock(&self) -> bool {
        self.lock_type == LockType::Pessimistic
    }

    /// Stored form of the lock.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(LOCK_TAG_V1);
        w.u8(self.lock_type.to_u8());
        w.bytes(&self.primary);
        w.u64(self.ts.into_inner());
        w.u64(self.ttl_ms);
        w.opt_bytes(self.short_value.as_deref());
        w.u64(self.for_update_ts.into_inner());
        w.u64(self.txn_size);
        w.u64(self.min_commit_ts.into_inner());
        w.u8(u8::from(self.use_async_commit));
        w.u64(self.secondaries.len() as u64);
        for key in &self.secondaries {
            w.bytes(key);
        }
        w.0
    }

    /// Parses a stored lock.
    pub fn parse(input: &[u8]) -> Result<Lock> {
        let mut r = Reader::new(RECORD, input, LOCK_TAG_V1)?;
        let type_byte = r.u8()?;
        let lock_type =
            LockType::from_u8(type_byte).ok_or_else(|| r.bad("lock_type", type_byte.into()))?;
        let primary = r.bytes()?;
        let ts = TimeStamp::new(r.u64()?);
        let ttl_ms = r.u64()?;
        let short_value = r.opt_bytes("short_value flag")?;
        let for_update_ts = TimeStamp::new(r.u64()?);
        let txn_size = r.u64()?;
        let min_commit_ts = TimeStamp::new(r.u64()?);
        let use_async_commit = r.bool("use_async_commit")?;
        let count = r.u64()?;
        // Every secondary takes at least its 4-byte length, so a count beyond what the input
        // can hold is rejected by the reads below before it allocates much.
        let mut secondaries = Vec::with_capacity(count.min(1024) as usize);
        for _ in 0..count {
            secondaries.push(r.bytes()?);
        }
        r.finish()?;
        Ok(Lock {
            lock_type,
            primary,
            ts,
            ttl_ms,
            short_value,
            for_update_ts,
            txn_size,
            min_commit_ts,
            use_async_commit,
            secondaries,
        })
    }

    /// What a reader of `raw_key` is told about this lock.
    pub fn to_lock_info(&self, raw_key: Vec<u8>) -> LockInfo {
        LockInfo {
            primary_lock: self.primary.clone(),
            lock_version: self.ts,
            key: raw_key,
            lock_ttl: self.ttl_ms,
            txn_size: self.txn_size,
            lock_type: self.lock_type,
            lock_for_update_ts: self.for_update_ts,
            use_async_commit: self.use_async_commit,
            min_commit_ts: self.min_commit_ts,
            secondaries: self.secondaries.clone(),
        }
    }
}

/// A lock as reported to a client (kvrpcpb `LockInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// Raw key of the transaction's primary lock.
    pub primary_lock: Vec<u8>,
    /// The transaction's start ts.
    pub lock_version: TimeStamp,
    /// Raw key the lock is on.
    pub key: Vec<u8>,
    /// Time to live after `lock_version`'s physical time, in ms.
    pub lock_ttl: u64,
    /// Number of keys the transaction writes.
    pub txn_size: u64,
    /// What the lock stands for.
    pub lock_type: LockType,
    /// The pessimistic transaction's for_update_ts.
    pub lock_for_update_ts: TimeStamp,
    /// Whether the transaction commits asynchronously.
    pub use_async_commit: bool,
    /// The transaction cannot commit below this ts.
    pub min_commit_ts: TimeStamp,
    /// Raw keys of the secondaries of an async-commit primary.
    pub secondaries: Vec<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lock_type() -> impl Strategy<Value = LockType> {
        prop_oneof![
            Just(LockType::Put),
            Just(LockType::Delete),
            Just(LockType::Lock),
            Just(LockType::Pessimistic),
        ]
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    prop_compose! {
        fn arb_lock()(
            lock_type in lock_type(),
            primary in bytes(20),
            ts in any::<u64>(),
            ttl_ms in any::<u64>(),
            short_value in proptest::option::of(bytes(30)),
            for_update_ts in any::<u64>(),
            txn_size in any::<u64>(),
            min_commit_ts in any::<u64>(),
            use_async_commit in any::<bool>(),
            secondaries in proptest::collection::vec(bytes(10), 0..4),
        ) -> Lock {
            Lock {
                lock_type, primary, ts: ts.into(), ttl_ms, short_value,
                for_update_ts: for_update_ts.into(), txn_size,
                min_commit_ts: min_commit_ts.into(), use_async_commit, secondaries,
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip(lock in arb_lock()) {
            let bytes = lock.to_bytes();
            prop_assert_eq!(Lock::parse(&bytes).unwrap(), lock.clone());
            // Every strict prefix is an error, never a panic.
            for len in 0..bytes.len() {
                prop_assert!(Lock::parse(&bytes[..len]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(Lock::parse(&longer).is_err());
        }

        #[test]
        fn garbage_never_panics(input in bytes(64)) {
            let _ = Lock::parse(&input);
        }
    }

    #[test]
    fn bad_fields() {
        let lock = Lock::new(LockType::Put, b"p".to_vec(), 5.into(), 10);
        let mut bytes = lock.to_bytes();
        bytes[1] = b'?';
        assert!(matches!(
            Lock::parse(&bytes),
            Err(crate::Error::BadField { .. })
        ));
        bytes[0] = b'X';
        assert!(matches!(
            Lock::parse(&bytes),
            Err(crate::Error::BadTag { .. })
        ));
        let info = lock.to_lock_info(b"k".to_vec());
        assert_eq!(info.key, b"k");
        assert_eq!(info.lock_version, 5.into());
        assert_eq!(info.primary_lock, b"p");
    }
}
