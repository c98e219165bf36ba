//! Raw writes: the [`Modify`] lists of put, delete and delete-range, and the compare-and-swap
//! decision.

use codec::memcomparable::encode_bytes;
use engine::{CfName, EngineSnapshot};

use super::value::{encode_value, expire_at};
use super::{raw_get, Modify};
use crate::{Result, StorageError};

/// Puts of `pairs`, each expiring after its TTL: `ttls` per pair when given, else `ttl` for
/// all (0: never).
pub fn put_modifies<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    cf: CfName,
    pairs: &[(K, V)],
    ttls: &[u64],
    ttl: u64,
    now_secs: u64,
) -> Result<Vec<Modify>> {
    if !ttls.is_empty() && ttls.len() != pairs.len() {
        return Err(StorageError::TtlCountMismatch {
            ttls: ttls.len(),
            pairs: pairs.len(),
        });
    }
    Ok(pairs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let ttl = ttls.get(i).copied().unwrap_or(ttl);
            Modify::Put {
                cf,
                key: encode_bytes(k.as_ref()),
                value: encode_value(v.as_ref(), expire_at(ttl, now_secs)),
            }
        })
        .collect())
}

/// Deletes of `keys`.
pub fn delete_modifies<K: AsRef<[u8]>>(cf: CfName, keys: &[K]) -> Vec<Modify> {
    keys.iter()
        .map(|k| Modify::Delete {
            cf,
            key: encode_bytes(k.as_ref()),
        })
        .collect()
}

/// Delete of the client range `[start, end)`; an empty `end` reaches the region's end.
pub fn delete_range_modify(cf: CfName, start: &[u8], end: &[u8]) -> Modify {
    let end = if end.is_empty() {
        Vec::new()
    } else {
        encode_bytes(end)
    };
    Modify::DeleteRange {
        cf,
        start: encode_bytes(start),
        end,
    }
}

/// What a compare-and-swap expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasExpect<'a> {
    /// The key must be absent (or expired).
    NotExist,
    /// The key must hold exactly this value.
    Value(&'a [u8]),
}

/// The outcome of a compare-and-swap decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the expectation held and the new value is to be written.
    pub succeed: bool,
    /// The live value found (`None`: absent or expired).
    pub previous: Option<Vec<u8>>,
    /// The write to propose when `succeed` (empty otherwise).
    pub modifies: Vec<Modify>,
}

/// Decides a compare-and-swap of `key` to `value` (with `ttl`, 0: never expires) against the
/// view in `snap`. The caller holds the key's latch from this read until the write applies.
pub fn raw_cas(
    snap: &dyn EngineSnapshot,
    cf: CfName,
    key: &[u8],
    value: &[u8],
    expect: CasExpect<'_>,
    ttl: u64,
    now_secs: u64,
) -> Result<CasOutcome> {
    let previous = raw_get(snap, cf, key, now_secs)?;
    let succeed = match expect {
        CasExpect::NotExist => previous.is_none(),
        CasExpect::Value(v) => previous.as_deref() == Some(v),
    };
    let modifies = if succeed {
        put_modifies(cf, &[(key, value)], &[], ttl, now_secs)?
    } else {
        Vec::new()
    };
    Ok(CasOutcome {
        succeed,
        previous,
        modifies,
    })
}
