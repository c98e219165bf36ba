//! End to end, real `flotilla` processes and `tikv-client` 0.4: what a store does with a
//! damaged raft log and with a full disk.
//!
//! - A torn or corrupted tail of the newest raft-engine file is cut at restart; the store
//!   catches up from its peers and ends with the same data as they have.
//! - Damage in the middle of an older file refuses the start (non-zero exit, the damage named in
//!   the log); the other two stores keep serving.
//! - Below the disk reserve, writes fail with the `DiskFull` region error, reads and deletes go
//!   on, no process exits; once space returns writes succeed again without a restart.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{http_get_json, http_get_text, ProcCluster};
use engine::{KvEngine, RocksConfig, RocksEngine, DATA_CFS};
use tikv_client::{Error, RawClient};

fn key(i: u32) -> String {
    format!("disk{i:06}")
}

/// A value that can be found in the raft log files (compression is off in these tests).
fn value(i: u32) -> Vec<u8> {
    let mut v = format!("@@mark{i:06}@@").into_bytes();
    v.resize(1_000, b'.');
    v
}

/// Writes keys `range` in batches of 10, retrying each batch for up to 30 s (leaders move
/// while stores die and come back). Returns once every batch is acknowledged.
async fn must_put_range(c: &ProcCluster, raw: &RawClient, range: std::ops::Range<u32>) {
    let keys: Vec<u32> = range.collect();
    for chunk in keys.chunks(10) {
        let pairs: Vec<(String, Vec<u8>)> = chunk.iter().map(|i| (key(*i), value(*i))).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match raw.batch_put(pairs.clone()).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("retrying batch put: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => {
                    c.dump_logs();
                    panic!("batch put failed: {e}");
                }
            }
        }
    }
}

/// Every key of `range` reads back its value.
async fn must_read_range(c: &ProcCluster, raw: &RawClient, range: std::ops::Range<u32>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let pairs = loop {
        match raw.scan(key(range.start)..key(range.end), 10_000).await {
            Ok(p) => break p,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying scan: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => {
                c.dump_logs();
                panic!("scan failed: {e}");
            }
        }
    };
    let got: BTreeMap<Vec<u8>, Vec<u8>> = pairs
        .into_iter()
        .map(|p| (Vec::<u8>::from(p.key().clone()), p.value().clone()))
        .collect();
    for i in range {
        assert_eq!(
            got.get(key(i).as_bytes()),
            Some(&value(i)),
            "acknowledged write {} is lost",
            key(i)
        );
    }
}

fn raft_log_files(raft_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(raft_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".raftlog"))
        .collect();
    files.sort();
    files
}

fn store_running(c: &mut ProcCluster, i: usize) -> bool {
    match c.stores[i].child.as_mut() {
        Some(child) => child.try_wait().unwrap().is_none(),
        None => false,
    }
}

/// Per store, region id -> applied index, from `/status`.
async fn applied_indexes(c: &ProcCluster) -> Vec<BTreeMap<u64, u64>> {
    let mut out = vec![];
    for i in 0..c.stores.len() {
        let status = http_get_json(&c.store_status_addr(i), "/status")
            .await
            .unwrap_or_default();
        let regions = status["regions"].as_array().cloned().unwrap_or_default();
        out.push(
            regions
                .iter()
                .map(|r| {
                    (
                        r["id"].as_u64().unwrap_or(0),
                        r["applied_index"].as_u64().unwrap_or(0),
                    )
                })
                .collect(),
        );
    }
    out
}

/// A store that follows (does not lead) the region with the highest applied index.
async fn follower_of_busiest_region(c: &ProcCluster) -> usize {
    let mut best: Option<(u64, usize)> = None;
    for i in 0..c.stores.len() {
        let status = http_get_json(&c.store_status_addr(i), "/status")
            .await
            .expect("store status");
        for r in status["regions"].as_array().cloned().unwrap_or_default() {
            let applied = r["applied_index"].as_u64().unwrap_or(0);
            if r["is_leader"] == false && best.is_none_or(|(a, _)| applied > a) {
                best = Some((applied, i));
            }
        }
    }
    best.expect("a follower").1
}

/// Every data key and value of a stopped store's engine, by column family.
fn engine_data(store_dir: &Path) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let kv = RocksEngine::open(store_dir.join("db"), &RocksConfig::default()).unwrap();
    let snap = kv.snapshot();
    let mut out = vec![];
    for cf in DATA_CFS {
        snap.scan_cf(
            cf,
            codec::keys::DATA_MIN_KEY,
            Some(codec::keys::DATA_MAX_KEY),
            false,
            &mut |k, v| {
                out.push((cf.to_string(), k.to_vec(), v.to_vec()));
                Ok(true)
            },
        )
        .unwrap();
    }
    out
}

/// Raft log settings that keep the values findable in the files.
const NO_COMPRESSION: &str = r#"
[raftstore]
split_enabled = false

[raft_log]
batch_compression_threshold_bytes = 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_raft_log_tail_is_cut_and_the_store_catches_up_from_its_peers() {
    let mut c = ProcCluster::start(3, NO_COMPRESSION);
    if !c.wait_regions(5, 3, Duration::from_secs(90)).await {
        c.dump_logs();
        panic!("the cluster never reached 5 regions with 3 voters each");
    }
    let raw = c.raw_client().await;
    must_put_range(&c, &raw, 0..200).await;
    // The victim follows the region that took the writes: its leader keeps counting the
    // entries the victim acknowledged and then loses.
    let v = follower_of_busiest_region(&c).await;

    // Crash the victim and damage the end of its newest log file: cut it inside the last batch
    // and garble the 30 KB before the cut (raft-engine preallocates zeros past the data).
    // That loses the last few writes' entries, which store 2 had acknowledged and applied.
    c.kill_store(v);
    let newest = raft_log_files(&c.store_dir(v).join("raft")).pop().unwrap();
    let bytes = std::fs::read(&newest).unwrap();
    let data_len = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    let cut = data_len - 7;
    let mut damaged = bytes[..cut].to_vec();
    for b in &mut damaged[cut - 30_000..] {
        *b ^= 0xA5;
    }
    std::fs::write(&newest, &damaged).unwrap();

    // Writes go on without it, then it comes back.
    must_put_range(&c, &raw, 200..300).await;
    c.start_store(v);
    if !c.wait_stores_listening(Duration::from_secs(60)).await {
        c.dump_logs();
        panic!("the store with a cut log tail did not start");
    }
    must_put_range(&c, &raw, 300..350).await;
    must_read_range(&c, &raw, 0..350).await;
    assert!(store_running(&mut c, v), "the repaired store exited");
    let log = std::fs::read_to_string(c.dir.path().join(format!("store{v}.log"))).unwrap();
    assert!(
        log.contains("Truncating log file"),
        "raft-engine did not report cutting the damaged tail"
    );
    eprintln!(
        "lost applied entries: {}, asked a leader for a snapshot: {}",
        log.contains("raft log ends before the applied index"),
        log.contains("asking for a snapshot")
    );

    // Converged: every store holds every region at the same applied index...
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let applied = applied_indexes(&c).await;
        let converged = applied[0].len() >= 5 && applied.iter().all(|a| *a == applied[0]);
        if converged {
            break;
        }
        if Instant::now() > deadline {
            c.dump_logs();
            panic!("stores never converged: {applied:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // ... and with the same data.
    for i in 0..3 {
        c.kill_store(i);
    }
    let repaired = engine_data(&c.store_dir(v));
    assert!(repaired.len() >= 350, "{} data keys", repaired.len());
    for i in (0..3).filter(|i| *i != v) {
        assert!(
            engine_data(&c.store_dir(i)) == repaired,
            "store {i} and the repaired store {v} hold different data"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_an_older_raft_log_file_refuses_the_start_and_the_cluster_serves_on() {
    // Small files so that there are older ones; no log GC so that every entry stays live.
    let cfg = r#"
[raftstore]
split_enabled = false
raft_log_gc_threshold_entries = 1000000

[raft_log]
target_file_size_bytes = 65536
batch_compression_threshold_bytes = 0
"#;
    let mut c = ProcCluster::start(3, cfg);
    if !c.wait_regions(5, 3, Duration::from_secs(90)).await {
        c.dump_logs();
        panic!("the cluster never reached 5 regions with 3 voters each");
    }
    let raw = c.raw_client().await;
    must_put_range(&c, &raw, 0..300).await;

    // Crash store 2 and garble a value inside the oldest file that holds one.
    c.kill_store(2);
    let files = raft_log_files(&c.store_dir(2).join("raft"));
    assert!(files.len() >= 3, "expected several log files: {files:?}");
    let (victim, at) = files[..files.len() - 1]
        .iter()
        .find_map(|f| {
            let bytes = std::fs::read(f).unwrap();
            let at = bytes.windows(6).position(|w| w == b"@@mark")?;
            Some((f.clone(), at))
        })
        .expect("a value in an older file");
    let mut bytes = std::fs::read(&victim).unwrap();
    for b in &mut bytes[at + 20..at + 28] {
        *b ^= 0xFF;
    }
    std::fs::write(&victim, &bytes).unwrap();

    // It refuses to start, and says why.
    c.start_store(2);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = c.stores[2].child.as_mut().unwrap().try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            c.dump_logs();
            panic!("the store with a damaged log did not refuse to start");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!status.success(), "exit status {status}");
    let log = std::fs::read_to_string(c.dir.path().join("store2.log")).unwrap();
    assert!(
        log.contains("refusing to open the raft log") && log.contains("damaged"),
        "the log does not name the damage:\n{log}"
    );

    // The two other stores hold a quorum of every region and keep serving.
    must_put_range(&c, &raw, 300..350).await;
    must_read_range(&c, &raw, 0..350).await;
}

fn is_disk_full(e: &Error) -> bool {
    match e {
        Error::RegionError(r) => r.disk_full.is_some(),
        Error::ExtractedErrors(es) | Error::MultipleKeyErrors(es) => es.iter().any(is_disk_full),
        Error::UndeterminedError(e) => is_disk_full(e),
        _ => false,
    }
}

/// The `flotilla_store_disk_full` gauge of store `i`.
async fn disk_full_gauge(c: &ProcCluster, i: usize) -> Option<i64> {
    let (_, text) = http_get_text(&c.store_status_addr(i), "/metrics").await?;
    text.lines()
        .find_map(|l| l.strip_prefix("flotilla_store_disk_full "))
        .and_then(|v| v.trim().parse().ok())
}

async fn wait_disk_full_gauge(c: &ProcCluster, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..3 {
        while disk_full_gauge(c, i).await != Some(want) {
            if Instant::now() > deadline {
                c.dump_logs();
                panic!("store {i}: disk_full gauge never became {want}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_disk_full_and_recovers_by_itself() {
    // Each store may use 256 MiB and keeps 64 MiB in reserve.
    let cfg = r#"
[raftstore]
split_enabled = false

[storage]
capacity_bytes = 268435456
reserve_space_bytes = 67108864
disk_check_interval_ms = 200
"#;
    let mut c = ProcCluster::start(3, cfg);
    if !c.wait_regions(5, 3, Duration::from_secs(90)).await {
        c.dump_logs();
        panic!("the cluster never reached 5 regions with 3 voters each");
    }
    let raw = c.raw_client().await;
    must_put_range(&c, &raw, 0..20).await;
    wait_disk_full_gauge(&c, 0).await;

    // A ballast file fills every store's allowance past the reserve (sparse: it costs no
    // real disk, but counts in the data dir's size).
    let ballasts: Vec<PathBuf> = (0..3).map(|i| c.store_dir(i).join("ballast")).collect();
    for b in &ballasts {
        std::fs::File::create(b)
            .unwrap()
            .set_len(224 << 20)
            .unwrap();
    }
    wait_disk_full_gauge(&c, 1).await;

    // Writes fail, promptly, with the typed error.
    let started = Instant::now();
    let err = raw
        .put(key(100), value(100))
        .await
        .expect_err("a write was accepted on a full disk");
    eprintln!("refused after {:?}: {err:?}", started.elapsed());
    assert!(is_disk_full(&err), "not a DiskFull error: {err:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let err = raw
        .batch_put(vec![(key(101), value(101)), (key(102), value(102))])
        .await
        .expect_err("a batch write was accepted on a full disk");
    assert!(is_disk_full(&err), "not a DiskFull error: {err:?}");

    // Reads go on, and so do deletes (they are what frees space).
    must_read_range(&c, &raw, 0..20).await;
    raw.delete(key(0)).await.expect("a delete on a full disk");
    assert_eq!(raw.get(key(0)).await.unwrap(), None);
    assert_eq!(
        raw.get(key(100)).await.unwrap(),
        None,
        "refused write is visible"
    );
    for i in 0..3 {
        assert!(store_running(&mut c, i), "store {i} exited on a full disk");
    }

    // Space returns: writes succeed again, without a restart.
    for b in &ballasts {
        std::fs::remove_file(b).unwrap();
    }
    let freed = Instant::now();
    loop {
        match raw.put(key(100), value(100)).await {
            Ok(()) => break,
            Err(e) if freed.elapsed() < Duration::from_secs(10) => {
                assert!(is_disk_full(&e), "unexpected error: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("writes did not resume after space returned: {e:?}"),
        }
    }
    eprintln!("writes resumed {:?} after space returned", freed.elapsed());
    wait_disk_full_gauge(&c, 0).await;
    must_read_range(&c, &raw, 1..20).await;
    assert_eq!(raw.get(key(100)).await.unwrap(), Some(value(100)));
    for i in 0..3 {
        assert!(store_running(&mut c, i), "store {i} exited");
    }
}
