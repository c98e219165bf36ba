//! Schedulers: pure functions from a snapshot of the cluster to [`Operator`]s. They do no
//! I/O, read no clock and allocate no ids (new peers carry id 0, filled in by the caller).
//!
//! - [`presplit`]: split a region that strictly contains a keyspace boundary.
//! - [`check_replicas`]: bring a region to `max_replicas` voters (add learner, promote it;
//!   replace peers on Offline stores and on stores down longer than `max_store_down_secs`;
//!   remove extra peers, moving the leader away first).
//! - [`balance_leader`]: keep every up store's leader count near the mean.
//! - [`balance_region`]: move replicas from the store with the highest
//!   [`region_score`] to the lowest.
//!
//! Store limits reach the schedulers as data: each [`StoreSnap`] carries the peer additions
//! and removals its store may still take (PD's `store_limit` module keeps the buckets), and a
//! scheduler plans only what those tokens allow.

use std::collections::HashMap;

use proto::metapb::{Peer, PeerRole};

use crate::operator::{Operator, Step};
use crate::region_dir::RegionInfo;

pub use crate::balance_region::balance_region;

/// A store's health as the schedulers see it (tombstones are not in the snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreHealth {
    /// State Up and heartbeating: may take peers and leaders.
    #[default]
    Up,
    /// State Up but silent longer than `store_down_after_secs`: takes nothing, and its peers
    /// stay where they are (it may come back).
    Disconnected,
    /// Silent longer than `max_store_down_secs`: its peers are rebuilt elsewhere.
    Down,
    /// State Offline (being decommissioned): its peers move elsewhere.
    Offline,
}

/// A store as the schedulers see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreSnap {
    /// Store id.
    pub id: u64,
    /// Health, from the store's state and its last heartbeat.
    pub health: StoreHealth,
    /// Regions led by this store.
    pub leader_count: u64,
    /// Region peers on this store, as they will be once running operators finish.
    pub region_count: u64,
    /// Sum of the approximate sizes of the regions with a peer here, likewise.
    pub region_size_bytes: u64,
    /// Capacity of the store's disk, from its heartbeat; 0 when unknown.
    pub capacity_bytes: u64,
    /// Free bytes on the store's disk, from its heartbeat.
    pub available_bytes: u64,
    /// Peers that may still be added here now (store limit).
    pub add_peer_tokens: u64,
    /// Peers that may still be removed from here now (store limit).
    pub remove_peer_tokens: u64,
}

impl StoreSnap {
    /// Whether the store may receive peers and leaders.
    pub fn is_up(&self) -> bool {
        self.health == StoreHealth::Up
    }

    /// Whether the peers on this store must be rebuilt elsewhere.
    pub fn is_lost(&self) -> bool {
        matches!(self.health, StoreHealth::Down | StoreHealth::Offline)
    }
}

/// The placement rules the schedulers apply, taken from PD's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct PlacementRules {
    /// Number of voters every region should have.
    pub max_replicas: usize,
    /// A peer its leader reports down for this long is rebuilt elsewhere, as are the peers
    /// of a store silent this long.
    pub max_store_down_secs: u64,
    /// Every region weighs at least this much in a store's region score, so that stores of
    /// tiny regions still balance by region count.
    pub region_score_floor_bytes: u64,
    /// Below this fraction of free disk, a store's region score is inflated (see
    /// [`region_score`]).
    pub low_space_ratio: f64,
    /// balance-region moves a region only if, after the move, the source still scores at
    /// least this fraction of the region's weight above the target.
    pub region_tolerance_ratio: f64,
}

impl Default for PlacementRules {
    fn default() -> Self {
        PlacementRules {
            max_replicas: 3,
            max_store_down_secs: 1800,
            region_score_floor_bytes: 1 << 20,
            low_space_ratio: 0.2,
            region_tolerance_ratio: 0.2,
        }
    }
}

impl PlacementRules {
    /// The rules in `cfg`.
    pub fn from_config(cfg: &crate::PdConfig) -> Self {
        PlacementRules {
            max_replicas: cfg.max_replicas,
            max_store_down_secs: cfg.max_store_down_time_secs,
            region_score_floor_bytes: cfg.region_score_floor_bytes,
            low_space_ratio: cfg.region_score_low_space_ratio,
            region_tolerance_ratio: cfg.region_balance_tolerance_ratio,
        }
    }

    /// What one region of `size_bytes` weighs in a store's score.
    pub fn region_weight(&self, size_bytes: u64) -> u64 {
        size_bytes.saturating_add(self.region_score_floor_bytes)
    }
}

/// The region score of a store holding `region_count` regions of `region_size_bytes` in all,
/// on a disk of `capacity_bytes` with `available_bytes` free:
///
/// `score = (region_size_bytes + region_count * floor) * space_factor`, where
/// `space_factor` is 1 while at least `low_space_ratio` of the disk is free (or the capacity
/// is unknown) and `low_space_ratio / free_ratio` below it, so a filling disk repels regions
/// ever harder (free ratio floored at 0.1% so the factor stays finite).
///
/// Simpler than PD's `RegionScore` (which blends size and free space through two thresholds)
/// with the same intent: stores balance by data while disks have room, and a store running
/// out of disk stops receiving regions. The per-region floor makes empty regions count.
pub fn region_score(
    rules: &PlacementRules,
    region_count: u64,
    region_size_bytes: u64,
    capacity_bytes: u64,
    available_bytes: u64,
) -> f64 {
    let units =
        region_size_bytes as f64 + region_count as f64 * rules.region_score_floor_bytes as f64;
    units * space_factor(rules, capacity_bytes, available_bytes)
}

/// See [`region_score`].
pub(crate) fn space_factor(
    rules: &PlacementRules,
    capacity_bytes: u64,
    available_bytes: u64,
) -> f64 {
    if capacity_bytes == 0 {
        return 1.0;
    }
    let free = (available_bytes.min(capacity_bytes) as f64 / capacity_bytes as f64).max(0.001);
    if free >= rules.low_space_ratio {
        1.0
    } else {
        rules.low_space_ratio / free
    }
}

/// The input of the schedulers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterSnapshot {
    /// Every non-tombstone store.
    pub stores: Vec<StoreSnap>,
    /// Every region.
    pub regions: Vec<RegionSnap>,
}

/// A region as the schedulers see it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionSnap {
    /// What PD knows of the region.
    pub info: RegionInfo,
    /// Whether an operator is already running on it.
    pub has_operator: bool,
}

impl ClusterSnapshot {
    pub(crate) fn store(&self, id: u64) -> Option<&StoreSnap> {
        self.stores.iter().find(|s| s.id == id)
    }

    pub(crate) fn is_up(&self, id: u64) -> bool {
        self.store(id).is_some_and(|s| s.is_up())
    }

    /// The score of store `s` (see [`region_score`]).
    pub(crate) fn score(&self, rules: &PlacementRules, s: &StoreSnap) -> f64 {
        region_score(
            rules,
            s.region_count,
            s.region_size_bytes,
            s.capacity_bytes,
            s.available_bytes,
        )
    }
}

pub(crate) fn is_voter(p: &Peer) -> bool {
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

/// The up store without a peer of `info` with the lowest region score; with `limited`, only
/// stores that may take a peer now (store limit).
fn pick_new_store(
    info: &RegionInfo,
    snap: &ClusterSnapshot,
    rules: &PlacementRules,
    limited: bool,
) -> Option<u64> {
    snap.stores
        .iter()
        .filter(|s| s.is_up() && !info.region.peers.iter().any(|p| p.store_id == s.id))
        .filter(|s| !limited || s.add_peer_tokens > 0)
        .min_by(|a, b| {
            let (sa, sb) = (snap.score(rules, a), snap.score(rules, b));
            sa.total_cmp(&sb).then(a.id.cmp(&b.id))
        })
        .map(|s| s.id)
}

/// Whether `p` must be rebuilt elsewhere: its store is Offline, down longer than
/// `max_store_down_secs` or gone, or its leader has not heard from it for that long.
fn is_lost_peer(
    info: &RegionInfo,
    snap: &ClusterSnapshot,
    rules: &PlacementRules,
    p: &Peer,
) -> bool {
    snap.store(p.store_id).is_none_or(|s| s.is_lost())
        || info.down_peers.iter().any(|d| {
            d.peer.as_ref().is_some_and(|dp| dp.id == p.id)
                && d.down_seconds >= rules.max_store_down_secs
        })
}

/// Whether `info` has fewer voters than `max_replicas`: its operators restore redundancy and
/// go before the store limits (the caller forces their tokens, so ordinary moves wait).
pub fn is_under_replicated(info: &RegionInfo, max_replicas: usize) -> bool {
    info.region.peers.iter().filter(|p| is_voter(p)).count() < max_replicas
}

/// Brings `info` to `max_replicas` voters, when at least that many stores are up, and moves
/// voters off lost stores (see [`StoreHealth`]) by adding the replacement before removing
/// (never fewer voters than before at any step). Replacing a lost voter respects the store
/// limits (`add_peer_tokens` of the target, `remove_peer_tokens` of the lost store); adding a
/// missing voter does not (see [`is_under_replicated`]).
pub fn check_replicas(
    info: &RegionInfo,
    snap: &ClusterSnapshot,
    rules: &PlacementRules,
) -> Option<Operator> {
    let max_replicas = rules.max_replicas;
    if snap.stores.iter().filter(|s| s.is_up()).count() < max_replicas {
        return None;
    }
    let peers = &info.region.peers;
    let voters: Vec<&Peer> = peers.iter().filter(|p| is_voter(p)).collect();
    let learner = peers.iter().find(|p| p.role == PeerRole::Learner as i32);
    let lost = |p: &Peer| is_lost_peer(info, snap, rules, p);
    let op = |steps| Some(Operator::new(info, "replica", steps));
    let add_steps = |store_id| {
        vec![
            Step::AddLearner {
                store_id,
                peer_id: 0,
            },
            Step::PromoteLearner {
                store_id,
                peer_id: 0,
            },
        ]
    };
    if let Some(l) = learner {
        let step = if voters.len() < max_replicas && !lost(l) {
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
        return op(add_steps(pick_new_store(info, snap, rules, false)?));
    }
    let lost_voter = voters.iter().find(|p| lost(p)).copied();
    if voters.len() == max_replicas {
        // Replace a lost voter: add the new one before removing the old.
        let victim = lost_voter?;
        let may_remove = snap
            .store(victim.store_id)
            .is_none_or(|s| s.remove_peer_tokens > 0);
        if !may_remove {
            return None;
        }
        let mut steps = add_steps(pick_new_store(info, snap, rules, true)?);
        steps.extend(remove_steps(info, snap, victim));
        return op(steps);
    }
    // Too many voters (an operator stopped half-way): drop a lost one, else one on a store
    // that does not answer, else the non-leader on the store with the highest score.
    let score = |p: &Peer| {
        snap.store(p.store_id)
            .map_or(f64::INFINITY, |s| snap.score(rules, s))
    };
    let victim = lost_voter
        .or_else(|| voters.iter().find(|p| !snap.is_up(p.store_id)).copied())
        .or_else(|| {
            voters
                .iter()
                .filter(|p| info.leader.as_ref().is_none_or(|l| l.id != p.id))
                .max_by(|a, b| {
                    score(a)
                        .total_cmp(&score(b))
                        .then(a.store_id.cmp(&b.store_id))
                })
                .copied()
        })?;
    op(remove_steps(info, snap, victim))
}

/// Steps removing `victim`; when it leads, leadership moves to a healthy voter first (no
/// steps at all when there is none).
pub(crate) fn remove_steps(info: &RegionInfo, snap: &ClusterSnapshot, victim: &Peer) -> Vec<Step> {
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
            None => return Vec::new(),
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
        .filter(|s| s.is_up())
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
