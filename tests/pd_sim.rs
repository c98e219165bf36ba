//! `flotilla pd-sim` end to end: it starts its own PD, creates the regions through
//! AskBatchSplit and ReportBatchSplit, heartbeats them, reports, and leaves nothing running.

use std::process::Command;

use serde_json::Value;

#[test]
fn pd_sim_creates_the_regions_and_pd_handles_their_heartbeats() {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["pd-sim", "--stores", "3", "--regions", "200"])
        .args([
            "--heartbeat-interval-secs",
            "1",
            "--duration-secs",
            "3",
            "--json",
        ])
        .output()
        .expect("run flotilla pd-sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pd-sim failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    let num = |k: &str| {
        report[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} in {report}"))
    };
    assert_eq!(num("pd_regions"), 200.0, "{report}");
    assert_eq!(num("regions"), 200.0);
    // 200 regions once a second for 3 s: about 600 heartbeats, every one handled.
    let sent = num("heartbeats_sent");
    assert!((400.0..=800.0).contains(&sent), "{report}");
    assert!(num("heartbeats_handled") >= sent - 10.0, "{report}");
    assert!(num("heartbeat_backlog") <= 10.0, "{report}");
    assert!(
        num("pd_cpu_cores") > 0.0 && num("pd_rss_bytes") > 0.0,
        "{report}"
    );
    assert!(report["handle_p99_us"].as_f64().is_some(), "{report}");
    // The PD it started is gone.
    let pid = num("pd_pid") as u32;
    let alive =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
    assert!(!alive, "PD (pid {pid}) still runs");
}
