//! Tests of the periodic schedulers' runs on a `Cluster`: limits, backoff, and the group
//! tallies the directory keeps against a walk of every region.

use std::sync::Arc;

use proto::eraftpb::ConfChangeType;
use proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};
use proto::pdpb::RegionHeartbeatRequest;

use super::*;
use crate::meta_store::{MemMetaStore, MetaStore};

fn peer(id: u64, store_id: u64, role: PeerRole) -> Peer {
    Peer {
        id,
        store_id,
        role: role as i32,
        is_witness: false,
    }
}

fn region(id: u64, start: &[u8], end: &[u8], conf_ver: u64, peers: Vec<Peer>) -> Region {
    Region {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        region_epoch: Some(RegionEpoch {
            conf_ver,
            version: 2,
        }),
        peers,
    }
}

fn heartbeat(
    c: &Cluster,
    r: &Region,
    pending: Vec<Peer>,
    now_ms: u64,
) -> Option<Box<proto::pdpb::RegionHeartbeatResponse>> {
    let req = RegionHeartbeatRequest {
        region: Some(r.clone()),
        leader: r.peers.first().copied(),
        pending_peers: pending,
        term: 1,
        ..Default::default()
    };
    c.region_heartbeat(req, now_ms).unwrap().map(Box::new)
}

/// Regions 10..18 on stores 1, 2, 3 (leaders on 1; region 10 gets a pre-split operator), a
/// new empty store 4.
fn three_stores_and_a_new_one(cfg: PdConfig) -> (Cluster, Vec<Region>) {
    let meta: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
    let c = Cluster::open(meta, cfg, 1_000).unwrap();
    let store = |id: u64| Store {
        id,
        address: format!("127.0.0.1:{}", 20160 + id),
        ..Default::default()
    };
    let first = region(2, b"", b"", 1, vec![peer(3, 1, PeerRole::Voter)]);
    c.bootstrap(store(1), first, 1_000).unwrap();
    for id in 2..=4 {
        c.put_store(store(id), 1_000).unwrap();
    }
    let regions: Vec<Region> = (0..8u8)
        .map(|i| {
            let id = 10 + u64::from(i);
            let end = if i == 7 { vec![] } else { vec![b'z', i + 1] };
            let start = if i == 0 { vec![] } else { vec![b'z', i] };
            let peers = (1..=3)
                .map(|s| peer(id * 10 + s, s, PeerRole::Voter))
                .collect();
            region(id, &start, &end, 1, peers)
        })
        .collect();
    for r in &regions {
        heartbeat(&c, r, vec![], 1_000);
    }
    (c, regions)
}

#[test]
fn balance_region_runs_within_limits_and_moves_a_replica_step_by_step() {
    let cfg = PdConfig {
        store_limit_add_peer_per_min: 2,
        balance_region_operators_max: 4,
        ..Default::default()
    };
    let (c, regions) = three_stores_and_a_new_one(cfg);
    // Store 4 may receive two peers now, then one every 30 s.
    assert_eq!(c.run_balance_region(1_000), 2);
    assert_eq!(c.run_balance_region(1_000), 0, "store limit");
    assert_eq!(c.run_balance_region(31_000), 1);
    assert_eq!(c.run_balance_region(31_000), 0);
    let (mut r, op) = regions
        .iter()
        .find_map(|r| {
            let op = c.operator(r.id).filter(|op| op.name == BALANCE_REGION)?;
            Some((r.clone(), op))
        })
        .expect("a balance-region operator");
    assert_eq!(op.name, BALANCE_REGION);
    let Step::AddLearner {
        store_id: 4,
        peer_id,
    } = op.steps[0]
    else {
        panic!("{op:?}")
    };
    // Add the learner.
    let resp = heartbeat(&c, &r, vec![], 32_000).expect("add learner");
    let cp = resp.change_peer.unwrap();
    assert_eq!(cp.change_type, ConfChangeType::AddLearnerNode as i32);
    assert_eq!(cp.peer.unwrap(), peer(peer_id, 4, PeerRole::Learner));
    // The learner is there but still catching up: wait.
    let learner = peer(peer_id, 4, PeerRole::Learner);
    r.peers.push(learner);
    r.region_epoch.as_mut().unwrap().conf_ver += 1;
    assert!(heartbeat(&c, &r, vec![learner], 33_000).is_none());
    // Caught up: promote.
    let resp = heartbeat(&c, &r, vec![], 34_000).expect("promote");
    assert_eq!(
        resp.change_peer.unwrap().change_type,
        ConfChangeType::AddNode as i32
    );
    r.peers[3].role = PeerRole::Voter as i32;
    r.region_epoch.as_mut().unwrap().conf_ver += 1;
    // Four voters: remove the source's peer (not the leader on store 1).
    let resp = heartbeat(&c, &r, vec![], 35_000).expect("remove");
    let cp = resp.change_peer.unwrap();
    assert_eq!(cp.change_type, ConfChangeType::RemoveNode as i32);
    let gone = cp.peer.unwrap();
    assert_ne!(gone.store_id, 1);
    assert_ne!(gone.store_id, 4);
    r.peers.retain(|p| p.id != gone.id);
    r.region_epoch.as_mut().unwrap().conf_ver += 1;
    assert!(heartbeat(&c, &r, vec![], 36_000).is_none());
    assert!(c.operator(r.id).is_none(), "finished");
}

/// A heartbeat of `r` (led by its first peer) reporting `read_per_sec` bytes read a second
/// over 10 s.
fn read_heartbeat(
    c: &Cluster,
    r: &Region,
    read_per_sec: u64,
    now_ms: u64,
) -> Option<proto::pdpb::RegionHeartbeatResponse> {
    let req = RegionHeartbeatRequest {
        region: Some(r.clone()),
        leader: r.peers.first().copied(),
        bytes_read: read_per_sec * 10,
        interval: Some(proto::pdpb::TimeInterval {
            start_timestamp: 100,
            end_timestamp: 110,
        }),
        term: 1,
        ..Default::default()
    };
    c.region_heartbeat(req, now_ms).unwrap()
}

#[test]
fn hot_region_moves_hot_leaders_within_its_limit_and_only_when_on() {
    let off = PdConfig {
        hot_region_schedule: false,
        ..Default::default()
    };
    let (c, regions) = three_stores_and_a_new_one(off);
    for r in &regions[1..4] {
        read_heartbeat(&c, r, 1 << 20, 2_000);
    }
    assert_eq!(c.run_hot_region(2_000), 0, "turned off");

    let (c, regions) = three_stores_and_a_new_one(PdConfig::default());
    // Store 1 leads three regions read at 1 MiB/s each, a fourth at 100 KiB/s (cold).
    for r in &regions[1..4] {
        read_heartbeat(&c, r, 1 << 20, 2_000);
    }
    read_heartbeat(&c, &regions[4], 100 << 10, 2_000);
    // Two operators at most (the default): one leader to store 2, one to store 3.
    assert_eq!(c.run_hot_region(2_000), 2);
    assert_eq!(c.run_hot_region(3_000), 0, "hot_region_operators_max");
    let mut targets = Vec::new();
    for r in &regions[1..4] {
        let Some(op) = c.operator(r.id).filter(|op| op.name == HOT_REGION) else {
            continue;
        };
        let [Step::TransferLeader { store_id, .. }] = op.steps.as_slice() else {
            panic!("{op:?}")
        };
        targets.push(*store_id);
        // The region's next heartbeat carries the transfer.
        let resp = read_heartbeat(&c, r, 1 << 20, 4_000).expect("transfer leader");
        let to = resp.transfer_leader.unwrap().peer.unwrap();
        assert_eq!(to.store_id, *store_id);
    }
    targets.sort_unstable();
    assert_eq!(targets, vec![2, 3]);
    assert!(c.operator(regions[4].id).is_none(), "cold");
}

#[test]
fn backoff_doubles_from_the_interval_to_the_max_and_a_plan_resets_it() {
    let mut b = Backoff::default();
    assert!(b.is_due(0));
    // Empty runs on a 1 s tick: the next runs come 1, 2, 4, 5, 5 s later.
    let mut runs = vec![];
    for now_ms in (1_000..=30_000).step_by(1_000) {
        if b.is_due(now_ms) {
            runs.push(now_ms);
            b.ran(now_ms, 0, 1_000, 5_000);
        }
    }
    assert_eq!(
        runs,
        [1_000, 2_000, 4_000, 8_000, 13_000, 18_000, 23_000, 28_000]
    );
    b.ran(28_000, 2, 1_000, 5_000);
    assert_eq!(
        b,
        Backoff::default(),
        "a run that plans runs again at the next tick"
    );
    assert!(b.is_due(28_001));
}

#[test]
fn a_scheduler_backs_off_while_it_finds_nothing_and_finds_a_move_within_the_max_wait() {
    let cfg = PdConfig {
        schedule_backoff_max_ms: 8_000,
        ..Default::default()
    };
    let (c, regions) = three_stores_and_a_new_one(cfg);
    let lead = |now_ms: u64, leader_of: &dyn Fn(usize) -> usize| {
        for (i, r) in regions.iter().enumerate() {
            let req = RegionHeartbeatRequest {
                region: Some(r.clone()),
                leader: Some(r.peers[leader_of(i)]),
                term: 1,
                ..Default::default()
            };
            c.region_heartbeat(req, now_ms).unwrap();
        }
        for store_id in 1..=4 {
            let stats = proto::pdpb::StoreStats {
                store_id,
                ..Default::default()
            };
            c.store_heartbeat(stats, now_ms).unwrap();
        }
    };
    // Leaders spread over stores 1-3; store 4, with no peer, is below the mean by more
    // than the tolerance, and no move can fix that: every full run plans nothing.
    let mut now_ms = 2_000;
    while now_ms <= 30_000 {
        lead(now_ms, &|i| i % 3);
        assert_eq!(c.run_balance_leader(now_ms), 0);
        now_ms += 1_000;
    }
    // Every leader on store 1: a move exists. The backed-off scheduler finds it within
    // the longest wait (8 s) of its last run, not at once.
    let mut first_plan = None;
    for _ in 0..10 {
        lead(now_ms, &|_| 0);
        if c.run_balance_leader(now_ms) > 0 {
            first_plan = Some(now_ms);
            break;
        }
        now_ms += 1_000;
    }
    let first_plan = first_plan.expect("a move within the longest wait");
    assert!(first_plan > 31_000, "it backed off: {first_plan}");
    assert!(first_plan <= 30_000 + 8_000, "{first_plan}");
}

#[test]
fn group_tallies_from_the_directory_equal_a_walk_of_every_region() {
    use codec::memcomparable::encode_bytes;
    use rand::{Rng, SeedableRng};
    for seed in 0..8u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (c, _) = three_stores_and_a_new_one(PdConfig::default());
        c.put_store(
            Store {
                id: 5,
                address: "127.0.0.1:20165".into(),
                ..Default::default()
            },
            1_000,
        )
        .unwrap();
        // Regions over two keyspaces and outside them, after the test cluster's ones.
        let mut bounds: Vec<Vec<u8>> = [&b"r\0\0\0"[..], b"x\0\0\0", b"zz"]
            .iter()
            .flat_map(|p| (0..12u8).map(move |i| encode_bytes(&[*p, &[i]].concat())))
            .collect();
        bounds.sort();
        let mut regions = Vec::new();
        for (i, w) in bounds.windows(2).enumerate() {
            let id = 100 + i as u64;
            let mut stores = vec![1, 2, 3, 4, 5];
            let peers = (0..3)
                .map(|j| {
                    let s = stores.swap_remove(rng.gen_range(0..stores.len()));
                    peer(id * 10 + j, s, PeerRole::Voter)
                })
                .collect();
            let mut r = region(id, &w[0], &w[1], 1, peers);
            r.region_epoch.as_mut().unwrap().version = 5;
            let req = RegionHeartbeatRequest {
                leader: Some(r.peers[rng.gen_range(0..3)]),
                region: Some(r.clone()),
                approximate_size: rng.gen_range(0..3) << 20,
                term: 1,
                ..Default::default()
            };
            c.region_heartbeat(req, 2_000).unwrap();
            regions.push(r);
        }
        // Operators of every kind, some steps done.
        c.run_balance_region(2_000);
        for r in &regions {
            if rng.gen_bool(0.3) {
                let to = r.peers[rng.gen_range(0..3)].store_id;
                let _ = c.add_transfer_leader_operator(r.id, to, 2_000);
            }
        }
        for r in &regions {
            if let Some(resp) = heartbeat(&c, r, vec![], 3_000) {
                if let Some(cp) = resp.change_peer.filter(|_| rng.gen_bool(0.5)) {
                    let mut r = r.clone();
                    r.peers.push(cp.peer.unwrap());
                    r.region_epoch.as_mut().unwrap().conf_ver += 1;
                    heartbeat(&c, &r, vec![], 3_000);
                }
            }
        }
        let mut inner = c.inner.lock();
        assert!(
            inner.operators.len() >= 3,
            "seed {seed}: operators exercised"
        );
        let snap = Cluster::snapshot(&mut inner, &c.cfg, 3_000);
        let views = Cluster::region_views(&inner, None, |_| true);
        let walked = scheduler::group_tallies_of(&snap.stores, &views);
        assert!(walked.len() >= 3, "seed {seed}: keyspace groups exercised");
        assert_eq!(Cluster::group_tallies(&inner, &snap), walked, "seed {seed}");
    }
}

#[test]
fn offline_store_replicas_move_within_the_remove_limit() {
    let cfg = PdConfig {
        store_limit_remove_peer_per_min: 3,
        ..Default::default()
    };
    let (c, regions) = three_stores_and_a_new_one(cfg);
    c.remove_store(3, false).unwrap();
    // Each heartbeat asks the replica checker; store 3 may lose 3 peers a minute. (The
    // first region spans the keyspace boundaries: it is being pre-split.)
    let mut moved = 0;
    for r in &regions[1..] {
        if let Some(resp) = heartbeat(&c, r, vec![], 2_000) {
            let cp = resp.change_peer.expect("add learner");
            assert_eq!(cp.peer.unwrap().store_id, 4, "the only up store left");
            moved += 1;
        }
    }
    assert_eq!(moved, 3);
    let op = c.operator(regions[1].id).unwrap();
    assert!(matches!(
        op.steps.last(),
        Some(Step::RemovePeer { store_id: 3, .. })
    ));
    // balance-region does not touch a store that is not up.
    assert_eq!(c.run_balance_region(2_000), 0);
}
