//! balance-leader's one pass and balance-region's per-store lists and size gate against the
//! plain walks they replaced (kept here as references), on seeded random snapshots: the
//! shortcuts must never hide, add or reorder a move.

use std::collections::{HashMap, HashSet};

use codec::memcomparable::encode_bytes;
use proto::metapb::{Region, RegionEpoch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// balance-leader as it was: for each source store, a walk of every region.
fn reference_balance_leader(
    snap: &ClusterSnapshot,
    tolerance: u64,
    ops_max: usize,
) -> Vec<Operator> {
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
    let views = snap.views();
    let region_groups: Vec<KeyspaceGroup> =
        views.iter().map(|r| region_group(&r.info.region)).collect();
    let mut groups: HashMap<KeyspaceGroup, HashMap<u64, u64>> =
        group_tallies(&snap.stores, &views, &region_groups)
            .into_iter()
            .map(|(g, tallies)| {
                let counts = leaders
                    .keys()
                    .map(|id| (*id, tallies.get(id).map_or(0, |t| t.leader_count)))
                    .collect();
                (g, counts)
            })
            .collect();
    let mut ops: Vec<Operator> = Vec::new();
    while ops.len() < ops_max {
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
            reference_pick(snap, &groups[&g], &leaders, &in_group, &ops).map(|m| (g, m))
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

fn reference_pick(
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
            let op = Operator::new(info, "balance-leader", vec![step]);
            return Some((op, src, p.store_id));
        }
    }
    None
}

/// Whether balance-region, as it was, has a move: for each pair of up stores (with tokens) in
/// each group whose source scores above the target, a walk of every movable region. It is what
/// the per-store lists and the size gate must agree with when the fast path finds nothing.
fn reference_has_region_move(snap: &ClusterSnapshot, rules: &PlacementRules) -> bool {
    let up: HashSet<u64> = snap
        .stores
        .iter()
        .filter(|s| s.is_up())
        .map(|s| s.id)
        .collect();
    if up.len() < 2 {
        return false;
    }
    let views = snap.views();
    let region_groups: Vec<KeyspaceGroup> =
        views.iter().map(|r| region_group(&r.info.region)).collect();
    let tallies = group_tallies(&snap.stores, &views, &region_groups);
    for (g, per_store) in &tallies {
        let score = |id: u64| {
            let s = snap.store(id).expect("a store of the snapshot");
            let t = per_store.get(&id).copied().unwrap_or_default();
            let with = |count: u64, size: u64| {
                region_score(rules, count, size, s.capacity_bytes, s.available_bytes)
            };
            (with, t)
        };
        for src in up.iter().copied() {
            let s = snap.store(src).expect("up");
            if s.remove_peer_tokens == 0 {
                continue;
            }
            let (src_with, st) = score(src);
            for dst in up.iter().copied().filter(|d| *d != src) {
                let d = snap.store(dst).expect("up");
                if d.add_peer_tokens == 0 {
                    continue;
                }
                let (dst_with, dt) = score(dst);
                let (src_now, dst_now) = (
                    src_with(st.region_count, st.region_size_bytes),
                    dst_with(dt.region_count, dt.region_size_bytes),
                );
                if dst_now >= src_now {
                    continue;
                }
                let found = views.iter().zip(&region_groups).any(|(r, rg)| {
                    let size = r.info.approximate_size;
                    let margin = rules.region_tolerance_ratio * rules.region_weight(size) as f64;
                    rg == g
                        && !r.has_operator
                        && !r.is_hot
                        && is_movable(r.info, rules.max_replicas, |id| up.contains(&id))
                        && r.info.region.peers.iter().any(|p| p.store_id == src)
                        && !r.info.region.peers.iter().any(|p| p.store_id == dst)
                        && src_with(
                            st.region_count.saturating_sub(1),
                            st.region_size_bytes.saturating_sub(size),
                        ) - dst_with(
                            dt.region_count + 1,
                            dt.region_size_bytes.saturating_add(size),
                        ) >= margin
                });
                if found {
                    return true;
                }
            }
        }
    }
    false
}

/// A random snapshot: 2-7 stores (some not up, some short of disk or tokens), up to 150
/// regions over two keyspaces and the keys outside them, of random sizes, leaders and health.
fn random_snapshot(rng: &mut StdRng) -> ClusterSnapshot {
    let store_count = rng.gen_range(2..=7u64);
    let mut stores: Vec<StoreSnap> = (1..=store_count)
        .map(|id| StoreSnap {
            id,
            health: match rng.gen_range(0..10) {
                0 => StoreHealth::Disconnected,
                1 => StoreHealth::Offline,
                2 if rng.gen_bool(0.5) => StoreHealth::Down,
                _ => StoreHealth::Up,
            },
            capacity_bytes: if rng.gen_bool(0.3) { 100 << 30 } else { 0 },
            available_bytes: rng.gen_range(1..=100u64) << 30,
            add_peer_tokens: rng.gen_range(0..4),
            remove_peer_tokens: rng.gen_range(0..4),
            ..Default::default()
        })
        .collect();
    let prefixes: [&[u8]; 4] = [b"a", b"r\0\0\0", b"r\0\0\x01", b"x\0\0\0"];
    let mut keys: Vec<Vec<u8>> = (0..rng.gen_range(0..150))
        .map(|_| {
            let p = prefixes[rng.gen_range(0..prefixes.len())];
            encode_bytes(&[p, &[rng.gen::<u8>(), rng.gen::<u8>()]].concat())
        })
        .collect();
    keys.sort();
    keys.dedup();
    let mut bounds = vec![Vec::new()];
    bounds.extend(keys);
    bounds.push(Vec::new());
    let mut next_peer = 1000;
    let sizes = [0, 1 << 20, 64 << 20];
    let mut regions = Vec::new();
    for (i, w) in bounds.windows(2).enumerate() {
        let mut ids: Vec<u64> = (1..=store_count).collect();
        let n = match rng.gen_range(0..10) {
            0 => 2,
            1 => 4,
            _ => 3,
        }
        .min(ids.len());
        let mut peers = Vec::new();
        for _ in 0..n {
            let store_id = ids.swap_remove(rng.gen_range(0..ids.len()));
            next_peer += 1;
            let learner = rng.gen_range(0..20) == 0;
            let role = if learner {
                PeerRole::Learner
            } else {
                PeerRole::Voter
            };
            peers.push(Peer {
                id: next_peer,
                store_id,
                role: role as i32,
                is_witness: false,
            });
        }
        let leader = (rng.gen_range(0..20) != 0).then(|| peers[rng.gen_range(0..peers.len())]);
        let region = Region {
            id: i as u64 + 1,
            start_key: w[0].clone(),
            end_key: w[1].clone(),
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers,
        };
        let mut info = RegionInfo::new(region, leader);
        info.approximate_size = if rng.gen_bool(0.2) {
            rng.gen_range(0..(128u64 << 20))
        } else {
            sizes[rng.gen_range(0..sizes.len())]
        };
        if rng.gen_range(0..15) == 0 {
            info.pending_peers = vec![info.region.peers[0]];
        }
        if rng.gen_range(0..10) == 0 {
            let p = info.region.peers[rng.gen_range(0..info.region.peers.len())];
            info.down_peers = vec![proto::pdpb::PeerStats {
                peer: Some(p),
                down_seconds: [60, 1800, 4000][rng.gen_range(0..3)],
            }];
        }
        let pending_steps = match rng.gen_range(0..15) {
            0 => vec![Step::TransferLeader {
                store_id: info.region.peers[0].store_id,
                peer_id: info.region.peers[0].id,
            }],
            1 => vec![Step::AddLearner {
                store_id: rng.gen_range(1..=store_count),
                peer_id: 0,
            }],
            _ => Vec::new(),
        };
        regions.push(RegionSnap {
            info,
            has_operator: !pending_steps.is_empty() || rng.gen_range(0..20) == 0,
            is_hot: rng.gen_range(0..20) == 0,
            pending_steps,
        });
    }
    for s in &mut stores {
        let on = |r: &&RegionSnap| r.info.region.peers.iter().any(|p| p.store_id == s.id);
        s.region_count = regions.iter().filter(on).count() as u64;
        s.region_size_bytes = regions
            .iter()
            .filter(on)
            .map(|r| r.info.approximate_size)
            .sum();
        s.leader_count = regions
            .iter()
            .filter(|r| r.info.leader.is_some_and(|l| l.store_id == s.id))
            .count() as u64;
        // What running operators will change: a few more or fewer.
        s.leader_count += rng.gen_range(0..3);
        s.region_count += rng.gen_range(0..3);
    }
    ClusterSnapshot { stores, regions }
}

#[test]
fn balance_leader_in_one_pass_plans_what_the_walk_per_store_planned() {
    let mut planned = 0;
    for seed in 0..400u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let snap = random_snapshot(&mut rng);
        for (tolerance, ops_max) in [(0, 1), (0, 8), (1, 4), (2, 64)] {
            let fast = balance_leader(&snap, tolerance, ops_max);
            let reference = reference_balance_leader(&snap, tolerance, ops_max);
            assert_eq!(fast, reference, "seed {seed}, tolerance {tolerance}");
            planned += fast.len();
        }
    }
    assert!(
        planned > 400,
        "the random snapshots exercise moves: {planned}"
    );
}

#[test]
fn balance_region_finds_a_move_whenever_one_exists() {
    let rules = PlacementRules::default();
    let (mut with_move, mut without) = (0, 0);
    for seed in 0..400u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let snap = random_snapshot(&mut rng);
        let ops = balance_region(&snap, &rules, 1);
        let exists = reference_has_region_move(&snap, &rules);
        assert_eq!(!ops.is_empty(), exists, "seed {seed}: {ops:?}");
        if exists {
            with_move += 1;
        } else {
            without += 1;
        }
    }
    assert!(with_move > 40 && without > 40, "{with_move} / {without}");
}

#[test]
fn a_region_with_settled_replicas_gets_nothing_from_the_replica_checker() {
    let rules = PlacementRules::default();
    let (mut settled, mut checked) = (0, 0);
    for seed in 0..400u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let snap = random_snapshot(&mut rng);
        let is_lost = |id: u64| snap.store(id).is_none_or(|s| s.is_lost());
        for r in &snap.regions {
            if replicas_settled(&r.info, &rules, is_lost) {
                settled += 1;
                let op = check_replicas(&r.info, &snap, &rules);
                assert_eq!(op, None, "seed {seed}, region {}", r.info.region.id);
            } else if check_replicas(&r.info, &snap, &rules).is_some() {
                checked += 1;
            }
        }
    }
    assert!(settled > 1_000 && checked > 1_000, "{settled} / {checked}");
}
