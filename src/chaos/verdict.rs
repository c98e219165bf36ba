//! A campaign's verdict, for people and as `verdict.json`: the checker's finding, liveness
//! (probe and clients' view of recovery after each heal), the faults, crashes, and PD's
//! region lookups ([`super::lookups`]). [`human`] is how every duration reads.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use super::lookups::LookupVerdict;
use super::nemesis::NemesisReport;
use super::{txn, ChaosArgs, Checked, Workload};

/// The liveness bar: after a heal, writes are back within this (p99).
const RECOVERY_P99_MAX: Duration = Duration::from_secs(10);

/// A duration as people read it: `0`, `420 µs`, `4.2 ms`, `16 ms`, `1.10 s`, `12.3 s`,
/// `2m05s`, `1h02m`; `-` for none.
pub fn human(d: Option<Duration>) -> String {
    let Some(d) = d else {
        return "-".to_owned();
    };
    if d.is_zero() {
        return "0".to_owned();
    }
    let s = d.as_secs_f64();
    let secs = d.as_secs();
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else if d < Duration::from_millis(10) {
        format!("{:.1} ms", s * 1e3)
    } else if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d < Duration::from_secs(10) {
        format!("{s:.2} s")
    } else if d < Duration::from_secs(100) {
        format!("{s:.1} s")
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    }
}

/// `kill 3, pause 2` (in the map's order); `none` if empty.
fn counts_text(counts: &BTreeMap<&'static str, u32>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// For each heal, how long until a client's write was next acknowledged.
fn client_recoveries(heals_ns: &[u64], acks_ns: &[u64]) -> Vec<Duration> {
    let mut acks = acks_ns.to_vec();
    acks.sort_unstable();
    heals_ns
        .iter()
        .filter_map(|h| {
            let i = acks.partition_point(|a| a < h);
            acks.get(i).map(|a| Duration::from_nanos(a - h))
        })
        .collect()
}

fn ms(d: Option<Duration>) -> serde_json::Value {
    d.map_or(serde_json::Value::Null, |d| json!(d.as_millis() as u64))
}

/// `p50 16 ms, p99 1.10 s, max 2.70 s` of `sorted`.
fn spread(sorted: &[Duration]) -> String {
    format!(
        "p50 {}, p99 {}, max {}",
        human(percentile(sorted, 0.5)),
        human(percentile(sorted, 0.99)),
        human(sorted.last().copied())
    )
}

/// The run's verdict, for people and as `verdict.json`.
pub(super) struct Verdict {
    pub passed: bool,
    pub text: String,
    pub json: serde_json::Value,
    /// Why the run failed, one finding a line (empty when it passed).
    pub findings: Vec<String>,
}

impl Verdict {
    pub fn new(
        workload: Workload,
        seed: u64,
        args: &ChaosArgs,
        report: &NemesisReport,
        checked: Result<Checked>,
        lookups: &LookupVerdict,
    ) -> Verdict {
        let (checked, error) = match checked {
            Ok(c) => (c, None),
            Err(e) => (Checked::default(), Some(format!("{e:#}"))),
        };
        let mut probe = report.recoveries.clone();
        probe.sort_unstable();
        let mut clients = client_recoveries(&report.heals_ns, &checked.write_acks_ns);
        clients.sort_unstable();
        let p99 = percentile(&probe, 0.99);
        let injected: u32 = report
            .faults
            .iter()
            .filter(|(k, _)| **k != "mix")
            .map(|(_, n)| n)
            .sum();
        let mut findings = Vec::new();
        if let Some(e) = &error {
            findings.push(format!("workload error: {e}"));
        } else if !checked.passed {
            findings.push(format!("checker: {}", checked.summary));
        }
        if checked.ok_ops == 0 && error.is_none() {
            findings.push("no operation had a known outcome".to_owned());
        }
        if report.unrecovered > 0 {
            findings.push(format!(
                "liveness: writes did not come back after {} heals",
                report.unrecovered
            ));
        }
        if p99.is_some_and(|d| d >= RECOVERY_P99_MAX) {
            findings.push(format!(
                "liveness: recovery p99 {} is not under {}",
                human(p99),
                human(Some(RECOVERY_P99_MAX))
            ));
        }
        if !report.crashes.is_empty() {
            findings.push(format!("crashes: {}", report.crashes.join("; ")));
        }
        findings.extend(lookups.finding());
        let passed = findings.is_empty();
        let mut text = format!(
            "\n== verdict: {} (workload {}, seed {seed})\n",
            if passed { "PASS" } else { "FAIL" },
            workload.name()
        );
        if checked.passed || error.is_some() {
            text += &format!("checker: {}\n", checked.summary);
        } else {
            // Printed once, as the run's last lines.
            text += "checker: FAIL (its finding ends the output)\n";
        }
        if let Some(e) = &error {
            text += &format!("workload error: {e}\n");
        }
        text += &format!(
            "faults injected: {injected} ({})\n",
            counts_text(&report.faults)
        );
        text += &format!(
            "liveness (heal -> write on every probe key): {} heals, {}, {} unrecovered (bar: p99 < {})\n",
            report.heals_ns.len(),
            spread(&probe),
            report.unrecovered,
            human(Some(RECOVERY_P99_MAX))
        );
        text += &format!(
            "clients' view (heal -> next acknowledged write): {}\n",
            spread(&clients)
        );
        text += &lookups.text();
        if report.stores_added + report.stores_removed > 0 {
            let mut took = report.stores_tombstoned.clone();
            took.sort_unstable();
            text += &format!(
                "stores: {} added, {} decommissioned, {} became tombstones (request -> tombstone: {}), {} still leaving at the end\n",
                report.stores_added,
                report.stores_removed,
                took.len(),
                spread(&took),
                report.stores_still_leaving
            );
        }
        if !report.crashes.is_empty() {
            text += &format!("CRASHES ({}):\n", report.crashes.len());
            for c in &report.crashes {
                text += &format!("  {c}\n");
            }
        }
        if !report.errors.is_empty() {
            text += &format!("nemesis errors ({}):\n", report.errors.len());
            for e in &report.errors {
                text += &format!("  {e}\n");
            }
        }
        let client_panics = txn::CLIENT_PANICS.load(std::sync::atomic::Ordering::Relaxed);
        if client_panics > 0 {
            text += &format!(
                "client library panics: {client_panics} (each an unknown outcome; see docs/reliability.md)\n"
            );
        }
        let json = json!({
            "workload": workload.name(),
            "seed": seed,
            "passed": passed,
            "findings": findings,
            "duration_s": args.duration.as_secs(),
            "stores": args.stores,
            "pd_members": args.pd_members,
            "client_panics": client_panics,
            "clients": args.clients,
            "ops": checked.ops,
            "ops_known_outcome": checked.ok_ops,
            "ops_unknown_outcome": checked.unknown_ops,
            "checker": checked.summary,
            "workload_error": error,
            "faults": report.faults,
            "faults_injected": injected,
            "heals": report.heals_ns.len(),
            "recovery_ms": {
                "p50": ms(percentile(&probe, 0.5)),
                "p99": ms(p99),
                "max": ms(probe.last().copied()),
                "unrecovered": report.unrecovered,
            },
            "client_recovery_ms": {
                "p50": ms(percentile(&clients, 0.5)),
                "p99": ms(percentile(&clients, 0.99)),
                "max": ms(clients.last().copied()),
            },
            "pd_lookups": lookups.json(),
            "crashes": report.crashes,
            "nemesis_errors": report.errors,
            "stores_added": report.stores_added,
            "stores_decommissioned": report.stores_removed,
            "stores_tombstoned": report.stores_tombstoned.len(),
            "stores_still_leaving": report.stores_still_leaving,
        });
        Verdict {
            passed,
            text,
            json,
            findings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        let ms = Duration::from_millis;
        assert_eq!(human(None), "-");
        assert_eq!(human(Some(Duration::ZERO)), "0");
        assert_eq!(human(Some(Duration::from_micros(420))), "420 µs");
        assert_eq!(human(Some(Duration::from_micros(4_240))), "4.2 ms");
        assert_eq!(human(Some(Duration::from_nanos(16_197_859))), "16 ms");
        assert_eq!(human(Some(ms(999))), "999 ms");
        assert_eq!(human(Some(ms(1_100))), "1.10 s");
        assert_eq!(human(Some(ms(2_700))), "2.70 s");
        assert_eq!(human(Some(ms(12_345))), "12.3 s");
        assert_eq!(human(Some(Duration::from_secs(125))), "2m05s");
        assert_eq!(human(Some(Duration::from_secs(3_720))), "1h02m");
    }

    #[test]
    fn fault_counts_read_as_a_list() {
        let mut m = BTreeMap::new();
        assert_eq!(counts_text(&m), "none");
        m.insert("pause", 2);
        m.insert("kill", 3);
        assert_eq!(counts_text(&m), "kill 3, pause 2");
    }

    #[test]
    fn spreads_name_each_percentile() {
        let d: Vec<Duration> = [16, 1_100, 2_700].map(Duration::from_millis).to_vec();
        assert_eq!(spread(&d), "p50 1.10 s, p99 2.70 s, max 2.70 s");
        assert_eq!(spread(&[]), "p50 -, p99 -, max -");
    }

    #[test]
    fn client_recovery_is_the_next_ack_after_each_heal() {
        let r = client_recoveries(&[100, 500, 900], &[50, 130, 700, 120]);
        assert_eq!(r, vec![Duration::from_nanos(20), Duration::from_nanos(200)]);
    }

    #[test]
    fn percentiles_take_the_rank_at_or_above() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&d, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
