//! [`Write`]: a record of the `write` CF, stored at `key + commit_ts` (a rollback at
//! `key + start_ts`).

use crate::bytes::{Reader, Writer};
use crate::{LockType, Result, TimeStamp};

/// Tag byte of format version 1 of a write record.
const WRITE_TAG_V1: u8 = b'W';
const RECORD: &str = "write";

/// What a write record stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteType {
    /// A committed value.
    Put,
    /// A committed delete.
    Delete,
    /// A committed read lock: the value is unchanged.
    Lock,
    /// The transaction at `start_ts` was rolled back on this key.
    Rollback,
}

impl WriteType {
    /// The record a committed lock of `lock_type` becomes; `None` for a pessimistic lock, which
    /// cannot be committed.
    pub fn from_lock_type(lock_type: LockType) -> Option<Self> {
        match lock_type {
            LockType::Put => Some(WriteType::Put),
            LockType::Delete => Some(WriteType::Delete),
            LockType::Lock => Some(WriteType::Lock),
            LockType::Pessimistic => None,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            WriteType::Put => b'P',
            WriteType::Delete => b'D',
            WriteType::Lock => b'L',
            WriteType::Rollback => b'R',
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            b'P' => WriteType::Put,
            b'D' => WriteType::Delete,
            b'L' => WriteType::Lock,
            b'R' => WriteType::Rollback,
            _ => return None,
        })
    }
}

/// A commit or rollback record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// What the record stands for.
    pub write_type: WriteType,
    /// Start ts of the transaction that wrote it.
    pub start_ts: TimeStamp,
    /// The value, when at most [`crate::SHORT_VALUE_MAX_LEN`] bytes (else it is in CF default).
    pub short_value: Option<Vec<u8>>,
    /// A rollback of the transaction whose start ts equals this record's commit ts was folded
    /// into this record (the two would have had the same key).
    pub has_overlapped_rollback: bool,
}

impl Write {
    /// A record of `write_type` by the transaction at `start_ts`.
    pub fn new(write_type: WriteType, start_ts: TimeStamp, short_value: Option<Vec<u8>>) -> Self {
        Write {
            write_type,
            start_ts,
            short_value,
            has_overlapped_rollback: false,
        }
    }

    /// The rollback record of the transaction at `start_ts`.
    pub fn new_rollback(start_ts: TimeStamp) -> Self {
        Write::new(WriteType::Rollback, start_ts, None)
    }

    /// Stored form of the record.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(WRITE_TAG_V1);
        w.u8(self.write_type.to_u8());
        w.u64(self.start_ts.into_inner());
        w.opt_bytes(self.short_value.as_deref());
        w.u8(u8::from(self.has_overlapped_rollback));
        w.0
    }

    /// Parses a stored record.
    pub fn parse(input: &[u8]) -> Result<Write> {
        let mut r = Reader::new(RECORD, input, WRITE_TAG_V1)?;
        let type_byte = r.u8()?;
        let write_type =
            WriteType::from_u8(type_byte).ok_or_else(|| r.bad("write_type", type_byte.into()))?;
        let start_ts = TimeStamp::new(r.u64()?);
        let short_value = r.opt_bytes("short_value flag")?;
        let has_overlapped_rollback = r.bool("has_overlapped_rollback")?;
        r.finish()?;
        Ok(Write {
            write_type,
            start_ts,
            short_value,
            has_overlapped_rollback,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write_type() -> impl Strategy<Value = WriteType> {
        prop_oneof![
            Just(WriteType::Put),
            Just(WriteType::Delete),
            Just(WriteType::Lock),
            Just(WriteType::Rollback),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(
            write_type in write_type(),
            start_ts in any::<u64>(),
            short_value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            has_overlapped_rollback in any::<bool>(),
        ) {
            let write = Write { write_type, start_ts: start_ts.into(), short_value, has_overlapped_rollback };
            let bytes = write.to_bytes();
            prop_assert_eq!(Write::parse(&bytes).unwrap(), write.clone());
            for len in 0..bytes.len() {
                prop_assert!(Write::parse(&bytes[..len]).is_err());
            }
        }

        #[test]
        fn garbage_never_panics(input in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Write::parse(&input);
        }
    }

    #[test]
    fn lock_types_map_to_write_types() {
        assert_eq!(
            WriteType::from_lock_type(LockType::Put),
            Some(WriteType::Put)
        );
        assert_eq!(WriteType::from_lock_type(LockType::Pessimistic), None);
        let rollback = Write::new_rollback(3.into());
        assert_eq!(Write::parse(&rollback.to_bytes()).unwrap(), rollback);
        assert!(Write::parse(&[b'W', b'?', 0]).is_err());
    }
}
