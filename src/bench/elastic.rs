//! `flotilla bench-elastic`: a cluster that grows and shrinks under load, measured. It starts a
//! PD group and `--stores` stores (each its own process on 127.0.0.1), writes `--keys` raw keys,
//! and runs a YCSB-A load (50% reads, 50% updates) from `--clients` tasks of the official
//! client for the whole run, through five phases:
//!
//! 1. `before`: `--steady-secs` of the starting cluster;
//! 2. `scale-out`: `--add` stores join; the phase lasts until PD has balanced them (every up
//!    store's region and leader counts within `--balance-pct` of the mean);
//! 3. `between`: `--steady-secs` of the grown cluster;
//! 4. `scale-in`: the first `--remove` stores are decommissioned (`DELETE
//!    /pd/api/v1/store/{id}`); the phase lasts until PD has made each a tombstone (then it is
//!    stopped) and the rest are balanced again;
//! 5. `after`: `--steady-secs` of the shrunk cluster.
//!
//! Per phase it reports operations per second, latency p50/p99 and failed operations (errors
//! that surfaced through the client's own retries); then the time each scaling step took, the
//! snapshot bytes the stores sent, and a read-back of every key: each key must hold the last
//! value whose write was acknowledged, or one written after it whose outcome is unknown (task
//! `i` alone updates the keys `k` with `k % clients == i`, so every key's writes are ordered).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tikv_client::RawClient;

use super::keys::key_name;
use crate::chaos::cluster::ChaosCluster;
use crate::ctl::{http_get, http_get_json, pd_endpoints};

/// Options of `flotilla bench-elastic`.
#[derive(Args, Debug, Clone)]
pub struct ElasticArgs {
    /// Where the run keeps its cluster's data and logs (cleared first).
    #[arg(long, default_value = "./data/elastic")]
    pub dir: PathBuf,
    /// PD members.
    #[arg(long, default_value_t = 3)]
    pub pd_members: usize,
    /// Stores at the start.
    #[arg(long, default_value_t = 3)]
    pub stores: usize,
    /// Stores added in the scale-out phase.
    #[arg(long, default_value_t = 3)]
    pub add: usize,
    /// Stores (the first ones started) decommissioned in the scale-in phase.
    #[arg(long, default_value_t = 3)]
    pub remove: usize,
    /// Keys written before the load starts (and read back at the end).
    #[arg(long, default_value_t = 200_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Concurrent clients of the YCSB-A load.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds of each steady phase (before, between, after).
    #[arg(long, default_value_t = 30)]
    pub steady_secs: u64,
    /// Longest wait for a scaling phase to finish.
    #[arg(long, default_value_t = 900)]
    pub phase_timeout_secs: u64,
    /// A store is balanced when its region and leader counts are within this percentage of the
    /// mean over up stores.
    #[arg(long, default_value_t = 10.0)]
    pub balance_pct: f64,
    /// TOML file with store settings (default: the playground's small regions).
    #[arg(long)]
    pub store_config: Option<PathBuf>,
    /// Append the run's figures as one JSON line to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Seed of the key choices (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// The phases, in order.
const PHASES: [&str; 5] = ["before", "scale-out", "between", "scale-in", "after"];

/// Keys per batch put of the initial load.
const LOAD_BATCH: u64 = 256;

/// Attempts of one batch of the initial load or of the read-back.
const BATCH_TRIES_MAX: u32 = 20;

/// What the load tasks share with the conductor.
struct Load {
    stop: AtomicBool,
    /// Index into [`PHASES`] of the phase now running.
    phase: AtomicUsize,
    figures: Mutex<Vec<PhaseFigures>>,
}

/// One phase's client-side figures.
struct PhaseFigures {
    latency_us: Histogram<u64>,
    ops: u64,
    errors: BTreeMap<String, u64>,
    started: Option<Instant>,
    ended: Option<Instant>,
}

impl PhaseFigures {
    fn new() -> Result<PhaseFigures> {
        Ok(PhaseFigures {
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
            ops: 0,
            errors: BTreeMap::new(),
            started: None,
            ended: None,
        })
    }

    fn seconds(&self) -> f64 {
        match (self.started, self.ended) {
            (Some(s), Some(e)) => e.duration_since(s).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// What one task wrote to one of its keys: the last acknowledged value and the values tried
/// after it whose outcome is unknown.
#[derive(Default, Clone)]
struct KeyWrites {
    acked: Option<Vec<u8>>,
    unknown: Vec<Vec<u8>>,
}

/// Runs the benchmark; prints the report and appends it to `--json`.
pub async fn run(args: ElasticArgs) -> Result<()> {
    if args.remove > args.stores + args.add || args.stores + args.add - args.remove < 3 {
        bail!("--remove must leave at least 3 stores");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    println!(
        "flotilla bench-elastic: {} stores, +{} -{}, {} keys, {} clients YCSB-A, seed {seed}",
        args.stores, args.add, args.remove, args.keys, args.clients
    );
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("clearing {}", args.dir.display()))?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let dir = args.dir.canonicalize()?;
    let config = match &args.store_config {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        // The playground's regions (a split every 2,000 keys): 200,000 keys spread over about
        // a hundred regions.
        None => {
            let (_, settings) = crate::playground::PLAYGROUND_STORE_CONFIG
                .split_once('\n')
                .expect("a header line");
            format!("# Written by `flotilla bench-elastic`.\n{settings}")
        }
    };
    let mut cluster = ChaosCluster::start_with_config(&dir, args.pd_members, args.stores, &config)?;
    let result = conduct(&args, seed, &mut cluster).await;
    cluster.stop();
    let report = result?;
    if let Some(path) = &args.json {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "{report}")?;
    }
    if report["readback"]["wrong"].as_u64() != Some(0) {
        bail!("read-back found keys that lost an acknowledged write");
    }
    Ok(())
}

async fn conduct(args: &ElasticArgs, seed: u64, cluster: &mut ChaosCluster) -> Result<Value> {
    cluster.wait_started(1, Duration::from_secs(300)).await?;
    for i in 0..cluster.stores() {
        cluster.store_id(i).await?;
    }
    let client = RawClient::new_with_config(
        pd_endpoints(&cluster.pd_addr),
        crate::chaos::txn::client_config(),
    )
    .await?;
    let value = vec![b'v'; args.value_size];
    let loaded = Instant::now();
    initial_load(&client, args.keys, &value).await?;
    println!(
        "loaded {} keys in {:.1} s",
        args.keys,
        loaded.elapsed().as_secs_f64()
    );
    let settled = wait_balanced(cluster, args, &[], "initial").await?;
    println!("regions spread in {:.1} s", settled.as_secs_f64());

    let load = Arc::new(Load {
        stop: AtomicBool::new(false),
        phase: AtomicUsize::new(0),
        figures: Mutex::new(
            (0..PHASES.len())
                .map(|_| PhaseFigures::new())
                .collect::<Result<_>>()?,
        ),
    });
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        tasks.push(tokio::spawn(task(
            client.clone(),
            load.clone(),
            i,
            args.clients,
            args.keys,
            args.value_size,
            seed,
        )));
    }
    let mut bytes_moved = BytesMoved::default();
    let steady = Duration::from_secs(args.steady_secs);

    enter(&load, 0);
    tokio::time::sleep(steady).await;
    bytes_moved.sample(cluster).await;

    enter(&load, 1);
    let mut added = Vec::new();
    for _ in 0..args.add {
        let i = cluster.add_store()?;
        added.push(i);
    }
    for &i in &added {
        store_id_within(cluster, i, Duration::from_secs(60)).await?;
    }
    let scale_out = wait_balanced(cluster, args, &[], "scale-out").await?;
    println!("scale-out balanced in {:.1} s", scale_out.as_secs_f64());
    bytes_moved.sample(cluster).await;

    enter(&load, 2);
    tokio::time::sleep(steady).await;
    bytes_moved.sample(cluster).await;

    enter(&load, 3);
    let leaving: Vec<usize> = (0..args.remove).collect();
    let asked = Instant::now();
    for &i in &leaving {
        let id = cluster.store_id(i).await?;
        cluster.delete_store(id).await?;
    }
    let mut tombstoned = BTreeMap::new();
    let deadline = asked + Duration::from_secs(args.phase_timeout_secs);
    while tombstoned.len() < leaving.len() {
        if Instant::now() > deadline {
            bail!("decommissioned stores were not tombstones within the phase timeout");
        }
        bytes_moved.sample(cluster).await;
        for &i in &leaving {
            if tombstoned.contains_key(&i) {
                continue;
            }
            let id = cluster.store_id(i).await?;
            if let Ok((state, left)) = cluster.store_state(id).await {
                if state == "Tombstone" {
                    tombstoned.insert(i, asked.elapsed());
                    cluster.retire(i);
                    println!(
                        "store {id} is a tombstone after {:.1} s",
                        asked.elapsed().as_secs_f64()
                    );
                } else {
                    tracing::debug!(store_id = id, left, "decommissioning");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rebalanced = wait_balanced(cluster, args, &leaving, "scale-in").await?;
    let scale_in = asked.elapsed();
    println!(
        "scale-in done in {:.1} s (balanced again {:.1} s after the last tombstone)",
        scale_in.as_secs_f64(),
        rebalanced.as_secs_f64()
    );

    enter(&load, 4);
    tokio::time::sleep(steady).await;
    load.stop.store(true, Ordering::SeqCst);
    let now = Instant::now();
    load.figures.lock().expect("figures")[4].ended = Some(now);
    let mut writes: BTreeMap<u64, KeyWrites> = BTreeMap::new();
    for t in tasks {
        writes.extend(t.await.context("a load task panicked")?);
    }
    let (checked, wrong, examples) = read_back(&client, args.keys, &value, &writes).await?;
    let report = report(
        args,
        seed,
        &load,
        scale_out,
        &tombstoned,
        scale_in,
        &bytes_moved,
        checked,
        wrong,
        &examples,
    );
    Ok(report)
}

/// Starts phase `i` (and ends the one before it).
fn enter(load: &Load, i: usize) {
    let now = Instant::now();
    let mut f = load.figures.lock().expect("figures");
    if i > 0 {
        f[i - 1].ended = Some(now);
    }
    f[i].started = Some(now);
    load.phase.store(i, Ordering::SeqCst);
    println!("phase {}", PHASES[i]);
}

/// Writes keys `0..keys` in batches, each tried until it succeeds (a bounded number of times).
async fn initial_load(client: &RawClient, keys: u64, value: &[u8]) -> Result<()> {
    let mut start = 0;
    let mut pending = Vec::new();
    while start < keys {
        let end = (start + LOAD_BATCH).min(keys);
        let client = client.clone();
        let value = value.to_vec();
        pending.push(tokio::spawn(async move {
            let pairs: Vec<(String, Vec<u8>)> =
                (start..end).map(|k| (key_name(k), value.clone())).collect();
            let mut tries = 0;
            loop {
                match client.batch_put(pairs.clone()).await {
                    Ok(()) => return Ok(()),
                    Err(e) if tries >= BATCH_TRIES_MAX => {
                        return Err(anyhow::anyhow!("loading keys {start}..{end}: {e}"))
                    }
                    Err(_) => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }));
        if pending.len() >= 16 {
            pending.remove(0).await??;
        }
        start = end;
    }
    for p in pending {
        p.await??;
    }
    Ok(())
}

/// One client: YCSB-A until told to stop; updates only its own keys (so the read-back can tell
/// what each key must hold). Returns what it wrote.
async fn task(
    client: RawClient,
    load: Arc<Load>,
    index: usize,
    clients: usize,
    keys: u64,
    value_size: usize,
    seed: u64,
) -> BTreeMap<u64, KeyWrites> {
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9));
    let mut writes: BTreeMap<u64, KeyWrites> = BTreeMap::new();
    let own = keys / clients as u64;
    let mut seq = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        let phase = load.phase.load(Ordering::Relaxed);
        let started = Instant::now();
        let outcome = if rng.gen_bool(0.5) || own == 0 {
            client.get(key_name(rng.gen_range(0..keys))).await.map(drop)
        } else {
            let k = rng.gen_range(0..own) * clients as u64 + index as u64;
            seq += 1;
            let mut v = format!("t{index}-{seq}-").into_bytes();
            v.resize(value_size.max(v.len()), b'w');
            let r = client.put(key_name(k), v.clone()).await;
            let w = writes.entry(k).or_default();
            if r.is_ok() {
                w.acked = Some(v);
                w.unknown.clear();
            } else {
                w.unknown.push(v);
            }
            r
        };
        let us = started.elapsed().as_micros() as u64;
        let mut f = load.figures.lock().expect("figures");
        let p = &mut f[phase];
        match outcome {
            Ok(()) => {
                p.ops += 1;
                p.latency_us.saturating_record(us.max(1));
            }
            Err(e) => {
                let kind: String = format!("{e}").chars().take(90).collect();
                *p.errors.entry(kind).or_default() += 1;
            }
        }
    }
    writes
}

/// Reads every key back; (keys checked, keys holding a value they must not, a few examples).
async fn read_back(
    client: &RawClient,
    keys: u64,
    loaded: &[u8],
    writes: &BTreeMap<u64, KeyWrites>,
) -> Result<(u64, u64, Vec<String>)> {
    let mut wrong = 0;
    let mut examples = Vec::new();
    let mut start = 0;
    while start < keys {
        let end = (start + LOAD_BATCH).min(keys);
        let names: Vec<String> = (start..end).map(key_name).collect();
        let mut tries = 0;
        let got = loop {
            match client.batch_get(names.clone()).await {
                Ok(pairs) => break pairs,
                Err(e) if tries >= BATCH_TRIES_MAX => {
                    bail!("reading back keys {start}..{end}: {e}")
                }
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let got: BTreeMap<Vec<u8>, Vec<u8>> = got
            .into_iter()
            .map(|p| (Vec::<u8>::from(p.0), p.1))
            .collect();
        for k in start..end {
            let actual = got.get(key_name(k).as_bytes());
            let w = writes.get(&k).cloned().unwrap_or_default();
            let expected = w.acked.clone().unwrap_or_else(|| loaded.to_vec());
            let ok = actual.is_some_and(|a| *a == expected || w.unknown.contains(a));
            if !ok {
                wrong += 1;
                if examples.len() < 5 {
                    examples.push(format!(
                        "{}: {}",
                        key_name(k),
                        actual.map_or("missing".to_string(), |a| {
                            String::from_utf8_lossy(&a[..a.len().min(24)]).into_owned()
                        })
                    ));
                }
            }
        }
        start = end;
    }
    Ok((keys, wrong, examples))
}

/// Waits until every up store that is not in `leaving` has region and leader counts within
/// `--balance-pct` of the mean; the time it took.
async fn wait_balanced(
    cluster: &ChaosCluster,
    args: &ElasticArgs,
    leaving: &[usize],
    what: &str,
) -> Result<Duration> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.phase_timeout_secs);
    let mut printed = Instant::now();
    let leaving_ids: Vec<u64> = leaving
        .iter()
        .filter_map(|i| cluster.known_store_id(*i))
        .collect();
    loop {
        let last = match balance_state(cluster, &leaving_ids, args.balance_pct).await {
            Ok(None) => return Ok(started.elapsed()),
            Ok(Some(why)) => why,
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!(
                "{what}: not balanced within {} s: {last}",
                args.phase_timeout_secs
            );
        }
        if printed.elapsed() > Duration::from_secs(10) {
            println!("  {what}: {last}");
            printed = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// None if balanced, else a line saying what is not.
async fn balance_state(
    cluster: &ChaosCluster,
    leaving: &[u64],
    pct: f64,
) -> Result<Option<String>> {
    let v = http_get_json(&cluster.pd_http_addrs(), "/pd/api/v1/stores").await?;
    let mut counts = Vec::new();
    for s in v["stores"].as_array().into_iter().flatten() {
        let id = s["store"]["id"].as_u64().unwrap_or(0);
        if s["store"]["state"] != "Up" || leaving.contains(&id) {
            continue;
        }
        let regions = s["status"]["region_count"].as_u64().unwrap_or(0);
        let leaders = s["status"]["leader_count"].as_u64().unwrap_or(0);
        counts.push((id, regions, leaders));
    }
    if counts.is_empty() {
        return Ok(Some("no up store".into()));
    }
    let n = counts.len() as f64;
    let mean_r = counts.iter().map(|c| c.1 as f64).sum::<f64>() / n;
    let mean_l = counts.iter().map(|c| c.2 as f64).sum::<f64>() / n;
    let within = |x: u64, mean: f64| (x as f64 - mean).abs() <= mean * pct / 100.0;
    let ok = counts
        .iter()
        .all(|c| within(c.1, mean_r) && within(c.2, mean_l));
    if ok {
        return Ok(None);
    }
    let line = counts
        .iter()
        .map(|(id, r, l)| format!("store {id}: {r} regions, {l} leaders"))
        .collect::<Vec<_>>()
        .join("; ");
    Ok(Some(line))
}

/// Snapshot bytes each store has sent, as last read from its `/metrics` (a store that stops
/// keeps its last reading).
#[derive(Default)]
struct BytesMoved {
    by_store: BTreeMap<usize, u64>,
}

impl BytesMoved {
    async fn sample(&mut self, cluster: &ChaosCluster) {
        for i in 0..cluster.stores() {
            let Some(addr) = cluster.live_status_addr(i) else {
                continue;
            };
            let Ok(body) = http_get(&addr, "/metrics").await else {
                continue;
            };
            let text = String::from_utf8_lossy(&body);
            if let Some(n) = metric_value(
                &text,
                "flotilla_transport_raft_messages_total{event=\"snapshot_bytes_sent\"}",
            ) {
                self.by_store.insert(i, n as u64);
            }
        }
    }

    fn total(&self) -> u64 {
        self.by_store.values().sum()
    }
}

/// The value of the sample `name` (with its labels, as written) in a Prometheus text page.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.trim().parse().ok())
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &ElasticArgs,
    seed: u64,
    load: &Load,
    scale_out: Duration,
    tombstoned: &BTreeMap<usize, Duration>,
    scale_in: Duration,
    bytes: &BytesMoved,
    checked: u64,
    wrong: u64,
    examples: &[String],
) -> Value {
    let f = load.figures.lock().expect("figures");
    let mut phases = Vec::new();
    println!(
        "\n| phase | seconds | ops/s | p50 ms | p99 ms | failed ops |\n|---|---|---|---|---|---|"
    );
    for (name, p) in PHASES.iter().zip(f.iter()) {
        let secs = p.seconds();
        let rate = if secs > 0.0 { p.ops as f64 / secs } else { 0.0 };
        let p50 = p.latency_us.value_at_quantile(0.5) as f64 / 1000.0;
        let p99 = p.latency_us.value_at_quantile(0.99) as f64 / 1000.0;
        let failed: u64 = p.errors.values().sum();
        println!("| {name} | {secs:.0} | {rate:.0} | {p50:.2} | {p99:.2} | {failed} |");
        for (kind, n) in &p.errors {
            println!("|   {n} x {kind} | | | | | |");
        }
        phases.push(json!({
            "phase": name, "seconds": secs, "ops": p.ops, "ops_per_s": rate,
            "p50_ms": p50, "p99_ms": p99, "failed": failed, "errors": p.errors,
        }));
    }
    let tomb: Vec<f64> = tombstoned.values().map(Duration::as_secs_f64).collect();
    println!(
        "\nscale-out (+{}) balanced in {:.1} s; scale-in (-{}) done in {:.1} s (tombstones after {}); snapshot bytes sent {:.1} MiB; read-back: {checked} keys, {wrong} wrong{}",
        args.add,
        scale_out.as_secs_f64(),
        args.remove,
        scale_in.as_secs_f64(),
        tomb.iter().map(|t| format!("{t:.1} s")).collect::<Vec<_>>().join(", "),
        bytes.total() as f64 / (1 << 20) as f64,
        if examples.is_empty() { String::new() } else { format!(" ({})", examples.join("; ")) },
    );
    json!({
        "seed": seed,
        "stores": args.stores, "add": args.add, "remove": args.remove,
        "keys": args.keys, "clients": args.clients, "value_size": args.value_size,
        "phases": phases,
        "scale_out_balanced_s": scale_out.as_secs_f64(),
        "scale_in_done_s": scale_in.as_secs_f64(),
        "tombstone_after_s": tomb,
        "snapshot_bytes_sent": bytes.total(),
        "readback": {"checked": checked, "wrong": wrong, "examples": examples},
    })
}

/// Learns store `i`'s id, retrying while it starts.
async fn store_id_within(cluster: &mut ChaosCluster, i: usize, bound: Duration) -> Result<u64> {
    let deadline = Instant::now() + bound;
    loop {
        match cluster.store_id(i).await {
            Ok(id) => return Ok(id),
            Err(e) if Instant::now() > deadline => return Err(e.context("new store's id")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_sample_is_read_by_its_labels() {
        let text = "# HELP x\nflotilla_transport_raft_messages_total{event=\"sent\"} 12\nflotilla_transport_raft_messages_total{event=\"snapshot_bytes_sent\"} 4096\n";
        assert_eq!(
            metric_value(
                text,
                "flotilla_transport_raft_messages_total{event=\"snapshot_bytes_sent\"}"
            ),
            Some(4096.0)
        );
        assert_eq!(metric_value(text, "absent"), None);
    }
}
