use proto::eraftpb::ConfChangeType;
use proto::metapb::{Region, RegionEpoch};

use super::*;
use crate::operator::OpStatus;

fn peer(id: u64, store_id: u64, learner: bool) -> Peer {
    let role = if learner {
        PeerRole::Learner
    } else {
        PeerRole::Voter
    };
    Peer {
        id,
        store_id,
        role: role as i32,
        is_witness: false,
    }
}

fn region(id: u64, start: &[u8], end: &[u8], peers: Vec<Peer>, leader: usize) -> RegionInfo {
    let leader = peers.get(leader).cloned();
    let r = Region {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers,
    };
    RegionInfo::new(r, leader)
}

/// Stores with plenty of store-limit tokens; not up means Disconnected (silent, not lost).
fn stores(up: &[(u64, bool)]) -> Vec<StoreSnap> {
    up.iter()
        .map(|&(id, is_up)| StoreSnap {
            id,
            health: if is_up {
                StoreHealth::Up
            } else {
                StoreHealth::Disconnected
            },
            add_peer_tokens: 1_000,
            remove_peer_tokens: 1_000,
            ..Default::default()
        })
        .collect()
}

fn rules() -> PlacementRules {
    PlacementRules::default()
}

fn snap(stores: Vec<StoreSnap>, regions: &[RegionInfo]) -> ClusterSnapshot {
    let regions = regions
        .iter()
        .map(|r| RegionSnap {
            info: r.clone(),
            has_operator: false,
            is_hot: false,
            pending_steps: Vec::new(),
        })
        .collect();
    ClusterSnapshot { stores, regions }
}

#[test]
fn presplit_only_strictly_inside() {
    let keys = vec![b"c".to_vec(), b"m".to_vec(), b"x".to_vec()];
    let r = region(1, b"", b"", vec![peer(2, 1, false)], 0);
    let op = presplit(&r, &keys).unwrap();
    assert_eq!(op.steps, vec![Step::Split { keys: keys.clone() }]);
    let r = region(1, b"c", b"x", vec![peer(2, 1, false)], 0);
    assert_eq!(
        presplit(&r, &keys).unwrap().steps,
        vec![Step::Split {
            keys: vec![b"m".to_vec()]
        }]
    );
    let r = region(1, b"c", b"m", vec![peer(2, 1, false)], 0);
    assert!(presplit(&r, &keys).is_none());
}

#[test]
fn replica_checker_adds_learner_on_emptiest_store_then_promotes() {
    let r = region(1, b"", b"", vec![peer(10, 1, false)], 0);
    let mut st = stores(&[(1, true), (2, true), (3, true)]);
    st[1].region_count = 5;
    let op = check_replicas(&r, &snap(st.clone(), &[]), &rules()).unwrap();
    assert_eq!(
        op.steps,
        vec![
            Step::AddLearner {
                store_id: 3,
                peer_id: 0
            },
            Step::PromoteLearner {
                store_id: 3,
                peer_id: 0
            }
        ]
    );
    // Too few stores up: nothing to do.
    st[2].health = StoreHealth::Disconnected;
    assert!(check_replicas(&r, &snap(st, &[]), &rules()).is_none());
    // A learner present and voters missing: promote it.
    let r = region(1, b"", b"", vec![peer(10, 1, false), peer(11, 2, true)], 0);
    let op = check_replicas(
        &r,
        &snap(stores(&[(1, true), (2, true), (3, true)]), &[]),
        &rules(),
    )
    .unwrap();
    assert_eq!(
        op.steps,
        vec![Step::PromoteLearner {
            store_id: 2,
            peer_id: 11
        }]
    );
}

#[test]
fn replica_checker_removes_extra_prefers_down_never_leader() {
    let peers = vec![
        peer(10, 1, false),
        peer(11, 2, false),
        peer(12, 3, false),
        peer(13, 4, false),
    ];
    let r = region(1, b"", b"", peers.clone(), 0);
    let op = check_replicas(
        &r,
        &snap(stores(&[(1, true), (2, true), (3, false), (4, true)]), &[]),
        &rules(),
    )
    .unwrap();
    assert_eq!(
        op.steps,
        vec![Step::RemovePeer {
            store_id: 3,
            peer_id: 12
        }]
    );
    // All up: never the leader (store 1), even if it holds the most regions.
    let mut st = stores(&[(1, true), (2, true), (3, true), (4, true)]);
    st[0].region_count = 100;
    let op = check_replicas(&r, &snap(st, &[]), &rules()).unwrap();
    assert!(matches!(op.steps[..], [Step::RemovePeer { store_id, .. }] if store_id != 1));
    // The leader is on the down store: transfer first.
    let op = check_replicas(
        &r,
        &snap(stores(&[(1, false), (2, true), (3, true), (4, true)]), &[]),
        &rules(),
    )
    .unwrap();
    assert_eq!(
        op.steps,
        vec![
            Step::TransferLeader {
                store_id: 2,
                peer_id: 11
            },
            Step::RemovePeer {
                store_id: 1,
                peer_id: 10
            }
        ]
    );
}

#[test]
fn replica_checker_replaces_down_voter() {
    let r = region(
        1,
        b"",
        b"",
        vec![peer(10, 1, false), peer(11, 2, false), peer(12, 3, false)],
        0,
    );
    // Store 3 silent but not yet past max_store_down_secs: its peer stays.
    let mut st = stores(&[(1, true), (2, true), (3, false), (4, true)]);
    assert!(check_replicas(&r, &snap(st.clone(), &[]), &rules()).is_none());
    st[2].health = StoreHealth::Down;
    let op = check_replicas(&r, &snap(st, &[]), &rules()).unwrap();
    assert_eq!(
        op.steps,
        vec![
            Step::AddLearner {
                store_id: 4,
                peer_id: 0
            },
            Step::PromoteLearner {
                store_id: 4,
                peer_id: 0
            },
            Step::RemovePeer {
                store_id: 3,
                peer_id: 12
            },
        ]
    );
    let healthy = stores(&[(1, true), (2, true), (3, true)]);
    assert!(check_replicas(&r, &snap(healthy, &[]), &rules()).is_none());
}

fn three_peer_regions(n: u64, leader_store: u64) -> Vec<RegionInfo> {
    (0..n)
        .map(|i| {
            let peers = vec![
                peer(100 + i * 3, 1, false),
                peer(101 + i * 3, 2, false),
                peer(102 + i * 3, 3, false),
            ];
            region(
                i + 1,
                &[i as u8],
                &[i as u8 + 1],
                peers,
                leader_store as usize - 1,
            )
        })
        .collect()
}

#[test]
fn balance_leader_moves_from_most_to_fewest() {
    let regions = three_peer_regions(6, 1);
    let mut st = stores(&[(1, true), (2, true), (3, true)]);
    st[0].leader_count = 6;
    let ops = balance_leader(&snap(st.clone(), &regions), 1, 10);
    // 6 leaders on 3 stores, mean 2, tolerance 1: (6,0,0) -> (3,2,1).
    assert_eq!(ops.len(), 3);
    let mut to = [0u64; 4];
    for op in &ops {
        match op.steps[..] {
            [Step::TransferLeader { store_id, .. }] => to[store_id as usize] += 1,
            _ => panic!("{op:?}"),
        }
    }
    assert_eq!(to[1], 0);
    assert_eq!(to[2] + to[3], 3);
    assert!(to[2] >= 1 && to[3] >= 1);
    // The limit holds.
    assert_eq!(balance_leader(&snap(st.clone(), &regions), 1, 1).len(), 1);
    // Balanced within tolerance: nothing.
    st[0].leader_count = 3;
    st[1].leader_count = 2;
    st[2].leader_count = 1;
    assert!(balance_leader(&snap(st, &regions), 1, 10).is_empty());
}

#[test]
fn balance_leader_skips_pending_and_busy_regions() {
    let mut regions = three_peer_regions(4, 1);
    for r in &mut regions {
        r.pending_peers = vec![r.region.peers[1], r.region.peers[2]];
    }
    let mut st = stores(&[(1, true), (2, true), (3, true)]);
    st[0].leader_count = 4;
    assert!(balance_leader(&snap(st.clone(), &regions), 0, 10).is_empty());
    let regions = three_peer_regions(4, 1);
    let mut s = snap(st.clone(), &regions);
    s.regions.iter_mut().for_each(|r| r.has_operator = true);
    assert!(balance_leader(&s, 0, 10).is_empty());
    // Down stores get no leaders.
    st[1].health = StoreHealth::Disconnected;
    st[2].health = StoreHealth::Offline;
    assert!(balance_leader(&snap(st, &regions), 0, 10).is_empty());
}

#[test]
fn operator_advances_and_detects_staleness() {
    let mut r = region(1, b"", b"", vec![peer(10, 1, false)], 0);
    let mut op = Operator::new(
        &r,
        "replica",
        vec![
            Step::AddLearner {
                store_id: 2,
                peer_id: 0,
            },
            Step::PromoteLearner {
                store_id: 2,
                peer_id: 0,
            },
        ],
    );
    op.assign_peer_ids(|| Ok(77)).unwrap();
    let OpStatus::Running(Some(resp)) = op.advance(&r, 0, 1000) else {
        panic!()
    };
    let cp = resp.change_peer.unwrap();
    assert_eq!(cp.change_type, ConfChangeType::AddLearnerNode as i32);
    assert_eq!(cp.peer.unwrap(), peer(77, 2, true));
    // The learner appears but is pending: wait.
    r.region.peers.push(peer(77, 2, true));
    r.region.region_epoch.as_mut().unwrap().conf_ver += 1;
    r.pending_peers = vec![peer(77, 2, true)];
    assert_eq!(op.advance(&r, 0, 1000), OpStatus::Running(None));
    r.pending_peers.clear();
    let OpStatus::Running(Some(resp)) = op.advance(&r, 0, 1000) else {
        panic!()
    };
    assert_eq!(
        resp.change_peer.unwrap().change_type,
        ConfChangeType::AddNode as i32
    );
    r.region.peers[1] = peer(77, 2, false);
    r.region.region_epoch.as_mut().unwrap().conf_ver += 1;
    assert_eq!(op.advance(&r, 0, 1000), OpStatus::Finished);
    assert_eq!(op.advance(&r, 2000, 1000), OpStatus::Timeout);
    r.region.region_epoch.as_mut().unwrap().version += 1;
    assert_eq!(op.advance(&r, 0, 1000), OpStatus::Stale);
}

const MIB: u64 = 1 << 20;

#[test]
fn region_score_counts_empty_regions_and_repels_full_disks() {
    let r = rules();
    // Empty regions weigh the floor: a store of 3 empty regions outscores one of 2.
    assert_eq!(region_score(&r, 3, 0, 0, 0), 3.0 * MIB as f64);
    assert!(region_score(&r, 3, 0, 0, 0) > region_score(&r, 2, 0, 0, 0));
    // Size adds on top of the floor.
    assert_eq!(region_score(&r, 1, 4 * MIB, 0, 0), 5.0 * MIB as f64);
    // Capacity unknown or plenty free: no inflation; below 20% free: ratio / free.
    assert_eq!(space_factor(&r, 0, 0), 1.0);
    assert_eq!(space_factor(&r, 100, 50), 1.0);
    assert_eq!(space_factor(&r, 100, 20), 1.0);
    assert!((space_factor(&r, 100, 10) - 2.0).abs() < 1e-9);
    assert!(
        (space_factor(&r, 100, 0) - 200.0).abs() < 1e-9,
        "floored at 0.1% free"
    );
    assert!(
        (space_factor(&r, 100, 500) - 1.0).abs() < 1e-9,
        "available > capacity"
    );
}

fn store_with(id: u64, health: StoreHealth, region_count: u64) -> StoreSnap {
    StoreSnap {
        id,
        health,
        region_count,
        add_peer_tokens: 1_000,
        remove_peer_tokens: 1_000,
        ..Default::default()
    }
}

#[test]
fn replica_checker_moves_voters_off_offline_store_leader_first() {
    // Leader on store 3, which is being decommissioned.
    let r = region(
        1,
        b"",
        b"",
        vec![peer(10, 1, false), peer(11, 2, false), peer(12, 3, false)],
        2,
    );
    let mut st = vec![
        store_with(1, StoreHealth::Up, 10),
        store_with(2, StoreHealth::Up, 10),
        store_with(3, StoreHealth::Offline, 10),
        store_with(4, StoreHealth::Up, 3),
        store_with(5, StoreHealth::Up, 5),
    ];
    let op = check_replicas(&r, &snap(st.clone(), &[]), &rules()).unwrap();
    assert_eq!(
        op.steps,
        vec![
            Step::AddLearner {
                store_id: 4,
                peer_id: 0
            },
            Step::PromoteLearner {
                store_id: 4,
                peer_id: 0
            },
            Step::TransferLeader {
                store_id: 1,
                peer_id: 10
            },
            Step::RemovePeer {
                store_id: 3,
                peer_id: 12
            },
        ]
    );
    assert!(
        !is_under_replicated(&r, 3),
        "a move, under the store limits"
    );
    // Store 4 may not take a peer now: store 5 does.
    st[3].add_peer_tokens = 0;
    let op = check_replicas(&r, &snap(st.clone(), &[]), &rules()).unwrap();
    assert!(matches!(op.steps[0], Step::AddLearner { store_id: 5, .. }));
    // No target may take one, or the offline store may not lose one: wait.
    st[4].add_peer_tokens = 0;
    assert!(check_replicas(&r, &snap(st.clone(), &[]), &rules()).is_none());
    st[3].add_peer_tokens = 1;
    st[2].remove_peer_tokens = 0;
    assert!(check_replicas(&r, &snap(st, &[]), &rules()).is_none());
}

#[test]
fn replica_checker_never_targets_unhealthy_stores() {
    let r = region(
        1,
        b"",
        b"",
        vec![peer(10, 1, false), peer(11, 2, false), peer(12, 3, false)],
        0,
    );
    // The emptiest stores are down, silent or offline: the busy up store 7 is the target.
    let st = vec![
        store_with(1, StoreHealth::Up, 10),
        store_with(2, StoreHealth::Up, 10),
        store_with(3, StoreHealth::Offline, 10),
        store_with(4, StoreHealth::Down, 0),
        store_with(5, StoreHealth::Disconnected, 0),
        store_with(6, StoreHealth::Offline, 0),
        store_with(7, StoreHealth::Up, 50),
    ];
    let op = check_replicas(&r, &snap(st.clone(), &[]), &rules()).unwrap();
    assert!(matches!(op.steps[0], Step::AddLearner { store_id: 7, .. }));
    // Without store 7, fewer up stores than max_replicas: nothing to do.
    let st: Vec<StoreSnap> = st.into_iter().filter(|s| s.id != 7).collect();
    assert!(check_replicas(&r, &snap(st, &[]), &rules()).is_none());
}

#[test]
fn replica_checker_replaces_peer_reported_down_past_max_store_down() {
    let mut r = region(
        1,
        b"",
        b"",
        vec![peer(10, 1, false), peer(11, 2, false), peer(12, 3, false)],
        0,
    );
    let st = stores(&[(1, true), (2, true), (3, true), (4, true)]);
    r.down_peers = vec![proto::pdpb::PeerStats {
        peer: Some(peer(12, 3, false)),
        down_seconds: rules().max_store_down_secs - 1,
    }];
    assert!(check_replicas(&r, &snap(st.clone(), &[]), &rules()).is_none());
    r.down_peers[0].down_seconds = rules().max_store_down_secs;
    let op = check_replicas(&r, &snap(st, &[]), &rules()).unwrap();
    assert_eq!(
        op.steps.last(),
        Some(&Step::RemovePeer {
            store_id: 3,
            peer_id: 12
        })
    );
    assert!(matches!(op.steps[0], Step::AddLearner { store_id: 4, .. }));
}

#[test]
fn replica_checker_restores_missing_voter_before_the_limits() {
    let r = region(1, b"", b"", vec![peer(10, 1, false), peer(11, 2, false)], 0);
    let mut st = stores(&[(1, true), (2, true), (3, true)]);
    for s in &mut st {
        s.add_peer_tokens = 0;
        s.remove_peer_tokens = 0;
    }
    let op = check_replicas(&r, &snap(st.clone(), &[]), &rules()).unwrap();
    assert!(matches!(op.steps[0], Step::AddLearner { store_id: 3, .. }));
    assert!(is_under_replicated(&r, 3));
    // A learner on an offline store is dropped, not promoted.
    let r = region(
        1,
        b"",
        b"",
        vec![peer(10, 1, false), peer(11, 2, false), peer(12, 4, true)],
        0,
    );
    st.push(store_with(4, StoreHealth::Offline, 0));
    let op = check_replicas(&r, &snap(st, &[]), &rules()).unwrap();
    assert_eq!(
        op.steps,
        vec![Step::RemovePeer {
            store_id: 4,
            peer_id: 12
        }]
    );
}

/// A simulated cluster: regions and stores, with the store counts recomputed from the
/// regions, and operators applied step by step with the invariants checked at every step.
struct Sim {
    stores: Vec<StoreSnap>,
    regions: Vec<RegionInfo>,
    next_peer_id: u64,
}

impl Sim {
    /// `n` regions with 3 voters on stores 1..=3 (leaders rotating), sizes from `size`.
    fn new(n: u64, store_ids: &[u64], size: impl Fn(u64) -> u64) -> Sim {
        let regions = (0..n)
            .map(|i| {
                let peers = (0..3)
                    .map(|j| peer(1000 + i * 3 + j, j + 1, false))
                    .collect();
                let mut r = region(i + 1, &[i as u8], &[i as u8 + 1], peers, (i % 3) as usize);
                r.approximate_size = size(i);
                r
            })
            .collect();
        let stores = store_ids
            .iter()
            .map(|&id| store_with(id, StoreHealth::Up, 0))
            .collect();
        Sim {
            stores,
            regions,
            next_peer_id: 1_000_000,
        }
    }

    fn snapshot(&self) -> ClusterSnapshot {
        let mut stores = self.stores.clone();
        for s in &mut stores {
            let on = |r: &&RegionInfo| r.region.peers.iter().any(|p| p.store_id == s.id);
            s.region_count = self.regions.iter().filter(on).count() as u64;
            s.region_size_bytes = self
                .regions
                .iter()
                .filter(on)
                .map(|r| r.approximate_size)
                .sum();
            s.leader_count = self
                .regions
                .iter()
                .filter(|r| r.leader.is_some_and(|l| l.store_id == s.id))
                .count() as u64;
        }
        snap(stores, &self.regions)
    }

    fn apply(&mut self, op: &Operator) {
        let r = self
            .regions
            .iter_mut()
            .find(|r| r.region.id == op.region_id)
            .unwrap();
        for step in &op.steps {
            let peers = &mut r.region.peers;
            match *step {
                Step::AddLearner { store_id, .. } => {
                    self.next_peer_id += 1;
                    peers.push(peer(self.next_peer_id, store_id, true));
                }
                Step::PromoteLearner { store_id, .. } => {
                    let p = peers.iter_mut().find(|p| p.store_id == store_id).unwrap();
                    assert_eq!(p.role, PeerRole::Learner as i32, "{op:?}");
                    p.role = PeerRole::Voter as i32;
                }
                Step::TransferLeader { store_id, .. } => {
                    r.leader = peers.iter().find(|p| p.store_id == store_id).copied();
                }
                Step::RemovePeer { peer_id, .. } => {
                    assert!(
                        r.leader.unwrap().id != peer_id,
                        "removes the leader: {op:?}"
                    );
                    peers.retain(|p| p.id != peer_id);
                }
                Step::Split { .. } | Step::Merge { .. } | Step::MergeTarget { .. } => {
                    panic!("{op:?}")
                }
            }
            let mut on: Vec<u64> = peers.iter().map(|p| p.store_id).collect();
            on.sort_unstable();
            on.dedup();
            assert_eq!(on.len(), peers.len(), "two peers on one store: {op:?}");
            assert!(peers.iter().filter(|p| is_voter(p)).count() >= 3, "{op:?}");
            let leader = r.leader.unwrap();
            assert!(peers.iter().any(|p| p.id == leader.id && is_voter(p)));
        }
    }

    /// Runs balance-region (at most `ops_max` a round) until it plans nothing; returns the
    /// number of rounds that planned something.
    fn run_until_settled(&mut self, ops_max: usize, rounds_max: usize) -> usize {
        for round in 0..rounds_max {
            let ops = balance_region(&self.snapshot(), &rules(), ops_max);
            if ops.is_empty() {
                return round;
            }
            assert!(ops.len() <= ops_max);
            for op in &ops {
                assert_eq!(op.name, "balance-region");
                self.apply(op);
            }
        }
        panic!("balance-region did not settle in {rounds_max} rounds");
    }

    fn counts(&self) -> Vec<u64> {
        self.snapshot()
            .stores
            .iter()
            .map(|s| s.region_count)
            .collect()
    }
}

#[test]
fn balance_region_fills_new_stores_and_settles() {
    // 30 empty regions on 3 stores; 2 stores join: 90 peers, 18 a store.
    let mut sim = Sim::new(30, &[1, 2, 3, 4, 5], |_| 0);
    let rounds = sim.run_until_settled(4, 100);
    // 36 moves at most 4 a round, and no wasted round trips.
    assert!((9..=12).contains(&rounds), "{rounds} rounds");
    let counts = sim.counts();
    assert_eq!(counts.iter().sum::<u64>(), 90);
    let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
    assert!(max - min <= 2, "{counts:?}");
    // Settled: another run plans nothing.
    assert!(balance_region(&sim.snapshot(), &rules(), 4).is_empty());
}

#[test]
fn balance_region_settles_with_uneven_region_sizes() {
    // Sizes 0..=15 MiB, scrambled; the floor is 1 MiB.
    let mut sim = Sim::new(40, &[1, 2, 3, 4], |i| (i * 7 % 16) * MIB);
    sim.run_until_settled(4, 200);
    let snap = sim.snapshot();
    let scores: Vec<f64> = snap
        .stores
        .iter()
        .map(|s| snap.score(&rules(), s))
        .collect();
    let spread = scores.iter().cloned().fold(f64::MIN, f64::max)
        - scores.iter().cloned().fold(f64::MAX, f64::min);
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    assert!(spread < 0.1 * mean, "scores {scores:?}");
}

#[test]
fn balance_region_leaves_a_balanced_cluster_alone() {
    // Every region on every store.
    let sim = Sim::new(10, &[1, 2, 3], |i| i * MIB);
    assert!(balance_region(&sim.snapshot(), &rules(), 10).is_empty());
    // Nothing up to move to or from.
    let mut sim = Sim::new(10, &[1, 2, 3, 4], |_| 0);
    sim.stores[3].health = StoreHealth::Offline;
    assert!(balance_region(&sim.snapshot(), &rules(), 10).is_empty());
    sim.stores[3].health = StoreHealth::Disconnected;
    assert!(balance_region(&sim.snapshot(), &rules(), 10).is_empty());
    sim.stores[3].health = StoreHealth::Down;
    assert!(balance_region(&sim.snapshot(), &rules(), 10).is_empty());
}

#[test]
fn balance_region_moves_only_past_the_tolerance() {
    // One region to move; the stores' loads are set directly (empty regions).
    let regions = three_peer_regions(1, 1);
    let mut st = stores(&[(1, true), (2, true), (3, true), (4, true)]);
    st[0].region_count = 10;
    st[1].region_count = 5;
    st[2].region_count = 5;
    st[3].region_count = 8;
    // After a move 9 vs 9: not ahead by 0.2 region. No move.
    assert!(balance_region(&snap(st.clone(), &regions), &rules(), 10).is_empty());
    // 11 vs 8: after the move 10 vs 9, ahead by a region. Move from store 1 to 4, taking
    // the peer that does not lead (store 1 leads, so it hands the leadership over first).
    st[0].region_count = 11;
    let ops = balance_region(&snap(st.clone(), &regions), &rules(), 10);
    assert_eq!(ops.len(), 1, "only one region is movable");
    assert_eq!(
        ops[0].steps,
        vec![
            Step::AddLearner {
                store_id: 4,
                peer_id: 0
            },
            Step::PromoteLearner {
                store_id: 4,
                peer_id: 0
            },
            Step::TransferLeader {
                store_id: 2,
                peer_id: 101
            },
            Step::RemovePeer {
                store_id: 1,
                peer_id: 100
            },
        ]
    );
}

#[test]
fn balance_region_honours_store_limits_and_prefers_roomy_disks() {
    let sim = Sim::new(30, &[1, 2, 3, 4, 5], |_| 0);
    let mut s = sim.snapshot();
    // Store 4 may take one peer now, store 5 two; store 1 may lose none.
    s.stores[3].add_peer_tokens = 1;
    s.stores[4].add_peer_tokens = 2;
    s.stores[0].remove_peer_tokens = 0;
    let ops = balance_region(&s, &rules(), 10);
    assert_eq!(ops.len(), 3);
    let to = |id: u64| {
        ops.iter()
            .filter(|o| matches!(o.steps[0], Step::AddLearner { store_id, .. } if store_id == id))
            .count()
    };
    assert_eq!((to(4), to(5)), (1, 2));
    for op in &ops {
        assert!(!op
            .steps
            .iter()
            .any(|st| matches!(st, Step::RemovePeer { store_id: 1, .. })));
    }
    // Store 5's disk is 95% full: it scores 4x and gets fewer regions than store 4.
    let mut sim = Sim::new(30, &[1, 2, 3, 4, 5], |_| 0);
    sim.stores[4].capacity_bytes = 100 * MIB;
    sim.stores[4].available_bytes = 5 * MIB;
    sim.run_until_settled(4, 100);
    let counts = sim.counts();
    assert!(counts[4] * 3 < counts[3], "{counts:?}");
}

#[test]
fn balance_region_skips_unhealthy_and_busy_regions() {
    let base = Sim::new(6, &[1, 2, 3, 4], |_| 0);
    let each = |f: &dyn Fn(&mut RegionInfo)| {
        let mut sim = Sim {
            stores: base.stores.clone(),
            regions: base.regions.clone(),
            next_peer_id: 0,
        };
        sim.regions.iter_mut().for_each(f);
        balance_region(&sim.snapshot(), &rules(), 10)
    };
    assert!(!each(&|_| {}).is_empty(), "healthy regions move");
    assert!(each(&|r| r.pending_peers = vec![r.region.peers[1]]).is_empty());
    assert!(each(&|r| {
        r.down_peers = vec![proto::pdpb::PeerStats {
            peer: Some(r.region.peers[1]),
            down_seconds: 1,
        }]
    })
    .is_empty());
    assert!(each(&|r| r.leader = None).is_empty());
    assert!(each(&|r| r.region.peers.push(peer(9_999, 5, true))).is_empty());
    let mut s = base.snapshot();
    s.regions.iter_mut().for_each(|r| r.has_operator = true);
    assert!(balance_region(&s, &rules(), 10).is_empty());
}

#[path = "keyspace_group_tests.rs"]
mod keyspace_group_tests;
