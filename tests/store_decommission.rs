//! Decommissioning through `flotilla ctl` against real processes: `ctl store delete` refuses to
//! leave fewer Up stores than `max_replicas` and names an unknown store; a fourth store that
//! holds no region is deleted, PD makes it a Tombstone, `ctl stores` shows it so, the store
//! process stops with a clear message, and started again on its data dir it is refused.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get_json, ProcCluster};

/// Stores heartbeat PD often, so a tombstoned store hears of it quickly.
const FAST_HEARTBEATS: &str = "[pd_worker]\nstore_heartbeat_interval_ms = 200\n";

fn ctl(pd: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["ctl", "--pd", pd])
        .args(args)
        .output()
        .expect("run flotilla ctl")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Starts a store process on `data_dir` with its log in `log`.
fn spawn_store(pd: &str, data_dir: &Path, addr: &str, cfg: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["server", "--data-dir"])
        .arg(data_dir)
        .args(["--addr", addr, "--status-addr"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(["--pd", pd, "--config"])
        .arg(cfg)
        .env("RUST_LOG", "info,raft=warn")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn flotilla server")
}

/// Waits up to `bound` for `child` to exit; its status, or `None` (then it is killed).
fn wait_exit(child: &mut Child, bound: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// PD's record of the store at `addr`: its id and state.
async fn store_at(pd: &str, addr: &str) -> Option<(u64, String)> {
    let v = http_get_json(pd, "/pd/api/v1/stores").await?;
    let s = v["stores"]
        .as_array()?
        .iter()
        .find(|s| s["store"]["address"] == addr)?
        .clone();
    let state = s["store"]["state"].as_str()?.to_owned();
    Some((s["store"]["id"].as_u64()?, state))
}

#[tokio::test(flavor = "multi_thread")]
async fn ctl_decommissions_an_empty_store_which_then_stops_and_is_refused() {
    let c = ProcCluster::start(3, FAST_HEARTBEATS);
    assert!(
        c.wait_regions(1, 3, Duration::from_secs(60)).await,
        "the cluster did not form"
    );
    let pd = c.pd_addr.clone();

    let out = ctl(&pd, &["stores"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        listed.lines().filter(|l| l.contains(" Up ")).count(),
        3,
        "{listed}"
    );

    // Three Up stores for three replicas: none may go.
    let first: u64 = listed
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let out = ctl(&pd, &["store", "delete", &first.to_string()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("max_replicas"), "{}", text(&out));
    let out = ctl(&pd, &["store", "delete", "999999"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("404"), "{}", text(&out));

    // A fourth store joins; PD has no replica to give it while the others hold three each.
    let dir = c.dir.path();
    let cfg = dir.join("fast.toml");
    std::fs::write(&cfg, FAST_HEARTBEATS).unwrap();
    let (data, log) = (dir.join("store-extra"), dir.join("store-extra.log"));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut extra = spawn_store(&pd, &data, &addr, &cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        if let Some((id, _)) = store_at(&pd, &addr).await {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "the fourth store never registered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let out = ctl(&pd, &["store", "delete", &id.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, state) = store_at(&pd, &addr).await.expect("PD lists the store");
        if state == "Tombstone" {
            break;
        }
        assert_eq!(state, "Offline");
        assert!(
            Instant::now() < deadline,
            "store {id} never became Tombstone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = ctl(&pd, &["stores"]);
    let row = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(row.contains("Tombstone"), "{}", text(&out));

    // The store hears it on its next heartbeat and stops, saying why.
    let status = wait_exit(&mut extra, Duration::from_secs(30));
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.is_some_and(|s| !s.success()), "{status:?}\n{said}");
    assert!(said.contains("removed from the cluster"), "{said}");

    // Started again on its data dir, it is refused at registration.
    std::fs::write(&log, "").unwrap();
    let mut again = spawn_store(&pd, &data, &addr, &cfg, &log);
    let status = wait_exit(&mut again, Duration::from_secs(30));
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.is_some_and(|s| !s.success()), "{status:?}\n{said}");
    assert!(said.contains("removed from the cluster"), "{said}");
}
