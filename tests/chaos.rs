//! The short fault campaigns of the test suite: `flotilla chaos` runs each workload for two
//! minutes with a fixed seed against a three-member PD group and three (bank: five) store
//! processes while the nemesis injects every kind of fault, and must pass its checkers (linearizable registers, bank total
//! conserved and explained in real time, no anomaly beyond snapshot isolation), the liveness
//! bar (writes back within 10 s of every heal, p99) and see no process crash.
//!
//! The seeds replay the campaigns that found bugs: register seed 1 (the official client's
//! blind retry applied a write twice; the register workload now uses a client that never
//! re-sends a write that may have applied), bank seed 202 on five stores (a peer re-created on
//! a store took its destroyed predecessor's apply state and the store's raft poller died; the
//! 30-minute run hit it after 9 minutes, `raftstore`'s unit test pins the cause) and
//! list-append seed 303 (a follower campaigned after a snapshot with raft-rs's applied index
//! still below it, and raft-rs panicked; found by the 30-minute run). List-append seed 3030
//! (an acknowledged one-key async-commit transaction rolled back by the lock resolver) is pinned
//! by `tests/txn_client.rs` instead. Seed 303 also replays the lock resolver's runaway
//! clean-up (tikv-client 0.4's `cleanup_locks` over a wide range; docs/reliability.md).
//! List-append seed 77 with PD faults only replays the run that isolated the official client's
//! loss of acknowledged commits while PD was unreachable (fixed by running PD as a replicated
//! group, whose leader's death the client rides out); list-append seed 4471 with PD leader kills
//! and pauses replays issue 12's loss and requires every region lookup of the campaign's probe
//! to succeed. The
//! hang list-append seed 3 found (an HTTP call to a paused PD) is pinned by a unit test in
//! `ctl`. Also here: the partition endpoint the nemesis uses really cuts a store's raft
//! traffic, and a store refuses it without `fault_injection`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{http_get_json, http_post_json, ProcCluster, SMALL_REGIONS};
use serde_json::{json, Value};

/// How long each campaign injects faults.
const CAMPAIGN: &str = "2m";

fn campaign(workload: &str, seed: u64, stores: u32) -> Value {
    campaign_with(workload, seed, stores, None)
}

/// [`campaign`] with the nemesis limited to `nemesis` (comma separated fault kinds).
fn campaign_with(workload: &str, seed: u64, stores: u32, nemesis: Option<&str>) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    cmd.args(["chaos", "--workload", workload, "--duration", CAMPAIGN]);
    if let Some(n) = nemesis {
        cmd.args(["--nemesis", n]);
    }
    // The campaign's output goes straight to the test's: a run that nextest stops still shows
    // how far it got.
    let status = cmd
        .args(["--stores", &stores.to_string()])
        .args(["--seed", &seed.to_string(), "--dir"])
        .arg(dir.path())
        .status()
        .expect("run flotilla chaos");
    let run = dir.path().join(format!("{workload}-{seed}"));
    if !status.success() {
        // The findings again, as the test's last words: the campaign's own output can be long
        // enough (permitted anomalies, process lines) for a log excerpt to cut them.
        let findings = std::fs::read_to_string(run.join("verdict.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .map(|v| v["findings"].to_string())
            .unwrap_or_else(|| "no verdict.json".into());
        let kept = dir.keep();
        panic!(
            "the {workload} campaign with seed {seed} failed: {findings}; its files are in {}",
            kept.display()
        );
    }
    let verdict: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("verdict.json")).unwrap()).unwrap();
    // The recorded history passes the independent re-check too.
    let check = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["check", "--workload", workload])
        .arg(run.join("history.jsonl"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "flotilla check disagrees: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert_eq!(verdict["passed"], true, "{verdict}");
    assert!(
        verdict["faults_injected"].as_u64().unwrap() >= 5,
        "too few faults: {verdict}"
    );
    assert!(verdict["heals"].as_u64().unwrap() >= 3, "{verdict}");
    assert!(verdict["recovery_ms"]["p99"].as_u64().unwrap() < 10_000);
    verdict
}

#[test]
fn register_campaign_is_linearizable() {
    let v = campaign("register", 1, 3);
    assert!(v["ops"].as_u64().unwrap() > 1_000, "{v}");
}

#[test]
fn bank_campaign_conserves_the_total() {
    let v = campaign("bank", 202, 5);
    assert!(v["ops_known_outcome"].as_u64().unwrap() > 200, "{v}");
}

#[test]
fn list_append_campaign_is_snapshot_isolated() {
    let v = campaign("list-append", 303, 3);
    assert!(v["ops_known_outcome"].as_u64().unwrap() > 200, "{v}");
}

/// PD's leader killed again and again while transactions commit: with PD alone, tikv-client
/// 0.4 acknowledged commits it never sent whenever a region lookup failed (its request
/// sharding drops the failed lookup); with a PD group the client reconnects to the new leader.
#[test]
fn list_append_campaign_survives_pd_leader_kills() {
    let v = campaign_with("list-append", 77, 3, Some("kill-pd,transfer-leader"));
    assert!(v["ops_known_outcome"].as_u64().unwrap() > 200, "{v}");
    assert!(v["faults"]["kill-pd"].as_u64().unwrap() >= 3, "{v}");
    // The client's mark of a request it dropped for want of a region lookup (with PD alone this
    // seed panics it; see docs/reliability.md).
    assert_eq!(v["client_panics"], 0, "{v}");
}

/// Issue 12's seed: PD's leader killed and paused while leaders move and regions split. On
/// 3a7e5f8 it lost an acknowledged append (a commit whose region lookup failed 72 ms after a
/// leader kill was dropped by the client); now the client's lookups must never fail, as the
/// campaign's lookup probe sees them through every PD leader change.
#[test]
fn list_append_campaign_loses_no_lookup_through_pd_leader_changes() {
    let v = campaign_with(
        "list-append",
        4471,
        3,
        Some("kill-pd,pause,transfer-leader,split"),
    );
    assert!(v["ops_known_outcome"].as_u64().unwrap() > 200, "{v}");
    let pd = &v["pd_lookups"];
    assert!(
        pd["leader_changes"].as_array().unwrap().len() >= 2,
        "too few PD leader changes: {v}"
    );
    assert!(pd["rounds"].as_u64().unwrap() > 100, "{v}");
    assert_eq!(pd["lookup_failed"], 0, "{v}");
}

/// Leaders PD sees on `store_id`.
async fn leaders_on(c: &ProcCluster, store_id: u64) -> usize {
    let v = c.regions().await.unwrap_or(Value::Null);
    v["regions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["leader"]["store_id"].as_u64() == Some(store_id))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_endpoint_cuts_raft_traffic_and_needs_fault_injection() {
    let cfg = format!("fault_injection = true\n{SMALL_REGIONS}");
    let c = ProcCluster::start(3, &cfg);
    assert!(c.wait_regions(5, 3, Duration::from_secs(90)).await);
    let status = c.store_status_addr(0);
    let id = http_get_json(&status, "/status").await.unwrap()["store_id"]
        .as_u64()
        .unwrap();
    let mut others = vec![];
    for i in 1..3 {
        let v = http_get_json(&c.store_status_addr(i), "/status")
            .await
            .unwrap();
        others.push(v["store_id"].as_u64().unwrap());
    }
    // Give store 0 every leader it can get, then cut it off: its leaders must move away
    // (check-quorum), which they can only do if its raft traffic is really cut.
    let v = c.regions().await.unwrap();
    for r in v["regions"].as_array().unwrap() {
        let body = json!({"name": "transfer-leader", "region_id": r["id"], "to_store_id": id});
        let _ = http_post_json(&c.pd_addr, "/pd/api/v1/operators", &body).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while leaders_on(&c, id).await == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(leaders_on(&c, id).await > 0, "store 0 never led a region");
    let (code, body) = http_post_json(
        &status,
        "/debug/fault/partition",
        &json!({"blocked_stores": others}),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    for (i, other) in [(1, id), (2, id)] {
        http_post_json(
            &c.store_status_addr(i),
            "/debug/fault/partition",
            &json!({"blocked_stores": [other]}),
        )
        .await
        .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while leaders_on(&c, id).await > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        leaders_on(&c, id).await,
        0,
        "a partitioned store kept leading"
    );
    for i in 0..3 {
        let (code, _) = http_post_json(
            &c.store_status_addr(i),
            "/debug/fault/partition",
            &json!({"blocked_stores": []}),
        )
        .await
        .unwrap();
        assert_eq!(code, 200);
    }
    // The lease clock's offset (the clock-skew nemesis): set, read back, bounded, healed.
    let (code, body) = http_post_json(&status, "/debug/fault/clock", &json!({"offset_ms": -80}))
        .await
        .unwrap();
    assert_eq!(
        (code, body["offset_ms"].as_i64()),
        (200, Some(-80)),
        "{body}"
    );
    let v = http_get_json(&status, "/debug/fault/clock").await.unwrap();
    assert_eq!(v["offset_ms"], -80);
    let (code, _) = http_post_json(
        &status,
        "/debug/fault/clock",
        &json!({"offset_ms": 10_000_000_000i64}),
    )
    .await
    .unwrap();
    assert_eq!(code, 400);
    assert_eq!(
        http_get_json(&status, "/debug/fault/clock").await.unwrap()["offset_ms"],
        -80,
        "a refused offset changed the clock"
    );
    let (code, _) = http_post_json(&status, "/debug/fault/clock", &json!({"offset_ms": 0}))
        .await
        .unwrap();
    assert_eq!(code, 200);
    drop(c);

    // Without fault injection the endpoint is refused and nothing is cut.
    let c = ProcCluster::start(1, SMALL_REGIONS);
    assert!(c.wait_stores_listening(Duration::from_secs(30)).await);
    let status = c.store_status_addr(0);
    let mut refused = None;
    for _ in 0..50 {
        refused = http_post_json(
            &status,
            "/debug/fault/partition",
            &json!({"blocked_stores": [7]}),
        )
        .await;
        if refused.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(refused.map(|r| r.0), Some(403));
    let clock = http_post_json(&status, "/debug/fault/clock", &json!({"offset_ms": 5})).await;
    assert_eq!(clock.map(|r| r.0), Some(403));
}
