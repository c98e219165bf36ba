//! The simulation loop: faults, ticks, proposals, delivery, Ready and checks.

use std::collections::{HashMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::{check_log_matching, Checker, Violation};
use crate::network::{Network, NetworkFaults};
use crate::node::{Crash, Node, ELECTION_TICKS};
use crate::{Injected, Options, Stats};

/// Bound on Ready passes per node per tick.
const READY_PASSES_MAX: usize = 8;

struct Sim {
    opts: Options,
    rng: ChaCha8Rng,
    nodes: Vec<Node>,
    net: Network,
    faults: NetworkFaults,
    restart_probability: f64,
    partition_probability: f64,
    propose_probability: f64,
    heal_at_ticks: Option<u64>,
    checker: Checker,
    now_ticks: u64,
    stats: Stats,
    next_value: u64,
    proposer_of: HashMap<u64, u64>,
    acked: HashSet<u64>,
    flipped: bool,
}

/// Runs one seeded simulation; the same seed and options always take the same path. A panic
/// inside raft-rs (one of its own assertions) comes back as [`Violation::Panicked`], so that the
/// caller can name the seed.
pub fn run_seed(seed: u64, opts: Options) -> Result<Stats, Violation> {
    // The simulation is dropped whole on a panic, so no broken state is observed after unwinding.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(seed, opts))).unwrap_or_else(
        |payload| {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(Violation::Panicked { message })
        },
    )
}

fn run(seed: u64, opts: Options) -> Result<Stats, Violation> {
    let mut sim = Sim::new(seed, opts);
    for _ in 0..opts.ticks {
        sim.inject_faults();
        sim.step(true)?;
    }
    sim.converge()?;
    sim.check_final()?;
    sim.stats.ticks = sim.now_ticks;
    sim.stats.terms_with_leader = sim.checker.terms_with_leader();
    sim.stats.delivered = sim.net.delivered;
    sim.stats.dropped = sim.net.dropped;
    sim.stats.acked = sim.acked.len() as u64;
    Ok(sim.stats)
}

impl Sim {
    fn new(seed: u64, opts: Options) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n: usize = if rng.gen_bool(0.5) { 3 } else { 5 };
        let faults = NetworkFaults {
            delay_ticks_max: rng.gen_range(0..=4),
            drop_probability: rng.gen_range(0.0..0.2),
            duplicate_probability: rng.gen_range(0.0..0.1),
        };
        Sim {
            opts,
            nodes: (1..=n as u64)
                .map(|id| {
                    Node::new(
                        id,
                        n as u64,
                        rng.gen_range(ELECTION_TICKS..2 * ELECTION_TICKS),
                    )
                })
                .collect(),
            net: Network::new(n),
            faults,
            restart_probability: rng.gen_range(0.0..0.05),
            partition_probability: rng.gen_range(0.0..0.05),
            propose_probability: rng.gen_range(0.1..0.6),
            heal_at_ticks: None,
            checker: Checker::default(),
            now_ticks: 0,
            stats: Stats {
                nodes: n,
                ..Stats::default()
            },
            next_value: 1,
            proposer_of: HashMap::new(),
            acked: HashSet::new(),
            flipped: false,
            rng,
        }
    }

    fn inject_faults(&mut self) {
        if self.heal_at_ticks.is_some_and(|t| t <= self.now_ticks) {
            self.net.heal();
            self.heal_at_ticks = None;
        }
        if self.heal_at_ticks.is_none() && self.rng.gen_bool(self.partition_probability) {
            self.net.partition(&mut self.rng);
            self.heal_at_ticks = Some(self.now_ticks + self.rng.gen_range(10..120));
            self.stats.partitions += 1;
        }
        if self.rng.gen_bool(self.restart_probability) {
            let i = self.rng.gen_range(0..self.nodes.len());
            self.restart(i);
        }
    }

    fn restart(&mut self, i: usize) {
        let forget_vote = self.opts.injected == Some(Injected::VoteBeforePersist);
        self.nodes[i].restart(forget_vote);
        self.stats.restarts += 1;
    }

    /// One tick: tick nodes, maybe propose, deliver, run Ready, check. Clock drift and client
    /// proposals happen only while `faulty`; convergence runs without them.
    fn step(&mut self, faulty: bool) -> Result<(), Violation> {
        self.now_ticks += 1;
        for node in &mut self.nodes {
            // A node sometimes misses a tick: clocks drift, and timeouts vary with the seed.
            if !faulty || self.rng.gen_bool(0.9) {
                node.raw.tick();
            }
        }
        if faulty && self.rng.gen_bool(self.propose_probability) {
            self.propose();
        }
        for msg in self.net.take_due(self.now_ticks) {
            let node = &mut self.nodes[msg.to as usize - 1];
            // Errors here are for messages a node may ignore (e.g. from a removed peer).
            let _ = node.raw.step(msg);
            // Checked per message: a node may win and lose a term within one tick.
            self.checker.check_leader(node)?;
        }
        for i in 0..self.nodes.len() {
            self.run_ready(i)?;
        }
        for node in &self.nodes {
            self.checker.check_leader(node)?;
            self.checker.check_committed(node)?;
        }
        check_log_matching(&self.nodes)
    }

    fn propose(&mut self) {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_leader())
            .collect();
        if leaders.is_empty() {
            return;
        }
        let i = leaders[self.rng.gen_range(0..leaders.len())];
        let value = self.next_value;
        self.next_value += 1;
        if self.nodes[i]
            .raw
            .propose(vec![], value.to_be_bytes().to_vec())
            .is_ok()
        {
            self.proposer_of.insert(value, self.nodes[i].id);
            self.stats.proposed += 1;
        }
    }

    fn run_ready(&mut self, i: usize) -> Result<(), Violation> {
        for _ in 0..READY_PASSES_MAX {
            // Restarts come a few times more often at tick boundaries than inside a Ready.
            let crash = match self.rng.gen_bool(self.restart_probability / 4.0) {
                false => Crash::No,
                true if self.opts.injected == Some(Injected::AppendAckBeforePersist) => {
                    Crash::BeforePersistAfterAck
                }
                true => Crash::BeforePersist,
            };
            let Some(mut fx) = self.nodes[i].handle_ready(crash) else {
                return Ok(());
            };
            for msg in fx.messages {
                self.net
                    .send(self.now_ticks, msg, &self.faults, &mut self.rng);
            }
            if crash != Crash::No {
                self.restart(i);
                return Ok(());
            }
            let id = self.nodes[i].id;
            if self.opts.injected == Some(Injected::FlipAppliedValue) && id == 1 && !self.flipped {
                self.flip_first_value(i, &mut fx.applied);
            }
            for e in &fx.applied {
                if let Some(value) = decode(&e.data) {
                    if self.proposer_of.get(&value) == Some(&id) {
                        self.acked.insert(value);
                    }
                }
            }
            self.checker.check_applied(id, &fx.applied)?;
        }
        Ok(())
    }

    fn flip_first_value(&mut self, i: usize, applied: &mut [raft::eraftpb::Entry]) {
        let Some(pos) = applied.iter().position(|e| !e.data.is_empty()) else {
            return;
        };
        let e = &mut applied[pos];
        let mut data = e.data.to_vec();
        data[7] ^= 1;
        e.data = data.into();
        let idx = e.index as usize - 1;
        self.nodes[i].applied[idx] = e.clone();
        self.flipped = true;
    }

    /// Heals everything and runs fault-free until every replica applied the same commit index.
    fn converge(&mut self) -> Result<(), Violation> {
        self.net.heal();
        self.heal_at_ticks = None;
        self.faults = NetworkFaults::reliable();
        self.restart_probability = 0.0;
        for _ in 0..self.opts.converge_ticks_max {
            self.step(false)?;
            if self.converged() {
                return Ok(());
            }
        }
        Err(Violation::NoConvergence {
            committed: self.nodes.iter().map(|n| n.committed()).collect(),
        })
    }

    fn converged(&self) -> bool {
        let Some(leader) = self.nodes.iter().find(|n| n.is_leader()) else {
            return false;
        };
        let commit = leader.committed();
        commit == leader.last_index()
            && self
                .nodes
                .iter()
                .all(|n| n.committed() == commit && n.applied.len() as u64 == commit)
    }

    fn check_final(&mut self) -> Result<(), Violation> {
        check_log_matching(&self.nodes)?;
        let first = &self.nodes[0];
        for other in &self.nodes[1..] {
            if other.applied != first.applied {
                return Err(Violation::Diverged {
                    a: first.id,
                    b: other.id,
                });
            }
        }
        let mut seen = HashSet::new();
        for value in first.applied.iter().filter_map(|e| decode(&e.data)) {
            if !seen.insert(value) {
                return Err(Violation::AppliedTwice { value });
            }
        }
        let mut acked: Vec<u64> = self.acked.iter().copied().collect();
        acked.sort_unstable();
        if let Some(&value) = acked.iter().find(|v| !seen.contains(v)) {
            return Err(Violation::LostAck { value });
        }
        self.stats.committed_index = first.applied.len() as u64;
        Ok(())
    }
}

fn decode(data: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(data.try_into().ok()?))
}
