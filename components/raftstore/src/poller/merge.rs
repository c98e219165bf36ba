//! Region merge, on the poller's side. PD asks the leader of the source region (in a heartbeat
//! answer) to merge it into an adjacent target whose peers are on the same stores. Then:
//!
//! 1. **PrepareMerge** (proposed in the source, [`Poller::on_merge_request`]): records the
//!    lowest index every source peer has (`min_index`) and the target as this store sees it
//!    (range, epoch, peers). From the moment it is proposed the source takes no writes or reads
//!    (`ProposalInMergingMode`, which the client retries); once applied the region is
//!    `Merging`, its epoch raised, and nothing but the merge's end applies in it.
//! 2. **CommitMerge** (proposed in the target by the source's leader, [`Poller::check_merge`]):
//!    carries the source's region and its log after `min_index` up to the PrepareMerge entry.
//!    It is proposed through this store's peer of the target, so the source's leader must be
//!    where the target's leader is: if it is not, the source hands its leadership to its peer
//!    on the target leader's store. The target's epoch in the command must still be the one
//!    PrepareMerge recorded (version and conf_ver), so that the target's peers are still on the
//!    source's stores. Every store's apply thread brings its source peer up to the PrepareMerge
//!    entry (its own log up to `min_index`, the carried entries after), then widens the target
//!    and tombstones the source in one synced batch; the poller then drops the source's peer
//!    without deleting data ([`Poller::on_commit_merge_applied`]).
//! 3. **RollbackMerge** (proposed in the source): when this store's peer of the target has an
//!    epoch newer than the one recorded, no CommitMerge can apply anywhere any more. (Had one
//!    applied here, this store's source peer would be gone: the apply report that tombstones it
//!    is the same one that moves the target's epoch. Had it been applied elsewhere before the
//!    target changed, it would have been applied here too, since apply is deterministic; a
//!    snapshot of the widened target that overtakes it here replaces the source's peer first.)
//!
//! Leader changes: the merge state is in the region's persisted state, so a new source leader
//! (or the same one after a restart) carries on from step 2. A source peer that was down during
//! the merge is brought up by its store's target peer applying CommitMerge from the target's
//! log; if the target's log moved on, the target's snapshot covers the source's range and
//! replaces the stale source peer ([`Poller::stale_peers_covered_by`]).

use super::*;

use proto::flotillapb::{
    AdminCmdType, AdminRequest, CommitMergeRequest, MergeState, PrepareMergeRequest,
    RaftCmdRequest, RollbackMergeRequest,
};
use raft::GetEntriesContext;

use crate::msg::WriteCallback;

impl Poller {
    /// PD asks the leader of region `id` to merge it into `target`.
    pub(super) fn on_merge_request(&mut self, id: RegionId, target: metapb::Region) {
        match self.prepare_merge_command(id, &target) {
            Ok(cmd) => {
                let tx = self.control_tx.clone();
                let cb: WriteCallback = Box::new(move |r| {
                    if let Err(e) = r {
                        tracing::info!(region_id = id, "PrepareMerge not applied: {e}");
                        let _ = tx.send(ControlMsg::MergeFailed { region_id: id });
                    }
                });
                let tick = self.tick_count;
                let cfg = self.cfg.clone();
                let p = self.peers.get_mut(&id).expect("checked");
                p.merge_proposed = Some(tick);
                p.fail_reads(RegionError::ProposalInMergingMode(id));
                p.propose_cmd(&cfg, cmd, cb);
                tracing::info!(region_id = id, target = target.id, "PrepareMerge proposed");
            }
            Err(why) => {
                tracing::info!(
                    region_id = id,
                    target = target.id,
                    "merge not started: {why}"
                )
            }
        }
    }

    /// The PrepareMerge command, if region `id` can start merging into `target` now.
    fn prepare_merge_command(
        &self,
        id: RegionId,
        pd_target: &metapb::Region,
    ) -> Result<RaftCmdRequest, String> {
        let p = self.peers.get(&id).ok_or("no peer")?;
        if !p.is_leader() {
            return Err("not leader".into());
        }
        if p.is_merging() || p.splitting.is_some() || p.raw.raft.has_pending_conf() {
            return Err("a merge, split or membership change is in progress".into());
        }
        let t = self
            .peers
            .get(&pd_target.id)
            .filter(|t| t.raw.store().is_initialized())
            .ok_or("this store has no initialized peer of the target")?;
        let source = p.region();
        let target = t.region();
        if is_epoch_stale(&epoch_of(target), &epoch_of(pd_target)) {
            return Err("this store's target peer is behind PD's".into());
        }
        let adjacent = (!source.end_key.is_empty() && source.end_key == target.start_key)
            || (!target.end_key.is_empty() && target.end_key == source.start_key);
        if !adjacent {
            return Err("target is not adjacent".into());
        }
        if !same_stores_all_voters(source, target) {
            return Err("source and target peers are not on the same stores as voters".into());
        }
        let mut min_index = p.raw.raft.raft_log.last_index();
        for peer in &source.peers {
            if peer.id == p.meta.id {
                continue;
            }
            let matched = p.raw.raft.prs().get(peer.id).map_or(0, |pr| pr.matched);
            min_index = min_index.min(matched);
        }
        if min_index < p.raw.store().truncated_index() {
            return Err(format!(
                "a peer is behind the log's start ({min_index} < {})",
                p.raw.store().truncated_index()
            ));
        }
        Ok(RaftCmdRequest {
            region_id: id,
            peer_id: p.meta.id,
            region_epoch: Some(epoch_of(source)),
            requests: vec![],
            admin: Some(AdminRequest {
                cmd_type: AdminCmdType::PrepareMerge as i32,
                prepare_merge: Some(PrepareMergeRequest {
                    min_index,
                    target: Some(target.clone()),
                }),
                ..Default::default()
            }),
        })
    }

    /// PrepareMerge applied: the region is merging (on every peer); its leader goes on.
    pub(super) fn on_prepare_merge_applied(
        &mut self,
        id: RegionId,
        region: metapb::Region,
        state: MergeState,
    ) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.raw.mut_store().region = region;
        p.raw.mut_store().merge_state = Some(state);
        p.merge_proposed = None;
        p.merge_action_tick = None;
        p.fail_reads(RegionError::ProposalInMergingMode(id));
        if p.is_leader() {
            let _ = self
                .pd_tx
                .try_send(p.heartbeat_task(self.tick_count, &self.cfg, false));
            self.check_merge(id);
        }
    }

    /// A merging source's leader takes the next step: CommitMerge into the target, handing
    /// leadership to where the target's leader is, or RollbackMerge. Paced by the election
    /// timeout between tries.
    pub(super) fn check_merge(&mut self, id: RegionId) {
        let tick = self.tick_count;
        let pace = self.cfg.raft_election_ticks as u64;
        let Some(p) = self.peers.get(&id) else {
            return;
        };
        let Some(state) = p.raw.store().merge_state.clone() else {
            return;
        };
        if !p.is_leader() || p.merge_action_tick.is_some_and(|t| tick < t + pace) {
            return;
        }
        let target = state.target.clone().unwrap_or_default();
        let want = epoch_of(&target);
        let step = match self.peers.get(&target.id) {
            Some(t) if t.raw.store().is_initialized() => {
                let cur = epoch_of(t.region());
                if cur == want {
                    if t.is_leader() {
                        MergeStep::Commit
                    } else {
                        match t.leader().and_then(|l| find_peer(p.region(), l.store_id)) {
                            Some(sp) if sp.id != p.meta.id => MergeStep::TransferTo(sp.id),
                            _ => MergeStep::Wait,
                        }
                    }
                } else if cur.version > want.version || cur.conf_ver > want.conf_ver {
                    MergeStep::Rollback("the target's epoch changed")
                } else {
                    MergeStep::Wait
                }
            }
            _ => MergeStep::Wait,
        };
        let step = match step {
            MergeStep::Commit => match self.commit_merge_command(id, &state) {
                Ok(cmd) => MergeStep::Propose(Box::new(cmd)),
                Err(why) => MergeStep::Rollback(why),
            },
            other => other,
        };
        let cfg = self.cfg.clone();
        match step {
            MergeStep::Wait | MergeStep::Commit => return,
            MergeStep::Propose(cmd) => {
                let t = self.peers.get_mut(&target.id).expect("checked");
                t.propose_cmd(&cfg, *cmd, Box::new(|_| {}));
                self.wake(target.id); // the target may have been hibernating
                tracing::info!(region_id = id, target = target.id, "CommitMerge proposed");
            }
            MergeStep::TransferTo(peer_id) => {
                let p = self.peers.get_mut(&id).expect("checked");
                p.transfer_leader(peer_id);
                tracing::info!(
                    region_id = id,
                    to = peer_id,
                    "handing merge leadership to the target leader's store"
                );
            }
            MergeStep::Rollback(why) => {
                let p = self.peers.get_mut(&id).expect("checked");
                let cmd = RaftCmdRequest {
                    region_id: id,
                    peer_id: p.meta.id,
                    region_epoch: Some(epoch_of(p.region())),
                    requests: vec![],
                    admin: Some(AdminRequest {
                        cmd_type: AdminCmdType::RollbackMerge as i32,
                        rollback_merge: Some(RollbackMergeRequest {
                            commit: state.commit,
                        }),
                        ..Default::default()
                    }),
                };
                p.propose_cmd(&cfg, cmd, Box::new(|_| {}));
                tracing::info!(region_id = id, "RollbackMerge proposed: {why}");
            }
        }
        if let Some(p) = self.peers.get_mut(&id) {
            p.merge_action_tick = Some(tick);
        }
    }

    /// CommitMerge for the target, with the source's entries after `min_index`. An error means
    /// no CommitMerge for this merge can ever be built (every peer of the source has the same
    /// log up to the PrepareMerge entry), so rolling back is safe.
    fn commit_merge_command(
        &self,
        id: RegionId,
        state: &MergeState,
    ) -> Result<RaftCmdRequest, &'static str> {
        let p = self.peers.get(&id).expect("checked");
        let target = state.target.clone().unwrap_or_default();
        let t = self.peers.get(&target.id).expect("checked");
        let entries = raft::Storage::entries(
            p.raw.store(),
            state.min_index + 1,
            state.commit + 1,
            None,
            GetEntriesContext::empty(false),
        )
        .map_err(|_| "the source's log no longer holds the merge's entries")?;
        let cmd = RaftCmdRequest {
            region_id: target.id,
            peer_id: t.meta.id,
            region_epoch: target.region_epoch,
            requests: vec![],
            admin: Some(AdminRequest {
                cmd_type: AdminCmdType::CommitMerge as i32,
                commit_merge: Some(CommitMergeRequest {
                    source: Some(p.region().clone()),
                    commit: state.commit,
                    entries: entries
                        .iter()
                        .map(|e| protobuf::Message::write_to_bytes(e).expect("encode entry"))
                        .collect(),
                }),
                ..Default::default()
            }),
        };
        if cmd.encoded_len() as u64 > self.cfg.raft_entry_max_bytes {
            return Err("CommitMerge would exceed the raft entry limit");
        }
        Ok(cmd)
    }

    /// CommitMerge applied in target `id`: it covers `source` now; this store's source peer
    /// goes (its data stays: it is the target's, and the apply thread has already tombstoned
    /// it durably).
    pub(super) fn on_commit_merge_applied(
        &mut self,
        id: RegionId,
        region: metapb::Region,
        source: metapb::Region,
    ) {
        let source_size = self
            .peers
            .get(&source.id)
            .map_or((0, 0), |s| (s.approximate_size, s.approximate_keys));
        self.destroy_peer(source.id, false, Some(epoch_of(&source)));
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.raw.mut_store().region = region;
        p.approximate_size += source_size.0;
        p.approximate_keys += source_size.1;
        p.written_since_check += 1;
        tracing::info!(region_id = id, source = source.id, "merge applied");
        if p.is_leader() {
            let _ = self
                .pd_tx
                .try_send(p.heartbeat_task(self.tick_count, &self.cfg, false));
        }
    }

    /// RollbackMerge applied: the region serves again.
    pub(super) fn on_rollback_merge_applied(&mut self, id: RegionId, region: metapb::Region) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.raw.mut_store().region = region;
        p.raw.mut_store().merge_state = None;
        p.merge_proposed = None;
        p.merge_action_tick = None;
        tracing::info!(region_id = id, "merge rolled back");
        if p.is_leader() {
            let _ = self
                .pd_tx
                .try_send(p.heartbeat_task(self.tick_count, &self.cfg, false));
        }
    }

    /// The local peers a snapshot of `region` replaces: initialized peers whose range overlaps
    /// it. `None` if one of them may still be current (the snapshot must wait): only a peer
    /// entirely inside the snapshot's range with a lower version is stale for sure, since
    /// the snapshot's region took its range over by a merge.
    pub(super) fn stale_peers_covered_by(
        &self,
        region_id: RegionId,
        region: &metapb::Region,
    ) -> Option<Vec<RegionId>> {
        let mut covered = vec![];
        for (id, p) in &self.peers {
            if *id == region_id
                || !p.raw.store().is_initialized()
                || !ranges_overlap(p.region(), region)
            {
                continue;
            }
            let local = p.region();
            let inside = local.start_key >= region.start_key
                && (region.end_key.is_empty()
                    || (!local.end_key.is_empty() && local.end_key <= region.end_key));
            if !inside || epoch_of(local).version >= epoch_of(region).version {
                return None;
            }
            covered.push(*id);
        }
        Some(covered)
    }
}

enum MergeStep {
    Wait,
    Commit,
    Propose(Box<RaftCmdRequest>),
    TransferTo(u64),
    Rollback(&'static str),
}

/// Whether the two regions have their peers on the same stores, every one a voter.
fn same_stores_all_voters(a: &metapb::Region, b: &metapb::Region) -> bool {
    let voters = |r: &metapb::Region| {
        r.peers
            .iter()
            .all(|p| p.role == metapb::PeerRole::Voter as i32)
    };
    let stores = |r: &metapb::Region| {
        let mut s: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
        s.sort_unstable();
        s
    };
    voters(a) && voters(b) && stores(a) == stores(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(stores: &[(u64, i32)]) -> metapb::Region {
        metapb::Region {
            peers: stores
                .iter()
                .enumerate()
                .map(|(i, (store_id, role))| metapb::Peer {
                    id: 100 + i as u64 + store_id * 10,
                    store_id: *store_id,
                    role: *role,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn peers_must_be_voters_on_the_same_stores() {
        let v = metapb::PeerRole::Voter as i32;
        let l = metapb::PeerRole::Learner as i32;
        let a = region(&[(1, v), (2, v), (3, v)]);
        assert!(same_stores_all_voters(
            &a,
            &region(&[(3, v), (1, v), (2, v)])
        ));
        assert!(!same_stores_all_voters(
            &a,
            &region(&[(1, v), (2, v), (4, v)])
        ));
        assert!(!same_stores_all_voters(&a, &region(&[(1, v), (2, v)])));
        assert!(!same_stores_all_voters(
            &a,
            &region(&[(1, v), (2, v), (3, l)])
        ));
    }
}
