//! `raft_sim`: a deterministic, seeded safety simulation of raft-rs, the Raft library under
//! Flotilla's raftstore.
//!
//! Key types: [`Options`] (what to run, and which bug to inject, if any), [`node::Node`] (a
//! `RawNode` over a `MemStorage` that holds only persisted state), [`network::Network`] (messages
//! in flight with delays, drops, duplicates, reordering and partitions), [`check::Checker`] (the
//! invariants) and [`Stats`] / [`Violation`] (the outcome). Flow: [`run_seed`] draws the cluster
//! size and fault rates from the seed, then on every virtual tick injects faults (partitions,
//! restarts at tick boundaries and inside a Ready, after it sent but before it persisted), ticks every node, lets a client propose a unique value to a leader, delivers due
//! messages, runs each node's Ready procedure (raftstore's order, with `check_quorum` and
//! `pre_vote` on as raftstore runs) and checks: one leader per term, committed prefixes never
//! change, applied entries agree across nodes, and (periodically) log matching. It then heals
//! everything, runs fault-free until every replica has applied the same commit index, and checks
//! that applied states are equal and hold every acknowledged value. One thread, one ChaCha RNG, no
//! wall clock: a seed replays exactly (`cargo run -p raft_sim --example replay -- <seed>`);
//! raft-rs draws election timeouts from `thread_rng`, so each node's timeout is pinned by the seed
//! and missed ticks add the jitter. Not covered: log compaction and snapshots, membership
//! changes, read index. It must not depend on any Flotilla crate, on I/O or on
//! threads; only on `raft`, `rand`, `rand_chacha` and `slog`.
#![deny(missing_docs)]

pub mod check;
pub mod network;
pub mod node;
mod sim;

pub use check::Violation;
pub use sim::run_seed;

/// A bug to inject, to prove the checker catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    /// Node 1 flips a bit in the first value it applies.
    FlipAppliedValue,
    /// A restarting node forgets its vote, as if it had granted it before persisting it.
    VoteBeforePersist,
    /// A node that crashes inside a Ready has already sent the messages that acknowledge the
    /// entries and hard state it had not persisted.
    AppendAckBeforePersist,
}

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Faulty ticks before healing.
    pub ticks: u64,
    /// Bound on the fault-free ticks allowed for convergence.
    pub converge_ticks_max: u64,
    /// A bug to inject, if any.
    pub injected: Option<Injected>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ticks: 800,
            converge_ticks_max: 2_000,
            injected: None,
        }
    }
}

/// What a run did, for a sanity check that it exercised something.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Cluster size.
    pub nodes: usize,
    /// Ticks run, convergence included.
    pub ticks: u64,
    /// Final commit index.
    pub committed_index: u64,
    /// Values proposed.
    pub proposed: u64,
    /// Values the proposing leader saw applied.
    pub acked: u64,
    /// Terms that had a leader.
    pub terms_with_leader: usize,
    /// Node restarts.
    pub restarts: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages dropped (faults and partitions).
    pub dropped: u64,
}
