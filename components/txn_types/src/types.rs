//! [`TimeStamp`], [`Key`] and [`Mutation`].

use std::fmt;

use codec::memcomparable::{decode_bytes, encode_bytes};
use codec::number::{decode_u64_desc, encode_u64_desc, U64_SIZE};

use crate::{Error, Result};

/// Bits of the logical part of a TSO timestamp.
const TSO_LOGICAL_BITS: u32 = 18;

/// A TSO timestamp: `physical_ms << 18 | logical`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimeStamp(u64);

impl TimeStamp {
    /// Wraps a raw timestamp.
    pub const fn new(ts: u64) -> Self {
        TimeStamp(ts)
    }

    /// The raw timestamp.
    pub const fn into_inner(self) -> u64 {
        self.0
    }

    /// The zero timestamp ("none").
    pub const fn zero() -> Self {
        TimeStamp(0)
    }

    /// The largest timestamp ("latest").
    pub const fn max() -> Self {
        TimeStamp(u64::MAX)
    }

    /// Whether this is [`TimeStamp::zero`].
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Whether this is [`TimeStamp::max`].
    pub const fn is_max(self) -> bool {
        self.0 == u64::MAX
    }

    /// The next timestamp (saturating at max).
    pub const fn next(self) -> Self {
        TimeStamp(self.0.saturating_add(1))
    }

    /// The previous timestamp (saturating at zero).
    pub const fn prev(self) -> Self {
        TimeStamp(self.0.saturating_sub(1))
    }

    /// The physical part, in milliseconds since the Unix epoch.
    pub const fn physical(self) -> u64 {
        self.0 >> TSO_LOGICAL_BITS
    }

    /// Builds a timestamp from its physical (ms) and logical parts.
    pub const fn compose(physical_ms: u64, logical: u64) -> Self {
        TimeStamp((physical_ms << TSO_LOGICAL_BITS) | logical)
    }
}

impl fmt::Display for TimeStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for TimeStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimeStamp({})", self.0)
    }
}

impl From<u64> for TimeStamp {
    fn from(ts: u64) -> Self {
        TimeStamp(ts)
    }
}

/// A client key in its memcomparable encoding (no `z` data prefix, no timestamp), the form it
/// takes in the `lock` CF and as the prefix of its versions in the `write` and `default` CFs.
/// Ordered by the encoded bytes, which is the order of the raw keys.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Vec<u8>);

impl Key {
    /// Encodes a raw client key.
    pub fn from_raw(raw: &[u8]) -> Self {
        Key(encode_bytes(raw))
    }

    /// Wraps bytes that already are a memcomparable encoding.
    pub fn from_encoded(encoded: Vec<u8>) -> Self {
        Key(encoded)
    }

    /// The encoded bytes.
    pub fn as_encoded(&self) -> &[u8] {
        &self.0
    }

    /// The encoded bytes, by value.
    pub fn into_encoded(self) -> Vec<u8> {
        self.0
    }

    /// Decodes the raw client key; fails if the bytes are not exactly one encoded key.
    pub fn to_raw(&self) -> Result<Vec<u8>> {
        let (raw, consumed) = decode_bytes(&self.0)?;
        if consumed != self.0.len() {
            return Err(Error::TrailingBytes {
                record: "key",
                extra_bytes: self.0.len() - consumed,
            });
        }
        Ok(raw)
    }

    /// The key of this key's version at `ts`: encoded key + `!ts` big-endian, so that newer
    /// versions sort first.
    pub fn append_ts(&self, ts: TimeStamp) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() + U64_SIZE);
        out.extend_from_slice(&self.0);
        encode_u64_desc(&mut out, ts.into_inner());
        out
    }

    /// Splits a versioned key built by [`Key::append_ts`] into the encoded key and the ts.
    pub fn split_on_ts(key_with_ts: &[u8]) -> Result<(&[u8], TimeStamp)> {
        let split_at = key_with_ts
            .len()
            .checked_sub(U64_SIZE)
            .ok_or_else(|| Error::Truncated {
                record: "versioned key",
                needed_bytes: U64_SIZE - key_with_ts.len(),
            })?;
        let (key, ts) = key_with_ts.split_at(split_at);
        Ok((key, TimeStamp(decode_u64_desc(ts)?)))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_raw() {
            Ok(raw) => write!(f, "Key({:?})", String::from_utf8_lossy(&raw)),
            Err(_) => write!(f, "Key(encoded {:?})", self.0),
        }
    }
}

/// One key of a prewrite: what to write there, or what to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Writes the value.
    Put(Key, Vec<u8>),
    /// Deletes the key.
    Delete(Key),
    /// Locks the key without changing it (a read that must not be written under).
    Lock(Key),
    /// Writes the value; fails with "already exists" if the key has a value.
    Insert(Key, Vec<u8>),
    /// Writes nothing; fails with "already exists" if the key has a value.
    CheckNotExists(Key),
}

impl Mutation {
    /// The key mutated.
    pub fn key(&self) -> &Key {
        match self {
            Mutation::Put(k, _)
            | Mutation::Delete(k)
            | Mutation::Lock(k)
            | Mutation::Insert(k, _)
            | Mutation::CheckNotExists(k) => k,
        }
    }

    /// The value written, for `Put` and `Insert`.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Mutation::Put(_, v) | Mutation::Insert(_, v) => Some(v),
            _ => None,
        }
    }

    /// Whether the key must not have a value yet.
    pub fn should_not_exist(&self) -> bool {
        matches!(self, Mutation::Insert(..) | Mutation::CheckNotExists(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps() {
        let ts = TimeStamp::compose(1_000, 7);
        assert_eq!(ts.physical(), 1_000);
        assert_eq!(ts.into_inner() & ((1 << 18) - 1), 7);
        assert_eq!(ts.next().prev(), ts);
        assert_eq!(TimeStamp::max().next(), TimeStamp::max());
        assert_eq!(TimeStamp::zero().prev(), TimeStamp::zero());
        assert!(TimeStamp::zero().is_zero() && TimeStamp::max().is_max());
        assert_eq!(TimeStamp::new(5).to_string(), "5");
    }

    #[test]
    fn bad_keys() {
        assert!(Key::split_on_ts(&[1, 2, 3]).is_err());
        assert!(Key::from_encoded(vec![1, 2]).to_raw().is_err());
        let mut trailing = Key::from_raw(b"k").into_encoded();
        trailing.push(0);
        assert!(Key::from_encoded(trailing).to_raw().is_err());
    }

    proptest! {
        #[test]
        fn key_round_trip(raw in proptest::collection::vec(any::<u8>(), 0..40), ts in any::<u64>()) {
            let key = Key::from_raw(&raw);
            prop_assert_eq!(key.to_raw().unwrap(), raw);
            let versioned = key.append_ts(TimeStamp::new(ts));
            let (encoded, got) = Key::split_on_ts(&versioned).unwrap();
            prop_assert_eq!(encoded, key.as_encoded());
            prop_assert_eq!(got, TimeStamp::new(ts));
        }

        #[test]
        fn key_order_is_raw_order(
            a in proptest::collection::vec(any::<u8>(), 0..20),
            b in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            prop_assert_eq!(Key::from_raw(&a).cmp(&Key::from_raw(&b)), a.cmp(&b));
        }
    }
}
