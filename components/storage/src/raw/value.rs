//! How raw values are stored: the user value, then, when it expires, its 8-byte big-endian
//! expiry time in unix seconds, then one flag byte (bit 0: has an expiry).
//!
//! `value ++ [0]` or `value ++ expire_at_secs.to_be_bytes() ++ [1]`.

use crate::{Result, StorageError};

/// Flag bit: an expiry time precedes the flag byte.
pub const FLAG_HAS_TTL: u8 = 0x01;
const EXPIRE_BYTES: usize = 8;

/// A decoded stored value, borrowing the user value from the stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawValue<'a> {
    /// The user's value.
    pub value: &'a [u8],
    /// When it expires (unix seconds); `None` never.
    pub expire_at_secs: Option<u64>,
}

impl RawValue<'_> {
    /// Whether the value is gone at `now_secs`: it expires at the start of its expiry second.
    pub fn is_expired(&self, now_secs: u64) -> bool {
        self.expire_at_secs.is_some_and(|at| at <= now_secs)
    }

    /// Seconds left before expiry at `now_secs`: `Some(0)` for a value without TTL (as TiKV
    /// answers), `None` if already expired.
    pub fn remaining_ttl_secs(&self, now_secs: u64) -> Option<u64> {
        match self.expire_at_secs {
            None => Some(0),
            Some(at) if at > now_secs => Some(at - now_secs),
            Some(_) => None,
        }
    }
}

/// The expiry time of a value written at `now_secs` with `ttl_secs` (0: never expires).
pub fn expire_at(ttl_secs: u64, now_secs: u64) -> Option<u64> {
    (ttl_secs > 0).then(|| now_secs.saturating_add(ttl_secs))
}

/// Encodes a user value with its optional expiry.
pub fn encode_value(value: &[u8], expire_at_secs: Option<u64>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(value.len() + EXPIRE_BYTES + 1);
    buf.extend_from_slice(value);
    match expire_at_secs {
        Some(at) => {
            buf.extend_from_slice(&at.to_be_bytes());
            buf.push(FLAG_HAS_TTL);
        }
        None => buf.push(0),
    }
    buf
}

/// Decodes stored bytes written by [`encode_value`].
pub fn decode_value(stored: &[u8]) -> Result<RawValue<'_>> {
    let (&flag, rest) = stored
        .split_last()
        .ok_or_else(|| StorageError::Corrupt("empty raw value".into()))?;
    if flag & FLAG_HAS_TTL == 0 {
        return Ok(RawValue {
            value: rest,
            expire_at_secs: None,
        });
    }
    let split = rest.len().checked_sub(EXPIRE_BYTES).ok_or_else(|| {
        StorageError::Corrupt(format!(
            "raw value of {} bytes lacks its expiry",
            stored.len()
        ))
    })?;
    let (value, at) = rest.split_at(split);
    let at = u64::from_be_bytes(at.try_into().expect("split at 8 bytes from the end"));
    Ok(RawValue {
        value,
        expire_at_secs: Some(at),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn layout() {
        assert_eq!(encode_value(b"v", None), b"v\0");
        assert_eq!(encode_value(b"v", Some(258)), b"v\0\0\0\0\0\0\x01\x02\x01");
        assert!(decode_value(b"").is_err());
        assert!(decode_value(b"abc\x01").is_err());
    }

    #[test]
    fn expiry() {
        let v = RawValue {
            value: b"",
            expire_at_secs: expire_at(10, 100),
        };
        assert_eq!(v.remaining_ttl_secs(100), Some(10));
        assert!(!v.is_expired(109));
        assert!(v.is_expired(110));
        assert_eq!(v.remaining_ttl_secs(110), None);
        let forever = RawValue {
            value: b"",
            expire_at_secs: expire_at(0, 100),
        };
        assert_eq!(forever.remaining_ttl_secs(u64::MAX), Some(0));
    }

    proptest! {
        #[test]
        fn round_trip(value in proptest::collection::vec(any::<u8>(), 0..64), at in proptest::option::of(any::<u64>())) {
            let stored = encode_value(&value, at);
            let decoded = decode_value(&stored).unwrap();
            prop_assert_eq!(decoded.value, value.as_slice());
            prop_assert_eq!(decoded.expire_at_secs, at);
        }
    }
}
