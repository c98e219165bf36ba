use proto::metapb::{PeerRole, Region, RegionEpoch};

use super::*;
use crate::scheduler::{RegionSnap, StoreHealth};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn rules() -> HotRules {
    HotRules {
        byte_rate_min_per_sec: 512 * KIB,
        tolerance_ratio: 1.25,
        max_replicas: 3,
        min_reports: 2,
    }
}

/// Up stores with plenty of store-limit tokens.
fn stores(ids: &[u64]) -> Vec<StoreSnap> {
    ids.iter()
        .map(|&id| StoreSnap {
            id,
            health: StoreHealth::Up,
            add_peer_tokens: 1_000,
            remove_peer_tokens: 1_000,
            ..Default::default()
        })
        .collect()
}

/// The peer of region `region_id` on `store_id`.
fn peer(region_id: u64, store_id: u64) -> Peer {
    Peer {
        id: region_id * 100 + store_id,
        store_id,
        role: PeerRole::Voter as i32,
        is_witness: false,
    }
}

/// Region `id` with voters on `on` (the first leads), whose leader reported `write` and `read`
/// bytes per second over a 10 s interval, twice in a row.
fn region(id: u64, on: &[u64], write: u64, read: u64) -> RegionInfo {
    let peers: Vec<Peer> = on.iter().map(|&s| peer(id, s)).collect();
    let r = Region {
        id,
        start_key: vec![],
        end_key: vec![],
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: peers.clone(),
    };
    let mut info = RegionInfo::new(r, peers.first().copied());
    info.flow = RegionFlow {
        written_bytes: write * 10,
        read_bytes: read * 10,
        interval_secs: 10,
        ..Default::default()
    };
    info.hot_reports = 2;
    info
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

/// The leader transfer `op` is: (region, store of the new leader).
fn transfer(op: &Operator) -> (u64, u64) {
    assert_eq!(op.name, HOT_REGION);
    match op.steps.as_slice() {
        [Step::TransferLeader { store_id, peer_id }] => {
            assert_eq!(*peer_id, peer(op.region_id, *store_id).id);
            (op.region_id, *store_id)
        }
        _ => panic!("not a leader transfer: {op:?}"),
    }
}

#[test]
fn a_hot_leader_moves_to_the_cold_store_that_holds_a_follower() {
    // Store 1 leads three regions read at 1 MiB/s; 2 and 3 lead one each; 4 leads none but
    // holds followers of regions 12, 20 and 21.
    let regions = [
        region(10, &[1, 2, 3], 0, MIB),
        region(11, &[1, 2, 3], 0, MIB),
        region(12, &[1, 3, 4], 0, MIB),
        region(20, &[2, 3, 4], 0, MIB),
        region(21, &[3, 2, 4], 0, MIB),
    ];
    let s = snap(stores(&[1, 2, 3, 4]), &regions);
    let ops = hot_region(&s, &rules(), 4);
    // Then 2 MiB/s against 1: a second move would make its target hotter than store 1.
    let moves: Vec<(u64, u64)> = ops.iter().map(transfer).collect();
    assert_eq!(moves, vec![(12, 4)]);
}

#[test]
fn nothing_moves_while_the_stores_are_within_tolerance() {
    // 11 x 512 KiB/s led by store 1, 9 by each of stores 2 and 3: 5.5 against 4.5 MiB/s is
    // within 1.25, though a move would not reverse the pair.
    let mut regions = Vec::new();
    for (leader, count) in [(1, 11), (2, 9), (3, 9)] {
        for i in 0..count {
            let on = [leader, leader % 3 + 1, (leader + 1) % 3 + 1];
            regions.push(region(leader * 100 + i, &on, 0, 512 * KIB));
        }
    }
    let s = snap(stores(&[1, 2, 3]), &regions);
    assert!(hot_region(&s, &rules(), 4).is_empty());
    let tight = HotRules {
        tolerance_ratio: 1.1,
        ..rules()
    };
    let ops = hot_region(&s, &tight, 4);
    assert_eq!(ops.len(), 1, "{ops:?}");
    let (_, to) = transfer(&ops[0]);
    assert_ne!(to, 1);
}

#[test]
fn no_move_makes_its_target_hotter_than_its_source() {
    // Store 1 carries 4 MiB/s in one region, store 2 1 MiB/s: out of tolerance, but moving
    // the region would only swap the hot store (and the next run would swap it back).
    let regions = [
        region(10, &[1, 2, 3], 0, 4 * MIB),
        region(11, &[2, 1, 3], 0, MIB),
        region(12, &[3, 1, 2], 0, MIB),
    ];
    let s = snap(stores(&[1, 2, 3]), &regions);
    assert!(hot_region(&s, &rules(), 4).is_empty());
}

#[test]
fn repeated_runs_settle() {
    // Six hot regions all led by store 1; every run's moves applied before the next run.
    let rates = [3 * MIB, 2 * MIB, MIB, MIB, MIB, MIB];
    let regions: Vec<RegionInfo> = (0..6)
        .map(|i| region(10 + i, &[1, 2, 3], 0, rates[i as usize]))
        .collect();
    let mut s = snap(stores(&[1, 2, 3]), &regions);
    let mut runs = 0;
    loop {
        let ops = hot_region(&s, &rules(), 1);
        if ops.is_empty() {
            break;
        }
        runs += 1;
        assert!(runs <= 10, "still moving after 10 runs");
        for op in &ops {
            let (id, to) = transfer(op);
            let r = s
                .regions
                .iter_mut()
                .find(|r| r.info.region.id == id)
                .unwrap();
            r.info.leader = Some(peer(id, to));
        }
    }
    let mut loads = [0u64; 3];
    for r in &s.regions {
        let leader = r.info.leader.unwrap().store_id as usize;
        loads[leader - 1] += r.info.flow.read_bytes / 10;
    }
    assert_eq!(loads.iter().sum::<u64>(), 9 * MIB);
    let (max, min) = (*loads.iter().max().unwrap(), *loads.iter().min().unwrap());
    assert!(max <= 4 * MIB && min >= 2 * MIB, "{loads:?}");
}

#[test]
fn regions_below_the_minimum_rate_are_ignored() {
    let regions: Vec<RegionInfo> = (0..8)
        .map(|i| region(10 + i, &[1, 2, 3], 400 * KIB, 400 * KIB))
        .collect();
    let s = snap(stores(&[1, 2, 3]), &regions);
    assert!(hot_region(&s, &rules(), 4).is_empty());
    let low = HotRules {
        byte_rate_min_per_sec: 256 * KIB,
        ..rules()
    };
    assert!(!hot_region(&s, &low, 4).is_empty());
}

#[test]
fn a_region_with_an_operator_is_skipped_and_counted_where_it_will_be() {
    let regions = [
        region(10, &[1, 2, 3], 0, MIB),
        region(11, &[1, 2, 3], 0, MIB),
    ];
    let mut s = snap(stores(&[1, 2, 3]), &regions);
    // Without the operator: store 1 leads 2 MiB/s, a region goes to store 2.
    assert_eq!(hot_region(&s, &rules(), 4).len(), 1);
    // Region 10's leader is being moved to store 2: store 1 will lead 1 MiB/s only, and
    // region 11 alone cannot move without reversing the pair.
    s.regions[0].has_operator = true;
    s.regions[0].pending_steps = vec![Step::TransferLeader {
        store_id: 2,
        peer_id: peer(10, 2).id,
    }];
    assert!(hot_region(&s, &rules(), 4).is_empty());
}

#[test]
fn unhealthy_regions_do_not_move() {
    let healthy = [
        region(10, &[1, 2, 3], 0, MIB),
        region(11, &[1, 2, 3], 0, MIB),
    ];
    assert_eq!(
        hot_region(&snap(stores(&[1, 2, 3]), &healthy), &rules(), 4).len(),
        1
    );
    // A follower behind, a follower down, a learner, a missing voter.
    let mut pending = healthy.clone();
    pending[0].pending_peers = vec![peer(10, 2)];
    pending[1].pending_peers = vec![peer(11, 3)];
    let mut down = healthy.clone();
    for r in &mut down {
        r.down_peers = vec![proto::pdpb::PeerStats {
            peer: Some(peer(r.region.id, 2)),
            down_seconds: 60,
        }];
    }
    let mut learner = healthy.clone();
    for r in &mut learner {
        r.region.peers[2].role = PeerRole::Learner as i32;
    }
    let mut missing = healthy.clone();
    for r in &mut missing {
        r.region.peers.pop();
    }
    for regions in [pending, down, learner, missing] {
        let s = snap(stores(&[1, 2, 3]), &regions);
        assert!(hot_region(&s, &rules(), 4).is_empty(), "{regions:?}");
    }
}

#[test]
fn read_flow_moves_leaders_only_and_write_flow_moves_peers_too() {
    // Stores 1, 2 and 3 each lead one hot region with followers on the other two; store 4
    // is empty. No leader transfer helps, only a peer on store 4 would.
    let read = [
        region(10, &[1, 2, 3], 0, 2 * MIB),
        region(11, &[2, 1, 3], 0, 2 * MIB),
        region(12, &[3, 1, 2], 0, 2 * MIB),
    ];
    let s = snap(stores(&[1, 2, 3, 4]), &read);
    assert!(
        hot_region(&s, &rules(), 4).is_empty(),
        "a peer serves no reads"
    );
    let write = [
        region(10, &[1, 2, 3], 2 * MIB, 0),
        region(11, &[2, 1, 3], 2 * MIB, 0),
        region(12, &[3, 1, 2], 2 * MIB, 0),
    ];
    let s = snap(stores(&[1, 2, 3, 4]), &write);
    let ops = hot_region(&s, &rules(), 1);
    // Store 1 (6 MiB/s of peers) gives a follower peer to store 4: moving region 10's
    // leader peer would make store 4 lead as much as store 1 did.
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].region_id, 11);
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
            Step::RemovePeer {
                store_id: 1,
                peer_id: peer(11, 1).id
            },
        ]
    );
}

#[test]
fn write_flow_moves_a_leader_before_a_peer() {
    // Store 1 leads 2 MiB/s of writes; store 4 holds no peer.
    let regions = [
        region(10, &[1, 2, 3], MIB, 0),
        region(11, &[1, 2, 3], MIB, 0),
    ];
    let s = snap(stores(&[1, 2, 3, 4]), &regions);
    let ops = hot_region(&s, &rules(), 4);
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert_eq!(transfer(&ops[0]), (10, 2));
    // Then no leader transfer fits; a follower of region 11 goes to the empty store 4.
    assert_eq!(ops[1].region_id, 11);
    assert!(matches!(
        ops[1].steps.as_slice(),
        [
            Step::AddLearner { store_id: 4, .. },
            Step::PromoteLearner { store_id: 4, .. },
            Step::RemovePeer { store_id: 2, .. },
        ]
    ));
}

#[test]
fn a_moved_leader_peer_takes_the_leadership_along() {
    // Store 1 leads 2 MiB/s of writes (also read at 1 MiB/s); stores 2 and 3 lead 3 MiB/s of
    // reads each, so a leader transfer there would make them hotter in reads than store 1.
    let regions = [
        region(10, &[1, 2, 3], MIB, MIB),
        region(11, &[1, 2, 3], MIB, MIB),
        region(20, &[2, 1, 3], 0, 3 * MIB),
        region(21, &[3, 1, 2], 0, 3 * MIB),
    ];
    let s = snap(stores(&[1, 2, 3, 4]), &regions);
    let ops = hot_region(&s, &rules(), 4);
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0].region_id, 10);
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
                store_id: 4,
                peer_id: 0
            },
            Step::RemovePeer {
                store_id: 1,
                peer_id: peer(10, 1).id
            },
        ]
    );
}

#[test]
fn a_read_move_does_not_undo_the_write_balance() {
    // Store 1 leads 2 MiB/s of reads; region 10 is also hot in writes, and either follower's
    // store would end leading more writes than store 1: only region 11 moves.
    let regions = [
        region(10, &[1, 2, 3], MIB, MIB),
        region(11, &[1, 2, 3], 0, MIB),
        region(20, &[2, 1, 3], 3 * MIB, 0),
    ];
    let s = snap(stores(&[1, 2, 3]), &regions);
    let moves: Vec<(u64, u64)> = hot_region(&s, &rules(), 4).iter().map(transfer).collect();
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert_eq!(moves[0].0, 11);
}

#[test]
fn limits_are_honoured() {
    // Six regions of 1 MiB/s led by store 1, six stores: several moves fit.
    let regions: Vec<RegionInfo> = (0..6)
        .map(|i| region(10 + i, &[1, 2 + i % 5, 2 + (i + 1) % 5], 0, MIB))
        .collect();
    let s = snap(stores(&[1, 2, 3, 4, 5, 6]), &regions);
    assert!(hot_region(&s, &rules(), 4).len() > 1);
    assert_eq!(hot_region(&s, &rules(), 1).len(), 1);
    assert!(hot_region(&s, &rules(), 0).is_empty());

    // Store limits: the only store that could take a peer has no token left; then the
    // hottest store may not lose one, and the peer goes from another.
    let write = [
        region(10, &[1, 2, 3], 2 * MIB, 0),
        region(11, &[2, 1, 3], 2 * MIB, 0),
        region(12, &[3, 1, 2], 2 * MIB, 0),
    ];
    let mut st = stores(&[1, 2, 3, 4]);
    st[3].add_peer_tokens = 0;
    assert!(hot_region(&snap(st, &write), &rules(), 4).is_empty());
    let mut st = stores(&[1, 2, 3, 4]);
    st[0].remove_peer_tokens = 0;
    let ops = hot_region(&snap(st, &write), &rules(), 1);
    assert_eq!(ops.len(), 1);
    assert!(
        ops[0]
            .steps
            .iter()
            .all(|s| !matches!(s, Step::RemovePeer { store_id: 1, .. })),
        "{ops:?}"
    );
}

#[test]
fn disconnected_stores_take_nothing() {
    let regions = [
        region(10, &[1, 2, 3], 0, MIB),
        region(11, &[1, 2, 3], 0, MIB),
    ];
    let mut st = stores(&[1, 2, 3]);
    st[1].health = StoreHealth::Disconnected;
    st[2].health = StoreHealth::Disconnected;
    assert!(hot_region(&snap(st, &regions), &rules(), 4).is_empty());
}

#[test]
fn the_balance_schedulers_leave_hot_regions_alone() {
    // Store 1 leads four regions (two hot), store 2 none: balance-leader evens the counts with
    // the cold ones, so it never carries a hot leader back.
    let regions: Vec<RegionInfo> = (0..4)
        .map(|i| region(10 + i, &[1, 2, 3], 0, if i < 2 { MIB } else { 0 }))
        .collect();
    let mut st = stores(&[1, 2, 3]);
    st[0].leader_count = 4;
    let mut s = snap(st, &regions);
    for r in &mut s.regions {
        r.is_hot = is_hot(&r.info.flow, rules().byte_rate_min_per_sec);
    }
    assert_eq!(
        s.regions.iter().filter(|r| r.is_hot).count(),
        2,
        "regions 10 and 11"
    );
    let ops = crate::scheduler::balance_leader(&s, 0, 8);
    assert!(!ops.is_empty());
    assert!(ops.iter().all(|op| op.region_id >= 12), "{ops:?}");
}

#[test]
fn a_region_hot_in_fewer_reports_in_a_row_than_min_reports_stays() {
    // Store 1 leads three hot regions; region 11, the hottest, has a follower on the idle
    // store 4 but was hot in its last report only: it is not moved, another region is.
    let mut regions = vec![
        region(10, &[1, 2, 3], 0, MIB),
        region(11, &[1, 3, 4], 0, 2 * MIB),
        region(12, &[1, 3, 4], 0, MIB),
        region(20, &[2, 3, 4], 0, MIB),
        region(21, &[3, 2, 4], 0, MIB),
    ];
    regions[1].hot_reports = 1;
    let s = snap(stores(&[1, 2, 3, 4]), &regions);
    let moved: Vec<u64> = hot_region(&s, &rules(), 4)
        .iter()
        .map(|op| transfer(op).0)
        .collect();
    assert!(!moved.is_empty(), "store 1 is still the hottest");
    assert!(!moved.contains(&11), "{moved:?}");
    let once = HotRules {
        min_reports: 1,
        ..rules()
    };
    let moved: Vec<u64> = hot_region(&s, &once, 4)
        .iter()
        .map(|op| transfer(op).0)
        .collect();
    assert!(
        moved.contains(&11),
        "the hottest region moves first: {moved:?}"
    );
}
