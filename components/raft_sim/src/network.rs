//! A simulated network: messages in flight with delays, drops, duplicates and partitions.

use raft::eraftpb::Message;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// How unreliable the network is; drawn from the seed by [`crate::Options`].
#[derive(Clone, Copy, Debug)]
pub struct NetworkFaults {
    /// Largest delay of one message, in ticks (0 = next tick).
    pub delay_ticks_max: u64,
    /// Probability that a sent message is dropped.
    pub drop_probability: f64,
    /// Probability that a sent message is delivered twice.
    pub duplicate_probability: f64,
}

impl NetworkFaults {
    /// A network that delivers every message once, on the next tick.
    pub fn reliable() -> Self {
        NetworkFaults {
            delay_ticks_max: 0,
            drop_probability: 0.0,
            duplicate_probability: 0.0,
        }
    }
}

struct InFlight {
    deliver_at_ticks: u64,
    // Random tie-break, so that messages due on the same tick arrive in any order.
    order_key: u64,
    msg: Message,
}

/// Messages in flight between nodes `1..=n`.
pub struct Network {
    in_flight: Vec<InFlight>,
    /// `group[id]` is the partition side of node `id`; nodes talk only within one side.
    group: Vec<u8>,
    /// Messages dropped by faults or partitions.
    pub dropped: u64,
    /// Messages delivered.
    pub delivered: u64,
}

/// Bound on messages in flight; a run that reaches it is a simulator bug, not a Raft one.
pub const IN_FLIGHT_MAX: usize = 200_000;

impl Network {
    /// A network of `n` nodes with no partition.
    pub fn new(n: usize) -> Self {
        Network {
            in_flight: Vec::new(),
            group: vec![0; n + 1],
            dropped: 0,
            delivered: 0,
        }
    }

    /// Queues `msg`, applying drops, duplicates and delays from `faults`.
    pub fn send(
        &mut self,
        now_ticks: u64,
        msg: Message,
        faults: &NetworkFaults,
        rng: &mut ChaCha8Rng,
    ) {
        if rng.gen_bool(faults.drop_probability) {
            self.dropped += 1;
            return;
        }
        let copies = if rng.gen_bool(faults.duplicate_probability) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay_ticks = rng.gen_range(0..=faults.delay_ticks_max);
            self.in_flight.push(InFlight {
                deliver_at_ticks: now_ticks + 1 + delay_ticks,
                order_key: rng.gen(),
                msg: msg.clone(),
            });
        }
        assert!(
            self.in_flight.len() <= IN_FLIGHT_MAX,
            "network queue over its bound"
        );
    }

    /// Removes and returns the messages due by `now_ticks` that cross no partition, in a random order.
    pub fn take_due(&mut self, now_ticks: u64) -> Vec<Message> {
        let (mut due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|m| m.deliver_at_ticks <= now_ticks);
        self.in_flight = rest;
        due.sort_by_key(|m| m.order_key);
        let mut out = Vec::with_capacity(due.len());
        for m in due {
            if self.group[m.msg.from as usize] == self.group[m.msg.to as usize] {
                self.delivered += 1;
                out.push(m.msg);
            } else {
                self.dropped += 1;
            }
        }
        out
    }

    /// Splits the nodes into two random sides (either may be empty).
    pub fn partition(&mut self, rng: &mut ChaCha8Rng) {
        for g in self.group.iter_mut().skip(1) {
            *g = rng.gen_range(0..2);
        }
    }

    /// Puts every node back on one side.
    pub fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
    }

    /// Whether any partition is in place.
    pub fn is_partitioned(&self) -> bool {
        self.group.iter().skip(1).any(|g| *g != self.group[1])
    }
}
