//! Crash safety: a store crashes (a raftstore thread panics at a failpoint) or loses power (its
//! raft log on the fault file system drops what was not synced) or meets an I/O error, and is
//! restarted on its data. Every test checks that no acknowledged write is lost, that the
//! replicas converge to the same data and region metadata, and that no write whose persistence
//! failed was acknowledged.
//!
//! Built only with `--features failpoints`. Failpoints are process-global, and store ids repeat
//! across clusters: every test holds a `fail::FailScenario` (one test at a time per process;
//! nextest runs each test in its own process anyway) and scopes its failpoints to one store
//! with the `name@<store_id>` form.
//! Seeded; `FLOTILLA_SEED` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use proto::flotillapb::PeerState;
use raft_log::FsOp;
use test_cluster::{encode, fast_config, seed_from_env, Cluster};

const WAIT: Duration = Duration::from_secs(30);

/// A failpoint armed to crash (panic) the thread that hits it first, once.
struct Crash {
    name: String,
    hit: Arc<AtomicBool>,
}

impl Crash {
    /// Arms `point` on store `store_id` only.
    fn arm(point: &str, store_id: u64) -> Crash {
        let name = format!("{point}@{store_id}");
        let hit = Arc::new(AtomicBool::new(false));
        let (h, n) = (hit.clone(), name.clone());
        fail::cfg_callback(name.clone(), move || {
            if !h.swap(true, Ordering::SeqCst) {
                panic!("injected crash at failpoint {n}");
            }
        })
        .expect("configure failpoint");
        Crash { name, hit }
    }

    fn hit(&self) -> bool {
        self.hit.load(Ordering::SeqCst)
    }

    fn wait(&self, c: &Cluster) {
        assert!(
            c.wait_until(WAIT, |_| self.hit()),
            "failpoint {} was never hit",
            self.name
        );
    }
}

impl Drop for Crash {
    fn drop(&mut self) {
        fail::remove(&self.name);
    }
}

/// What the clients were told.
#[derive(Default)]
struct History {
    /// Acknowledged writes: they must survive.
    acked: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Writes that failed or timed out: they may or may not have taken effect.
    unknown: BTreeSet<Vec<u8>>,
}

impl History {
    fn must_put(&mut self, c: &Cluster, key: &[u8], value: &[u8]) {
        c.must_put(key, value);
        self.unknown.remove(key);
        self.acked.insert(key.to_vec(), value.to_vec());
    }

    fn put_on(&mut self, c: &Cluster, slot: usize, key: &[u8], value: &[u8]) -> bool {
        match c.put_on(slot, key, value) {
            Ok(()) => {
                self.unknown.remove(key);
                self.acked.insert(key.to_vec(), value.to_vec());
                true
            }
            Err(_) => {
                self.acked.remove(key);
                self.unknown.insert(key.to_vec());
                false
            }
        }
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("k{i:05}").into_bytes()
}

fn value(i: u32, round: u32) -> Vec<u8> {
    format!("v{i}-{round}").into_bytes()
}

fn three_stores(c: Cluster) -> Cluster {
    assert!(
        c.wait_replicated(3, Duration::from_secs(60)),
        "regions never reached 3 voters"
    );
    c
}

fn leader_of_key(c: &Cluster, k: &[u8]) -> (u64, usize) {
    let mut found = None;
    assert!(
        c.wait_until(WAIT, |c| {
            found = c
                .region_of(&encode(k))
                .and_then(|r| c.leader_of(r.id).map(|l| (r.id, l)));
            found.is_some()
        }),
        "no leader for {k:?}"
    );
    found.expect("leader")
}

/// Every running store's data (default CF), as a map.
fn store_data(c: &Cluster, slot: usize) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut data = BTreeMap::new();
    c.kv(slot)
        .snapshot()
        .scan_cf(
            engine::CF_DEFAULT,
            codec::keys::DATA_MIN_KEY,
            Some(codec::keys::DATA_MAX_KEY),
            false,
            &mut |k, v| {
                data.insert(k.to_vec(), v.to_vec());
                Ok(true)
            },
        )
        .expect("scan");
    data
}

/// The live regions a store's engine records, by id.
fn store_regions(c: &Cluster, slot: usize) -> BTreeMap<u64, proto::metapb::Region> {
    let states = raftstore::load_region_states(c.kv(slot).as_ref()).expect("region states");
    let regions: BTreeMap<u64, proto::metapb::Region> = states
        .into_iter()
        .filter(|s| s.state != PeerState::Tombstone as i32)
        .filter_map(|s| s.region)
        .map(|r| (r.id, r))
        .collect();
    let mut ranges: Vec<_> = regions.values().collect();
    ranges.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    for w in ranges.windows(2) {
        assert!(
            !w[0].end_key.is_empty() && w[0].end_key <= w[1].start_key,
            "slot {slot}: regions {} and {} overlap",
            w[0].id,
            w[1].id
        );
    }
    regions
}

/// Checks the cluster after the crashes: every acknowledged write reads back, and every store
/// ends with the same regions (ids, ranges, epochs) and the same data.
fn must_converge(c: &Cluster, h: &History) {
    for (k, v) in &h.acked {
        assert_eq!(
            c.must_get(k).as_ref(),
            Some(v),
            "acknowledged write {:?} lost",
            String::from_utf8_lossy(k)
        );
    }
    let converged = c.wait_until(WAIT, |c| {
        let infos = c.region_infos();
        let mut applied: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        for (_, r) in &infos {
            applied
                .entry(r.region.id)
                .or_default()
                .insert(r.applied_index);
        }
        let all_applied = applied.values().all(|a| a.len() == 1);
        let regions: Vec<_> = (0..c.len()).map(|i| store_regions(c, i)).collect();
        let data: Vec<_> = (0..c.len()).map(|i| store_data(c, i)).collect();
        all_applied
            && regions.windows(2).all(|w| w[0] == w[1])
            && data.windows(2).all(|w| w[0] == w[1])
    });
    if !converged {
        for i in 0..c.len() {
            eprintln!("slot {i} regions: {:?}", store_regions(c, i));
            eprintln!("slot {i} data keys: {}", store_data(c, i).len());
        }
        for (i, r) in c.region_infos() {
            eprintln!(
                "slot {i} region {} applied {} leader {}",
                r.region.id, r.applied_index, r.is_leader
            );
        }
        panic!("replicas did not converge");
    }
    // A region's data lies inside its range (no half-applied split or snapshot).
    let regions = store_regions(c, 0);
    for k in store_data(c, 0).keys() {
        let ekey = codec::keys::origin_key(k);
        assert!(
            regions.values().any(|r| ekey >= r.start_key.as_slice()
                && (r.end_key.is_empty() || ekey < r.end_key.as_slice())),
            "data key {k:?} outside every region"
        );
    }
}

/// Crashes the store in `victim` at `point` while writes go through the region's leader, then
/// restarts it and writes more.
fn crash_during_writes(c: &mut Cluster, h: &mut History, point: &str, victim_is_leader: bool) {
    let round = h.acked.len() as u32;
    let (_, leader) = leader_of_key(c, &key(0));
    let victim = if victim_is_leader {
        leader
    } else {
        (leader + 1) % c.len()
    };
    let crash = Crash::arm(point, c.store_id(victim));
    let mut i = 0;
    while !crash.hit() && i < 100 {
        h.put_on(c, leader, &key(i), &value(i, round));
        i += 1;
    }
    crash.wait(c);
    if !victim_is_leader {
        // The leader and the other follower still form a quorum.
        for j in i..i + 5 {
            assert!(
                h.put_on(c, leader, &key(j), &value(j, round)),
                "write with a quorum up failed"
            );
        }
    }
    c.stop_store(victim);
    drop(crash);
    c.start_store(victim);
    for j in 0..10 {
        h.must_put(c, &key(1000 + j), &value(j, round));
    }
    must_converge(c, h);
}

fn crash_leader_then_follower(point: &str) {
    let _scenario = fail::FailScenario::setup();
    let mut c = three_stores(Cluster::start(3, seed_from_env(), fast_config()));
    let mut h = History::default();
    for i in 0..20 {
        h.must_put(&c, &key(i), &value(i, 0));
    }
    crash_during_writes(&mut c, &mut h, point, true);
    crash_during_writes(&mut c, &mut h, point, false);
    assert!(!h.acked.is_empty());
}

#[test]
fn crash_before_raft_log_write_loses_no_acknowledged_write() {
    crash_leader_then_follower("raft_log_before_write");
}

#[test]
fn crash_after_raft_log_write_loses_no_acknowledged_write() {
    crash_leader_then_follower("raft_log_after_write");
}

#[test]
fn crash_before_apply_write_loses_no_acknowledged_write() {
    crash_leader_then_follower("apply_before_write");
}

#[test]
fn crash_after_apply_write_loses_no_acknowledged_write() {
    crash_leader_then_follower("apply_after_write");
}

/// Splits the region of `at` (encoded) with the store in `victim` crashing at `point` while
/// applying the split; restarts it and checks every store ends with both halves.
fn split_with_crash(
    c: &mut Cluster,
    h: &mut History,
    point: &str,
    at: &[u8],
    victim_is_leader: bool,
) {
    let (region_id, leader) = leader_of_key(c, at);
    let victim = if victim_is_leader {
        leader
    } else {
        (leader + 1) % c.len()
    };
    let crash = Crash::arm(point, c.store_id(victim));
    let split_key = encode(at);
    c.router(leader)
        .split_region(region_id, vec![split_key.clone()]);
    crash.wait(c);
    c.stop_store(victim);
    drop(crash);
    c.start_store(victim);
    let split_everywhere = c.wait_until(WAIT, |c| {
        (0..c.len()).all(|i| {
            store_regions(c, i)
                .values()
                .any(|r| r.start_key == split_key)
        })
    });
    assert!(split_everywhere, "the split did not reach every store");
    h.must_put(c, at, b"after split");
    must_converge(c, h);
}

#[test]
fn crash_during_split_apply_leaves_no_half_split() {
    let _scenario = fail::FailScenario::setup();
    let mut c = three_stores(Cluster::start(3, seed_from_env(), fast_config()));
    let mut h = History::default();
    for i in 0..100 {
        h.must_put(&c, &key(i), &value(i, 0));
    }
    split_with_crash(&mut c, &mut h, "split_before_apply", &key(50), true);
    split_with_crash(&mut c, &mut h, "split_after_apply", &key(25), true);
    split_with_crash(&mut c, &mut h, "split_before_apply", &key(75), false);
    split_with_crash(&mut c, &mut h, "split_after_apply", &key(90), false);
}

/// A split region elects its leader without waiting out an election timeout when its followers
/// apply the split after the leader: the new leader's (pre-)vote requests, sent to stores where
/// the region does not exist yet, are kept there and stepped when the split creates the peer.
/// The election timeout here is 3 s or more; the leader must come well before that.
#[test]
fn a_split_region_elects_its_leader_when_its_followers_apply_the_split_late() {
    let _scenario = fail::FailScenario::setup();
    let mut cfg = fast_config();
    cfg.raftstore.raft_election_ticks = 60;
    cfg.raftstore.stale_peer_check_ticks = 120;
    cfg.raftstore.hibernate_idle_ticks = 60;
    let c = three_stores(Cluster::start(3, seed_from_env(), cfg));
    let mut h = History::default();
    for i in 0..20 {
        h.must_put(&c, &key(i), &value(i, 0));
    }
    let (region_id, leader) = leader_of_key(&c, &key(10));
    let followers: Vec<usize> = (0..c.len()).filter(|&i| i != leader).collect();
    let gates: Vec<Gate> = followers
        .iter()
        .map(|&f| Gate::arm("split_before_apply", c.store_id(f)))
        .collect();
    let split_key = encode(&key(10));
    c.router(leader)
        .split_region(region_id, vec![split_key.clone()]);
    for g in &gates {
        g.wait(&c);
    }
    let mut new_id = None;
    assert!(
        c.wait_until(WAIT, |c| {
            new_id = store_regions(c, leader)
                .values()
                .find(|r| r.start_key == split_key)
                .map(|r| r.id);
            new_id.is_some()
        }),
        "the leader never applied the split"
    );
    let new_id = new_id.expect("split region");
    // The leader's peer of the new region campaigned; its requests reach the followers now,
    // before their split.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        c.leader_of(new_id),
        None,
        "elected with both followers held"
    );
    let opened = std::time::Instant::now();
    drop(gates);
    assert!(
        c.wait_until(WAIT, |c| c.leader_of(new_id).is_some()),
        "the split region never elected a leader"
    );
    let took = opened.elapsed();
    assert!(
        took < Duration::from_millis(1_500),
        "the split region's leader came {took:?} after its followers applied the split \
         (the election timeout is at least 3 s)"
    );
    h.must_put(&c, &key(10), b"after split");
    must_converge(&c, &h);
}

/// Stops a follower of key 0's region while its raft log holds entries past its last
/// compaction (the snapshot it will get must replace them), writes until the leader compacted
/// its log past it, and returns (follower slot, leader slot).
fn leave_a_follower_behind(c: &mut Cluster, h: &mut History, round: u32) -> (usize, usize) {
    let (region_id, leader) = leader_of_key(c, &key(0));
    let down = (leader + 1) % c.len();
    let follower_progress = |c: &Cluster| {
        c.region_infos()
            .into_iter()
            .find(|(i, r)| *i == down && r.region.id == region_id)
            .map(|(_, r)| (r.applied_index, r.truncated_index))
            .expect("follower peer")
    };
    let mut i = 0;
    while {
        let (applied, truncated) = follower_progress(c);
        applied <= truncated
    } {
        assert!(i < 100, "the follower's log never held an entry");
        h.must_put(c, &key(i), &value(i, round));
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let (applied, _) = follower_progress(c);
    c.stop_store(down);
    for i in 0..120 {
        h.must_put(c, &key(i), &value(i, round));
    }
    assert!(
        c.wait_until(WAIT, |c| c.region_infos().into_iter().any(|(_, r)| r
            .region
            .id
            == region_id
            && r.is_leader
            && r.truncated_index > applied)),
        "the leader never compacted its log past the down store"
    );
    let (_, leader) = leader_of_key(c, &key(0));
    (down, leader)
}

fn snapshot_config() -> server::ServerConfig {
    let mut cfg = fast_config();
    cfg.raftstore.raft_log_gc_threshold_entries = 20;
    cfg
}

#[test]
fn crash_during_snapshot_apply_leaves_no_half_applied_snapshot() {
    let _scenario = fail::FailScenario::setup();
    let mut c = three_stores(Cluster::start(3, seed_from_env(), snapshot_config()));
    let mut h = History::default();
    for (round, point) in ["snapshot_before_apply", "snapshot_after_apply"]
        .into_iter()
        .enumerate()
    {
        let (down, _) = leave_a_follower_behind(&mut c, &mut h, round as u32 + 1);
        let crash = Crash::arm(point, c.store_id(down));
        c.start_store(down);
        crash.wait(&c);
        c.stop_store(down);
        drop(crash);
        c.start_store(down);
        // New entries must append right after the snapshot on the restarted store.
        for i in 0..5 {
            h.must_put(&c, &key(i), b"after restart");
        }
        must_converge(&c, &h);
    }
}

#[test]
fn failed_snapshot_sends_and_a_leader_crash_while_sending_still_deliver_the_snapshot() {
    let _scenario = fail::FailScenario::setup();
    let mut c = three_stores(Cluster::start(3, seed_from_env(), snapshot_config()));
    let mut h = History::default();
    let (down, leader) = leave_a_follower_behind(&mut c, &mut h, 1);
    // Generating fails twice and sending once (any store), then the leader crashes while
    // sending: the next leader must deliver the snapshot.
    fail::cfg("snapshot_generate", "2*return").unwrap();
    fail::cfg("snapshot_before_send", "1*return").unwrap();
    let crash = Crash::arm("snapshot_before_send", c.store_id(leader));
    c.start_store(down);
    crash.wait(&c);
    c.stop_store(leader);
    drop(crash);
    h.must_put(&c, b"after leader crash", b"x");
    c.start_store(leader);
    must_converge(&c, &h);
}

/// A leader's store builds a snapshot off its raft thread: while the build is held, the store
/// goes on serving writes, to the very region whose snapshot is being built too (with the
/// build on the raft thread, every region of the store would wait for it).
#[test]
fn a_store_serves_writes_while_it_builds_a_snapshot() {
    let _scenario = fail::FailScenario::setup();
    let mut c = three_stores(Cluster::start(3, seed_from_env(), snapshot_config()));
    let mut h = History::default();
    let (down, leader) = leave_a_follower_behind(&mut c, &mut h, 1);
    let gate = Gate::arm("snapshot_generate", c.store_id(leader));
    c.start_store(down);
    gate.wait(&c);
    let until = std::time::Instant::now() + Duration::from_secs(1);
    let mut n = 0;
    while std::time::Instant::now() < until {
        assert!(
            h.put_on(&c, leader, &key(n % 20), &value(n, 2)),
            "write {n} failed while the snapshot was being built"
        );
        n += 1;
    }
    drop(gate);
    must_converge(&c, &h);
}

/// A failpoint that holds the thread that hits it (on one store) until the gate is dropped.
struct Gate {
    name: String,
    /// (a thread is held, the gate is open)
    state: Arc<(Mutex<(bool, bool)>, Condvar)>,
}

impl Gate {
    fn arm(point: &str, store_id: u64) -> Gate {
        let name = format!("{point}@{store_id}");
        let state = Arc::new((Mutex::new((false, false)), Condvar::new()));
        let s = state.clone();
        fail::cfg_callback(name.clone(), move || {
            let (lock, cv) = &*s;
            let mut g = lock.lock().expect("gate");
            g.0 = true;
            while !g.1 {
                g = cv.wait(g).expect("gate");
            }
        })
        .expect("configure failpoint");
        Gate { name, state }
    }

    fn wait(&self, c: &Cluster) {
        let held = || self.state.0.lock().expect("gate").0;
        assert!(
            c.wait_until(WAIT, |_| held()),
            "failpoint {} was never hit",
            self.name
        );
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let (lock, cv) = &*self.state;
        lock.lock().expect("gate").1 = true;
        cv.notify_all();
        fail::remove(&self.name);
    }
}

/// Tries to put `capacity + 1` proposals into the mailbox of `router`'s store; returns whether
/// one was refused as `ServerIsBusy`. `answered` counts the proposals whose callback ran.
fn fill_mailbox(
    router: &raftstore::RaftRouter,
    region_id: u64,
    capacity: usize,
    answered: &Arc<AtomicUsize>,
) -> (usize, bool) {
    let busy = Arc::new(AtomicBool::new(false));
    for _ in 0..=capacity {
        let header = raftstore::RequestHeader {
            region_id,
            region_epoch: None,
            peer: None,
            term: None,
        };
        let (answered, busy) = (answered.clone(), busy.clone());
        router.propose_write(
            header,
            vec![],
            Box::new(move |r| {
                if let Err(raftstore::RegionError::ServerIsBusy(_)) = r {
                    busy.store(true, Ordering::SeqCst);
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }),
        );
    }
    (capacity + 1, busy.load(Ordering::SeqCst))
}

/// The wait-for cycle the control channel breaks: a follower's apply thread is writing a
/// snapshot, its poller waits on the full apply queue, and its mailbox is full. The apply
/// thread's report that the snapshot is written must still reach the poller (not be dropped
/// with the mailbox's load, nor wait for room in it), or the region stays parked forever.
#[test]
fn a_snapshot_written_while_the_mailbox_is_full_is_still_reported_to_the_poller() {
    let _scenario = fail::FailScenario::setup();
    let mut cfg = snapshot_config();
    let mailbox_capacity = 16;
    cfg.raftstore.mailbox_capacity_max = mailbox_capacity;
    // A poller whose apply thread is busy blocks on its second apply task.
    cfg.raftstore.apply_queue_capacity_max = 1;
    let mut c = three_stores(Cluster::start(3, seed_from_env(), cfg));
    let mut h = History::default();
    // A second region beside key 0's, to commit entries on the follower while its apply
    // thread is held. An operator's split is best effort: asked again until it is applied.
    let split_key = encode(b"m");
    let split = c.wait_until(WAIT, |c| {
        if let Some(r) = c.region_of(&split_key) {
            if let Some(leader) = c.leader_of(r.id) {
                c.router(leader).split_region(r.id, vec![split_key.clone()]);
            }
        }
        (0..c.len()).all(|i| {
            store_regions(c, i)
                .values()
                .any(|r| r.start_key == split_key)
        })
    });
    assert!(split, "the split did not reach every store");
    let (down, _) = leave_a_follower_behind(&mut c, &mut h, 1);
    let (region_id, _) = leader_of_key(&c, &key(0));
    let snapshot = Gate::arm("snapshot_before_apply", c.store_id(down));
    c.start_store(down);
    snapshot.wait(&c);
    // Writes to the other region commit on the follower: its poller hands them to the held
    // apply thread and blocks on the second; then its mailbox fills.
    let router = c.router(down);
    let answered = Arc::new(AtomicUsize::new(0));
    let mut proposed = 0;
    let mut i = 0;
    let blocked_and_full = c.wait_until(WAIT, |c| {
        h.must_put(
            c,
            format!("n{i:03}").as_bytes(),
            b"while the snapshot is held",
        );
        i += 1;
        let (n, busy) = fill_mailbox(&router, region_id, mailbox_capacity, &answered);
        proposed += n;
        if !busy {
            return false;
        }
        // Refused because the poller is stuck, not because it was slow for a moment.
        let rounds = router.poller_stats().rounds;
        std::thread::sleep(Duration::from_millis(300));
        router.poller_stats().rounds == rounds
    });
    assert!(
        blocked_and_full,
        "the follower's poller never blocked with a full mailbox"
    );
    // The apply thread writes the snapshot and reports it while the mailbox is full.
    drop(snapshot);
    must_converge(&c, &h);
    assert!(
        c.wait_until(WAIT, |_| answered.load(Ordering::SeqCst) == proposed),
        "{} of {proposed} proposals never answered",
        proposed - answered.load(Ordering::SeqCst)
    );
}

/// Starts a cluster whose raft logs are on the fault file system.
fn three_stores_with_faults() -> Cluster {
    three_stores(Cluster::start_with_faults(
        3,
        seed_from_env(),
        fast_config(),
    ))
}

/// A write whose raft-log I/O fails on the leader is never acknowledged; the leader stops
/// (fail-stop), and after a restart the cluster holds every acknowledged write.
fn io_error_on_leader(op: FsOp, times: u32) {
    let _scenario = fail::FailScenario::setup();
    let mut c = three_stores_with_faults();
    let mut h = History::default();
    for i in 0..20 {
        h.must_put(&c, &key(i), &value(i, 0));
    }
    let (_, leader) = leader_of_key(&c, &key(0));
    c.faults(leader)
        .fail_next(op, times, std::io::ErrorKind::Other);
    let acked = h.put_on(&c, leader, &key(5), b"during the I/O error");
    assert!(
        !acked,
        "a write was acknowledged although its raft-log {op:?} failed"
    );
    assert!(
        c.faults(leader).injected(op) > 0,
        "no {op:?} error was injected"
    );
    // The leader stopped: it acknowledges nothing more.
    assert!(!h.put_on(&c, leader, &key(6), b"after the I/O error"));
    c.faults(leader).clear_faults();
    c.stop_store(leader);
    c.start_store(leader);
    for i in 20..30 {
        h.must_put(&c, &key(i), &value(i, 1));
    }
    must_converge(&c, &h);
}

#[test]
fn raft_log_write_error_is_never_acknowledged() {
    io_error_on_leader(FsOp::Write, u32::MAX);
}

#[test]
fn raft_log_sync_error_is_never_acknowledged() {
    io_error_on_leader(FsOp::Sync, 1);
}

#[test]
fn whole_cluster_power_loss_keeps_every_acknowledged_write() {
    let _scenario = fail::FailScenario::setup();
    let mut c = three_stores_with_faults();
    let mut h = History::default();
    for i in 0..50 {
        h.must_put(&c, &key(i), &value(i, 0));
    }
    let (_, leader) = leader_of_key(&c, &key(0));
    // A write reaches the page cache of the leader (and maybe the followers), never the disk.
    for i in 0..c.len() {
        c.faults(i).hold_syncs();
    }
    let pending = c
        .put_async(leader, &key(7), b"never synced")
        .expect("propose");
    assert!(
        c.faults(leader).wait_for_held_sync(WAIT),
        "the leader never synced"
    );
    assert!(c.faults(leader).unsynced_bytes() > 0);
    let mut dropped = 0;
    for i in 0..c.len() {
        dropped += c.power_loss(i).dropped_bytes;
    }
    assert!(dropped > 0, "the power loss dropped nothing");
    assert!(
        c.wait_answer(pending).is_err(),
        "a write was acknowledged before it was synced"
    );
    h.unknown.insert(key(7));
    h.acked.remove(&key(7));
    for i in 0..c.len() {
        c.start_store(i);
    }
    h.must_put(&c, b"after power loss", b"x");
    must_converge(&c, &h);
}

#[test]
fn follower_power_loss_drops_its_unsynced_tail_and_it_catches_up() {
    let _scenario = fail::FailScenario::setup();
    let mut c = three_stores_with_faults();
    let mut h = History::default();
    for i in 0..20 {
        h.must_put(&c, &key(i), &value(i, 0));
    }
    let (_, leader) = leader_of_key(&c, &key(0));
    let follower = (leader + 1) % c.len();
    c.faults(follower).hold_syncs();
    // The leader and the other follower acknowledge these; the follower never syncs them.
    for i in 20..40 {
        assert!(h.put_on(&c, leader, &key(i), &value(i, 0)));
    }
    assert!(c.faults(follower).wait_for_held_sync(WAIT));
    let report = c.power_loss(follower);
    assert!(report.dropped_bytes > 0, "{report:?}");
    for i in 40..50 {
        h.must_put(&c, &key(i), &value(i, 0));
    }
    c.start_store(follower);
    must_converge(&c, &h);
}

/// A leader whose raft work stops (its poller paused, as a paused process would be) while its
/// gRPC threads go on: once the others have elected a new leader and written, the old one must
/// not serve the old value from its lease. (With the lease check removed from
/// `raftstore::lease::local_read`, this test fails: the old leader answers the old value.)
#[test]
fn a_paused_leader_serves_no_read_after_a_new_leader_writes() {
    let _scenario = fail::FailScenario::setup();
    let c = three_stores(Cluster::start(3, seed_from_env(), fast_config()));
    c.must_put(b"k", b"old");
    let (region, old) = leader_of_key(&c, b"k");
    // A read through the leader's lease: the read path under test.
    assert!(c.wait_until(WAIT, |c| c
        .get_on(old, b"k")
        .is_ok_and(|v| v.as_deref() == Some(b"old"))));
    let point = format!("poller_before_tick@{}", c.store_id(old));
    fail::cfg(&point, "pause").expect("configure failpoint");
    let new = c
        .wait_new_leader(region, old, WAIT)
        .unwrap_or_else(|| panic!("no new leader while {old} is paused"));
    assert!(
        c.wait_until(WAIT, |c| c.put_on(new, b"k", b"new").is_ok()),
        "the new leader never took a write"
    );
    // The paused leader's poller cannot answer; its lease has run out, so nothing may come
    // back with the old value. Ask from another thread: a read the poller holds waits.
    let (tx, rx) = std::sync::mpsc::channel();
    let header = raftstore::RequestHeader {
        region_id: region,
        region_epoch: c.region_of(&encode(b"k")).and_then(|r| r.region_epoch),
        peer: None,
        term: None,
    };
    let kv_key = codec::keys::data_key(&encode(b"k"));
    c.router(old).read(
        header,
        Box::new(move |r| {
            let v = r.map(|resp| resp.snapshot.get_cf(engine::CF_DEFAULT, &kv_key).unwrap());
            let _ = tx.send(v);
        }),
    );
    if let Ok(Ok(v)) = rx.recv_timeout(Duration::from_secs(2)) {
        panic!("the paused old leader served {v:?}");
    }
    fail::remove(&point);
    // Once running again it steps down; the read it held fails or sees the new value.
    if let Ok(Ok(v)) = rx.recv_timeout(Duration::from_secs(10)) {
        assert_eq!(v.as_deref(), Some(&b"new"[..]));
    }
    assert!(c.wait_until(WAIT, |c| c.must_get(b"k").as_deref() == Some(b"new")));
}
