//! What goes in and out of the raftstore: requests and their callbacks, region errors, the
//! tasks the store hands to its PD worker, and the two ways into the raft poller: the bounded
//! mailbox ([`StoreMsg`], may refuse under load) and the unbounded control channel
//! ([`ControlMsg`], never refuses).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use engine::EngineSnapshot;
use proto::flotillapb::{self, RaftApplyState};
use proto::{errorpb, metapb, pdpb};
use raft::eraftpb::ConfChange;

/// A region's id.
pub type RegionId = u64;
/// A store's id.
pub type StoreId = u64;
/// A peer's id (unique in the cluster, allocated by PD).
pub type PeerId = u64;

/// Why a region could not serve a request. Answered to clients as `errorpb::Error` data.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RegionError {
    /// This peer is not the leader; `leader` is the one it knows of.
    #[error("region {region_id}: not leader (leader {leader:?})")]
    NotLeader {
        /// The region.
        region_id: RegionId,
        /// The leader this store knows of.
        leader: Option<metapb::Peer>,
    },
    /// No peer of the region lives on this store.
    #[error("region {0} not found")]
    RegionNotFound(RegionId),
    /// The peer exists but has no data yet (waits for a snapshot).
    #[error("region {0} not initialized")]
    RegionNotInitialized(RegionId),
    /// The request's epoch is not the region's; the current regions are attached.
    #[error("epoch not match: {message}")]
    EpochNotMatch {
        /// What did not match.
        message: String,
        /// The regions the store has now for the requested range.
        current_regions: Vec<metapb::Region>,
    },
    /// A key of the request lies outside the region.
    #[error("key {key:?} not in region {}", region.id)]
    KeyNotInRegion {
        /// The key (as the client sent it).
        key: Vec<u8>,
        /// The region.
        region: Box<metapb::Region>,
    },
    /// A queue or window is full; retry later.
    #[error("server is busy: {0}")]
    ServerIsBusy(String),
    /// The proposal would make a raft entry larger than the limit.
    #[error("region {region_id}: raft entry of {entry_size} bytes too large")]
    RaftEntryTooLarge {
        /// The region.
        region_id: RegionId,
        /// Size of the entry.
        entry_size: u64,
    },
    /// The proposal was overtaken by a leader change; its effect is unknown to the client only
    /// in that it was not applied.
    #[error("stale command")]
    StaleCommand,
    /// The request named a peer id that is not this store's peer of the region.
    #[error("region {region_id}: request for peer {request_peer_id}, store has {store_peer_id}")]
    MismatchPeerId {
        /// The region.
        region_id: RegionId,
        /// Peer id in the request.
        request_peer_id: PeerId,
        /// Peer id on this store.
        store_peer_id: PeerId,
    },
    /// The store's disk is full; writes that add data are refused until space returns.
    #[error("store {store_id}: disk full: {reason}")]
    DiskFull {
        /// The full store.
        store_id: StoreId,
        /// Available bytes against the reserve.
        reason: String,
    },
    /// The region is being merged into another (PrepareMerge proposed or applied): it takes
    /// no writes or reads until the merge ends. The client retries.
    #[error("region {0} is merging")]
    ProposalInMergingMode(RegionId),
    /// Anything else, with its reason.
    #[error("{0}")]
    Other(String),
}

impl RegionError {
    /// The answer to a proposal whose peer went away before the entry was applied here: the
    /// entry may still commit on the other peers. Carried as a region error with no
    /// retryable kind, so that a client reports it instead of sending the write again.
    pub fn outcome_unknown(region_id: RegionId) -> RegionError {
        RegionError::Other(format!(
            "region {region_id}: the peer was removed while the write was in flight; its outcome is unknown"
        ))
    }

    /// The protocol form, as the client expects it in `region_error`.
    pub fn to_pb(&self) -> errorpb::Error {
        let mut e = errorpb::Error {
            message: self.to_string(),
            ..Default::default()
        };
        match self {
            RegionError::NotLeader { region_id, leader } => {
                e.not_leader = Some(errorpb::NotLeader {
                    region_id: *region_id,
                    leader: *leader,
                });
            }
            RegionError::RegionNotFound(id) => {
                e.region_not_found = Some(errorpb::RegionNotFound { region_id: *id });
            }
            RegionError::RegionNotInitialized(id) => {
                e.region_not_initialized = Some(errorpb::RegionNotInitialized { region_id: *id });
            }
            RegionError::EpochNotMatch {
                current_regions, ..
            } => {
                e.epoch_not_match = Some(errorpb::EpochNotMatch {
                    current_regions: current_regions.clone(),
                });
            }
            RegionError::KeyNotInRegion { key, region } => {
                e.key_not_in_region = Some(errorpb::KeyNotInRegion {
                    key: key.clone(),
                    region_id: region.id,
                    start_key: region.start_key.clone(),
                    end_key: region.end_key.clone(),
                });
            }
            RegionError::ServerIsBusy(reason) => {
                e.server_is_busy = Some(errorpb::ServerIsBusy {
                    reason: reason.clone(),
                    backoff_ms: 10,
                    ..Default::default()
                });
            }
            RegionError::RaftEntryTooLarge {
                region_id,
                entry_size,
            } => {
                e.raft_entry_too_large = Some(errorpb::RaftEntryTooLarge {
                    region_id: *region_id,
                    entry_size: *entry_size,
                });
            }
            RegionError::StaleCommand => e.stale_command = Some(errorpb::StaleCommand {}),
            RegionError::MismatchPeerId {
                request_peer_id,
                store_peer_id,
                ..
            } => {
                e.mismatch_peer_id = Some(errorpb::MismatchPeerId {
                    request_peer_id: *request_peer_id,
                    store_peer_id: *store_peer_id,
                });
            }
            RegionError::DiskFull { store_id, reason } => {
                e.disk_full = Some(errorpb::DiskFull {
                    store_id: vec![*store_id],
                    reason: reason.clone(),
                });
            }
            RegionError::ProposalInMergingMode(id) => {
                e.proposal_in_merging_mode =
                    Some(errorpb::ProposalInMergingMode { region_id: *id });
            }
            RegionError::Other(_) => {}
        }
        e
    }
}

/// Where a client request is going: taken from `kvrpcpb::Context`.
#[derive(Clone, Debug, Default)]
pub struct RequestHeader {
    /// The region.
    pub region_id: RegionId,
    /// The epoch the client believes in; `None` skips the check (internal callers only).
    pub region_epoch: Option<metapb::RegionEpoch>,
    /// The peer the client addressed; `None` skips the check.
    pub peer: Option<metapb::Peer>,
    /// For a write computed from a read view: the leader term of that view. The proposal is
    /// refused (`StaleCommand`) if the leader's term has changed since, because another
    /// leader may have written in between. `None` skips the check.
    pub term: Option<u64>,
}

/// One change to the region's data, as a write proposal carries it: keys are
/// memcomparable-encoded user keys (the form of region boundaries; the raftstore adds its data
/// prefix), and an empty `DeleteRange` end means the region's end.
pub use engine::Modify as DataModify;

/// A consistent view of one region's data, proven current by the leader.
pub struct ReadResponse {
    /// Point-in-time view of the store's engine; read only inside `region`'s range.
    pub snapshot: Arc<dyn EngineSnapshot>,
    /// The region as it was when the read was served.
    pub region: metapb::Region,
    /// The leader's term when the view was taken (see [`RequestHeader::term`]).
    pub term: u64,
}

/// Called once when a write has been applied (or has failed).
pub type WriteCallback = Box<dyn FnOnce(Result<(), RegionError>) + Send>;
/// Called once with a read view (or the reason there is none).
pub type ReadCallback = Box<dyn FnOnce(Result<ReadResponse, RegionError>) + Send>;

/// Work for the store's PD worker (which owns the PD client and lives outside the raftstore).
#[derive(Debug)]
pub enum PdTask {
    /// Report a region this store leads.
    RegionHeartbeat {
        /// The region.
        region: metapb::Region,
        /// This store's peer, the leader.
        leader: metapb::Peer,
        /// Peers that are behind (not caught up with the leader's log).
        pending_peers: Vec<metapb::Peer>,
        /// Peers that have not answered for a while, and for how many seconds.
        down_peers: Vec<pdpb::PeerStats>,
        /// Bytes of data in the region, as last measured.
        approximate_size: u64,
        /// Keys in the region, as last measured.
        approximate_keys: u64,
        /// The leader's term.
        term: u64,
    },
    /// Ask PD for ids for a split at `split_keys`, then hand them to
    /// [`crate::RaftRouter::on_split_ids`].
    AskBatchSplit {
        /// The region as the leader sees it.
        region: metapb::Region,
        /// Encoded split keys, ascending, strictly inside the region.
        split_keys: Vec<Vec<u8>>,
    },
    /// Tell PD about the regions a split produced.
    ReportBatchSplit {
        /// Every region of the split, the original included.
        regions: Vec<metapb::Region>,
    },
    /// Ask PD for the region: this store's peer has heard from no leader for a while and may
    /// have been removed while it could not hear about it. Answer with
    /// [`crate::RaftRouter::on_stale_peer_check`].
    CheckStalePeer {
        /// The region as the peer knows it.
        region: metapb::Region,
        /// The peer in question.
        peer: metapb::Peer,
    },
}

/// A region as the store currently sees it (for status pages, the PD worker and routing).
#[derive(Clone, Debug)]
pub struct RegionInfo {
    /// The region.
    pub region: metapb::Region,
    /// This store's peer.
    pub peer: metapb::Peer,
    /// The leader's peer id, 0 when unknown.
    pub leader_id: PeerId,
    /// Whether this store's peer leads.
    pub is_leader: bool,
    /// Current term.
    pub term: u64,
    /// Last applied index.
    pub applied_index: u64,
    /// Log entries up to here have been compacted away.
    pub truncated_index: u64,
    /// Bytes of data, as last measured.
    pub approximate_size: u64,
    /// Keys, as last measured.
    pub approximate_keys: u64,
}

/// What clients and other stores send to the raft poller, through its bounded mailbox. Each of
/// these may be refused when the mailbox is full: a client is told `ServerIsBusy` and retries,
/// and raft retransmits a dropped message.
pub(crate) enum StoreMsg {
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
}

/// What the store's own threads and its PD worker send to the raft poller, through the
/// unbounded control channel. None of these may be lost (an apply result or a snapshot's
/// completion dropped would stall a region for good), and their senders must never wait for
/// the poller, so the channel has no bound: its volume follows the poller's own work (one apply
/// result per region per apply round, one answer per task the poller handed out).
pub(crate) enum ControlMsg {
    /// The apply thread's report on one region.
    ApplyRes(Box<ApplyRes>),
    /// The apply thread has written (or failed to write) a snapshot the poller handed it.
    SnapshotApplied {
        region_id: RegionId,
        /// The peer the snapshot was for (the region's peer may have been replaced since).
        peer_id: PeerId,
        result: Result<(), String>,
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
    /// A PrepareMerge this store proposed was not applied; the region serves again.
    MergeFailed { region_id: RegionId },
    /// Ids PD allocated for a split.
    SplitIds {
        region_id: RegionId,
        epoch: metapb::RegionEpoch,
        split_keys: Vec<Vec<u8>>,
        ids: Vec<pdpb::SplitId>,
    },
    /// An operator's request to split at given keys.
    SplitRequest {
        region_id: RegionId,
        split_keys: Vec<Vec<u8>>,
    },
    /// PD's answer to a region heartbeat.
    HeartbeatResponse(Box<pdpb::RegionHeartbeatResponse>),
    /// Whether a snapshot reached its target.
    SnapshotStatus {
        region_id: RegionId,
        to_peer_id: PeerId,
        delivered: bool,
    },
    /// The snapshot worker has built a snapshot of the region for `to`.
    SnapshotBuilt { region_id: RegionId, to: PeerId },
    /// PD's region for a peer that asked with [`PdTask::CheckStalePeer`] (`None`: PD does not
    /// know the region).
    StalePeerCheck {
        region_id: RegionId,
        peer_id: PeerId,
        pd_region: Option<metapb::Region>,
    },
    /// Stop the poller.
    Stop,
}

/// What applying changed besides data, for the poller to act on.
#[derive(Debug)]
pub(crate) enum ExecResult {
    /// Membership changed; the poller must tell raft-rs.
    ChangePeer {
        cc: ConfChange,
        region: metapb::Region,
    },
    /// The region split; `regions` holds all parts, the derived one included.
    Split {
        derived: metapb::Region,
        regions: Vec<metapb::Region>,
    },
    /// The log may be compacted up to (and including) `index`.
    CompactLog { index: u64, term: u64 },
    /// PrepareMerge applied: the region (epoch raised) takes nothing until the merge ends.
    PrepareMerge {
        region: metapb::Region,
        state: flotillapb::MergeState,
    },
    /// CommitMerge applied in the target: `region` now covers `source`, whose peer here is
    /// tombstoned (its data stays: it is the target's now).
    CommitMerge {
        region: metapb::Region,
        source: metapb::Region,
    },
    /// RollbackMerge applied: the region serves again (epoch raised).
    RollbackMerge { region: metapb::Region },
}

/// The apply thread's report on one region after a round.
#[derive(Debug)]
pub(crate) struct ApplyRes {
    /// The region.
    pub region_id: RegionId,
    /// Progress after the round.
    pub apply_state: RaftApplyState,
    /// Admin and membership effects, in log order.
    pub results: Vec<ExecResult>,
    /// Bytes of keys and values written by the round.
    pub written_bytes: u64,
}

/// How much work the raft poller has done, for tests and status pages: a test asserts on
/// these counts (never on time) that a round's work follows the regions that had something
/// to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollerStats {
    /// Loop rounds.
    pub rounds: u64,
    /// Rounds that ticked every peer.
    pub tick_rounds: u64,
    /// Peers looked at (ticked, or checked for a Ready), all rounds together.
    pub peers_examined: u64,
    /// Peers looked at in rounds without a tick: proportional to the regions that received
    /// something, not to the regions the store holds.
    pub peers_examined_between_ticks: u64,
    /// Reads served by a leader's lease on the caller's thread, without the poller.
    pub local_reads: u64,
    /// Peers ticked, all tick rounds together: with hibernation, only the awake ones.
    pub peers_ticked: u64,
    /// Peers that tick (not hibernated), as of the last tick round.
    pub awake_peers: u64,
    /// Peers the store holds, as of the last tick round.
    pub peers: u64,
}

/// The poller's counters, shared with the router.
#[derive(Default)]
pub(crate) struct PollerCounters {
    rounds: AtomicU64,
    peers_examined: AtomicU64,
    peers_examined_between_ticks: AtomicU64,
    pub local_reads: AtomicU64,
    /// Updated together, so that a reader's peers ticked per tick round is exact (read apart,
    /// a round's ticks could be counted before the round is).
    ticks: parking_lot::Mutex<TickCounts>,
}

#[derive(Clone, Copy, Default)]
struct TickCounts {
    tick_rounds: u64,
    peers_ticked: u64,
    awake_peers: u64,
    peers: u64,
}

impl PollerCounters {
    /// Records one round that looked at `peers` peers (a tick round is counted by
    /// [`PollerCounters::on_tick`]).
    pub fn on_round(&self, ticked: bool, peers: u64) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.peers_examined.fetch_add(peers, Ordering::Relaxed);
        if !ticked {
            self.peers_examined_between_ticks
                .fetch_add(peers, Ordering::Relaxed);
        }
    }

    /// Records a tick round that ticked `ticked` of the store's `peers` peers, `awake` of
    /// which tick on (the others hibernate).
    pub fn on_tick(&self, ticked: u64, awake: u64, peers: u64) {
        let mut t = self.ticks.lock();
        t.tick_rounds += 1;
        t.peers_ticked += ticked;
        t.awake_peers = awake;
        t.peers = peers;
    }

    /// The counts so far.
    pub fn stats(&self) -> PollerStats {
        let t = *self.ticks.lock();
        PollerStats {
            rounds: self.rounds.load(Ordering::Relaxed),
            tick_rounds: t.tick_rounds,
            peers_examined: self.peers_examined.load(Ordering::Relaxed),
            peers_examined_between_ticks: self.peers_examined_between_ticks.load(Ordering::Relaxed),
            local_reads: self.local_reads.load(Ordering::Relaxed),
            peers_ticked: t.peers_ticked,
            awake_peers: t.awake_peers,
            peers: t.peers,
        }
    }
}
