//! balance-region: within each keyspace group (see [`crate::keyspace_group`]), moves replicas
//! from the up store with the highest region score *of that group's regions* to the up store
//! with the lowest (see [`region_score`]), one region at a time, by add learner on the
//! target → promote it (the operator waits until the learner has caught up) → transfer the
//! leadership away if the source leads → remove the source's peer. The region keeps
//! `max_replicas` voters at every step and never gets two peers on one store. The group with
//! the widest spread of scores goes first; between stores that score alike in the group, the
//! store's overall score decides (highest gives, lowest takes), so overall counts stay even
//! too, and a cluster of one group balances as one set.
//!
//! It settles: a move happens only if, after it, the source still scores at least
//! `region_tolerance_ratio` of the region's weight above the target within the region's
//! group, so a move never reverses the order of the two stores in that group and the sum over
//! groups of squared group scores strictly falls with every move.
//! Only healthy regions move: no operator, not hot (the hot-region scheduler places those),
//! no pending or down peer, no learner, exactly `max_replicas` voters all on up stores, a
//! known leader. Store limits are honoured through the tokens of [`StoreSnap`]. Pure: no clock, no I/O, no id allocation.

use std::collections::{HashMap, HashSet};

use proto::metapb::Peer;

use crate::keyspace_group::{region_group, KeyspaceGroup};
use crate::operator::Operator;
use crate::region_dir::RegionInfo;
use crate::scheduler::{
    add_voter_steps, group_tallies, is_movable, region_score, remove_steps, ClusterSnapshot,
    PlacementRules, StoreSnap,
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
    group: KeyspaceGroup,
    from: Peer,
    to: u64,
}

/// Per keyspace group, each up store's load of that group's regions (tokens unused: a
/// store's tokens are in its overall [`Load`]).
type GroupLoads = HashMap<KeyspaceGroup, HashMap<u64, Load>>;

/// The loads of every group on the up stores in `loads`.
fn group_loads(snap: &ClusterSnapshot, loads: &HashMap<u64, Load>) -> GroupLoads {
    group_tallies(snap)
        .into_iter()
        .map(|(group, tallies)| {
            let per_store = loads
                .iter()
                .map(|(id, l)| {
                    let t = tallies.get(id).copied().unwrap_or_default();
                    let load = Load {
                        count: t.region_count,
                        size_bytes: t.region_size_bytes,
                        ..l.clone()
                    };
                    (*id, load)
                })
                .collect();
            (group, per_store)
        })
        .collect()
}

/// The spread of the group's scores (highest − lowest), what orders the groups.
fn spread(rules: &PlacementRules, loads: &HashMap<u64, Load>) -> f64 {
    let scores = loads.values().map(|l| l.score(rules));
    let (lo, hi) = scores.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
        (lo.min(s), hi.max(s))
    });
    if hi >= lo {
        hi - lo
    } else {
        0.0
    }
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
    let mut groups = group_loads(snap, &loads);
    let candidates: Vec<(&RegionInfo, KeyspaceGroup)> = snap
        .regions
        .iter()
        .filter(|r| !r.has_operator && !r.is_hot)
        .filter(|r| is_movable(&r.info, rules.max_replicas, |id| loads.contains_key(&id)))
        .map(|r| (&r.info, region_group(&r.info.region)))
        .collect();
    let mut used: HashSet<u64> = HashSet::new();
    let mut ops = Vec::new();
    while ops.len() < ops_max {
        let Some(m) = pick_move(&loads, &groups, &candidates, &used, rules) else {
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
        let mut steps = add_voter_steps(m.to);
        steps.extend(remove);
        let src = loads.get_mut(&m.from.store_id).expect("source is up");
        src.count = src.count.saturating_sub(1);
        src.size_bytes = src.size_bytes.saturating_sub(size);
        src.remove_tokens -= 1;
        let dst = loads.get_mut(&m.to).expect("target is up");
        dst.count += 1;
        dst.size_bytes = dst.size_bytes.saturating_add(size);
        dst.add_tokens -= 1;
        let group = groups.get_mut(&m.group).expect("a candidate's group");
        let src = group.get_mut(&m.from.store_id).expect("source is up");
        src.count = src.count.saturating_sub(1);
        src.size_bytes = src.size_bytes.saturating_sub(size);
        let dst = group.get_mut(&m.to).expect("target is up");
        dst.count += 1;
        dst.size_bytes = dst.size_bytes.saturating_add(size);
        used.insert(m.info.region.id);
        ops.push(Operator::new(m.info, "balance-region", steps));
    }
    ops
}

/// The first move, in the group with the widest spread that has one, from the store with the
/// highest score in that group to the lowest (ties: highest and lowest overall score), that
/// keeps the source at least the tolerance above the target in the group. A region whose
/// source peer is not the leader goes first (its move needs no leader transfer).
fn pick_move<'a>(
    loads: &HashMap<u64, Load>,
    groups: &GroupLoads,
    candidates: &[(&'a RegionInfo, KeyspaceGroup)],
    used: &HashSet<u64>,
    rules: &PlacementRules,
) -> Option<Move<'a>> {
    let mut order: Vec<(&KeyspaceGroup, &HashMap<u64, Load>, f64)> = groups
        .iter()
        .map(|(g, l)| (g, l, spread(rules, l)))
        .filter(|(_, _, s)| *s > 0.0)
        .collect();
    order.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(b.0)));
    order.into_iter().find_map(|(group, group_loads, _)| {
        pick_move_in(loads, group_loads, *group, candidates, used, rules)
    })
}

/// [`pick_move`] within one group.
fn pick_move_in<'a>(
    loads: &HashMap<u64, Load>,
    group_loads: &HashMap<u64, Load>,
    group: KeyspaceGroup,
    candidates: &[(&'a RegionInfo, KeyspaceGroup)],
    used: &HashSet<u64>,
    rules: &PlacementRules,
) -> Option<Move<'a>> {
    // (store, its load in the group, its overall score), ascending.
    let by_score = |f: &dyn Fn(&Load) -> bool| {
        let mut v: Vec<(u64, &Load, f64)> = loads
            .iter()
            .filter(|(_, l)| f(l))
            .filter_map(|(id, l)| Some((*id, group_loads.get(id)?, l.score(rules))))
            .collect();
        v.sort_by(|a, b| {
            a.1.score(rules)
                .total_cmp(&b.1.score(rules))
                .then(a.2.total_cmp(&b.2))
                .then(a.0.cmp(&b.0))
        });
        v
    };
    let mut sources = by_score(&|l| l.remove_tokens > 0);
    sources.reverse();
    let targets = by_score(&|l| l.add_tokens > 0);
    for &(src, src_load, _) in &sources {
        let mut regions: Vec<(&RegionInfo, Peer)> = candidates
            .iter()
            .filter(|(r, g)| *g == group && !used.contains(&r.region.id))
            .filter_map(|(r, _)| {
                let p = r.region.peers.iter().find(|p| p.store_id == src)?;
                Some((*r, *p))
            })
            .collect();
        regions.sort_by_key(|(r, p)| {
            let leads = r.leader.as_ref().is_some_and(|l| l.id == p.id);
            (leads, r.region.id)
        });
        for &(dst, dst_load, _) in &targets {
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
                    group,
                    from: *from,
                    to: dst,
                });
            }
        }
    }
    None
}
