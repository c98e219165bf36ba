//! Transactional writes: prewrite, commit, rollback, cleanup, heartbeat and pessimistic locks.
//!
//! Every command runs the same way ([`KvInner::txn_write`]): the keys' latches, a read view of
//! the region tagged with the leader's term, a pure Percolator action from the storage crate,
//! and one raft proposal that only applies in that term. Key errors are answered as data and
//! write nothing.

use std::time::{Duration, Instant};

use proto::kvrpcpb;
use storage::txn::{self, PessimisticAction, PessimisticLockRequest, PrewriteRequest, TxnError};
use txn_types::TimeStamp;

use super::txn_pb::{invalid, key_error, mutations_from_pb, some_key_error, ts};
use super::{KvInner, ReqError};

type Res<T> = Result<T, ReqError>;

/// The longest a pessimistic lock request waits for another transaction's lock.
const PESSIMISTIC_WAIT_MAX: Duration = Duration::from_secs(3);
/// How often a waiting pessimistic lock request looks again.
const PESSIMISTIC_WAIT_POLL: Duration = Duration::from_millis(20);

fn pessimistic_action(a: i32) -> PessimisticAction {
    use kvrpcpb::prewrite_request::PessimisticAction as Pb;
    match Pb::try_from(a) {
        Ok(Pb::DoPessimisticCheck) => PessimisticAction::DoPessimisticCheck,
        Ok(Pb::DoConstraintCheck) => PessimisticAction::DoConstraintCheck,
        _ => PessimisticAction::SkipPessimisticCheck,
    }
}

fn prewrite_request(req: &kvrpcpb::PrewriteRequest) -> Res<PrewriteRequest> {
    if req.primary_lock.is_empty() {
        return Err(invalid("prewrite without a primary lock".into()));
    }
    Ok(PrewriteRequest {
        mutations: mutations_from_pb(&req.mutations)?,
        primary: req.primary_lock.clone(),
        start_ts: ts(req.start_version, "start_version")?,
        lock_ttl_ms: req.lock_ttl,
        skip_constraint_check: req.skip_constraint_check,
        // One action per mutation. tikv-client 0.4 splits a prewrite by region but sends every
        // shard the whole list (all the same action); like TiKV, the first ones are taken.
        pessimistic_actions: req
            .pessimistic_actions
            .iter()
            .take(req.mutations.len())
            .map(|a| pessimistic_action(*a))
            .collect(),
        for_update_ts: TimeStamp::new(req.for_update_ts),
        txn_size: req.txn_size,
        min_commit_ts: TimeStamp::new(req.min_commit_ts),
        use_async_commit: req.use_async_commit,
        secondaries: req.secondaries.clone(),
        try_one_pc: req.try_one_pc,
        max_commit_ts: TimeStamp::new(req.max_commit_ts),
    })
}

/// Key errors of a command as the response's `errors` list.
fn key_errors(errors: Vec<TxnError>) -> Res<Vec<kvrpcpb::KeyError>> {
    errors.into_iter().map(key_error).collect()
}

impl KvInner {
    pub(super) async fn kv_prewrite(
        &self,
        req: kvrpcpb::PrewriteRequest,
    ) -> Res<kvrpcpb::PrewriteResponse> {
        let preq = prewrite_request(&req)?;
        let keys: Vec<&[u8]> = req.mutations.iter().map(|m| m.key.as_slice()).collect();
        let (_latch, view, head) = self.begin_txn_write(req.context.as_ref(), &keys).await?;
        let snap = view.snapshot.as_ref();
        let mut resp = kvrpcpb::PrewriteResponse::default();
        // Async commit and 1PC pick their commit ts here, from max_ts: it must cover every
        // read this region served, also under earlier leaders (see `sync_max_ts`), and the
        // locks go into the memory table atomically with reading it.
        let (out, _memory_locks) = if preq.use_async_commit || preq.try_one_pc {
            self.sync_max_ts(view.region.id, view.term).await?;
            let r = self.cm.lock_with(|max_ts| {
                let out = txn::prewrite(snap, &preq, max_ts)?;
                let locks = out.locks.clone();
                Ok::<_, TxnError>((out, locks))
            });
            match r {
                Ok((out, guard)) => (out, Some(guard)),
                Err(e) => {
                    resp.errors = key_errors(vec![e])?;
                    return Ok(resp);
                }
            }
        } else {
            match txn::prewrite(snap, &preq, TimeStamp::zero()) {
                Ok(out) => (out, None),
                Err(e) => {
                    resp.errors = key_errors(vec![e])?;
                    return Ok(resp);
                }
            }
        };
        if !out.key_errors.is_empty() {
            resp.errors = key_errors(out.key_errors)?;
            return Ok(resp);
        }
        self.finish_txn_write(head, out.modifies).await?;
        resp.min_commit_ts = out.min_commit_ts.into_inner();
        resp.one_pc_commit_ts = out.one_pc_commit_ts.into_inner();
        Ok(resp)
    }

    pub(super) async fn kv_commit(
        &self,
        req: kvrpcpb::CommitRequest,
    ) -> Res<kvrpcpb::CommitResponse> {
        let start_ts = ts(req.start_version, "start_version")?;
        let commit_ts = ts(req.commit_version, "commit_version")?;
        let r = self
            .txn_write(req.context.as_ref(), &req.keys, |snap| {
                txn::commit(snap, &req.keys, start_ts, commit_ts).map(|o| (o.modifies, ()))
            })
            .await?;
        let mut resp = kvrpcpb::CommitResponse::default();
        match r {
            Ok(()) => resp.commit_version = commit_ts.into_inner(),
            Err(e) => resp.error = some_key_error(e)?,
        }
        Ok(resp)
    }

    pub(super) async fn kv_batch_rollback(
        &self,
        req: kvrpcpb::BatchRollbackRequest,
    ) -> Res<kvrpcpb::BatchRollbackResponse> {
        let start_ts = ts(req.start_version, "start_version")?;
        let r = self
            .txn_write(req.context.as_ref(), &req.keys, |snap| {
                txn::batch_rollback(snap, &req.keys, start_ts).map(|o| (o.modifies, ()))
            })
            .await?;
        Ok(kvrpcpb::BatchRollbackResponse {
            error: r.err().map(key_error).transpose()?,
            ..Default::default()
        })
    }

    pub(super) async fn kv_cleanup(
        &self,
        req: kvrpcpb::CleanupRequest,
    ) -> Res<kvrpcpb::CleanupResponse> {
        let start_ts = ts(req.start_version, "start_version")?;
        let current_ts = TimeStamp::new(req.current_ts);
        let r = self
            .txn_write(req.context.as_ref(), &[&req.key], |snap| {
                txn::cleanup(snap, &req.key, start_ts, current_ts)
                    .map(|o| (o.modifies, o.commit_ts))
            })
            .await?;
        let mut resp = kvrpcpb::CleanupResponse::default();
        match r {
            Ok(commit_ts) => resp.commit_version = commit_ts.into_inner(),
            Err(e) => resp.error = some_key_error(e)?,
        }
        Ok(resp)
    }

    pub(super) async fn kv_txn_heart_beat(
        &self,
        req: kvrpcpb::TxnHeartBeatRequest,
    ) -> Res<kvrpcpb::TxnHeartBeatResponse> {
        let start_ts = ts(req.start_version, "start_version")?;
        let r = self
            .txn_write(req.context.as_ref(), &[&req.primary_lock], |snap| {
                txn::txn_heart_beat(snap, &req.primary_lock, start_ts, req.advise_lock_ttl)
                    .map(|o| (o.modifies, o.lock_ttl))
            })
            .await?;
        let mut resp = kvrpcpb::TxnHeartBeatResponse::default();
        match r {
            Ok(ttl) => resp.lock_ttl = ttl,
            Err(e) => resp.error = some_key_error(e)?,
        }
        Ok(resp)
    }

    /// Locks keys for a pessimistic transaction. With `wait_timeout` > 0 (milliseconds) a
    /// request that meets another transaction's lock looks again until the lock is gone or
    /// the wait is over (bounded by `PESSIMISTIC_WAIT_MAX`); 0 or less fails at once.
    pub(super) async fn kv_pessimistic_lock(
        &self,
        req: kvrpcpb::PessimisticLockRequest,
    ) -> Res<kvrpcpb::PessimisticLockResponse> {
        let preq = PessimisticLockRequest {
            keys: req.mutations.iter().map(|m| m.key.clone()).collect(),
            primary: req.primary_lock.clone(),
            start_ts: ts(req.start_version, "start_version")?,
            for_update_ts: ts(req.for_update_ts, "for_update_ts")?,
            lock_ttl_ms: req.lock_ttl,
            return_values: req.return_values,
            check_existence: req.check_existence,
            min_commit_ts: TimeStamp::new(req.min_commit_ts),
        };
        let wait = Duration::from_millis(req.wait_timeout.max(0) as u64).min(PESSIMISTIC_WAIT_MAX);
        let deadline = Instant::now() + wait;
        loop {
            let r = self
                .txn_write(req.context.as_ref(), &preq.keys, |snap| {
                    txn::pessimistic_lock(snap, &preq).map(|o| {
                        let modifies = if o.key_errors.is_empty() {
                            o.modifies.clone()
                        } else {
                            vec![]
                        };
                        (modifies, o)
                    })
                })
                .await?;
            let out = match r {
                Ok(out) => out,
                Err(e) => {
                    return Ok(kvrpcpb::PessimisticLockResponse {
                        errors: key_errors(vec![e])?,
                        ..Default::default()
                    })
                }
            };
            let locked = out
                .key_errors
                .iter()
                .any(|e| matches!(e, TxnError::KeyIsLocked(_)));
            if locked && Instant::now() < deadline {
                tokio::time::sleep(PESSIMISTIC_WAIT_POLL).await;
                continue;
            }
            let mut resp = kvrpcpb::PessimisticLockResponse::default();
            if !out.key_errors.is_empty() {
                resp.errors = key_errors(out.key_errors)?;
                return Ok(resp);
            }
            if req.return_values {
                resp.not_founds = out.values.iter().map(Option::is_none).collect();
                resp.values = out
                    .values
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect();
            } else if req.check_existence {
                resp.not_founds = out.exists.iter().map(|e| !e).collect();
            }
            return Ok(resp);
        }
    }

    pub(super) async fn kv_pessimistic_rollback(
        &self,
        req: kvrpcpb::PessimisticRollbackRequest,
    ) -> Res<kvrpcpb::PessimisticRollbackResponse> {
        let start_ts = ts(req.start_version, "start_version")?;
        let for_update_ts = TimeStamp::new(req.for_update_ts);
        let r = self
            .txn_write(req.context.as_ref(), &req.keys, |snap| {
                txn::pessimistic_rollback(snap, &req.keys, start_ts, for_update_ts)
                    .map(|o| (o.modifies, ()))
            })
            .await?;
        Ok(kvrpcpb::PessimisticRollbackResponse {
            errors: r
                .err()
                .map(|e| key_errors(vec![e]))
                .transpose()?
                .unwrap_or_default(),
            ..Default::default()
        })
    }
}
