//! One simulated Raft node: a `RawNode` over a `MemStorage` that holds only what was persisted.

use raft::eraftpb::{ConfState, Entry, EntryType, Message};
use raft::storage::MemStorage;
use raft::{Config, GetEntriesContext, RawNode, StateRole, Storage};

/// Least ticks without a leader's heartbeat before a follower campaigns.
pub const ELECTION_TICKS: usize = 10;
/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: usize = 2;

/// Whether a node crashes inside a Ready pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// It runs the whole pass.
    No,
    /// It crashes after sending the Ready's messages, before persisting.
    BeforePersist,
    /// An injected bug: it also sends the messages that acknowledge the unpersisted state.
    BeforePersistAfterAck,
}

/// What one pass of the Ready procedure produced for the caller to carry out.
#[derive(Default)]
pub struct ReadyEffects {
    /// Messages to put on the network.
    pub messages: Vec<Message>,
    /// Committed entries the node applied, in index order.
    pub applied: Vec<Entry>,
}

/// A node: its Raft state machine and its applied state.
///
/// The `MemStorage` is written only by the Ready procedure before any message that acknowledges
/// it is sent, so it plays the disk; the `RawNode`'s memory (unstable entries, progress, votes
/// not yet in a Ready) plays RAM and is lost by [`Node::restart`].
pub struct Node {
    /// Raft id, `1..=n`.
    pub id: u64,
    /// The Raft state machine.
    pub raw: RawNode<MemStorage>,
    /// Applied entries: `applied[i]` is the entry at index `i + 1`. Volatile: rebuilt on restart.
    pub applied: Vec<Entry>,
    election_timeout_ticks: usize,
}

fn config(id: u64, election_timeout_ticks: usize) -> Config {
    // Flotilla's raftstore runs with check_quorum and pre_vote on (poller.rs). raft-rs draws its
    // randomized election timeout from `thread_rng`, which no seed controls, so the window is
    // one tick wide and the seed picks each node's timeout instead.
    Config {
        id,
        election_tick: ELECTION_TICKS,
        min_election_tick: election_timeout_ticks,
        max_election_tick: election_timeout_ticks + 1,
        heartbeat_tick: HEARTBEAT_TICKS,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 64,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    }
}

impl Node {
    /// A fresh node in a group of voters `1..=n`; `election_timeout_ticks` is at least
    /// [`ELECTION_TICKS`].
    pub fn new(id: u64, n: u64, election_timeout_ticks: usize) -> Self {
        let voters: Vec<u64> = (1..=n).collect();
        let store = MemStorage::new_with_conf_state(ConfState::from((voters, vec![])));
        Self::with_store(id, store, election_timeout_ticks)
    }

    fn with_store(id: u64, store: MemStorage, election_timeout_ticks: usize) -> Self {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let cfg = config(id, election_timeout_ticks);
        let raw = RawNode::new(&cfg, store, &logger).expect("build RawNode");
        Node {
            id,
            raw,
            applied: Vec::new(),
            election_timeout_ticks,
        }
    }

    /// Crashes and restarts the node: everything not in its storage is lost, and the state
    /// machine is rebuilt by applying the committed log again. `forget_vote` injects a bug: the
    /// node also loses its vote, as if it had granted it before persisting it.
    pub fn restart(&mut self, forget_vote: bool) {
        let old = self.raw.store();
        let mut state = old.initial_state().expect("initial state");
        let first = old.first_index().expect("first index");
        let last = old.last_index().expect("last index");
        let entries = if last < first {
            Vec::new()
        } else {
            old.entries(first, last + 1, None, GetEntriesContext::empty(false))
                .expect("stored entries")
        };
        if forget_vote {
            state.hard_state.vote = 0;
        }
        // Nothing compacts the log, so there is no snapshot to carry over.
        assert_eq!(first, 1, "raft_sim does not compact logs");
        // A copy, not a clone: `MemStorage` clones share their state.
        let store = MemStorage::new();
        {
            let mut core = store.wl();
            core.set_conf_state(state.conf_state.clone());
            core.append(&entries).expect("restore entries");
            core.set_hardstate(state.hard_state);
        }
        *self = Self::with_store(self.id, store, self.election_timeout_ticks);
    }

    /// Whether the node believes it leads its current term.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The node's current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The node's commit index (in memory).
    pub fn committed(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The node's last log index, unstable entries included.
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// Entries `[low, high)` of the node's log, unstable entries included.
    pub fn log_slice(&self, low: u64, high: u64) -> Vec<Entry> {
        if low >= high {
            return Vec::new();
        }
        self.raw
            .raft
            .raft_log
            .slice(low, high, None, GetEntriesContext::empty(false))
            .expect("log slice within bounds")
    }

    /// The term of the entry at `index`, if the node's log holds it.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.raw.raft.raft_log.term(index).ok()
    }

    /// Runs one pass of raft-rs's Ready procedure, in raftstore's order: send, apply snapshot,
    /// apply committed, append, persist hard state, send persisted messages, advance.
    /// With `crash`, the node crashes right after the first step, before it persists anything of
    /// this Ready; the caller must then [`Node::restart`] it.
    pub fn handle_ready(&mut self, crash: Crash) -> Option<ReadyEffects> {
        if !self.raw.has_ready() {
            return None;
        }
        let mut fx = ReadyEffects::default();
        let mut rd = self.raw.ready();
        fx.messages.extend(rd.take_messages());
        if crash != Crash::No {
            if crash == Crash::BeforePersistAfterAck {
                fx.messages.extend(rd.take_persisted_messages());
            }
            return Some(fx);
        }
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.raw
                .mut_store()
                .wl()
                .apply_snapshot(snap)
                .expect("apply snapshot");
        }
        self.apply(rd.take_committed_entries(), &mut fx);
        self.raw
            .mut_store()
            .wl()
            .append(rd.entries())
            .expect("append");
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().wl().set_hardstate(hs.clone());
        }
        fx.messages.extend(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw
                .mut_store()
                .wl()
                .mut_hard_state()
                .set_commit(commit);
        }
        fx.messages.extend(light.take_messages());
        self.apply(light.take_committed_entries(), &mut fx);
        self.raw.advance_apply();
        Some(fx)
    }

    fn apply(&mut self, entries: Vec<Entry>, fx: &mut ReadyEffects) {
        for e in entries {
            assert_eq!(
                e.get_entry_type(),
                EntryType::EntryNormal,
                "no conf changes"
            );
            assert_eq!(
                e.index,
                self.applied.len() as u64 + 1,
                "node {} applied out of order",
                self.id
            );
            self.applied.push(e.clone());
            fx.applied.push(e);
        }
    }
}
