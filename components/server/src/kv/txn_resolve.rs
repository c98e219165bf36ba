//! Lock resolution and clean-up: CheckTxnStatus, CheckSecondaryLocks, ResolveLock, GC and
//! DeleteRange.

use proto::kvrpcpb;
use storage::txn::{self, CheckTxnStatusAction, TxnError};
use storage::{mvcc, ResponseBudget};
use txn_types::TimeStamp;

use super::txn_pb::{invalid, lock_info_to_pb, some_key_error, ts};
use super::{header, KvInner, ReqError};

type Res<T> = Result<T, ReqError>;

/// Locks resolved per raft proposal; a region with more takes several rounds.
const RESOLVE_KEYS_PER_ROUND: usize = 256;
/// Keys garbage-collected per raft proposal.
pub(crate) const GC_KEYS_PER_ROUND: usize = 512;

fn action_to_pb(a: CheckTxnStatusAction) -> kvrpcpb::Action {
    match a {
        CheckTxnStatusAction::NoAction => kvrpcpb::Action::NoAction,
        CheckTxnStatusAction::TtlExpireRollback => kvrpcpb::Action::TtlExpireRollback,
        CheckTxnStatusAction::LockNotExistRollback => kvrpcpb::Action::LockNotExistRollback,
        CheckTxnStatusAction::MinCommitTsPushed => kvrpcpb::Action::MinCommitTsPushed,
        CheckTxnStatusAction::TtlExpirePessimisticRollback => {
            kvrpcpb::Action::TtlExpirePessimisticRollback
        }
        CheckTxnStatusAction::LockNotExistDoNothing => kvrpcpb::Action::LockNotExistDoNothing,
    }
}

impl KvInner {
    pub(super) async fn kv_check_txn_status(
        &self,
        req: kvrpcpb::CheckTxnStatusRequest,
    ) -> Res<kvrpcpb::CheckTxnStatusResponse> {
        let lock_ts = ts(req.lock_ts, "lock_ts")?;
        let caller_start_ts = TimeStamp::new(req.caller_start_ts);
        // Pushing a lock's min_commit_ts past the caller is a read at caller_start_ts.
        self.cm.update_max_ts(caller_start_ts);
        let current_ts = TimeStamp::new(req.current_ts);
        let age_ms = current_ts.physical().saturating_sub(lock_ts.physical());
        let rollback_if_not_exist = req.rollback_if_not_exist
            || (!current_ts.is_max() && age_ms >= self.limits.orphan_txn_rollback_after_ms);
        let r = self
            .txn_write(req.context.as_ref(), &[&req.primary_key], |snap| {
                txn::check_txn_status(
                    snap,
                    &req.primary_key,
                    lock_ts,
                    caller_start_ts,
                    current_ts,
                    rollback_if_not_exist,
                    req.force_sync_commit,
                    req.resolving_pessimistic_lock,
                )
                .map(|o| (o.modifies.clone(), o))
            })
            .await?;
        let mut resp = kvrpcpb::CheckTxnStatusResponse::default();
        match r {
            Ok(o) => {
                resp.lock_ttl = o.lock_ttl;
                resp.commit_version = o.commit_version.into_inner();
                resp.action = action_to_pb(o.action) as i32;
                resp.lock_info = o.lock_info.map(lock_info_to_pb);
            }
            // The primary's prewrite has not landed (yet): the transaction may still be
            // running. TiKV answers `txn_not_found`, which client 0.4 cannot act on (it comes
            // back wrapped, past the client's handler, and fails the read). Answered instead as
            // a live lock of the transaction, so the reader backs off and retries; once the
            // transaction is `orphan_txn_rollback_after_ms` old it is rolled back above.
            Err(TxnError::TxnNotFound { start_ts, key }) => {
                resp.lock_ttl = self.limits.orphan_txn_rollback_after_ms.max(1);
                resp.lock_info = Some(kvrpcpb::LockInfo {
                    primary_lock: key.clone(),
                    lock_version: start_ts.into_inner(),
                    key,
                    lock_ttl: resp.lock_ttl,
                    lock_type: kvrpcpb::Op::Put as i32,
                    ..Default::default()
                });
            }
            Err(e) => resp.error = some_key_error(e)?,
        }
        Ok(resp)
    }

    pub(super) async fn kv_check_secondary_locks(
        &self,
        req: kvrpcpb::CheckSecondaryLocksRequest,
    ) -> Res<kvrpcpb::CheckSecondaryLocksResponse> {
        let start_ts = ts(req.start_version, "start_version")?;
        let r = self
            .txn_write(req.context.as_ref(), &req.keys, |snap| {
                txn::check_secondary_locks(snap, &req.keys, start_ts)
                    .map(|o| (o.modifies.clone(), o))
            })
            .await?;
        let mut resp = kvrpcpb::CheckSecondaryLocksResponse::default();
        match r {
            Ok(o) => {
                resp.locks = o.locks.into_iter().map(lock_info_to_pb).collect();
                resp.commit_ts = o.commit_ts.into_inner();
            }
            Err(e) => resp.error = some_key_error(e)?,
        }
        Ok(resp)
    }

    /// Commits or rolls back the locks of the given transactions: the keys named, or every
    /// lock of those transactions in the region. Region-wide resolution first finds the keys
    /// on a read view, then resolves them under their latches, a bounded batch at a time.
    pub(super) async fn kv_resolve_lock(
        &self,
        req: kvrpcpb::ResolveLockRequest,
    ) -> Res<kvrpcpb::ResolveLockResponse> {
        let mut txns: Vec<(TimeStamp, TimeStamp)> = req
            .txn_infos
            .iter()
            .map(|t| (TimeStamp::new(t.txn), TimeStamp::new(t.status)))
            .collect();
        if req.start_version != 0 {
            txns.push((
                TimeStamp::new(req.start_version),
                TimeStamp::new(req.commit_version),
            ));
        }
        if txns.is_empty() || txns.iter().any(|(s, _)| s.is_zero()) {
            return Err(invalid("resolve lock without a transaction".into()));
        }
        let mut resp = kvrpcpb::ResolveLockResponse::default();
        if !req.keys.is_empty() {
            if let Err(e) = self.resolve_keys(&req, &txns, &req.keys).await? {
                resp.error = some_key_error(e)?;
            }
            return Ok(resp);
        }
        let max_version = txns.iter().map(|(s, _)| *s).max().unwrap_or_default();
        let mut from: Vec<u8> = vec![];
        loop {
            let view = self.read_view(header(req.context.as_ref())).await?;
            let locks = match mvcc::scan_locks(
                view.snapshot.as_ref(),
                &view.region.start_key,
                &view.region.end_key,
                &from,
                &[],
                max_version,
                RESOLVE_KEYS_PER_ROUND,
                &mut ResponseBudget::unlimited(),
            ) {
                Ok(locks) => locks,
                Err(e) => {
                    resp.error = some_key_error(e)?;
                    return Ok(resp);
                }
            };
            let Some(last) = locks.last() else {
                return Ok(resp);
            };
            from = last.key.clone();
            from.push(0);
            let full = locks.len() == RESOLVE_KEYS_PER_ROUND;
            let keys: Vec<Vec<u8>> = locks
                .into_iter()
                .filter(|l| txns.iter().any(|(s, _)| *s == l.lock_version))
                .map(|l| l.key)
                .collect();
            if !keys.is_empty() {
                if let Err(e) = self.resolve_keys(&req, &txns, &keys).await? {
                    resp.error = some_key_error(e)?;
                    return Ok(resp);
                }
            }
            if !full {
                return Ok(resp);
            }
        }
    }

    /// Resolves the locks of `txns` on `keys` under the keys' latches.
    async fn resolve_keys(
        &self,
        req: &kvrpcpb::ResolveLockRequest,
        txns: &[(TimeStamp, TimeStamp)],
        keys: &[Vec<u8>],
    ) -> Res<Result<(), TxnError>> {
        self.txn_write(req.context.as_ref(), keys, |snap| {
            txn::resolve_lock(snap, txns, Some(keys), &[], &[], keys.len())
                .map(|o| (o.modifies, ()))
        })
        .await
    }

    pub(super) async fn kv_gc(&self, req: kvrpcpb::GcRequest) -> Res<kvrpcpb::GcResponse> {
        let safe_point = ts(req.safe_point, "safe_point")?;
        let mut resp = kvrpcpb::GcResponse::default();
        if let Err(e) = self
            .gc_region(header(req.context.as_ref()), safe_point)
            .await?
        {
            resp.error = some_key_error(e)?;
        }
        Ok(resp)
    }

    pub(super) async fn kv_delete_range(
        &self,
        req: kvrpcpb::DeleteRangeRequest,
    ) -> Res<kvrpcpb::DeleteRangeResponse> {
        if req.notify_only {
            return Ok(Default::default());
        }
        let modifies = txn::delete_range_modifies(&req.start_key, &req.end_key);
        self.write(header(req.context.as_ref()), modifies).await?;
        Ok(Default::default())
    }
}
