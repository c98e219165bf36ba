//! balance-region: moves replicas from the up store with the highest region score to the up
//! store with the lowest (see [`region_score`]), one region at a time, by add learner on the
//! target → promote it (the operator waits until the learner has caught up) → transfer the
//! leadership away if the source leads → remove the source's peer. The region keeps
//! `max_replicas` voters at every step and never gets two peers on one store.
//!
//! It settles: a move happens only if, after it, the source still scores at least
//! `region_tolerance_ratio` of the region's weight above the target, so a move never reverses
//! the order of the two stores and the sum of squared scores strictly falls with every move.
//! Only healthy regions move: no operator, no pending or down peer, no learner, exactly
//! `max_replicas` voters all on up stores, a known leader. Store limits are honoured through
//! the tokens of [`StoreSnap`]. Pure: no clock, no I/O, no id allocation.

use std::collections::{HashMap, HashSet};

use proto::metapb::Peer;

use crate::operator::{Operator, Step};
use crate::region_dir::RegionInfo;
use crate::scheduler::{
    is_voter, region_score, remove_steps, ClusterSnapshot, PlacementRules, StoreSnap,
};

/// A store's load as balance-region plans: moves planned in this run are applied to it.
#[derive(Clone, Debug)]
struct Load {
    count: u64,
    size_bytes: u64,
    capacity_bytes: u64,
    available_bytes: u64,
    add_tokens: u64,
    remove_tokens: u64,
}

impl Load {
    fn of(s: &StoreSnap) -> Self {
        Load {
            count: s.region_count,
            size_bytes: s.region_size_bytes,
            capacity_bytes: s.capacity_bytes,
            available_bytes: s.available_bytes,
            add_tokens: s.add_peer_tokens,
            remove_tokens: s.remove_peer_tokens,
        }
    }

    fn score_of(&self, rules: &PlacementRules, count: u64, size_bytes: u64) -> f64 {
        region_score(
            rules,
            count,
            size_bytes,
            self.capacity_bytes,
            self.available_bytes,
        )
    }

    fn score(&self, rules: &PlacementRules) -> f64 {
        self.score_of(rules, self.count, self.size_bytes)
    }

    /// The score with one more region of `size_bytes`.
    fn score_plus(&self, rules: &PlacementRules, size_bytes: u64) -> f64 {
        self.score_of(
            rules,
            self.count + 1,
            self.size_bytes.saturating_add(size_bytes),
        )
    }

    /// The score with one region of `size_bytes` less.
    fn score_minus(&self, rules: &PlacementRules, size_bytes: u64) -> f64 {
        self.score_of(
            rules,
            self.count.saturating_sub(1),
            self.size_bytes.saturating_sub(size_bytes),
        )
    }
}

/// One planned move of `info`'s peer `from` to store `to`.
struct Move<'a> {
    info: &'a RegionInfo,
    from: Peer,
    to: u64,
}

/// Up to `ops_max` operators moving region replicas from high-score stores to low-score ones;
/// none when the up stores are balanced within the tolerance.
pub fn balance_region(
    snap: &ClusterSnapshot,
    rules: &PlacementRules,
    ops_max: usize,
) -> Vec<Operator> {
    let mut loads: HashMap<u64, Load> = snap
        .stores
        .iter()
        .filter(|s| s.is_up())
        .map(|s| (s.id, Load::of(s)))
        .collect();
    if loads.len() < 2 {
        return Vec::new();
    }
    let candidates: Vec<&RegionInfo> = snap
        .regions
        .iter()
        .filter(|r| !r.has_operator && is_movable(&r.info, &loads, rules))
        .map(|r| &r.info)
        .collect();
    let mut used: HashSet<u64> = HashSet::new();
    let mut ops = Vec::new();
    while ops.len() < ops_max {
        let Some(m) = pick_move(&loads, &candidates, &used, rules) else {
            break;
        };
        let size = m.info.approximate_size;
        let remove = remove_steps(m.info, snap, &m.from);
        if remove.is_empty() {
            // The source leads and no other voter can take over: cannot happen for a
            // movable region (every voter up, none pending); skip it rather than half-move.
            used.insert(m.info.region.id);
            continue;
        }
        let mut steps = vec![
            Step::AddLearner {
                store_id: m.to,
                peer_id: 0,
            },
            Step::PromoteLearner {
                store_id: m.to,
                peer_id: 0,
            },
        ];
        steps.extend(remove);
        let src = loads.get_mut(&m.from.store_id).expect("source is up");
        src.count = src.count.saturating_sub(1);
        src.size_bytes = src.size_bytes.saturating_sub(size);
        src.remove_tokens -= 1;
        let dst = loads.get_mut(&m.to).expect("target is up");
        dst.count += 1;
        dst.size_bytes = dst.size_bytes.saturating_add(size);
        dst.add_tokens -= 1;
        used.insert(m.info.region.id);
        ops.push(Operator::new(m.info, "balance-region", steps));
    }
    ops
}

/// Whether `info` is healthy enough to move (see the module docs).
fn is_movable(info: &RegionInfo, up: &HashMap<u64, Load>, rules: &PlacementRules) -> bool {
    let peers = &info.region.peers;
    info.leader.is_some()
        && info.pending_peers.is_empty()
        && info.down_peers.is_empty()
        && peers.len() == rules.max_replicas
        && peers
            .iter()
            .all(|p| is_voter(p) && up.contains_key(&p.store_id))
}

/// The first move, from the highest-score source to the lowest-score target, that keeps the
/// source at least the tolerance above the target. A region whose source peer is not the
/// leader goes first (its move needs no leader transfer).
fn pick_move<'a>(
    loads: &HashMap<u64, Load>,
    candidates: &[&'a RegionInfo],
    used: &HashSet<u64>,
    rules: &PlacementRules,
) -> Option<Move<'a>> {
    let by_score = |f: &dyn Fn(&Load) -> bool| {
        let mut v: Vec<(u64, &Load)> = loads
            .iter()
            .filter(|(_, l)| f(l))
            .map(|(id, l)| (*id, l))
            .collect();
        v.sort_by(|a, b| {
            a.1.score(rules)
                .total_cmp(&b.1.score(rules))
                .then(a.0.cmp(&b.0))
        });
        v
    };
    let mut sources = by_score(&|l| l.remove_tokens > 0);
    sources.reverse();
    let targets = by_score(&|l| l.add_tokens > 0);
    for &(src, src_load) in &sources {
        let mut regions: Vec<(&RegionInfo, Peer)> = candidates
            .iter()
            .filter(|r| !used.contains(&r.region.id))
            .filter_map(|r| {
                let p = r.region.peers.iter().find(|p| p.store_id == src)?;
                Some((*r, *p))
            })
            .collect();
        regions.sort_by_key(|(r, p)| {
            let leads = r.leader.as_ref().is_some_and(|l| l.id == p.id);
            (leads, r.region.id)
        });
        for &(dst, dst_load) in &targets {
            if dst_load.score(rules) >= src_load.score(rules) {
                break;
            }
            let fits = regions.iter().find(|(r, _)| {
                let size = r.approximate_size;
                let margin = rules.region_tolerance_ratio * rules.region_weight(size) as f64;
                !r.region.peers.iter().any(|p| p.store_id == dst)
                    && src_load.score_minus(rules, size) - dst_load.score_plus(rules, size)
                        >= margin
            });
            if let Some((info, from)) = fits {
                return Some(Move {
                    info,
                    from: *from,
                    to: dst,
                });
            }
        }
    }
    None
}
