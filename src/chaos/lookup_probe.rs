//! `flotilla lookup-probe` (hidden; `flotilla chaos` runs it as a process of its own): region
//! lookups through the official client's own PD code, one round at a time, each classified
//! exactly and printed as one JSON line ([`ProbeLine`]) on stdout.
//!
//! A round takes a [`RawClient`] that has never looked anything up and reads one key with no
//! backoff, so its region and store lookups go to PD (the region cache would hide repeated
//! ones). tikv-client counts its PD calls in the process-global prometheus registry
//! (`pd_request_duration_seconds` observes a successful attempt, `pd_failed_request_total`
//! counts a failed one); in this process nothing else looks regions up, so a round's metric
//! deltas are its own, and [`classify`] tells a failed lookup from a failed read at the store.
//! A client that has just connected does not reconnect for a second (`RECONNECT_INTERVAL_SEC`
//! in tikv-client's `pd/retry.rs`), unlike the long-lived clients of a workload: clients are
//! made ahead, one every [`CLIENT_EVERY`], and each waits until it is [`CLIENT_AGE_MIN`] old.
//!
//! The process ends when its stdin or stdout closes (the chaos run ended or died); the chaos
//! run also kills it by pid.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tikv_client::{Backoff, RawClient};
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant, MissedTickBehavior};

/// How often a client is made for a later round.
const CLIENT_EVERY: Duration = Duration::from_millis(100);
/// A client's least age at its round: past the client's 1 s reconnect suppression.
const CLIENT_AGE_MIN: Duration = Duration::from_millis(1100);
/// Clients made or being made and not used yet (bounds connections while rounds are slow).
const CLIENTS_MAX: usize = 64;
/// Bound of making one client (a paused PD member hangs the client's `GetMembers`).
const CONNECT_MAX: Duration = Duration::from_secs(10);
/// Bound of one round; a round still running then is abandoned (a stall with no end).
const ROUND_MAX: Duration = Duration::from_secs(30);

/// The PD calls of a lookup, as tikv-client labels them (`type`).
pub const LOOKUP_CALLS: [&str; 3] = ["get_region", "get_region_by_id", "get_store"];

/// Options of `flotilla lookup-probe`.
#[derive(clap::Args, Debug)]
pub struct LookupProbeArgs {
    /// CA certificate of a cluster with TLS (`--key` is the key this probe reads, so the
    /// identity's flags are spelled `--tls-*` here).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<String>,
    /// Client certificate.
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<String>,
    /// Client private key.
    #[arg(long, requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<String>,
    /// PD members, comma separated.
    #[arg(long)]
    pub pd: String,
    /// The key every round reads (raw, in the default keyspace).
    #[arg(long)]
    pub key: String,
    /// A round that takes longer is a stall (unless its lookup failed).
    #[arg(long, default_value = "3s", value_parser = super::parse_duration)]
    pub stall: Duration,
}

/// How a round (or the making of a client) ended. Serialised as one key, e.g. `{"ok":true}`,
/// `{"lookup_failed":"<error>"}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The read succeeded (always `true`).
    Ok(bool),
    /// A lookup call failed every attempt: the client gave up on the region or store.
    LookupFailed(String),
    /// The lookups succeeded and the read failed at the store.
    StoreFailed(String),
    /// The round took longer than the stall bound; how it ended is in [`ProbeLine::then`].
    Stall(String),
    /// A client could not be made (not a round).
    ConnectFailed(String),
}

/// One line of the probe's output.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ProbeLine {
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// How long the round (or the making of the client) took.
    pub ms: u64,
    /// PD attempts of the round's lookups that failed (retried or not).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pd_failed: u64,
    /// The lookup call that failed (`get_region`, `get_store`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// For a stall, how the round ended (none: abandoned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<Box<Outcome>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ProbeLine {
    fn of(outcome: Outcome, took: Duration) -> ProbeLine {
        ProbeLine {
            outcome,
            ms: took.as_millis() as u64,
            pd_failed: 0,
            call: None,
            then: None,
        }
    }
}

/// Attempts of one PD call type, as tikv-client's metrics count them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempts {
    /// Attempts that succeeded.
    pub ok: u64,
    /// Attempts that failed.
    pub failed: u64,
}

/// The attempts of each of [`LOOKUP_CALLS`], in that order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PdCalls(pub [Attempts; 3]);

impl PdCalls {
    /// The counts in this process's default prometheus registry (tikv-client's, 0.13).
    fn gather() -> PdCalls {
        let mut calls = PdCalls::default();
        for family in prometheus013::gather() {
            let name = family.get_name();
            let failed = match name {
                "pd_request_duration_seconds" => false,
                "pd_failed_request_total" => true,
                _ => continue,
            };
            for m in family.get_metric() {
                let call = m
                    .get_label()
                    .iter()
                    .find(|l| l.get_name() == "type")
                    .and_then(|l| LOOKUP_CALLS.iter().position(|c| *c == l.get_value()));
                let Some(i) = call else { continue };
                if failed {
                    calls.0[i].failed = m.get_counter().get_value() as u64;
                } else {
                    calls.0[i].ok = m.get_histogram().get_sample_count();
                }
            }
        }
        calls
    }

    /// The attempts made since `before`.
    fn since(&self, before: &PdCalls) -> PdCalls {
        let mut d = PdCalls::default();
        for i in 0..LOOKUP_CALLS.len() {
            d.0[i] = Attempts {
                ok: self.0[i].ok.saturating_sub(before.0[i].ok),
                failed: self.0[i].failed.saturating_sub(before.0[i].failed),
            };
        }
        d
    }

    /// The first call that failed every attempt it made.
    fn failed_call(&self) -> Option<&'static str> {
        (0..LOOKUP_CALLS.len())
            .find(|i| self.0[*i].failed > 0 && self.0[*i].ok == 0)
            .map(|i| LOOKUP_CALLS[i])
    }

    fn failed_attempts(&self) -> u64 {
        self.0.iter().map(|a| a.failed).sum()
    }
}

/// What a round was: `result` is the read's (None: abandoned at the bound), `calls` the PD
/// attempts it made, `took` its duration. The lookup failed iff one of its calls failed every
/// attempt, however long that took; otherwise a round longer than `stall` is a stall.
pub fn classify(
    result: Option<Result<(), String>>,
    calls: &PdCalls,
    took: Duration,
    stall: Duration,
) -> ProbeLine {
    let failed_call = calls.failed_call();
    let pd_failed = calls.failed_attempts();
    let done = |outcome| ProbeLine {
        pd_failed,
        ..ProbeLine::of(outcome, took)
    };
    let Some(result) = result else {
        return ProbeLine {
            then: None,
            ..done(Outcome::Stall(format!("no end within {ROUND_MAX:?}")))
        };
    };
    if let Some(call) = failed_call {
        let error = result
            .err()
            .unwrap_or_else(|| "(the read succeeded)".to_owned());
        return ProbeLine {
            call: Some(call.to_owned()),
            ..done(Outcome::LookupFailed(error))
        };
    }
    let outcome = match result {
        Ok(()) => Outcome::Ok(true),
        Err(e) => Outcome::StoreFailed(e),
    };
    if took > stall {
        let ended = match &outcome {
            Outcome::Ok(_) => "then the read succeeded".to_owned(),
            _ => "then the read failed at the store".to_owned(),
        };
        return ProbeLine {
            then: Some(Box::new(outcome)),
            ..done(Outcome::Stall(format!("took over {stall:?}; {ended}")))
        };
    }
    done(outcome)
}

/// Writes one line to stdout; ends the process if stdout is gone (the chaos run ended).
fn emit(line: &ProbeLine) {
    let text = serde_json::to_string(line).expect("a probe line serialises");
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// Runs rounds until the process is killed or its stdin or stdout closes.
pub async fn run(args: LookupProbeArgs) -> Result<()> {
    let endpoints = crate::ctl::pd_endpoints(&args.pd);
    anyhow::ensure!(!endpoints.is_empty(), "no PD member in {:?}", args.pd);
    tokio::spawn(exit_when_stdin_closes());
    let (tx, mut rx) = mpsc::channel(CLIENTS_MAX);
    tokio::spawn(make_clients(endpoints, tx));
    while let Some((client, connected)) = rx.recv().await {
        sleep_until(connected + CLIENT_AGE_MIN).await;
        emit(&round(client, &args.key, args.stall).await);
    }
    Ok(())
}

async fn exit_when_stdin_closes() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
    std::process::exit(0);
}

/// Makes a client every [`CLIENT_EVERY`] while fewer than [`CLIENTS_MAX`] wait, and sends
/// each with the instant it connected; a client that cannot be made is a `connect_failed` line.
async fn make_clients(endpoints: Vec<String>, tx: mpsc::Sender<(RawClient, Instant)>) {
    let mut tick = tokio::time::interval(CLIENT_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let permit = match tx.clone().try_reserve_owned() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(_)) => continue,
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let made = timeout(
                CONNECT_MAX,
                RawClient::new_with_config(endpoints, super::txn::client_config()),
            )
            .await;
            let error = match made {
                Ok(Ok(client)) => {
                    permit.send((client, Instant::now()));
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no client within {CONNECT_MAX:?}"),
            };
            emit(&ProbeLine::of(
                Outcome::ConnectFailed(error),
                start.elapsed(),
            ));
        });
    }
}

/// One round: `client`'s first read of `key`, with no backoff, classified.
async fn round(client: RawClient, key: &str, stall: Duration) -> ProbeLine {
    let key = key.to_owned();
    let before = PdCalls::gather();
    let start = Instant::now();
    // Its own task: a panic of the client library is an answer too.
    let mut read = tokio::spawn(async move {
        client
            .with_backoff(Backoff::no_backoff())
            .get(key)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let result = match timeout(ROUND_MAX, &mut read).await {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) => Some(Err(format!("the client library failed: {e}"))),
        Err(_) => {
            read.abort();
            None
        }
    };
    let took = start.elapsed();
    classify(result, &PdCalls::gather().since(&before), took, stall)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(region: (u64, u64), store: (u64, u64)) -> PdCalls {
        let a = |(ok, failed)| Attempts { ok, failed };
        PdCalls([a(region), Attempts::default(), a(store)])
    }

    const STALL: Duration = Duration::from_secs(3);
    const QUICK: Duration = Duration::from_millis(20);

    #[test]
    fn a_read_that_looked_up_fine_is_ok_or_a_store_failure() {
        let c = calls((1, 0), (1, 0));
        assert_eq!(
            classify(Some(Ok(())), &c, QUICK, STALL).outcome,
            Outcome::Ok(true)
        );
        let line = classify(Some(Err("not leader".into())), &c, QUICK, STALL);
        assert_eq!(line.outcome, Outcome::StoreFailed("not leader".into()));
        // Retried attempts that ended in success are not a failed lookup.
        let retried = classify(Some(Ok(())), &calls((1, 3), (1, 0)), QUICK, STALL);
        assert_eq!(retried.outcome, Outcome::Ok(true));
        assert_eq!(retried.pd_failed, 3);
    }

    #[test]
    fn a_call_that_failed_every_attempt_is_a_failed_lookup() {
        let line = classify(
            Some(Err("gone".into())),
            &calls((0, 10), (0, 0)),
            QUICK,
            STALL,
        );
        assert_eq!(line.outcome, Outcome::LookupFailed("gone".into()));
        assert_eq!(line.call.as_deref(), Some("get_region"));
        let line = classify(
            Some(Err("gone".into())),
            &calls((1, 0), (0, 2)),
            QUICK,
            STALL,
        );
        assert_eq!(line.call.as_deref(), Some("get_store"));
        // However long it took: the client gave up on the lookup.
        let slow = classify(
            Some(Err("gone".into())),
            &calls((0, 5), (0, 0)),
            STALL * 2,
            STALL,
        );
        assert!(matches!(slow.outcome, Outcome::LookupFailed(_)));
    }

    #[test]
    fn a_slow_round_is_a_stall_that_says_how_it_ended() {
        let line = classify(Some(Ok(())), &calls((1, 1), (1, 0)), STALL * 2, STALL);
        assert!(matches!(line.outcome, Outcome::Stall(_)));
        assert_eq!(line.then.as_deref(), Some(&Outcome::Ok(true)));
        let abandoned = classify(None, &calls((0, 1), (0, 0)), ROUND_MAX, STALL);
        assert!(matches!(abandoned.outcome, Outcome::Stall(_)));
        assert_eq!(abandoned.then, None);
    }

    #[test]
    fn lines_are_one_key_objects_and_read_back() {
        let ok = ProbeLine::of(Outcome::Ok(true), QUICK);
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"ok":true,"ms":20}"#
        );
        let failed = classify(Some(Err("e".into())), &calls((0, 10), (0, 0)), QUICK, STALL);
        let text = serde_json::to_string(&failed).unwrap();
        assert_eq!(
            text,
            r#"{"lookup_failed":"e","ms":20,"pd_failed":10,"call":"get_region"}"#
        );
        assert_eq!(serde_json::from_str::<ProbeLine>(&text).unwrap(), failed);
        let stall = classify(
            Some(Err("e".into())),
            &calls((1, 0), (1, 0)),
            STALL * 2,
            STALL,
        );
        let text = serde_json::to_string(&stall).unwrap();
        assert_eq!(serde_json::from_str::<ProbeLine>(&text).unwrap(), stall);
    }

    #[test]
    fn deltas_count_attempts_since_the_snapshot() {
        let before = calls((5, 2), (3, 0));
        let after = calls((6, 4), (4, 0));
        assert_eq!(after.since(&before), calls((1, 2), (1, 0)));
        assert_eq!(after.since(&before).failed_call(), None);
    }
}
