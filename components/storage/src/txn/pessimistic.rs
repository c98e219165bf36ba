//! Pessimistic locks: taken before prewrite at a `for_update_ts`, they carry no value, never
//! block readers, and guarantee that no commit lands between `for_update_ts` and the prewrite.

use engine::{EngineSnapshot, Modify};
use txn_types::{Key, Lock, LockType, TimeStamp};

use super::{
    raw_of, require, KeyErrors, TxnError, TxnOutcome, TxnResult, WriteBuffer, WriteConflictReason,
};
use crate::mvcc::{get_txn_commit_record, load_lock, read_value, seek_write, CommitRecord};

/// A pessimistic lock request, as kvproto's `PessimisticLockRequest` (keys all `PessimisticLock`
/// mutations) without the region context and waiting, which the caller implements by retrying.
#[derive(Debug, Clone, Default)]
pub struct PessimisticLockRequest {
    /// Raw keys to lock.
    pub keys: Vec<Vec<u8>>,
    /// Raw key of the primary lock.
    pub primary: Vec<u8>,
    /// The transaction's start ts.
    pub start_ts: TimeStamp,
    /// No commit after this ts may exist on the keys.
    pub for_update_ts: TimeStamp,
    /// Lock time to live, in ms.
    pub lock_ttl_ms: u64,
    /// Return the keys' latest committed values.
    pub return_values: bool,
    /// Return whether the keys have a value.
    pub check_existence: bool,
    /// Lower bound of the commit ts, stored in the locks.
    pub min_commit_ts: TimeStamp,
}

/// The result of [`pessimistic_lock`].
#[derive(Debug, Clone, Default)]
pub struct PessimisticLockOutcome {
    /// What to write (empty when `key_errors` is not).
    pub modifies: Vec<Modify>,
    /// Latest committed values in request order (with `return_values`).
    pub values: Vec<Option<Vec<u8>>>,
    /// Whether each key has a value, in request order (with `check_existence`).
    pub exists: Vec<bool>,
    /// Per-key failures; when present, nothing is written.
    pub key_errors: Vec<TxnError>,
}

/// Takes pessimistic locks on `req.keys`. Another transaction's lock is `KeyIsLocked` (the
/// caller waits and retries), a commit after `for_update_ts` a `PessimisticRetry` conflict, the
/// transaction's own rollback `PessimisticLockRolledBack`; its own lock is a no-op (raised to
/// a larger for_update_ts).
pub fn pessimistic_lock(
    snap: &dyn EngineSnapshot,
    req: &PessimisticLockRequest,
) -> TxnResult<PessimisticLockOutcome> {
    require(
        !req.start_ts.is_zero(),
        "pessimistic lock with a zero start_ts",
    )?;
    require(
        !req.primary.is_empty(),
        "pessimistic lock with an empty primary",
    )?;
    require(
        req.for_update_ts >= req.start_ts,
        "for_update_ts below start_ts",
    )?;
    let mut buf = WriteBuffer::default();
    let mut errors = KeyErrors::default();
    let mut values = Vec::new();
    for raw in &req.keys {
        let key = Key::from_raw(raw);
        match lock_key(&mut buf, snap, req, &key) {
            Ok(()) if req.return_values || req.check_existence => {
                values.push(read_value(snap, &key, TimeStamp::max())?)
            }
            Ok(()) => {}
            Err(e) => {
                if errors.record(e)? {
                    break;
                }
            }
        }
    }
    if !errors.0.is_empty() {
        return Ok(PessimisticLockOutcome {
            key_errors: errors.0,
            ..PessimisticLockOutcome::default()
        });
    }
    let exists = if req.check_existence {
        values.iter().map(Option::is_some).collect()
    } else {
        Vec::new()
    };
    if !req.return_values {
        values.clear();
    }
    Ok(PessimisticLockOutcome {
        modifies: buf.modifies,
        values,
        exists,
        key_errors: Vec::new(),
    })
}

fn lock_key(
    buf: &mut WriteBuffer,
    snap: &dyn EngineSnapshot,
    req: &PessimisticLockRequest,
    key: &Key,
) -> TxnResult<()> {
    if let Some(mut lock) = load_lock(snap, key)? {
        if lock.ts != req.start_ts {
            return Err(TxnError::KeyIsLocked(Box::new(
                lock.to_lock_info(raw_of(key)?),
            )));
        }
        if lock.is_pessimistic_lock() && req.for_update_ts > lock.for_update_ts {
            lock.for_update_ts = req.for_update_ts;
            buf.put_lock(key, &lock);
        }
        // Already locked, or already prewritten by this transaction: nothing more to do.
        return Ok(());
    }
    if let Some((commit_ts, write)) = seek_write(snap, key, TimeStamp::max())? {
        if commit_ts >= req.start_ts {
            if let CommitRecord::RolledBack = get_txn_commit_record(snap, key, req.start_ts)? {
                return Err(TxnError::PessimisticLockRolledBack {
                    start_ts: req.start_ts,
                    key: raw_of(key)?,
                });
            }
        }
        if commit_ts > req.for_update_ts {
            return Err(TxnError::WriteConflict {
                start_ts: req.start_ts,
                conflict_start_ts: write.start_ts,
                conflict_commit_ts: commit_ts,
                key: raw_of(key)?,
                primary: req.primary.clone(),
                reason: WriteConflictReason::PessimisticRetry,
            });
        }
    }
    let mut lock = Lock::new(
        LockType::Pessimistic,
        req.primary.clone(),
        req.start_ts,
        req.lock_ttl_ms,
    );
    lock.for_update_ts = req.for_update_ts;
    lock.min_commit_ts = req.min_commit_ts;
    buf.put_lock(key, &lock);
    Ok(())
}

/// Removes the transaction's pessimistic locks with for_update_ts <= `for_update_ts` from
/// `keys` (raw); prewritten locks and other transactions' locks stay.
pub fn pessimistic_rollback(
    snap: &dyn EngineSnapshot,
    keys: &[Vec<u8>],
    start_ts: TimeStamp,
    for_update_ts: TimeStamp,
) -> TxnResult<TxnOutcome> {
    require(
        !start_ts.is_zero(),
        "pessimistic rollback with a zero start_ts",
    )?;
    let mut buf = WriteBuffer::default();
    for raw in keys {
        let key = Key::from_raw(raw);
        if let Some(lock) = load_lock(snap, &key)? {
            if lock.ts == start_ts
                && lock.is_pessimistic_lock()
                && lock.for_update_ts <= for_update_ts
            {
                buf.unlock(&key);
            }
        }
    }
    Ok(TxnOutcome {
        modifies: buf.modifies,
    })
}
