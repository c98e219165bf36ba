//! Region merge in a real cluster: PD's merge request is sent by hand to the source's leader
//! (as PD's operator would), and the tests check that the target takes the source's range with
//! every key, the source is tombstoned on every store, and that this holds through a leader
//! change, a restart in the middle, a store that was down during the merge, and a target that
//! changes under the merge (rolled back). Seeded; `FLOTILLA_SEED` replays a run.

use std::time::Duration;

use proto::flotillapb::PeerState;
use proto::{metapb, pdpb};
use test_cluster::{encode, fast_config, seed_from_env, Cluster, Filter};

const WAIT: Duration = Duration::from_secs(60);
const KEYS: u32 = 40;

fn key(i: u32) -> Vec<u8> {
    format!("m{i:03}").as_bytes().to_vec()
}

/// A 3-store cluster with keys m000..m039 in two regions split at m020; returns the cluster,
/// the left region (the merge's target) and the right one (its source).
fn two_regions() -> (Cluster, metapb::Region, metapb::Region) {
    let c = Cluster::start(3, seed_from_env(), fast_config());
    assert!(c.wait_replicated(3, WAIT), "regions never reached 3 voters");
    for i in 0..KEYS {
        c.must_put(&key(i), b"v0");
    }
    let whole = c.region_of(&encode(&key(0))).expect("region");
    let split_key = encode(&key(KEYS / 2));
    assert!(
        c.wait_until(WAIT, |c| {
            if let Some(l) = c.leader_of(whole.id) {
                c.router(l).split_region(whole.id, vec![split_key.clone()]);
            }
            c.region_of(&split_key).is_some_and(|r| {
                r.start_key == split_key && r.region_epoch == epoch_on_all(c, r.id)
            })
        }),
        "the split never happened on every store"
    );
    let target = c.region_of(&encode(&key(0))).expect("left");
    let source = c.region_of(&split_key).expect("right");
    assert_eq!(target.end_key, source.start_key);
    assert!(c.wait_until(WAIT, |c| c.leader_of(source.id).is_some()
        && c.leader_of(target.id).is_some()));
    // Every peer has applied its leader's first entry: the leaders have heard from every
    // follower, so a store stopped now is known to hold the log (a leader that never heard
    // from a follower counts it at index 0, and refuses PrepareMerge while it is down).
    assert!(
        c.wait_until(WAIT, |c| applied_on_all(c, source.id)
            && applied_on_all(c, target.id)),
        "the new regions' peers never caught up"
    );
    (c, target, source)
}

/// Whether every running store's peer of the region has applied as far as its leader.
fn applied_on_all(c: &Cluster, region_id: u64) -> bool {
    let infos: Vec<_> = c
        .region_infos()
        .into_iter()
        .filter(|(_, r)| r.region.id == region_id)
        .map(|(_, r)| r)
        .collect();
    let Some(leader) = infos.iter().find(|r| r.is_leader) else {
        return false;
    };
    infos.len() == c.running_count()
        && infos
            .iter()
            .all(|r| r.term == leader.term && r.applied_index == leader.applied_index)
}

/// The region's epoch if every running store has the same one for it.
fn epoch_on_all(c: &Cluster, region_id: u64) -> Option<metapb::RegionEpoch> {
    let epochs: Vec<_> = c
        .region_infos()
        .into_iter()
        .filter(|(_, r)| r.region.id == region_id)
        .map(|(_, r)| r.region.region_epoch)
        .collect();
    (epochs.len() == c.running_count() && epochs.windows(2).all(|w| w[0] == w[1]))
        .then(|| epochs[0])
        .flatten()
}

/// Sends the source's leader a merge request into `target` (the target as this store sees
/// it), as PD's answer to a heartbeat would.
fn ask_merge(c: &Cluster, source_id: u64, target_id: u64) {
    let Some(slot) = c.leader_of(source_id) else {
        return;
    };
    let Some(target) = c.router(slot).region_info(target_id) else {
        return;
    };
    c.router(slot)
        .on_heartbeat_response(pdpb::RegionHeartbeatResponse {
            region_id: source_id,
            merge: Some(pdpb::Merge {
                target: Some(target.region),
            }),
            ..Default::default()
        });
}

/// Whether no running store holds the source and every running store's target covers both.
fn merged(c: &Cluster, source: &metapb::Region, target: &metapb::Region) -> bool {
    let infos = c.region_infos();
    !infos.iter().any(|(_, r)| r.region.id == source.id)
        && infos
            .iter()
            .filter(|(_, r)| r.region.id == target.id)
            .count()
            == c.running_count()
        && infos
            .iter()
            .filter(|(_, r)| r.region.id == target.id)
            .all(|(_, r)| {
                r.region.start_key == target.start_key && r.region.end_key == source.end_key
            })
}

/// Checks store `slot`'s engine: the source is a tombstone, the target's state covers both
/// ranges, and every key has `value`.
fn assert_merged_on(c: &Cluster, slot: usize, source: &metapb::Region, value: &[u8]) {
    let kv = c.kv(slot);
    let states = raftstore::load_region_states(kv.as_ref()).expect("region states");
    let state = states
        .iter()
        .find(|s| s.region.as_ref().is_some_and(|r| r.id == source.id))
        .expect("the source's state");
    assert_eq!(state.state, PeerState::Tombstone as i32, "{state:?}");
    for i in 0..KEYS {
        let got = kv
            .get_cf(engine::CF_DEFAULT, &codec::keys::data_key(&encode(&key(i))))
            .expect("read");
        assert_eq!(got.as_deref(), Some(value), "store slot {slot}, key {i}");
    }
}

/// Moves the target's leader to a store other than the source leader's; returns the two
/// stores (source leader, target leader).
fn lead_apart(c: &Cluster, source: &metapb::Region, target: &metapb::Region) -> (usize, usize) {
    let source_leader = c.leader_of(source.id).expect("leader");
    let other = (0..3).find(|s| *s != source_leader).expect("another store");
    assert!(
        c.transfer_leader(target.id, other, WAIT),
        "the target's leader never moved"
    );
    (source_leader, other)
}

/// Keeps asking for the merge (PD repeats its answer too) until `cond` holds, or `WAIT` passes.
fn ask_merge_until(
    c: &Cluster,
    source_id: u64,
    target_id: u64,
    mut cond: impl FnMut(&Cluster) -> bool,
) -> bool {
    c.wait_until(WAIT, |c| {
        ask_merge(c, source_id, target_id);
        std::thread::sleep(Duration::from_millis(200));
        cond(c)
    })
}

fn merge_until_done(c: &Cluster, source: &metapb::Region, target: &metapb::Region) {
    assert!(
        ask_merge_until(c, source.id, target.id, |c| merged(c, source, target)),
        "the merge never completed: {:?}",
        c.region_infos()
    );
}

#[test]
fn adjacent_regions_merge_and_keep_every_key() {
    let (c, target, source) = two_regions();
    merge_until_done(&c, &source, &target);
    let region = c.region_of(&encode(&key(KEYS - 1))).expect("region");
    assert_eq!(region.id, target.id);
    let v = |r: &metapb::Region| r.region_epoch.unwrap_or_default().version;
    assert!(v(&region) > v(&source).max(v(&target)), "{region:?}");
    for i in 0..KEYS {
        assert_eq!(c.must_get(&key(i)).as_deref(), Some(&b"v0"[..]), "key {i}");
        c.must_put(&key(i), b"v1");
    }
    for slot in 0..3 {
        c.wait_until(WAIT, |c| {
            c.kv(slot)
                .get_cf(
                    engine::CF_DEFAULT,
                    &codec::keys::data_key(&encode(&key(KEYS - 1))),
                )
                .ok()
                .flatten()
                .as_deref()
                == Some(b"v1")
        });
        assert_merged_on(&c, slot, &source, b"v1");
    }
}

#[test]
fn a_merge_goes_through_when_the_leaders_are_on_different_stores() {
    let (c, target, source) = two_regions();
    // Move the target's leader away from the source's: the source's leader must follow it.
    lead_apart(&c, &source, &target);
    merge_until_done(&c, &source, &target);
    for i in 0..KEYS {
        assert_eq!(c.must_get(&key(i)).as_deref(), Some(&b"v0"[..]), "key {i}");
    }
}

/// Every running store holds the source in state `Merging`.
fn merging_everywhere(c: &Cluster, source_id: u64) -> bool {
    (0..c.len()).filter(|i| c.is_running(*i)).all(|i| {
        raftstore::load_region_states(c.kv(i).as_ref())
            .expect("states")
            .iter()
            .any(|s| {
                s.state == PeerState::Merging as i32
                    && s.region.as_ref().is_some_and(|r| r.id == source_id)
            })
    })
}

#[test]
fn a_merge_interrupted_by_a_restart_completes_and_writes_wait_for_it() {
    let (mut c, target, source) = two_regions();
    // The target hears nothing from its leader's store, so CommitMerge cannot commit.
    let leader = c.leader_of(source.id).expect("leader");
    for s in 0..3 {
        if s != leader {
            c.net.add_filter(Filter::DropRegionTo {
                region_id: target.id,
                store_id: c.store_id(s),
            });
        }
    }
    assert!(
        ask_merge_until(&c, source.id, target.id, |c| {
            merging_everywhere(c, source.id)
        }),
        "PrepareMerge never applied everywhere"
    );
    // The source takes no writes while it merges.
    let write = c.put_on(
        c.leader_of(source.id).unwrap_or(leader),
        &key(KEYS - 1),
        b"x",
    );
    assert!(
        matches!(
            write,
            Err(raftstore::RegionError::ProposalInMergingMode(_))
                | Err(raftstore::RegionError::NotLeader { .. })
        ),
        "{write:?}"
    );
    let slot = c.leader_of(source.id).unwrap_or(leader);
    c.stop_store(slot);
    c.net.clear_filters();
    c.start_store(slot);
    assert!(
        c.wait_until(WAIT, |c| merged(c, &source, &target)),
        "the merge never completed after the restart: {:?}",
        c.region_infos()
    );
    for i in 0..KEYS {
        assert_eq!(c.must_get(&key(i)).as_deref(), Some(&b"v0"[..]), "key {i}");
    }
    c.must_put(&key(KEYS - 1), b"after");
}

#[test]
fn a_store_down_during_the_merge_catches_up_through_the_target() {
    let (mut c, target, source) = two_regions();
    let down = (0..3)
        .find(|s| Some(*s) != c.leader_of(source.id) && Some(*s) != c.leader_of(target.id))
        .unwrap_or(2);
    c.stop_store(down);
    // Writes the down store misses, in both regions.
    for i in 0..KEYS {
        c.must_put(&key(i), b"v1");
    }
    merge_until_done(&c, &source, &target);
    c.must_put(&key(KEYS - 1), b"v2");
    c.start_store(down);
    // Back, the store's target peer applies CommitMerge from its log: its source peer first
    // catches up on what it missed, then goes.
    assert!(
        c.wait_until(WAIT, |c| {
            c.router(down).region_info(source.id).is_none()
                && c.router(down).region_info(target.id).is_some_and(|r| {
                    r.region.end_key == source.end_key
                        && c.kv(down)
                            .get_cf(
                                engine::CF_DEFAULT,
                                &codec::keys::data_key(&encode(&key(KEYS - 1))),
                            )
                            .ok()
                            .flatten()
                            .as_deref()
                            == Some(b"v2")
                })
        }),
        "the store that was down never caught up: {:?}",
        c.router(down).region_infos()
    );
    let kv = c.kv(down);
    for i in 0..KEYS - 1 {
        let got = kv
            .get_cf(engine::CF_DEFAULT, &codec::keys::data_key(&encode(&key(i))))
            .expect("read");
        assert_eq!(
            got.as_deref(),
            Some(&b"v1"[..]),
            "key {i} on the store that was down"
        );
    }
    // It serves the merged region: make it the leader and read through it.
    assert!(
        c.transfer_leader(target.id, down, WAIT),
        "the store that was down never led"
    );
    assert_eq!(
        c.get_on(down, &key(0)).ok().flatten().as_deref(),
        Some(&b"v1"[..])
    );
}

#[test]
fn a_merge_whose_target_changed_is_rolled_back_and_the_source_serves_again() {
    let (c, target, source) = two_regions();
    // The source's leader cannot hand its leadership to the target leader's store, so it
    // never proposes CommitMerge; the target splits meanwhile.
    let (source_leader, target_leader) = lead_apart(&c, &source, &target);
    c.net.add_filter(Filter::DropRegionTo {
        region_id: source.id,
        store_id: c.store_id(target_leader),
    });
    assert!(
        ask_merge_until(&c, source.id, target.id, |c| {
            c.router(source_leader)
                .region_info(source.id)
                .is_some_and(|r| {
                    r.region.region_epoch.unwrap_or_default().conf_ver
                        > source.region_epoch.unwrap_or_default().conf_ver
                })
        }),
        "PrepareMerge never applied on the source's leader"
    );
    let split_key = encode(&key(5));
    assert!(
        c.wait_until(WAIT, |c| {
            if let Some(l) = c.leader_of(target.id) {
                c.router(l).split_region(target.id, vec![split_key.clone()]);
            }
            c.router(source_leader)
                .region_info(target.id)
                .is_some_and(|r| r.region.end_key == split_key)
        }),
        "the target never split"
    );
    // The source's leader sees the target's new epoch and rolls back; it serves again.
    assert!(
        c.wait_until(WAIT, |c| c
            .leader_of(source.id)
            .is_some_and(|l| c.put_on(l, &key(KEYS - 1), b"again").is_ok())),
        "the source never served again"
    );
    c.net.clear_filters();
    assert_eq!(c.must_get(&key(KEYS - 1)).as_deref(), Some(&b"again"[..]));
    assert_eq!(c.must_get(&key(KEYS / 2)).as_deref(), Some(&b"v0"[..]));
    let region = c.region_of(&encode(&key(KEYS - 1))).expect("region");
    assert_eq!(region.id, source.id, "the source is its own region again");
}

#[test]
fn a_store_that_missed_the_merge_and_lost_its_target_peer_drops_the_source_peer() {
    let (mut c, target, source) = two_regions();
    let down = (0..3)
        .find(|s| Some(*s) != c.leader_of(source.id) && Some(*s) != c.leader_of(target.id))
        .unwrap_or(2);
    let down_store = c.store_id(down);
    c.stop_store(down);
    merge_until_done(&c, &source, &target);
    // The merged region leaves the down store (as PD's replica checker would move it away).
    let gone = *target
        .peers
        .iter()
        .find(|p| p.store_id == down_store)
        .expect("a peer on the down store");
    assert!(
        c.remove_peer(target.id, gone, WAIT),
        "the down store's peer of the target was never removed"
    );
    c.start_store(down);
    // Its target peer is told it was removed; its source peer, silent, asks PD, which no longer
    // knows the source and names the region that took it over. PD may place a new peer of the
    // merged region on the store again: it comes with a snapshot of the whole range.
    assert!(
        c.wait_until(WAIT, |c| {
            let r = c.router(down);
            r.region_info(source.id).is_none()
                && r.region_info(target.id)
                    .is_none_or(|t| t.peer.id != gone.id)
        }),
        "the store kept a peer of the merged regions: {:?}",
        c.router(down).region_infos()
    );
    let kv = c.kv(down);
    assert!(c.wait_until(WAIT, |_| {
        raftstore::load_region_states(kv.as_ref())
            .expect("states")
            .iter()
            .any(|s| {
                s.region.as_ref().is_some_and(|r| r.id == source.id)
                    && s.state == PeerState::Tombstone as i32
            })
    }));
    // Either the store holds none of the range, or a new peer of the merged region with all of
    // it (from the snapshot): never the stale source's part alone.
    let got = |i: u32| {
        kv.get_cf(engine::CF_DEFAULT, &codec::keys::data_key(&encode(&key(i))))
            .expect("read")
    };
    c.wait_until(WAIT, |_| got(0).is_some() == got(KEYS - 1).is_some());
    assert_eq!(
        got(0).is_some(),
        got(KEYS - 1).is_some(),
        "half a range on the store"
    );
}
