//! Percolator write actions: each takes a snapshot and a request and returns the [`Modify`]s
//! to propose through raft, plus the results to answer with.
//!
//! Key types: [`TxnError`] (typed failures; keys in them are raw client keys), the request and
//! outcome types of each action, and the private write buffer every action fills.
//!
//! Flow: the server takes the latches of the request's keys, takes a snapshot, calls one action
//! here, proposes the returned modifies (keys without `z`: encoded key in the `lock` CF, encoded
//! key + `!ts` in the `write` and `default` CFs), and answers once they are applied. Actions read
//! only the snapshot, never their own buffered writes, so a request naming a key twice acts on
//! it twice with the same result. An action that returns `Err` wrote nothing; per-key failures
//! a client acts on (locked, conflict, exists) come back in the outcome's `key_errors` with no
//! modifies. "Now" is a TSO `current_ts` argument; nothing here reads a clock.
//!
//! Decisions, where TiKV has more machinery than we need:
//! - Rollback records are always kept until GC ("protected"); no collapsing of rollbacks.
//! - A rollback whose slot (`key + start_ts`) holds another transaction's commit record marks
//!   that record `has_overlapped_rollback` instead of overwriting it.
//! - A lock of another transaction found on a primary that is being rolled back is left alone
//!   (TiKV records the rollback inside it); commit ts come from the TSO, so they never equal
//!   another transaction's start ts except through async commit, which keeps its own records.

mod check;
mod commit;
mod errors;
mod gc;
mod pessimistic;
mod prewrite;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_model;
#[cfg(test)]
mod tests_more;

pub use check::{
    check_secondary_locks, check_txn_status, txn_heart_beat, CheckSecondaryOutcome,
    CheckTxnStatusAction, CheckTxnStatusOutcome, HeartBeatOutcome,
};
pub use commit::{
    batch_rollback, cleanup, commit, resolve_lock, CleanupOutcome, ResolveLockOutcome, TxnOutcome,
};
pub use errors::{TxnError, TxnResult, WriteConflictReason};
pub use gc::{delete_range_modifies, gc, GcOutcome};
pub use pessimistic::{
    pessimistic_lock, pessimistic_rollback, PessimisticLockOutcome, PessimisticLockRequest,
};
pub use prewrite::{prewrite, PessimisticAction, PrewriteOutcome, PrewriteRequest};

use engine::{Modify, CF_DEFAULT, CF_LOCK, CF_WRITE};
use txn_types::{Key, Lock, LockType, TimeStamp, Write};

use crate::mvcc::{get_txn_commit_record, CommitRecord};
use engine::EngineSnapshot;

/// The modifies an action accumulates, in the order they must apply.
#[derive(Debug, Default)]
pub(crate) struct WriteBuffer {
    pub(crate) modifies: Vec<Modify>,
}

impl WriteBuffer {
    pub(crate) fn put_lock(&mut self, key: &Key, lock: &Lock) {
        self.modifies.push(Modify::Put {
            cf: CF_LOCK,
            key: key.as_encoded().to_vec(),
            value: lock.to_bytes(),
        });
    }

    pub(crate) fn unlock(&mut self, key: &Key) {
        self.modifies.push(Modify::Delete {
            cf: CF_LOCK,
            key: key.as_encoded().to_vec(),
        });
    }

    pub(crate) fn put_value(&mut self, key: &Key, start_ts: TimeStamp, value: Vec<u8>) {
        self.modifies.push(Modify::Put {
            cf: CF_DEFAULT,
            key: key.append_ts(start_ts),
            value,
        });
    }

    pub(crate) fn delete_value(&mut self, key: &Key, start_ts: TimeStamp) {
        self.modifies.push(Modify::Delete {
            cf: CF_DEFAULT,
            key: key.append_ts(start_ts),
        });
    }

    pub(crate) fn put_write(&mut self, key: &Key, commit_ts: TimeStamp, write: &Write) {
        self.modifies.push(Modify::Put {
            cf: CF_WRITE,
            key: key.append_ts(commit_ts),
            value: write.to_bytes(),
        });
    }

    pub(crate) fn delete_write(&mut self, key: &Key, commit_ts: TimeStamp) {
        self.modifies.push(Modify::Delete {
            cf: CF_WRITE,
            key: key.append_ts(commit_ts),
        });
    }

    /// Removes `lock` from `key`, with its value in the `default` CF if it has one there.
    pub(crate) fn remove_lock(&mut self, key: &Key, lock: &Lock) {
        if lock.lock_type == LockType::Put && lock.short_value.is_none() {
            self.delete_value(key, lock.ts);
        }
        self.unlock(key);
    }
}

/// `Invalid` unless `ok`.
pub(crate) fn require(ok: bool, what: &str) -> TxnResult<()> {
    if ok {
        Ok(())
    } else {
        Err(TxnError::Invalid(what.to_owned()))
    }
}

/// Raw form of a key for an error message.
pub(crate) fn raw_of(key: &Key) -> TxnResult<Vec<u8>> {
    Ok(key.to_raw()?)
}

/// Rolls back the transaction at `start_ts` on `key`: removes `lock` (the transaction's lock
/// there, if any) and leaves a rollback record at `key + start_ts` so that a late prewrite
/// fails. Fails with `Committed` if the transaction committed the key.
pub(crate) fn rollback_key(
    buf: &mut WriteBuffer,
    snap: &dyn EngineSnapshot,
    key: &Key,
    lock: Option<&Lock>,
    start_ts: TimeStamp,
) -> TxnResult<()> {
    match get_txn_commit_record(snap, key, start_ts)? {
        CommitRecord::Committed { commit_ts } => Err(TxnError::Committed {
            start_ts,
            commit_ts,
            key: raw_of(key)?,
        }),
        CommitRecord::RolledBack => {
            if let Some(lock) = lock {
                buf.remove_lock(key, lock);
            }
            Ok(())
        }
        CommitRecord::None { overlapped } => {
            if let Some(lock) = lock {
                buf.remove_lock(key, lock);
            }
            let record = match overlapped {
                Some(mut write) => {
                    write.has_overlapped_rollback = true;
                    write
                }
                None => Write::new_rollback(start_ts),
            };
            buf.put_write(key, start_ts, &record);
            Ok(())
        }
    }
}

/// Per-key failures of a multi-key request: lock errors accumulate (the client resolves them
/// together); any other per-key failure ends the request and is its only error, as in TiKV.
/// Storage and request errors pass through as `Err`.
#[derive(Debug, Default)]
pub(crate) struct KeyErrors(pub(crate) Vec<TxnError>);

impl KeyErrors {
    /// Records `e`; `Ok(true)` if the request must stop here.
    pub(crate) fn record(&mut self, e: TxnError) -> TxnResult<bool> {
        match e {
            TxnError::Storage(_) | TxnError::Invalid(_) | TxnError::CommitTsTooLarge { .. } => {
                Err(e)
            }
            TxnError::KeyIsLocked(_) => {
                self.0.push(e);
                Ok(false)
            }
            other => {
                self.0 = vec![other];
                Ok(true)
            }
        }
    }
}
