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
    add_voter_steps, group_tallies_of, is_movable, region_score, remove_steps, ClusterSnapshot,
    GroupTallies, PlacementRules, RegionView, StoreSnap,
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

/// The loads of every group on the up stores in `loads`, from the groups' tallies.
fn group_loads(tallies: GroupTallies, loads: &HashMap<u64, Load>) -> GroupLoads {
    tallies
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

/// Whether moving a region of `size_bytes` from `src` to `dst` (their loads in its group)
/// leaves the source at least the tolerance above the target.
fn fits_margin(rules: &PlacementRules, src: &Load, dst: &Load, size_bytes: u64) -> bool {
    let margin = rules.region_tolerance_ratio * rules.region_weight(size_bytes) as f64;
    src.score_minus(rules, size_bytes) - dst.score_plus(rules, size_bytes) >= margin
}

/// Whether some group may have a move: a source (with a removal token) scoring above a
/// target (with an addition token) in the group by the margin that the group's smallest region
/// (`size_min`; None: no region) would need. A bigger region only narrows the margin (the
/// source loses more, the target gains more, the margin grows), so when this is false no
/// region of any group fits.
fn may_move(
    rules: &PlacementRules,
    loads: &HashMap<u64, Load>,
    groups: &GroupLoads,
    size_min: &dyn Fn(KeyspaceGroup) -> Option<u64>,
) -> bool {
    groups.iter().any(|(g, group_loads)| {
        let Some(size) = size_min(*g) else {
            return false;
        };
        let with_tokens = |f: &dyn Fn(&Load) -> bool| {
            loads
                .iter()
                .filter(move |(_, l)| f(l))
                .filter_map(|(id, _)| group_loads.get(id))
                .collect::<Vec<_>>()
        };
        let sources = with_tokens(&|l| l.remove_tokens > 0);
        let targets = with_tokens(&|l| l.add_tokens > 0);
        sources.iter().any(|src| {
            targets.iter().any(|dst| {
                dst.score(rules) < src.score(rules) && fits_margin(rules, src, dst, size)
            })
        })
    })
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
    let views = snap.views();
    let tallies = group_tallies_of(&snap.stores, &views);
    let size_min = |g: KeyspaceGroup| {
        let in_group = views.iter().filter(|r| region_group(&r.info.region) == g);
        in_group.map(|r| r.info.approximate_size).min()
    };
    balance_region_over(snap, tallies, &size_min, || views.clone(), rules, ops_max)
}

/// [`balance_region`] from the groups' tallies (as `group_tallies` makes them), the smallest
/// region size of each group (`size_min`, or any lower bound), the stores from `snap` (its
/// regions unread) and the regions `list` returns, called only when a move may exist (see
/// `may_move`): a balanced cluster costs O(groups x stores^2), however many regions it has.
pub fn balance_region_over<'a>(
    snap: &ClusterSnapshot,
    tallies: GroupTallies,
    size_min: &dyn Fn(KeyspaceGroup) -> Option<u64>,
    list: impl FnOnce() -> Vec<RegionView<'a>>,
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
    let mut groups = group_loads(tallies, &loads);
    if !may_move(rules, &loads, &groups, size_min) {
        return Vec::new();
    }
    let regions = list();
    let region_groups: Vec<KeyspaceGroup> = regions
        .iter()
        .map(|r| region_group(&r.info.region))
        .collect();
    let candidates = Candidates::of(&regions, &region_groups, rules, &loads);
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

/// The movable regions (no operator, not hot, see `is_movable`), listed once per run by
/// group and store of a peer, each list in the order moves are tried: regions whose peer there
/// is not the leader first (no transfer needed), then by id.
struct Candidates<'a> {
    on: HashMap<(KeyspaceGroup, u64), OnStore<'a>>,
}

/// The candidates with a peer on one store, and the smallest of their sizes.
struct OnStore<'a> {
    regions: Vec<(&'a RegionInfo, Peer)>,
    size_min_bytes: u64,
}

impl<'a> Candidates<'a> {
    fn of(
        regions: &[RegionView<'a>],
        region_groups: &[KeyspaceGroup],
        rules: &PlacementRules,
        loads: &HashMap<u64, Load>,
    ) -> Self {
        let mut on: HashMap<(KeyspaceGroup, u64), OnStore<'a>> = HashMap::new();
        let movable = regions
            .iter()
            .zip(region_groups)
            .filter(|(r, _)| !r.has_operator && !r.is_hot)
            .filter(|(r, _)| is_movable(r.info, rules.max_replicas, |id| loads.contains_key(&id)));
        for (r, g) in movable {
            for p in &r.info.region.peers {
                let list = on.entry((*g, p.store_id)).or_insert_with(|| OnStore {
                    regions: Vec::new(),
                    size_min_bytes: u64::MAX,
                });
                list.regions.push((r.info, *p));
                list.size_min_bytes = list.size_min_bytes.min(r.info.approximate_size);
            }
        }
        for list in on.values_mut() {
            list.regions.sort_by_key(|(r, p)| {
                let leads = r.leader.as_ref().is_some_and(|l| l.id == p.id);
                (leads, r.region.id)
            });
        }
        Candidates { on }
    }
}

/// The first move, in the group with the widest spread that has one, from the store with the
/// highest score in that group to the lowest (ties: highest and lowest overall score), that
/// keeps the source at least the tolerance above the target in the group. A region whose
/// source peer is not the leader goes first (its move needs no leader transfer).
fn pick_move<'a>(
    loads: &HashMap<u64, Load>,
    groups: &GroupLoads,
    candidates: &Candidates<'a>,
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
    candidates: &Candidates<'a>,
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
        let Some(on_src) = candidates.on.get(&(group, src)) else {
            continue;
        };
        let fits_margin = |dst_load: &Load, size: u64| fits_margin(rules, src_load, dst_load, size);
        for &(dst, dst_load, _) in &targets {
            if dst_load.score(rules) >= src_load.score(rules) {
                break;
            }
            // A bigger region only narrows the margin (the source loses more, the target
            // gains more, the margin grows): when the smallest does not fit, none does.
            if !fits_margin(dst_load, on_src.size_min_bytes) {
                continue;
            }
            let fits = on_src.regions.iter().find(|(r, _)| {
                !used.contains(&r.region.id)
                    && !r.region.peers.iter().any(|p| p.store_id == dst)
                    && fits_margin(dst_load, r.approximate_size)
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
