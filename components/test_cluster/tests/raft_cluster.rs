//! Cluster behaviour through the in-process test cluster: failover, restart, catch-up by
//! snapshot. Seeded; `FLOTILLA_SEED` replays a run.

use std::time::Duration;

use test_cluster::{encode, fast_config, seed_from_env, Cluster};

fn three_stores() -> Cluster {
    let c = Cluster::start(3, seed_from_env(), fast_config());
    assert!(
        c.wait_replicated(3, Duration::from_secs(60)),
        "regions never reached 3 voters"
    );
    c
}

#[test]
fn leader_failover_serves_writes_and_old_leader_never_reads_stale() {
    let c = three_stores();
    c.must_put(b"k1", b"v1");
    let region = c.region_of(&encode(b"k1")).expect("region");
    let old = c.leader_of(region.id).expect("leader");
    c.isolate(old);
    let new = {
        let mut found = None;
        assert!(c.wait_until(Duration::from_secs(20), |c| {
            found = c
                .region_infos()
                .into_iter()
                .find(|(i, r)| *i != old && r.region.id == region.id && r.is_leader)
                .map(|(i, _)| i);
            found.is_some()
        }));
        found.expect("new leader")
    };
    c.put_on(new, b"k1", b"v2")
        .expect("new leader takes writes");
    assert_eq!(
        c.get_on(new, b"k1").expect("read on new leader"),
        Some(b"v2".to_vec())
    );
    // The isolated old leader has lost its lease: it must not answer v1 (or anything).
    match c.get_on(old, b"k1") {
        Ok(v) => panic!("isolated old leader served a read: {v:?}"),
        Err(e) => eprintln!("old leader refused the read: {e}"),
    }
    c.heal();
    assert!(c.wait_until(Duration::from_secs(20), |c| {
        !c.region_infos()
            .into_iter()
            .any(|(i, r)| i == old && r.region.id == region.id && r.is_leader)
            || c.get_on(old, b"k1").ok().flatten() == Some(b"v2".to_vec())
    }));
    assert_eq!(c.must_get(b"k1"), Some(b"v2".to_vec()));
}

#[test]
fn whole_cluster_restart_keeps_every_acknowledged_write() {
    let mut c = three_stores();
    for i in 0..200u32 {
        c.must_put(
            format!("key{i:04}").as_bytes(),
            format!("value{i}").as_bytes(),
        );
    }
    for i in 0..c.len() {
        c.stop_store(i);
    }
    for i in 0..c.len() {
        c.start_store(i);
    }
    for i in 0..200u32 {
        assert_eq!(
            c.must_get(format!("key{i:04}").as_bytes()),
            Some(format!("value{i}").into_bytes()),
            "key{i:04}"
        );
    }
}

#[test]
fn store_down_during_log_compaction_catches_up_by_snapshot() {
    let mut cfg = fast_config();
    cfg.raftstore.raft_log_gc_threshold_entries = 20;
    let mut c = Cluster::start(3, seed_from_env(), cfg);
    assert!(c.wait_replicated(3, Duration::from_secs(60)));
    c.must_put(b"a0", b"x");
    let region = c.region_of(&encode(b"a0")).expect("region");
    let leader = c.leader_of(region.id).expect("leader");
    let down = (leader + 1) % c.len();
    let down_applied = c
        .region_infos()
        .into_iter()
        .find(|(i, r)| *i == down && r.region.id == region.id)
        .map(|(_, r)| r.applied_index)
        .expect("follower peer");
    c.stop_store(down);
    for i in 0..300u32 {
        c.must_put(format!("a{i:04}").as_bytes(), b"after");
    }
    assert!(
        c.wait_until(Duration::from_secs(30), |c| c
            .region_infos()
            .into_iter()
            .any(|(_, r)| r.region.id == region.id
                && r.is_leader
                && r.truncated_index > down_applied)),
        "the leader never compacted its log past the down store"
    );
    c.start_store(down);
    let target = c
        .region_infos()
        .into_iter()
        .find(|(_, r)| r.region.id == region.id && r.is_leader)
        .map(|(_, r)| r.applied_index)
        .expect("leader");
    assert!(
        c.wait_until(Duration::from_secs(30), |c| c
            .region_infos()
            .into_iter()
            .any(|(i, r)| i == down
                && r.region.id == region.id
                && r.applied_index >= target)),
        "the restarted store never caught up"
    );
    // Its own engine holds the data written while it was down.
    let kv = c.kv(down);
    let got = kv
        .get_cf(
            engine::CF_DEFAULT,
            &codec::keys::data_key(&encode(b"a0299")),
        )
        .expect("read engine");
    assert_eq!(got, Some(b"after".to_vec()));
}

#[test]
fn a_follower_refuses_with_the_leader_hint_and_writes_nothing() {
    let c = three_stores();
    c.must_put(b"f1", b"before");
    let region = c.region_of(&encode(b"f1")).expect("region");
    let leader = c.leader_of(region.id).expect("leader");
    let follower = (leader + 1) % c.len();
    match c.put_on(follower, b"f1", b"after") {
        Err(raftstore::RegionError::NotLeader {
            region_id,
            leader: Some(hint),
        }) => {
            assert_eq!(region_id, region.id);
            assert_eq!(hint.store_id, c.store_id(leader));
        }
        other => panic!("a follower took a write: {other:?}"),
    }
    assert!(matches!(
        c.get_on(follower, b"f1"),
        Err(raftstore::RegionError::NotLeader { .. })
    ));
    assert_eq!(c.must_get(b"f1"), Some(b"before".to_vec()));
}
