//! PD's replicated state. With several members, every write of PD's [`MetaStore`] is a raft
//! proposal of the PD group (raft-rs), applied on every member to its embedded RocksDB, so that
//! when the leader dies another member takes over with the same cluster id, id bound, TSO bound,
//! stores and region directory.
//!
//! Layout in the member's RocksDB: the state itself in the `default` column family, exactly as a
//! lone PD keeps it; the raft log, hard state, conf state, applied index and the compaction base
//! in the `raft` column family.
//!
//! Threads: one `pd-raft` thread owns the [`RawNode`] (ticks, steps, proposals, persistence,
//! apply); a small tokio runtime of its own carries the member-to-member messages (a
//! `flotillapb.PdPeer` server on the peer address, one sender task per peer), so that raft keeps
//! running while PD's request threads wait for their writes to commit. The peer server steps
//! only what `peer_check` accepts: raft traffic from another member, never a proposal, with
//! every entry and snapshot decodable as apply reads it; the raft thread then drops what
//! contradicts its log and would make raft-rs panic. A committed entry that still does not
//! decode was damaged on disk, and stops the member (a panic, which ends a `flotilla pd`
//! process) naming the entry.
//!
//! Leadership: a member serves only while it is the raft leader, has applied every entry of
//! earlier terms, and holds a lease. The lease is renewed by a read-index round every tick:
//! a quorum that answered a round sent at `t` will not elect another leader before
//! `t + (election_ticks - 1)` ticks (raft-rs ignores votes while it hears from its leader,
//! `check_quorum`), so timestamps handed out before `t + (election_ticks - 2)` ticks cannot be
//! overtaken by a newer leader's.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self as std_mpsc, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use engine::{KvEngine, RocksEngine, WriteBatch, CF_DEFAULT, CF_RAFT};
use proto::flotillapb::pd_peer_client::PdPeerClient;
use proto::flotillapb::pd_peer_server::{PdPeer, PdPeerServer};
use proto::flotillapb::{Done, PdRaftBatch};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, RawNode, SnapshotStatus, StateRole, Storage};
use tokio::sync::watch;

use crate::meta_store::{scan_cf_prefix, MetaStore, RocksMetaStore};
use crate::peer_check::{check_against_log, check_peer_message, PeerGroup};
use crate::replica_view::ReplicaView;
use crate::tso::decode_u64;
use crate::{PdConfig, PdError, Result};

const HARD_STATE_KEY: &[u8] = b"hard_state";
const CONF_STATE_KEY: &[u8] = b"conf_state";
/// Index and term of the last entry compacted away (or of the last snapshot applied).
const BASE_KEY: &[u8] = b"base";
const APPLIED_KEY: &[u8] = b"applied";
const ENTRY_PREFIX: &[u8] = b"entry/";
/// Longest a write waits for its proposal to be applied.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of the inbound message queue; raft retransmits what is dropped.
const INBOX_MAX: usize = 4096;
/// Bound of each peer's outbound queue.
const OUTBOX_MAX: usize = 4096;
/// Messages per outbound batch.
const SEND_BATCH_MAX: usize = 256;
/// Entries kept behind the applied index when the log is compacted.
const COMPACT_KEEP: u64 = 100;
/// Ticks between the leader's heartbeats.
const HEARTBEAT_TICKS: usize = 2;
/// Shortest time between two log lines about refused peer messages.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

fn entry_key(index: u64) -> Vec<u8> {
    [ENTRY_PREFIX, &index.to_be_bytes()].concat()
}

fn storage_err(e: impl std::fmt::Display) -> PdError {
    PdError::Storage(e.to_string())
}

/// Encodes key-value pairs (a write, or a snapshot's content) as length-prefixed bytes.
pub(crate) fn encode_pairs(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        for part in [k, v] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// Inverse of [`encode_pairs`].
pub(crate) fn decode_pairs(mut data: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let take = |data: &mut &[u8]| -> Result<Vec<u8>> {
        let bad = || PdError::Corrupted("truncated replicated write".into());
        let len: [u8; 4] = data
            .get(..4)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?;
        let len = u32::from_be_bytes(len) as usize;
        let part = data.get(4..4 + len).ok_or_else(bad)?.to_vec();
        *data = &data[4 + len..];
        Ok(part)
    };
    let mut pairs = Vec::new();
    while !data.is_empty() {
        let k = take(&mut data)?;
        let v = take(&mut data)?;
        pairs.push((k, v));
    }
    Ok(pairs)
}

/// What the member knows of the group, published to PD's server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Role {
    /// The raft leader's id, 0 when unknown.
    pub leader_id: u64,
    /// The term in which this member may serve (leader, caught up, lease held); 0 otherwise.
    pub serving_term: u64,
    /// Whether this member hears from that leader (is it, or had a message from it within a
    /// few heartbeats): a silent leader may be dead, and clients are better served elsewhere.
    pub leader_fresh: bool,
}

/// State shared between the raft thread and the request threads.
struct Shared {
    /// Monotonic origin of `lease_until_ns`.
    origin: Instant,
    /// Until when (ns after `origin`) this member's leadership is certain; 0 when not leader.
    lease_until_ns: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn lease_valid(&self) -> bool {
        self.now_ns() < self.lease_until_ns.load(Ordering::Acquire)
    }
}

enum Cmd {
    Propose {
        data: Vec<u8>,
        done: SyncSender<Result<()>>,
    },
    Unreachable(u64),
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    Stop,
}

/// The replicated [`MetaStore`]: reads the local applied state, writes through raft.
pub(crate) struct RaftMetaStore {
    local: Arc<RocksMetaStore>,
    view: Arc<ReplicaView>,
    cmds: Sender<Cmd>,
    shared: Arc<Shared>,
    thread: parking_lot::Mutex<Option<JoinHandle<()>>>,
    runtime: parking_lot::Mutex<Option<tokio::runtime::Runtime>>,
}

impl RaftMetaStore {
    /// Starts the raft thread and the peer transport of member `cfg.member_id` over `local`.
    /// Returns the store and the role updates.
    pub(crate) fn start(
        local: Arc<RocksMetaStore>,
        cfg: &PdConfig,
        security: &security::SecurityManager,
    ) -> Result<(Arc<RaftMetaStore>, watch::Receiver<Role>)> {
        let me = cfg
            .this_member()
            .ok_or_else(|| PdError::InvalidConfig("member not in the initial cluster".into()))?
            .clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pd-peer")
            .enable_all()
            .build()?;
        let std_listener = std::net::TcpListener::bind(&me.peer_addr)?;
        std_listener.set_nonblocking(true)?;
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let (inbox_tx, inbox_rx) = crossbeam_channel::bounded(INBOX_MAX);
        let (stop_tx, stop_rx) = watch::channel(false);
        {
            let _guard = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(std_listener)?;
            let svc = PeerService {
                inbox: inbox_tx,
                group: PeerGroup {
                    members: cfg.initial_cluster.iter().map(|m| m.id).collect(),
                    me: me.id,
                },
                refused: RefusalLog::default(),
            };
            let router = tonic::service::Routes::new(PdPeerServer::new(svc)).into_axum_router();
            let incoming = security::Incoming::new(listener, security);
            runtime.spawn(crate::server::accept_loop(incoming, router, stop_rx));
        }
        let mut outboxes = HashMap::new();
        for m in cfg.initial_cluster.iter().filter(|m| m.id != me.id) {
            let (tx, rx) = tokio::sync::mpsc::channel(OUTBOX_MAX);
            runtime.spawn(send_loop(
                m.id,
                m.peer_addr.clone(),
                security.clone(),
                rx,
                cmd_tx.clone(),
            ));
            outboxes.insert(m.id, tx);
        }
        let shared = Arc::new(Shared {
            origin: Instant::now(),
            lease_until_ns: AtomicU64::new(0),
        });
        let (role_tx, role_rx) = watch::channel(Role::default());
        let links = Links {
            outboxes,
            role_tx,
            stop_peers: stop_tx,
        };
        let view = Arc::new(ReplicaView::load(local.as_ref(), cfg.scan_regions_max)?);
        let node = Node::open(
            local.engine().clone(),
            cfg,
            shared.clone(),
            links,
            view.clone(),
        )?;
        let thread = std::thread::Builder::new()
            .name("pd-raft".into())
            .spawn(move || node.run(cmd_rx, inbox_rx))?;
        let store = Arc::new(RaftMetaStore {
            local,
            view,
            cmds: cmd_tx,
            shared,
            thread: parking_lot::Mutex::new(Some(thread)),
            runtime: parking_lot::Mutex::new(Some(runtime)),
        });
        Ok((store, role_rx))
    }

    /// This member's view of the applied state, which it answers lookups from.
    pub(crate) fn view(&self) -> &Arc<ReplicaView> {
        &self.view
    }

    /// Whether this member's leader lease holds now.
    pub(crate) fn lease_valid(&self) -> bool {
        self.shared.lease_valid()
    }

    /// Stops the raft thread and the transport; the RocksDB is released once the last
    /// reference to this store (and to `local`) is dropped.
    pub(crate) fn stop(&self) {
        let _ = self.cmds.send(Cmd::Stop);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        if let Some(rt) = self.runtime.lock().take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for RaftMetaStore {
    fn drop(&mut self) {
        self.stop();
    }
}

impl MetaStore for RaftMetaStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.local.get(key)
    }

    /// Proposes `pairs`; the raft thread answers `NotLeader` at once on a member that does not
    /// lead.
    fn write(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let (done, rx) = std_mpsc::sync_channel(1);
        let data = encode_pairs(pairs);
        self.cmds
            .send(Cmd::Propose { data, done })
            .map_err(|_| PdError::NotLeader)?;
        match rx.recv_timeout(WRITE_TIMEOUT) {
            Ok(r) => r,
            Err(_) => Err(PdError::Busy(
                "replicated write not applied in time (outcome unknown)".into(),
            )),
        }
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.local.scan_prefix(prefix)
    }
}

/// Receives the peers' raft messages into the raft thread's inbox, each checked first
/// ([`check_peer_message`]): a batch with one refused message is refused whole, unstepped.
struct PeerService {
    inbox: Sender<Message>,
    group: PeerGroup,
    refused: RefusalLog,
}

/// Counts refused batches and logs them, at most once per [`REFUSAL_LOG_INTERVAL`].
#[derive(Default)]
struct RefusalLog {
    /// Refused since the last line logged.
    since_logged: AtomicU64,
    last_logged: parking_lot::Mutex<Option<Instant>>,
}

impl RefusalLog {
    fn record(&self, member_id: u64, reason: &str) {
        self.since_logged.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_logged.lock();
        if last.is_some_and(|t| t.elapsed() < REFUSAL_LOG_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        let count = self.since_logged.swap(0, Ordering::Relaxed);
        tracing::warn!(
            member_id,
            refused = count,
            "PD peer port refused raft messages; latest: {reason}"
        );
    }
}

impl PeerService {
    /// Every message of `messages`, decoded and checked, or why the batch is refused.
    fn check_batch(
        &self,
        messages: &[Vec<u8>],
    ) -> std::result::Result<Vec<Message>, tonic::Status> {
        if messages.len() > SEND_BATCH_MAX {
            return Err(tonic::Status::invalid_argument(format!(
                "{} raft messages in a batch, at most {SEND_BATCH_MAX}",
                messages.len()
            )));
        }
        messages
            .iter()
            .map(|bytes| {
                check_peer_message(bytes, &self.group).map_err(|e| {
                    let msg = format!("PD member {}: {e}", self.group.me);
                    if e.is_about_sender() {
                        tonic::Status::permission_denied(msg)
                    } else {
                        tonic::Status::invalid_argument(msg)
                    }
                })
            })
            .collect()
    }
}

#[tonic::async_trait]
impl PdPeer for PeerService {
    async fn raft(
        &self,
        req: tonic::Request<PdRaftBatch>,
    ) -> std::result::Result<tonic::Response<Done>, tonic::Status> {
        let messages = self
            .check_batch(&req.into_inner().messages)
            .inspect_err(|status| self.refused.record(self.group.me, status.message()))?;
        for m in messages {
            match self.inbox.try_send(m) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => {
                    return Err(tonic::Status::unavailable("PD member stopping"))
                }
            }
        }
        Ok(tonic::Response::new(Done {}))
    }
}

/// Sends one peer's messages in batches, reconnecting after a failure.
async fn send_loop(
    to: u64,
    addr: String,
    security: security::SecurityManager,
    mut rx: tokio::sync::mpsc::Receiver<Message>,
    cmds: Sender<Cmd>,
) {
    let mut client: Option<PdPeerClient<tonic::transport::Channel>> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < SEND_BATCH_MAX {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let snapshots: Vec<u64> = batch
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
            .map(|m| m.to)
            .collect();
        let req = PdRaftBatch {
            messages: batch
                .iter()
                .filter_map(|m| m.write_to_bytes().ok())
                .collect(),
        };
        if client.is_none() {
            client = connect_peer(&addr, &security).await;
        }
        let ok = match client.as_mut() {
            Some(c) => c.raft(req).await.is_ok(),
            None => false,
        };
        for to in snapshots {
            let _ = cmds.send(Cmd::SnapshotSent { to, ok });
        }
        if !ok {
            client = None;
            let _ = cmds.send(Cmd::Unreachable(to));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn connect_peer(
    addr: &str,
    security: &security::SecurityManager,
) -> Option<PdPeerClient<tonic::transport::Channel>> {
    let endpoint = security
        .endpoint(addr)
        .map_err(|e| tracing::warn!("PD peer {addr}: {e}"))
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(3))
        .tcp_nodelay(true);
    let channel = security.channel(endpoint).await.ok()?;
    Some(PdPeerClient::new(channel))
}

/// raft-rs storage: the log in memory (mirrored in the `raft` column family), snapshots built
/// from the applied state in the `default` column family.
struct PdStorage {
    mem: MemStorage,
    engine: RocksEngine,
    applied: u64,
}

impl Storage for PdStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let other = |e: PdError| raft::Error::Store(raft::StorageError::Other(Box::new(e)));
        let pairs = scan_cf_prefix(&self.engine, CF_DEFAULT, b"").map_err(other)?;
        let mut snap = Snapshot::default();
        snap.set_data(encode_pairs(&pairs).into());
        let meta = snap.mut_metadata();
        meta.index = self.applied;
        meta.term = self.mem.term(self.applied)?;
        meta.set_conf_state(self.mem.initial_state()?.conf_state);
        Ok(snap)
    }
}

fn get_u64_pair(engine: &RocksEngine, key: &[u8]) -> Result<Option<(u64, u64)>> {
    let Some(v) = engine.get_cf(CF_RAFT, key).map_err(storage_err)? else {
        return Ok(None);
    };
    if v.len() != 16 {
        return Err(PdError::Corrupted(format!(
            "raft state {:?} of {} bytes",
            String::from_utf8_lossy(key),
            v.len()
        )));
    }
    Ok(Some((decode_u64(&v[..8])?, decode_u64(&v[8..])?)))
}

fn u64_pair(a: u64, b: u64) -> Vec<u8> {
    [a.to_be_bytes(), b.to_be_bytes()].concat()
}

/// What the raft thread talks to: the peers' outboxes, PD's server (the role), and the peer
/// transport (stopped when the thread ends).
struct Links {
    outboxes: HashMap<u64, tokio::sync::mpsc::Sender<Message>>,
    role_tx: watch::Sender<Role>,
    stop_peers: watch::Sender<bool>,
}

/// The raft thread's state.
struct Node {
    raw: RawNode<PdStorage>,
    shared: Arc<Shared>,
    tick: Duration,
    lease: Duration,
    max_entries: u64,
    links: Links,
    /// Proposals waiting for their entry: index -> (term, reply).
    pending: BTreeMap<u64, (u64, SyncSender<Result<()>>)>,
    /// Read-index rounds in flight: sequence number -> when it was sent.
    reads: BTreeMap<u64, Instant>,
    read_seq: u64,
    /// Index of the first entry of this member's current leadership (0 when not leader).
    leader_from: u64,
    /// A follower that has not heard from its leader for more ticks than this calls it silent.
    silent_ticks: usize,
    /// Updated with every write applied.
    view: Arc<ReplicaView>,
    /// Peer messages dropped for contradicting this member's log.
    refused: RefusalLog,
}

impl Node {
    fn open(
        engine: RocksEngine,
        cfg: &PdConfig,
        shared: Arc<Shared>,
        links: Links,
        view: Arc<ReplicaView>,
    ) -> Result<Node> {
        let mem = MemStorage::new();
        let hard_state = engine
            .get_cf(CF_RAFT, HARD_STATE_KEY)
            .map_err(storage_err)?;
        let conf_state = match engine
            .get_cf(CF_RAFT, CONF_STATE_KEY)
            .map_err(storage_err)?
        {
            Some(v) => ConfState::parse_from_bytes(&v).map_err(storage_err)?,
            None => {
                let cs = ConfState {
                    voters: cfg.initial_cluster.iter().map(|m| m.id).collect(),
                    ..Default::default()
                };
                let mut wb = WriteBatch::default();
                wb.put_cf(
                    CF_RAFT,
                    CONF_STATE_KEY,
                    &cs.write_to_bytes().map_err(storage_err)?,
                );
                engine.write(&wb, true).map_err(storage_err)?;
                cs
            }
        };
        let (base_index, base_term) = get_u64_pair(&engine, BASE_KEY)?.unwrap_or((0, 0));
        if base_index > 0 {
            let mut snap = Snapshot::default();
            snap.mut_metadata().index = base_index;
            snap.mut_metadata().term = base_term;
            snap.mut_metadata().set_conf_state(conf_state.clone());
            mem.wl().apply_snapshot(snap).map_err(storage_err)?;
        } else {
            mem.wl().set_conf_state(conf_state);
        }
        let entries: Vec<Entry> = scan_cf_prefix(&engine, CF_RAFT, ENTRY_PREFIX)?
            .into_iter()
            .map(|(_, v)| Entry::parse_from_bytes(&v).map_err(storage_err))
            .collect::<Result<_>>()?;
        mem.wl().append(&entries).map_err(storage_err)?;
        if let Some(hs) = hard_state {
            mem.wl()
                .set_hardstate(HardState::parse_from_bytes(&hs).map_err(storage_err)?);
        }
        let applied = engine
            .get_cf(CF_RAFT, APPLIED_KEY)
            .map_err(storage_err)?
            .map(|v| decode_u64(&v))
            .transpose()?
            .unwrap_or(0)
            .max(base_index);
        let raft_cfg = raft::Config {
            id: cfg.member_id,
            election_tick: cfg.raft_election_ticks,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        raft_cfg
            .validate()
            .map_err(|e| PdError::InvalidConfig(e.to_string()))?;
        let storage = PdStorage {
            mem,
            engine,
            applied,
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_cfg, storage, &logger)
            .map_err(|e| PdError::Storage(format!("raft: {e}")))?;
        let tick = Duration::from_millis(cfg.raft_tick_ms);
        Ok(Node {
            raw,
            shared,
            tick,
            lease: tick * (cfg.raft_election_ticks as u32 - 2),
            max_entries: cfg.raft_log_max_entries,
            links,
            pending: BTreeMap::new(),
            reads: BTreeMap::new(),
            read_seq: 0,
            leader_from: 0,
            // Two heartbeats missed, and always short of an election.
            silent_ticks: (2 * HEARTBEAT_TICKS + 1).min(cfg.raft_election_ticks - 1),
            view,
            refused: RefusalLog::default(),
        })
    }

    fn run(mut self, cmds: Receiver<Cmd>, inbox: Receiver<Message>) {
        let mut next_tick = Instant::now() + self.tick;
        'outer: loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            crossbeam_channel::select! {
                recv(cmds) -> cmd => match cmd {
                    Ok(Cmd::Stop) | Err(_) => break 'outer,
                    Ok(cmd) => self.on_cmd(cmd),
                },
                recv(inbox) -> m => match m {
                    Ok(m) => self.on_peer_message(m),
                    // The peer server is gone: the member is stopping.
                    Err(_) => break 'outer,
                },
                default(wait) => {}
            }
            while let Ok(cmd) = cmds.try_recv() {
                if matches!(cmd, Cmd::Stop) {
                    break 'outer;
                }
                self.on_cmd(cmd);
            }
            while let Ok(m) = inbox.try_recv() {
                self.on_peer_message(m);
            }
            if Instant::now() >= next_tick {
                next_tick += self.tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.tick;
                }
                self.raw.tick();
                if self.raw.raft.state == StateRole::Leader {
                    self.read_seq += 1;
                    self.reads.insert(self.read_seq, Instant::now());
                    while self.reads.len() > 64 {
                        self.reads.pop_first();
                    }
                    self.raw.read_index(self.read_seq.to_be_bytes().to_vec());
                }
            }
            if let Err(e) = self.on_ready() {
                // The member cannot persist its log: it must not take part any more.
                tracing::error!("PD raft stopped: {e}");
                break 'outer;
            }
            self.publish_role();
        }
        self.fail_pending(|| PdError::NotLeader);
        self.shared.lease_until_ns.store(0, Ordering::Release);
        let _ = self.links.role_tx.send(Role::default());
        let _ = self.links.stop_peers.send(true);
    }

    /// Steps a message the peer port accepted, unless it contradicts this member's log
    /// ([`check_against_log`]).
    fn on_peer_message(&mut self, m: Message) {
        let raft = &self.raw.raft;
        if let Err(e) = check_against_log(&m, raft.term, raft.raft_log.last_index()) {
            self.refused.record(raft.id, &e.to_string());
            return;
        }
        let _ = self.raw.step(m);
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Propose { data, done } => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = done.send(Err(PdError::NotLeader));
                    return;
                }
                let term = self.raw.raft.term;
                match self.raw.propose(Vec::new(), data) {
                    Ok(()) => {
                        let index = self.raw.raft.raft_log.last_index();
                        self.pending.insert(index, (term, done));
                    }
                    Err(e) => {
                        let _ = done.send(Err(PdError::Busy(format!("raft propose: {e}"))));
                    }
                }
            }
            Cmd::Unreachable(to) => self.raw.report_unreachable(to),
            Cmd::SnapshotSent { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            Cmd::Stop => {}
        }
    }

    fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            if let Some(tx) = self.links.outboxes.get(&m.to) {
                let _ = tx.try_send(m);
            }
        }
    }

    fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();
        self.send(rd.take_messages());
        if !rd.snapshot().is_empty() {
            self.apply_snapshot(rd.snapshot().clone())?;
        }
        self.apply(rd.take_committed_entries())?;
        let mut wb = WriteBatch::default();
        if !rd.entries().is_empty() {
            let entries = rd.entries();
            for e in entries {
                let bytes = e.write_to_bytes().map_err(storage_err)?;
                wb.put_cf(CF_RAFT, &entry_key(e.index), &bytes);
            }
            // A new leader's entries may replace a longer tail: drop what lies beyond.
            let last = entries[entries.len() - 1].index;
            wb.delete_range_cf(CF_RAFT, &entry_key(last + 1), &entry_key(u64::MAX));
            self.raw
                .mut_store()
                .mem
                .wl()
                .append(entries)
                .map_err(storage_err)?;
        }
        if let Some(hs) = rd.hs() {
            wb.put_cf(
                CF_RAFT,
                HARD_STATE_KEY,
                &hs.write_to_bytes().map_err(storage_err)?,
            );
            self.raw.mut_store().mem.wl().set_hardstate(hs.clone());
        }
        if !wb.is_empty() {
            self.engine().write(&wb, true).map_err(storage_err)?;
        }
        self.send(rd.take_persisted_messages());
        for rs in rd.take_read_states() {
            self.on_read_state(&rs.request_ctx);
        }
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw
                .mut_store()
                .mem
                .wl()
                .mut_hard_state()
                .set_commit(commit);
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.maybe_compact()
    }

    fn engine(&self) -> &RocksEngine {
        &self.raw.store().engine
    }

    fn on_read_state(&mut self, ctx: &[u8]) {
        let Ok(seq) = <[u8; 8]>::try_from(ctx).map(u64::from_be_bytes) else {
            return;
        };
        if let Some(sent) = self.reads.remove(&seq) {
            let until = sent + self.lease;
            let until_ns = until
                .saturating_duration_since(self.shared.origin)
                .as_nanos() as u64;
            self.shared
                .lease_until_ns
                .fetch_max(until_ns, Ordering::AcqRel);
        }
        self.reads.retain(|s, _| *s > seq);
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<()> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let last_index = last.index;
        let mut wb = WriteBatch::default();
        let mut writes = Vec::new();
        for e in &entries {
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                // The peer port lets no undecodable entry in: this one was damaged on disk.
                let pairs = decode_pairs(&e.data).unwrap_or_else(|err| {
                    panic!(
                        "PD member {}: committed entry {} (term {}) does not decode, \
                         the raft log on disk is damaged: {err}",
                        self.raw.raft.id, e.index, e.term
                    )
                });
                for (k, v) in &pairs {
                    if v.is_empty() {
                        wb.delete_cf(CF_DEFAULT, k);
                    } else {
                        wb.put_cf(CF_DEFAULT, k, v);
                    }
                }
                writes.push(pairs);
            }
            // Membership is static (the initial cluster): PD proposes no conf change, and the
            // peer port refuses entries of one.
        }
        wb.put_cf(CF_RAFT, APPLIED_KEY, &last_index.to_be_bytes());
        self.engine().write(&wb, false).map_err(storage_err)?;
        for pairs in &writes {
            self.view.apply(pairs);
        }
        self.raw.mut_store().applied = last_index;
        for e in &entries {
            if let Some((term, done)) = self.pending.remove(&e.index) {
                let r = if term == e.term {
                    Ok(())
                } else {
                    Err(PdError::NotLeader)
                };
                let _ = done.send(r);
            }
        }
        // Proposals at or below the applied index whose entry was replaced never commit.
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > last_index {
                break;
            }
            let _ = entry.remove().1.send(Err(PdError::NotLeader));
        }
        Ok(())
    }

    fn apply_snapshot(&mut self, snap: Snapshot) -> Result<()> {
        let meta = snap.get_metadata();
        let (index, term) = (meta.index, meta.term);
        let mut wb = WriteBatch::default();
        for (k, _) in scan_cf_prefix(self.engine(), CF_DEFAULT, b"")? {
            wb.delete_cf(CF_DEFAULT, &k);
        }
        // Checked on receipt (the peer port), so this is a broken invariant.
        let pairs = decode_pairs(&snap.data).unwrap_or_else(|err| {
            panic!(
                "PD member {}: snapshot at index {index} (term {term}) does not decode: {err}",
                self.raw.raft.id
            )
        });
        for (k, v) in &pairs {
            wb.put_cf(CF_DEFAULT, k, v);
        }
        wb.delete_range_cf(CF_RAFT, &entry_key(0), &entry_key(u64::MAX));
        wb.put_cf(CF_RAFT, BASE_KEY, &u64_pair(index, term));
        wb.put_cf(
            CF_RAFT,
            CONF_STATE_KEY,
            &meta
                .get_conf_state()
                .write_to_bytes()
                .map_err(storage_err)?,
        );
        wb.put_cf(CF_RAFT, APPLIED_KEY, &index.to_be_bytes());
        self.engine().write(&wb, true).map_err(storage_err)?;
        let store = self.raw.mut_store();
        store.mem.wl().apply_snapshot(snap).map_err(storage_err)?;
        store.applied = index;
        self.view.reset(pairs)?;
        tracing::info!(index, term, "PD member applied a snapshot");
        Ok(())
    }

    /// Drops applied entries once the log holds more than `max_entries`.
    fn maybe_compact(&mut self) -> Result<()> {
        let store = self.raw.store();
        let first = store.mem.first_index().map_err(storage_err)?;
        let applied = store.applied;
        if applied < first || applied - first < self.max_entries {
            return Ok(());
        }
        let compact_to = applied - COMPACT_KEEP.min(self.max_entries / 2);
        let term = store.mem.term(compact_to).map_err(storage_err)?;
        let mut wb = WriteBatch::default();
        wb.delete_range_cf(CF_RAFT, &entry_key(0), &entry_key(compact_to + 1));
        wb.put_cf(CF_RAFT, BASE_KEY, &u64_pair(compact_to, term));
        self.engine().write(&wb, true).map_err(storage_err)?;
        self.raw
            .mut_store()
            .mem
            .wl()
            .compact(compact_to + 1)
            .map_err(storage_err)?;
        Ok(())
    }

    fn publish_role(&mut self) {
        let (is_leader, leader_id, term, last_index, heard) = {
            let raft = &self.raw.raft;
            (
                raft.state == StateRole::Leader,
                raft.leader_id,
                raft.term,
                raft.raft_log.last_index(),
                // A follower counts ticks since its leader's last message here.
                raft.election_elapsed <= self.silent_ticks,
            )
        };
        if is_leader && self.leader_from == 0 {
            // The empty entry a new leader appends: once applied, so is everything before it.
            self.leader_from = last_index;
        } else if !is_leader && self.leader_from != 0 {
            self.leader_from = 0;
            self.shared.lease_until_ns.store(0, Ordering::Release);
            self.reads.clear();
            self.fail_pending(|| PdError::NotLeader);
        }
        let serving =
            is_leader && self.raw.store().applied >= self.leader_from && self.shared.lease_valid();
        let role = Role {
            leader_id,
            serving_term: if serving { term } else { 0 },
            leader_fresh: leader_id != 0 && (is_leader || heard),
        };
        let tx = &self.links.role_tx;
        // A lease that lapses while leading does not withdraw the role: timestamps check the
        // lease themselves.
        let keep = is_leader && tx.borrow().serving_term == term;
        if !keep && *tx.borrow() != role {
            let _ = tx.send(role);
        }
    }

    fn fail_pending(&mut self, err: impl Fn() -> PdError) {
        for (_, (_, done)) in std::mem::take(&mut self.pending) {
            let _ = done.send(Err(err()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_truncation_is_refused() {
        let pairs = vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"empty value deletes".to_vec(), Vec::new()),
        ];
        let bytes = encode_pairs(&pairs);
        assert_eq!(decode_pairs(&bytes).unwrap(), pairs);
        assert!(decode_pairs(&bytes[..bytes.len() - 1]).is_err());
    }

    /// A committed entry that does not decode can only come from a damaged disk (the peer port
    /// lets none in): applying it stops the member with the entry's index and the member's id,
    /// rather than ending the raft thread quietly.
    #[test]
    #[should_panic(expected = "PD member 1: committed entry 2 (term 1) does not decode")]
    fn a_damaged_committed_entry_stops_the_member_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let local = RocksMetaStore::open(dir.path()).unwrap();
        let engine = local.engine().clone();
        let mut wb = WriteBatch::default();
        for (index, data) in [(1, Vec::new()), (2, vec![0xFF; 6])] {
            let e = Entry {
                index,
                term: 1,
                data: data.into(),
                ..Default::default()
            };
            wb.put_cf(CF_RAFT, &entry_key(index), &e.write_to_bytes().unwrap());
        }
        let hs = HardState {
            term: 1,
            vote: 1,
            commit: 2,
            ..Default::default()
        };
        wb.put_cf(CF_RAFT, HARD_STATE_KEY, &hs.write_to_bytes().unwrap());
        engine.write(&wb, true).unwrap();

        let cfg = PdConfig {
            data_dir: dir.path().to_owned(),
            initial_cluster: vec![crate::PdMember {
                id: 1,
                client_addr: "127.0.0.1:1".into(),
                peer_addr: "127.0.0.1:2".into(),
            }],
            member_id: 1,
            ..Default::default()
        };
        let shared = Arc::new(Shared {
            origin: Instant::now(),
            lease_until_ns: AtomicU64::new(0),
        });
        let links = Links {
            outboxes: HashMap::new(),
            role_tx: watch::channel(Role::default()).0,
            stop_peers: watch::channel(false).0,
        };
        let view = Arc::new(ReplicaView::load(&local, cfg.scan_regions_max).unwrap());
        let mut node = Node::open(engine, &cfg, shared, links, view).unwrap();
        let _ = node.on_ready();
    }
}
