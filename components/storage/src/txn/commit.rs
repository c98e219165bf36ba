//! The second phase and its undo: commit, rollback, cleanup and lock resolution.

use std::collections::HashMap;

use codec::keys::origin_key;
use engine::{EngineSnapshot, Modify, CF_LOCK};
use txn_types::{Key, Lock, TimeStamp, Write, WriteType};

use super::{raw_of, require, rollback_key, TxnError, TxnResult, WriteBuffer};
use crate::mvcc::{get_txn_commit_record, load_lock, CommitRecord};
use crate::raw::{scan_bounds, RegionRange, ScanRange};

/// The modifies of an action that answers nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnOutcome {
    /// What to write.
    pub modifies: Vec<Modify>,
}

/// The result of [`cleanup`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupOutcome {
    /// What to write.
    pub modifies: Vec<Modify>,
    /// Non-zero if the transaction had committed the key (then nothing is written).
    pub commit_ts: TimeStamp,
}

/// The result of [`resolve_lock`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveLockOutcome {
    /// What to write.
    pub modifies: Vec<Modify>,
    /// More matching locks remain in the region: call again after applying these modifies.
    pub has_more: bool,
}

/// Commits `lock` (the transaction's lock on `key`) at `commit_ts`.
pub(super) fn commit_lock(
    buf: &mut WriteBuffer,
    key: &Key,
    lock: Lock,
    commit_ts: TimeStamp,
) -> TxnResult<()> {
    let Some(write_type) = WriteType::from_lock_type(lock.lock_type) else {
        // A pessimistic lock was never prewritten: there is nothing to commit.
        return Err(TxnError::TxnLockNotFound {
            start_ts: lock.ts,
            commit_ts,
            key: raw_of(key)?,
        });
    };
    if commit_ts < lock.min_commit_ts {
        return Err(TxnError::CommitTsExpired {
            start_ts: lock.ts,
            commit_ts,
            key: raw_of(key)?,
            min_commit_ts: lock.min_commit_ts,
        });
    }
    buf.put_write(
        key,
        commit_ts,
        &Write::new(write_type, lock.ts, lock.short_value),
    );
    buf.unlock(key);
    Ok(())
}

/// Commits the transaction at `start_ts` on one key; a key it already committed is a no-op.
fn commit_key(
    buf: &mut WriteBuffer,
    snap: &dyn EngineSnapshot,
    key: &Key,
    start_ts: TimeStamp,
    commit_ts: TimeStamp,
) -> TxnResult<()> {
    if let Some(lock) = load_lock(snap, key)?.filter(|l| l.ts == start_ts) {
        return commit_lock(buf, key, lock, commit_ts);
    }
    match get_txn_commit_record(snap, key, start_ts)? {
        CommitRecord::Committed { .. } => Ok(()),
        CommitRecord::RolledBack | CommitRecord::None { .. } => Err(TxnError::TxnLockNotFound {
            start_ts,
            commit_ts,
            key: raw_of(key)?,
        }),
    }
}

/// Commits the transaction at `start_ts` on `keys` (raw) at `commit_ts`.
pub fn commit(
    snap: &dyn EngineSnapshot,
    keys: &[Vec<u8>],
    start_ts: TimeStamp,
    commit_ts: TimeStamp,
) -> TxnResult<TxnOutcome> {
    require(!start_ts.is_zero(), "commit with a zero start_ts")?;
    require(
        commit_ts > start_ts,
        "commit_ts must be greater than start_ts",
    )?;
    let mut buf = WriteBuffer::default();
    for raw in keys {
        commit_key(&mut buf, snap, &Key::from_raw(raw), start_ts, commit_ts)?;
    }
    Ok(TxnOutcome {
        modifies: buf.modifies,
    })
}

/// Rolls back the transaction at `start_ts` on `keys` (raw), leaving rollback records even
/// where it left nothing, so a late prewrite fails. `Committed` if it committed any of them.
pub fn batch_rollback(
    snap: &dyn EngineSnapshot,
    keys: &[Vec<u8>],
    start_ts: TimeStamp,
) -> TxnResult<TxnOutcome> {
    require(!start_ts.is_zero(), "rollback with a zero start_ts")?;
    let mut buf = WriteBuffer::default();
    for raw in keys {
        let key = Key::from_raw(raw);
        let lock = load_lock(snap, &key)?.filter(|l| l.ts == start_ts);
        rollback_key(&mut buf, snap, &key, lock.as_ref(), start_ts)?;
    }
    Ok(TxnOutcome {
        modifies: buf.modifies,
    })
}

/// Rolls back the transaction at `start_ts` on `raw_key` unless its lock is still alive at
/// `current_ts` (`KeyIsLocked`; a zero `current_ts` rolls back regardless) or it committed
/// (then returns the commit ts and writes nothing).
pub fn cleanup(
    snap: &dyn EngineSnapshot,
    raw_key: &[u8],
    start_ts: TimeStamp,
    current_ts: TimeStamp,
) -> TxnResult<CleanupOutcome> {
    require(!start_ts.is_zero(), "cleanup with a zero start_ts")?;
    let key = Key::from_raw(raw_key);
    let lock = load_lock(snap, &key)?.filter(|l| l.ts == start_ts);
    if let Some(lock) = &lock {
        let alive = lock.ts.physical().saturating_add(lock.ttl_ms) >= current_ts.physical();
        if !current_ts.is_zero() && alive {
            return Err(TxnError::KeyIsLocked(Box::new(
                lock.to_lock_info(raw_key.to_vec()),
            )));
        }
    }
    let mut buf = WriteBuffer::default();
    match rollback_key(&mut buf, snap, &key, lock.as_ref(), start_ts) {
        Ok(()) => Ok(CleanupOutcome {
            modifies: buf.modifies,
            commit_ts: TimeStamp::zero(),
        }),
        Err(TxnError::Committed { commit_ts, .. }) => Ok(CleanupOutcome {
            modifies: Vec::new(),
            commit_ts,
        }),
        Err(e) => Err(e),
    }
}

/// Resolves the locks of finished transactions: `txn_status` maps start ts to commit ts (zero:
/// roll back). With `keys`, resolves those raw keys (leaving rollback records where nothing
/// is); without, resolves the matching locks in the region, at most `limit` (0: unbounded) per
/// call, and reports `has_more`.
pub fn resolve_lock(
    snap: &dyn EngineSnapshot,
    txn_status: &[(TimeStamp, TimeStamp)],
    keys: Option<&[Vec<u8>]>,
    region_start: &[u8],
    region_end: &[u8],
    limit: usize,
) -> TxnResult<ResolveLockOutcome> {
    let status: HashMap<TimeStamp, TimeStamp> = txn_status.iter().copied().collect();
    for (start_ts, commit_ts) in &status {
        require(!start_ts.is_zero(), "resolve lock with a zero start_ts")?;
        require(
            commit_ts.is_zero() || commit_ts > start_ts,
            "resolve lock with commit_ts not after start_ts",
        )?;
    }
    let mut buf = WriteBuffer::default();
    let Some(keys) = keys else {
        let (locks, has_more) = region_locks(snap, &status, region_start, region_end, limit)?;
        for (key, lock) in locks {
            let commit_ts = status[&lock.ts];
            resolve_one(&mut buf, snap, &key, lock, commit_ts)?;
        }
        return Ok(ResolveLockOutcome {
            modifies: buf.modifies,
            has_more,
        });
    };
    for raw in keys {
        let key = Key::from_raw(raw);
        let lock = load_lock(snap, &key)?.filter(|l| status.contains_key(&l.ts));
        match lock {
            Some(lock) => {
                let commit_ts = status[&lock.ts];
                resolve_one(&mut buf, snap, &key, lock, commit_ts)?;
            }
            // Only a single transaction can be meant when no lock tells which one.
            None if status.len() == 1 => {
                let (&start_ts, &commit_ts) = status.iter().next().expect("one entry");
                if commit_ts.is_zero() {
                    rollback_key(&mut buf, snap, &key, None, start_ts)?;
                } else {
                    commit_key(&mut buf, snap, &key, start_ts, commit_ts)?;
                }
            }
            None => {}
        }
    }
    Ok(ResolveLockOutcome {
        modifies: buf.modifies,
        has_more: false,
    })
}

/// Commits (or, with a zero `commit_ts`, rolls back) `lock` on `key`. A pessimistic lock of a
/// committed transaction was never prewritten, so it is only removed.
fn resolve_one(
    buf: &mut WriteBuffer,
    snap: &dyn EngineSnapshot,
    key: &Key,
    lock: Lock,
    commit_ts: TimeStamp,
) -> TxnResult<()> {
    if commit_ts.is_zero() {
        return rollback_key(buf, snap, key, Some(&lock), lock.ts);
    }
    if lock.is_pessimistic_lock() {
        buf.unlock(key);
        return Ok(());
    }
    commit_lock(buf, key, lock, commit_ts)
}

/// The locks in the region whose transactions are in `status`, at most `limit`, and whether
/// more remain.
fn region_locks(
    snap: &dyn EngineSnapshot,
    status: &HashMap<TimeStamp, TimeStamp>,
    region_start: &[u8],
    region_end: &[u8],
    limit: usize,
) -> TxnResult<(Vec<(Key, Lock)>, bool)> {
    let region = RegionRange {
        start_key: region_start,
        end_key: region_end,
    };
    let whole = ScanRange {
        lower: b"",
        upper: b"",
    };
    let mut locks = Vec::new();
    let Some((lower, upper)) = scan_bounds(region, whole) else {
        return Ok((locks, false));
    };
    let mut iter = snap.iter_cf(CF_LOCK, &lower, Some(&upper))?;
    let mut valid = iter.seek_to_first()?;
    while valid {
        let lock = Lock::parse(iter.value())?;
        if status.contains_key(&lock.ts) {
            if limit != 0 && locks.len() == limit {
                return Ok((locks, true));
            }
            locks.push((Key::from_encoded(origin_key(iter.key()).to_vec()), lock));
        }
        valid = iter.next()?;
    }
    Ok((locks, false))
}
