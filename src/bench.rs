//! `flotilla bench`: a small load generator. It drives raw puts or transactions through the
//! official client from many concurrent tasks and reports throughput and latency percentiles.
//! Several workloads given at once run one after the other against the same cluster, and the
//! last lines compare each one's throughput and p99 with the first's.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use tikv_client::{CheckLevel, Config, RawClient, TransactionClient, TransactionOptions};

/// What one operation of the load is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// One raw put.
    RawPut,
    /// An optimistic transaction of `--txn-writes` puts, two-phase commit.
    Txn,
    /// The same with async commit.
    TxnAsync,
    /// A single-key transaction committed in one phase (1PC).
    #[value(name = "txn-1pc")]
    Txn1pc,
}

/// Options of `flotilla bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// PD address.
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub pd: String,
    /// Concurrent clients (tasks sharing one client connection pool).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Seconds of unmeasured load before.
    #[arg(long, default_value_t = 5)]
    pub warmup_secs: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Distinct keys written.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Workloads, comma-separated; run one after the other.
    #[arg(long, value_delimiter = ',', default_value = "raw-put")]
    pub workload: Vec<Workload>,
    /// Puts per transaction (`txn`, `txn-async`).
    #[arg(long, default_value_t = 4)]
    pub txn_writes: usize,
}

/// Figures of one workload's measured window.
struct Figures {
    ops_per_sec: f64,
    p99_ms: f64,
}

/// The clients a workload needs (both connect through PD).
#[derive(Clone)]
struct Clients {
    raw: RawClient,
    txn: Arc<TransactionClient>,
}

/// One operation of `workload` on `keys`.
async fn one_op(c: &Clients, workload: Workload, keys: Vec<String>, value: &[u8]) -> Result<()> {
    let opts = TransactionOptions::new_optimistic().drop_check(CheckLevel::Warn);
    let opts = match workload {
        Workload::RawPut => {
            return Ok(c.raw.put(keys[0].clone(), value.to_vec()).await?);
        }
        Workload::Txn => opts,
        Workload::TxnAsync => opts.use_async_commit(),
        Workload::Txn1pc => opts.try_one_pc(),
    };
    let mut t = c.txn.begin_with_options(opts).await?;
    for k in keys {
        t.put(k, value.to_vec()).await?;
    }
    if let Err(e) = t.commit().await {
        let _ = t.rollback().await;
        return Err(e.into());
    }
    Ok(())
}

/// Runs the workloads one after the other and prints the figures.
pub async fn run(args: BenchArgs) -> Result<()> {
    let cfg = Config::default()
        .with_default_keyspace()
        .with_timeout(Duration::from_secs(10));
    let clients = Clients {
        raw: RawClient::new_with_config(vec![args.pd.clone()], cfg.clone())
            .await
            .context("connecting")?,
        txn: Arc::new(
            TransactionClient::new_with_config(vec![args.pd.clone()], cfg)
                .await
                .context("connecting")?,
        ),
    };
    let mut results = vec![];
    for w in &args.workload {
        results.push((*w, run_one(&args, &clients, *w).await?));
        println!();
    }
    if let Some((base_w, base)) = results.first() {
        for (w, f) in &results[1..] {
            println!(
                "{w:?} vs {base_w:?}: throughput x{:.2}, p99 x{:.2}",
                f.ops_per_sec / base.ops_per_sec,
                f.p99_ms / base.p99_ms
            );
        }
    }
    Ok(())
}

/// One workload: warm-up, a measured window, figures printed and returned.
async fn run_one(args: &BenchArgs, clients: &Clients, workload: Workload) -> Result<Figures> {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let writes = match workload {
        Workload::Txn | Workload::TxnAsync => args.txn_writes.max(1),
        Workload::RawPut | Workload::Txn1pc => 1,
    };
    let mut tasks = vec![];
    for t in 0..args.concurrency {
        let clients = clients.clone();
        let (measuring, stop, errors) = (measuring.clone(), stop.clone(), errors.clone());
        let value = vec![b'v'; args.value_size];
        let keys = args.keys;
        tasks.push(tokio::spawn(async move {
            let mut lat_us = Vec::new();
            let mut i = t as u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<String> = (0..writes)
                    .map(|_| {
                        i += KEY_STRIDE;
                        format!("bench{:012}", (i.wrapping_mul(2_654_435_761)) % keys)
                    })
                    .collect();
                let start = Instant::now();
                let ok = one_op(&clients, workload, batch, &value).await.is_ok();
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        lat_us.push(start.elapsed().as_micros() as u64);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat_us
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await?);
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1e3
    };
    let ops_per_sec = all.len() as f64 / elapsed;
    println!(
        "workload      {workload:?}, {writes} write(s) of {} bytes per op, {} keys",
        args.value_size, args.keys
    );
    println!("concurrency   {}", args.concurrency);
    println!("duration      {elapsed:.1} s");
    println!("acknowledged  {} ({ops_per_sec:.0} ops/s)", all.len());
    println!("errors        {}", errors.load(Ordering::Relaxed));
    println!(
        "latency ms    p50 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}",
        pct(0.50),
        pct(0.95),
        pct(0.99),
        pct(0.999)
    );
    Ok(Figures {
        ops_per_sec,
        p99_ms: pct(0.99),
    })
}

/// Stride between a task's successive keys (a prime, so tasks spread over the keyspace).
const KEY_STRIDE: u64 = 7919;
