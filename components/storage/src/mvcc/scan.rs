//! Range reads: [`scan`] of values at a ts and [`scan_locks`].
//!
//! Range semantics follow kvproto's `ScanRequest`: a forward scan covers
//! `[start_key, end_key)`; a reverse scan covers `[end_key, start_key)` and yields keys in
//! descending order (the client swaps the bounds when it builds a reverse request). An empty
//! bound is unbounded on its side; both are cut to the region.

use codec::keys::origin_key;
use engine::{EngineIterator, EngineSnapshot, CF_LOCK, CF_WRITE};
use txn_types::{Key, Lock, LockInfo, TimeStamp};

use super::reader::{check_lock_conflict, read_at_cursor, versions_end};
use crate::raw::{scan_bounds, RegionRange, ScanRange};
use crate::txn::{TxnError, TxnResult};
use crate::ResponseBudget;

/// One transactional scan request, cut to one region.
#[derive(Debug, Clone, Copy)]
pub struct TxnScanOptions<'a> {
    /// The region's encoded start key (inclusive).
    pub region_start: &'a [u8],
    /// The region's encoded end key (exclusive; empty for +infinity).
    pub region_end: &'a [u8],
    /// Raw key: inclusive lower bound of a forward scan, exclusive upper bound of a reverse
    /// one. Empty: unbounded.
    pub start_key: &'a [u8],
    /// Raw key: exclusive upper bound of a forward scan, inclusive lower bound of a reverse one.
    /// Empty: unbounded.
    pub end_key: &'a [u8],
    /// Most entries (pairs and lock errors) returned; 0 returns none. Any limit is served: the
    /// response is bounded by the budget [`scan`] is given.
    pub limit: usize,
    /// The snapshot ts.
    pub read_ts: TimeStamp,
    /// Leave values empty (and do not load long values).
    pub key_only: bool,
    /// Descending key order.
    pub reverse: bool,
    /// Locks of these transactions do not block the read.
    pub bypass_locks: &'a [TimeStamp],
}

/// One scanned entry: a visible pair, or the lock hiding a key (TiKV's per-pair `KeyError`).
pub type ScanEntry = Result<super::TxnKvPair, TxnError>;

/// Pairs visible at `opts.read_ts` in the range, in key order (descending when reversed); a
/// locked key yields an `Err` entry that counts towards the limit. Fails once the pairs (and
/// locked keys) pass `budget`.
pub fn scan(
    snap: &dyn EngineSnapshot,
    opts: &TxnScanOptions<'_>,
    budget: &mut ResponseBudget,
) -> TxnResult<Vec<ScanEntry>> {
    let (lower, upper) = if opts.reverse {
        (opts.end_key, opts.start_key)
    } else {
        (opts.start_key, opts.end_key)
    };
    let region = RegionRange {
        start_key: opts.region_start,
        end_key: opts.region_end,
    };
    let mut out = Vec::new();
    let Some((lower, upper)) = scan_bounds(region, ScanRange { lower, upper }) else {
        return Ok(out);
    };
    if opts.limit == 0 {
        return Ok(out);
    }
    let mut locks = snap.iter_cf(CF_LOCK, &lower, Some(&upper))?;
    let mut writes = snap.iter_cf(CF_WRITE, &lower, Some(&upper))?;
    let mut cursors = Cursors {
        lock_valid: if opts.reverse {
            locks.seek_to_last()?
        } else {
            locks.seek_to_first()?
        },
        write_valid: if opts.reverse {
            writes.seek_to_last()?
        } else {
            writes.seek_to_first()?
        },
        locks,
        writes,
    };
    while out.len() < opts.limit {
        let Some(entry) = cursors.step(snap, opts)? else {
            break;
        };
        if let Some(entry) = entry {
            match &entry {
                Ok((key, value)) => budget.charge(key.len() + value.len())?,
                Err(TxnError::KeyIsLocked(lock)) => budget.charge(lock_info_bytes(lock))?,
                Err(_) => {}
            }
            out.push(entry);
        }
    }
    Ok(out)
}

/// The two cursors of a scan, each positioned at the next user key to visit.
struct Cursors<'s> {
    locks: Box<dyn EngineIterator + 's>,
    writes: Box<dyn EngineIterator + 's>,
    lock_valid: bool,
    write_valid: bool,
}

impl Cursors<'_> {
    /// Visits the next user key: `None` when the range is exhausted, `Some(None)` when the key
    /// has no visible value.
    fn step(
        &mut self,
        snap: &dyn EngineSnapshot,
        opts: &TxnScanOptions<'_>,
    ) -> TxnResult<Option<Option<ScanEntry>>> {
        let lock_key = self
            .lock_valid
            .then(|| origin_key(self.locks.key()).to_vec());
        let write_key = if self.write_valid {
            Some(Key::split_on_ts(origin_key(self.writes.key()))?.0.to_vec())
        } else {
            None
        };
        let current = match (&lock_key, &write_key) {
            (None, None) => return Ok(None),
            (Some(k), None) | (None, Some(k)) => k.clone(),
            (Some(l), Some(w)) if opts.reverse => l.max(w).clone(),
            (Some(l), Some(w)) => l.min(w).clone(),
        };
        let key = Key::from_encoded(current);
        let raw = key.to_raw()?;
        let mut entry = None;
        if lock_key.as_deref() == Some(key.as_encoded()) {
            let lock = Lock::parse(self.locks.value())?;
            if let Err(e) = check_lock_conflict(&lock, &raw, opts.read_ts, opts.bypass_locks) {
                entry = Some(Err(e));
            }
            self.lock_valid = if opts.reverse {
                self.locks.prev()?
            } else {
                self.locks.next()?
            };
        }
        if write_key.as_deref() == Some(key.as_encoded()) {
            if entry.is_none() {
                let value =
                    read_at_cursor(&mut *self.writes, snap, &key, opts.read_ts, opts.key_only)?;
                entry = value.map(|v| Ok((raw, v)));
            }
            // Jump over the rest of the key's versions with one seek.
            self.write_valid = if opts.reverse {
                self.writes
                    .seek_for_prev(&codec::keys::data_key(key.as_encoded()))?
            } else {
                self.writes.seek(&versions_end(&key))?
            };
        }
        Ok(Some(entry))
    }
}

/// Locks with ts <= `max_version` in `[start_key_raw, end_key_raw)` (empty end: unbounded)
/// cut to the region, in key order; at most `limit` (0: unbounded). Fails once their keys and
/// primaries pass `budget`.
#[allow(clippy::too_many_arguments)]
pub fn scan_locks(
    snap: &dyn EngineSnapshot,
    region_start: &[u8],
    region_end: &[u8],
    start_key_raw: &[u8],
    end_key_raw: &[u8],
    max_version: TimeStamp,
    limit: usize,
    budget: &mut ResponseBudget,
) -> TxnResult<Vec<LockInfo>> {
    let region = RegionRange {
        start_key: region_start,
        end_key: region_end,
    };
    let range = ScanRange {
        lower: start_key_raw,
        upper: end_key_raw,
    };
    let mut out = Vec::new();
    let Some((lower, upper)) = scan_bounds(region, range) else {
        return Ok(out);
    };
    let mut iter = snap.iter_cf(CF_LOCK, &lower, Some(&upper))?;
    let mut valid = iter.seek_to_first()?;
    while valid && (limit == 0 || out.len() < limit) {
        let lock = Lock::parse(iter.value())?;
        if lock.ts <= max_version {
            let raw = Key::from_encoded(origin_key(iter.key()).to_vec()).to_raw()?;
            let info = lock.to_lock_info(raw);
            budget.charge(lock_info_bytes(&info))?;
            out.push(info);
        }
        valid = iter.next()?;
    }
    Ok(out)
}

/// The bytes a lock adds to a response: its key, primary and async-commit secondaries.
fn lock_info_bytes(lock: &LockInfo) -> usize {
    lock.key.len() + lock.primary_lock.len() + lock.secondaries.iter().map(Vec::len).sum::<usize>()
}
