//! One region's peer on this store: its raft-rs `RawNode`, its proposals in flight, its
//! pending reads, and what it last measured about its region.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use engine::KvEngine;
use prost::Message as _;
use proto::flotillapb::{CmdType, RaftCmdRequest, Request};
use proto::{metapb, pdpb};
use raft::eraftpb::ConfChangeType;
use raft::{RawNode, StateRole};

use crate::apply::Proposal;
use crate::config::StoreConfig;
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

/// One peer of a region.
pub struct Peer {
    /// The raft state machine with its storage.
    pub raw: RawNode<PeerStorage>,
    /// This store's peer.
    pub meta: metapb::Peer,
    /// Proposals in flight, in log order.
    pub proposals: VecDeque<Proposal>,
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
}

impl Peer {
    /// The region as this peer knows it.
    pub fn region(&self) -> &metapb::Region {
        &self.raw.store().region
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

    fn not_leader(&self) -> RegionError {
        RegionError::NotLeader {
            region_id: self.region().id,
            leader: self.leader(),
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
        if self.proposals.len() >= cfg.region_pending_proposals_max {
            return cb(Err(RegionError::ServerIsBusy(format!(
                "region {} has {} proposals in flight",
                self.region().id,
                self.proposals.len()
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

    /// Proposes an encoded command; the callback learns how it ended.
    pub fn propose_cmd(&mut self, cfg: &StoreConfig, cmd: RaftCmdRequest, cb: WriteCallback) {
        let data = cmd.encode_to_vec();
        if data.len() as u64 > cfg.raft_entry_max_bytes {
            return cb(Err(RegionError::RaftEntryTooLarge {
                region_id: self.region().id,
                entry_size: data.len() as u64,
            }));
        }
        let last_before = self.raw.raft.raft_log.last_index();
        if self.raw.propose(vec![], data).is_err() {
            return cb(Err(self.not_leader()));
        }
        let index = self.raw.raft.raft_log.last_index();
        if index == last_before {
            return cb(Err(self.not_leader()));
        }
        self.proposals.push_back(Proposal {
            index,
            term: self.raw.raft.term,
            cb,
        });
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
        self.raw.read_index(id.to_be_bytes().to_vec());
        let cbs = std::mem::take(&mut self.waiting_reads);
        self.reads.push_back(PendingRead {
            id,
            read_index: None,
            cbs,
        });
        true
    }

    /// Records a read index raft-rs confirmed.
    pub fn on_read_state(&mut self, ctx: &[u8], index: u64) {
        let Ok(bytes) = <[u8; 8]>::try_from(ctx) else {
            return;
        };
        let id = u64::from_be_bytes(bytes);
        if let Some(r) = self.reads.iter_mut().find(|r| r.id == id) {
            r.read_index = Some(index);
        }
    }

    /// Answers every read whose index the apply thread has reached.
    pub fn serve_ready_reads(&mut self, kv: &Arc<dyn KvEngine>) {
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

    /// Fails every proposal in flight.
    pub fn fail_proposals(&mut self, err: RegionError) {
        for p in self.proposals.drain(..) {
            (p.cb)(Err(err.clone()));
        }
    }

    /// Acts on PD's answer to a heartbeat: a membership change or a leader transfer.
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
            self.propose_change_peer(cp);
        } else if let Some(tl) = &resp.transfer_leader {
            if let Some(p) = &tl.peer {
                if p.id != self.meta.id && find_peer_by_id(self.region(), p.id).is_some() {
                    self.raw.transfer_leader(p.id);
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

    /// The heartbeat PD expects from a leader, as of tick `now`.
    pub fn heartbeat_task(&self, now: u64, cfg: &StoreConfig) -> crate::msg::PdTask {
        crate::msg::PdTask::RegionHeartbeat {
            region: self.region().clone(),
            leader: self.meta,
            pending_peers: self.pending_peers(),
            down_peers: self.down_peers(
                now,
                2 * cfg.raft_election_ticks as u64,
                cfg.raft_tick_interval_ms,
            ),
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
