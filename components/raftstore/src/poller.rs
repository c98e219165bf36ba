//! The raft poller: one thread that owns every peer of the store. Each round it takes the
//! control channel's messages first, then the mailbox's, ticks on schedule, then collects the
//! Ready state of the peers that had something to do and persists all of it in one raft-log
//! write (group commit across regions) before sending the messages that must follow
//! persistence. The numbered steps of a round are listed on `Poller::handle_readys`
//! (`poller/ready.rs`).
//!
//! Two ways in:
//! - the **mailbox** (bounded, [`StoreMsg`]): client writes, reads and write views, and raft
//!   messages from other stores. Senders `try_send`; a full mailbox refuses (`ServerIsBusy` to
//!   a client; a dropped raft message is retransmitted by raft).
//! - the **control channel** (unbounded, [`ControlMsg`]): apply results, snapshot completion,
//!   split check results, split ids and failures, PD's answers, operator split requests,
//!   snapshot status, stale-peer answers, stop. Drained first each round, never refused.
//!
//! The **active set** holds the regions touched since the last round (a message stepped, a
//! proposal, a read, an apply result, a control message, a tick). Only those are checked for a
//! Ready, so a round costs what the busy regions cost, not what the store holds. The **awake
//! set** holds the peers that tick: with `hibernate_regions`, an idle region's leader and
//! followers leave it (see `poller/hibernate.rs`), so a tick round costs what the awake regions
//! cost too, and a store of idle regions spends only a keepalive per store and a slow PD
//! heartbeat per leader.
//!
//! Wait-for graph (an edge `a → b`: thread `a` may block until `b` acts):
//!
//! ```text
//! gRPC / transport threads ──try_send──▶ mailbox            (never blocks)
//! PD worker ────────────────send───────▶ control channel    (unbounded: never blocks)
//! raft poller ──send (bounded queue)──▶ apply thread        (the only blocking edge)
//! raft poller ──try_send──▶ split checker, PD worker         (never blocks)
//! raft poller ──send──▶ transport                           (its queues try_send: never blocks)
//! apply thread ─────────────send───────▶ control channel    (unbounded: never blocks)
//! split checker ────────────send───────▶ control channel    (unbounded: never blocks)
//! ```
//!
//! The only edge on which a thread waits for another is poller → apply thread, and the apply
//! thread waits for nobody (it reads its queue, writes the engine, answers callbacks that do
//! not block, and reports on the unbounded control channel). The graph has no cycle, so the
//! store cannot hang on itself however full the mailbox is. The poller does not wait for a
//! snapshot to be written either: it parks the Ready (see `poller/ready.rs`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Select, Sender, TryRecvError};
use dashmap::DashMap;
use engine::KvEngine;
use prost::Message as _;
use proto::flotillapb::{self, PeerState, SnapshotData};
use proto::metapb;
use raft::eraftpb::{Message as RaftMsg, MessageType};
use raft::{RawNode, SnapshotStatus};
use raft_log::{LogBatch, RaftLogStore};

use crate::apply::{self, ApplyTask};
use crate::config::StoreConfig;
use crate::lease::{self, ReadDelegates};
use crate::msg::{ControlMsg, PdTask, PollerCounters, RegionError, RegionId, StoreId, StoreMsg};
use crate::peer::Peer;
use crate::peer_storage::PeerStorage;
use crate::router::RaftRouter;
use crate::split_check::{self, SplitCheckTask};
use crate::transport::Transport;
use crate::util::{epoch_of, find_peer, is_epoch_stale, ranges_overlap};
use crate::StoreError;

mod admin;
mod hibernate;
mod merge;
mod ready;
mod stale;
use admin::{check_snapshot_progress, maybe_compact_log};

/// Capacity of the queue of regions waiting to be measured by the split checker; a full queue
/// skips the check until the next interval.
const SPLIT_CHECK_QUEUE_MAX: usize = 1024;

/// A running raftstore: its threads and the router into it.
pub struct RaftStore {
    router: RaftRouter,
    threads: Vec<JoinHandle<()>>,
    apply_tx: Option<Sender<ApplyTask>>,
    split_tx: Option<Sender<SplitCheckTask>>,
}

impl RaftStore {
    /// Recovers every region of the store from the engine and the raft log, and starts the
    /// poller, apply and split-check threads.
    pub fn start(
        cfg: StoreConfig,
        store_id: u64,
        kv: Arc<dyn KvEngine>,
        raft_log: Arc<dyn RaftLogStore>,
        transport: Arc<dyn Transport>,
        pd_tx: Sender<PdTask>,
    ) -> Result<RaftStore, StoreError> {
        cfg.validate().map_err(StoreError::Config)?;
        let (tx, rx) = bounded(cfg.mailbox_capacity_max);
        let (control_tx, control_rx) = unbounded();
        let (apply_tx, apply_rx) = bounded(cfg.apply_queue_capacity_max);
        let (split_tx, split_rx) = bounded(SPLIT_CHECK_QUEUE_MAX);
        let regions = Arc::new(DashMap::new());
        let readers: ReadDelegates = Arc::new(DashMap::new());
        let stats = Arc::new(PollerCounters::default());
        let router = RaftRouter {
            tx,
            control: control_tx.clone(),
            regions: regions.clone(),
            readers: readers.clone(),
            kv: kv.clone(),
            stats: stats.clone(),
            store_id,
        };
        let lease = cfg.lease();
        let (snapshot_worker, snapshot_thread) =
            crate::snapshot_worker::SnapshotWorker::start(control_tx.clone());
        let mut poller = Poller {
            cfg: cfg.clone(),
            store_id,
            kv: kv.clone(),
            raft_log: raft_log.clone(),
            transport,
            pd_tx,
            apply_tx: apply_tx.clone(),
            split_tx: split_tx.clone(),
            control_tx: control_tx.clone(),
            peers: HashMap::new(),
            snapshot_worker,
            regions,
            readers,
            lease,
            votes_from_ns: lease.map_or(0, |l| lease::now_ns() + l.as_nanos() as u64),
            next_read_id: 1,
            tick_count: 0,
            dirty: HashSet::new(),
            active: HashSet::new(),
            awake: HashSet::new(),
            store_heard: HashMap::new(),
            silent_stores: HashSet::new(),
            pd_rotation: VecDeque::new(),
            pd_rotation_credit: 0,
            tombstones: HashMap::new(),
            pending_votes: VecDeque::new(),
            stats,
        };
        // The apply thread runs before recovery: recovery registers every region with it
        // through the bounded apply queue, which a store with more regions than the queue
        // holds would otherwise wait on forever.
        let kv_apply = kv.clone();
        let log_apply = raft_log.clone();
        let apply_batch = cfg.raft_poll_batch_max;
        let control_apply = control_tx.clone();
        let apply_thread = spawn("apply", move || {
            apply::run(
                store_id,
                kv_apply,
                log_apply,
                apply_rx,
                control_apply,
                apply_batch,
            )
        });
        if let Err(e) = poller.recover() {
            drop(poller);
            drop(apply_tx);
            let _ = apply_thread.join();
            return Err(e);
        }
        let mut threads = vec![apply_thread, snapshot_thread];
        let split_cfg = cfg.clone();
        threads.push(spawn("split-check", move || {
            split_check::run(kv, split_cfg, split_rx, control_tx)
        }));
        threads.push(spawn("raft-poller", move || poller.run(rx, control_rx)));
        Ok(RaftStore {
            router,
            threads,
            apply_tx: Some(apply_tx),
            split_tx: Some(split_tx),
        })
    }

    /// The way into the store.
    pub fn router(&self) -> RaftRouter {
        self.router.clone()
    }

    /// Stops the threads and waits for them.
    pub fn stop(mut self) {
        let _ = self.router.control.send(ControlMsg::Stop);
        self.apply_tx.take();
        self.split_tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Failpoint `snapshot_before_send`: whether to drop a snapshot message (`return`) as if the
/// transport had failed to deliver it.
#[allow(unused_variables)] // the store id only serves the failpoint
fn snapshot_send_fails(store_id: u64) -> bool {
    fail_point_at!(store_id, "snapshot_before_send", |_| true);
    false
}

/// Publishes a peer's state for the router's readers: its summary, and its read delegate while
/// it may serve local reads (removed otherwise).
fn publish(
    regions: &DashMap<RegionId, crate::msg::RegionInfo>,
    readers: &DashMap<RegionId, lease::ReadDelegate>,
    p: &Peer,
) {
    let id = p.region().id;
    regions.insert(id, p.info());
    match p.read_delegate() {
        Some(d) => {
            readers.insert(id, d);
        }
        None => {
            readers.remove(&id);
        }
    }
}

pub(crate) fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawn thread")
}

struct Poller {
    cfg: StoreConfig,
    store_id: u64,
    kv: Arc<dyn KvEngine>,
    raft_log: Arc<dyn RaftLogStore>,
    transport: Arc<dyn Transport>,
    pd_tx: Sender<PdTask>,
    apply_tx: Sender<ApplyTask>,
    split_tx: Sender<SplitCheckTask>,
    /// The poller's own control channel, for callbacks that run on the apply thread.
    control_tx: Sender<ControlMsg>,
    peers: HashMap<RegionId, Peer>,
    /// Builds the leaders' snapshots off this thread (see `snapshot_worker`).
    snapshot_worker: crate::snapshot_worker::SnapshotWorker,
    regions: Arc<DashMap<RegionId, crate::msg::RegionInfo>>,
    /// The read delegates of the leaders that may serve local reads (see `lease.rs`).
    readers: ReadDelegates,
    /// The leader lease (`None`: local reads are off).
    lease: Option<Duration>,
    /// Vote requests are dropped until this lease-clock instant: one lease after start, so
    /// that no peer of this store votes before a lease it acknowledged before a restart ends.
    /// Zero when no recovered peer ever left the initial term (nothing was acknowledged).
    votes_from_ns: u64,
    next_read_id: u64,
    tick_count: u64,
    /// Peers whose raft state must be written in this round even without a ready.
    dirty: HashSet<RegionId>,
    /// Regions touched since the last round: the only ones `handle_readys` looks at.
    active: HashSet<RegionId>,
    /// Peers that tick; the others hibernate (see `poller/hibernate.rs`). Every peer when
    /// `hibernate_regions` is off. May name destroyed regions until the next tick.
    awake: HashSet<RegionId>,
    /// The tick at which each other store was last heard from (any raft message or keepalive),
    /// for the stores this one shares regions with.
    store_heard: HashMap<StoreId, u64>,
    /// Stores not heard from for `hibernate_wake_silent_ticks`, as of the last check.
    silent_stores: HashSet<StoreId>,
    /// Hibernated leaders in the order of their next slow PD heartbeat.
    pd_rotation: VecDeque<RegionId>,
    /// The rotation's heartbeats carried over to the next tick, in `1 / interval` units
    /// (see `rotation_quota`).
    pd_rotation_credit: u64,
    /// Regions whose peer this store destroyed, with the newest epoch heard of at the time:
    /// no message with an epoch that is not newer may create a peer for them again. Loaded
    /// from the engine's tombstones at start-up.
    tombstones: HashMap<RegionId, metapb::RegionEpoch>,
    /// (Pre-)vote requests for regions that a split not yet applied here will create, oldest
    /// first, at most `PENDING_VOTES_MAX`: stepped once the split creates the peer, so that a
    /// split region elects its leader at once instead of after an election timeout.
    pending_votes: VecDeque<flotillapb::RaftMessage>,
    stats: Arc<PollerCounters>,
}

/// How many vote requests for not-yet-split regions a store keeps (the oldest go first).
const PENDING_VOTES_MAX: usize = 1024;

impl Poller {
    fn recover(&mut self) -> Result<(), StoreError> {
        let states = crate::peer_storage::load_region_states(self.kv.as_ref())?;
        for s in states {
            let Some(region) = s.region else { continue };
            if s.state == PeerState::Tombstone as i32 {
                self.tombstones.insert(region.id, epoch_of(&region));
                continue;
            }
            let Some(meta) = find_peer(&region, self.store_id).cloned() else {
                continue;
            };
            let merge_state = s
                .merge_state
                .filter(|_| s.state == PeerState::Merging as i32);
            self.create_peer(region, meta, merge_state)?;
        }
        // A store whose peers never left the initial term never answered a leader, so it
        // acknowledged no lease before this start: its peers may vote at once (a new store, a
        // freshly bootstrapped cluster, whose split regions must elect without delay).
        let answered_a_leader = self.peers.values().any(|p| {
            p.raw.store().raft_state.hard_state.term > crate::peer_storage::RAFT_INIT_LOG_TERM
        });
        if !answered_a_leader {
            self.votes_from_ns = 0;
        }
        tracing::info!(
            store_id = self.store_id,
            regions = self.peers.len(),
            tombstones = self.tombstones.len(),
            "raftstore recovered"
        );
        Ok(())
    }

    fn create_peer(
        &mut self,
        region: metapb::Region,
        meta: metapb::Peer,
        merge_state: Option<flotillapb::MergeState>,
    ) -> Result<(), StoreError> {
        let region_id = region.id;
        let ps = PeerStorage::new(
            self.store_id,
            region,
            self.kv.clone(),
            self.raft_log.clone(),
            self.cfg.snapshot_max_bytes,
        )?;
        let mut ps = ps;
        ps.merge_state = merge_state.clone();
        ps.snapshot_worker = Some(self.snapshot_worker.clone());
        let applied = ps.apply_state.applied_index;
        let apply_state = ps.apply_state;
        let region = ps.region.clone();
        let config = raft::Config {
            id: meta.id,
            election_tick: self.cfg.raft_election_ticks,
            heartbeat_tick: self.cfg.raft_heartbeat_ticks,
            applied,
            max_size_per_msg: self.cfg.raft_max_size_per_msg_bytes,
            max_inflight_msgs: self.cfg.raft_max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            ..Default::default()
        };
        let logger = crate::logger::raft_logger(region_id, meta.id);
        let mut raw = RawNode::new(&config, ps, &logger)?;
        // The region's only voter has nobody to wait for: it leads now rather than after an
        // election timeout (1 to 2 s in which a freshly bootstrapped cluster answers every
        // request with NotLeader, longer than the official client's backoff).
        let voters = raw.raft.prs().conf().voters().ids();
        if voters.len() == 1 && voters.contains(meta.id) {
            raw.campaign()?;
        }
        let peer = Peer {
            raw,
            meta,
            proposals: Default::default(),
            held: Default::default(),
            transfer_target: None,
            reads: Default::default(),
            waiting_reads: vec![],
            approximate_size: 0,
            approximate_keys: 0,
            written_since_check: 1,
            splitting: None,
            snapshot_ticks: HashMap::new(),
            last_leader_id: 0,
            peer_cache: HashMap::new(),
            peer_heard: HashMap::new(),
            leader_since: 0,
            leader_heard_tick: self.tick_count,
            pending_snapshot: None,
            merge_proposed: None,
            merge_action_tick: None,
            lease: Default::default(),
            lease_blocked_until: 0,
            idle_ticks: 0,
            in_pd_rotation: false,
            operator_step_tick: None,
        };
        let _ = self.apply_tx.send(ApplyTask::Register {
            region,
            apply_state,
            merge_state,
        });
        publish(&self.regions, &self.readers, &peer);
        self.peers.insert(region_id, peer);
        self.dirty.insert(region_id);
        self.active.insert(region_id);
        self.awake.insert(region_id);
        Ok(())
    }

    /// The loop: wait for a message or the next tick, drain the control channel, then the
    /// mailbox, tick if due, then handle the Readys of the active regions.
    fn run(mut self, mailbox: Receiver<StoreMsg>, control: Receiver<ControlMsg>) {
        let tick = Duration::from_millis(self.cfg.raft_tick_interval_ms);
        let mut next_tick = Instant::now() + tick;
        loop {
            if self.active.is_empty() && self.dirty.is_empty() {
                let timeout = next_tick.saturating_duration_since(Instant::now());
                let mut sel = Select::new();
                sel.recv(&control);
                sel.recv(&mailbox);
                // Which one is ready does not matter: both are drained below.
                let _ = sel.ready_timeout(timeout);
            }
            let mut handled = 0;
            while handled < self.cfg.raft_poll_batch_max {
                match control.try_recv() {
                    Ok(ControlMsg::Stop) => return self.shutdown(),
                    Ok(msg) => self.on_control(msg),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return self.shutdown(),
                }
                handled += 1;
            }
            handled = 0;
            while handled < self.cfg.raft_poll_batch_max {
                match mailbox.try_recv() {
                    Ok(msg) => self.on_mailbox(msg),
                    Err(_) => break,
                }
                handled += 1;
            }
            let ticked = Instant::now() >= next_tick;
            let mut examined = 0;
            if ticked {
                fail_point_at!(self.store_id, "poller_before_tick");
                examined += self.on_tick();
                next_tick = Instant::now() + tick;
            }
            examined += self.handle_readys();
            self.stats.on_round(ticked, examined);
        }
    }

    fn shutdown(&mut self) {
        for (_, p) in self.peers.iter_mut() {
            p.fail_reads(RegionError::Other("store is stopping".into()));
            p.fail_proposals(RegionError::Other("store is stopping".into()));
        }
    }

    fn on_mailbox(&mut self, msg: StoreMsg) {
        match msg {
            StoreMsg::Raft(m) => self.on_raft_message(*m),
            StoreMsg::Write {
                header,
                modifies,
                cb,
            } => match self.peers.get_mut(&header.region_id) {
                Some(p) => {
                    p.propose_write(&self.cfg, &header, modifies, cb);
                    self.wake(header.region_id);
                }
                None => cb(Err(RegionError::RegionNotFound(header.region_id))),
            },
            StoreMsg::Read { header, cb } => match self.peers.get_mut(&header.region_id) {
                Some(p) => {
                    p.read(&self.cfg, &header, cb);
                    self.wake(header.region_id);
                }
                None => cb(Err(RegionError::RegionNotFound(header.region_id))),
            },
            StoreMsg::WriteView { header, cb } => match self.peers.get_mut(&header.region_id) {
                Some(p) => {
                    p.write_view(&self.cfg, &header, &self.kv, cb);
                    self.wake(header.region_id);
                }
                None => cb(Err(RegionError::RegionNotFound(header.region_id))),
            },
        }
    }

    fn on_control(&mut self, msg: ControlMsg) {
        match msg {
            ControlMsg::ApplyRes(res) => {
                // Applying what was committed before a follower hibernated is no reason to
                // wake it; an admin effect (split, conf change, merge) is.
                if res.results.is_empty() {
                    self.active.insert(res.region_id);
                } else {
                    self.wake(res.region_id);
                }
                self.on_apply_res(*res);
            }
            ControlMsg::SnapshotApplied {
                region_id,
                peer_id,
                result,
            } => {
                self.wake(region_id);
                self.on_snapshot_applied(region_id, peer_id, result);
            }
            ControlMsg::SplitCheckResult {
                region_id,
                epoch,
                size,
                keys,
                split_keys,
            } => {
                if let Some(p) = self.peers.get_mut(&region_id) {
                    p.approximate_size = size;
                    p.approximate_keys = keys;
                    if epoch_of(p.region()) == epoch && !split_keys.is_empty() {
                        self.ask_split(region_id, split_keys);
                    }
                }
            }
            ControlMsg::SplitFailed { region_id } => {
                self.wake(region_id);
                if let Some(p) = self.peers.get_mut(&region_id) {
                    p.splitting = None;
                }
            }
            ControlMsg::MergeFailed { region_id } => {
                self.wake(region_id);
                if let Some(p) = self.peers.get_mut(&region_id) {
                    p.merge_proposed = None;
                }
            }
            ControlMsg::SplitIds {
                region_id,
                epoch,
                split_keys,
                ids,
            } => {
                self.wake(region_id);
                self.on_split_ids(region_id, epoch, split_keys, ids);
            }
            ControlMsg::SplitRequest {
                region_id,
                split_keys,
            } => {
                self.wake(region_id);
                self.ask_split(region_id, split_keys);
            }
            ControlMsg::HeartbeatResponse(resp) => {
                let operator = resp.change_peer.is_some()
                    || resp.transfer_leader.is_some()
                    || resp.merge.is_some()
                    || resp.split_region.is_some();
                if operator {
                    self.wake(resp.region_id);
                    if let Some(p) = self.peers.get_mut(&resp.region_id) {
                        p.operator_step_tick = Some(self.tick_count);
                    }
                } else {
                    self.active.insert(resp.region_id);
                }
                self.on_heartbeat_response(*resp);
            }
            ControlMsg::SnapshotStatus {
                region_id,
                to_peer_id,
                delivered,
            } => {
                if let Some(p) = self.peers.get_mut(&region_id) {
                    let status = if delivered {
                        SnapshotStatus::Finish
                    } else {
                        SnapshotStatus::Failure
                    };
                    p.raw.report_snapshot(to_peer_id, status);
                    p.snapshot_ticks.remove(&to_peer_id);
                    self.wake(region_id);
                }
            }
            ControlMsg::SnapshotBuilt { region_id, to } => {
                // raft-rs asks the storage again, which now hands the snapshot over.
                if let Some(p) = self.peers.get_mut(&region_id) {
                    if p.is_leader() && p.raw.raft.prs().get(to).is_some() {
                        p.raw.raft.send_append(to);
                        self.wake(region_id);
                    }
                }
            }
            ControlMsg::StalePeerCheck {
                region_id,
                peer_id,
                pd_region,
            } => self.on_stale_peer_check(region_id, peer_id, pd_region),
            ControlMsg::Stop => {}
        }
    }

    /// Steps a peer with a message from another store. The message is checked first
    /// (`wire_check`): nothing about a malformed one may destroy, create or step a peer.
    fn on_raft_message(&mut self, msg: flotillapb::RaftMessage) {
        if msg.store_keepalive {
            return self.on_store_keepalive(&msg);
        }
        let raft_msg = match wire_check::check_raft_message(&msg, self.store_id) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(region_id = msg.region_id, "dropping raft message: {e}");
                return;
            }
        };
        let to = msg.to_peer.expect("checked");
        let region_id = msg.region_id;
        self.on_store_heard(msg.from_peer.expect("checked").store_id);
        if msg.is_tombstone {
            // Never stepped: it only tells this peer that it is no longer a member.
            return self.on_tombstone_message(&msg);
        }
        if let Some(p) = self.peers.get(&region_id) {
            if to.id < p.meta.id {
                return; // meant for an older incarnation of this store's peer
            }
            if to.id > p.meta.id {
                // This store's peer was removed and re-added with a new id.
                self.destroy_peer(region_id, false, None);
            }
        }
        if !self.peers.contains_key(&region_id) && !self.maybe_create_peer(&msg, &raft_msg, to) {
            return;
        }
        if self.is_from_removed_peer(&msg, &raft_msg) {
            return self.send_tombstone_message(&msg);
        }
        if raft_msg.get_msg_type() == MessageType::MsgSnapshot {
            match self.snapshot_fits(region_id, &raft_msg) {
                Some(stale) => {
                    for id in stale {
                        tracing::info!(
                            region_id = id,
                            by = region_id,
                            "a snapshot of the region that took this range over replaces it"
                        );
                        self.destroy_peer(id, true, None);
                    }
                }
                None => return,
            }
        }
        if matches!(
            raft_msg.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        ) && lease::now_ns() < self.votes_from_ns
        {
            return; // too soon after start: see `votes_from_ns`
        }
        let tick = self.tick_count;
        let t = raft_msg.get_msg_type();
        let hibernating_leader = (msg.hibernate && t == MessageType::MsgHeartbeat).then_some((
            raft_msg.from,
            raft_msg.term,
            raft_msg.commit,
        ));
        let p = self.peers.get_mut(&region_id).expect("peer exists");
        if let Some(from) = &msg.from_peer {
            p.peer_cache.insert(from.id, *from);
            p.peer_heard.insert(from.id, tick);
        }
        if matches!(
            raft_msg.get_msg_type(),
            MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
        ) {
            p.leader_heard_tick = tick;
        }
        if let Err(e) = crate::repair::step(region_id, &mut p.raw, raft_msg) {
            tracing::debug!(region_id, "step failed: {e}");
        }
        match hibernating_leader {
            Some((leader_id, term, commit)) => {
                self.on_hibernating_heartbeat(region_id, leader_id, term, commit)
            }
            // The answers to a hibernating leader's last heartbeat must not wake it.
            None if t == MessageType::MsgHeartbeatResponse => {
                self.active.insert(region_id);
            }
            None => self.wake(region_id),
        }
    }

    /// Creates an uninitialized peer for a message to a region this store does not have yet,
    /// unless the message is stale (not newer than the region's tombstone here) or its range is
    /// still held by a local region (then the local split will create the peer).
    fn maybe_create_peer(
        &mut self,
        msg: &flotillapb::RaftMessage,
        raft_msg: &RaftMsg,
        to: metapb::Peer,
    ) -> bool {
        let t = raft_msg.get_msg_type();
        let from_leader = matches!(
            t,
            MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
        );
        let vote = matches!(
            t,
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        );
        if !from_leader && !vote {
            return false;
        }
        if let Some(tombstone) = self.tombstones.get(&msg.region_id) {
            let remote = msg.region_epoch.unwrap_or_default();
            if !is_epoch_stale(tombstone, &remote) {
                tracing::debug!(
                    region_id = msg.region_id,
                    "message not newer than the region's tombstone; ignored"
                );
                return false;
            }
        }
        let range = metapb::Region {
            start_key: msg.start_key.clone(),
            end_key: msg.end_key.clone(),
            ..Default::default()
        };
        let overlaps = self
            .peers
            .values()
            .any(|p| p.raw.store().is_initialized() && ranges_overlap(p.region(), &range));
        if overlaps || vote {
            if overlaps && vote {
                // The split that creates this region here is not applied yet: the vote is
                // stepped when it is (`step_pending_votes`).
                if self.pending_votes.len() == PENDING_VOTES_MAX {
                    self.pending_votes.pop_front();
                }
                self.pending_votes.push_back(msg.clone());
            }
            return false;
        }
        let region = metapb::Region {
            id: msg.region_id,
            ..Default::default()
        };
        match self.create_peer(region, to, None) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(region_id = msg.region_id, "cannot create peer: {e}");
                false
            }
        }
    }

    /// Steps the vote requests kept for `region_id` (its peer was just created by a split).
    fn step_pending_votes(&mut self, region_id: RegionId) {
        let (mine, rest): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.pending_votes)
            .into_iter()
            .partition(|m| m.region_id == region_id);
        self.pending_votes = rest;
        for msg in mine {
            self.on_raft_message(msg);
        }
    }

    /// Whether a snapshot may be stepped now: none is being written for the region, and its
    /// range overlaps no other local region but the stale ones it replaces (returned: regions
    /// merged into it, see `stale_peers_covered_by`). `None`: drop the snapshot.
    fn snapshot_fits(&self, region_id: RegionId, m: &RaftMsg) -> Option<Vec<RegionId>> {
        // A Ready with a snapshot is parked while that snapshot is written: raft-rs still holds
        // it as its unstable snapshot, which a newer one stepped now would replace, and the
        // parked Ready could then not be finished. The leader sends again once this one is in.
        if self
            .peers
            .get(&region_id)
            .is_some_and(|p| p.pending_snapshot.is_some())
        {
            tracing::debug!(region_id, "snapshot dropped: another is being written");
            return None;
        }
        let data = SnapshotData::decode(m.get_snapshot().get_data()).ok()?;
        let region = data.region_state.and_then(|s| s.region)?;
        self.stale_peers_covered_by(region_id, &region)
    }

    /// Ticks every awake peer (a peer whose snapshot is being written waits: its raft state
    /// moves on once the snapshot is in), lets idle leaders hibernate, and does the store's
    /// hibernation chores. Returns the number of peers looked at.
    fn on_tick(&mut self) -> u64 {
        self.tick_count += 1;
        let t = self.tick_count;
        let gc = t.is_multiple_of(self.cfg.raft_log_gc_tick_interval_ticks);
        let split =
            self.cfg.split_enabled && t.is_multiple_of(self.cfg.split_check_tick_interval_ticks);
        let heartbeat = t.is_multiple_of(self.cfg.pd_heartbeat_tick_interval_ticks);
        let ids: Vec<RegionId> = self.awake.iter().copied().collect();
        let examined = ids.len() as u64;
        let mut merging = vec![];
        let mut leaders = vec![];
        for id in ids {
            let Some(p) = self.peers.get_mut(&id) else {
                self.awake.remove(&id); // destroyed since
                continue;
            };
            self.active.insert(id);
            if p.pending_snapshot.is_some() {
                continue;
            }
            p.raw.tick();
            if !p.is_leader() {
                self.maybe_check_stale_peer(id);
                continue;
            }
            p.leader_heard_tick = t;
            check_snapshot_progress(&self.cfg, p);
            if p.is_merging() {
                // No compaction (CommitMerge is built from the log) and no split.
                merging.push(id);
            } else if gc {
                maybe_compact_log(&self.cfg, p);
            }
            if split && p.written_since_check > 0 && p.splitting.is_none() && !p.is_merging() {
                p.written_since_check = 0;
                let _ = self.split_tx.try_send(SplitCheckTask {
                    region: p.region().clone(),
                });
            }
            if heartbeat {
                let _ = self
                    .pd_tx
                    .try_send(p.heartbeat_task(self.tick_count, &self.cfg, false));
            }
            leaders.push(id);
        }
        for id in merging {
            self.check_merge(id);
        }
        for id in leaders {
            self.maybe_hibernate_leader(id);
        }
        self.on_hibernation_tick();
        self.stats
            .on_tick(examined, self.awake.len() as u64, self.peers.len() as u64);
        if gc {
            if let Err(e) = self.raft_log.purge_expired_files() {
                tracing::warn!("raft log purge failed: {e}");
            }
        }
        examined
    }
}
