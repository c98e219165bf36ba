//! Questions about a transaction's fate: check_txn_status (on its primary), heartbeat, and
//! check_secondary_locks (async commit).
//!
//! Answers are shaped for `tikv-client` 0.4, which maps a CheckTxnStatus response by
//! `(commit_version, lock_ttl, lock_info)`: `(0, 0, None)` rolled back, `(ts, 0, None)`
//! committed, `(0, ttl, Some)` locked; anything else panics the client. So a live lock is always
//! answered with a non-zero ttl (a stored ttl of 0 is reported as 1).

use engine::{EngineSnapshot, Modify};
use txn_types::{Key, Lock, LockInfo, TimeStamp};

use super::commit::commit_lock;
use super::{raw_of, require, rollback_key, TxnError, TxnResult, WriteBuffer};
use crate::mvcc::{get_txn_commit_record, load_lock, CommitRecord};

/// What check_txn_status did (kvproto's `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckTxnStatusAction {
    /// Only looked.
    NoAction,
    /// The primary lock had expired and the transaction was rolled back.
    TtlExpireRollback,
    /// Neither lock nor record was there; a rollback record was written.
    LockNotExistRollback,
    /// The lock's min_commit_ts was pushed past the caller's start ts.
    MinCommitTsPushed,
    /// An expired pessimistic primary lock was removed (no rollback record).
    TtlExpirePessimisticRollback,
    /// Neither lock nor record was there and nothing was written (resolving a pessimistic lock).
    LockNotExistDoNothing,
}

/// The result of [`check_txn_status`]: `lock_ttl > 0` with `lock_info` when the lock lives,
/// `commit_version > 0` when committed, both zero when rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTxnStatusOutcome {
    /// What to write.
    pub modifies: Vec<Modify>,
    /// The live lock's ttl in ms (zero otherwise).
    pub lock_ttl: u64,
    /// The commit ts (zero unless committed).
    pub commit_version: TimeStamp,
    /// What was done.
    pub action: CheckTxnStatusAction,
    /// The live lock.
    pub lock_info: Option<LockInfo>,
}

impl CheckTxnStatusOutcome {
    fn finished(
        modifies: Vec<Modify>,
        commit_version: TimeStamp,
        action: CheckTxnStatusAction,
    ) -> Self {
        CheckTxnStatusOutcome {
            modifies,
            lock_ttl: 0,
            commit_version,
            action,
            lock_info: None,
        }
    }
}

/// Decides the fate of the transaction at `lock_ts` from its `primary` (raw key): alive, pushed,
/// committed or rolled back (rolling it back if its lock expired at `current_ts`, or if nothing
/// of it is there and `rollback_if_not_exist`). `caller_start_ts` is the blocked reader's ts.
#[allow(clippy::too_many_arguments)]
pub fn check_txn_status(
    snap: &dyn EngineSnapshot,
    primary: &[u8],
    lock_ts: TimeStamp,
    caller_start_ts: TimeStamp,
    current_ts: TimeStamp,
    rollback_if_not_exist: bool,
    force_sync_commit: bool,
    resolving_pessimistic_lock: bool,
) -> TxnResult<CheckTxnStatusOutcome> {
    require(!lock_ts.is_zero(), "check_txn_status with a zero lock_ts")?;
    require(
        !primary.is_empty(),
        "check_txn_status with an empty primary",
    )?;
    let key = Key::from_raw(primary);
    let mut buf = WriteBuffer::default();
    if let Some(lock) = load_lock(snap, &key)?.filter(|l| l.ts == lock_ts) {
        return lock_exists(
            snap,
            &key,
            lock,
            caller_start_ts,
            current_ts,
            force_sync_commit,
            resolving_pessimistic_lock,
        );
    }
    use CheckTxnStatusAction as A;
    match get_txn_commit_record(snap, &key, lock_ts)? {
        CommitRecord::Committed { commit_ts } => Ok(CheckTxnStatusOutcome::finished(
            Vec::new(),
            commit_ts,
            A::NoAction,
        )),
        CommitRecord::RolledBack => Ok(CheckTxnStatusOutcome::finished(
            Vec::new(),
            TimeStamp::zero(),
            A::NoAction,
        )),
        CommitRecord::None { .. } if !rollback_if_not_exist => Err(TxnError::TxnNotFound {
            start_ts: lock_ts,
            key: primary.to_vec(),
        }),
        CommitRecord::None { .. } if resolving_pessimistic_lock => {
            Ok(CheckTxnStatusOutcome::finished(
                Vec::new(),
                TimeStamp::zero(),
                A::LockNotExistDoNothing,
            ))
        }
        CommitRecord::None { .. } => {
            rollback_key(&mut buf, snap, &key, None, lock_ts)?;
            Ok(CheckTxnStatusOutcome::finished(
                buf.modifies,
                TimeStamp::zero(),
                A::LockNotExistRollback,
            ))
        }
    }
}

/// check_txn_status when the transaction's lock is on its primary.
fn lock_exists(
    snap: &dyn EngineSnapshot,
    key: &Key,
    mut lock: Lock,
    caller_start_ts: TimeStamp,
    current_ts: TimeStamp,
    force_sync_commit: bool,
    resolving_pessimistic_lock: bool,
) -> TxnResult<CheckTxnStatusOutcome> {
    use CheckTxnStatusAction as A;
    let mut buf = WriteBuffer::default();
    // An async-commit transaction is committed once all its keys are prewritten, at the
    // largest min_commit_ts among them; no ttl decides it.
    if lock.use_async_commit && !force_sync_commit && !lock.is_pessimistic_lock() {
        if lock.secondaries.is_empty() {
            // Its only key is this one, so it is committed: finish the commit here, at the ts
            // the prewrite promised. (tikv-client 0.4 would otherwise take the largest
            // min_commit_ts of no secondaries, zero, for "rolled back" and lose the write.)
            let commit_ts = lock.min_commit_ts;
            commit_lock(&mut buf, key, lock, commit_ts)?;
            return Ok(CheckTxnStatusOutcome::finished(
                buf.modifies,
                commit_ts,
                A::NoAction,
            ));
        }
        return alive(buf, key, lock, A::NoAction);
    }
    let expired = lock.ts.physical().saturating_add(lock.ttl_ms) < current_ts.physical();
    if expired {
        if resolving_pessimistic_lock && lock.is_pessimistic_lock() {
            buf.unlock(key);
            return Ok(CheckTxnStatusOutcome::finished(
                buf.modifies,
                TimeStamp::zero(),
                A::TtlExpirePessimisticRollback,
            ));
        }
        rollback_key(&mut buf, snap, key, Some(&lock), lock.ts)?;
        return Ok(CheckTxnStatusOutcome::finished(
            buf.modifies,
            TimeStamp::zero(),
            A::TtlExpireRollback,
        ));
    }
    // As TiKV: only a lock that has a min_commit_ts (large or async-commit transactions) can
    // be pushed; the reader then reads below it without waiting.
    if !lock.min_commit_ts.is_zero()
        && !caller_start_ts.is_max()
        && caller_start_ts >= lock.min_commit_ts
    {
        lock.min_commit_ts = caller_start_ts.next().max(current_ts);
        buf.put_lock(key, &lock);
    }
    let pushed = (!caller_start_ts.is_zero() && lock.min_commit_ts > caller_start_ts)
        || caller_start_ts.is_max();
    let action = if pushed {
        A::MinCommitTsPushed
    } else {
        A::NoAction
    };
    alive(buf, key, lock, action)
}

fn alive(
    buf: WriteBuffer,
    key: &Key,
    lock: Lock,
    action: CheckTxnStatusAction,
) -> TxnResult<CheckTxnStatusOutcome> {
    Ok(CheckTxnStatusOutcome {
        modifies: buf.modifies,
        lock_ttl: lock.ttl_ms.max(1),
        commit_version: TimeStamp::zero(),
        action,
        lock_info: Some(lock.to_lock_info(raw_of(key)?)),
    })
}

/// The result of [`txn_heart_beat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartBeatOutcome {
    /// What to write (the lock with its new ttl, if it grew).
    pub modifies: Vec<Modify>,
    /// The lock's ttl after the heartbeat, in ms.
    pub lock_ttl: u64,
}

/// Extends the ttl of the transaction's lock on its primary to `advise_lock_ttl_ms` if larger.
pub fn txn_heart_beat(
    snap: &dyn EngineSnapshot,
    primary: &[u8],
    start_ts: TimeStamp,
    advise_lock_ttl_ms: u64,
) -> TxnResult<HeartBeatOutcome> {
    require(!start_ts.is_zero(), "heartbeat with a zero start_ts")?;
    let key = Key::from_raw(primary);
    let Some(mut lock) = load_lock(snap, &key)?.filter(|l| l.ts == start_ts) else {
        return Err(TxnError::TxnNotFound {
            start_ts,
            key: primary.to_vec(),
        });
    };
    let mut buf = WriteBuffer::default();
    if advise_lock_ttl_ms > lock.ttl_ms {
        lock.ttl_ms = advise_lock_ttl_ms;
        buf.put_lock(&key, &lock);
    }
    Ok(HeartBeatOutcome {
        modifies: buf.modifies,
        lock_ttl: lock.ttl_ms,
    })
}

/// The result of [`check_secondary_locks`]: rolled back (no locks, zero commit ts), committed
/// (`commit_ts`), or still locked (`locks`, which the client reads as "commit at their largest
/// min_commit_ts" when all use async commit, else "fall back to 2PC").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSecondaryOutcome {
    /// What to write.
    pub modifies: Vec<Modify>,
    /// The locks found (empty when committed or rolled back).
    pub locks: Vec<LockInfo>,
    /// Non-zero when a key was found committed.
    pub commit_ts: TimeStamp,
}

/// Where one secondary stands.
enum Secondary {
    Locked(LockInfo),
    Committed(TimeStamp),
    RolledBack,
}

/// Checks the async-commit transaction at `start_ts` on its secondaries (raw keys). A key where
/// the transaction left nothing gets a rollback record, so its prewrite can never land: then
/// the transaction is rolled back, answered as no locks and no commit ts.
///
/// (tikv-client 0.4's `cleanup_locks` merges the answers of several regions by their locks and
/// commit ts only, so "rolled back" here beside live locks elsewhere makes it commit the other
/// keys. Answering a non-async lock instead, which sends resolvers to the 2PC path, does not
/// work with that client: it has cached the primary's expired "locked" status and fails the
/// clean-up forever. Open; see `docs/reliability.md`.)
pub fn check_secondary_locks(
    snap: &dyn EngineSnapshot,
    keys: &[Vec<u8>],
    start_ts: TimeStamp,
) -> TxnResult<CheckSecondaryOutcome> {
    require(
        !start_ts.is_zero(),
        "check_secondary_locks with a zero start_ts",
    )?;
    let mut buf = WriteBuffer::default();
    let mut locks = Vec::new();
    let mut commit_ts = TimeStamp::zero();
    for raw in keys {
        let key = Key::from_raw(raw);
        match check_secondary(&mut buf, snap, &key, start_ts)? {
            Secondary::Locked(info) => locks.push(info),
            Secondary::Committed(ts) => commit_ts = ts,
            Secondary::RolledBack => {
                return Ok(CheckSecondaryOutcome {
                    modifies: buf.modifies,
                    locks: Vec::new(),
                    commit_ts: TimeStamp::zero(),
                })
            }
        }
    }
    if !commit_ts.is_zero() {
        locks.clear();
    }
    Ok(CheckSecondaryOutcome {
        modifies: buf.modifies,
        locks,
        commit_ts,
    })
}

fn check_secondary(
    buf: &mut WriteBuffer,
    snap: &dyn EngineSnapshot,
    key: &Key,
    start_ts: TimeStamp,
) -> TxnResult<Secondary> {
    if let Some(lock) = load_lock(snap, key)?.filter(|l| l.ts == start_ts) {
        if !lock.is_pessimistic_lock() {
            return Ok(Secondary::Locked(lock.to_lock_info(raw_of(key)?)));
        }
        // A pessimistic lock means the key was never prewritten: the transaction cannot have
        // committed with async commit, and rolling the key back settles it.
        rollback_key(buf, snap, key, Some(&lock), start_ts)?;
        return Ok(Secondary::RolledBack);
    }
    match get_txn_commit_record(snap, key, start_ts)? {
        CommitRecord::Committed { commit_ts } => Ok(Secondary::Committed(commit_ts)),
        CommitRecord::RolledBack => Ok(Secondary::RolledBack),
        CommitRecord::None { .. } => {
            rollback_key(buf, snap, key, None, start_ts)?;
            Ok(Secondary::RolledBack)
        }
    }
}
