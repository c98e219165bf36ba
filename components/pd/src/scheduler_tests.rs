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

fn stores(up: &[(u64, bool)]) -> Vec<StoreSnap> {
    up.iter()
        .map(|&(id, is_up)| StoreSnap {
            id,
            is_up,
            ..Default::default()
        })
        .collect()
}

fn snap(stores: Vec<StoreSnap>, regions: &[RegionInfo]) -> ClusterSnapshot {
    let regions = regions
        .iter()
        .map(|r| RegionSnap {
            info: r.clone(),
            has_operator: false,
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
    let op = check_replicas(&r, &snap(st.clone(), &[]), 3).unwrap();
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
    st[2].is_up = false;
    assert!(check_replicas(&r, &snap(st, &[]), 3).is_none());
    // A learner present and voters missing: promote it.
    let r = region(1, b"", b"", vec![peer(10, 1, false), peer(11, 2, true)], 0);
    let op = check_replicas(
        &r,
        &snap(stores(&[(1, true), (2, true), (3, true)]), &[]),
        3,
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
        3,
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
    let op = check_replicas(&r, &snap(st, &[]), 3).unwrap();
    assert!(matches!(op.steps[..], [Step::RemovePeer { store_id, .. }] if store_id != 1));
    // The leader is on the down store: transfer first.
    let op = check_replicas(
        &r,
        &snap(stores(&[(1, false), (2, true), (3, true), (4, true)]), &[]),
        3,
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
    let st = stores(&[(1, true), (2, true), (3, false), (4, true)]);
    let op = check_replicas(&r, &snap(st, &[]), 3).unwrap();
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
    assert!(check_replicas(&r, &snap(healthy, &[]), 3).is_none());
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
    st[1].is_up = false;
    st[2].is_up = false;
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
