//! Prewrite: the first phase of Percolator, optimistic or pessimistic, 2PC, async commit or
//! one-phase commit (1PC).
//!
//! Every key is checked against the snapshot: another transaction's lock fails it with
//! `KeyIsLocked`; a record committed after the transaction's start ts (after its
//! for_update_ts for keys of a pessimistic transaction that hold no pessimistic lock) fails it
//! with `WriteConflict`; the transaction's own rollback record fails it with a `SelfRolledBack`
//! conflict; its own lock makes the key a no-op (a retried request). Keys that pass get a lock
//! (values over [`SHORT_VALUE_MAX_LEN`] go to the `default` CF at `key + start_ts`) or, with 1PC,
//! a commit record directly.
//!
//! Async commit and 1PC decide the commit ts at prewrite, so it must be above every ts that
//! already read the keys: `max(min_commit_ts, start_ts + 1, for_update_ts + 1, max_ts + 1)`,
//! where `max_ts` is the store's largest read ts, read by the caller atomically with installing
//! the locks in memory (see `ConcurrencyManager::lock_with`).

use engine::EngineSnapshot;
use txn_types::{Key, Lock, LockType, Mutation, TimeStamp, Write, WriteType, SHORT_VALUE_MAX_LEN};

use super::{raw_of, require, KeyErrors, TxnError, TxnResult, WriteBuffer, WriteConflictReason};
use crate::mvcc::{get_txn_commit_record, latest_data_write, load_lock, seek_write, CommitRecord};

/// What a pessimistic transaction's prewrite does for one key (kvproto's `PessimisticAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PessimisticAction {
    /// The key was never pessimistically locked: check conflicts against for_update_ts.
    SkipPessimisticCheck,
    /// The key must hold this transaction's pessimistic lock.
    DoPessimisticCheck,
    /// Like `SkipPessimisticCheck`, and check the key does not exist (deferred uniqueness).
    DoConstraintCheck,
}

/// A prewrite request, as kvproto's `PrewriteRequest` without the region context.
#[derive(Debug, Clone, Default)]
pub struct PrewriteRequest {
    /// The keys and what to write there.
    pub mutations: Vec<Mutation>,
    /// Raw key of the primary lock.
    pub primary: Vec<u8>,
    /// The transaction's start ts.
    pub start_ts: TimeStamp,
    /// Lock time to live, in ms.
    pub lock_ttl_ms: u64,
    /// Skip the "must not exist" checks of inserts (the client already checked).
    pub skip_constraint_check: bool,
    /// One per mutation for a pessimistic transaction; empty for an optimistic one.
    pub pessimistic_actions: Vec<PessimisticAction>,
    /// The pessimistic transaction's for_update_ts (zero when optimistic).
    pub for_update_ts: TimeStamp,
    /// Number of keys the transaction writes.
    pub txn_size: u64,
    /// Lower bound of the commit ts.
    pub min_commit_ts: TimeStamp,
    /// Commit asynchronously: the commit ts is decided here.
    pub use_async_commit: bool,
    /// Raw keys of the secondaries (stored on the primary of an async-commit transaction).
    pub secondaries: Vec<Vec<u8>>,
    /// Commit in this one step if every key passes.
    pub try_one_pc: bool,
    /// Upper bound of an async-commit/1PC commit ts (zero: none).
    pub max_commit_ts: TimeStamp,
}

/// The result of a prewrite.
#[derive(Debug, Clone, Default)]
pub struct PrewriteOutcome {
    /// What to write (empty when `key_errors` is not).
    pub modifies: Vec<engine::Modify>,
    /// Per-key failures; when present, nothing is written.
    pub key_errors: Vec<TxnError>,
    /// The commit ts decided for async commit or 1PC; zero otherwise.
    pub min_commit_ts: TimeStamp,
    /// Non-zero iff the transaction committed here (1PC) at this ts.
    pub one_pc_commit_ts: TimeStamp,
    /// The locks written, for the in-memory lock table; for 1PC the locks the commit records
    /// stand for, held in memory until they are applied.
    pub locks: Vec<(Key, Lock)>,
}

/// What prewrite does on one key that passed its checks.
enum KeyPrewrite {
    /// Write this lock (or, with 1PC, its commit record); `value` goes to the `default` CF.
    Write {
        lock: Lock,
        value: Option<Vec<u8>>,
        replaces_pessimistic: bool,
    },
    /// Nothing to write (`CheckNotExists`).
    Nothing,
    /// A retry: this lock of the transaction is already there.
    AlreadyPrewritten(Lock),
    /// A retry after commit: the transaction committed the key at this ts.
    Committed(TimeStamp),
}

fn validate(req: &PrewriteRequest) -> TxnResult<()> {
    require(!req.start_ts.is_zero(), "prewrite with a zero start_ts")?;
    require(!req.primary.is_empty(), "prewrite with an empty primary")?;
    require(
        req.pessimistic_actions.is_empty() || req.pessimistic_actions.len() == req.mutations.len(),
        "pessimistic_actions must be empty or one per mutation",
    )
}

/// The commit ts that async commit and 1PC promise.
fn decided_commit_ts(req: &PrewriteRequest, max_ts: TimeStamp) -> TxnResult<TimeStamp> {
    let ts = req
        .min_commit_ts
        .max(req.start_ts.next())
        .max(req.for_update_ts.next())
        .max(max_ts.next());
    if !req.max_commit_ts.is_zero() && ts > req.max_commit_ts {
        return Err(TxnError::CommitTsTooLarge {
            start_ts: req.start_ts,
            min_commit_ts: ts,
            max_commit_ts: req.max_commit_ts,
        });
    }
    Ok(ts)
}

/// Prewrites `req` against `snap`; `max_ts` is the store's largest read ts (used by async
/// commit and 1PC only).
pub fn prewrite(
    snap: &dyn EngineSnapshot,
    req: &PrewriteRequest,
    max_ts: TimeStamp,
) -> TxnResult<PrewriteOutcome> {
    validate(req)?;
    let decided = if req.use_async_commit || req.try_one_pc {
        decided_commit_ts(req, max_ts)?
    } else {
        TimeStamp::zero()
    };
    let mut errors = KeyErrors::default();
    let mut passed = Vec::with_capacity(req.mutations.len());
    for (i, mutation) in req.mutations.iter().enumerate() {
        let action = req.pessimistic_actions.get(i).copied();
        match prewrite_key(snap, req, mutation, action, decided) {
            Ok(done) => passed.push((mutation.key().clone(), done)),
            Err(e) => {
                if errors.record(e)? {
                    break;
                }
            }
        }
    }
    if !errors.0.is_empty() {
        return Ok(PrewriteOutcome {
            key_errors: errors.0,
            ..PrewriteOutcome::default()
        });
    }
    Ok(finish(req, decided, passed))
}

/// Whether `req` carries every key of its transaction: the primary and each secondary it names.
/// 1PC commits only what the request holds, so one region's share of a transaction that spans
/// regions takes locks (or the transaction would commit piecemeal, at several timestamps).
fn holds_whole_transaction(req: &PrewriteRequest) -> bool {
    let held: std::collections::HashSet<&Key> = req.mutations.iter().map(|m| m.key()).collect();
    std::iter::once(&req.primary)
        .chain(&req.secondaries)
        .all(|raw| held.contains(&Key::from_raw(raw)))
}

/// Turns the passed keys into modifies: locks (2PC, async commit) or commit records (1PC).
fn finish(
    req: &PrewriteRequest,
    decided: TimeStamp,
    passed: Vec<(Key, KeyPrewrite)>,
) -> PrewriteOutcome {
    let retried = passed
        .iter()
        .any(|(_, p)| matches!(p, KeyPrewrite::AlreadyPrewritten(_)));
    let committed_at = passed.iter().find_map(|(_, p)| match p {
        KeyPrewrite::Committed(ts) => Some(*ts),
        _ => None,
    });
    // 1PC only for the whole transaction and when nothing of an earlier 2PC attempt is around;
    // otherwise fall back to locks.
    let try_one_pc = req.try_one_pc && holds_whole_transaction(req);
    let one_pc = try_one_pc && !retried && committed_at.is_none();
    let mut out = PrewriteOutcome::default();
    let mut buf = WriteBuffer::default();
    // The answer is the largest min_commit_ts among the transaction's locks here: the ts just
    // decided for locks written now, the stored one for locks a retried request finds. A
    // resolver commits at the stored values, so a retry must not report a newer decision.
    let mut min_commit_ts = TimeStamp::zero();
    for (key, done) in passed {
        match done {
            KeyPrewrite::Write {
                lock,
                value,
                replaces_pessimistic,
            } => {
                if let Some(value) = value {
                    buf.put_value(&key, req.start_ts, value);
                }
                if one_pc {
                    let write_type = WriteType::from_lock_type(lock.lock_type)
                        .expect("prewrite never writes pessimistic locks");
                    let write = Write::new(write_type, req.start_ts, lock.short_value.clone());
                    buf.put_write(&key, decided, &write);
                    if replaces_pessimistic {
                        buf.unlock(&key);
                    }
                    // No lock is written, but until the commit records are applied a reader
                    // above `decided` must not read past them: the memory table holds the lock.
                    out.locks.push((key, lock));
                } else {
                    min_commit_ts = min_commit_ts.max(lock.min_commit_ts);
                    buf.put_lock(&key, &lock);
                    out.locks.push((key, lock));
                }
            }
            KeyPrewrite::AlreadyPrewritten(lock) if lock.use_async_commit => {
                min_commit_ts = min_commit_ts.max(lock.min_commit_ts);
            }
            KeyPrewrite::AlreadyPrewritten(_)
            | KeyPrewrite::Nothing
            | KeyPrewrite::Committed(_) => {}
        }
    }
    out.modifies = buf.modifies;
    if one_pc {
        out.one_pc_commit_ts = decided;
    } else if try_one_pc && !retried && out.modifies.is_empty() {
        // Every key was already committed by this transaction: report that commit.
        out.one_pc_commit_ts = committed_at.unwrap_or_default();
    }
    if one_pc {
        out.min_commit_ts = decided;
    } else if req.use_async_commit {
        out.min_commit_ts = if min_commit_ts.is_zero() {
            decided
        } else {
            min_commit_ts
        };
    }
    out
}

fn prewrite_key(
    snap: &dyn EngineSnapshot,
    req: &PrewriteRequest,
    mutation: &Mutation,
    action: Option<PessimisticAction>,
    decided: TimeStamp,
) -> TxnResult<KeyPrewrite> {
    let key = mutation.key();
    let start_ts = req.start_ts;
    let must_be_locked = action == Some(PessimisticAction::DoPessimisticCheck);
    let check_exists = mutation.should_not_exist()
        && (!req.skip_constraint_check || action == Some(PessimisticAction::DoConstraintCheck));
    if let Some(lock) = load_lock(snap, key)? {
        if lock.ts != start_ts {
            if must_be_locked {
                return Err(pessimistic_lock_not_found(key, start_ts)?);
            }
            return Err(TxnError::KeyIsLocked(Box::new(
                lock.to_lock_info(raw_of(key)?),
            )));
        }
        if !lock.is_pessimistic_lock() {
            return Ok(KeyPrewrite::AlreadyPrewritten(lock));
        }
        // Our pessimistic lock already excluded commits up to its for_update_ts.
        if check_exists {
            check_not_exists(snap, key)?;
        }
        return Ok(build_lock(req, mutation, decided, true));
    }
    if must_be_locked {
        if let CommitRecord::Committed { commit_ts } = get_txn_commit_record(snap, key, start_ts)? {
            return Ok(KeyPrewrite::Committed(commit_ts));
        }
        return Err(pessimistic_lock_not_found(key, start_ts)?);
    }
    if let Some(done) = check_newer_writes(snap, req, key, action)? {
        return Ok(done);
    }
    if check_exists {
        check_not_exists(snap, key)?;
    }
    Ok(build_lock(req, mutation, decided, false))
}

fn pessimistic_lock_not_found(key: &Key, start_ts: TimeStamp) -> TxnResult<TxnError> {
    Ok(TxnError::PessimisticLockNotFound {
        start_ts,
        key: raw_of(key)?,
    })
}

/// Fails on a record newer than the transaction may see; `Some` when the transaction itself
/// already committed the key (a retry).
fn check_newer_writes(
    snap: &dyn EngineSnapshot,
    req: &PrewriteRequest,
    key: &Key,
    action: Option<PessimisticAction>,
) -> TxnResult<Option<KeyPrewrite>> {
    let start_ts = req.start_ts;
    let Some((commit_ts, write)) = seek_write(snap, key, TimeStamp::max())? else {
        return Ok(None);
    };
    let conflict = |conflict_start_ts, conflict_commit_ts, reason| -> TxnResult<TxnError> {
        Ok(TxnError::WriteConflict {
            start_ts,
            conflict_start_ts,
            conflict_commit_ts,
            key: raw_of(key)?,
            primary: req.primary.clone(),
            reason,
        })
    };
    if commit_ts >= start_ts {
        match get_txn_commit_record(snap, key, start_ts)? {
            CommitRecord::Committed { commit_ts } => {
                return Ok(Some(KeyPrewrite::Committed(commit_ts)))
            }
            CommitRecord::RolledBack => {
                return Err(conflict(
                    start_ts,
                    start_ts,
                    WriteConflictReason::SelfRolledBack,
                )?)
            }
            CommitRecord::None { .. } => {}
        }
    }
    let bound = if action.is_some() {
        req.for_update_ts.max(start_ts)
    } else {
        start_ts
    };
    if commit_ts > bound {
        let reason = if action == Some(PessimisticAction::DoConstraintCheck) {
            WriteConflictReason::LazyUniquenessCheck
        } else {
            WriteConflictReason::Optimistic
        };
        return Err(conflict(write.start_ts, commit_ts, reason)?);
    }
    Ok(None)
}

/// `AlreadyExist` if the newest committed version of `key` (at any ts) is a value.
fn check_not_exists(snap: &dyn EngineSnapshot, key: &Key) -> TxnResult<()> {
    match latest_data_write(snap, key, TimeStamp::max())? {
        Some((_, write)) if write.write_type == WriteType::Put => {
            Err(TxnError::AlreadyExist { key: raw_of(key)? })
        }
        _ => Ok(()),
    }
}

fn build_lock(
    req: &PrewriteRequest,
    mutation: &Mutation,
    decided: TimeStamp,
    replaces_pessimistic: bool,
) -> KeyPrewrite {
    let lock_type = match mutation {
        Mutation::Put(..) | Mutation::Insert(..) => LockType::Put,
        Mutation::Delete(_) => LockType::Delete,
        Mutation::Lock(_) => LockType::Lock,
        Mutation::CheckNotExists(_) => return KeyPrewrite::Nothing,
    };
    let mut lock = Lock::new(
        lock_type,
        req.primary.clone(),
        req.start_ts,
        req.lock_ttl_ms,
    );
    let mut value = None;
    match mutation.value() {
        Some(v) if v.len() <= SHORT_VALUE_MAX_LEN => lock.short_value = Some(v.to_vec()),
        Some(v) => value = Some(v.to_vec()),
        None => {}
    }
    lock.for_update_ts = req.for_update_ts;
    lock.txn_size = req.txn_size;
    lock.min_commit_ts = if decided.is_zero() {
        req.min_commit_ts
    } else {
        decided
    };
    lock.use_async_commit = req.use_async_commit;
    if req.use_async_commit && mutation.key() == &Key::from_raw(&req.primary) {
        lock.secondaries = req.secondaries.clone();
    }
    KeyPrewrite::Write {
        lock,
        value,
        replaces_pessimistic,
    }
}
