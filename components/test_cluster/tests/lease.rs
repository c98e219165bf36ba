//! Leader leases and local reads: a leader with a valid lease serves reads on the caller's
//! thread, and no deposed or cut-off leader ever serves a read that misses a write a newer
//! leader acknowledged (partition, leader transfer, split, restart). The paused-leader case,
//! which needs a failpoint, is in `failpoints.rs`.
//! Seeded; `FLOTILLA_SEED` replays a run.

use std::time::{Duration, Instant};

use raftstore::RegionError;
use test_cluster::{fast_config, seed_from_env, Cluster};

const WAIT: Duration = Duration::from_secs(20);

fn three_stores() -> Cluster {
    let c = Cluster::start(3, seed_from_env(), fast_config());
    c.must_put(b"k", b"v0");
    assert!(c.wait_replicated(3, WAIT), "first region not on 3 stores");
    c
}

/// The slot leading the region of `key` (waits for one).
fn leader_slot(c: &Cluster, key: &[u8]) -> usize {
    let mut slot = None;
    assert!(
        c.wait_until(WAIT, |c| {
            slot = c
                .region_of(&test_cluster::encode(key))
                .and_then(|r| c.leader_of(r.id));
            slot.is_some()
        }),
        "no leader for {key:?}"
    );
    slot.unwrap()
}

/// Reads `key` on `slot` until it answers `Ok` (the lease comes with the first quorum round).
fn read_ok(c: &Cluster, slot: usize, key: &[u8]) -> Option<Vec<u8>> {
    let deadline = Instant::now() + WAIT;
    loop {
        match c.get_on(slot, key) {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("read on {slot} never served: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn a_leader_with_a_lease_reads_without_the_poller() {
    let c = three_stores();
    let l = leader_slot(&c, b"k");
    assert_eq!(read_ok(&c, l, b"k"), Some(b"v0".to_vec()));
    let before = c.router(l).poller_stats().local_reads;
    for _ in 0..50 {
        assert_eq!(c.get_on(l, b"k").unwrap(), Some(b"v0".to_vec()));
    }
    let local = c.router(l).poller_stats().local_reads - before;
    // Reads that find the lease just expired go the ReadIndex way and renew it; most must not.
    assert!(local >= 40, "only {local} of 50 reads were local");
    // Writes keep the lease renewed: a read right after each write is local and sees it.
    for i in 0..20u32 {
        let v = format!("w{i}");
        c.put_on(l, b"k", v.as_bytes()).unwrap();
        assert_eq!(c.get_on(l, b"k").unwrap(), Some(v.into_bytes()));
    }
}

#[test]
fn an_isolated_leader_serves_no_read_after_a_new_leader_writes() {
    let c = three_stores();
    let old = leader_slot(&c, b"k");
    assert_eq!(read_ok(&c, old, b"k"), Some(b"v0".to_vec()));
    let region = c.region_of(&test_cluster::encode(b"k")).unwrap().id;
    c.isolate(old);
    let cut = Instant::now();
    // Until another leader exists the old one may still answer from its lease (with v0).
    let new = c
        .wait_new_leader(region, old, WAIT)
        .unwrap_or_else(|| panic!("no new leader after isolating {old}"));
    let elected = cut.elapsed();
    let deadline = Instant::now() + WAIT;
    while c.put_on(new, b"k", b"v1").is_err() {
        assert!(
            Instant::now() < deadline,
            "the new leader never took a write"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The new leader acknowledged v1: the old one must never answer v0 again.
    for _ in 0..20 {
        match c.get_on(old, b"k") {
            Ok(v) => assert_ne!(
                v,
                Some(b"v0".to_vec()),
                "stale read on the isolated old leader (new leader after {elected:?})"
            ),
            Err(e) => assert!(
                matches!(
                    e,
                    RegionError::NotLeader { .. }
                        | RegionError::Other(_)
                        | RegionError::StaleCommand
                ),
                "unexpected error {e}"
            ),
        }
    }
    c.heal();
    assert_eq!(
        read_ok(&c, leader_slot(&c, b"k"), b"k"),
        Some(b"v1".to_vec())
    );
}

#[test]
fn a_leader_transfer_ends_the_old_leaders_local_reads() {
    let c = three_stores();
    let region = c.region_of(&test_cluster::encode(b"k")).unwrap().id;
    for round in 0..6u32 {
        let old = leader_slot(&c, b"k");
        assert!(read_ok(&c, old, b"k").is_some());
        let to = (old + 1) % 3;
        assert!(c.transfer_leader(region, to, WAIT), "transfer to {to}");
        let v = format!("t{round}");
        let deadline = Instant::now() + WAIT;
        while c.put_on(to, b"k", v.as_bytes()).is_err() {
            assert!(Instant::now() < deadline, "new leader never took a write");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The old leader answers NotLeader, or (had it led again) the new value.
        if let Ok(got) = c.get_on(old, b"k") {
            assert_eq!(got, Some(v.clone().into_bytes()), "round {round}");
        }
        assert_eq!(read_ok(&c, to, b"k"), Some(v.into_bytes()));
    }
}

#[test]
fn after_a_split_the_old_epoch_is_refused_and_both_halves_read_locally() {
    let c = three_stores();
    c.must_put(b"z", b"zv");
    let parent = c.region_of(&test_cluster::encode(b"k")).unwrap();
    let l = leader_slot(&c, b"k");
    assert_eq!(read_ok(&c, l, b"k"), Some(b"v0".to_vec()));
    c.router(l)
        .split_region(parent.id, vec![test_cluster::encode(b"m")]);
    assert!(
        c.wait_until(WAIT, |c| c
            .region_of(&test_cluster::encode(b"z"))
            .is_some_and(|r| r.id != parent.id)),
        "split did not happen"
    );
    // A read with the parent's old epoch: refused with EpochNotMatch, not served from the
    // delegate that still held the old range.
    let ls = leader_slot(&c, b"k");
    let (tx, rx) = tokio::sync::oneshot::channel();
    c.router(ls).read(
        raftstore::RequestHeader {
            region_id: parent.id,
            region_epoch: parent.region_epoch,
            peer: None,
            term: None,
        },
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    match c.wait_answer(rx) {
        Err(RegionError::EpochNotMatch { .. }) | Err(RegionError::NotLeader { .. }) => {}
        other => panic!("old epoch answered {:?}", other.map(|r| r.region)),
    }
    assert_eq!(
        read_ok(&c, leader_slot(&c, b"k"), b"k"),
        Some(b"v0".to_vec())
    );
    assert_eq!(
        read_ok(&c, leader_slot(&c, b"z"), b"z"),
        Some(b"zv".to_vec())
    );
}

#[test]
fn a_restarted_leader_store_reads_what_was_written_while_it_was_down() {
    let mut c = three_stores();
    let l = leader_slot(&c, b"k");
    assert_eq!(read_ok(&c, l, b"k"), Some(b"v0".to_vec()));
    c.stop_store(l);
    c.must_put(b"k", b"v1");
    c.start_store(l);
    // Whoever leads after the restart (the restarted store included) serves v1.
    for _ in 0..3 {
        let region = c.region_of(&test_cluster::encode(b"k")).unwrap().id;
        assert!(c.transfer_leader(region, l, WAIT), "leadership back to {l}");
        assert_eq!(read_ok(&c, l, b"k"), Some(b"v1".to_vec()));
        c.must_put(b"k", b"v1");
    }
}
