//! One region's peer on this store: its raft-rs `RawNode`, its proposals in flight, its
//! pending reads, and what it last measured about its region.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use engine::KvEngine;
use prost::Message as _;
use proto::flotillapb::{CmdType, RaftCmdRequest, Request};
use proto::{metapb, pdpb};
use raft::eraftpb::ConfChangeType;
use raft::{RawNode, StateRole};

use crate::apply::Proposal;
use crate::config::StoreConfig;
use crate::lease::{self, Lease, ReadDelegate};
use crate::msg::{
    DataModify, ReadCallback, ReadResponse, RegionError, RegionInfo, RequestHeader, WriteCallback,
};
use crate::peer_storage::PeerStorage;
use crate::util::{epoch_of, find_peer_by_id, is_epoch_stale, key_in_region};

/// A batch of reads sharing one ReadIndex request: waiting for raft-rs to confirm the index
/// with a quorum, then for the apply thread to reach it.
pub struct PendingRead {
    /// Identifies the batch in raft-rs's read states.
    pub id: u64,
    /// The read index, once raft-rs has confirmed it.
    pub read_index: Option<u64>,
    /// When the ReadIndex was sent (lease clock): its confirmation renews the lease from here.
    pub sent_ns: u64,
    /// The readers.
    pub cbs: Vec<ReadCallback>,
}

/// A Ready that carries a snapshot, parked in its peer while the apply thread writes the
/// snapshot's data. The peer's raft state moves on only once the data is durable: the poller
/// does not call `ready()` on the peer again until then (it keeps stepping its messages).
pub struct PendingSnapshot {
    /// The Ready, its leader messages already sent.
    pub ready: raft::Ready,
    /// The region as the snapshot describes it.
    pub region: metapb::Region,
    /// Whether the apply thread has reported the data written.
    pub applied: bool,
}

/// A proposal made while this leader hands its leadership over. raft-rs would drop it (it takes
/// no proposal while a transfer runs), and the answer "not leader" naming this peer would send
/// the official client straight back here, using up its retries within milliseconds. It waits
/// instead, for at most the transfer's bound of an election timeout, and then is proposed (the
/// transfer was given up) or answered "not leader" naming the new leader.
pub struct HeldProposal {
    /// The command, as it would have been proposed.
    pub cmd: RaftCmdRequest,
    /// The term it was checked against (a transactional write's read view belongs to it).
    pub term: u64,
    /// Its caller.
    pub cb: WriteCallback,
}

/// How far behind the leader's log a peer may be and still be handed the leadership on
/// PD's request (TiKV's `leader-transfer-max-log-lag`).
pub const TRANSFER_LEADER_MAX_LOG_LAG: u64 = 128;

/// One peer of a region.
pub struct Peer {
    /// The raft state machine with its storage.
    pub raw: RawNode<PeerStorage>,
    /// This store's peer.
    pub meta: metapb::Peer,
    /// Proposals in flight, in log order.
    pub proposals: VecDeque<Proposal>,
    /// Proposals waiting for a leader transfer to end (see [`HeldProposal`]).
    pub held: VecDeque<HeldProposal>,
    /// The peer this leader last handed its leadership to, until the transfer is given up or
    /// a leader is known: named as the leader (see [`Peer::not_leader`]) while this peer,
    /// having stepped down for it, has not heard from the new leader yet.
    pub transfer_target: Option<u64>,
    /// Reads submitted to raft-rs, in order.
    pub reads: VecDeque<PendingRead>,
    /// Reads not yet submitted: they go out together at the end of the poller's message
    /// handling (one ReadIndex per region per round), once the leader has committed in its term.
    pub waiting_reads: Vec<ReadCallback>,
    /// Bytes of data in the region, as last measured.
    pub approximate_size: u64,
    /// Keys in the region, as last measured.
    pub approximate_keys: u64,
    /// Bytes written since the last split check.
    pub written_since_check: u64,
    /// The tick at which a split started being arranged (ids asked of PD, or proposed).
    pub splitting: Option<u64>,
    /// Ticks each follower has spent in snapshot state.
    pub snapshot_ticks: HashMap<u64, u64>,
    /// The last leader seen, to notice changes.
    pub last_leader_id: u64,
    /// Peers this peer has heard from, so it can answer them before it knows the region
    /// (an uninitialized peer has no member list yet).
    pub peer_cache: HashMap<u64, metapb::Peer>,
    /// The poller tick at which each peer was last heard from.
    pub peer_heard: HashMap<u64, u64>,
    /// The tick at which this peer last became leader (peers not heard from since count from it).
    pub leader_since: u64,
    /// The poller tick at which this peer last heard from a leader (or led). A peer silent for
    /// `stale_peer_check_ticks` asks PD whether it is still a member.
    pub leader_heard_tick: u64,
    /// A snapshot being written by the apply thread, with the Ready that carried it.
    pub pending_snapshot: Option<PendingSnapshot>,
    /// The tick at which this leader proposed PrepareMerge, until it is applied or fails:
    /// meanwhile the region takes no proposals or reads.
    pub merge_proposed: Option<u64>,
    /// The tick of this leader's last step towards ending a merge (CommitMerge or
    /// RollbackMerge proposed, leadership handed over), to pace the retries.
    pub merge_action_tick: Option<u64>,
    /// This leader's lease, shared with its read delegate (see `lease.rs`).
    pub lease: Arc<Lease>,
    /// The lease is not renewed until the applied index reaches this (a conf change, split or
    /// merge proposed at it changes the quorum or the range).
    pub lease_blocked_until: u64,
    /// Consecutive ticks this leader has been idle (see [`Peer::is_idle_leader`]); it
    /// hibernates at `hibernate_idle_ticks`.
    pub idle_ticks: u64,
    /// Whether this leader is in the poller's rotation of hibernated leaders' PD heartbeats.
    pub in_pd_rotation: bool,
    /// The tick at which PD last answered a heartbeat with an operator step. PD answers only
    /// when it has a step, so the leader stays awake (heartbeating PD at the awake pace) for
    /// two heartbeat intervals after one: the operator's next step is not held back by the
    /// hibernated pace.
    pub operator_step_tick: Option<u64>,
}

impl Peer {
    /// The region as this peer knows it.
    pub fn region(&self) -> &metapb::Region {
        &self.raw.store().region
    }

    /// Whether the region is merging into another (PrepareMerge proposed here or applied).
    pub fn is_merging(&self) -> bool {
        self.merge_proposed.is_some() || self.raw.store().merge_state.is_some()
    }

    /// Extends the lease to what a quorum's acknowledgement of a message sent at `sent_ns`
    /// (lease clock) grants, unless a leader transfer, a merge or an admin command in flight
    /// forbids it.
    pub fn renew_lease(&mut self, sent_ns: u64, lease: Option<Duration>) {
        let Some(lease) = lease else { return };
        if !self.is_leader()
            || self.raw.raft.lead_transferee.is_some()
            || self.is_merging()
            || self.raw.store().apply_state.applied_index < self.lease_blocked_until
        {
            return;
        }
        self.lease.extend_to(sent_ns + lease.as_nanos() as u64);
    }

    /// Revokes the lease until the entry at `index` is applied.
    fn block_lease_until(&mut self, index: u64) {
        self.lease.revoke();
        self.lease_blocked_until = self.lease_blocked_until.max(index);
    }

    /// Hands leadership to `peer_id`. The transferee campaigns at once, ignoring the other
    /// peers' leases, so this leader's lease ends first.
    pub fn transfer_leader(&mut self, peer_id: u64) {
        self.lease.revoke();
        self.transfer_target = Some(peer_id);
        self.raw.transfer_leader(peer_id);
    }

    /// Whether `peer_id` can take the leadership at once: it holds this term's log up to
    /// [`TRANSFER_LEADER_MAX_LOG_LAG`] entries and no snapshot is on its way to it. While a
    /// transfer runs, raft drops every proposal; to a peer that is behind (cut off, or the
    /// peer of a region just split that its store has not created yet) that lasts until the
    /// transfer is given up, an election timeout, longer than the official client's
    /// backoff on `NotLeader`. PD sends the transfer again on a later heartbeat.
    fn ready_to_transfer_leader(&self, peer_id: u64) -> bool {
        let raft = &self.raw.raft;
        let Some(pr) = raft.prs().get(peer_id) else {
            return false;
        };
        pr.state != raft::ProgressState::Snapshot
            && raft.raft_log.term(pr.matched).is_ok_and(|t| t == raft.term)
            && raft.raft_log.last_index() <= pr.matched + TRANSFER_LEADER_MAX_LOG_LAG
    }

    /// Whether this peer leads its region.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader as a peer, if known.
    pub fn leader(&self) -> Option<metapb::Peer> {
        self.peer_by_id(self.raw.raft.leader_id)
    }

    /// A peer of the region by id, from the region or from the peers heard from.
    pub fn peer_by_id(&self, id: u64) -> Option<metapb::Peer> {
        find_peer_by_id(self.region(), id)
            .cloned()
            .or_else(|| self.peer_cache.get(&id).cloned())
    }

    /// "Not leader", naming the leader if another peer is known to lead, else the target of
    /// the leader transfer that just ended (it most likely won). Never this peer: the official
    /// client would come straight back, using up its retries within milliseconds.
    pub fn not_leader(&self) -> RegionError {
        let leader = self
            .leader()
            .or_else(|| self.transfer_target.and_then(|id| self.peer_by_id(id)));
        RegionError::NotLeader {
            region_id: self.region().id,
            leader: leader.filter(|l| l.id != self.meta.id),
        }
    }

    /// Checks that a client request can be served here: the addressed peer, leadership, epoch.
    pub fn check_request(&self, header: &RequestHeader) -> Result<(), RegionError> {
        if !self.raw.store().is_initialized() {
            return Err(RegionError::RegionNotInitialized(self.region().id));
        }
        if let Some(p) = &header.peer {
            if p.id != 0 && p.id != self.meta.id {
                return Err(RegionError::MismatchPeerId {
                    region_id: self.region().id,
                    request_peer_id: p.id,
                    store_peer_id: self.meta.id,
                });
            }
        }
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        if header.term.is_some_and(|t| t != self.raw.raft.term) {
            return Err(RegionError::StaleCommand);
        }
        if self.is_merging() {
            return Err(RegionError::ProposalInMergingMode(self.region().id));
        }
        if let Some(req) = &header.region_epoch {
            let cur = epoch_of(self.region());
            if req.version != cur.version {
                return Err(RegionError::EpochNotMatch {
                    message: format!("request epoch {:?}, region epoch {:?}", req, cur),
                    current_regions: vec![self.region().clone()],
                });
            }
        }
        Ok(())
    }

    /// Proposes a client write.
    pub fn propose_write(
        &mut self,
        cfg: &StoreConfig,
        header: &RequestHeader,
        modifies: Vec<DataModify>,
        cb: WriteCallback,
    ) {
        if let Err(e) = self.check_request(header) {
            return cb(Err(e));
        }
        let in_flight = self.proposals.len() + self.held.len();
        if in_flight >= cfg.region_pending_proposals_max {
            return cb(Err(RegionError::ServerIsBusy(format!(
                "region {} has {in_flight} proposals in flight",
                self.region().id,
            ))));
        }
        let mut requests = Vec::with_capacity(modifies.len());
        for m in modifies {
            let (cmd, cf, key, value, end) = match m {
                DataModify::Put { cf, key, value } => (CmdType::Put, cf, key, value, vec![]),
                DataModify::Delete { cf, key } => (CmdType::Delete, cf, key, vec![], vec![]),
                DataModify::DeleteRange { cf, start, end } => {
                    (CmdType::DeleteRange, cf, start, vec![], end)
                }
            };
            let inside = key_in_region(&key, self.region())
                || (cmd == CmdType::DeleteRange && key < self.region().start_key);
            if !inside {
                return cb(Err(RegionError::KeyNotInRegion {
                    key,
                    region: Box::new(self.region().clone()),
                }));
            }
            requests.push(Request {
                cmd_type: cmd as i32,
                cf: cf.to_string(),
                key,
                value,
                end_key: end,
            });
        }
        let cmd = RaftCmdRequest {
            region_id: self.region().id,
            peer_id: self.meta.id,
            region_epoch: Some(epoch_of(self.region())),
            requests,
            admin: None,
        };
        self.propose_cmd(cfg, cmd, cb);
    }

    /// Proposes a command; the callback learns how it ended. While a leader transfer runs
    /// the command is held (see [`HeldProposal`]).
    pub fn propose_cmd(&mut self, cfg: &StoreConfig, cmd: RaftCmdRequest, cb: WriteCallback) {
        let data = cmd.encode_to_vec();
        if data.len() as u64 > cfg.raft_entry_max_bytes {
            return cb(Err(RegionError::RaftEntryTooLarge {
                region_id: self.region().id,
                entry_size: data.len() as u64,
            }));
        }
        if self.is_leader() && self.raw.raft.lead_transferee.is_some() {
            let term = self.raw.raft.term;
            self.held.push_back(HeldProposal { cmd, term, cb });
            return;
        }
        let last_before = self.raw.raft.raft_log.last_index();
        let dropped = self.raw.propose(vec![], data).is_err()
            || self.raw.raft.raft_log.last_index() == last_before;
        if dropped {
            // Not by a transfer (held above): this peer does not lead, or raft-rs refused for
            // its own reasons.
            return cb(Err(self.not_leader()));
        }
        let index = self.raw.raft.raft_log.last_index();
        if cmd_changes_quorum_or_range(&cmd) {
            self.block_lease_until(index);
        }
        self.proposals.push_back(Proposal {
            index,
            term: self.raw.raft.term,
            proposed_ns: lease::now_ns(),
            cb,
        });
    }

    /// Once the leader transfer that held proposals has ended: proposes them if this peer still
    /// leads in the term they were checked against (the transfer was given up), or answers
    /// them "not leader" (see [`Peer::not_leader`]). Called at
    /// every poller round for the regions touched; a transfer ends only in a step or a tick,
    /// both of which touch the region.
    pub fn release_held_proposals(&mut self, cfg: &StoreConfig) {
        if self.raw.raft.lead_transferee.is_some() {
            return;
        }
        if self.is_leader() {
            // Given up (or never started): the target is nobody's leader.
            self.transfer_target = None;
        }
        if self.held.is_empty() {
            return;
        }
        let not_leader = self.not_leader();
        for h in std::mem::take(&mut self.held) {
            if self.is_leader() && self.raw.raft.term == h.term {
                self.propose_cmd(cfg, h.cmd, h.cb);
            } else {
                (h.cb)(Err(not_leader.clone()));
            }
        }
    }

    /// Queues a linearizable read; [`Peer::submit_waiting_reads`] sends it.
    pub fn read(&mut self, cfg: &StoreConfig, header: &RequestHeader, cb: ReadCallback) {
        if let Err(e) = self.check_request(header) {
            return cb(Err(e));
        }
        let pending: usize =
            self.reads.iter().map(|r| r.cbs.len()).sum::<usize>() + self.waiting_reads.len();
        if pending >= cfg.region_pending_reads_max {
            return cb(Err(RegionError::ServerIsBusy(format!(
                "region {} has too many reads pending",
                self.region().id
            ))));
        }
        self.waiting_reads.push(cb);
    }

    /// A read view for computing a write (a transactional command), without a ReadIndex round.
    ///
    /// Safe because the write it feeds is proposed with the view's term (see
    /// [`RequestHeader::term`]) and only applies if committed in that term: every entry before
    /// it is then either from an earlier term, which this leader has applied (checked here:
    /// the applied term is the current one), or this leader's own proposal, which the caller's
    /// latches have waited for when it touches the same keys. A deposed leader's proposal never
    /// commits in its old term after a new leader wrote. Until the current term's first entry
    /// is applied, the read goes the ReadIndex way, which waits for it.
    pub fn write_view(
        &mut self,
        cfg: &StoreConfig,
        header: &RequestHeader,
        kv: &Arc<dyn KvEngine>,
        cb: ReadCallback,
    ) {
        if let Err(e) = self.check_request(header) {
            return cb(Err(e));
        }
        if self.raw.store().apply_state.applied_term != self.raw.raft.term {
            return self.read(cfg, header, cb);
        }
        cb(Ok(ReadResponse {
            snapshot: kv.snapshot(),
            region: self.region().clone(),
            term: self.raw.raft.term,
        }))
    }

    /// Sends one ReadIndex for every queued read. raft-rs (safe mode) confirms the index with a
    /// heartbeat quorum, so a deposed leader that has not noticed yet never serves a read.
    /// Waits while the leader has not committed an entry in its term (raft-rs would drop it).
    pub fn submit_waiting_reads(&mut self, id: u64) -> bool {
        if self.waiting_reads.is_empty()
            || !self.is_leader()
            || !self.raw.raft.commit_to_current_term()
        {
            return false;
        }
        let sent_ns = lease::now_ns();
        self.raw.read_index(id.to_be_bytes().to_vec());
        let cbs = std::mem::take(&mut self.waiting_reads);
        self.reads.push_back(PendingRead {
            id,
            read_index: None,
            sent_ns,
            cbs,
        });
        true
    }

    /// Records a read index raft-rs confirmed: a quorum answered the heartbeat sent with it,
    /// which renews the lease from when it was sent.
    pub fn on_read_state(&mut self, ctx: &[u8], index: u64, lease: Option<Duration>) {
        let Ok(bytes) = <[u8; 8]>::try_from(ctx) else {
            return;
        };
        let id = u64::from_be_bytes(bytes);
        let mut sent = None;
        if let Some(r) = self.reads.iter_mut().find(|r| r.id == id) {
            r.read_index = Some(index);
            sent = Some(r.sent_ns);
        }
        if let Some(sent_ns) = sent {
            self.renew_lease(sent_ns, lease);
        }
    }

    /// The read delegate to publish for gRPC threads, while this peer may serve local reads:
    /// it leads, has applied an entry of its term (so everything an earlier leader
    /// acknowledged), holds its data and is not merging.
    pub fn read_delegate(&self) -> Option<ReadDelegate> {
        let ready = self.is_leader()
            && self.raw.store().is_initialized()
            && self.raw.store().apply_state.applied_term == self.raw.raft.term
            && self.pending_snapshot.is_none()
            && !self.is_merging();
        ready.then(|| ReadDelegate {
            region: self.region().clone(),
            peer_id: self.meta.id,
            term: self.raw.raft.term,
            lease: self.lease.clone(),
        })
    }

    /// Answers every read whose index the apply thread has reached.
    pub fn serve_ready_reads(&mut self, kv: &Arc<dyn KvEngine>) {
        if self.raw.store().merge_state.is_some() {
            // Once merging, the range may soon be written through the target: a read here
            // could miss those writes.
            let id = self.region().id;
            return self.fail_reads(RegionError::ProposalInMergingMode(id));
        }
        let applied = self.raw.store().apply_state.applied_index;
        let mut snapshot = None;
        while let Some(front) = self.reads.front() {
            match front.read_index {
                Some(idx) if idx <= applied => {}
                _ => break,
            }
            let r = self.reads.pop_front().expect("front");
            let snap = snapshot.get_or_insert_with(|| kv.snapshot()).clone();
            for cb in r.cbs {
                cb(Ok(ReadResponse {
                    snapshot: snap.clone(),
                    region: self.region().clone(),
                    term: self.raw.raft.term,
                }));
            }
        }
    }

    /// Fails every read in flight (leadership lost, or the peer is going away).
    pub fn fail_reads(&mut self, err: RegionError) {
        for cb in self
            .reads
            .drain(..)
            .flat_map(|r| r.cbs)
            .chain(self.waiting_reads.drain(..))
        {
            cb(Err(err.clone()));
        }
    }

    /// Fails every proposal in flight, and every held one.
    pub fn fail_proposals(&mut self, err: RegionError) {
        for p in self.proposals.drain(..) {
            (p.cb)(Err(err.clone()));
        }
        for h in self.held.drain(..) {
            (h.cb)(Err(err.clone()));
        }
    }

    /// Acts on PD's answer to a heartbeat: a membership change or a leader transfer (neither
    /// while the region merges).
    pub fn on_heartbeat_response(&mut self, resp: &pdpb::RegionHeartbeatResponse) {
        if !self.is_leader() {
            return;
        }
        if let Some(epoch) = &resp.region_epoch {
            if is_epoch_stale(epoch, &epoch_of(self.region())) {
                return;
            }
        }
        if let Some(cp) = &resp.change_peer {
            if !self.is_merging() {
                self.propose_change_peer(cp);
            }
        } else if let Some(tl) = &resp.transfer_leader {
            // A merging source's leadership goes where the merge needs it (the target leader's
            // store); a balancing transfer would undo that, and the next one again, forever.
            if self.is_merging() {
                return;
            }
            if let Some(p) = &tl.peer {
                if p.id != self.meta.id
                    && find_peer_by_id(self.region(), p.id).is_some()
                    && self.ready_to_transfer_leader(p.id)
                {
                    self.transfer_leader(p.id);
                }
            }
        }
    }

    fn propose_change_peer(&mut self, cp: &pdpb::ChangePeer) {
        let Some(peer) = cp.peer else { return };
        if self.raw.raft.has_pending_conf() || peer.id == self.meta.id {
            return;
        }
        let change_type = match proto::eraftpb::ConfChangeType::try_from(cp.change_type) {
            Ok(proto::eraftpb::ConfChangeType::AddNode) => ConfChangeType::AddNode,
            Ok(proto::eraftpb::ConfChangeType::AddLearnerNode) => ConfChangeType::AddLearnerNode,
            Ok(proto::eraftpb::ConfChangeType::RemoveNode) => ConfChangeType::RemoveNode,
            Err(_) => return,
        };
        let existing = find_peer_by_id(self.region(), peer.id);
        let useful = match change_type {
            ConfChangeType::AddNode => {
                existing.is_none_or(|p| p.role == metapb::PeerRole::Learner as i32)
            }
            ConfChangeType::AddLearnerNode => existing.is_none(),
            ConfChangeType::RemoveNode => existing.is_some(),
        };
        if !useful {
            return;
        }
        let ctx = proto::flotillapb::ChangePeerRequest {
            change_type: cp.change_type,
            peer: Some(peer),
        };
        let mut cc = raft::eraftpb::ConfChange::default();
        cc.set_change_type(change_type);
        cc.node_id = peer.id;
        cc.context = ctx.encode_to_vec().into();
        if let Err(e) = self.raw.propose_conf_change(vec![], cc) {
            tracing::warn!(
                region_id = self.region().id,
                "conf change not proposed: {e}"
            );
            return;
        }
        let index = self.raw.raft.raft_log.last_index();
        self.block_lease_until(index);
    }

    /// Whether this leader has nothing to do and nothing in flight, as of tick `now`: no
    /// proposal, read, conf change, split, merge, snapshot, leader transfer or PD operator
    /// (see [`Peer::operator_step_tick`]); everything
    /// committed and applied, in its own term; every follower holds the whole log and was
    /// heard from within an election timeout; nothing written since the last split check and
    /// no log compaction due.
    /// Such a leader may hibernate: nothing will happen in the region until something arrives.
    pub fn is_idle_leader(&self, now: u64, cfg: &StoreConfig) -> bool {
        let raft = &self.raw.raft;
        let last = raft.raft_log.last_index();
        let apply = &self.raw.store().apply_state;
        let quiet = self.is_leader()
            && self.raw.store().is_initialized()
            && self.proposals.is_empty()
            && self.held.is_empty()
            && self.reads.is_empty()
            && self.waiting_reads.is_empty()
            && self.pending_snapshot.is_none()
            && self.snapshot_ticks.is_empty()
            && self.splitting.is_none()
            && !self.is_merging()
            && !(cfg.split_enabled && self.written_since_check > 0)
            && self
                .operator_step_tick
                .is_none_or(|t| now.saturating_sub(t) > 2 * cfg.pd_heartbeat_tick_interval_ticks)
            && raft.lead_transferee.is_none()
            && !raft.has_pending_conf()
            && raft.raft_log.committed == last
            && apply.applied_index == last
            && apply.applied_term == raft.term
            // A log due for compaction (`maybe_compact_log`) is compacted first: a sleeping
            // region would hold it for as long as it sleeps.
            && apply.applied_index.saturating_sub(apply.truncated_index)
                < cfg.raft_log_gc_threshold_entries;
        if !quiet {
            return false;
        }
        let heard_within = cfg.raft_election_ticks as u64;
        self.region().peers.iter().all(|p| {
            if p.id == self.meta.id {
                return true;
            }
            let in_step = raft.prs().get(p.id).is_some_and(|pr| pr.matched == last);
            let heard = self
                .peer_heard
                .get(&p.id)
                .copied()
                .unwrap_or(self.leader_since);
            in_step && now.saturating_sub(heard) <= heard_within
        })
    }

    /// Whether this follower is in step with the leader whose hibernating heartbeat (`term`,
    /// `commit`, from `leader_id`) it has just stepped: same term and leader, its log ends at
    /// that commit index and has it committed. Only then may it stop ticking: the leader knows
    /// of nothing this follower lacks.
    pub fn in_step_with(&self, leader_id: u64, term: u64, commit: u64) -> bool {
        let raft = &self.raw.raft;
        !self.is_leader()
            && self.raw.store().is_initialized()
            && self.pending_snapshot.is_none()
            && raft.term == term
            && raft.leader_id == leader_id
            && raft.raft_log.committed == commit
            && raft.raft_log.last_index() == commit
    }

    /// Makes a leader that wakes from hibernation judge its followers afresh: they sent
    /// nothing while the region slept, which says nothing about whether they are down.
    pub fn on_wake(&mut self, now: u64) {
        self.idle_ticks = 0;
        self.leader_heard_tick = now;
        if self.is_leader() {
            // raft-rs's check-quorum judges the followers on the election timer, which stopped
            // with the ticks: the answers to the last heartbeat may be long gone, so the leader
            // gets a full election timeout to hear from a quorum again before it steps down.
            self.raw.raft.election_elapsed = 0;
            let others: Vec<u64> = self.region().peers.iter().map(|p| p.id).collect();
            for id in others.into_iter().filter(|id| *id != self.meta.id) {
                self.peer_heard.insert(id, now);
            }
        }
    }

    /// Followers that are behind the leader's log (PD waits for them before promoting).
    pub fn pending_peers(&self) -> Vec<metapb::Peer> {
        let truncated = self.raw.store().truncated_index();
        let mut out = vec![];
        for p in &self.region().peers {
            if p.id == self.meta.id {
                continue;
            }
            match self.raw.raft.prs().get(p.id) {
                Some(pr) if pr.matched > truncated => {}
                _ => out.push(*p),
            }
        }
        out
    }

    /// Followers not heard from for `down_after_ticks` ticks (as of tick `now`).
    pub fn down_peers(
        &self,
        now: u64,
        down_after_ticks: u64,
        tick_ms: u64,
    ) -> Vec<pdpb::PeerStats> {
        let mut out = vec![];
        for p in &self.region().peers {
            if p.id == self.meta.id {
                continue;
            }
            let last = self
                .peer_heard
                .get(&p.id)
                .copied()
                .unwrap_or(self.leader_since);
            let silent = now.saturating_sub(last);
            if silent > down_after_ticks {
                out.push(pdpb::PeerStats {
                    peer: Some(*p),
                    down_seconds: silent * tick_ms / 1000,
                });
            }
        }
        out
    }

    /// The heartbeat PD expects from a leader, as of tick `now`. A hibernated leader reports no
    /// down peers: its followers send nothing while the region sleeps, and a follower whose
    /// store goes silent wakes the region (the poller's silent-store check) before it is
    /// reported.
    pub fn heartbeat_task(
        &self,
        now: u64,
        cfg: &StoreConfig,
        hibernated: bool,
    ) -> crate::msg::PdTask {
        let down_peers = if hibernated {
            vec![]
        } else {
            self.down_peers(
                now,
                2 * cfg.raft_election_ticks as u64,
                cfg.raft_tick_interval_ms,
            )
        };
        crate::msg::PdTask::RegionHeartbeat {
            region: self.region().clone(),
            leader: self.meta,
            pending_peers: self.pending_peers(),
            down_peers,
            approximate_size: self.approximate_size,
            approximate_keys: self.approximate_keys,
            term: self.raw.raft.term,
        }
    }

    /// The summary kept in the router's shared map.
    pub fn info(&self) -> RegionInfo {
        RegionInfo {
            region: self.region().clone(),
            peer: self.meta,
            leader_id: self.raw.raft.leader_id,
            is_leader: self.is_leader(),
            term: self.raw.raft.term,
            applied_index: self.raw.store().apply_state.applied_index,
            truncated_index: self.raw.store().apply_state.truncated_index,
            approximate_size: self.approximate_size,
            approximate_keys: self.approximate_keys,
        }
    }
}

/// Whether `cmd` changes which peers form the region's quorum or which keys it holds (a split
/// or a merge step; conf changes go through `propose_conf_change`): the lease must not
/// outlive the old arrangement.
fn cmd_changes_quorum_or_range(cmd: &RaftCmdRequest) -> bool {
    use proto::flotillapb::AdminCmdType;
    cmd.admin.as_ref().is_some_and(|a| {
        !matches!(
            AdminCmdType::try_from(a.cmd_type),
            Ok(AdminCmdType::CompactLog)
        )
    })
}
