//! `flotilla chaos`: a seeded fault campaign. It starts PD and 3 or 5 stores as processes on
//! 127.0.0.1 (small regions, fault injection on), runs a workload from concurrent clients of
//! the official client while the [`nemesis`] partitions, kills, pauses, moves leaders and
//! splits regions, records every operation as a JSON line, heals, checks the history with the
//! `checker` crate and prints a verdict with the seed. `flotilla check` re-checks a recorded
//! history.
//!
//! While faults run, a lookup probe (its own process, [`lookup_probe`]) looks regions up through
//! the official client's PD code and [`pd_watch`] follows PD's leader; the verdict
//! ([`verdict`], [`lookups`]) fails the run on a lookup that failed while a majority of PD
//! members was up.
//!
//! A run lives in `<dir>/<workload>-<seed>/`: `history.jsonl`, `timeline.jsonl`,
//! `verdict.json`, the processes' logs and their data directories. A passing run removes the
//! data directories (unless `--keep`); a failing one keeps everything. A failing check is not
//! an error: it ends with its findings and [`RunEnd::Failed`].

mod bank;
pub(crate) mod cluster;
mod history;
mod list_append;
pub mod lookup_probe;
mod lookups;
mod nemesis;
mod pd_watch;
mod raw;
mod register;
pub(crate) mod txn;
mod verdict;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use rand::Rng;
use tikv_client::RawClient;
use tokio::sync::Notify;
use tokio::time::{timeout, Instant};

use cluster::ChaosCluster;
use history::{Clock, Lines};
use nemesis::{FaultKind, Nemesis, NemesisConfig, Probe};
use pd_watch::PdWatch;
use verdict::Verdict;

/// How a campaign or a check that could run ended. A failure is a finding, printed last, not
/// an error (errors are for runs that could not be made or read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// Every check passed.
    Passed,
    /// A check failed; the findings were printed.
    Failed,
}

/// A campaign's workload.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Single-key reads, writes and compare-and-swap (raw API), checked for linearizability.
    Register,
    /// Transfers between accounts and snapshot reads of all, checked for a constant total.
    Bank,
    /// Transactions appending to and reading lists, checked for snapshot isolation.
    ListAppend,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Bank => "bank",
            Workload::ListAppend => "list-append",
        }
    }

    fn default_keys(self) -> u64 {
        match self {
            Workload::Register => 16,
            Workload::Bank => 8,
            Workload::ListAppend => 40,
        }
    }

    fn key(self, k: u64) -> String {
        match self {
            Workload::Register => register::key(k),
            Workload::Bank => bank::key(k),
            Workload::ListAppend => list_append::key(k),
        }
    }
}

/// `range` (holding keys `key(0)..key(ids)`, in order) cut before `key(per)`, `key(2 * per)`
/// and so on: contiguous pieces that start at the range's start and end at its end.
fn key_chunks(
    range: &(String, String),
    ids: u64,
    per: u64,
    key: impl Fn(u64) -> String,
) -> Vec<(String, String)> {
    let cuts = (per.max(1)..ids).step_by(per.max(1) as usize).map(key);
    let bounds: Vec<String> = std::iter::once(range.0.clone())
        .chain(cuts)
        .chain([range.1.clone()])
        .collect();
    bounds
        .windows(2)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect()
}

/// Options of `flotilla chaos`.
#[derive(Args, Debug)]
pub struct ChaosArgs {
    /// Mutual TLS: the cluster's processes serve with this CA, certificate and key (the
    /// certificate must name 127.0.0.1), and every client presents them.
    #[command(flatten)]
    pub tls: crate::ctl::TlsArgs,
    /// Mutual TLS with certificates made under `<dir>/tls/` (as `playground --tls` makes
    /// them; every process presents the client's), instead of --ca --cert --key.
    #[arg(long = "tls", conflicts_with = "ca")]
    pub make_tls: bool,
    /// What the clients do.
    #[arg(long, value_enum, default_value = "register")]
    pub workload: Workload,
    /// How long faults are injected (e.g. 90s, 2m, 30m, 1h).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub duration: Duration,
    /// The run's seed (default: random); the same seed replays the same schedule of faults and
    /// operations (timing still differs).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stores (3 or 5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=5))]
    pub stores: u64,
    /// PD members: 3 runs a replicated PD group (kill-pd then kills its leader), 1 runs PD
    /// alone (kill-pd then leaves the cluster without PD until it restarts).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub pd_members: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub clients: u64,
    /// Keys (register), accounts (bank) or active keys (list-append); default 16, 8, 40.
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    pub keys: Option<u64>,
    /// Faults to pick from, comma separated. `merge`, `pause-leader` and `clock-skew` are not
    /// in the default list, and a `mix` takes them only when they are named.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "partition,kill,kill-pd,pause,transfer-leader,split,mix"
    )]
    pub nemesis: Vec<FaultKind>,
    /// Longest quiet gap between faults.
    #[arg(long, default_value = "6s", value_parser = parse_duration)]
    pub gap_max: Duration,
    /// Longest time a fault is held.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub hold_max: Duration,
    /// Where runs keep their files (a run uses `<dir>/<workload>-<seed>`).
    #[arg(long, default_value = "./data/chaos")]
    pub dir: PathBuf,
    /// Keep the data directories of a passing run too.
    #[arg(long)]
    pub keep: bool,
}

/// Options of `flotilla check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The workload that recorded the history.
    #[arg(long, value_enum)]
    pub workload: Workload,
    /// The history (JSON lines), e.g. `data/chaos/register-42/history.jsonl`.
    pub history: PathBuf,
}

/// `90`, `90s`, `1500ms`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 2m or 1h"))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n * 1_000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_millis(ms))
}

/// What a workload's check found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Operations (or transactions) in the history.
    pub ops: usize,
    /// Those whose outcome the client knows.
    pub ok_ops: usize,
    /// Those whose outcome is unknown.
    pub unknown_ops: usize,
    /// Whether the checker accepted the history.
    pub passed: bool,
    /// What the checker says, for people.
    pub summary: String,
    /// When acknowledged writes returned (run clock), for the clients' view of liveness.
    pub write_acks_ns: Vec<u64>,
}

/// What every part of a run shares.
pub struct Ctx {
    /// The PD members' addresses, comma separated.
    pub pd: String,
    /// The run's clock.
    pub clock: Clock,
    /// `history.jsonl`.
    pub history: Lines,
    /// `timeline.jsonl`.
    pub timeline: Lines,
    /// The run's seed.
    pub seed: u64,
    /// Concurrent clients.
    pub clients: u64,
    /// See [`ChaosArgs::keys`].
    pub keys: u64,
    /// Set when the clients must stop.
    pub stop: Arc<AtomicBool>,
    /// Notified when the workload is set up and faults may begin.
    pub ready: Notify,
    /// The user keys the workload touches, `[lo, hi)`.
    pub key_range: (String, String),
    /// Highest key id in use (list-append's generator retires keys and takes new ones).
    pub key_high: AtomicU64,
    workload: Workload,
    processes: AtomicU64,
    txn_ids: AtomicU64,
}

impl Ctx {
    /// A fresh client id for the history.
    pub fn new_process(&self) -> u64 {
        self.processes.fetch_add(1, Ordering::SeqCst)
    }

    /// A fresh transaction id for the history.
    pub fn new_txn_id(&self) -> u64 {
        self.txn_ids.fetch_add(1, Ordering::SeqCst)
    }

    /// The key ids in use now.
    fn key_window(&self) -> std::ops::Range<u64> {
        let high = self.key_end();
        high.saturating_sub(self.keys)..high
    }

    /// One past the highest key id the workload has used (at least its key count).
    fn key_end(&self) -> u64 {
        self.key_high.load(Ordering::Relaxed).max(self.keys)
    }

    /// The workload's key range cut into pieces of `per` keys each (the first piece starts
    /// at the range's start, the last ends at its end, so together they cover every key in it).
    pub fn key_chunks(&self, per: u64) -> Vec<(String, String)> {
        key_chunks(&self.key_range, self.key_end(), per, |k| {
            self.workload.key(k)
        })
    }

    /// A random key of the workload, from the keys in use.
    pub fn random_key(&self, rng: &mut impl Rng) -> String {
        self.workload.key(rng.gen_range(self.key_window()))
    }

    /// 16 to 20 probe keys spread over the keys in use, each just after a workload key (so in
    /// that key's region) and never read by the workload.
    pub fn probe_keys(&self) -> Vec<String> {
        let w = self.key_window();
        let step = ((w.end - w.start) / 16).max(1);
        w.step_by(step as usize)
            .map(|k| format!("{}~probe", self.workload.key(k)))
            .collect()
    }
}

/// Runs a campaign: [`RunEnd::Failed`] (its findings printed last) unless every check passed;
/// an error if the campaign could not run.
pub async fn run(args: ChaosArgs) -> Result<RunEnd> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let workload = args.workload;
    let keys = args.keys.unwrap_or(workload.default_keys());
    println!(
        "flotilla chaos: workload {}, seed {seed}, {} PD members, {} stores, {} clients, {} keys, faults {:?} for {:?}",
        workload.name(),
        args.pd_members,
        args.stores,
        args.clients,
        keys,
        args.nemesis.iter().map(|k| k.name()).collect::<Vec<_>>(),
        args.duration
    );
    let dir = args.dir.join(format!("{}-{seed}", workload.name()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    println!("run directory: {}", dir.display());
    let mut cluster = ChaosCluster::start(&dir, args.pd_members as usize, args.stores as usize)?;
    for (name, pid) in cluster.pids() {
        println!("  {name}: pid {pid}");
    }
    // Replicas reach every region one operator at a time; a loaded machine needs minutes.
    cluster.wait_started(5, Duration::from_secs(300)).await?;
    for i in 0..cluster.stores() {
        cluster.store_id(i).await?;
    }
    let key_range = match workload {
        Workload::Register => register::key_range(keys),
        Workload::Bank => bank::key_range(keys),
        Workload::ListAppend => list_append::key_range(),
    };
    let ctx = Arc::new(Ctx {
        pd: cluster.pd_addr.clone(),
        clock: Clock::start(),
        history: Lines::create(&dir.join("history.jsonl"))?,
        timeline: Lines::create(&dir.join("timeline.jsonl"))?,
        seed,
        clients: args.clients,
        keys,
        stop: Arc::new(AtomicBool::new(false)),
        ready: Notify::new(),
        key_range,
        key_high: AtomicU64::new(0),
        workload,
        processes: AtomicU64::new(0),
        txn_ids: AtomicU64::new(0),
    });
    let healed = Arc::new(Notify::new());
    let mut work = tokio::spawn({
        let (ctx, healed) = (ctx.clone(), healed.clone());
        async move {
            match workload {
                Workload::Register => register::campaign(ctx, healed).await,
                Workload::Bank => bank::campaign(ctx, healed).await,
                Workload::ListAppend => list_append::campaign(ctx, healed).await,
            }
        }
    });
    tokio::select! {
        _ = ctx.ready.notified() => {}
        r = &mut work => bail!("the workload ended before the faults began: {:?}", r?.err()),
    }
    let probe = match workload {
        Workload::Register => Probe::Raw(
            RawClient::new_with_config(crate::ctl::pd_endpoints(&ctx.pd), txn::client_config())
                .await?,
        ),
        Workload::Bank | Workload::ListAppend => Probe::Txn(txn::connect(&ctx.pd).await?),
    };
    // Beside the workload's first key: in its regions, never read by it.
    let lookup_key = format!("{}~lookup", workload.key(0));
    let watch = PdWatch::start(&ctx, &dir, &lookup_key);
    println!("faults begin");
    let cfg = NemesisConfig {
        kinds: args.nemesis.clone(),
        gap_max: args.gap_max,
        hold_max: args.hold_max,
        recovery_max: Duration::from_secs(60),
        txn_keys: workload != Workload::Register,
    };
    let report = Nemesis::new(&mut cluster, cfg, &ctx, probe)
        .run(Instant::now() + args.duration)
        .await;
    ctx.stop.store(true, Ordering::SeqCst);
    println!("faults end; waiting for the cluster to settle");
    if let Err(e) = cluster.wait_ready(1, Duration::from_secs(60)).await {
        println!("  {e:#}; checking anyway");
    }
    let pd_record = watch.stop().await;
    healed.notify_one();
    let checked = match timeout(Duration::from_secs(600), work).await {
        Ok(r) => r.context("the workload task panicked")?,
        Err(_) => Err(anyhow::anyhow!(
            "the workload did not finish 10 minutes after the faults"
        )),
    };
    ctx.history.flush()?;
    ctx.timeline.flush()?;
    cluster.stop();
    let lookups = lookups::analyze(&pd_record, &report.pd_faults);
    let verdict = Verdict::new(workload, seed, &args, &report, checked, &lookups);
    std::fs::write(dir.join("verdict.json"), verdict.json.to_string() + "\n")?;
    println!("{}", verdict.text);
    if verdict.passed {
        if !args.keep {
            for d in (0..args.pd_members as usize)
                .map(|i| format!("pd{i}"))
                .chain((0..cluster.stores()).map(|i| format!("store{i}")))
            {
                let _ = std::fs::remove_dir_all(dir.join(d));
            }
        }
        println!(
            "PASS seed {seed} (history and timeline in {})",
            dir.display()
        );
        Ok(RunEnd::Passed)
    } else {
        println!(
            "FAIL seed {seed}: replay with `flotilla chaos --workload {} --seed {seed}`; history, timeline, logs and data kept in {}",
            workload.name(),
            dir.display()
        );
        for f in &verdict.findings {
            println!("{f}");
        }
        Ok(RunEnd::Failed)
    }
}

/// `flotilla check`: re-checks a recorded history; [`RunEnd::Failed`] (the checker's finding
/// printed last) unless it passes, an error if the history cannot be read.
pub fn check(args: CheckArgs) -> Result<RunEnd> {
    let text = std::fs::read_to_string(&args.history)
        .with_context(|| format!("reading {}", args.history.display()))?;
    let checked = match args.workload {
        Workload::Register => register::check(&checker::register::parse_history(&text)?),
        Workload::ListAppend => {
            list_append::check(&checker::jsonl::parse_list_append_lines(&text)?)
        }
        Workload::Bank => {
            let h = checker::jsonl::parse_bank_lines(&text)?;
            bank::check(h.total, &h.reads, &h.options)?
        }
    };
    if checked.passed {
        println!("{}", checked.summary);
        println!("PASS");
        Ok(RunEnd::Passed)
    } else {
        println!(
            "FAIL: the history of {} does not pass ({} workload):",
            args.history.display(),
            args.workload.name()
        );
        println!("{}", checked.summary);
        Ok(RunEnd::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn key_chunks_cover_the_range_a_few_keys_each() {
        let range = list_append::key_range();
        let chunks = key_chunks(&range, 40, 16, list_append::key);
        assert_eq!(chunks.first().unwrap().0, range.0);
        assert_eq!(chunks.last().unwrap().1, range.1);
        assert!(chunks
            .windows(2)
            .all(|w| w[0].1 == w[1].0 && w[0].0 < w[0].1));
        // Every key in use lies in exactly one piece, and no piece holds more than 16.
        for chunk in &chunks {
            let n = (0..40)
                .map(list_append::key)
                .filter(|k| chunk.0 <= *k && *k < chunk.1)
                .count();
            assert!((1..=16).contains(&n), "{chunk:?} holds {n} keys");
        }
        assert_eq!(chunks.len(), 3);
        // Fewer keys than a piece: the whole range in one.
        assert_eq!(key_chunks(&range, 8, 16, list_append::key), vec![range]);
    }

    #[test]
    fn history_lines_name_the_mode_and_still_parse() {
        use checker::{Op, Outcome, Txn};
        let mut t = Txn::new(7, 2, vec![Op::read_of(3, &[1, 2])], Outcome::Committed);
        t.start = Some(10);
        t.end = Some(20);
        let line = txn::Mode::AsyncCommit.tag(checker::jsonl::list_append_record(&t));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["mode"], "async-commit");
        let parsed = checker::jsonl::parse_list_append_lines(&line).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].ops, t.ops);
    }
}
