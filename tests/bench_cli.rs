//! `flotilla bench` end to end: the real binary drives a process cluster (and etcd, and the
//! disk) and its JSON lines carry every point with figures that match what happened.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{free_port, ProcCluster, SMALL_REGIONS};
use serde_json::Value;

fn bench(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run flotilla bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("bench wrote its JSON lines")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn find<'a>(rs: &'a [Value], workload: &str, clients: u64) -> &'a Value {
    rs.iter()
        .find(|r| r["workload"] == workload && r["clients"] == clients)
        .unwrap_or_else(|| panic!("no record for {workload} x{clients} in {rs:?}"))
}

/// Latencies are ordered and throughput is what the count over the window says.
fn assert_sane(r: &Value) {
    let l = &r["latency_ms"];
    let (p50, p99, max) = (
        l["p50"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
        l["max"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max * 1.001, "{r}");
    let ops = r["ops"].as_f64().unwrap();
    let rate = ops / r["elapsed_s"].as_f64().unwrap();
    assert!(
        (r["ops_per_sec"].as_f64().unwrap() - rate).abs() < 1e-6 * rate.max(1.0),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_flotilla_and_reports_every_point() {
    let c = ProcCluster::start(3, SMALL_REGIONS);
    assert!(
        c.wait_regions(1, 3, Duration::from_secs(60)).await,
        "cluster up"
    );
    let json = c.dir.path().join("results.jsonl");
    let pids: Vec<String> = std::iter::once(&c.pd)
        .chain(&c.stores)
        .map(|p| p.child.as_ref().unwrap().id().to_string())
        .collect();
    let profiles = c.dir.path().join("profiles");
    bench(&[
        "--pd",
        &c.pd_addr,
        "--workload",
        "load,load-txn,raw-put,raw-get,ycsb-a,ycsb-e,txn-rmw",
        "--keys",
        "400",
        "--concurrency",
        "1,4",
        "--duration-secs",
        "1",
        "--warmup-secs",
        "0",
        "--min-regions",
        "3",
        "--wait-secs",
        "60",
        "--server-pids",
        &pids.join(","),
        "--profile",
        profiles.to_str().unwrap(),
        "--profile-clients",
        "4",
        "--json",
        json.to_str().unwrap(),
    ]);
    let rs = records(&json);
    assert_eq!(rs.len(), 2 + 5 * 2, "{rs:?}");
    for load in ["load", "load-txn"] {
        let r = rs.iter().find(|r| r["workload"] == load).unwrap();
        assert_eq!(r["ops"], 400, "a load writes every key once: {r}");
        assert_eq!(r["errors"], 0, "{r}");
    }
    for w in ["raw-put", "raw-get", "ycsb-a", "ycsb-e", "txn-rmw"] {
        for clients in [1, 4] {
            let r = find(&rs, w, clients);
            assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(r["label"], "flotilla");
            assert!(r["server_cpu_s"].as_f64().unwrap() > 0.0, "{r}");
            assert_sane(r);
        }
    }
    // Single-client points have no one to conflict with.
    assert_eq!(find(&rs, "txn-rmw", 1)["errors"], 0);
    // The load really wrote: every key is there with a value of the default size.
    let raw = tikv_client::RawClient::new_with_config(
        vec![c.pd_addr.clone()],
        tikv_client::Config::default().with_default_keyspace(),
    )
    .await
    .unwrap();
    let pairs = raw
        .scan("bench".to_string().."benci".to_string(), 1000)
        .await
        .unwrap();
    assert_eq!(pairs.len(), 400);
    assert!(pairs.iter().all(|p| p.value().len() == 256));
    // One flamegraph per store for each profiled point (clients = 4 only).
    let svgs: Vec<_> = std::fs::read_dir(&profiles).unwrap().flatten().collect();
    assert_eq!(svgs.len(), 5 * 3, "{svgs:?}");
    for f in svgs {
        let name = f.file_name().to_string_lossy().into_owned();
        assert!(name.contains("-c4-store"), "{name}");
        let body = std::fs::read_to_string(f.path()).unwrap();
        assert!(body.contains("<svg"), "{name} is not an SVG");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_region_setting_keeps_the_data_in_one_region() {
    let cfg = format!("{SMALL_REGIONS}split_enabled = false\n");
    let c = ProcCluster::start(3, &cfg);
    assert!(
        c.wait_regions(1, 3, Duration::from_secs(60)).await,
        "cluster up"
    );
    // The keyspace boundaries are split once at bootstrap; wait for that to settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = c.regions().await.unwrap()["count"].as_u64().unwrap();
    let json = c.dir.path().join("results.jsonl");
    // Twenty times the small regions' split threshold of 100 keys.
    bench(&[
        "--pd",
        &c.pd_addr,
        "--workload",
        "load",
        "--keys",
        "2000",
        "--concurrency",
        "16",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(records(&json)[0]["ops"], 2000);
    // Several split-check rounds (every 5 ticks) and heartbeats later, nothing has split.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = c.regions().await.unwrap()["count"].as_u64().unwrap();
    assert_eq!(
        before, after,
        "a region split although split_enabled = false"
    );
}

/// `flotilla ctl presplit` makes the bench keys' regions through PD's split operators (in
/// batches, region after region), refuses a nonsense count, and the regions then serve a load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_presplit_makes_the_bench_keys_regions() {
    let c = ProcCluster::start(3, "");
    assert!(
        c.wait_regions(1, 3, Duration::from_secs(60)).await,
        "cluster up"
    );
    let ctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["ctl", "--pd", &c.pd_addr, "presplit"])
            .args(args)
            .output()
            .unwrap()
    };
    let bad = ctl(&["--regions", "1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--regions"));

    // 300 regions over 3,000 keys: more boundaries than one operator carries.
    let out = ctl(&[
        "--regions",
        "300",
        "--keys",
        "3000",
        "--timeout-secs",
        "120",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let regions = c.regions().await.unwrap();
    let starts: std::collections::HashSet<String> = regions["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["start_key"].as_str().unwrap().to_owned())
        .collect();
    for i in 1..300u64 {
        let mut raw = b"r\0\0\0".to_vec();
        raw.extend_from_slice(format!("bench{:012}", i * 10).as_bytes());
        let boundary = codec::hex::to_hex(&codec::memcomparable::encode_bytes(&raw));
        assert!(starts.contains(&boundary), "no region starts at key {i}");
    }
    bench(&[
        "--pd",
        &c.pd_addr,
        "--workload",
        "load,raw-get",
        "--keys",
        "3000",
        "--concurrency",
        "16",
        "--duration-secs",
        "2",
        "--warmup-secs",
        "0",
    ]);
}

/// Runs the disk target with `args` (no warm-up) in a fresh directory: the directory (the
/// probe file is `probe/fsync-probe.dat`) and the records.
fn disk_bench(args: &[&str]) -> (tempfile::TempDir, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.jsonl");
    let probe = dir.path().join("probe");
    let mut all = vec![
        "--target",
        "disk",
        "--fsync-dir",
        probe.to_str().unwrap(),
        "--warmup-secs",
        "0",
        "--json",
        json.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    bench(&all);
    let rs = records(&json);
    (dir, rs)
}

#[test]
fn bench_disk_probe_counts_exactly_the_operations_asked_for() {
    let (dir, rs) = disk_bench(&["--concurrency", "1", "--ops", "20", "--value-size", "100"]);
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0]["ops"], 20);
    assert_eq!(rs[0]["errors"], 0);
    assert_sane(&rs[0]);
    let written = std::fs::metadata(dir.path().join("probe/fsync-probe.dat"))
        .unwrap()
        .len();
    assert!(written >= 20 * 100, "{written} bytes appended");
}

#[test]
fn bench_refuses_bad_options_with_a_clear_message() {
    for (args, expect) in [
        (&["--concurrency", "0"][..], "--concurrency"),
        (&["--txn-keys", "0"][..], "--txn-keys"),
        (&["--target", "disk", "--workload", "raw-get"][..], "disk"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .arg("bench")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}

/// One etcd member on free loopback ports, killed when dropped.
struct Etcd {
    child: std::process::Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_etcd() -> Etcd {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("127.0.0.1:{client}");
    let child = Command::new("etcd")
        .args([
            "--name",
            "m1",
            "--data-dir",
            dir.path().join("etcd").to_str().unwrap(),
            "--listen-client-urls",
            &format!("http://{endpoint}"),
            "--advertise-client-urls",
            &format!("http://{endpoint}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("m1=http://127.0.0.1:{peer}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcd is installed (scripts/setup.sh installs etcd-server)");
    Etcd {
        child,
        endpoint,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_etcd_through_the_same_workloads() {
    let etcd = start_etcd();
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) =
            etcd_client::Client::connect([format!("http://{}", etcd.endpoint)], None).await
        {
            if c.clone().status().await.is_ok() {
                client = Some(c);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = client.expect("etcd came up");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.jsonl");
    let pid = etcd.child.id().to_string();
    bench(&[
        "--target",
        "etcd",
        "--endpoints",
        &etcd.endpoint,
        "--etcd-serializable",
        "--label",
        "etcd-1",
        "--workload",
        "load,raw-put,ycsb-b,ycsb-e,txn-rmw",
        "--keys",
        "300",
        "--concurrency",
        "1,4",
        "--duration-secs",
        "1",
        "--warmup-secs",
        "0",
        "--server-pids",
        &pid,
        "--json",
        json.to_str().unwrap(),
    ]);
    let rs = records(&json);
    assert_eq!(rs.len(), 1 + 4 * 2, "{rs:?}");
    assert_eq!(rs[0]["ops"], 300);
    for w in ["raw-put", "ycsb-b", "ycsb-e", "txn-rmw"] {
        for clients in [1, 4] {
            let r = find(&rs, w, clients);
            assert_eq!(r["label"], "etcd-1");
            assert_eq!(r["target"], "etcd");
            assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
            assert!(r["server_cpu_s"].as_f64().unwrap() > 0.0, "{r}");
            assert_sane(r);
        }
    }
    assert_eq!(find(&rs, "txn-rmw", 1)["errors"], 0);
    let opts = etcd_client::GetOptions::new()
        .with_prefix()
        .with_count_only();
    let n = client.get("bench", Some(opts)).await.unwrap().count();
    assert_eq!(n, 300);
}

#[test]
fn bench_rate_limit_caps_the_operations() {
    // 100 ops/s over 2 clients for 2 s: at most 200 scheduled operations (plus one in flight
    // per client); the disk alone would do thousands.
    let (_dir, rs) = disk_bench(&[
        "--concurrency",
        "2",
        "--rate",
        "100",
        "--duration-secs",
        "2",
    ]);
    let ops = rs[0]["ops"].as_u64().unwrap();
    assert!(
        (40..=202).contains(&ops),
        "{ops} operations at 100/s over 2 s"
    );
}
