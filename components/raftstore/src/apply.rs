//! The apply thread: turns committed raft entries into engine writes. One engine batch per
//! round holds the data of every region applied in it together with each region's apply
//! state, so data and progress move atomically. Admin commands (split, log compaction) and
//! membership changes update region metadata the same way and are reported to the poller.
//!
//! Merge: PrepareMerge puts the source region in `Merging` (epoch raised, nothing else applies);
//! CommitMerge, applied in the target, first brings this store's source peer up to the
//! PrepareMerge entry (from its own raft log and the entries CommitMerge carries), then widens
//! the target over the source's range and tombstones the source, in one synced batch; the data
//! stays where it is. RollbackMerge returns the source to `Normal`.
//!
//! The thread never waits for the poller: its reports go on the poller's unbounded control
//! channel. A snapshot is written here too, off the poller, and reported the same way
//! (`ControlMsg::SnapshotApplied`), after the apply results that precede it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use engine::{KvEngine, WriteBatch, CF_RAFT, DATA_CFS};
use prost::Message as _;
use proto::flotillapb::{
    AdminCmdType, AdminRequest, ChangePeerRequest, CmdType, CommitMergeRequest, MergeState,
    PeerState, RaftApplyState, RaftCmdRequest, RegionLocalState, SnapshotData,
};
use proto::metapb;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType};
use raft_log::RaftLogStore;

use crate::msg::{ApplyRes, ControlMsg, ExecResult, RegionError, WriteCallback};
use crate::peer_storage::{init_apply_state, write_initial_region};
use crate::util::{epoch_matches, epoch_of, key_in_region, merge_epochs};

/// A proposal waiting for its entry to be applied.
pub struct Proposal {
    /// Log index of the entry.
    pub index: u64,
    /// Term the entry was proposed in.
    pub term: u64,
    /// When it was proposed (lease clock): its commit in the leader's term renews the lease
    /// from here.
    pub proposed_ns: u64,
    /// Answer to the client.
    pub cb: WriteCallback,
}

/// Work for the apply thread.
pub enum ApplyTask {
    /// Start tracking a region (at start-up, or a peer created from a message).
    Register {
        region: metapb::Region,
        apply_state: RaftApplyState,
        /// Set when the region is the source of a merge in progress.
        merge_state: Option<MergeState>,
    },
    /// Apply committed entries; answer the proposals among them.
    Apply {
        region_id: u64,
        entries: Vec<Entry>,
        proposals: Vec<Proposal>,
    },
    /// Replace the region's data with a snapshot's, durably; report
    /// `ControlMsg::SnapshotApplied` for `peer_id`.
    Snapshot {
        region_id: u64,
        peer_id: u64,
        data: Box<SnapshotData>,
    },
    /// Remove the region: mark it tombstone (its epoch raised to at least `tombstone_epoch`)
    /// and delete its data (if `clear_data`).
    Destroy {
        region_id: u64,
        clear_data: bool,
        tombstone_epoch: metapb::RegionEpoch,
    },
}

struct Delegate {
    region: metapb::Region,
    apply_state: RaftApplyState,
    merge_state: Option<MergeState>,
}

/// What a round needs to apply CommitMerge: the other regions' delegates (the source's) and
/// the raft log (the source's entries a lagging source peer has not applied yet).
struct Regions<'a> {
    delegates: &'a mut HashMap<u64, Delegate>,
    raft_log: &'a dyn RaftLogStore,
    /// Regions merged away on this store: a snapshot for one of them is refused.
    merged: &'a mut HashSet<u64>,
}

/// Runs the apply loop of store `store_id` until the task channel closes.
pub fn run(
    store_id: u64,
    kv: Arc<dyn KvEngine>,
    raft_log: Arc<dyn RaftLogStore>,
    rx: Receiver<ApplyTask>,
    poller: Sender<ControlMsg>,
    batch_max: usize,
) {
    let mut delegates: HashMap<u64, Delegate> = HashMap::new();
    let mut merged: HashSet<u64> = HashSet::new();
    while let Ok(first) = rx.recv() {
        let mut round = Round {
            store_id,
            ..Round::default()
        };
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(task) = next.take() {
            handled += 1;
            match task {
                ApplyTask::Register {
                    region,
                    apply_state,
                    merge_state,
                } => {
                    delegates.insert(
                        region.id,
                        Delegate {
                            region,
                            apply_state,
                            merge_state,
                        },
                    );
                }
                ApplyTask::Apply {
                    region_id,
                    entries,
                    proposals,
                } => {
                    if let Some(mut d) = delegates.remove(&region_id) {
                        let mut regions = Regions {
                            delegates: &mut delegates,
                            raft_log: raft_log.as_ref(),
                            merged: &mut merged,
                        };
                        round.apply(&mut d, entries, proposals, &mut regions);
                        delegates.insert(region_id, d);
                    } else {
                        for p in proposals {
                            (p.cb)(Err(RegionError::outcome_unknown(region_id)));
                        }
                    }
                }
                ApplyTask::Snapshot {
                    region_id,
                    peer_id,
                    data,
                } => {
                    round.flush(kv.as_ref(), &poller);
                    let result = if merged.contains(&region_id) {
                        // Its range is the target's now; the poller has destroyed the peer by
                        // the time it reads this answer (the merge's report went first).
                        Err(format!("region {region_id} was merged away on this store"))
                    } else {
                        apply_snapshot(store_id, kv.as_ref(), &mut delegates, region_id, *data)
                    };
                    let _ = poller.send(ControlMsg::SnapshotApplied {
                        region_id,
                        peer_id,
                        result,
                    });
                }
                ApplyTask::Destroy {
                    region_id,
                    clear_data,
                    tombstone_epoch,
                } => {
                    round.flush(kv.as_ref(), &poller);
                    destroy(
                        kv.as_ref(),
                        &mut delegates,
                        region_id,
                        clear_data,
                        tombstone_epoch,
                    );
                }
            }
            for (region, state) in round.new_regions.drain(..) {
                delegates.insert(
                    region.id,
                    Delegate {
                        region,
                        apply_state: state,
                        merge_state: None,
                    },
                );
            }
            if handled < batch_max {
                next = rx.try_recv().ok();
            }
        }
        round.flush(kv.as_ref(), &poller);
    }
}

#[derive(Default)]
struct Round {
    /// Names the store-scoped failpoints.
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    store_id: u64,
    /// Whether the batch holds a split (for failpoint `split_after_apply`).
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    has_split: bool,
    wb: WriteBatch,
    sync: bool,
    callbacks: Vec<(WriteCallback, Result<(), RegionError>)>,
    reports: Vec<ApplyRes>,
    new_regions: Vec<(metapb::Region, RaftApplyState)>,
}

impl Round {
    fn apply(
        &mut self,
        d: &mut Delegate,
        entries: Vec<Entry>,
        proposals: Vec<Proposal>,
        regions: &mut Regions<'_>,
    ) {
        let mut proposals = proposals.into_iter().peekable();
        let mut res = ApplyRes {
            region_id: d.region.id,
            apply_state: d.apply_state,
            results: vec![],
            written_bytes: 0,
        };
        for entry in entries {
            if entry.index <= d.apply_state.applied_index {
                continue;
            }
            let size_before = self.wb.data_size();
            let outcome = match entry.get_entry_type() {
                EntryType::EntryNormal => self.apply_normal(d, &entry, &mut res.results, regions),
                EntryType::EntryConfChange => self.apply_conf_change(d, &entry, &mut res.results),
                EntryType::EntryConfChangeV2 => Ok(()),
            };
            res.written_bytes += (self.wb.data_size() - size_before) as u64;
            d.apply_state.applied_index = entry.index;
            d.apply_state.applied_term = entry.term;
            while let Some(p) = proposals.peek() {
                if p.index > entry.index {
                    break;
                }
                let p = proposals.next().expect("peeked");
                let r = if p.index == entry.index && p.term == entry.term {
                    outcome.clone()
                } else {
                    Err(RegionError::StaleCommand)
                };
                self.callbacks.push((p.cb, r));
            }
        }
        for p in proposals {
            self.callbacks.push((p.cb, Err(RegionError::StaleCommand)));
        }
        self.wb.put_cf(
            CF_RAFT,
            &codec::keys::apply_state_key(d.region.id),
            &d.apply_state.encode_to_vec(),
        );
        res.apply_state = d.apply_state;
        self.reports.push(res);
    }

    fn apply_normal(
        &mut self,
        d: &mut Delegate,
        entry: &Entry,
        results: &mut Vec<ExecResult>,
        regions: &mut Regions<'_>,
    ) -> Result<(), RegionError> {
        if entry.data.is_empty() {
            return Ok(()); // a new leader's empty entry
        }
        let cmd = RaftCmdRequest::decode(entry.data.as_ref()).unwrap_or_else(|e| {
            panic!(
                "region {}: undecodable entry {}: {e}",
                d.region.id, entry.index
            )
        });
        let current = epoch_of(&d.region);
        let req_epoch = cmd.region_epoch.unwrap_or_default();
        if let Some(admin) = cmd.admin {
            let check_conf = admin.cmd_type != AdminCmdType::CompactLog as i32;
            if !epoch_matches(&req_epoch, &current, check_conf) {
                return Err(epoch_error(d));
            }
            return self.apply_admin(d, admin, entry.index, results, regions);
        }
        if !epoch_matches(&req_epoch, &current, false) {
            return Err(epoch_error(d));
        }
        if d.merge_state.is_some() {
            return Err(RegionError::ProposalInMergingMode(d.region.id));
        }
        for req in &cmd.requests {
            let cf = cf_by_name(&req.cf)
                .ok_or_else(|| RegionError::Other(format!("bad cf {}", req.cf)))?;
            match CmdType::try_from(req.cmd_type) {
                Ok(CmdType::Put) => {
                    self.wb
                        .put_cf(cf, &codec::keys::data_key(&req.key), &req.value)
                }
                Ok(CmdType::Delete) => self.wb.delete_cf(cf, &codec::keys::data_key(&req.key)),
                Ok(CmdType::DeleteRange) => {
                    let start = std::cmp::max(req.key.as_slice(), d.region.start_key.as_slice());
                    let end = if req.end_key.is_empty()
                        || (!d.region.end_key.is_empty() && req.end_key > d.region.end_key)
                    {
                        codec::keys::data_end_key(&d.region.end_key)
                    } else {
                        codec::keys::data_key(&req.end_key)
                    };
                    let start = codec::keys::data_key(start);
                    if start < end {
                        self.wb.delete_range_cf(cf, &start, &end);
                    }
                }
                Err(_) => {
                    return Err(RegionError::Other(format!(
                        "bad command type {}",
                        req.cmd_type
                    )))
                }
            }
        }
        Ok(())
    }

    fn apply_admin(
        &mut self,
        d: &mut Delegate,
        admin: AdminRequest,
        index: u64,
        results: &mut Vec<ExecResult>,
        regions: &mut Regions<'_>,
    ) -> Result<(), RegionError> {
        let cmd_type = AdminCmdType::try_from(admin.cmd_type);
        if d.merge_state.is_some() && cmd_type != Ok(AdminCmdType::RollbackMerge) {
            // Nothing but the merge's end changes a merging region (a log compaction included:
            // CommitMerge is built from the log after the merge's lowest index).
            return Err(RegionError::ProposalInMergingMode(d.region.id));
        }
        match cmd_type {
            Ok(AdminCmdType::CompactLog) => {
                let req = admin.compact_log.unwrap_or_default();
                if req.compact_index <= d.apply_state.truncated_index {
                    return Ok(());
                }
                d.apply_state.truncated_index = req.compact_index;
                d.apply_state.truncated_term = req.compact_term;
                // The log will be cut once this is durable: the data below it must be too.
                self.sync = true;
                results.push(ExecResult::CompactLog {
                    index: req.compact_index,
                    term: req.compact_term,
                });
                Ok(())
            }
            Ok(AdminCmdType::BatchSplit) => self.apply_split(d, admin, results),
            Ok(AdminCmdType::PrepareMerge) => self.apply_prepare_merge(d, admin, index, results),
            Ok(AdminCmdType::CommitMerge) => {
                let req = admin.commit_merge.unwrap_or_default();
                self.apply_commit_merge(d, req, results, regions)
            }
            Ok(AdminCmdType::RollbackMerge) => self.apply_rollback_merge(d, admin, results),
            _ => Err(RegionError::Other(format!(
                "unknown admin command {}",
                admin.cmd_type
            ))),
        }
    }

    fn apply_split(
        &mut self,
        d: &mut Delegate,
        admin: AdminRequest,
        results: &mut Vec<ExecResult>,
    ) -> Result<(), RegionError> {
        fail_point_at!(self.store_id, "split_before_apply");
        let splits = admin.splits.unwrap_or_default();
        let mut prev = d.region.start_key.clone();
        for s in &splits.requests {
            let inside = s.split_key > prev && key_in_region(&s.split_key, &d.region);
            if !inside || s.new_peer_ids.len() != d.region.peers.len() {
                return Err(RegionError::Other(format!(
                    "region {}: invalid split key or peer ids",
                    d.region.id
                )));
            }
            prev = s.split_key.clone();
        }
        if splits.requests.is_empty() {
            return Err(RegionError::Other("empty split".into()));
        }
        let mut epoch = epoch_of(&d.region);
        epoch.version += splits.requests.len() as u64;
        let mut regions = Vec::with_capacity(splits.requests.len() + 1);
        let mut start = d.region.start_key.clone();
        let mut derived = d.region.clone();
        for s in &splits.requests {
            let mut r = d.region.clone();
            r.start_key = start;
            r.end_key = s.split_key.clone();
            regions.push(r);
            start = s.split_key.clone();
        }
        let mut last = d.region.clone();
        last.start_key = start;
        regions.push(last);
        // regions[0] keeps the original id; the others take the new ids and peer ids.
        for (i, s) in splits.requests.iter().enumerate() {
            let r = &mut regions[i + 1];
            r.id = s.new_region_id;
            for (p, new_id) in r.peers.iter_mut().zip(&s.new_peer_ids) {
                p.id = *new_id;
            }
        }
        for r in regions.iter_mut() {
            r.region_epoch = Some(epoch);
        }
        derived.start_key = regions[0].start_key.clone();
        derived.end_key = regions[0].end_key.clone();
        derived.region_epoch = Some(epoch);
        for r in &regions[1..] {
            write_initial_region(&mut self.wb, r);
            self.new_regions.push((r.clone(), init_apply_state()));
        }
        let state = RegionLocalState {
            state: PeerState::Normal as i32,
            region: Some(derived.clone()),
            merge_state: None,
        };
        self.wb.put_cf(
            CF_RAFT,
            &codec::keys::region_state_key(derived.id),
            &state.encode_to_vec(),
        );
        d.region = derived.clone();
        self.has_split = true;
        results.push(ExecResult::Split { derived, regions });
        Ok(())
    }

    /// PrepareMerge (source): the region takes nothing more but the merge's end; its epoch rises
    /// in both dimensions so that every command proposed before it fails.
    fn apply_prepare_merge(
        &mut self,
        d: &mut Delegate,
        admin: AdminRequest,
        index: u64,
        results: &mut Vec<ExecResult>,
    ) -> Result<(), RegionError> {
        let req = admin.prepare_merge.unwrap_or_default();
        let target = req
            .target
            .ok_or_else(|| RegionError::Other("PrepareMerge without target".into()))?;
        if !adjacent(&d.region, &target) {
            return Err(RegionError::Other(format!(
                "region {}: merge target {} is not adjacent",
                d.region.id, target.id
            )));
        }
        let mut region = d.region.clone();
        let mut epoch = epoch_of(&region);
        epoch.version += 1;
        epoch.conf_ver += 1;
        region.region_epoch = Some(epoch);
        let state = MergeState {
            min_index: req.min_index,
            commit: index,
            target: Some(target),
        };
        put_region_state(
            &mut self.wb,
            &region,
            PeerState::Merging,
            Some(state.clone()),
        );
        d.region = region.clone();
        d.merge_state = Some(state.clone());
        results.push(ExecResult::PrepareMerge { region, state });
        Ok(())
    }

    /// CommitMerge (target): this store's source peer is brought up to its PrepareMerge entry,
    /// then the target takes over the source's range and the source is tombstoned, in one
    /// synced batch.
    fn apply_commit_merge(
        &mut self,
        d: &mut Delegate,
        req: CommitMergeRequest,
        results: &mut Vec<ExecResult>,
        regions: &mut Regions<'_>,
    ) -> Result<(), RegionError> {
        let source = req
            .source
            .clone()
            .ok_or_else(|| RegionError::Other("CommitMerge without source".into()))?;
        if !adjacent(&source, &d.region) {
            return Err(RegionError::Other(format!(
                "region {}: merge source {} is not adjacent",
                d.region.id, source.id
            )));
        }
        // The target's epoch matched the one the source recorded at PrepareMerge, so its peers
        // are on the source's stores: this store has the source's peer.
        let Some(mut s) = regions.delegates.remove(&source.id) else {
            panic!(
                "region {}: CommitMerge of region {}, which this store does not hold",
                d.region.id, source.id
            );
        };
        if s.apply_state.applied_index < req.commit {
            let entries = catch_up_entries(&s, &req, regions.raft_log);
            tracing::info!(
                region_id = source.id,
                from = s.apply_state.applied_index,
                to = req.commit,
                "merge source catching up"
            );
            self.apply(&mut s, entries, vec![], regions);
        }
        if s.merge_state.as_ref().map(|m| m.commit) != Some(req.commit) {
            panic!(
                "region {}: merge source {} is not merging at {} after catching up ({:?})",
                d.region.id, source.id, req.commit, s.merge_state
            );
        }
        let mut region = d.region.clone();
        if source.end_key == region.start_key {
            region.start_key = source.start_key.clone();
        } else {
            region.end_key = source.end_key.clone();
        }
        let mut epoch = epoch_of(&region);
        epoch.version = epoch.version.max(epoch_of(&s.region).version) + 1;
        region.region_epoch = Some(epoch);
        put_region_state(&mut self.wb, &region, PeerState::Normal, None);
        put_region_state(&mut self.wb, &s.region, PeerState::Tombstone, None);
        self.wb
            .delete_cf(CF_RAFT, &codec::keys::apply_state_key(source.id));
        // The poller cleans the source's raft log once it reads this report: the tombstone must
        // be durable first.
        self.sync = true;
        regions.merged.insert(source.id);
        d.region = region.clone();
        results.push(ExecResult::CommitMerge {
            region,
            source: s.region,
        });
        Ok(())
    }

    /// RollbackMerge (source): the region serves again, under a higher version.
    fn apply_rollback_merge(
        &mut self,
        d: &mut Delegate,
        admin: AdminRequest,
        results: &mut Vec<ExecResult>,
    ) -> Result<(), RegionError> {
        let req = admin.rollback_merge.unwrap_or_default();
        if d.merge_state.as_ref().map(|m| m.commit) != Some(req.commit) {
            return Err(RegionError::Other(format!(
                "region {}: no merge at {} to roll back",
                d.region.id, req.commit
            )));
        }
        let mut region = d.region.clone();
        let mut epoch = epoch_of(&region);
        epoch.version += 1;
        region.region_epoch = Some(epoch);
        put_region_state(&mut self.wb, &region, PeerState::Normal, None);
        d.region = region.clone();
        d.merge_state = None;
        results.push(ExecResult::RollbackMerge { region });
        Ok(())
    }

    fn apply_conf_change(
        &mut self,
        d: &mut Delegate,
        entry: &Entry,
        results: &mut Vec<ExecResult>,
    ) -> Result<(), RegionError> {
        let cc: ConfChange = protobuf::Message::parse_from_bytes(entry.data.as_ref())
            .unwrap_or_else(|e| {
                panic!(
                    "region {}: bad conf change at {}: {e}",
                    d.region.id, entry.index
                )
            });
        if d.merge_state.is_some() {
            return Err(RegionError::ProposalInMergingMode(d.region.id));
        }
        let ctx = ChangePeerRequest::decode(cc.context.as_ref()).unwrap_or_default();
        let Some(peer) = ctx.peer else {
            return Err(RegionError::Other("conf change without peer".into()));
        };
        let region = &mut d.region;
        let pos = region.peers.iter().position(|p| p.id == peer.id);
        match cc.get_change_type() {
            ConfChangeType::AddNode => match pos {
                Some(i) => region.peers[i].role = metapb::PeerRole::Voter as i32,
                None => region.peers.push(metapb::Peer {
                    role: metapb::PeerRole::Voter as i32,
                    ..peer
                }),
            },
            ConfChangeType::AddLearnerNode => {
                if pos.is_none() {
                    region.peers.push(metapb::Peer {
                        role: metapb::PeerRole::Learner as i32,
                        ..peer
                    });
                }
            }
            ConfChangeType::RemoveNode => {
                if let Some(i) = pos {
                    region.peers.remove(i);
                }
            }
        }
        let mut epoch = epoch_of(region);
        epoch.conf_ver += 1;
        region.region_epoch = Some(epoch);
        let state = RegionLocalState {
            state: PeerState::Normal as i32,
            region: Some(region.clone()),
            merge_state: None,
        };
        self.wb.put_cf(
            CF_RAFT,
            &codec::keys::region_state_key(region.id),
            &state.encode_to_vec(),
        );
        results.push(ExecResult::ChangePeer {
            cc,
            region: region.clone(),
        });
        Ok(())
    }

    /// Writes the round's batch, then answers clients and reports to the poller.
    fn flush(&mut self, kv: &dyn KvEngine, poller: &Sender<ControlMsg>) {
        if !self.wb.is_empty() {
            fail_point_at!(self.store_id, "apply_before_write");
            if let Err(e) = kv.write(&self.wb, self.sync) {
                // Applied state cannot fall behind silently: the raft log still has the entries,
                // and a restart re-applies them.
                panic!("apply: engine write failed: {e}");
            }
            fail_point_at!(self.store_id, "apply_after_write");
            if self.has_split {
                fail_point_at!(self.store_id, "split_after_apply");
            }
            self.wb.clear();
        }
        self.sync = false;
        self.has_split = false;
        for (cb, r) in self.callbacks.drain(..) {
            cb(r);
        }
        for res in self.reports.drain(..) {
            let _ = poller.send(ControlMsg::ApplyRes(Box::new(res)));
        }
    }
}

/// Whether two regions' ranges meet end to start (either way round).
fn adjacent(a: &metapb::Region, b: &metapb::Region) -> bool {
    (!a.end_key.is_empty() && a.end_key == b.start_key)
        || (!b.end_key.is_empty() && b.end_key == a.start_key)
}

fn put_region_state(
    wb: &mut WriteBatch,
    region: &metapb::Region,
    state: PeerState,
    merge_state: Option<MergeState>,
) {
    let state = RegionLocalState {
        state: state as i32,
        region: Some(region.clone()),
        merge_state,
    };
    wb.put_cf(
        CF_RAFT,
        &codec::keys::region_state_key(region.id),
        &state.encode_to_vec(),
    );
}

/// The source entries a lagging source peer has not applied, up to the PrepareMerge entry:
/// those up to the merge's lowest index are in this store's raft log (every peer had them when
/// PrepareMerge was proposed, and they were committed), the rest travel with CommitMerge.
fn catch_up_entries(
    s: &Delegate,
    req: &CommitMergeRequest,
    raft_log: &dyn RaftLogStore,
) -> Vec<Entry> {
    let carried: Vec<Entry> = req
        .entries
        .iter()
        .map(|b| {
            protobuf::Message::parse_from_bytes(b)
                .unwrap_or_else(|e| panic!("region {}: bad merge entry: {e}", s.region.id))
        })
        .collect();
    let min_index = carried.first().map_or(req.commit, |e: &Entry| e.index - 1);
    let mut out = Vec::new();
    for index in s.apply_state.applied_index + 1..=req.commit {
        let entry = if index > min_index {
            carried.get((index - min_index - 1) as usize).cloned()
        } else {
            raft_log.entry(s.region.id, index).ok().flatten()
        };
        match entry {
            Some(e) if e.index == index => out.push(e),
            _ => panic!(
                "region {}: merge entry {index} is missing (applied {}, commit {})",
                s.region.id, s.apply_state.applied_index, req.commit
            ),
        }
    }
    out
}

fn epoch_error(d: &Delegate) -> RegionError {
    RegionError::EpochNotMatch {
        message: format!(
            "region {} epoch changed while the command was in flight",
            d.region.id
        ),
        current_regions: vec![d.region.clone()],
    }
}

/// Maps a protocol CF name ("" is default) to the engine's.
pub fn cf_by_name(name: &str) -> Option<engine::CfName> {
    match name {
        "" | "default" => Some(engine::CF_DEFAULT),
        "lock" => Some(engine::CF_LOCK),
        "write" => Some(engine::CF_WRITE),
        _ => None,
    }
}

fn clear_range(wb: &mut WriteBatch, region: &metapb::Region) {
    let start = codec::keys::data_key(&region.start_key);
    let end = codec::keys::data_end_key(&region.end_key);
    for cf in DATA_CFS {
        wb.delete_range_cf(cf, &start, &end);
    }
}

#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn apply_snapshot(
    store_id: u64,
    kv: &dyn KvEngine,
    delegates: &mut HashMap<u64, Delegate>,
    region_id: u64,
    data: SnapshotData,
) -> Result<(), String> {
    let region_state = data.region_state.ok_or("snapshot without region state")?;
    let region = region_state
        .region
        .clone()
        .ok_or("snapshot without region")?;
    let apply_state = data.apply_state.ok_or("snapshot without apply state")?;
    let mut wb = WriteBatch::default();
    if let Some(old) = delegates.get(&region_id) {
        if !old.region.peers.is_empty() {
            clear_range(&mut wb, &old.region);
        }
    }
    clear_range(&mut wb, &region);
    for cf_data in &data.cfs {
        let cf = cf_by_name(&cf_data.cf)
            .ok_or_else(|| format!("snapshot has unknown cf {}", cf_data.cf))?;
        for (k, v) in cf_data.keys.iter().zip(&cf_data.values) {
            wb.put_cf(cf, k, v);
        }
    }
    let state = RegionLocalState {
        state: PeerState::Normal as i32,
        region: Some(region.clone()),
        merge_state: None,
    };
    wb.put_cf(
        CF_RAFT,
        &codec::keys::region_state_key(region_id),
        &state.encode_to_vec(),
    );
    let new_apply = RaftApplyState {
        truncated_index: apply_state.applied_index,
        truncated_term: apply_state.applied_term,
        ..apply_state
    };
    wb.put_cf(
        CF_RAFT,
        &codec::keys::apply_state_key(region_id),
        &new_apply.encode_to_vec(),
    );
    fail_point_at!(store_id, "snapshot_before_apply");
    kv.write(&wb, true).map_err(|e| e.to_string())?;
    fail_point_at!(store_id, "snapshot_after_apply");
    delegates.insert(
        region_id,
        Delegate {
            region,
            apply_state: new_apply,
            merge_state: None,
        },
    );
    Ok(())
}

fn destroy(
    kv: &dyn KvEngine,
    delegates: &mut HashMap<u64, Delegate>,
    region_id: u64,
    clear_data: bool,
    tombstone_epoch: metapb::RegionEpoch,
) {
    let Some(d) = delegates.remove(&region_id) else {
        return;
    };
    let mut wb = WriteBatch::default();
    if clear_data && !d.region.peers.is_empty() {
        clear_range(&mut wb, &d.region);
    }
    // The tombstone keeps the newest epoch this store has heard of for the region, so that no
    // message from before the peer's removal can bring it back (see `util::merge_epochs`).
    let mut region = d.region.clone();
    region.region_epoch = Some(merge_epochs(&epoch_of(&region), &tombstone_epoch));
    let state = RegionLocalState {
        state: PeerState::Tombstone as i32,
        region: Some(region),
        merge_state: None,
    };
    wb.put_cf(
        CF_RAFT,
        &codec::keys::region_state_key(region_id),
        &state.encode_to_vec(),
    );
    wb.delete_cf(CF_RAFT, &codec::keys::apply_state_key(region_id));
    if let Err(e) = kv.write(&wb, true) {
        panic!("apply: destroying region {region_id} failed: {e}");
    }
}
