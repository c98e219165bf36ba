//! Conversions between kvrpcpb's transactional messages and the storage crate's domain types:
//! mutations in, lock infos and key errors out. Key errors are answered as data; only errors
//! that are not about a key (a bad request, an engine failure) become the request's error.

use proto::kvrpcpb;
use storage::txn::{TxnError, WriteConflictReason};
use txn_types::{Key, LockInfo, LockType, Mutation, TimeStamp};

use super::ReqError;

/// A request's mutations as domain mutations. `Rollback` and `PessimisticLock` are not
/// prewrite operations.
pub(crate) fn mutations_from_pb(
    mutations: &[kvrpcpb::Mutation],
) -> Result<Vec<Mutation>, ReqError> {
    mutations
        .iter()
        .map(|m| {
            let key = Key::from_raw(&m.key);
            Ok(match kvrpcpb::Op::try_from(m.op) {
                Ok(kvrpcpb::Op::Put) => Mutation::Put(key, m.value.clone()),
                Ok(kvrpcpb::Op::Del) => Mutation::Delete(key),
                Ok(kvrpcpb::Op::Lock) => Mutation::Lock(key),
                Ok(kvrpcpb::Op::Insert) => Mutation::Insert(key, m.value.clone()),
                Ok(kvrpcpb::Op::CheckNotExists) => Mutation::CheckNotExists(key),
                _ => return Err(invalid(format!("operation {} is not a prewrite", m.op))),
            })
        })
        .collect()
}

/// A malformed request: answered in the request's error, nothing written.
pub(crate) fn invalid(msg: String) -> ReqError {
    ReqError::Invalid(msg)
}

fn op_of(t: LockType) -> kvrpcpb::Op {
    match t {
        LockType::Put => kvrpcpb::Op::Put,
        LockType::Delete => kvrpcpb::Op::Del,
        LockType::Lock => kvrpcpb::Op::Lock,
        LockType::Pessimistic => kvrpcpb::Op::PessimisticLock,
    }
}

/// A lock as the client sees it.
pub(crate) fn lock_info_to_pb(l: LockInfo) -> kvrpcpb::LockInfo {
    kvrpcpb::LockInfo {
        primary_lock: l.primary_lock,
        lock_version: l.lock_version.into_inner(),
        key: l.key,
        lock_ttl: l.lock_ttl,
        txn_size: l.txn_size,
        lock_type: op_of(l.lock_type) as i32,
        lock_for_update_ts: l.lock_for_update_ts.into_inner(),
        use_async_commit: l.use_async_commit,
        min_commit_ts: l.min_commit_ts.into_inner(),
        secondaries: l.secondaries,
        duration_to_last_update_ms: 0,
    }
}

fn conflict_reason(r: WriteConflictReason) -> kvrpcpb::write_conflict::Reason {
    use kvrpcpb::write_conflict::Reason;
    match r {
        WriteConflictReason::Optimistic => Reason::Optimistic,
        WriteConflictReason::PessimisticRetry => Reason::PessimisticRetry,
        WriteConflictReason::SelfRolledBack => Reason::SelfRolledBack,
        WriteConflictReason::RcCheckTs => Reason::RcCheckTs,
        WriteConflictReason::LazyUniquenessCheck => Reason::LazyUniquenessCheck,
        _ => Reason::Unknown,
    }
}

/// A transactional error as the protocol spells it: errors about a key become a `KeyError`
/// (the client acts on its field), the rest fail the request.
pub(crate) fn key_error(e: TxnError) -> Result<kvrpcpb::KeyError, ReqError> {
    let mut k = kvrpcpb::KeyError::default();
    match e {
        TxnError::KeyIsLocked(info) => k.locked = Some(lock_info_to_pb(*info)),
        TxnError::WriteConflict {
            start_ts,
            conflict_start_ts,
            conflict_commit_ts,
            key,
            primary,
            reason,
        } => {
            k.conflict = Some(kvrpcpb::WriteConflict {
                start_ts: start_ts.into_inner(),
                conflict_ts: conflict_start_ts.into_inner(),
                key,
                primary,
                conflict_commit_ts: conflict_commit_ts.into_inner(),
                reason: conflict_reason(reason) as i32,
            })
        }
        TxnError::AlreadyExist { key } => k.already_exist = Some(kvrpcpb::AlreadyExist { key }),
        TxnError::TxnNotFound { start_ts, key } => {
            k.txn_not_found = Some(kvrpcpb::TxnNotFound {
                start_ts: start_ts.into_inner(),
                primary_key: key,
            })
        }
        TxnError::CommitTsExpired {
            start_ts,
            commit_ts,
            key,
            min_commit_ts,
        } => {
            k.commit_ts_expired = Some(kvrpcpb::CommitTsExpired {
                start_ts: start_ts.into_inner(),
                attempted_commit_ts: commit_ts.into_inner(),
                key,
                min_commit_ts: min_commit_ts.into_inner(),
            })
        }
        TxnError::CommitTsTooLarge { min_commit_ts, .. } => {
            k.commit_ts_too_large = Some(kvrpcpb::CommitTsTooLarge {
                commit_ts: min_commit_ts.into_inner(),
            })
        }
        // The transaction's own locks are gone: it was rolled back (by a reader resolving it,
        // or by its own timeout). The client gives up on it, as TiKV's answers make it.
        e @ (TxnError::TxnLockNotFound { .. }
        | TxnError::PessimisticLockNotFound { .. }
        | TxnError::PessimisticLockRolledBack { .. }) => k.retryable = e.to_string(),
        e @ TxnError::Committed { .. } => k.abort = e.to_string(),
        TxnError::Storage(e) => return Err(ReqError::Storage(e)),
        TxnError::Invalid(msg) => return Err(invalid(msg)),
    }
    Ok(k)
}

/// Like [`key_error`], for responses with a single optional `error`.
pub(crate) fn some_key_error(e: TxnError) -> Result<Option<kvrpcpb::KeyError>, ReqError> {
    key_error(e).map(Some)
}

/// A timestamp from the wire; zero is refused where the protocol needs a real one.
pub(crate) fn ts(v: u64, what: &str) -> Result<TimeStamp, ReqError> {
    if v == 0 {
        return Err(invalid(format!("{what} is zero")));
    }
    Ok(TimeStamp::new(v))
}
