use proto::metapb::{Peer, PeerRole, RegionEpoch};
use proto::pdpb::RegionHeartbeatRequest;

use super::*;
use crate::meta_store::MemMetaStore;
use crate::region_dir::RegionFlow;

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
    // More keys than one AskBatchSplit may carry is refused up front, not queued forever.
    let many = |n: u32| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| [inside.as_slice(), &i.to_be_bytes()].concat())
            .collect()
    };
    let max = PdConfig::default().split_count_max;
    assert!(matches!(
        c.add_split_operator(2, many(max + 1), 1_000),
        Err(PdError::InvalidValue(m)) if m.contains("split_count_max")
    ));
    assert!(c.operator(2).is_none());
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

/// A meta store whose writes fail while `fail` is set (a full disk, a lost PD-group lead).
#[derive(Default)]
struct FailingMeta {
    mem: MemMetaStore,
    fail: std::sync::atomic::AtomicBool,
}

impl MetaStore for FailingMeta {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.mem.get(key)
    }

    fn write(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(PdError::Storage("injected write failure".into()));
        }
        self.mem.write(pairs)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.mem.scan_prefix(prefix)
    }
}

fn state(c: &Cluster, id: u64) -> StoreState {
    StoreState::try_from(c.get_store(id).unwrap().store.state).unwrap()
}

/// A bootstrapped cluster of `n` stores whose first region has its one peer on store 1.
fn must_open_with_stores(meta: &Arc<dyn MetaStore>, n: u64) -> Cluster {
    let c = must_open(meta);
    c.bootstrap(store(1), first_region(), 1_000).unwrap();
    for id in 2..=n {
        c.put_store(store(id), 1_000).unwrap();
    }
    c
}

#[test]
fn an_empty_store_goes_offline_then_tombstone_and_stays_so_across_a_reopen() {
    let meta: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
    let c = must_open_with_stores(&meta, 4);
    assert_eq!(c.update_store_states().unwrap(), Vec::<u64>::new());
    c.remove_store(4, false).unwrap();
    assert_eq!(state(&c, 4), StoreState::Offline);
    let node_state = c.get_store(4).unwrap().store.node_state;
    assert_eq!(node_state, proto::metapb::NodeState::Removing as i32);
    c.remove_store(4, false).unwrap(); // Already Offline: nothing to do.
                                       // Offline stores heartbeat while their regions move away.
    let stats = StoreStats {
        store_id: 4,
        ..Default::default()
    };
    c.store_heartbeat(stats, 2_000).unwrap();
    assert_eq!(c.update_store_states().unwrap(), vec![4]);
    assert_eq!(state(&c, 4), StoreState::Tombstone);
    assert_eq!(c.update_store_states().unwrap(), Vec::<u64>::new());

    drop(c);
    let c = must_open(&meta);
    assert_eq!(state(&c, 4), StoreState::Tombstone, "persisted");
    assert!(matches!(
        c.put_store(store(4), 3_000),
        Err(PdError::StoreTombstone(4))
    ));
    assert!(matches!(
        c.store_heartbeat(stats, 3_000),
        Err(PdError::StoreTombstone(4))
    ));
    assert!(matches!(
        c.remove_store(4, true),
        Err(PdError::StoreTombstone(4))
    ));
    assert!(matches!(c.up_store(4), Err(PdError::StoreTombstone(4))));
    let listed = |exclude| -> Vec<u64> { c.all_stores(exclude).iter().map(|s| s.id).collect() };
    assert_eq!(listed(true), vec![1, 2, 3]);
    assert_eq!(listed(false), vec![1, 2, 3, 4]);
    // A new store may take the tombstone's address.
    c.put_store(Store { id: 5, ..store(4) }, 3_000).unwrap();
}

#[test]
fn an_offline_store_becomes_tombstone_only_once_the_directory_shows_no_peer_on_it() {
    let meta: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
    let c = must_open_with_stores(&meta, 4);
    c.remove_store(1, false).unwrap();
    assert_eq!(c.update_store_states().unwrap(), Vec::<u64>::new());
    assert_eq!(state(&c, 1), StoreState::Offline);
    assert_eq!(
        c.stores_status(1_000)
            .iter()
            .find(|s| s.info.store.id == 1)
            .map(|s| s.region_count),
        Some(1),
        "one region left"
    );
    // The region's replica moved to store 2 (as an operator would have done it).
    let mut moved = first_region();
    moved.region_epoch = Some(RegionEpoch {
        conf_ver: 3,
        version: 1,
    });
    moved.peers = vec![Peer {
        id: 9,
        store_id: 2,
        role: PeerRole::Voter as i32,
        is_witness: false,
    }];
    let req = RegionHeartbeatRequest {
        region: Some(moved.clone()),
        leader: moved.peers.first().cloned(),
        term: 2,
        ..Default::default()
    };
    c.region_heartbeat(req, 2_000).unwrap();
    assert_eq!(c.update_store_states().unwrap(), vec![1]);
    assert_eq!(state(&c, 1), StoreState::Tombstone);
}

#[test]
fn a_store_receiving_a_peer_is_not_made_tombstone_under_the_operator() {
    let meta: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
    let c = must_open_with_stores(&meta, 4);
    c.remove_store(4, false).unwrap();
    {
        // An operator queued before the decommission adds a learner on store 4.
        let mut inner = c.inner.lock();
        let info = inner.regions.get(2).unwrap().clone();
        let step = crate::operator::Step::AddLearner {
            store_id: 4,
            peer_id: 10,
        };
        inner
            .operators
            .insert(2, Operator::new(&info, "test", vec![step]));
    }
    assert_eq!(c.update_store_states().unwrap(), Vec::<u64>::new());
    c.inner.lock().operators.clear();
    assert_eq!(c.update_store_states().unwrap(), vec![4]);
}

#[test]
fn a_store_is_not_removed_when_fewer_up_stores_than_max_replicas_would_be_left() {
    let meta: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
    let c = must_open_with_stores(&meta, 3);
    assert!(matches!(
        c.remove_store(3, false),
        Err(PdError::StoresNotEnough {
            store_id: 3,
            up_after: 2,
            max_replicas: 3
        })
    ));
    assert_eq!(state(&c, 3), StoreState::Up, "a refusal changes nothing");
    assert!(matches!(
        c.remove_store(7, false),
        Err(PdError::StoreNotFound(7))
    ));
    assert!(matches!(c.up_store(7), Err(PdError::StoreNotFound(7))));
    c.remove_store(3, true).unwrap();
    assert_eq!(state(&c, 3), StoreState::Offline, "forced");
    // Offline stores do not count as Up: a second removal is refused as well.
    assert!(matches!(
        c.remove_store(2, false),
        Err(PdError::StoresNotEnough { up_after: 1, .. })
    ));
}

#[test]
fn an_offline_store_keeps_its_state_when_it_restarts_and_comes_back_up_when_asked() {
    let meta: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
    let c = must_open_with_stores(&meta, 4);
    c.remove_store(4, false).unwrap();
    // A restart puts the store again, claiming Up: PD owns the state.
    c.put_store(store(4), 2_000).unwrap();
    assert_eq!(state(&c, 4), StoreState::Offline);
    c.up_store(4).unwrap();
    assert_eq!(state(&c, 4), StoreState::Up);
    c.up_store(4).unwrap(); // Already Up.
    drop(c);
    assert_eq!(state(&must_open(&meta), 4), StoreState::Up, "persisted");
    // A new store cannot register itself as anything but Up.
    let c = must_open(&meta);
    let claims_tombstone = Store {
        state: StoreState::Tombstone as i32,
        ..store(6)
    };
    c.put_store(claims_tombstone, 2_000).unwrap();
    assert_eq!(state(&c, 6), StoreState::Up);
}

#[test]
fn a_failed_write_leaves_the_store_state_unchanged() {
    let failing = Arc::new(FailingMeta::default());
    let meta: Arc<dyn MetaStore> = failing.clone();
    let c = must_open_with_stores(&meta, 4);
    failing
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(c.remove_store(4, false), Err(PdError::Storage(_))));
    assert_eq!(state(&c, 4), StoreState::Up);
    failing
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    c.remove_store(4, false).unwrap();
    failing
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(c.update_store_states().is_err());
    assert_eq!(state(&c, 4), StoreState::Offline);
    assert!(c.up_store(4).is_err());
    assert_eq!(state(&c, 4), StoreState::Offline);
}

#[test]
fn a_store_is_down_after_store_down_after_secs_and_down_long_after_max_store_down_time() {
    let meta: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
    let cfg = PdConfig {
        store_down_after_secs: 30,
        max_store_down_time_secs: 600,
        ..Default::default()
    };
    let c = Cluster::open(meta, cfg.clone(), 0).unwrap();
    c.put_store(store(1), 0).unwrap();
    let at = |now_ms: u64| {
        let s = c.stores_status(now_ms).remove(0);
        (s.is_up, s.is_down_long)
    };
    assert_eq!(at(30_000), (true, false));
    assert_eq!(at(30_001), (false, false), "down, replicas stay");
    assert_eq!(at(600_000), (false, false));
    assert_eq!(at(600_001), (false, true), "down long: rebuild elsewhere");
    let info = c.get_store(1).unwrap();
    assert!(Cluster::store_down_long(&cfg, &info, 600_001));
    let tombstone = StoreInfo {
        store: Store {
            state: StoreState::Tombstone as i32,
            ..info.store.clone()
        },
        ..info
    };
    assert!(!Cluster::store_down_long(&cfg, &tombstone, 600_001));
    let shorter = PdConfig {
        max_store_down_time_secs: 29,
        ..cfg
    };
    assert!(matches!(shorter.validate(), Err(PdError::InvalidConfig(_))));
}

#[test]
fn a_region_heartbeat_replaces_the_regions_flow() {
    let meta: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
    let c = must_open(&meta);
    c.bootstrap(store(1), first_region(), 1_000).unwrap();
    let hb = |keys_written, start, end| RegionHeartbeatRequest {
        region: Some(first_region()),
        leader: first_region().peers.first().cloned(),
        bytes_written: keys_written * 10,
        keys_written,
        bytes_read: 7,
        keys_read: 1,
        query_stats: Some(proto::pdpb::QueryStats {
            get: 1,
            scan: 1,
            put: 2,
            commit: 1,
            ..Default::default()
        }),
        interval: Some(proto::pdpb::TimeInterval {
            start_timestamp: start,
            end_timestamp: end,
        }),
        ..Default::default()
    };
    c.region_heartbeat(hb(5, 100, 110), 1_000).unwrap();
    let flow = c.get_region_by_id(2).unwrap().unwrap().flow;
    assert_eq!(
        flow,
        RegionFlow {
            written_bytes: 50,
            written_keys: 5,
            read_bytes: 7,
            read_keys: 1,
            write_queries: 3,
            read_queries: 2,
            interval_secs: 10,
        }
    );
    assert_eq!(flow.per_sec(flow.written_bytes), 5.0);
    // The next interval's flow replaces it, it does not add up.
    c.region_heartbeat(hb(2, 110, 114), 1_100).unwrap();
    let flow = c.get_region_by_id(2).unwrap().unwrap().flow;
    assert_eq!((flow.written_keys, flow.interval_secs), (2, 4));
    // Flow is not durable: a reload knows none.
    drop(c);
    let c = must_open(&meta);
    assert_eq!(
        c.get_region_by_id(2).unwrap().unwrap().flow,
        RegionFlow::default()
    );
}
