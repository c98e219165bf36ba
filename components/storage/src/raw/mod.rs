//! Raw (non-transactional) reads and writes over one region's read view.
//!
//! Keys in and out are client keys (keyspace prefix included); the engine holds
//! `z` + memcomparable(client key). Reads skip expired values as if absent; writes return
//! [`Modify`] lists whose keys are the memcomparable encoding (the raftstore adds `z`).

pub mod value;
mod write;

#[cfg(test)]
mod tests;

use codec::keys::{data_end_key, data_key, origin_key};
use codec::memcomparable::{decode_bytes, encode_bytes};
use engine::{CfName, EngineSnapshot};

pub use write::{
    delete_modifies, delete_range_modify, put_modifies, raw_cas, CasExpect, CasOutcome,
};

use crate::{ResponseBudget, Result, StorageError};

/// A key-value pair as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPair {
    /// Client key.
    pub key: Vec<u8>,
    /// User value (empty for key-only scans).
    pub value: Vec<u8>,
}

/// One change to a region's data: keys are memcomparable-encoded client keys, values are in
/// their stored form (see [`value`]), and an empty `DeleteRange` end means the region's end.
pub use engine::Modify;

/// A region's key range, memcomparable-encoded as region boundaries are; an empty end is
/// +infinity.
#[derive(Debug, Clone, Copy)]
pub struct RegionRange<'a> {
    /// Encoded start key, inclusive.
    pub start_key: &'a [u8],
    /// Encoded end key, exclusive; empty for +infinity.
    pub end_key: &'a [u8],
}

impl RegionRange<'_> {
    /// Whether the client key `key` lies in the region.
    pub fn contains(&self, key: &[u8]) -> bool {
        let encoded = encode_bytes(key);
        encoded.as_slice() >= self.start_key
            && (self.end_key.is_empty() || encoded.as_slice() < self.end_key)
    }

    /// The first client key of `keys` outside the region, if any.
    pub fn first_outside<'k, K: AsRef<[u8]>>(&self, keys: &'k [K]) -> Option<&'k [u8]> {
        keys.iter().map(AsRef::as_ref).find(|k| !self.contains(k))
    }
}

/// A scan request's key range in client keys: `[lower, upper)`, empty `upper` unbounded.
#[derive(Debug, Clone, Copy)]
pub struct ScanRange<'a> {
    /// Inclusive lower bound.
    pub lower: &'a [u8],
    /// Exclusive upper bound; empty for unbounded.
    pub upper: &'a [u8],
}

/// Options of one scan.
#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    /// Most pairs returned; 0 returns none.
    pub limit: usize,
    /// Leave values empty.
    pub key_only: bool,
    /// Newest-first: descending key order from the upper bound.
    pub reverse: bool,
}

fn stored_get(snap: &dyn EngineSnapshot, cf: CfName, key: &[u8]) -> Result<Option<Vec<u8>>> {
    Ok(snap.get_cf(cf, &data_key(&encode_bytes(key)))?)
}

/// The live value of `key` at `now_secs`, or `None` if absent or expired.
pub fn raw_get(
    snap: &dyn EngineSnapshot,
    cf: CfName,
    key: &[u8],
    now_secs: u64,
) -> Result<Option<Vec<u8>>> {
    let Some(stored) = stored_get(snap, cf, key)? else {
        return Ok(None);
    };
    let raw = value::decode_value(&stored)?;
    Ok((!raw.is_expired(now_secs)).then(|| raw.value.to_vec()))
}

/// The live pairs among `keys`, in request order; absent or expired keys are left out. Fails
/// once the pairs pass `budget`.
pub fn raw_batch_get<K: AsRef<[u8]>>(
    snap: &dyn EngineSnapshot,
    cf: CfName,
    keys: &[K],
    now_secs: u64,
    budget: &mut ResponseBudget,
) -> Result<Vec<KvPair>> {
    let mut pairs = Vec::with_capacity(keys.len());
    for key in keys {
        if let Some(value) = raw_get(snap, cf, key.as_ref(), now_secs)? {
            budget.charge(key.as_ref().len() + value.len())?;
            pairs.push(KvPair {
                key: key.as_ref().to_vec(),
                value,
            });
        }
    }
    Ok(pairs)
}

/// Seconds before `key` expires: `Some(0)` if it never does, `None` if absent or expired.
pub fn raw_get_key_ttl(
    snap: &dyn EngineSnapshot,
    cf: CfName,
    key: &[u8],
    now_secs: u64,
) -> Result<Option<u64>> {
    let Some(stored) = stored_get(snap, cf, key)? else {
        return Ok(None);
    };
    Ok(value::decode_value(&stored)?.remaining_ttl_secs(now_secs))
}

/// The engine bounds `[lower, upper)` of a scan: the request's range cut to the region's.
/// `None` when they do not overlap.
pub fn scan_bounds(region: RegionRange<'_>, range: ScanRange<'_>) -> Option<(Vec<u8>, Vec<u8>)> {
    let lower = data_key(&encode_bytes(range.lower)).max(data_key(region.start_key));
    let region_upper = data_end_key(region.end_key);
    let upper = if range.upper.is_empty() {
        region_upper
    } else {
        data_key(&encode_bytes(range.upper)).min(region_upper)
    };
    (lower < upper).then_some((lower, upper))
}

/// Live pairs of `range` inside `region`, in key order (descending if `reverse`), at most
/// `opts.limit` (any limit: the response is bounded by `budget`, and fails once the pairs
/// pass it).
pub fn raw_scan(
    snap: &dyn EngineSnapshot,
    cf: CfName,
    region: RegionRange<'_>,
    range: ScanRange<'_>,
    opts: ScanOptions,
    now_secs: u64,
    budget: &mut ResponseBudget,
) -> Result<Vec<KvPair>> {
    let mut pairs = Vec::new();
    let Some((lower, upper)) = scan_bounds(region, range) else {
        return Ok(pairs);
    };
    if opts.limit == 0 {
        return Ok(pairs);
    }
    let mut failure = None;
    snap.scan_cf(cf, &lower, Some(&upper), opts.reverse, &mut |k, v| {
        let entry = scan_entry(k, v, opts.key_only, now_secs).and_then(|pair| match pair {
            Some(p) => budget.charge(p.key.len() + p.value.len()).map(|()| Some(p)),
            None => Ok(None),
        });
        match entry {
            Ok(Some(pair)) => pairs.push(pair),
            Ok(None) => {}
            Err(e) => {
                failure = Some(e);
                return Ok(false);
            }
        }
        Ok(pairs.len() < opts.limit)
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(pairs),
    }
}

/// Decodes one scanned engine entry; `None` if it has expired.
fn scan_entry(
    data_key: &[u8],
    stored: &[u8],
    key_only: bool,
    now_secs: u64,
) -> Result<Option<KvPair>> {
    let raw = value::decode_value(stored)?;
    if raw.is_expired(now_secs) {
        return Ok(None);
    }
    if data_key.first() != Some(&codec::keys::DATA_PREFIX) {
        return Err(StorageError::Corrupt(format!(
            "scan met a non-data key {data_key:?}"
        )));
    }
    let (key, _) = decode_bytes(origin_key(data_key))?;
    let value = if key_only {
        Vec::new()
    } else {
        raw.value.to_vec()
    };
    Ok(Some(KvPair { key, value }))
}
