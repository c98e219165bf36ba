//! Schedulers: pure functions from a snapshot of the cluster to [`Operator`]s. They do no
//! I/O, read no clock and allocate no ids (new peers carry id 0, filled in by the caller).
//!
//! - [`presplit`]: split a region that strictly contains a keyspace boundary.
//! - [`check_replicas`]: bring a region to `max_replicas` voters (add learner, promote it;
//!   replace peers on down stores; remove extra peers, moving the leader away first).
//! - [`balance_leader`]: keep every up store's leader count near the mean.

use std::collections::HashMap;

use proto::metapb::{Peer, PeerRole};

use crate::operator::{Operator, Step};
use crate::region_dir::RegionInfo;

/// A store as the schedulers see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreSnap {
    /// Store id.
    pub id: u64,
    /// Whether it heartbeats and is not offline/tombstone.
    pub is_up: bool,
    /// Regions led by this store.
    pub leader_count: u64,
    /// Region peers on this store.
    pub region_count: u64,
}

/// A region as the schedulers see it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionSnap {
    /// What PD knows of the region.
    pub info: RegionInfo,
    /// Whether an operator is already running on it.
    pub has_operator: bool,
}

/// The input of the schedulers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterSnapshot {
    /// Every non-tombstone store.
    pub stores: Vec<StoreSnap>,
    /// Every region.
    pub regions: Vec<RegionSnap>,
}

impl ClusterSnapshot {
    fn store(&self, id: u64) -> Option<&StoreSnap> {
        self.stores.iter().find(|s| s.id == id)
    }

    fn is_up(&self, id: u64) -> bool {
        self.store(id).is_some_and(|s| s.is_up)
    }
}

fn is_voter(p: &Peer) -> bool {
    p.role == PeerRole::Voter as i32
}

/// Splits `info` at every key of `keys` strictly inside it (start < k < end).
pub fn presplit(info: &RegionInfo, keys: &[Vec<u8>]) -> Option<Operator> {
    let r = &info.region;
    let inside: Vec<Vec<u8>> = keys
        .iter()
        .filter(|k| {
            k.as_slice() > r.start_key.as_slice()
                && (r.end_key.is_empty() || k.as_slice() < r.end_key.as_slice())
        })
        .cloned()
        .collect();
    (!inside.is_empty())
        .then(|| Operator::new(info, "presplit", vec![Step::Split { keys: inside }]))
}

/// The up store without a peer of `info` that holds the fewest region peers.
fn pick_new_store(info: &RegionInfo, snap: &ClusterSnapshot) -> Option<u64> {
    snap.stores
        .iter()
        .filter(|s| s.is_up && !info.region.peers.iter().any(|p| p.store_id == s.id))
        .min_by_key(|s| (s.region_count, s.id))
        .map(|s| s.id)
}

fn is_down_peer(info: &RegionInfo, snap: &ClusterSnapshot, p: &Peer) -> bool {
    !snap.is_up(p.store_id)
        || info
            .down_peers
            .iter()
            .any(|d| d.peer.as_ref().is_some_and(|dp| dp.id == p.id))
}

/// Brings `info` to `max_replicas` voters, when at least that many stores are up.
pub fn check_replicas(
    info: &RegionInfo,
    snap: &ClusterSnapshot,
    max_replicas: usize,
) -> Option<Operator> {
    if snap.stores.iter().filter(|s| s.is_up).count() < max_replicas {
        return None;
    }
    let peers = &info.region.peers;
    let voters: Vec<&Peer> = peers.iter().filter(|p| is_voter(p)).collect();
    let learner = peers.iter().find(|p| p.role == PeerRole::Learner as i32);
    let op = |steps| Some(Operator::new(info, "replica", steps));
    if let Some(l) = learner {
        let step = if voters.len() < max_replicas {
            Step::PromoteLearner {
                store_id: l.store_id,
                peer_id: l.id,
            }
        } else {
            Step::RemovePeer {
                store_id: l.store_id,
                peer_id: l.id,
            }
        };
        return op(vec![step]);
    }
    if voters.len() < max_replicas {
        let store_id = pick_new_store(info, snap)?;
        return op(vec![
            Step::AddLearner {
                store_id,
                peer_id: 0,
            },
            Step::PromoteLearner {
                store_id,
                peer_id: 0,
            },
        ]);
    }
    let down = voters.iter().find(|p| is_down_peer(info, snap, p));
    if voters.len() == max_replicas {
        // Replace a voter on a down store: add the new one before removing the old.
        let down = down?;
        let store_id = pick_new_store(info, snap)?;
        let mut steps = vec![
            Step::AddLearner {
                store_id,
                peer_id: 0,
            },
            Step::PromoteLearner {
                store_id,
                peer_id: 0,
            },
        ];
        steps.extend(remove_steps(info, snap, down));
        return op(steps);
    }
    let region_count = |p: &Peer| snap.store(p.store_id).map_or(0, |s| s.region_count);
    let victim = down.copied().or_else(|| {
        voters
            .iter()
            .filter(|p| info.leader.as_ref().is_none_or(|l| l.id != p.id))
            .max_by_key(|p| (region_count(p), p.store_id))
            .copied()
    })?;
    op(remove_steps(info, snap, victim))
}

/// Steps removing `victim`; when it leads, leadership moves to a healthy voter first.
fn remove_steps(info: &RegionInfo, snap: &ClusterSnapshot, victim: &Peer) -> Vec<Step> {
    let mut steps = Vec::new();
    if info.leader.as_ref().is_some_and(|l| l.id == victim.id) {
        let target = info.region.peers.iter().find(|p| {
            is_voter(p)
                && p.id != victim.id
                && snap.is_up(p.store_id)
                && !info.pending_peers.iter().any(|q| q.id == p.id)
        });
        match target {
            Some(t) => steps.push(Step::TransferLeader {
                store_id: t.store_id,
                peer_id: t.id,
            }),
            None => return steps,
        }
    }
    steps.push(Step::RemovePeer {
        store_id: victim.store_id,
        peer_id: victim.id,
    });
    steps
}

/// Moves leaders from the stores with most leaders to stores with fewest, so that every up
/// store ends within `tolerance` of the mean; at most `ops_max` operators.
pub fn balance_leader(snap: &ClusterSnapshot, tolerance: u64, ops_max: usize) -> Vec<Operator> {
    let mut leaders: HashMap<u64, u64> = snap
        .stores
        .iter()
        .filter(|s| s.is_up)
        .map(|s| (s.id, s.leader_count))
        .collect();
    let n = leaders.len() as u64;
    if n < 2 {
        return Vec::new();
    }
    let total: u64 = leaders.values().sum();
    let mut ops: Vec<Operator> = Vec::new();
    while ops.len() < ops_max {
        let max = *leaders.values().max().unwrap_or(&0);
        let min = *leaders.values().min().unwrap_or(&0);
        // Within tolerance of the mean: max - mean <= tol and mean - min <= tol (times n).
        if max * n <= total + tolerance * n && min * n + tolerance * n >= total {
            break;
        }
        match pick_leader_move(snap, &leaders, &ops) {
            Some((op, from, to)) => {
                *leaders.get_mut(&from).expect("source is up") -= 1;
                *leaders.get_mut(&to).expect("target is up") += 1;
                ops.push(op);
            }
            None => break,
        }
    }
    ops
}

/// One leader move that strictly narrows the gap, from the store with most leaders first.
fn pick_leader_move(
    snap: &ClusterSnapshot,
    leaders: &HashMap<u64, u64>,
    ops: &[Operator],
) -> Option<(Operator, u64, u64)> {
    let mut sources: Vec<(u64, u64)> = leaders.iter().map(|(id, c)| (*id, *c)).collect();
    sources.sort_by_key(|(id, c)| (std::cmp::Reverse(*c), *id));
    for (src, src_count) in sources {
        let mut best: Option<(u64, &RegionInfo, &Peer)> = None;
        for r in snap
            .regions
            .iter()
            .filter(|r| !r.has_operator && r.info.pending_peers.is_empty())
        {
            let info = &r.info;
            if info.leader.as_ref().is_none_or(|l| l.store_id != src)
                || ops.iter().any(|o| o.region_id == info.region.id)
            {
                continue;
            }
            for p in info
                .region
                .peers
                .iter()
                .filter(|p| is_voter(p) && p.store_id != src)
            {
                let Some(&count) = leaders.get(&p.store_id) else {
                    continue;
                };
                if count + 1 < src_count && best.is_none_or(|(c, _, _)| count < c) {
                    best = Some((count, info, p));
                }
            }
        }
        if let Some((_, info, p)) = best {
            let step = Step::TransferLeader {
                store_id: p.store_id,
                peer_id: p.id,
            };
            return Some((
                Operator::new(info, "balance-leader", vec![step]),
                src,
                p.store_id,
            ));
        }
    }
    None
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
