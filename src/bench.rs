//! `flotilla bench`: a small load generator. Today it drives raw puts through the official
//! client from many concurrent tasks and reports throughput and latency percentiles.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use tikv_client::{Config, RawClient};

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
}

/// Runs the raw-put workload and prints the figures.
pub async fn run(args: BenchArgs) -> Result<()> {
    let cfg = Config::default()
        .with_default_keyspace()
        .with_timeout(Duration::from_secs(10));
    let client = RawClient::new_with_config(vec![args.pd.clone()], cfg)
        .await
        .context("connecting")?;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    for t in 0..args.concurrency {
        let client = client.clone();
        let (measuring, stop, errors) = (measuring.clone(), stop.clone(), errors.clone());
        let value = vec![b'v'; args.value_size];
        let keys = args.keys;
        tasks.push(tokio::spawn(async move {
            let mut lat_us = Vec::new();
            let mut i = t as u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("bench{:012}", (i.wrapping_mul(2_654_435_761)) % keys);
                i += KEY_STRIDE;
                let start = Instant::now();
                let ok = client.put(key, value.clone()).await.is_ok();
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
            .unwrap_or(0)
    };
    println!(
        "workload      raw put, {} byte values, {} keys",
        args.value_size, args.keys
    );
    println!("concurrency   {}", args.concurrency);
    println!("duration      {:.1} s", elapsed);
    println!(
        "acknowledged  {} ({:.0} writes/s)",
        all.len(),
        all.len() as f64 / elapsed
    );
    println!("errors        {}", errors.load(Ordering::Relaxed));
    println!(
        "latency ms    p50 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}",
        pct(0.50) as f64 / 1e3,
        pct(0.95) as f64 / 1e3,
        pct(0.99) as f64 / 1e3,
        pct(0.999) as f64 / 1e3
    );
    Ok(())
}

/// Stride between a task's successive keys (a prime, so tasks spread over the keyspace).
const KEY_STRIDE: u64 = 7919;
