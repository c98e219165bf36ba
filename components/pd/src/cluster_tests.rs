use proto::metapb::{PeerRole, RegionEpoch};

use super::*;
use crate::meta_store::MemMetaStore;

fn store(id: u64) -> Store {
    Store {
        id,
        address: format!("127.0.0.1:{}", 20160 + id),
        ..Default::default()
    }
}

fn first_region() -> Region {
    Region {
        id: 2,
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![Peer {
            id: 3,
            store_id: 1,
            role: PeerRole::Voter as i32,
            is_witness: false,
        }],
        ..Default::default()
    }
}

fn must_open(meta: &Arc<dyn MetaStore>) -> Cluster {
    Cluster::open(meta.clone(), PdConfig::default(), 1_000).unwrap()
}

#[test]
fn bootstrap_once_and_reload() {
    let meta: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
    let c = must_open(&meta);
    assert!(matches!(c.get_region(b""), Err(PdError::NotBootstrapped)));
    c.bootstrap(store(1), first_region(), 1_000).unwrap();
    assert!(matches!(
        c.bootstrap(store(1), first_region(), 1_000),
        Err(PdError::AlreadyBootstrapped)
    ));
    c.put_store(store(2), 1_000).unwrap();
    assert!(
        c.put_store(Store { id: 3, ..store(2) }, 1_000).is_err(),
        "duplicate address"
    );
    assert_eq!(c.update_gc_safe_point(10).unwrap(), 10);
    assert_eq!(c.update_gc_safe_point(5).unwrap(), 10);
    let id = c.cluster_id();
    drop(c);
    let c = must_open(&meta);
    assert_eq!(c.cluster_id(), id);
    assert!(c.is_bootstrapped());
    assert_eq!(c.all_stores(true).len(), 2);
    let r = c.get_region(b"anything").unwrap().unwrap();
    assert_eq!(r.region.id, 2);
    assert_eq!(r.leader.unwrap().id, 3);
    assert_eq!(c.gc_safe_point(), 10);
}

#[test]
fn heartbeat_presplits_then_split_report_routes() {
    let meta: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
    let c = must_open(&meta);
    c.bootstrap(store(1), first_region(), 1_000).unwrap();
    let req = RegionHeartbeatRequest {
        region: Some(first_region()),
        leader: first_region().peers.first().cloned(),
        ..Default::default()
    };
    let resp = c.region_heartbeat(req, 1_000).unwrap().unwrap();
    let keys = resp.split_region.unwrap().keys;
    assert_eq!(keys, codec::keys::keyspace_presplit_keys());
    let ids = c
        .ask_batch_split(&first_region(), keys.len() as u32)
        .unwrap();
    assert_eq!(ids.len(), 4);
    assert!(ids.iter().all(|s| s.new_peer_ids.len() == 1));
    // The split regions: [""..k0) keeps id 2, then one new region per key.
    let mut bounds = vec![Vec::new()];
    bounds.extend(keys.iter().cloned());
    bounds.push(Vec::new());
    let mut regions = Vec::new();
    for (i, w) in bounds.windows(2).enumerate() {
        let (id, peer_id) = if i == 0 {
            (2, 3)
        } else {
            (ids[i - 1].new_region_id, ids[i - 1].new_peer_ids[0])
        };
        regions.push(Region {
            id,
            start_key: w[0].clone(),
            end_key: w[1].clone(),
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 5,
            }),
            peers: vec![Peer {
                id: peer_id,
                store_id: 1,
                role: 0,
                is_witness: false,
            }],
        });
    }
    c.report_batch_split(regions).unwrap();
    assert_eq!(c.all_regions().len(), 5);
    let r = c.get_region(&keys[1]).unwrap().unwrap();
    assert_eq!(r.region.id, ids[1].new_region_id);
    assert_eq!(r.leader.unwrap().store_id, 1);
    assert_eq!(
        c.get_prev_region(&keys[1]).unwrap().unwrap().region.id,
        ids[0].new_region_id
    );
    assert_eq!(c.scan_regions(b"", b"", 0).unwrap().len(), 5);
    // The split is persisted.
    drop(c);
    assert_eq!(must_open(&meta).all_regions().len(), 5);
}

#[test]
fn heartbeat_of_an_older_term_does_not_move_the_leader_back() {
    let meta: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
    let c = must_open(&meta);
    let mut region = first_region();
    region.peers.push(Peer {
        id: 4,
        store_id: 2,
        role: PeerRole::Voter as i32,
        is_witness: false,
    });
    c.bootstrap(store(1), region.clone(), 1_000).unwrap();
    c.put_store(store(2), 1_000).unwrap();
    let hb = |leader: usize, term: u64| RegionHeartbeatRequest {
        region: Some(region.clone()),
        leader: Some(region.peers[leader]),
        term,
        ..Default::default()
    };
    c.region_heartbeat(hb(1, 7), 1_000).unwrap();
    assert_eq!(c.get_region(b"").unwrap().unwrap().leader.unwrap().id, 4);
    // The old leader's report from term 6 arrives late.
    c.region_heartbeat(hb(0, 6), 1_001).unwrap();
    assert_eq!(c.get_region(b"").unwrap().unwrap().leader.unwrap().id, 4);
    // A newer term wins.
    c.region_heartbeat(hb(0, 8), 1_002).unwrap();
    assert_eq!(c.get_region(b"").unwrap().unwrap().leader.unwrap().id, 3);
}

#[test]
fn transfer_leader_operator_is_sent_on_the_next_heartbeat_until_done() {
    let meta: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
    let c = must_open(&meta);
    let mut region = first_region();
    region.peers.push(Peer {
        id: 4,
        store_id: 2,
        role: PeerRole::Voter as i32,
        is_witness: false,
    });
    region.peers.push(Peer {
        id: 5,
        store_id: 3,
        role: PeerRole::Learner as i32,
        is_witness: false,
    });
    c.bootstrap(store(1), region.clone(), 1_000).unwrap();
    c.put_store(store(2), 1_000).unwrap();
    c.put_store(store(3), 1_000).unwrap();
    let hb = |leader: usize| RegionHeartbeatRequest {
        region: Some(region.clone()),
        leader: Some(region.peers[leader]),
        term: 2,
        ..Default::default()
    };
    assert!(matches!(
        c.add_transfer_leader_operator(99, 2, 1_000),
        Err(PdError::RegionNotFound(99))
    ));
    assert!(
        matches!(
            c.add_transfer_leader_operator(2, 3, 1_000),
            Err(PdError::InvalidValue(_))
        ),
        "a learner cannot lead"
    );
    c.add_transfer_leader_operator(2, 2, 1_000).unwrap();
    assert!(matches!(
        c.add_transfer_leader_operator(2, 1, 1_000),
        Err(PdError::Busy(_))
    ));
    let resp = c.region_heartbeat(hb(0), 1_100).unwrap().unwrap();
    let to = resp.transfer_leader.unwrap().peer.unwrap();
    assert_eq!((to.id, to.store_id), (4, 2));
    // Re-sent until the heartbeat shows the new leader; then the operator is gone.
    assert!(c.region_heartbeat(hb(0), 1_200).unwrap().is_some());
    let after = c.region_heartbeat(hb(1), 1_300).unwrap();
    assert!(after.is_none_or(|r| r.transfer_leader.is_none()));
    assert!(c.operator(2).is_none_or(|op| op.name != "transfer-leader"));
}

#[test]
fn split_operator_checks_its_keys_and_is_sent_until_the_version_grows() {
    let meta: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
    let c = must_open(&meta);
    let bounds = codec::keys::keyspace_presplit_keys();
    let mut region = first_region();
    region.start_key = bounds[0].clone();
    region.end_key = bounds[1].clone();
    c.bootstrap(store(1), region.clone(), 1_000).unwrap();
    let mut inside = bounds[0].clone();
    inside.push(7);
    for bad in [vec![], vec![bounds[0].clone()], vec![bounds[1].clone()]] {
        assert!(
            matches!(
                c.add_split_operator(2, bad.clone(), 1_000),
                Err(PdError::InvalidValue(_))
            ),
            "{bad:?} is not strictly inside the region"
        );
    }
    assert!(matches!(
        c.add_split_operator(99, vec![inside.clone()], 1_000),
        Err(PdError::RegionNotFound(99))
    ));
    c.add_split_operator(2, vec![inside.clone(), inside.clone()], 1_000)
        .unwrap();
    let hb = |version: u64| RegionHeartbeatRequest {
        region: Some(Region {
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version,
            }),
            ..region.clone()
        }),
        leader: region.peers.first().cloned(),
        term: 2,
        ..Default::default()
    };
    let resp = c.region_heartbeat(hb(1), 1_100).unwrap().unwrap();
    assert_eq!(resp.split_region.unwrap().keys, vec![inside.clone()]);
    // Re-sent until the region's version shows the split.
    let again = c.region_heartbeat(hb(1), 1_200).unwrap().unwrap();
    assert!(again.split_region.is_some());
    let after = c.region_heartbeat(hb(2), 1_300).unwrap();
    assert!(after.is_none_or(|r| r.split_region.is_none()));
    assert!(c.operator(2).is_none());
}
