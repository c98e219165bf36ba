//! Hibernating regions: idle regions stop ticking on every store (counted, never timed), wake
//! on a write or a read, are replaced when their leader's store dies, survive a follower's
//! restart, report no down peers while they sleep; with `hibernate_regions = false` every peer
//! ticks as before. Seeded; `FLOTILLA_SEED` replays a run.

use std::time::{Duration, Instant};

use test_cluster::{encode, fast_config, seed_from_env, Cluster};

const WAIT: Duration = Duration::from_secs(60);
/// Regions made by splitting (besides the ones PD pre-splits).
const SPLITS: u32 = 20;

fn key(i: u32) -> Vec<u8> {
    format!("h{i:03}").into_bytes()
}

/// Three stores, the keyspace split so that every `key(i)` starts a region, each written once
/// and replicated to every store.
fn split_cluster(hibernate: bool) -> Cluster {
    let mut cfg = fast_config();
    cfg.raftstore.hibernate_regions = hibernate;
    let c = Cluster::start(3, seed_from_env(), cfg);
    c.must_put(b"h", b"v");
    assert!(c.wait_replicated(3, WAIT), "first region not on 3 stores");
    let keys: Vec<Vec<u8>> = (0..SPLITS).map(|i| encode(&key(i))).collect();
    assert!(
        c.wait_until(WAIT, |c| {
            let starts: Vec<Vec<u8>> = c
                .region_infos()
                .into_iter()
                .map(|(_, r)| r.region.start_key)
                .collect();
            let missing: Vec<Vec<u8>> = keys
                .iter()
                .filter(|k| !starts.contains(k))
                .cloned()
                .collect();
            if let Some(r) = missing.first().and_then(|k| c.region_of(k)) {
                if let Some(l) = c.leader_of(r.id) {
                    c.router(l).split_region(r.id, missing.clone());
                }
            }
            missing.is_empty()
        }),
        "the split never produced {SPLITS} regions"
    );
    for i in 0..SPLITS {
        c.must_put(&key(i), b"v0");
    }
    let regions = c.router(0).region_infos().len();
    assert!(
        c.wait_until(WAIT, |c| (0..3)
            .all(|s| c.router(s).region_infos().len() == regions)),
        "not every store holds every region"
    );
    c
}

/// Peers awake (ticking) over the running stores.
fn awake(c: &Cluster) -> u64 {
    (0..c.len())
        .filter(|&s| c.is_running(s))
        .map(|s| c.router(s).poller_stats().awake_peers)
        .sum()
}

fn wait_all_hibernated(c: &Cluster) {
    assert!(
        c.wait_until(WAIT, |c| awake(c) == 0),
        "regions never all hibernated: {} peers awake",
        awake(c)
    );
}

/// Peers ticked per tick round on store `slot` over the next `rounds` tick rounds.
fn ticked_per_round(c: &Cluster, slot: usize, rounds: u64) -> f64 {
    let before = c.router(slot).poller_stats();
    assert!(c.wait_until(WAIT, |c| {
        c.router(slot).poller_stats().tick_rounds >= before.tick_rounds + rounds
    }));
    let after = c.router(slot).poller_stats();
    (after.peers_ticked - before.peers_ticked) as f64
        / (after.tick_rounds - before.tick_rounds) as f64
}

#[test]
fn idle_regions_stop_ticking_on_every_store() {
    let c = split_cluster(true);
    wait_all_hibernated(&c);
    for s in 0..3 {
        let peers = c.router(s).poller_stats().peers;
        let per_round = ticked_per_round(&c, s, 40);
        eprintln!("store slot {s}: {peers} peers, {per_round:.2} ticked per tick round");
        assert!(peers > SPLITS as u64);
        // A stray wake (PD's balancer moving a leader) may tick a region for a while.
        assert!(
            per_round < 1.0,
            "{per_round} peers ticked per round of {peers}"
        );
    }
}

#[test]
fn hibernation_off_ticks_every_peer() {
    let c = split_cluster(false);
    std::thread::sleep(Duration::from_secs(2));
    for s in 0..3 {
        let st = c.router(s).poller_stats();
        assert_eq!(st.awake_peers, st.peers, "slot {s}: some peers sleep");
        let per_round = ticked_per_round(&c, s, 20);
        assert!(
            per_round >= st.peers as f64 - 0.01,
            "slot {s}: {per_round} peers ticked per round of {}",
            st.peers
        );
    }
}

#[test]
fn a_write_and_a_read_wake_a_hibernated_region() {
    let c = split_cluster(true);
    wait_all_hibernated(&c);
    let k = key(7);
    let region = c.region_of(&encode(&k)).expect("region").id;
    let l = c.leader_of(region).expect("leader");
    c.put_on(l, &k, b"v1")
        .expect("write to a hibernated region");
    // The count is taken on tick rounds; the region stays awake for an idle period.
    let soon = Duration::from_millis(500);
    assert!(
        c.wait_until(soon, |c| awake(c) >= 3),
        "the written region did not wake on every store"
    );
    wait_all_hibernated(&c);
    // The hibernated leader's lease has lapsed: the read takes a ReadIndex round, which wakes
    // the region, and sees the write.
    let local = c.router(l).poller_stats().local_reads;
    assert_eq!(c.get_on(l, &k).expect("read"), Some(b"v1".to_vec()));
    assert_eq!(
        c.router(l).poller_stats().local_reads,
        local,
        "read served on a lapsed lease"
    );
    assert!(
        c.wait_until(soon, |c| awake(c) >= 1),
        "the read did not wake the region"
    );
    assert_eq!(c.must_get(&k), Some(b"v1".to_vec()));
    wait_all_hibernated(&c);
}

#[test]
fn a_dead_leaders_regions_elect_a_new_leader_while_they_hibernate() {
    let mut c = split_cluster(true);
    wait_all_hibernated(&c);
    let k = key(3);
    let region = c.region_of(&encode(&k)).expect("region").id;
    let old = c.leader_of(region).expect("leader");
    c.stop_store(old);
    let stopped = Instant::now();
    let new = c
        .wait_new_leader(region, old, WAIT)
        .unwrap_or_else(|| panic!("no new leader after stopping slot {old}"));
    c.put_on(new, &k, b"after").ok();
    c.must_put(&k, b"after");
    let took = stopped.elapsed();
    eprintln!("leader slot {old} stopped; slot {new} leads and wrote after {took:?}");
    // Silence bound (1.5 s) + a keepalive interval (0.5 s) + an election or two (0.5-1 s each).
    assert!(took < Duration::from_secs(8), "a new leader took {took:?}");
    assert_eq!(c.must_get(&k), Some(b"after".to_vec()));
}

#[test]
fn a_follower_restarted_while_its_regions_hibernate_catches_up() {
    let mut c = split_cluster(true);
    wait_all_hibernated(&c);
    let k = key(11);
    let region = c.region_of(&encode(&k)).expect("region").id;
    let l = c.leader_of(region).expect("leader");
    let f = (0..3).find(|&s| s != l).expect("a follower");
    c.stop_store(f);
    c.must_put(&k, b"while down");
    c.start_store(f);
    c.must_put(&k, b"after restart");
    let want = Some(b"after restart".to_vec());
    assert!(
        c.wait_until(WAIT, |c| {
            let kv = c.kv(f);
            kv.get_cf(engine::CF_DEFAULT, &codec::keys::data_key(&encode(&k)))
                .ok()
                .flatten()
                == want
        }),
        "the restarted follower never caught up"
    );
    wait_all_hibernated(&c);
    assert_eq!(c.must_get(&k), want);
}

#[test]
fn hibernated_followers_are_not_reported_down() {
    let c = split_cluster(true);
    wait_all_hibernated(&c);
    // Several election timeouts and hibernated heartbeats to PD (one a second) later, no
    // region has a down peer in PD's view.
    let since = c.router(0).poller_stats().tick_rounds;
    assert!(
        c.wait_until(WAIT, |c| c.router(0).poller_stats().tick_rounds
            > since + 80)
    );
    let down: Vec<_> = c
        .pd_regions()
        .into_iter()
        .filter(|r| !r.down_peers.is_empty())
        .map(|r| (r.region.id, r.down_peers))
        .collect();
    assert!(
        down.is_empty(),
        "down peers reported while hibernating: {down:?}"
    );
    // A leader that wakes (a write) does not report its followers down either.
    for i in 0..SPLITS {
        c.must_put(&key(i), b"v1");
    }
    let since = c.router(0).poller_stats().tick_rounds;
    assert!(
        c.wait_until(WAIT, |c| c.router(0).poller_stats().tick_rounds
            > since + 20)
    );
    assert!(c.pd_regions().iter().all(|r| r.down_peers.is_empty()));
}

#[test]
fn a_pd_operator_wakes_a_hibernated_leader_and_keeps_it_awake_for_the_next_step() {
    let c = split_cluster(true);
    wait_all_hibernated(&c);
    // A leader transfer answered to a hibernated leader wakes it and goes through.
    let region = c.region_of(&encode(&key(5))).expect("region").id;
    let l = c.leader_of(region).expect("leader");
    let t = (l + 1) % 3;
    assert!(
        c.transfer_leader(region, t, Duration::from_secs(5)),
        "the hibernated leader never handed over"
    );
    wait_all_hibernated(&c);
    // A step PD sends (here one that asks for nothing: a transfer to the leader itself) keeps
    // its leader awake past the idle period, so that the operator's next step comes at the
    // awake heartbeat pace: two PD heartbeat intervals (20 ticks), then the idle period (20).
    let region = c.region_of(&encode(&key(9))).expect("region").id;
    let l = c.leader_of(region).expect("leader");
    let me = c.router(l).region_info(region).expect("info").peer;
    c.router(l)
        .on_heartbeat_response(proto::pdpb::RegionHeartbeatResponse {
            region_id: region,
            transfer_leader: Some(proto::pdpb::TransferLeader {
                peer: Some(me),
                peers: vec![],
            }),
            ..Default::default()
        });
    let start = c.router(l).poller_stats().tick_rounds;
    assert!(
        c.wait_until(WAIT, |c| c.router(l).poller_stats().tick_rounds
            >= start + 2)
    );
    loop {
        let st = c.router(l).poller_stats();
        if st.tick_rounds >= start + 32 {
            break;
        }
        assert!(
            st.awake_peers >= 1,
            "the leader slept {} ticks after an operator step",
            st.tick_rounds - start
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_all_hibernated(&c);
}

#[test]
fn a_region_compacts_its_log_before_it_hibernates() {
    let mut cfg = fast_config();
    cfg.raftstore.hibernate_regions = true;
    cfg.raftstore.raft_log_gc_threshold_entries = 50;
    // Log GC comes less often than a region goes idle: without the rule, the region would
    // sleep with its log uncompacted.
    cfg.raftstore.raft_log_gc_tick_interval_ticks = 60;
    let c = Cluster::start(3, seed_from_env(), cfg);
    c.must_put(b"g", b"v");
    assert!(c.wait_replicated(3, WAIT), "first region not on 3 stores");
    for i in 0..80u32 {
        c.must_put(b"g", format!("v{i}").as_bytes());
    }
    wait_all_hibernated(&c);
    let region = c.region_of(&encode(b"g")).expect("region").id;
    let l = c.leader_of(region).expect("leader");
    let info = c.router(l).region_info(region).expect("info");
    assert!(
        info.applied_index - info.truncated_index < 50,
        "hibernated with {} uncompacted entries",
        info.applied_index - info.truncated_index
    );
}
