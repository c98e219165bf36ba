//! Schedulers: pure functions from a snapshot of the cluster to [`Operator`]s. They do no
//! I/O, read no clock and allocate no ids (new peers carry id 0, filled in by the caller).
//!
//! - [`presplit`]: split a region that strictly contains a keyspace boundary.
//! - [`check_replicas`]: bring a region to `max_replicas` voters (add learner, promote it;
//!   replace peers on Offline stores and on stores down longer than `max_store_down_secs`;
//!   remove extra peers, moving the leader away first).
//! - [`balance_leader`]: keep every up store's leader count near the mean, within each
//!   keyspace group.
//! - [`balance_region`]: move replicas from the store with the highest [`region_score`] to
//!   the lowest, within each keyspace group.
//! - [`hot_region`]: move leaders, then peers, of the regions with the most write or read
//!   bytes per second off the stores that carry the most.
//! - [`check_merge`]: join a small region into an adjacent one of its keyspace, after moving
//!   its peers onto the neighbour's stores (two operators, see [`merge_operators`]).
//!
//! Store limits reach the schedulers as data: each [`StoreSnap`] carries the peer additions
//! and removals its store may still take (PD's `store_limit` module keeps the buckets), and a
//! scheduler plans only what those tokens allow.

use std::collections::HashMap;

use proto::metapb::{Peer, PeerRole};

use crate::keyspace_group::{region_group, KeyspaceGroup, OUTSIDE};
use crate::operator::{Operator, Step};
use crate::region_dir::RegionInfo;

pub use crate::balance_region::balance_region;
pub use crate::hot_region::{hot_region, is_hot, HotRules, HOT_REGION};
pub use crate::merge::{
    check_merge, check_pair, merge_operators, same_keyspace, MergeRefusal, MergeRules, MERGE_REGION,
};

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
    /// Whether the hot-region scheduler runs and the region is hot (see [`is_hot`]): then
    /// balance-leader and balance-region leave it alone, or they would carry its traffic
    /// back to the store it was moved off.
    pub is_hot: bool,
    /// The running operator's steps not yet done (the balance schedulers count the region
    /// where it will be).
    pub pending_steps: Vec<Step>,
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

/// Whether `info` is healthy enough for a balance move: a known leader, no pending or down
/// peer, exactly `max_replicas` peers, all voters on stores `is_up` says are up.
pub(crate) fn is_movable(
    info: &RegionInfo,
    max_replicas: usize,
    is_up: impl Fn(u64) -> bool,
) -> bool {
    let peers = &info.region.peers;
    info.leader.is_some()
        && info.pending_peers.is_empty()
        && info.down_peers.is_empty()
        && peers.len() == max_replicas
        && peers.iter().all(|p| is_voter(p) && is_up(p.store_id))
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
    let add_steps = add_voter_steps;
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

/// A new voter on `store_id`: a learner first (it catches up by snapshot without counting in
/// the quorum), then promoted. Its peer id is filled in by `Operator::assign_peer_ids`.
pub(crate) fn add_voter_steps(store_id: u64) -> Vec<Step> {
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
/// store ends within `tolerance` of the mean *within each keyspace group* (see
/// [`crate::keyspace_group`]); at most `ops_max` operators. The group furthest out of
/// balance goes first; between stores alike in the group, the overall leader count decides,
/// so a cluster of one group balances as one set. Hot regions (`RegionSnap::is_hot`) stay:
/// the counts even out with cold leaders.
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
    let mut groups: HashMap<KeyspaceGroup, HashMap<u64, u64>> = group_tallies(snap)
        .into_iter()
        .map(|(g, tallies)| {
            let counts = leaders
                .keys()
                .map(|id| (*id, tallies.get(id).map_or(0, |t| t.leader_count)))
                .collect();
            (g, counts)
        })
        .collect();
    let region_groups: Vec<KeyspaceGroup> = snap
        .regions
        .iter()
        .map(|r| region_group(&r.info.region))
        .collect();
    let mut ops: Vec<Operator> = Vec::new();
    while ops.len() < ops_max {
        // Groups out of tolerance of their mean (max - mean > tol or mean - min > tol, times
        // n), widest spread first.
        let mut order: Vec<(KeyspaceGroup, u64)> = groups
            .iter()
            .filter_map(|(g, counts)| {
                let total: u64 = counts.values().sum();
                let max = *counts.values().max().unwrap_or(&0);
                let min = *counts.values().min().unwrap_or(&0);
                let balanced = max * n <= total + tolerance * n && min * n + tolerance * n >= total;
                (!balanced).then_some((*g, max - min))
            })
            .collect();
        order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let picked = order.into_iter().find_map(|(g, _)| {
            let in_group = |i: usize| region_groups[i] == g;
            pick_leader_move(snap, &groups[&g], &leaders, &in_group, &ops).map(|m| (g, m))
        });
        let Some((g, (op, from, to))) = picked else {
            break;
        };
        for counts in [&mut leaders, groups.get_mut(&g).expect("picked")] {
            *counts.get_mut(&from).expect("source is up") -= 1;
            *counts.get_mut(&to).expect("target is up") += 1;
        }
        ops.push(op);
    }
    ops
}

/// One leader move among the regions `in_group` (by index in the snapshot) that strictly
/// narrows the group's gap, from the store with most of the group's leaders first (ties:
/// most leaders overall), to the voter's store with fewest (likewise fewest overall).
fn pick_leader_move(
    snap: &ClusterSnapshot,
    group: &HashMap<u64, u64>,
    leaders: &HashMap<u64, u64>,
    in_group: &dyn Fn(usize) -> bool,
    ops: &[Operator],
) -> Option<(Operator, u64, u64)> {
    let overall = |id: &u64| leaders.get(id).copied().unwrap_or(0);
    let mut sources: Vec<(u64, u64)> = group.iter().map(|(id, c)| (*id, *c)).collect();
    sources.sort_by_key(|(id, c)| (std::cmp::Reverse((*c, overall(id))), *id));
    for (src, src_count) in sources {
        let mut best: Option<((u64, u64), &RegionInfo, &Peer)> = None;
        for (_, r) in snap.regions.iter().enumerate().filter(|(i, r)| {
            in_group(*i) && !r.has_operator && !r.is_hot && r.info.pending_peers.is_empty()
        }) {
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
                let Some(&count) = group.get(&p.store_id) else {
                    continue;
                };
                let rank = (count, overall(&p.store_id));
                if count + 1 < src_count && best.is_none_or(|(c, _, _)| rank < c) {
                    best = Some((rank, info, p));
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

/// Per keyspace group (see `keyspace_group`): the outside group's per-store tallies are the
/// store's totals (as the snapshot reports them, running operators included) less what the
/// keyspace groups hold there, so that a cluster with no keyspace regions balances exactly as a
/// single set.
/// What one group holds on one store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct GroupTally {
    /// Peers of the group's regions.
    pub region_count: u64,
    /// Sum of those regions' approximate sizes.
    pub region_size_bytes: u64,
    /// The group's regions led from the store.
    pub leader_count: u64,
}

/// Per group, per store of the snapshot: what the group holds there once the running
/// operators' steps are done. Every store of the snapshot appears in every group present.
pub(crate) fn group_tallies(
    snap: &ClusterSnapshot,
) -> HashMap<KeyspaceGroup, HashMap<u64, GroupTally>> {
    let empty: HashMap<u64, GroupTally> = snap
        .stores
        .iter()
        .map(|s| (s.id, GroupTally::default()))
        .collect();
    let mut groups: HashMap<KeyspaceGroup, HashMap<u64, GroupTally>> = HashMap::new();
    groups.insert(OUTSIDE, empty.clone());
    for r in &snap.regions {
        let group = region_group(&r.info.region);
        if group == OUTSIDE {
            continue;
        }
        let tallies = groups.entry(group).or_insert_with(|| empty.clone());
        let (stores, leader) = after_operator(r);
        for id in stores {
            if let Some(t) = tallies.get_mut(&id) {
                t.region_count += 1;
                t.region_size_bytes = t.region_size_bytes.saturating_add(r.info.approximate_size);
            }
        }
        if let Some(t) = leader.and_then(|id| tallies.get_mut(&id)) {
            t.leader_count += 1;
        }
    }
    // The outside group: the stores' totals less the keyspace groups.
    for s in &snap.stores {
        let mut rest = GroupTally {
            region_count: s.region_count,
            region_size_bytes: s.region_size_bytes,
            leader_count: s.leader_count,
        };
        for (_, tallies) in groups.iter().filter(|(g, _)| **g != OUTSIDE) {
            let t = tallies.get(&s.id).copied().unwrap_or_default();
            rest.region_count = rest.region_count.saturating_sub(t.region_count);
            rest.region_size_bytes = rest.region_size_bytes.saturating_sub(t.region_size_bytes);
            rest.leader_count = rest.leader_count.saturating_sub(t.leader_count);
        }
        groups
            .get_mut(&OUTSIDE)
            .expect("inserted above")
            .insert(s.id, rest);
    }
    groups
}

/// The stores of `r`'s peers and its leader's store once its running operator's remaining
/// steps are done.
pub(crate) fn after_operator(r: &RegionSnap) -> (Vec<u64>, Option<u64>) {
    let mut stores: Vec<u64> = r.info.region.peers.iter().map(|p| p.store_id).collect();
    let mut leader = r.info.leader.as_ref().map(|l| l.store_id);
    for step in &r.pending_steps {
        match step {
            Step::AddLearner { store_id, .. } if !stores.contains(store_id) => {
                stores.push(*store_id)
            }
            Step::RemovePeer { store_id, .. } => stores.retain(|s| s != store_id),
            Step::TransferLeader { store_id, .. } => leader = Some(*store_id),
            _ => {}
        }
    }
    (stores, leader)
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
