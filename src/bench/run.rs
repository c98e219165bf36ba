//! One benchmark point: `clients` tasks run a workload through a warm-up and a measured window;
//! their latencies go into HDR histograms and their errors are counted by kind.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};

use super::cluster::{self, ServerPids};
use super::keys::{key_name, KeyChooser};
use super::target::{Commit, Target, TargetKind};
use super::{cli_name, BenchArgs, Workload};
use crate::report::{BenchRecord, Latency};

/// One operation, with the key indexes it touches.
enum Op {
    Put(u64),
    Get(u64),
    Scan(u64, u32),
    ReadModifyWrite(Vec<u64>, Commit),
    Blind(Vec<u64>, Commit),
    LoadTxn(u64),
}

/// What the tasks share.
struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    measured_ops: AtomicU64,
    measured_errors: AtomicU64,
    /// Next key index of a load.
    next_load: AtomicU64,
}

/// What one task hands back.
struct TaskFigures {
    latency_us: Histogram<u64>,
    errors: HashMap<String, u64>,
}

/// Distinct key indexes, `n` of them.
fn distinct(chooser: &KeyChooser, rng: &mut impl Rng, n: usize) -> Vec<u64> {
    let mut keys: Vec<u64> = Vec::with_capacity(n);
    while keys.len() < n {
        let k = chooser.next(rng);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

/// `n` adjacent key indexes (capped at `count`), starting at a drawn one: the keys of one
/// region unless they straddle a boundary.
fn adjacent(chooser: &KeyChooser, rng: &mut impl Rng, n: usize, count: u64) -> Vec<u64> {
    let n = (n as u64).min(count.max(1));
    let first = chooser.next(rng).min(count.max(1) - n);
    (first..first + n).collect()
}

/// The next operation of `w`, or `None` when a load has written every key.
fn next_op(
    w: Workload,
    args: &BenchArgs,
    chooser: &KeyChooser,
    rng: &mut impl Rng,
    shared: &Shared,
) -> Option<Op> {
    let read_share = match w {
        Workload::YcsbA => 0.5,
        Workload::YcsbB => 0.95,
        _ => 0.0,
    };
    Some(match w {
        Workload::Load | Workload::LoadTxn => {
            let i = shared.next_load.fetch_add(1, Ordering::Relaxed);
            if i >= args.keys {
                return None;
            }
            if w == Workload::Load {
                Op::Put(i)
            } else {
                Op::LoadTxn(i)
            }
        }
        Workload::RawPut => Op::Put(chooser.next(rng)),
        Workload::RawGet | Workload::YcsbC => Op::Get(chooser.next(rng)),
        Workload::YcsbA | Workload::YcsbB => {
            if rng.gen_bool(read_share) {
                Op::Get(chooser.next(rng))
            } else {
                Op::Put(chooser.next(rng))
            }
        }
        Workload::YcsbE => {
            if rng.gen_bool(0.95) {
                Op::Scan(chooser.next(rng), rng.gen_range(1..=args.scan_length))
            } else {
                Op::Put(chooser.next(rng))
            }
        }
        Workload::TxnRmw => {
            Op::ReadModifyWrite(distinct(chooser, rng, args.txn_keys), Commit::TwoPhase)
        }
        Workload::TxnRmwAsync => {
            Op::ReadModifyWrite(distinct(chooser, rng, args.txn_keys), Commit::Async)
        }
        Workload::TxnRmw1pc => Op::ReadModifyWrite(
            adjacent(chooser, rng, args.txn_keys, args.keys),
            Commit::OnePc,
        ),
        Workload::Txn => Op::Blind(distinct(chooser, rng, args.txn_keys), Commit::TwoPhase),
        Workload::TxnAsync => Op::Blind(distinct(chooser, rng, args.txn_keys), Commit::Async),
        Workload::Txn1pc => Op::Blind(vec![chooser.next(rng)], Commit::OnePc),
    })
}

/// Attempts per key of a transactional load.
const LOAD_TRIES_MAX: u32 = 5;

async fn execute(t: &mut Target, op: Op, value: &[u8]) -> Result<()> {
    let names = |ks: Vec<u64>| ks.into_iter().map(key_name).collect::<Vec<_>>();
    match op {
        Op::Put(k) => t.put(key_name(k), value.to_vec()).await,
        Op::Get(k) => t.get(key_name(k)).await.map(drop),
        Op::Scan(k, n) => t.scan(key_name(k), n).await.map(drop),
        Op::ReadModifyWrite(ks, c) => t.read_modify_write(names(ks), value.to_vec(), c).await,
        Op::Blind(ks, c) => t.blind_txn(names(ks), value.to_vec(), c).await,
        Op::LoadTxn(k) => match t {
            // A load must write every key: a transaction refused for a region in flux (a
            // leader being elected on a loaded machine) is tried again, a few times.
            Target::Flotilla { .. } => {
                let mut tries = 0;
                loop {
                    let r = t
                        .blind_txn(vec![key_name(k)], value.to_vec(), Commit::OnePc)
                        .await;
                    tries += 1;
                    if r.is_ok() || tries == LOAD_TRIES_MAX {
                        return r;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
            _ => t.put(key_name(k), value.to_vec()).await,
        },
    }
}

/// The first words of an error, so that errors of one kind count together.
fn error_kind(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    s.chars().take(90).collect()
}

/// One client task: operations until told to stop (or a load runs out of keys).
async fn task(
    mut target: Target,
    w: Workload,
    args: Arc<BenchArgs>,
    shared: Arc<Shared>,
    index: usize,
    clients: usize,
    seed: u64,
) -> TaskFigures {
    let chooser = KeyChooser::new(args.keys, args.distribution);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    let value = vec![b'v'; args.value_size];
    let mut figures = TaskFigures {
        latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
        errors: HashMap::new(),
    };
    // With a rate, task i starts at i/clients of an interval and keeps to its own schedule.
    let interval =
        (args.rate > 0).then(|| Duration::from_secs_f64(clients as f64 / args.rate as f64));
    let mut next_at = Instant::now()
        + interval.map_or(Duration::ZERO, |i| i.mul_f64(index as f64 / clients as f64));
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(op) = next_op(w, &args, &chooser, &mut rng, &shared) else {
            break;
        };
        let started = match interval {
            Some(i) => {
                tokio::time::sleep_until(next_at.into()).await;
                let s = next_at;
                next_at += i;
                s
            }
            None => Instant::now(),
        };
        let result = execute(&mut target, op, &value).await;
        if !shared.measuring.load(Ordering::Relaxed) {
            continue;
        }
        match result {
            Ok(()) => {
                let us = started.elapsed().as_micros() as u64;
                let before = shared.measured_ops.fetch_add(1, Ordering::Relaxed);
                // With --ops, exactly that many are counted; the tasks then stop themselves.
                let limit = args.ops.filter(|_| !w.is_load()).unwrap_or(u64::MAX);
                if before < limit {
                    figures.latency_us.saturating_record(us.max(1));
                }
                if before + 1 >= limit {
                    shared.stop.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => {
                *figures.errors.entry(error_kind(&e)).or_default() += 1;
                shared.measured_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    figures
}

fn progress_bar(len: u64, prefix: String) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {elapsed_precise} {msg}")
            .expect("progress template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix);
    pb
}

/// Runs one point and returns (and prints, and appends to `--json`) its figures.
pub async fn point(
    args: &BenchArgs,
    targets: &[Target],
    w: Workload,
    clients: usize,
    seed: u64,
) -> Result<BenchRecord> {
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        measured_ops: AtomicU64::new(0),
        measured_errors: AtomicU64::new(0),
        next_load: AtomicU64::new(0),
    });
    let args_arc = Arc::new(args.clone());
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let t = targets[i % targets.len()].clone();
            tokio::spawn(task(
                t,
                w,
                args_arc.clone(),
                shared.clone(),
                i,
                clients,
                seed,
            ))
        })
        .collect();
    let label = args.label.clone().unwrap_or_else(|| cli_name(&args.target));
    let prefix = format!("{label} {} x{clients}", w.name());
    let loading = w.is_load();
    if !loading && args.warmup_secs > 0 {
        let pb = progress_bar(args.warmup_secs * 10, format!("{prefix} warm-up"));
        for i in 0..args.warmup_secs * 10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            pb.set_position(i + 1);
        }
        pb.finish_and_clear();
    }
    let pids = ServerPids {
        pids: args.server_pids.clone(),
        file: args.server_pids_file.clone(),
    };
    let cpu_before = pids.sample();
    let own_cpu_before = cluster::cpu_seconds(std::process::id());
    shared.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let profile = spawn_profile(args, &label, w, clients);
    wait_window(args, &shared, &prefix, loading, started, &tasks).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed_s = started.elapsed().as_secs_f64();
    let cpu_after = pids.sample();
    let own_cpu_after = cluster::cpu_seconds(std::process::id());
    shared.stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut errors: HashMap<String, u64> = HashMap::new();
    for t in tasks {
        let f = t.await.context("a client task panicked")?;
        hist.add(&f.latency_us)?;
        for (k, n) in f.errors {
            *errors.entry(k).or_default() += n;
        }
    }
    if let Some(p) = profile {
        match p.await? {
            Ok(files) => println!(
                "flamegraphs: {}",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Err(e) => eprintln!("profiling failed: {e:#}"),
        }
    }
    let server_cpu_s = match (&cpu_before, &cpu_after) {
        (Some(b), Some(a)) => cluster::cpu_used(b, a),
        _ => None,
    };
    let mut record = make_record(
        args,
        label,
        w,
        clients,
        elapsed_s,
        &hist,
        &errors,
        server_cpu_s,
    );
    record.client_cpu_s = own_cpu_before
        .zip(own_cpu_after)
        .map(|(before, after)| after - before);
    print_point(&record, &errors);
    if let Some(path) = &args.json {
        append_json(path, &record)?;
    }
    Ok(record)
}

/// Waits out the measured window: the duration, the op count, or (a load) every key written.
async fn wait_window(
    args: &BenchArgs,
    shared: &Shared,
    prefix: &str,
    loading: bool,
    started: Instant,
    tasks: &[tokio::task::JoinHandle<TaskFigures>],
) {
    let (len, by_ops) = match (loading, args.ops) {
        (true, _) => (args.keys, true),
        (false, Some(n)) => (n, true),
        (false, None) => (args.duration_secs * 10, false),
    };
    let pb = progress_bar(len, prefix.to_string());
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ops = shared.measured_ops.load(Ordering::Relaxed);
        let errs = shared.measured_errors.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        pb.set_message(format!(
            "{:.0} ops/s, {errs} errors",
            ops as f64 / secs.max(1e-3)
        ));
        let done = if loading {
            pb.set_position(ops + errs);
            tasks.iter().all(|t| t.is_finished())
        } else if by_ops {
            pb.set_position(ops.min(len));
            ops >= len && tasks.iter().all(|t| t.is_finished())
        } else {
            pb.set_position((secs * 10.0) as u64);
            secs >= args.duration_secs as f64
        };
        if done {
            break;
        }
    }
    pb.finish_and_clear();
}

fn spawn_profile(
    args: &BenchArgs,
    label: &str,
    w: Workload,
    clients: usize,
) -> Option<tokio::task::JoinHandle<Result<Vec<std::path::PathBuf>>>> {
    let dir = args.profile.clone()?;
    let wanted = args.profile_clients.is_empty() || args.profile_clients.contains(&clients);
    if args.target != TargetKind::Flotilla || w.is_load() || !wanted {
        return None;
    }
    let secs = args.duration_secs.clamp(1, 60);
    let pd = args.pd.clone();
    let name = format!("{label}-{}-c{clients}", w.name());
    Some(tokio::spawn(async move {
        cluster::profile_stores(&pd, &dir, &name, secs).await
    }))
}

#[allow(clippy::too_many_arguments)]
fn make_record(
    args: &BenchArgs,
    label: String,
    w: Workload,
    clients: usize,
    elapsed_s: f64,
    hist: &Histogram<u64>,
    errors: &HashMap<String, u64>,
    server_cpu_s: Option<f64>,
) -> BenchRecord {
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    let ops = hist.len();
    BenchRecord {
        label,
        target: cli_name(&args.target),
        workload: w.name(),
        clients,
        value_size: args.value_size,
        keys: args.keys,
        distribution: cli_name(&args.distribution),
        elapsed_s,
        ops,
        errors: errors.values().sum(),
        ops_per_sec: ops as f64 / elapsed_s.max(1e-9),
        latency_ms: Latency {
            p50: ms(0.50),
            p95: ms(0.95),
            p99: ms(0.99),
            p999: ms(0.999),
            max: hist.max() as f64 / 1e3,
        },
        server_cpu_s,
        server_cpu_s_per_kop: server_cpu_s
            .filter(|_| ops > 0)
            .map(|s| s * 1000.0 / ops as f64),
        client_cpu_s: None,
    }
}

fn append_json(path: &std::path::Path, r: &BenchRecord) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(r)?)?;
    Ok(())
}

fn print_point(r: &BenchRecord, errors: &HashMap<String, u64>) {
    println!(
        "{} {} x{}: {:.0} ops/s over {:.1} s, p50 {:.2} p99 {:.2} ms, {} errors{}{}",
        r.label,
        r.workload,
        r.clients,
        r.ops_per_sec,
        r.elapsed_s,
        r.latency_ms.p50,
        r.latency_ms.p99,
        r.errors,
        r.server_cpu_s_per_kop.map_or(String::new(), |c| format!(
            ", server CPU {c:.3} s per 1k ops"
        )),
        r.client_cpu_s.map_or(String::new(), |c| format!(
            ", load generator {:.2} cores",
            c / r.elapsed_s.max(1e-9)
        ))
    );
    let mut kinds: Vec<_> = errors.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1));
    for (kind, n) in kinds.into_iter().take(3) {
        println!("    {n} x {kind}");
    }
}

/// Every point of the run as one table.
pub fn print_table(records: &[BenchRecord]) {
    println!();
    println!(
        "{:<18} {:<10} {:>7} {:>10} {:>8} {:>8} {:>8} {:>9} {:>7} {:>10}",
        "label",
        "workload",
        "clients",
        "ops/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "cpu s/kop"
    );
    for r in records {
        println!(
            "{:<18} {:<10} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>7} {:>10}",
            r.label,
            r.workload,
            r.clients,
            r.ops_per_sec,
            r.latency_ms.p50,
            r.latency_ms.p95,
            r.latency_ms.p99,
            r.latency_ms.p999,
            r.errors,
            r.server_cpu_s_per_kop
                .map_or("-".to_string(), |c| format!("{c:.3}"))
        );
    }
}
