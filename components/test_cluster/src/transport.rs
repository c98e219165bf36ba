//! An in-process transport between the stores of a test cluster. Every message passes through
//! the cluster's filters, which can drop, delay, partition and isolate traffic; randomness comes
//! from one seeded generator, so a run replays from its seed.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use proto::flotillapb::RaftMessage;
use raft::eraftpb::MessageType;
use raftstore::{RaftRouter, Transport};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a filter decides for one message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// Deliver now.
    Pass,
    /// Lose it.
    Drop,
    /// Deliver after this long.
    Delay(Duration),
}

/// A rule over store-to-store traffic.
#[derive(Clone, Debug)]
pub enum Filter {
    /// Drop each message with this probability.
    DropRate(f64),
    /// Delay each message by a random duration up to this bound.
    DelayUpTo(Duration),
    /// Drop every message between the two groups.
    Partition(HashSet<u64>, HashSet<u64>),
    /// Drop every message to or from this store.
    Isolate(u64),
    /// Drop every message of this region to this store.
    DropRegionTo {
        /// The region.
        region_id: u64,
        /// The receiving store.
        store_id: u64,
    },
    /// Apply `verdict` to every raft message of this type to this store, counting them.
    MsgTypeTo {
        /// The raft message type.
        msg_type: MessageType,
        /// The receiving store.
        store_id: u64,
        /// What happens to them.
        verdict: Verdict,
        /// How many were seen.
        hits: Arc<AtomicU64>,
    },
}

impl Filter {
    fn decide(&self, from: u64, to: u64, msg: &RaftMessage, rng: &mut ChaCha8Rng) -> Verdict {
        let region_id = msg.region_id;
        match self {
            Filter::DropRate(p) if rng.gen_bool(*p) => Verdict::Drop,
            Filter::DelayUpTo(d) => Verdict::Delay(d.mul_f64(rng.gen::<f64>())),
            Filter::Partition(a, b)
                if (a.contains(&from) && b.contains(&to))
                    || (b.contains(&from) && a.contains(&to)) =>
            {
                Verdict::Drop
            }
            Filter::Isolate(s) if *s == from || *s == to => Verdict::Drop,
            Filter::DropRegionTo {
                region_id: r,
                store_id: s,
            } if *r == region_id && *s == to => Verdict::Drop,
            Filter::MsgTypeTo {
                msg_type,
                store_id,
                verdict,
                hits,
            } if *store_id == to && raft_msg_type(msg) == Some(*msg_type) => {
                hits.fetch_add(1, Ordering::Relaxed);
                *verdict
            }
            _ => Verdict::Pass,
        }
    }
}

struct Delayed {
    at: Instant,
    seq: u64,
    msg: RaftMessage,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at && self.seq == o.seq
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: the earliest deadline must compare greatest.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Shared by every store of a cluster: the routers, the filters and the delay queue.
pub struct Network {
    routers: RwLock<HashMap<u64, RaftRouter>>,
    filters: Mutex<Vec<Filter>>,
    rng: Mutex<ChaCha8Rng>,
    delayed: Mutex<(BinaryHeap<Delayed>, u64, bool)>,
    wake: Condvar,
}

impl Network {
    /// A network whose random choices follow `seed`. Starts the delay thread.
    pub fn new(seed: u64) -> Arc<Network> {
        let net = Arc::new(Network {
            routers: RwLock::new(HashMap::new()),
            filters: Mutex::new(vec![]),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            delayed: Mutex::new((BinaryHeap::new(), 0, false)),
            wake: Condvar::new(),
        });
        let weak = Arc::downgrade(&net);
        std::thread::Builder::new()
            .name("net-delay".into())
            .spawn(move || delay_loop(weak))
            .expect("spawn delay thread");
        net
    }

    /// Makes `store_id` reachable through `router`.
    pub fn register(&self, store_id: u64, router: RaftRouter) {
        self.routers.write().insert(store_id, router);
    }

    /// Makes `store_id` unreachable (its store stopped).
    pub fn unregister(&self, store_id: u64) {
        self.routers.write().remove(&store_id);
    }

    /// Adds a filter.
    pub fn add_filter(&self, f: Filter) {
        self.filters.lock().push(f);
    }

    /// Removes every filter: the network heals.
    pub fn clear_filters(&self) {
        self.filters.lock().clear();
    }

    /// Stops the delay thread.
    pub fn shutdown(&self) {
        self.delayed.lock().2 = true;
        self.wake.notify_all();
    }

    fn deliver(&self, msg: RaftMessage) {
        let to = msg.to_peer.as_ref().map(|p| p.store_id).unwrap_or(0);
        let router = self.routers.read().get(&to).cloned();
        let from_router = msg
            .from_peer
            .as_ref()
            .and_then(|p| self.routers.read().get(&p.store_id).cloned());
        let is_snapshot = is_snapshot(&msg);
        let (region_id, to_peer) = (
            msg.region_id,
            msg.to_peer.as_ref().map(|p| p.id).unwrap_or(0),
        );
        let delivered = match router {
            Some(r) => r.send_raft_message(msg).is_ok(),
            None => false,
        };
        if is_snapshot {
            if let Some(r) = from_router {
                r.report_snapshot_status(region_id, to_peer, delivered);
            }
        }
    }

    fn send(&self, msg: RaftMessage) {
        let from = msg.from_peer.as_ref().map(|p| p.store_id).unwrap_or(0);
        let to = msg.to_peer.as_ref().map(|p| p.store_id).unwrap_or(0);
        let mut verdict = Verdict::Pass;
        {
            let filters = self.filters.lock();
            let mut rng = self.rng.lock();
            for f in filters.iter() {
                match f.decide(from, to, &msg, &mut rng) {
                    Verdict::Drop => {
                        verdict = Verdict::Drop;
                        break;
                    }
                    Verdict::Delay(d) => verdict = Verdict::Delay(d),
                    Verdict::Pass => {}
                }
            }
        }
        match verdict {
            Verdict::Pass => self.deliver(msg),
            Verdict::Drop => {
                if is_snapshot(&msg) {
                    if let Some(r) = msg
                        .from_peer
                        .as_ref()
                        .and_then(|p| self.routers.read().get(&p.store_id).cloned())
                    {
                        r.report_snapshot_status(
                            msg.region_id,
                            msg.to_peer.as_ref().map(|p| p.id).unwrap_or(0),
                            false,
                        );
                    }
                }
            }
            Verdict::Delay(d) => {
                let mut q = self.delayed.lock();
                q.1 += 1;
                let seq = q.1;
                q.0.push(Delayed {
                    at: Instant::now() + d,
                    seq,
                    msg,
                });
                self.wake.notify_all();
            }
        }
    }
}

fn raft_msg_type(msg: &RaftMessage) -> Option<MessageType> {
    protobuf::Message::parse_from_bytes(&msg.message)
        .map(|m: raft::eraftpb::Message| m.get_msg_type())
        .ok()
}

fn is_snapshot(msg: &RaftMessage) -> bool {
    raft_msg_type(msg) == Some(MessageType::MsgSnapshot)
}

fn delay_loop(net: std::sync::Weak<Network>) {
    loop {
        let Some(net) = net.upgrade() else { return };
        let mut due = vec![];
        {
            let mut q = net.delayed.lock();
            if q.2 {
                return;
            }
            let now = Instant::now();
            while q.0.peek().is_some_and(|d| d.at <= now) {
                due.push(q.0.pop().expect("peeked").msg);
            }
            if due.is_empty() {
                let wait =
                    q.0.peek()
                        .map(|d| d.at - now)
                        .unwrap_or(Duration::from_millis(50));
                net.wake
                    .wait_for(&mut q, wait.min(Duration::from_millis(50)));
            }
        }
        for m in due {
            net.deliver(m);
        }
    }
}

/// One store's handle on the network.
pub struct NetTransport {
    /// The shared network.
    pub net: Arc<Network>,
}

impl Transport for NetTransport {
    fn send(&self, msg: RaftMessage) {
        self.net.send(msg);
    }
}
