//! hot-region: moves the traffic of the hottest regions off the hottest stores, by write flow
//! and by read flow, as PD's hot-region scheduler does in spirit.
//!
//! A region is *hot* in a flow when its leader's last heartbeat reported at least
//! `byte_rate_min_per_sec` bytes a second of it (written bytes, or bytes returned to readers).
//! A store's load in a flow is the sum of the rates of the regions it holds, counted where
//! they will be once the running operators finish:
//!
//! - read leader load: the read rates of the regions it leads (only a leader serves reads);
//! - write leader load: the write rates of the regions it leads (the leader proposes them);
//! - write peer load: the write rates of every region with a peer on it (every peer applies).
//!
//! The loads are summed from the regions' flows rather than taken from the stores' own stats
//! because a region's flow follows its leader at once, and a planned move shifts exactly the
//! region's rate: store stats lag a store heartbeat behind and would make the next run move
//! the same imbalance again.
//!
//! Each round plans one write move (a leader transfer to a follower's store, or, when no
//! leader move fits, a move of a peer to a store without one: add learner, promote, hand the
//! leadership over if the moved peer led, remove) and one read move (a leader transfer only: a
//! peer elsewhere serves no reads), until `ops_max` operators or nothing fits. A move of a
//! region at rate `x` from store `src` to `dst` is made only if
//!
//! 1. the pair is out of tolerance: `load(src) > tolerance_ratio * load(dst)`;
//! 2. it settles (anti-oscillation): `load(dst) + x <= load(src) - x`, so the target never
//!    ends hotter than the source, and the sum over the stores of that load squared strictly
//!    falls with every move;
//! 3. the same holds in every other load the move shifts, for which the region is hot too
//!    (so a read move does not undo a write move, nor the other way round).
//!
//! The hottest store with a move that fits gives first: to its coldest fitting target, the
//! hottest fitting region (a cold store gains the most). Only healthy regions move:
//! no operator, a known leader, no pending or down peer, exactly `max_replicas` voters all on
//! up stores. Peer moves honour the store limits through the tokens of [`StoreSnap`]. While
//! the scheduler runs, balance-leader and balance-region leave hot regions alone
//! ([`crate::scheduler::RegionSnap::is_hot`]), so they do not carry the traffic back. A
//! region moves only once `min_reports` of its leader's heartbeats in a row were hot
//! ([`RegionInfo::hot_reports`], PD's "hot degree"): one busy interval moves nothing. Pure: no
//! clock, no I/O, no id allocation (new peers carry id 0).

use std::collections::{HashMap, HashSet};

use proto::metapb::Peer;

use crate::operator::{Operator, Step};
use crate::region_dir::{RegionFlow, RegionInfo};
use crate::scheduler::{add_voter_steps, after_operator, is_movable, ClusterSnapshot, StoreSnap};

/// The name of the hot-region scheduler's operators (counted against its limit).
pub const HOT_REGION: &str = "hot-region";

/// What the hot-region scheduler is told, from PD's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct HotRules {
    /// A region is hot in a flow at this many bytes a second or more.
    pub byte_rate_min_per_sec: u64,
    /// A store gives load to another only while it carries more than this multiple of the
    /// other's load (at least 1).
    pub tolerance_ratio: f64,
    /// Number of voters every region should have.
    pub max_replicas: usize,
    /// A region moves only once this many heartbeats in a row were hot
    /// ([`RegionInfo::hot_reports`]).
    pub min_reports: u32,
}

impl HotRules {
    /// The rules in `cfg`.
    pub fn from_config(cfg: &crate::PdConfig) -> Self {
        HotRules {
            byte_rate_min_per_sec: cfg.hot_region_byte_rate_min_per_sec,
            tolerance_ratio: cfg.hot_region_tolerance_ratio,
            max_replicas: cfg.max_replicas,
            min_reports: cfg.hot_region_min_reports,
        }
    }

    fn is_hot_rate(&self, rate: f64) -> bool {
        is_hot_at(rate, self.byte_rate_min_per_sec)
    }
}

/// Whether a region of `flow` is hot in reads or in writes: at `byte_rate_min_per_sec` or more.
pub fn is_hot(flow: &RegionFlow, byte_rate_min_per_sec: u64) -> bool {
    is_hot_at(read_rate(flow), byte_rate_min_per_sec)
        || is_hot_at(write_rate(flow), byte_rate_min_per_sec)
}

/// The one rule of hotness: a rate of `byte_rate_min_per_sec` bytes a second or more.
fn is_hot_at(rate: f64, byte_rate_min_per_sec: u64) -> bool {
    rate >= byte_rate_min_per_sec as f64
}

fn read_rate(flow: &RegionFlow) -> f64 {
    flow.per_sec(flow.read_bytes)
}

fn write_rate(flow: &RegionFlow) -> f64 {
    flow.per_sec(flow.written_bytes)
}

/// One of the loads a store carries (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dim {
    ReadLeader,
    WriteLeader,
    WritePeer,
}

/// A store's loads and store-limit tokens as this run plans: planned moves are applied.
#[derive(Clone, Debug, Default)]
struct Load {
    read_leader: f64,
    write_leader: f64,
    write_peer: f64,
    add_tokens: u64,
    remove_tokens: u64,
}

impl Load {
    fn of(s: &StoreSnap) -> Self {
        Load {
            add_tokens: s.add_peer_tokens,
            remove_tokens: s.remove_peer_tokens,
            ..Default::default()
        }
    }

    fn get(&self, dim: Dim) -> f64 {
        match dim {
            Dim::ReadLeader => self.read_leader,
            Dim::WriteLeader => self.write_leader,
            Dim::WritePeer => self.write_peer,
        }
    }

    fn get_mut(&mut self, dim: Dim) -> &mut f64 {
        match dim {
            Dim::ReadLeader => &mut self.read_leader,
            Dim::WriteLeader => &mut self.write_leader,
            Dim::WritePeer => &mut self.write_peer,
        }
    }
}

/// The rate of `info` in `dim`.
fn rate(info: &RegionInfo, dim: Dim) -> f64 {
    match dim {
        Dim::ReadLeader => read_rate(&info.flow),
        Dim::WriteLeader | Dim::WritePeer => write_rate(&info.flow),
    }
}

/// The loads of every up store, with every region counted where it will be once its running
/// operator is done.
fn store_loads(snap: &ClusterSnapshot) -> HashMap<u64, Load> {
    let mut loads: HashMap<u64, Load> = snap
        .stores
        .iter()
        .filter(|s| s.is_up())
        .map(|s| (s.id, Load::of(s)))
        .collect();
    for r in &snap.regions {
        let (stores, leader) = after_operator(r);
        let (read, write) = (read_rate(&r.info.flow), write_rate(&r.info.flow));
        if let Some(l) = leader.and_then(|id| loads.get_mut(&id)) {
            l.read_leader += read;
            l.write_leader += write;
        }
        for id in stores {
            if let Some(l) = loads.get_mut(&id) {
                l.write_peer += write;
            }
        }
    }
    loads
}

/// A planned move: which loads shift by how much from `from` to `to`.
struct Move<'a> {
    info: &'a RegionInfo,
    from: u64,
    to: u64,
    /// The region's rate in each load the move shifts.
    shifts: Vec<(Dim, f64)>,
    steps: Vec<Step>,
}

/// Whether moving `shifts` from `src` to `dst` is allowed, `primary` being the load the move
/// is for (rules 1 to 3 of the module docs).
fn fits(src: &Load, dst: &Load, primary: Dim, shifts: &[(Dim, f64)], rules: &HotRules) -> bool {
    if src.get(primary) <= rules.tolerance_ratio * dst.get(primary) {
        return false;
    }
    shifts.iter().all(|&(dim, x)| {
        (dim != primary && !rules.is_hot_rate(x)) || dst.get(dim) + x <= src.get(dim) - x
    })
}

/// The loads a leader transfer of `info` shifts.
fn leader_shifts(info: &RegionInfo) -> Vec<(Dim, f64)> {
    vec![
        (Dim::ReadLeader, rate(info, Dim::ReadLeader)),
        (Dim::WriteLeader, rate(info, Dim::WriteLeader)),
    ]
}

/// Up stores ordered by `dim`, hottest first.
fn hottest_first(loads: &HashMap<u64, Load>, dim: Dim) -> Vec<u64> {
    let mut ids: Vec<u64> = loads.keys().copied().collect();
    ids.sort_by(|a, b| {
        loads[b]
            .get(dim)
            .total_cmp(&loads[a].get(dim))
            .then(a.cmp(b))
    });
    ids
}

/// The first move of `dim` that fits, from the hottest store that has one: among that
/// store's possible moves (`moves_from`), the coldest target first, then the hottest region.
fn pick<'a>(
    loads: &HashMap<u64, Load>,
    dim: Dim,
    rules: &HotRules,
    moves_from: impl Fn(u64) -> Vec<Move<'a>>,
) -> Option<Move<'a>> {
    hottest_first(loads, dim).into_iter().find_map(|src| {
        let mut moves = moves_from(src);
        moves.sort_by(|a, b| {
            loads[&a.to]
                .get(dim)
                .total_cmp(&loads[&b.to].get(dim))
                .then(rate(b.info, dim).total_cmp(&rate(a.info, dim)))
                .then(a.info.region.id.cmp(&b.info.region.id))
                .then(a.to.cmp(&b.to))
        });
        moves
            .into_iter()
            .find(|m| fits(&loads[&src], &loads[&m.to], dim, &m.shifts, rules))
    })
}

/// A leader transfer (`dim` is [`Dim::ReadLeader`] or [`Dim::WriteLeader`]) of a region hot in
/// `dim` from the store that leads it to one of its followers' stores.
fn pick_leader_move<'a>(
    loads: &HashMap<u64, Load>,
    candidates: &[&'a RegionInfo],
    dim: Dim,
    rules: &HotRules,
) -> Option<Move<'a>> {
    pick(loads, dim, rules, |src| {
        let led_here = candidates.iter().filter(|r| {
            rules.is_hot_rate(rate(r, dim)) && r.leader.as_ref().is_some_and(|l| l.store_id == src)
        });
        led_here
            .flat_map(|info| {
                let followers = info.region.peers.iter().filter(|p| p.store_id != src);
                followers.map(move |p| Move {
                    info,
                    from: src,
                    to: p.store_id,
                    shifts: leader_shifts(info),
                    steps: vec![Step::TransferLeader {
                        store_id: p.store_id,
                        peer_id: p.id,
                    }],
                })
            })
            .collect()
    })
}

/// A peer move by write peer load of a region hot in writes, from a store that may lose a peer
/// to a store without a peer of it that may take one. A leader's peer takes the leadership
/// along.
fn pick_peer_move<'a>(
    loads: &HashMap<u64, Load>,
    candidates: &[&'a RegionInfo],
    rules: &HotRules,
) -> Option<Move<'a>> {
    let dim = Dim::WritePeer;
    let targets: Vec<u64> = loads
        .iter()
        .filter(|(_, l)| l.add_tokens > 0)
        .map(|(id, _)| *id)
        .collect();
    pick(loads, dim, rules, |src| {
        if loads[&src].remove_tokens == 0 {
            return Vec::new();
        }
        let mut moves = Vec::new();
        for info in candidates
            .iter()
            .filter(|r| rules.is_hot_rate(rate(r, dim)))
        {
            let Some(from) = info.region.peers.iter().find(|p| p.store_id == src) else {
                continue;
            };
            let leads = info.leader.as_ref().is_some_and(|l| l.id == from.id);
            let mut shifts = vec![(dim, rate(info, dim))];
            if leads {
                shifts.extend(leader_shifts(info));
            }
            let free = targets
                .iter()
                .filter(|&&t| !info.region.peers.iter().any(|p| p.store_id == t));
            moves.extend(free.map(|&to| Move {
                info,
                from: src,
                to,
                shifts: shifts.clone(),
                steps: peer_move_steps(from, to, leads),
            }));
        }
        moves
    })
}

/// Add a learner on `to`, promote it, hand it the leadership if `from` leads, remove `from`.
fn peer_move_steps(from: &Peer, to: u64, leads: bool) -> Vec<Step> {
    let mut steps = add_voter_steps(to);
    if leads {
        // Filled with the new peer's id by `Operator::assign_peer_ids`.
        steps.push(Step::TransferLeader {
            store_id: to,
            peer_id: 0,
        });
    }
    steps.push(Step::RemovePeer {
        store_id: from.store_id,
        peer_id: from.id,
    });
    steps
}

/// Applies `m` to the planned loads and tokens.
fn apply(loads: &mut HashMap<u64, Load>, m: &Move) {
    let adds_peer = m.steps.iter().any(|s| matches!(s, Step::AddLearner { .. }));
    for &(dim, x) in &m.shifts {
        *loads.get_mut(&m.from).expect("source is up").get_mut(dim) -= x;
        *loads.get_mut(&m.to).expect("target is up").get_mut(dim) += x;
    }
    if adds_peer {
        loads.get_mut(&m.from).expect("source is up").remove_tokens -= 1;
        loads.get_mut(&m.to).expect("target is up").add_tokens -= 1;
    }
}

/// Up to `ops_max` operators moving hot regions' leaders, then peers, off the hottest stores
/// (see the module docs); none when every store pair is within the tolerance.
pub fn hot_region(snap: &ClusterSnapshot, rules: &HotRules, ops_max: usize) -> Vec<Operator> {
    assert!(
        rules.tolerance_ratio >= 1.0,
        "hot-region tolerance ratio {} below 1 would let two stores trade a region forever",
        rules.tolerance_ratio
    );
    let mut loads = store_loads(snap);
    if loads.len() < 2 {
        return Vec::new();
    }
    let movable: Vec<&RegionInfo> = snap
        .regions
        .iter()
        .filter(|r| !r.has_operator)
        .filter(|r| is_movable(&r.info, rules.max_replicas, |id| loads.contains_key(&id)))
        .map(|r| &r.info)
        .filter(|info| {
            is_hot(&info.flow, rules.byte_rate_min_per_sec) && info.hot_reports >= rules.min_reports
        })
        .collect();
    let mut used: HashSet<u64> = HashSet::new();
    let mut ops = Vec::new();
    loop {
        let mut moved = false;
        for kind in [Dim::WriteLeader, Dim::ReadLeader] {
            if ops.len() >= ops_max {
                return ops;
            }
            let candidates: Vec<&RegionInfo> = movable
                .iter()
                .copied()
                .filter(|r| !used.contains(&r.region.id))
                .collect();
            let picked = match kind {
                Dim::WriteLeader => pick_leader_move(&loads, &candidates, kind, rules)
                    .or_else(|| pick_peer_move(&loads, &candidates, rules)),
                _ => pick_leader_move(&loads, &candidates, kind, rules),
            };
            if let Some(m) = picked {
                apply(&mut loads, &m);
                used.insert(m.info.region.id);
                ops.push(Operator::new(m.info, HOT_REGION, m.steps));
                moved = true;
            }
        }
        if !moved {
            return ops;
        }
    }
}

#[cfg(test)]
#[path = "hot_region_tests.rs"]
mod tests;
