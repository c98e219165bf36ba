//! The store's GC worker: polls PD's GC safe point and, when it moves, garbage-collects every
//! region this store leads. Versions no reader at or above the safe point can see are removed
//! (the newest version at or below it stays); the deletions go through raft like any write.
//!
//! GC takes no latches: it only deletes versions at or below the safe point, which no command
//! writes any more (clients resolve their locks below it before they advance it, and a commit
//! or rollback is written at a timestamp above its start, which is above the safe point).

use std::sync::Arc;
use std::time::Duration;

use raftstore::RequestHeader;
use storage::txn::{self, TxnError};
use tokio::sync::watch;
use txn_types::{Key, TimeStamp};

use crate::kv::{KvInner, ReqError, GC_KEYS_PER_ROUND};

impl KvInner {
    /// Garbage-collects one region below `safe_point`, a bounded batch of keys per raft
    /// proposal. Outer error: the region cannot be served here; inner: the data is corrupt.
    pub(crate) async fn gc_region(
        &self,
        head: RequestHeader,
        safe_point: TimeStamp,
    ) -> Result<Result<(), TxnError>, ReqError> {
        let mut from: Option<Key> = None;
        loop {
            let view = self.write_view(head.clone()).await?;
            let start = match &from {
                Some(k) => k.as_encoded(),
                None => view.region.start_key.as_slice(),
            };
            let out = match txn::gc(
                view.snapshot.as_ref(),
                start,
                &view.region.end_key,
                safe_point,
                GC_KEYS_PER_ROUND,
            ) {
                Ok(out) => out,
                Err(e) => return Ok(Err(e)),
            };
            if !out.modifies.is_empty() {
                let head = RequestHeader {
                    term: Some(view.term),
                    ..head.clone()
                };
                self.write(head, out.modifies).await?;
            }
            match out.next_key {
                Some(k) => from = Some(k),
                None => return Ok(Ok(())),
            }
        }
    }
}

/// Runs until `shutdown` turns true: every `poll`, reads the safe point from PD and, when it
/// has moved past the last one collected, collects every region this store leads.
pub(crate) async fn run(inner: Arc<KvInner>, poll: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut done = TimeStamp::zero();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.changed() => return,
        }
        let safe_point = match inner.pd.get_gc_safe_point().await {
            Ok(sp) => TimeStamp::new(sp),
            Err(e) => {
                tracing::warn!(error = %e, "gc worker cannot read the safe point");
                continue;
            }
        };
        if safe_point <= done {
            continue;
        }
        let mut all_ok = true;
        for info in inner
            .router
            .region_infos()
            .into_iter()
            .filter(|r| r.is_leader)
        {
            let head = RequestHeader {
                region_id: info.region.id,
                region_epoch: info.region.region_epoch,
                peer: None,
                term: None,
            };
            match inner.gc_region(head, safe_point).await {
                Ok(Ok(())) => crate::metrics::GC_REGIONS.inc(),
                Ok(Err(e)) => {
                    all_ok = false;
                    tracing::error!(region_id = info.region.id, error = %e, "gc failed");
                }
                // Moved, split or lost leadership meanwhile: its new leader collects it.
                Err(_) => all_ok = false,
            }
        }
        if all_ok {
            done = safe_point;
            tracing::info!(safe_point = safe_point.into_inner(), "gc done");
        }
    }
}
