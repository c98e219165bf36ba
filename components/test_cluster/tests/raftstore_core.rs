//! The raftstore's core under elastic scale: a poller round's work follows the busy regions
//! (counted, never timed), and a peer removed while its store was down is destroyed,
//! tombstoned and never brought back by an old message, whether a member tells it or PD does.
//! Seeded; `FLOTILLA_SEED` replays a run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proto::flotillapb::{PeerState, RaftMessage};
use proto::metapb;
use raft::eraftpb::{Message as RaftMsg, MessageType};
use raftstore::RegionError;
use test_cluster::{encode, fast_config, seed_from_env, Cluster, Filter, Verdict};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn poller_work_between_ticks_follows_the_written_region_not_the_idle_ones() {
    let mut cfg = fast_config();
    // Nothing periodic but raft ticks: PD heartbeats and split checks would touch every
    // region on their own schedule.
    cfg.raftstore.pd_heartbeat_tick_interval_ticks = 100_000;
    cfg.raftstore.split_check_tick_interval_ticks = 100_000;
    let c = Cluster::start(1, seed_from_env(), cfg);
    assert!(c.wait_replicated(1, WAIT), "no leader");
    // PD pre-splits the first region at the keyspace bounds as soon as its leader reports in.
    // A split asked for while that one is in flight is dropped (a region splits one batch at
    // a time), so this test's split waits for it.
    let presplit = codec::keys::keyspace_presplit_keys();
    assert!(
        c.wait_until(WAIT, |c| all_region_starts(c, &presplit)),
        "PD never pre-split the keyspace bounds"
    );
    c.must_put(b"idle", b"x");
    let region = c.region_of(&encode(b"idle")).expect("region");
    let split_keys: Vec<Vec<u8>> = (0..50u32)
        .map(|i| encode(format!("idle{i:03}").as_bytes()))
        .collect();
    // An operator's split is best effort; asking again while it is in flight is a no-op, and
    // once it is applied the keys no longer fall in the region asked about.
    assert!(
        c.wait_until(WAIT, |c| {
            c.router(0).split_region(region.id, split_keys.clone());
            all_region_starts(c, &split_keys)
        }),
        "the split never produced 50 regions"
    );
    // Every new region has elected itself and applied its leader's first entry, and a few
    // ticks have passed, so that what follows counts the writes' work and not the split's.
    let settled = |c: &Cluster| {
        let infos = c.router(0).region_infos();
        infos.len() == presplit.len() + 1 + split_keys.len()
            && infos
                .iter()
                .all(|r| r.is_leader && r.applied_index > raftstore::RAFT_INIT_LOG_INDEX)
    };
    assert!(c.wait_until(WAIT, settled), "the new regions never settled");
    let ticks = c.router(0).poller_stats().tick_rounds;
    assert!(c.wait_until(WAIT, |c| c.router(0).poller_stats().tick_rounds > ticks + 2));
    let regions = c.router(0).region_infos().len() as u64;
    c.must_put(b"busy", b"warm up");
    let before = c.router(0).poller_stats();
    let writes = 100u64;
    for i in 0..writes {
        c.put_on(0, b"busy", format!("v{i}").as_bytes())
            .expect("write to the busy region");
    }
    let after = c.router(0).poller_stats();
    let examined = after.peers_examined_between_ticks - before.peers_examined_between_ticks;
    let rounds = (after.rounds - before.rounds) - (after.tick_rounds - before.tick_rounds);
    eprintln!("{regions} regions, {writes} writes: {rounds} rounds between ticks examined {examined} peers");
    // A write costs a round for its proposal and one for its apply result, each looking at
    // the written region only; a few stray control messages may touch other regions once.
    assert!(
        examined <= 3 * writes + regions,
        "{examined} peers examined for {writes} writes among {regions} regions"
    );
    assert!(rounds > 0);
}

/// Whether every key in `keys` starts one of store 0's regions.
fn all_region_starts(c: &Cluster, keys: &[Vec<u8>]) -> bool {
    let starts: Vec<Vec<u8>> = c
        .router(0)
        .region_infos()
        .into_iter()
        .map(|r| r.region.start_key)
        .collect();
    keys.iter().all(|k| starts.contains(k))
}

/// Four stores; returns the cluster, a region, a store holding a follower of it and the
/// follower's peer.
fn four_stores_and_a_follower(
    cfg: server::ServerConfig,
) -> (Cluster, metapb::Region, usize, metapb::Peer) {
    let c = Cluster::start(4, seed_from_env(), cfg);
    assert!(c.wait_replicated(3, WAIT), "regions never reached 3 voters");
    for i in 0..20u32 {
        c.must_put(format!("s{i:02}").as_bytes(), b"before");
    }
    let region = c.region_of(&encode(b"s00")).expect("region");
    let leader = c.leader_of(region.id).expect("leader");
    let follower = region
        .peers
        .iter()
        .find(|p| p.store_id != c.store_id(leader))
        .copied()
        .expect("a follower");
    let slot = c.slot_of(follower.store_id);
    (c, region, slot, follower)
}

/// Stops `down`, removes its peer of `region` through the leader (as a PD operator would),
/// and writes more.
fn remove_while_down(c: &mut Cluster, region: &metapb::Region, down: usize, peer: metapb::Peer) {
    c.stop_store(down);
    assert!(
        c.remove_peer(region.id, peer, WAIT),
        "the leader never removed the down store's peer"
    );
    for i in 0..20u32 {
        c.must_put(format!("s{i:02}").as_bytes(), b"after");
    }
}

/// Whether the peer is gone from store `slot`: the region is not there, or only as a newer
/// peer (PD may place one there again).
fn peer_gone(c: &Cluster, slot: usize, region_id: u64, peer: metapb::Peer) -> bool {
    c.router(slot)
        .region_info(region_id)
        .is_none_or(|r| r.peer.id > peer.id)
}

/// Checks that store `slot` holds the region as a tombstone with its data cleared, unless a
/// newer peer has been placed there since. The poller lets go of a destroyed peer at once and
/// its apply thread writes the tombstone after, so this waits for the write.
fn assert_tombstoned(c: &Cluster, slot: usize, region: &metapb::Region) {
    let kv = c.kv(slot);
    let region_state = || {
        raftstore::load_region_states(kv.as_ref())
            .expect("read region states")
            .into_iter()
            .find(|s| s.region.as_ref().is_some_and(|r| r.id == region.id))
            .expect("region state")
    };
    let newer_peer = |c: &Cluster| c.router(slot).region_info(region.id).is_some();
    c.wait_until(WAIT, |c| {
        newer_peer(c) || region_state().state == PeerState::Tombstone as i32
    });
    if newer_peer(c) {
        return; // created from a newer message
    }
    let state = region_state();
    assert_eq!(state.state, PeerState::Tombstone as i32, "{state:?}");
    let tomb = state
        .region
        .and_then(|r| r.region_epoch)
        .unwrap_or_default();
    let old = region.region_epoch.unwrap_or_default();
    assert!(
        tomb.conf_ver > old.conf_ver,
        "tombstone {tomb:?}, old {old:?}"
    );
    if c.router(slot).region_info(region.id).is_none() {
        let data = kv
            .get_cf(engine::CF_DEFAULT, &codec::keys::data_key(&encode(b"s00")))
            .expect("read data");
        assert_eq!(data, None, "the stale peer's data is still there");
    }
}

/// A heartbeat from the region's old leader to the destroyed peer, under the old epoch.
fn old_heartbeat(region: &metapb::Region, leader: metapb::Peer, to: metapb::Peer) -> RaftMessage {
    let mut m = RaftMsg::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = leader.id;
    m.to = to.id;
    m.term = 6;
    RaftMessage {
        region_id: region.id,
        from_peer: Some(leader),
        to_peer: Some(to),
        region_epoch: region.region_epoch,
        message: protobuf::Message::write_to_bytes(&m).expect("encode"),
        start_key: region.start_key.clone(),
        end_key: region.end_key.clone(),
        ..Default::default()
    }
}

/// Sends an old message to the destroyed peer and checks that it stays destroyed, before and
/// after a restart of its store.
fn assert_not_recreated(c: &mut Cluster, slot: usize, region: &metapb::Region, peer: metapb::Peer) {
    let leader = region
        .peers
        .iter()
        .find(|p| p.id != peer.id)
        .copied()
        .expect("another peer");
    for restart in [false, true] {
        if restart {
            c.stop_store(slot);
            c.start_store(slot);
        }
        let router = c.router(slot);
        router
            .send_raft_message(old_heartbeat(region, leader, peer))
            .expect("mailbox takes it");
        // The poller handles its mailbox every round: a few rounds later the message is in.
        let rounds = router.poller_stats().rounds;
        assert!(c.wait_until(WAIT, |_| router.poller_stats().rounds > rounds + 3));
        assert!(
            peer_gone(c, slot, region.id, peer),
            "an old message brought the destroyed peer back (restart: {restart})"
        );
    }
}

#[test]
fn a_peer_removed_while_its_store_was_down_is_destroyed_when_a_member_tells_it() {
    let mut cfg = fast_config();
    // Only a member's answer may destroy the peer in this test, not PD's.
    cfg.raftstore.stale_peer_check_ticks = 100_000;
    let (mut c, region, down, peer) = four_stores_and_a_follower(cfg);
    remove_while_down(&mut c, &region, down, peer);
    c.start_store(down);
    assert!(
        c.wait_until(WAIT, |c| peer_gone(c, down, region.id, peer)),
        "the stale peer was never destroyed"
    );
    assert_tombstoned(&c, down, &region);
    // It serves nothing for the region under its old identity.
    match c.get_on(down, b"s00") {
        Ok(v) => panic!("the removed store served a read: {v:?}"),
        Err(e) => eprintln!("removed store refused the read: {e}"),
    }
    assert_not_recreated(&mut c, down, &region, peer);
    assert_eq!(c.must_get(b"s00"), Some(b"after".to_vec()));
}

#[test]
fn a_peer_removed_while_its_store_was_down_and_cut_off_asks_pd_and_is_destroyed() {
    let mut cfg = fast_config();
    cfg.raftstore.stale_peer_check_ticks = 30;
    let (mut c, region, down, peer) = four_stores_and_a_follower(cfg);
    remove_while_down(&mut c, &region, down, peer);
    // No member can tell it: every raft message to or from the store is dropped.
    c.net.add_filter(Filter::Isolate(peer.store_id));
    c.start_store(down);
    assert!(
        c.wait_until(WAIT, |c| peer_gone(c, down, region.id, peer)),
        "the stale peer never asked PD, or did not act on the answer"
    );
    assert_tombstoned(&c, down, &region);
    c.heal();
    assert_not_recreated(&mut c, down, &region, peer);
    assert_eq!(c.must_get(b"s00"), Some(b"after".to_vec()));
}

/// PD's leader transfer to a peer that is far behind (cut off while 200 writes committed) is
/// not started: while a transfer runs, raft drops every proposal, and to a peer that cannot
/// catch up that lasts an election timeout. The leader keeps serving writes; once the peer is
/// back and has caught up, the transfer goes through.
#[test]
fn a_leader_transfer_waits_until_the_target_has_caught_up() {
    let (c, region, leader, behind) = three_stores_one_region();
    c.isolate(behind);
    for i in 0..200 {
        c.put_on(leader, format!("k{i:03}").as_bytes(), b"v")
            .unwrap();
    }
    let to = c.router(behind).region_info(region.id).map(|r| r.peer);
    c.router(leader)
        .on_heartbeat_response(proto::pdpb::RegionHeartbeatResponse {
            region_id: region.id,
            transfer_leader: Some(proto::pdpb::TransferLeader {
                peer: to,
                peers: vec![],
            }),
            ..Default::default()
        });
    // An election timeout at these settings is 0.5 to 1 s: writes for 1 s all succeed.
    let until = std::time::Instant::now() + Duration::from_secs(1);
    let mut n = 0;
    while std::time::Instant::now() < until {
        c.put_on(leader, b"during", format!("{n}").as_bytes())
            .unwrap_or_else(|e| panic!("write {n} during the refused transfer: {e}"));
        n += 1;
    }
    assert_eq!(c.leader_of(region.id), Some(leader));
    c.heal();
    assert!(
        c.transfer_leader(region.id, behind, WAIT),
        "after catching up"
    );
    assert_eq!(c.must_get(b"k199"), Some(b"v".to_vec()));
}

/// A region whose only voter is this store leads as soon as the peer exists, on a fresh
/// bootstrap and after a restart, instead of after an election timeout (here 2.25 to 4.5 s,
/// so the deadline of 1.5 s cannot be met by an election).
#[test]
fn a_lone_voter_leads_at_once_after_bootstrap_and_restart() {
    let mut cfg = fast_config();
    cfg.raftstore.raft_election_ticks = 45;
    cfg.raftstore.hibernate_idle_ticks = 45;
    let mut c = Cluster::start(1, seed_from_env(), cfg);
    let served_within = |c: &Cluster, what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_millis(1500);
        loop {
            match c.put_on(0, b"k", what.as_bytes()) {
                Ok(()) => break,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{what}: no write within 1.5 s: {e}"),
            }
        }
        assert_eq!(c.must_get(b"k"), Some(what.as_bytes().to_vec()));
    };
    served_within(&c, "bootstrap");
    c.stop_store(0);
    c.start_store(0);
    served_within(&c, "restart");
}

/// A cluster of three stores with the first key written on all three: the cluster, the
/// key's region, its leader's slot and another slot.
fn three_stores_one_region() -> (Cluster, metapb::Region, usize, usize) {
    let c = Cluster::start(3, seed_from_env(), fast_config());
    c.must_put(b"a", b"0");
    assert!(c.wait_replicated(3, WAIT));
    let region = c.region_of(&encode(b"a")).unwrap();
    let leader = c.leader_of(region.id).unwrap();
    (c, region, leader, (leader + 1) % 3)
}

/// Starts a transfer of `region`'s leadership from slot `leader` to slot `to` whose
/// MsgTimeoutNow (the message that makes the target campaign) meets `verdict`, and waits
/// until that message was sent: the transfer runs.
fn start_transfer_with(c: &Cluster, region: u64, leader: usize, to: usize, verdict: Verdict) {
    let hits = Arc::new(AtomicU64::new(0));
    c.net.add_filter(Filter::MsgTypeTo {
        msg_type: MessageType::MsgTimeoutNow,
        store_id: c.store_id(to),
        verdict,
        hits: hits.clone(),
    });
    let target = c.router(to).region_info(region).map(|r| r.peer);
    c.router(leader)
        .on_heartbeat_response(proto::pdpb::RegionHeartbeatResponse {
            region_id: region,
            transfer_leader: Some(proto::pdpb::TransferLeader {
                peer: target,
                peers: vec![],
            }),
            ..Default::default()
        });
    assert!(
        c.wait_until(WAIT, |_| hits.load(Ordering::Relaxed) > 0),
        "the transfer never started"
    );
}

/// Writes proposed while a leader transfer runs (raft takes no proposal then) wait for it to
/// end instead of failing with "not leader" naming the leader they were sent to, which sends
/// the official client straight back until its retries run out. Here the target never gets
/// the order to campaign, the transfer is given up after an election timeout, and every write
/// succeeds on the same leader.
#[test]
fn writes_during_a_leader_transfer_that_is_given_up_wait_and_succeed() {
    let (c, region, leader, to) = three_stores_one_region();
    start_transfer_with(&c, region.id, leader, to, Verdict::Drop);
    let pending: Vec<_> = (0..20)
        .map(|i| {
            c.put_async(leader, format!("t{i:02}").as_bytes(), b"v")
                .unwrap()
        })
        .collect();
    for (i, rx) in pending.into_iter().enumerate() {
        c.wait_answer(rx)
            .unwrap_or_else(|e| panic!("write {i} during the transfer: {e}"));
    }
    assert_eq!(c.leader_of(region.id), Some(leader));
    c.net.clear_filters();
    for i in 0..20 {
        assert_eq!(
            c.must_get(format!("t{i:02}").as_bytes()),
            Some(b"v".to_vec())
        );
    }
}

/// Writes proposed while a slow leader transfer runs (the target's order to campaign takes
/// 300 ms) are answered, once the target has won, "not leader" naming the target: the client
/// goes to the new leader, never back to the old one.
#[test]
fn writes_during_a_slow_leader_transfer_are_told_the_new_leader() {
    let (c, region, leader, to) = three_stores_one_region();
    let delay = Verdict::Delay(Duration::from_millis(300));
    start_transfer_with(&c, region.id, leader, to, delay);
    let pending: Vec<_> = (0..20)
        .map(|i| {
            c.put_async(leader, format!("t{i:02}").as_bytes(), b"v")
                .unwrap()
        })
        .collect();
    let target_store = c.store_id(to);
    for (i, rx) in pending.into_iter().enumerate() {
        match c.wait_answer(rx) {
            Err(RegionError::NotLeader {
                leader: Some(p), ..
            }) if p.store_id == target_store => {}
            other => panic!("write {i}: {other:?}, not \"not leader\" naming the target"),
        }
    }
    assert!(c.wait_until(WAIT, |c| c.leader_of(region.id) == Some(to)));
}
