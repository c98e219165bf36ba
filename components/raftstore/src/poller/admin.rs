//! The poller's handling of what applying produced (membership changes, splits, log
//! compaction) and of the admin flows that lead there (split requests, PD's answers).

use super::*;

use proto::flotillapb::{
    AdminCmdType, AdminRequest, BatchSplitRequest, CompactLogRequest, RaftCmdRequest, SplitRequest,
};
use proto::pdpb;

use crate::msg::{ApplyRes, ExecResult, WriteCallback};
use crate::util::{find_peer_by_id, key_in_region, merge_epochs};

impl Poller {
    pub(super) fn on_apply_res(&mut self, res: ApplyRes) {
        let id = res.region_id;
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let snapshot_index = p
            .pending_snapshot
            .as_ref()
            .map_or(0, |s| s.ready.snapshot().get_metadata().index);
        let ps = p.raw.mut_store();
        let superseded_below = ps.apply_state.applied_index.max(snapshot_index);
        if res.apply_state.applied_index < superseded_below {
            // Entries applied before a snapshot that raft-rs has already taken in (pending or
            // applied): the snapshot supersedes them, their membership changes and splits
            // included. Taking them would undo the snapshot's membership in raft-rs or move the
            // applied index back below the snapshot's compacted log.
            tracing::info!(
                region_id = id,
                stale = res.apply_state.applied_index,
                snapshot = superseded_below,
                "dropping apply results older than a snapshot"
            );
            return;
        }
        ps.apply_state.applied_index = res.apply_state.applied_index;
        ps.apply_state.applied_term = res.apply_state.applied_term;
        // A merge source that a CommitMerge brought up to its PrepareMerge entry has applied
        // past what its raft-rs knows is committed; the peer goes in the target's report next.
        let committed = p.raw.raft.raft_log.committed;
        p.raw
            .advance_apply_to(res.apply_state.applied_index.min(committed));
        p.written_since_check += res.written_bytes;
        p.approximate_size += res.written_bytes;
        for r in res.results {
            match r {
                ExecResult::ChangePeer { cc, region } => self.on_change_peer(id, cc, region),
                ExecResult::Split { derived, regions } => {
                    self.on_split_applied(id, derived, regions)
                }
                ExecResult::CompactLog { index, term } => self.on_compact_log(id, index, term),
                ExecResult::PrepareMerge { region, state } => {
                    self.on_prepare_merge_applied(id, region, state)
                }
                ExecResult::CommitMerge { region, source } => {
                    self.on_commit_merge_applied(id, region, source)
                }
                ExecResult::RollbackMerge { region } => self.on_rollback_merge_applied(id, region),
            }
        }
        if let Some(p) = self.peers.get_mut(&id) {
            p.serve_ready_reads(&self.kv);
            publish(&self.regions, &self.readers, p);
        }
    }

    pub(super) fn on_change_peer(
        &mut self,
        id: RegionId,
        cc: raft::eraftpb::ConfChange,
        region: metapb::Region,
    ) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if let Err(e) = p.raw.apply_conf_change(&cc) {
            panic!("region {id}: raft refused an applied conf change: {e}");
        }
        p.raw.mut_store().region = region.clone();
        let removed = find_peer_by_id(&region, p.meta.id).is_none();
        if let Some(meta) = find_peer_by_id(&region, p.meta.id) {
            p.meta = *meta;
        }
        if p.is_leader() {
            let _ = self
                .pd_tx
                .try_send(p.heartbeat_task(self.tick_count, &self.cfg, false));
        }
        if removed {
            tracing::info!(region_id = id, "peer removed from region; destroying");
            self.destroy_peer(id, true, None);
        }
    }

    pub(super) fn on_split_applied(
        &mut self,
        id: RegionId,
        derived: metapb::Region,
        regions: Vec<metapb::Region>,
    ) {
        let was_leader = match self.peers.get_mut(&id) {
            Some(p) => {
                p.raw.mut_store().region = derived.clone();
                p.splitting = None;
                p.approximate_size /= regions.len() as u64;
                p.approximate_keys /= regions.len() as u64;
                p.is_leader()
            }
            None => return,
        };
        for r in regions.iter().filter(|r| r.id != id) {
            if let Some(existing) = self.peers.get(&r.id) {
                if existing.raw.store().is_initialized() {
                    continue;
                }
                self.peers.remove(&r.id);
            }
            let Some(meta) = find_peer(r, self.store_id).cloned() else {
                continue;
            };
            if let Some(tombstone) = self.tombstones.get(&r.id).copied() {
                if !is_epoch_stale(&tombstone, &epoch_of(r)) {
                    // This store's peer of the new region was created from a message and
                    // removed before this (lagging) split was applied here: it stays removed.
                    tracing::info!(
                        region_id = r.id,
                        "split region was removed here; not created"
                    );
                    let _ = self.apply_tx.send(ApplyTask::Destroy {
                        region_id: r.id,
                        clear_data: true,
                        tombstone_epoch: tombstone,
                    });
                    continue;
                }
            }
            if let Err(e) = self.create_peer(r.clone(), meta, None) {
                panic!("region {}: cannot create split peer: {e}", r.id);
            }
            if was_leader {
                let np = self.peers.get_mut(&r.id).expect("created");
                let _ = np.raw.campaign();
            } else {
                self.step_pending_votes(r.id);
            }
        }
        if was_leader {
            let _ = self.pd_tx.try_send(PdTask::ReportBatchSplit {
                regions: regions.clone(),
            });
            if let Some(p) = self.peers.get(&id) {
                let _ = self
                    .pd_tx
                    .try_send(p.heartbeat_task(self.tick_count, &self.cfg, false));
            }
        }
        tracing::info!(region_id = id, parts = regions.len(), "split applied");
    }

    pub(super) fn on_compact_log(&mut self, id: RegionId, index: u64, term: u64) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let ps = p.raw.mut_store();
        if index <= ps.apply_state.truncated_index {
            return;
        }
        ps.apply_state.truncated_index = index;
        ps.apply_state.truncated_term = term;
        if let Err(e) = self.raft_log.compact_to(id, index + 1) {
            tracing::warn!(region_id = id, "log compaction failed: {e}");
        }
    }

    /// Destroys this store's peer of region `id`: its pending work fails, its raft log is
    /// cleaned, and the apply thread marks the region tombstone (its data deleted if
    /// `clear_data`). The tombstone keeps the newest epoch known here (the peer's, merged with
    /// `newer_epoch` when a newer one told it that it is no longer a member), so that no older
    /// message creates the peer again.
    pub(super) fn destroy_peer(
        &mut self,
        id: RegionId,
        clear_data: bool,
        newer_epoch: Option<metapb::RegionEpoch>,
    ) {
        let Some(mut p) = self.peers.remove(&id) else {
            return;
        };
        let mut tombstone = epoch_of(p.region());
        if let Some(newer) = &newer_epoch {
            tombstone = merge_epochs(&tombstone, newer);
        }
        if let Some(old) = self.tombstones.get(&id) {
            tombstone = merge_epochs(&tombstone, old);
        }
        self.tombstones.insert(id, tombstone);
        p.fail_reads(RegionError::RegionNotFound(id));
        // A proposal in flight may still commit on the region's other peers: a retryable
        // error would invite a client to apply the write twice.
        p.fail_proposals(RegionError::outcome_unknown(id));
        p.lease.revoke();
        self.regions.remove(&id);
        self.readers.remove(&id);
        self.dirty.remove(&id);
        self.active.remove(&id);
        let _ = self.apply_tx.send(ApplyTask::Destroy {
            region_id: id,
            clear_data,
            tombstone_epoch: tombstone,
        });
        let mut lb = LogBatch::default();
        lb.clean_region(id);
        if let Err(e) = self.raft_log.write(lb, true) {
            panic!("store {}: raft log write failed: {e}", self.store_id);
        }
    }

    pub(super) fn on_heartbeat_response(&mut self, resp: pdpb::RegionHeartbeatResponse) {
        let id = resp.region_id;
        if let Some(split) = &resp.split_region {
            self.ask_split(id, split.keys.clone());
            return;
        }
        if let Some(target) = resp.merge.as_ref().and_then(|m| m.target.clone()) {
            self.on_merge_request(id, target);
            return;
        }
        if let Some(p) = self.peers.get_mut(&id) {
            p.on_heartbeat_response(&resp);
        }
    }

    pub(super) fn ask_split(&mut self, id: RegionId, split_keys: Vec<Vec<u8>>) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if !p.is_leader()
            || p.is_merging()
            || p.splitting
                .is_some_and(|since| self.tick_count < since + self.cfg.split_timeout_ticks)
        {
            return;
        }
        let region = p.region().clone();
        let mut keys: Vec<Vec<u8>> = split_keys
            .into_iter()
            .filter(|k| key_in_region(k, &region) && *k != region.start_key)
            .collect();
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return;
        }
        p.splitting = Some(self.tick_count);
        if self
            .pd_tx
            .try_send(PdTask::AskBatchSplit {
                region,
                split_keys: keys,
            })
            .is_err()
        {
            p.splitting = None;
        }
    }

    pub(super) fn on_split_ids(
        &mut self,
        id: RegionId,
        epoch: metapb::RegionEpoch,
        keys: Vec<Vec<u8>>,
        ids: Vec<pdpb::SplitId>,
    ) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if !p.is_leader() || epoch_of(p.region()) != epoch || ids.len() != keys.len() {
            p.splitting = None;
            return;
        }
        let requests = keys
            .into_iter()
            .zip(ids)
            .map(|(k, i)| SplitRequest {
                split_key: k,
                new_region_id: i.new_region_id,
                new_peer_ids: i.new_peer_ids,
            })
            .collect();
        let cmd = RaftCmdRequest {
            region_id: id,
            peer_id: p.meta.id,
            region_epoch: Some(epoch),
            requests: vec![],
            admin: Some(AdminRequest {
                cmd_type: AdminCmdType::BatchSplit as i32,
                splits: Some(BatchSplitRequest {
                    requests,
                    right_derive: false,
                }),
                ..Default::default()
            }),
        };
        let tx = self.control_tx.clone();
        let cb: WriteCallback = Box::new(move |r| {
            if let Err(e) = r {
                tracing::info!(region_id = id, "split not applied: {e}");
                // Clears the in-progress mark so that a later check can try again.
                let _ = tx.send(ControlMsg::SplitFailed { region_id: id });
            }
        });
        let cfg = self.cfg.clone();
        p.propose_cmd(&cfg, cmd, cb);
    }
}

/// A follower that has sat in snapshot state too long is reported as failed, so the leader
/// sends a new snapshot instead of waiting forever for one that was lost.
pub(super) fn check_snapshot_progress(cfg: &StoreConfig, p: &mut Peer) {
    let mut failed = vec![];
    for (peer_id, ticks) in p.snapshot_ticks.iter_mut() {
        *ticks += 1;
        if *ticks > cfg.snapshot_send_timeout_ticks {
            failed.push(*peer_id);
        }
    }
    for id in failed {
        p.snapshot_ticks.remove(&id);
        p.raw.report_snapshot(id, SnapshotStatus::Failure);
    }
}

/// Proposes a log compaction once enough applied entries have piled up. Followers that are
/// active hold the compaction point back; a follower that is down does not (it will catch up
/// by snapshot).
pub(super) fn maybe_compact_log(cfg: &StoreConfig, p: &mut Peer) {
    let ps = p.raw.store();
    let applied = ps.apply_state.applied_index;
    let truncated = ps.apply_state.truncated_index;
    let mut replicated = applied;
    for (id, pr) in p.raw.raft.prs().iter() {
        if *id != p.meta.id && pr.recent_active {
            replicated = replicated.min(pr.matched);
        }
    }
    let mut compact_idx = replicated;
    if applied.saturating_sub(truncated) > cfg.raft_log_gc_threshold_entries * 4 {
        compact_idx = applied; // a slow follower must not hold the log forever
    }
    if compact_idx <= truncated || compact_idx - truncated < cfg.raft_log_gc_threshold_entries {
        return;
    }
    let Ok(term) = raft::Storage::term(ps, compact_idx) else {
        return;
    };
    let cmd = RaftCmdRequest {
        region_id: ps.region.id,
        peer_id: p.meta.id,
        region_epoch: Some(epoch_of(&ps.region)),
        requests: vec![],
        admin: Some(AdminRequest {
            cmd_type: AdminCmdType::CompactLog as i32,
            compact_log: Some(CompactLogRequest {
                compact_index: compact_idx,
                compact_term: term,
            }),
            ..Default::default()
        }),
    };
    p.propose_cmd(cfg, cmd, Box::new(|_| {}));
}
