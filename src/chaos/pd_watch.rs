//! The chaos run's eyes on PD while faults run: the lookup probe as a child process (`flotilla
//! lookup-probe`, see [`super::lookup_probe`]) whose lines are stamped with the run clock and
//! written to the timeline, and a poller per PD member asking its `/status` (who leads, who
//! answers) into a [`PdView`]. [`PdWatch::stop`] kills the probe by its pid and hands the
//! [`PdRecord`] to the verdict ([`super::lookups::analyze`]).

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

use super::lookup_probe::{Outcome, ProbeLine};
use super::lookups::{MemberStatus, PdRecord, PdView, Round, Tally, ROUNDS_KEPT_MAX};
use super::Ctx;

/// How often each PD member's `/status` is asked.
const STATUS_EVERY: Duration = Duration::from_millis(150);
/// A member that has not answered `/status` by then counts as not answering (it is paused or
/// down; a live one answers in milliseconds).
const STATUS_MAX: Duration = Duration::from_secs(1);

/// What the probe's reader has gathered.
#[derive(Default)]
struct Rounds {
    tally: Tally,
    kept: Vec<Round>,
}

/// The probe process and the status pollers, running.
pub struct PdWatch {
    probe: Option<(Child, ChildStdin)>,
    reader: Option<JoinHandle<Rounds>>,
    pollers: Vec<JoinHandle<()>>,
    view: Arc<Mutex<PdView>>,
    members: usize,
    probe_error: Option<String>,
}

impl PdWatch {
    /// Starts the pollers and the probe (reading `key`, its stderr in `dir/lookup-probe.log`).
    /// A probe that cannot start is reported in the verdict, not an error of the run.
    pub fn start(ctx: &Arc<Ctx>, dir: &Path, key: &str) -> PdWatch {
        let addrs = crate::ctl::pd_endpoints(&ctx.pd);
        let members = addrs.len();
        let view = Arc::new(Mutex::new(PdView::new(members)));
        let pollers = addrs
            .into_iter()
            .enumerate()
            .map(|(i, addr)| tokio::spawn(poll_status(ctx.clone(), view.clone(), i, addr)))
            .collect();
        let mut watch = PdWatch {
            probe: None,
            reader: None,
            pollers,
            view,
            members,
            probe_error: None,
        };
        match spawn_probe(&ctx.pd, dir, key) {
            Ok((child, stdin, stdout)) => {
                watch.reader = Some(tokio::spawn(read_rounds(ctx.clone(), stdout)));
                watch.probe = Some((child, stdin));
            }
            Err(e) => {
                println!("  the lookup probe did not start: {e:#}");
                watch.probe_error = Some(format!("{e:#}"));
            }
        }
        watch
    }

    /// Kills the probe (by pid) and the pollers; what they saw.
    pub async fn stop(mut self) -> PdRecord {
        for p in &self.pollers {
            p.abort();
        }
        if let Some((mut child, stdin)) = self.probe.take() {
            drop(stdin);
            if let Err(e) = child.start_kill() {
                println!("  cannot kill the lookup probe: {e}");
            }
            let _ = timeout(Duration::from_secs(10), child.wait()).await;
        }
        let rounds = match self.reader.take() {
            Some(r) => match timeout(Duration::from_secs(10), r).await {
                Ok(Ok(rounds)) => rounds,
                _ => Rounds::default(),
            },
            None => Rounds::default(),
        };
        let mut probe_error = self.probe_error.take();
        if probe_error.is_none() && rounds.tally.rounds == 0 {
            probe_error = Some("no round ended; see lookup-probe.log".to_owned());
        }
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        PdRecord {
            members: self.members,
            changes: view.changes.clone(),
            back_ns: view.back_ns.clone(),
            tally: rounds.tally,
            rounds: rounds.kept,
            probe_error,
        }
    }
}

fn spawn_probe(pd: &str, dir: &Path, key: &str) -> Result<(Child, ChildStdin, ChildStdout)> {
    let exe = std::env::current_exe()?;
    let log_path = dir.join("lookup-probe.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = tokio::process::Command::new(&exe)
        .args(["lookup-probe", "--pd", pd, "--key", key])
        .args(crate::ctl::client_tls().map_or(Vec::new(), |t| {
            t.args(["--tls-ca", "--tls-cert", "--tls-key"])
        }))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        // A backstop: `stop` kills it by pid, and it exits when its stdin closes.
        .kill_on_drop(true)
        .spawn()
        .context("starting the lookup probe")?;
    println!(
        "started lookup-probe pid {} (PD region lookups through the official client)",
        child.id().unwrap_or(0)
    );
    let stdin = child.stdin.take().context("the probe's stdin")?;
    let stdout = child.stdout.take().context("the probe's stdout")?;
    Ok((child, stdin, stdout))
}

/// Reads probe lines until the probe ends: stamps, writes to the timeline, counts.
async fn read_rounds(ctx: Arc<Ctx>, stdout: ChildStdout) -> Rounds {
    let mut rounds = Rounds::default();
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(text)) = lines.next_line().await {
        let end_ns = ctx.clock.now_ns();
        let line = match serde_json::from_str::<ProbeLine>(&text) {
            Ok(l) => l,
            Err(_) => {
                rounds.tally.unreadable += 1;
                continue;
            }
        };
        let mut event = json!({ "t_ns": end_ns, "event": "lookup" });
        if let (Some(e), Ok(serde_json::Value::Object(l))) =
            (event.as_object_mut(), serde_json::to_value(&line))
        {
            e.extend(l);
        }
        ctx.timeline.push_json(&event);
        rounds.tally.count(&line.outcome);
        if !matches!(line.outcome, Outcome::Ok(_)) && rounds.kept.len() < ROUNDS_KEPT_MAX {
            rounds.kept.push(Round { end_ns, line });
        }
    }
    rounds
}

/// Asks member `member`'s `/status` every [`STATUS_EVERY`] into `view`; writes leader changes to
/// the timeline.
async fn poll_status(ctx: Arc<Ctx>, view: Arc<Mutex<PdView>>, member: usize, addr: String) {
    loop {
        let t_ns = ctx.clock.now_ns();
        let status = match timeout(STATUS_MAX, crate::ctl::http_get_json(&addr, "/status")).await {
            Ok(Ok(v)) => Some(MemberStatus {
                is_leader: v["is_leader"].as_bool() == Some(true),
                // Member ids are 1-based, indexes 0-based.
                leader: v["leader_id"]
                    .as_u64()
                    .and_then(|id| id.checked_sub(1))
                    .map(|i| i as usize),
            }),
            _ => None,
        };
        let change = view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .on_status(t_ns, member, status);
        if let Some(c) = change {
            ctx.timeline.push_json(&json!({
                "t_ns": c.seen_ns,
                "event": "pd-leader",
                "from": c.from.map(|m| format!("pd{m}")),
                "to": format!("pd{}", c.to),
            }));
        }
        sleep(STATUS_EVERY).await;
    }
}
