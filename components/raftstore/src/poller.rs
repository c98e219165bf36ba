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
//! Ready, so a round costs what the busy regions cost, not what the store holds; a tick round
//! still visits every peer (hibernation would change that).
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

use std::collections::{HashMap, HashSet};
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
use crate::msg::{ControlMsg, PdTask, PollerCounters, RegionError, RegionId, StoreMsg};
use crate::peer::Peer;
use crate::peer_storage::PeerStorage;
use crate::router::RaftRouter;
use crate::split_check::{self, SplitCheckTask};
use crate::transport::Transport;
use crate::util::{epoch_of, find_peer, is_epoch_stale, ranges_overlap};
use crate::StoreError;

mod admin;
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
        let stats = Arc::new(PollerCounters::default());
        let router = RaftRouter {
            tx,
            control: control_tx.clone(),
            regions: regions.clone(),
            stats: stats.clone(),
            store_id,
        };
        let mut poller = Poller {
            cfg: cfg.clone(),
            store_id,
            kv: kv.clone(),
            raft_log,
            transport,
            pd_tx,
            apply_tx: apply_tx.clone(),
            split_tx: split_tx.clone(),
            control_tx: control_tx.clone(),
            peers: HashMap::new(),
            regions,
            next_read_id: 1,
            tick_count: 0,
            dirty: HashSet::new(),
            active: HashSet::new(),
            tombstones: HashMap::new(),
            stats,
        };
        // The apply thread runs before recovery: recovery registers every region with it
        // through the bounded apply queue, which a store with more regions than the queue
        // holds would otherwise wait on forever.
        let kv_apply = kv.clone();
        let apply_batch = cfg.raft_poll_batch_max;
        let control_apply = control_tx.clone();
        let apply_thread = spawn("apply", move || {
            apply::run(store_id, kv_apply, apply_rx, control_apply, apply_batch)
        });
        if let Err(e) = poller.recover() {
            drop(poller);
            drop(apply_tx);
            let _ = apply_thread.join();
            return Err(e);
        }
        let mut threads = vec![apply_thread];
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

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
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
    regions: Arc<DashMap<RegionId, crate::msg::RegionInfo>>,
    next_read_id: u64,
    tick_count: u64,
    /// Peers whose raft state must be written in this round even without a ready.
    dirty: HashSet<RegionId>,
    /// Regions touched since the last round: the only ones `handle_readys` looks at.
    active: HashSet<RegionId>,
    /// Regions whose peer this store destroyed, with the newest epoch heard of at the time:
    /// no message with an epoch that is not newer may create a peer for them again. Loaded
    /// from the engine's tombstones at start-up.
    tombstones: HashMap<RegionId, metapb::RegionEpoch>,
    stats: Arc<PollerCounters>,
}

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
            self.create_peer(region, meta)?;
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
    ) -> Result<(), StoreError> {
        let region_id = region.id;
        let ps = PeerStorage::new(
            self.store_id,
            region,
            self.kv.clone(),
            self.raft_log.clone(),
            self.cfg.snapshot_max_bytes,
        )?;
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
        let raw = RawNode::new(&config, ps, &logger)?;
        let peer = Peer {
            raw,
            meta,
            proposals: Default::default(),
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
        };
        let _ = self.apply_tx.send(ApplyTask::Register {
            region,
            apply_state,
        });
        self.regions.insert(region_id, peer.info());
        self.peers.insert(region_id, peer);
        self.dirty.insert(region_id);
        self.active.insert(region_id);
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
                    self.active.insert(header.region_id);
                }
                None => cb(Err(RegionError::RegionNotFound(header.region_id))),
            },
            StoreMsg::Read { header, cb } => match self.peers.get_mut(&header.region_id) {
                Some(p) => {
                    p.read(&self.cfg, &header, cb);
                    self.active.insert(header.region_id);
                }
                None => cb(Err(RegionError::RegionNotFound(header.region_id))),
            },
            StoreMsg::WriteView { header, cb } => match self.peers.get_mut(&header.region_id) {
                Some(p) => {
                    p.write_view(&self.cfg, &header, &self.kv, cb);
                    self.active.insert(header.region_id);
                }
                None => cb(Err(RegionError::RegionNotFound(header.region_id))),
            },
        }
    }

    fn on_control(&mut self, msg: ControlMsg) {
        match msg {
            ControlMsg::ApplyRes(res) => {
                self.active.insert(res.region_id);
                self.on_apply_res(*res);
            }
            ControlMsg::SnapshotApplied {
                region_id,
                peer_id,
                result,
            } => self.on_snapshot_applied(region_id, peer_id, result),
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
                if let Some(p) = self.peers.get_mut(&region_id) {
                    p.splitting = None;
                }
            }
            ControlMsg::SplitIds {
                region_id,
                epoch,
                split_keys,
                ids,
            } => {
                self.active.insert(region_id);
                self.on_split_ids(region_id, epoch, split_keys, ids);
            }
            ControlMsg::SplitRequest {
                region_id,
                split_keys,
            } => self.ask_split(region_id, split_keys),
            ControlMsg::HeartbeatResponse(resp) => {
                self.active.insert(resp.region_id);
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
                    self.active.insert(region_id);
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
        let raft_msg = match wire_check::check_raft_message(&msg, self.store_id) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(region_id = msg.region_id, "dropping raft message: {e}");
                return;
            }
        };
        let to = msg.to_peer.expect("checked");
        let region_id = msg.region_id;
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
        if raft_msg.get_msg_type() == MessageType::MsgSnapshot
            && !self.snapshot_fits(region_id, &raft_msg)
        {
            return;
        }
        let tick = self.tick_count;
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
        self.active.insert(region_id);
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
        if !from_leader {
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
        if overlaps {
            return false;
        }
        let region = metapb::Region {
            id: msg.region_id,
            ..Default::default()
        };
        match self.create_peer(region, to) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(region_id = msg.region_id, "cannot create peer: {e}");
                false
            }
        }
    }

    /// Whether a snapshot may be stepped now: none is being written for the region, and its
    /// range does not overlap another local region.
    fn snapshot_fits(&self, region_id: RegionId, m: &RaftMsg) -> bool {
        // A Ready with a snapshot is parked while that snapshot is written: raft-rs still holds
        // it as its unstable snapshot, which a newer one stepped now would replace, and the
        // parked Ready could then not be finished. The leader sends again once this one is in.
        if self
            .peers
            .get(&region_id)
            .is_some_and(|p| p.pending_snapshot.is_some())
        {
            tracing::debug!(region_id, "snapshot dropped: another is being written");
            return false;
        }
        let Ok(data) = SnapshotData::decode(m.get_snapshot().get_data()) else {
            return false;
        };
        let Some(region) = data.region_state.and_then(|s| s.region) else {
            return false;
        };
        !self.peers.iter().any(|(id, p)| {
            *id != region_id
                && p.raw.store().is_initialized()
                && ranges_overlap(p.region(), &region)
        })
    }

    /// Ticks every peer (a peer whose snapshot is being written waits: its raft state moves
    /// on once the snapshot is in). Returns the number of peers looked at.
    fn on_tick(&mut self) -> u64 {
        self.tick_count += 1;
        let t = self.tick_count;
        let gc = t.is_multiple_of(self.cfg.raft_log_gc_tick_interval_ticks);
        let split =
            self.cfg.split_enabled && t.is_multiple_of(self.cfg.split_check_tick_interval_ticks);
        let heartbeat = t.is_multiple_of(self.cfg.pd_heartbeat_tick_interval_ticks);
        let ids: Vec<RegionId> = self.peers.keys().copied().collect();
        let examined = ids.len() as u64;
        for id in ids {
            let p = self.peers.get_mut(&id).expect("peer");
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
            if gc {
                maybe_compact_log(&self.cfg, p);
            }
            if split && p.written_since_check > 0 && p.splitting.is_none() {
                p.written_since_check = 0;
                let _ = self.split_tx.try_send(SplitCheckTask {
                    region: p.region().clone(),
                });
            }
            if heartbeat {
                let _ = self
                    .pd_tx
                    .try_send(p.heartbeat_task(self.tick_count, &self.cfg));
            }
        }
        if gc {
            if let Err(e) = self.raft_log.purge_expired_files() {
                tracing::warn!("raft log purge failed: {e}");
            }
        }
        examined
    }
}
