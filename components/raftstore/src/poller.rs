//! The raft poller: one thread that owns every peer of the store. Each round it handles the
//! messages in its mailbox, ticks on schedule, then collects the ready state of every peer and
//! persists all of it in one raft-log write (group commit across regions) before sending the
//! messages that must follow persistence.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use dashmap::DashMap;
use engine::KvEngine;
use prost::Message as _;
use proto::flotillapb::{
    self, AdminCmdType, AdminRequest, BatchSplitRequest, CompactLogRequest, PeerState,
    RaftCmdRequest, SnapshotData, SplitRequest,
};
use proto::{metapb, pdpb};
use raft::eraftpb::{Entry, Message as RaftMsg, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use raft_log::{LogBatch, RaftLogStore};

use crate::apply::{self, ApplyRes, ApplyTask, ExecResult, Proposal};
use crate::config::StoreConfig;
use crate::msg::{
    DataModify, PdTask, ReadCallback, RegionError, RegionId, RequestHeader, WriteCallback,
};
use crate::peer::Peer;
use crate::peer_storage::PeerStorage;
use crate::router::RaftRouter;
use crate::split_check::{self, SplitCheckTask};
use crate::transport::Transport;
use crate::util::{
    epoch_of, find_peer, find_peer_by_id, is_epoch_stale, key_in_region, ranges_overlap,
};
use crate::StoreError;

mod admin;
use admin::{check_snapshot_progress, maybe_compact_log};

/// Everything that reaches the poller.
pub enum StoreMsg {
    /// A raft message from another store.
    Raft(Box<flotillapb::RaftMessage>),
    /// A client write.
    Write {
        header: RequestHeader,
        modifies: Vec<DataModify>,
        cb: WriteCallback,
    },
    /// A client read.
    Read {
        header: RequestHeader,
        cb: ReadCallback,
    },
    /// A read view to compute a write from (see `Peer::write_view`).
    WriteView {
        header: RequestHeader,
        cb: ReadCallback,
    },
    /// PD's answer to a region heartbeat.
    HeartbeatResponse(Box<pdpb::RegionHeartbeatResponse>),
    /// Ids for a split.
    SplitIds {
        region_id: RegionId,
        epoch: metapb::RegionEpoch,
        split_keys: Vec<Vec<u8>>,
        ids: Vec<pdpb::SplitId>,
    },
    /// A request to split at given keys.
    SplitRequest {
        region_id: RegionId,
        split_keys: Vec<Vec<u8>>,
    },
    /// The split checker's measurement.
    SplitCheckResult {
        region_id: RegionId,
        epoch: metapb::RegionEpoch,
        size: u64,
        keys: u64,
        split_keys: Vec<Vec<u8>>,
    },
    /// A split could not be proposed or applied; the region may try again.
    SplitFailed { region_id: RegionId },
    /// Whether a snapshot reached its target.
    SnapshotStatus {
        region_id: RegionId,
        to_peer_id: u64,
        delivered: bool,
    },
    /// The apply thread's report.
    ApplyRes(Box<ApplyRes>),
    /// Stop the poller.
    Stop,
}

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
        let (apply_tx, apply_rx) = bounded(cfg.apply_queue_capacity_max);
        let (split_tx, split_rx) = bounded(1024);
        let regions = Arc::new(DashMap::new());
        let router = RaftRouter {
            tx: tx.clone(),
            regions: regions.clone(),
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
            self_tx: tx.clone(),
            peers: HashMap::new(),
            regions,
            next_read_id: 1,
            tick_count: 0,
            dirty: HashSet::new(),
        };
        poller.recover()?;
        let mut threads = vec![];
        let kv_apply = kv.clone();
        let apply_batch = cfg.raft_poll_batch_max;
        let tx_apply = tx.clone();
        threads.push(spawn("apply", move || {
            apply::run(store_id, kv_apply, apply_rx, tx_apply, apply_batch)
        }));
        let split_cfg = cfg.clone();
        let tx_split = tx.clone();
        threads.push(spawn("split-check", move || {
            split_check::run(kv, split_cfg, split_rx, tx_split)
        }));
        threads.push(spawn("raft-poller", move || poller.run(rx)));
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
        let _ = self.router.tx.send(StoreMsg::Stop);
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
    self_tx: Sender<StoreMsg>,
    peers: HashMap<RegionId, Peer>,
    regions: Arc<DashMap<RegionId, crate::msg::RegionInfo>>,
    next_read_id: u64,
    tick_count: u64,
    /// Peers whose raft state must be written in this round even without a ready.
    dirty: HashSet<RegionId>,
}

impl Poller {
    fn recover(&mut self) -> Result<(), StoreError> {
        let regions: Vec<metapb::Region> =
            crate::peer_storage::load_region_states(self.kv.as_ref())?
                .into_iter()
                .filter(|s| s.state != PeerState::Tombstone as i32)
                .filter_map(|s| s.region)
                .collect();
        for region in regions {
            let Some(meta) = find_peer(&region, self.store_id).cloned() else {
                continue;
            };
            self.create_peer(region, meta)?;
        }
        tracing::info!(
            store_id = self.store_id,
            regions = self.peers.len(),
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
        };
        let _ = self.apply_tx.send(ApplyTask::Register {
            region,
            apply_state,
        });
        self.regions.insert(region_id, peer.info());
        self.peers.insert(region_id, peer);
        self.dirty.insert(region_id);
        Ok(())
    }

    fn run(mut self, rx: Receiver<StoreMsg>) {
        let tick = Duration::from_millis(self.cfg.raft_tick_interval_ms);
        let mut next_tick = Instant::now() + tick;
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(timeout) {
                Ok(StoreMsg::Stop) => break,
                Ok(msg) => {
                    self.handle(msg);
                    let mut n = 1;
                    while n < self.cfg.raft_poll_batch_max {
                        match rx.try_recv() {
                            Ok(StoreMsg::Stop) => return self.shutdown(),
                            Ok(msg) => self.handle(msg),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_tick {
                self.on_tick();
                next_tick = Instant::now() + tick;
            }
            self.handle_readys();
        }
        self.shutdown();
    }

    fn shutdown(&mut self) {
        for (_, p) in self.peers.iter_mut() {
            p.fail_reads(RegionError::Other("store is stopping".into()));
            p.fail_proposals(RegionError::Other("store is stopping".into()));
        }
    }

    fn handle(&mut self, msg: StoreMsg) {
        match msg {
            StoreMsg::Raft(m) => self.on_raft_message(*m),
            StoreMsg::Write {
                header,
                modifies,
                cb,
            } => match self.peers.get_mut(&header.region_id) {
                Some(p) => p.propose_write(&self.cfg, &header, modifies, cb),
                None => cb(Err(RegionError::RegionNotFound(header.region_id))),
            },
            StoreMsg::Read { header, cb } => match self.peers.get_mut(&header.region_id) {
                Some(p) => p.read(&self.cfg, &header, cb),
                None => cb(Err(RegionError::RegionNotFound(header.region_id))),
            },
            StoreMsg::WriteView { header, cb } => match self.peers.get_mut(&header.region_id) {
                Some(p) => p.write_view(&self.cfg, &header, &self.kv, cb),
                None => cb(Err(RegionError::RegionNotFound(header.region_id))),
            },
            StoreMsg::HeartbeatResponse(resp) => self.on_heartbeat_response(*resp),
            StoreMsg::SplitIds {
                region_id,
                epoch,
                split_keys,
                ids,
            } => self.on_split_ids(region_id, epoch, split_keys, ids),
            StoreMsg::SplitRequest {
                region_id,
                split_keys,
            } => self.ask_split(region_id, split_keys),
            StoreMsg::SplitCheckResult {
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
            StoreMsg::SplitFailed { region_id } => {
                if let Some(p) = self.peers.get_mut(&region_id) {
                    p.splitting = None;
                }
            }
            StoreMsg::SnapshotStatus {
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
                }
            }
            StoreMsg::ApplyRes(res) => self.on_apply_res(*res),
            StoreMsg::Stop => {}
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
        if let Some(p) = self.peers.get(&region_id) {
            if to.id < p.meta.id {
                return; // meant for an older incarnation of this store's peer
            }
            if to.id > p.meta.id {
                // This store's peer was removed and re-added with a new id.
                self.destroy_peer(region_id, false);
            }
        }
        if !self.peers.contains_key(&region_id) && !self.maybe_create_peer(&msg, &raft_msg, to) {
            return;
        }
        if raft_msg.get_msg_type() == MessageType::MsgSnapshot
            && !self.snapshot_fits(region_id, &raft_msg)
        {
            return;
        }
        let p = self.peers.get_mut(&region_id).expect("peer exists");
        if let Some(from) = &msg.from_peer {
            p.peer_cache.insert(from.id, *from);
            p.peer_heard.insert(from.id, self.tick_count);
        }
        if let Err(e) = crate::repair::step(region_id, &mut p.raw, raft_msg) {
            tracing::debug!(region_id, "step failed: {e}");
        }
    }

    /// Creates an uninitialized peer for a message to a region this store does not have yet,
    /// unless the message is stale or its range is still held by a local region (then the
    /// local split will create the peer).
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
        if !from_leader || msg.is_tombstone {
            return false;
        }
        if let Ok(Some(state)) =
            crate::peer_storage::load_region_state(self.kv.as_ref(), msg.region_id)
        {
            if state.state == PeerState::Tombstone as i32 {
                let local = state
                    .region
                    .and_then(|r| r.region_epoch)
                    .unwrap_or_default();
                let remote = msg.region_epoch.unwrap_or_default();
                if !is_epoch_stale(&local, &remote) {
                    return false;
                }
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

    /// Whether a snapshot may be applied: its range must not overlap another local region.
    fn snapshot_fits(&self, region_id: RegionId, m: &RaftMsg) -> bool {
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

    fn on_tick(&mut self) {
        self.tick_count += 1;
        let t = self.tick_count;
        let gc = t.is_multiple_of(self.cfg.raft_log_gc_tick_interval_ticks);
        let split =
            self.cfg.split_enabled && t.is_multiple_of(self.cfg.split_check_tick_interval_ticks);
        let heartbeat = t.is_multiple_of(self.cfg.pd_heartbeat_tick_interval_ticks);
        let ids: Vec<RegionId> = self.peers.keys().copied().collect();
        for id in ids {
            let p = self.peers.get_mut(&id).expect("peer");
            p.raw.tick();
            if !p.is_leader() {
                continue;
            }
            check_snapshot_progress(p);
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
    }

    fn handle_readys(&mut self) {
        for p in self.peers.values_mut() {
            if p.submit_waiting_reads(self.next_read_id) {
                self.next_read_id += 1;
            }
        }
        let mut batch = LogBatch::default();
        let mut readys = Vec::new();
        let ids: Vec<RegionId> = self.peers.keys().copied().collect();
        for id in ids {
            let has_ready = self.peers.get(&id).is_some_and(|p| p.raw.has_ready());
            if !has_ready {
                if self.dirty.remove(&id) {
                    if let Some(p) = self.peers.get(&id) {
                        p.raw.store().persist_state(&mut batch);
                    }
                }
                continue;
            }
            self.dirty.remove(&id);
            if let Some(rd) = self.collect_ready(id, &mut batch) {
                readys.push((id, rd));
            }
        }
        if !batch.is_empty() {
            fail_point_at!(self.store_id, "raft_log_before_write");
            if let Err(e) = self.raft_log.write(batch, true) {
                // An unpersisted raft log cannot be acknowledged; stopping is the only safe move.
                panic!("store {}: raft log write failed: {e}", self.store_id);
            }
            fail_point_at!(self.store_id, "raft_log_after_write");
        }
        for (id, rd) in readys {
            self.advance_ready(id, rd);
        }
        self.transport.flush();
    }

    fn collect_ready(&mut self, id: RegionId, batch: &mut LogBatch) -> Option<raft::Ready> {
        let p = self.peers.get_mut(&id)?;
        let mut rd = p.raw.ready();
        let msgs = rd.take_messages();
        self.send_messages(id, msgs);
        if !rd.snapshot().is_empty() {
            self.apply_snapshot(id, rd.snapshot().clone(), batch);
        }
        let committed = rd.take_committed_entries();
        self.handle_committed(id, committed);
        let p = self.peers.get_mut(&id)?;
        let entries = rd.take_entries();
        p.raw.mut_store().append(entries, batch);
        if let Some(hs) = rd.hs() {
            p.raw.mut_store().set_hard_state(hs);
        }
        for rs in rd.take_read_states() {
            p.on_read_state(&rs.request_ctx, rs.index);
        }
        p.raw.store().persist_state(batch);
        if rd.ss().is_some() {
            self.on_role_changed(id);
        }
        Some(rd)
    }

    fn advance_ready(&mut self, id: RegionId, mut rd: raft::Ready) {
        let persisted = rd.take_persisted_messages();
        self.send_messages(id, persisted);
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let snapshot_index =
            (!rd.snapshot().is_empty()).then(|| rd.snapshot().get_metadata().index);
        let mut light = p.raw.advance_append(rd);
        if let Some(index) = snapshot_index {
            // The snapshot is applied (see `apply_snapshot`): raft-rs must know, or a campaign
            // before the next apply result reads the unapplied entries from the old applied
            // index, which the snapshot compacted away (raft-rs panics).
            p.raw.advance_apply_to(index);
        }
        if let Some(commit) = light.commit_index() {
            p.raw.mut_store().set_commit(commit);
            self.dirty.insert(id);
        }
        let msgs = light.take_messages();
        let committed = light.take_committed_entries();
        self.send_messages(id, msgs);
        self.handle_committed(id, committed);
        if let Some(p) = self.peers.get_mut(&id) {
            p.serve_ready_reads(&self.kv);
        }
    }

    fn send_messages(&mut self, id: RegionId, msgs: Vec<RaftMsg>) {
        if msgs.is_empty() {
            return;
        }
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let region = p.region().clone();
        for m in msgs {
            let Some(to) = p.peer_by_id(m.to) else {
                continue;
            };
            if m.get_msg_type() == MessageType::MsgSnapshot {
                if snapshot_send_fails(self.store_id) {
                    p.raw.report_snapshot(m.to, SnapshotStatus::Failure);
                    continue;
                }
                p.snapshot_ticks.insert(m.to, 0);
            }
            let bytes = protobuf::Message::write_to_bytes(&m).expect("encode raft message");
            self.transport.send(flotillapb::RaftMessage {
                region_id: id,
                from_peer: Some(p.meta),
                to_peer: Some(to),
                region_epoch: region.region_epoch,
                message: bytes,
                start_key: region.start_key.clone(),
                end_key: region.end_key.clone(),
                is_tombstone: false,
            });
        }
    }

    fn handle_committed(&mut self, id: RegionId, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let last = entries.last().map(|e| e.index).unwrap_or(0);
        let mut proposals: Vec<Proposal> = vec![];
        while p.proposals.front().is_some_and(|f| f.index <= last) {
            proposals.push(p.proposals.pop_front().expect("front"));
        }
        let task = ApplyTask::Apply {
            region_id: id,
            entries,
            proposals,
        };
        if let Err(e) = self.apply_tx.send(task) {
            panic!("apply thread is gone: {e}");
        }
    }

    fn apply_snapshot(
        &mut self,
        id: RegionId,
        snap: raft::eraftpb::Snapshot,
        batch: &mut LogBatch,
    ) {
        let data =
            SnapshotData::decode(snap.get_data()).expect("snapshot data checked before stepping");
        let region = data
            .region_state
            .as_ref()
            .and_then(|s| s.region.clone())
            .expect("snapshot region");
        let (done_tx, done_rx) = bounded(1);
        let task = ApplyTask::Snapshot {
            region_id: id,
            data: Box::new(data),
            done: done_tx,
        };
        self.apply_tx.send(task).expect("apply thread alive");
        match done_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("region {id}: applying snapshot failed: {e}"),
            Err(_) => panic!("apply thread is gone"),
        }
        let p = self.peers.get_mut(&id).expect("peer");
        p.raw
            .mut_store()
            .on_snapshot_applied(&snap, region.clone(), batch);
        if let Some(meta) = find_peer(&region, self.store_id) {
            p.meta = *meta;
        }
        tracing::info!(
            region_id = id,
            index = snap.get_metadata().index,
            "applied snapshot"
        );
        self.regions.insert(id, p.info());
    }

    fn on_role_changed(&mut self, id: RegionId) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.raw.raft.state != StateRole::Leader {
            p.fail_reads(RegionError::NotLeader {
                region_id: id,
                leader: p.leader(),
            });
        } else {
            p.leader_since = self.tick_count;
            let _ = self
                .pd_tx
                .try_send(p.heartbeat_task(self.tick_count, &self.cfg));
        }
        p.last_leader_id = p.raw.raft.leader_id;
        self.regions.insert(id, p.info());
    }
}
