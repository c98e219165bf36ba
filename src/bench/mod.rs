//! `flotilla bench`: a load generator that drives Flotilla, etcd or the bare disk with the same
//! code, so the client side costs the same for every contender. Workloads: raw put and get, YCSB
//! A, B, C and E, a transactional read-modify-write, and Flotilla's blind-write transactions.
//! Each (workload, client count) point runs a warm-up and a measured window and reports
//! throughput, latency percentiles, errors by kind, and — given the servers' pids — the CPU
//! seconds the servers spent per 1,000 operations. Points print as a table and append to a JSON
//! lines file that `flotilla bench-report` turns into tables and plots.

mod cluster;
pub mod elastic;
mod keys;
mod run;
mod target;

pub use keys::key_name;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::report::BenchRecord;
use keys::Distribution;
use target::{Target, TargetKind};

/// Options of `flotilla bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// TLS of a cluster with `[security]` set (target flotilla).
    #[command(flatten)]
    pub tls: crate::ctl::TlsArgs,
    /// What to drive.
    #[arg(long, value_enum, default_value = "flotilla")]
    pub target: TargetKind,
    /// PD address (target flotilla).
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub pd: String,
    /// etcd client URLs, comma-separated (target etcd).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// etcd client connections the tasks share (target etcd).
    #[arg(long, default_value_t = 4)]
    pub etcd_connections: usize,
    /// etcd reads are serializable (served by any member, no quorum) instead of linearizable.
    #[arg(long)]
    pub etcd_serializable: bool,
    /// Where the disk target writes its probe file.
    #[arg(long, default_value = "./data/fsync-probe")]
    pub fsync_dir: PathBuf,
    /// Name of this contender in the output (default: the target's name).
    #[arg(long)]
    pub label: Option<String>,
    /// Workloads, comma-separated; run one after the other.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "raw-put")]
    pub workload: Vec<Workload>,
    /// Concurrent clients, comma-separated: every workload runs once per count.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    pub concurrency: Vec<usize>,
    /// Seconds of measured load per point.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Measured operations per point, instead of a duration.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Seconds of unmeasured load before each point.
    #[arg(long, default_value_t = 5)]
    pub warmup_secs: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// How keys are drawn.
    #[arg(long, value_enum, default_value = "uniform")]
    pub distribution: Distribution,
    /// Operations per second over all clients (0: as fast as they go). Latency is then counted
    /// from each operation's scheduled start, so a stall is not hidden.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Keys per transaction (`txn-rmw`, `txn-rmw-async`, `txn-rmw-1pc`, `txn`, `txn-async`).
    #[arg(long, alias = "txn-writes", default_value_t = 4)]
    pub txn_keys: usize,
    /// Longest scan of YCSB E (lengths are uniform in 1..=this).
    #[arg(long, default_value_t = 100)]
    pub scan_length: u32,
    /// Seed of the key choices (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Append each point as one JSON line to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Server pids whose CPU time is counted, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// File with server pids (one per line), re-read at every sample.
    #[arg(long)]
    pub server_pids_file: Option<PathBuf>,
    /// Save every store's flamegraph, taken during each measured window, under this directory
    /// (target flotilla).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Profile only the points with these client counts, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub profile_clients: Vec<usize>,
    /// Before the first measured workload, wait until PD reports at least this many regions
    /// with balanced leaders (target flotilla).
    #[arg(long, default_value_t = 0)]
    pub min_regions: u64,
    /// Longest wait for `--min-regions`.
    #[arg(long, default_value_t = 180)]
    pub wait_secs: u64,
}

/// What one operation of a benchmark is.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Writes every key once (raw keys on Flotilla), then stops.
    Load,
    /// Writes every key once through single-key transactions (Flotilla's transactional
    /// keyspace; plain puts on etcd), then stops.
    LoadTxn,
    /// One raw put.
    RawPut,
    /// One raw get.
    RawGet,
    /// YCSB A: 50% reads, 50% updates.
    YcsbA,
    /// YCSB B: 95% reads, 5% updates.
    YcsbB,
    /// YCSB C: reads only.
    YcsbC,
    /// YCSB E: 95% short scans, 5% inserts.
    YcsbE,
    /// A transaction that reads `--txn-keys` keys and writes them back.
    TxnRmw,
    /// The same with async commit (Flotilla; etcd runs plain `txn-rmw`).
    TxnRmwAsync,
    /// The same on `--txn-keys` adjacent keys (one region, nearly always), with one-phase
    /// commit where they are in one region and async commit otherwise (Flotilla; etcd runs plain
    /// `txn-rmw` on the adjacent keys).
    #[value(name = "txn-rmw-1pc")]
    TxnRmw1pc,
    /// A transaction of `--txn-keys` blind writes, two-phase commit (Flotilla).
    Txn,
    /// The same with async commit (Flotilla).
    TxnAsync,
    /// A single-key transaction with one-phase commit (Flotilla).
    #[value(name = "txn-1pc", alias = "txn1pc")]
    Txn1pc,
}

impl Workload {
    /// The name as the command line spells it.
    pub fn name(self) -> String {
        cli_name(&self)
    }

    fn is_load(self) -> bool {
        matches!(self, Workload::Load | Workload::LoadTxn)
    }
}

/// A `--flag` value as the command line spells it.
pub fn cli_name(v: &impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

fn validate(args: &BenchArgs) -> Result<()> {
    if args.concurrency.is_empty() || args.concurrency.iter().any(|&c| c == 0 || c > 4096) {
        bail!("--concurrency: every count must be in 1..=4096");
    }
    if args.keys == 0 || args.value_size == 0 {
        bail!("--keys and --value-size must be positive");
    }
    if args.txn_keys == 0 || args.txn_keys > 64 || args.txn_keys as u64 > args.keys {
        bail!("--txn-keys must be in 1..=64 and at most --keys");
    }
    if args.scan_length == 0 {
        bail!("--scan-length must be positive");
    }
    if args.ops == Some(0) || (args.ops.is_none() && args.duration_secs == 0) {
        bail!("a point needs --duration-secs > 0 or --ops > 0");
    }
    if args.target == TargetKind::Disk && args.workload.iter().any(|w| *w != Workload::RawPut) {
        bail!("--target disk runs only the raw-put workload (an fdatasync'd append)");
    }
    Ok(())
}

/// Connects to the target: one handle per connection, shared round-robin by the tasks.
async fn connect(args: &BenchArgs) -> Result<Vec<Target>> {
    Ok(match args.target {
        TargetKind::Flotilla => vec![Target::flotilla(&args.pd).await?],
        TargetKind::Etcd => {
            Target::etcd(
                &args.endpoints,
                args.etcd_connections,
                args.etcd_serializable,
            )
            .await?
        }
        TargetKind::Disk => vec![Target::disk(&args.fsync_dir)?],
    })
}

/// Runs every (workload, client count) point and prints and records the figures.
pub async fn run(args: BenchArgs) -> Result<()> {
    validate(&args)?;
    let targets = connect(&args).await?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("seed {seed}");
    let mut records: Vec<BenchRecord> = vec![];
    let mut shape_checked = false;
    for &w in &args.workload {
        if w.is_load() {
            let clients = args.concurrency.iter().copied().max().unwrap_or(1).min(256);
            records.push(run::point(&args, &targets, w, clients, seed).await?);
            continue;
        }
        if !shape_checked && args.min_regions > 0 && args.target == TargetKind::Flotilla {
            wait_for_regions(&args).await?;
            shape_checked = true;
        }
        for &clients in &args.concurrency {
            records.push(run::point(&args, &targets, w, clients, seed).await?);
        }
    }
    run::print_table(&records);
    print_ratios(&records);
    Ok(())
}

async fn wait_for_regions(args: &BenchArgs) -> Result<()> {
    let timeout = Duration::from_secs(args.wait_secs);
    let (shape, reached) = cluster::wait_for_shape(&args.pd, args.min_regions, timeout).await?;
    println!(
        "cluster: {} regions, leaders per store {:?}{}",
        shape.regions,
        shape.leaders_per_store,
        if reached {
            ""
        } else {
            " (NOT the shape asked for: the figures below are for this one)"
        }
    );
    Ok(())
}

/// Each workload against the run's first measured workload at the same client count.
fn print_ratios(records: &[BenchRecord]) {
    let measured: Vec<&BenchRecord> = records
        .iter()
        .filter(|r| !r.workload.starts_with("load"))
        .collect();
    let Some(first) = measured.first() else {
        return;
    };
    for r in measured.iter().filter(|r| r.workload != first.workload) {
        let Some(base) = measured
            .iter()
            .find(|b| b.workload == first.workload && b.clients == r.clients)
        else {
            continue;
        };
        if base.ops_per_sec > 0.0 && base.latency_ms.p99 > 0.0 {
            println!(
                "{} vs {} at {} clients: throughput x{:.2}, p99 x{:.2}",
                r.workload,
                base.workload,
                r.clients,
                r.ops_per_sec / base.ops_per_sec,
                r.latency_ms.p99 / base.latency_ms.p99
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    /// Every workload the README's list names parses as the command line spells it, and every
    /// workload is in the list.
    #[test]
    fn the_readme_names_every_workload_as_the_command_line_spells_it() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("Workloads: ")
            .expect("the README lists the workloads");
        let list = &readme[start..start + readme[start..].find("\n\n").unwrap()];
        let named: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
        for w in Workload::value_variants() {
            assert!(
                named.contains(&w.name().as_str()),
                "{} not listed",
                w.name()
            );
        }
        for name in named
            .iter()
            .filter(|n| !n.starts_with('-') && !n.contains(' '))
        {
            assert!(Workload::from_str(name, false).is_ok(), "README: {name}");
        }
    }
}
