//! `flotilla pd-sim`: one PD, measured under simulated stores and regions over its real gRPC
//! API, so that PD can be sized at a million regions on one machine.
//!
//! Flow: start a `flotilla pd` child on a loopback port ([`pd_proc`]); bootstrap it with the
//! first store and region and PutStore every simulated store (their ids from AllocId, as a
//! store gets them); give the first region its replicas (a heartbeat at a higher conf_ver);
//! split it into `--regions` regions the way a store does, AskBatchSplit then
//! ReportBatchSplit, at most 256 at a time, from the rightmost region; then one warm-up round
//! in which every region's leader heartbeats it once (PD learns the leaders), and the measured
//! run: every store sends its leaders' heartbeats on one RegionHeartbeat stream, spread evenly
//! so that each region heartbeats once per `--heartbeat-interval-secs`, plus a store
//! heartbeat every 10 s. It reports what was sent and handled, PD's CPU and memory from
//! `/proc`, and PD's own heartbeat handling time (`pd_region_heartbeat_seconds`).
//!
//! Shortcuts, said plainly: a new region's peers are placed round-robin over the stores (as
//! balance-region would leave them) rather than on its parent's stores; regions report 64 MiB
//! and 640k keys, above the merge thresholds, so that PD's checkers walk them and leave them;
//! PD's answers (operator steps) are counted, not carried out. PD's data lives on tmpfs by
//! default (`--data-dir` to choose): the tool measures PD's CPU, not the disk.

mod pd_proc;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};
use proto::pdpb::pd_client::PdClient;
use proto::pdpb::{
    AllocIdRequest, AskBatchSplitRequest, BootstrapRequest, GetMembersRequest,
    GetRegionByIdRequest, PutStoreRequest, RegionHeartbeatRequest, ReportBatchSplitRequest,
    RequestHeader, ResponseHeader, StoreHeartbeatRequest, StoreStats,
};
use serde::Serialize;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use pd_proc::PdProc;

/// Most regions one AskBatchSplit asks for (PD's `split_count_max`).
const SPLIT_BATCH_MAX: usize = 256;
/// Replicas per region (PD's `max_replicas`), fewer with fewer stores.
const REPLICAS_MAX: usize = 3;
/// TiKV's store heartbeat interval.
const STORE_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Heartbeats a store's stream holds before its sender waits (PD falling behind).
const STREAM_QUEUE_MAX: usize = 4096;
/// How often a store's sender wakes to send the heartbeats that came due.
const SEND_TICK: Duration = Duration::from_millis(20);
/// What every simulated region reports: above PD's merge thresholds (20 MiB, 200k keys).
const REGION_SIZE_BYTES: u64 = 64 << 20;
const REGION_KEYS: u64 = 640_000;
/// Bounds on the flags.
const STORES_MAX: u64 = 1000;
const REGIONS_MAX: u64 = 10_000_000;
/// Longest the warm-up round may wait for PD to handle every region's first heartbeat.
const WARMUP_WAIT_MAX: Duration = Duration::from_secs(1800);

/// `flotilla pd-sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct PdSimArgs {
    /// Simulated stores.
    #[arg(long, default_value_t = 30)]
    pub stores: u64,
    /// Regions (at least 5: the keyspace pre-split boundaries make 5).
    #[arg(long, default_value_t = 10_000)]
    pub regions: u64,
    /// Seconds between two heartbeats of one region (TiKV's default: 60).
    #[arg(long, default_value_t = 60)]
    pub heartbeat_interval_secs: u64,
    /// Length of the measured run, seconds.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// PD's data dir (default: a fresh one on /dev/shm, removed at the end).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct SimReport {
    stores: u64,
    regions: u64,
    heartbeat_interval_secs: u64,
    duration_secs: f64,
    /// Bootstrap, PutStore and the splits.
    setup_secs: f64,
    /// The round in which every region's leader heartbeats it once.
    warmup_secs: f64,
    /// Regions in PD's directory at the end (`pd_regions`).
    pd_regions: u64,
    heartbeats_sent: u64,
    heartbeats_sent_per_sec: f64,
    /// Heartbeats PD handled during the run (`pd_region_heartbeat_seconds_count`).
    heartbeats_handled: u64,
    heartbeats_handled_per_sec: f64,
    /// Heartbeats sent but not handled when the run ended: PD falling behind.
    heartbeat_backlog: u64,
    /// Heartbeats PD answered (operator steps).
    heartbeat_answers: u64,
    /// PD's time handling one heartbeat, upper bound of the histogram bucket, µs.
    handle_p50_us: Option<f64>,
    handle_p99_us: Option<f64>,
    /// Round trip of a StoreHeartbeat, µs.
    store_heartbeat_p50_us: u64,
    store_heartbeat_p99_us: u64,
    /// PD's CPU during the run, cores.
    pd_cpu_cores: f64,
    /// PD's resident memory before the regions existed and at the end.
    pd_rss_base_bytes: u64,
    pd_rss_bytes: u64,
    pd_rss_bytes_per_region: f64,
    pd_pid: u32,
}

/// A simulated region: its meta as its leader reports it.
struct SimRegion {
    region: Region,
    leader: Peer,
}

/// Runs the simulation and prints its report.
pub async fn run(args: PdSimArgs) -> Result<()> {
    // Interrupted, the simulation is dropped, and with it the PD it started.
    let report = tokio::select! {
        report = simulate(&args) => report?,
        _ = crate::stop_signal() => bail!("interrupted; the PD it started is stopped"),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// Runs the simulation; PD is stopped before it returns.
pub async fn simulate(args: &PdSimArgs) -> Result<SimReport> {
    ensure!(
        (1..=STORES_MAX).contains(&args.stores),
        "--stores must be 1..={STORES_MAX}"
    );
    ensure!(
        (5..=REGIONS_MAX).contains(&args.regions),
        "--regions must be 5..={REGIONS_MAX}"
    );
    ensure!(
        args.heartbeat_interval_secs >= 1 && args.duration_secs >= 1,
        "--heartbeat-interval-secs and --duration-secs must be >= 1"
    );
    let pd = PdProc::start(args.data_dir.as_deref()).await?;
    let started = Instant::now();
    let mut client = pd.connect().await?;
    let cluster_id = client
        .get_members(GetMembersRequest::default())
        .await?
        .into_inner()
        .header
        .map_or(0, |h| h.cluster_id);
    let header = Some(RequestHeader {
        cluster_id,
        sender_id: 0,
    });
    let mut sim = Sim {
        client,
        header,
        stores: Vec::new(),
    };
    sim.bootstrap(args.stores as usize).await?;
    let base = pd.usage()?;
    let regions = sim.split(args.regions as usize).await?;
    let setup_secs = started.elapsed().as_secs_f64();
    tracing::info!(regions = regions.len(), setup_secs, "regions created");

    let regions = Arc::new(regions);
    let streams = Streams::open(&pd, &sim, &regions).await?;
    let warm = Instant::now();
    let before_warmup = pd.metrics().await?.heartbeats_handled;
    streams.send_round().await?;
    wait_handled(&pd, before_warmup + regions.len() as u64).await?;
    let warmup_secs = warm.elapsed().as_secs_f64();

    let m0 = pd.metrics().await?;
    let u0 = pd.usage()?;
    let t0 = Instant::now();
    let run_for = Duration::from_secs(args.duration_secs);
    let interval = Duration::from_secs(args.heartbeat_interval_secs);
    let (sent, store_hb) = tokio::join!(
        streams.send_steadily(interval, run_for),
        sim.store_heartbeats(run_for)
    );
    let (sent, store_hb) = (sent?, store_hb?);
    let elapsed = t0.elapsed().as_secs_f64();
    let u1 = pd.usage()?;
    let m1 = pd.metrics().await?;
    let handled = m1.heartbeats_handled - m0.heartbeats_handled;
    let us = |s: Option<f64>| s.map(|s| s * 1e6);
    let report = SimReport {
        stores: args.stores,
        regions: regions.len() as u64,
        heartbeat_interval_secs: args.heartbeat_interval_secs,
        duration_secs: elapsed,
        setup_secs,
        warmup_secs,
        pd_regions: m1.regions,
        heartbeats_sent: sent,
        heartbeats_sent_per_sec: sent as f64 / elapsed,
        heartbeats_handled: handled,
        heartbeats_handled_per_sec: handled as f64 / elapsed,
        heartbeat_backlog: sent.saturating_sub(handled),
        heartbeat_answers: streams.answers.load(Ordering::Relaxed),
        handle_p50_us: us(m1.heartbeat_quantile_since(&m0, 0.5)),
        handle_p99_us: us(m1.heartbeat_quantile_since(&m0, 0.99)),
        store_heartbeat_p50_us: store_hb.value_at_quantile(0.5),
        store_heartbeat_p99_us: store_hb.value_at_quantile(0.99),
        pd_cpu_cores: (u1.cpu_secs - u0.cpu_secs) / elapsed,
        pd_rss_base_bytes: base.rss_bytes,
        pd_rss_bytes: u1.rss_bytes,
        pd_rss_bytes_per_region: u1.rss_bytes.saturating_sub(base.rss_bytes) as f64
            / regions.len() as f64,
        pd_pid: pd.pid(),
    };
    drop(streams);
    drop(pd);
    Ok(report)
}

fn print_report(r: &SimReport) {
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    println!(
        "pd-sim: {} stores, {} regions (PD has {}), one heartbeat per region every {} s, \
         {:.0} s measured (setup {:.1} s, warm-up {:.1} s)",
        r.stores,
        r.regions,
        r.pd_regions,
        r.heartbeat_interval_secs,
        r.duration_secs,
        r.setup_secs,
        r.warmup_secs
    );
    println!(
        "region heartbeats: {:.1}/s sent, {:.1}/s handled by PD, {} left unhandled, {} answered",
        r.heartbeats_sent_per_sec,
        r.heartbeats_handled_per_sec,
        r.heartbeat_backlog,
        r.heartbeat_answers
    );
    println!(
        "PD handling per heartbeat: p50 <= {} us, p99 <= {} us; store heartbeat round trip \
         p50 {} us, p99 {} us",
        opt(r.handle_p50_us),
        opt(r.handle_p99_us),
        r.store_heartbeat_p50_us,
        r.store_heartbeat_p99_us
    );
    println!(
        "PD (pid {}): {:.3} cores, RSS {:.1} MiB ({:.1} MiB before the regions), {:.0} bytes \
         per region",
        r.pd_pid,
        r.pd_cpu_cores,
        r.pd_rss_bytes as f64 / (1 << 20) as f64,
        r.pd_rss_base_bytes as f64 / (1 << 20) as f64,
        r.pd_rss_bytes_per_region
    );
}

/// Waits until PD has handled `target` heartbeats in all.
async fn wait_handled(pd: &PdProc, target: u64) -> Result<()> {
    let deadline = Instant::now() + WARMUP_WAIT_MAX;
    loop {
        let handled = pd.metrics().await?.heartbeats_handled;
        if handled >= target {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("PD handled {handled} of {target} warm-up heartbeats in {WARMUP_WAIT_MAX:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn check_header(what: &str, h: Option<ResponseHeader>) -> Result<()> {
    match h.and_then(|h| h.error) {
        None => Ok(()),
        Some(e) => bail!("{what}: PD answered error {}: {}", e.r#type, e.message),
    }
}

/// The setup half: the calls a store makes to join and split.
struct Sim {
    client: PdClient<Channel>,
    header: Option<RequestHeader>,
    /// Store ids, in order.
    stores: Vec<u64>,
}

impl Sim {
    async fn alloc_id(&mut self) -> Result<u64> {
        let resp = self
            .client
            .alloc_id(AllocIdRequest {
                header: self.header,
            })
            .await?
            .into_inner();
        check_header("AllocId", resp.header)?;
        Ok(resp.id)
    }

    fn store(&self, id: u64) -> Store {
        Store {
            id,
            address: format!("sim-store-{id}:20160"),
            ..Default::default()
        }
    }

    /// The stores of the `i`-th of `total` regions in key order: round-robin, each keyspace
    /// group on its own (see [`placement_slot`]).
    fn placement(&self, i: usize, total: usize) -> Vec<u64> {
        let n = self.stores.len();
        let slot = placement_slot(i, total);
        (0..n.min(REPLICAS_MAX))
            .map(|j| self.stores[(slot + j) % n])
            .collect()
    }

    /// Bootstraps the cluster with the first store and region, puts every store, and gives
    /// the first region its replicas.
    async fn bootstrap(&mut self, stores: usize) -> Result<()> {
        for _ in 0..stores {
            let id = self.alloc_id().await?;
            self.stores.push(id);
        }
        let (region_id, peer_id) = (self.alloc_id().await?, self.alloc_id().await?);
        let first = Region {
            id: region_id,
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![voter(peer_id, self.stores[0])],
            ..Default::default()
        };
        let resp = self
            .client
            .bootstrap(BootstrapRequest {
                header: self.header,
                store: Some(self.store(self.stores[0])),
                region: Some(first.clone()),
            })
            .await?
            .into_inner();
        check_header("Bootstrap", resp.header)?;
        for id in self.stores.clone() {
            let resp = self
                .client
                .put_store(PutStoreRequest {
                    header: self.header,
                    store: Some(self.store(id)),
                })
                .await?
                .into_inner();
            check_header("PutStore", resp.header)?;
            self.store_heartbeat(id).await?;
        }
        // The first region's other replicas, as conf changes would add them.
        let mut region = first;
        for store_id in self.placement(0, 1).into_iter().skip(1) {
            let peer = voter(self.alloc_id().await?, store_id);
            region.peers.push(peer);
            region.region_epoch.as_mut().expect("set").conf_ver += 1;
        }
        let (tx, rx) = mpsc::channel(1);
        let mut answers = self
            .client
            .region_heartbeat(request_stream(rx))
            .await?
            .into_inner();
        tx.send(heartbeat(self.header, &region, region.peers[0]))
            .await?;
        let want = region.region_epoch;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.region_by_id(region.id).await?;
            if got.as_ref().and_then(|r| r.region_epoch) == want {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "PD did not take the first region's replicas"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(tx);
        while answers.message().await.ok().flatten().is_some() {}
        Ok(())
    }

    async fn region_by_id(&mut self, region_id: u64) -> Result<Option<Region>> {
        let resp = self
            .client
            .get_region_by_id(GetRegionByIdRequest {
                header: self.header,
                region_id,
                need_buckets: false,
            })
            .await?
            .into_inner();
        check_header("GetRegionByID", resp.header)?;
        Ok(resp.region)
    }

    async fn store_heartbeat(&mut self, store_id: u64) -> Result<Duration> {
        let t = Instant::now();
        let resp = self
            .client
            .store_heartbeat(StoreHeartbeatRequest {
                header: self.header,
                stats: Some(StoreStats {
                    store_id,
                    capacity: 1 << 40,
                    available: 1 << 39,
                    ..Default::default()
                }),
            })
            .await?
            .into_inner();
        check_header("StoreHeartbeat", resp.header)?;
        Ok(t.elapsed())
    }

    /// Every store heartbeats every 10 s (staggered) until `run_for` has passed; returns the
    /// round trips in µs.
    async fn store_heartbeats(&self, run_for: Duration) -> Result<hdrhistogram::Histogram<u64>> {
        let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
        let mut me = Sim {
            client: self.client.clone(),
            header: self.header,
            stores: self.stores.clone(),
        };
        let start = Instant::now();
        let step = STORE_HEARTBEAT_INTERVAL / self.stores.len() as u32;
        let mut next = 0usize;
        while start.elapsed() < run_for {
            let store_id = me.stores[next % me.stores.len()];
            let rtt = me.store_heartbeat(store_id).await?;
            hist.record(rtt.as_micros() as u64)?;
            next += 1;
            let due = start + step * next as u32;
            let end = start + run_for;
            tokio::time::sleep_until(due.min(end).into()).await;
        }
        Ok(hist)
    }

    /// Splits the first region into `count` regions at the keyspace pre-split keys and keys
    /// of the default raw keyspace, a batch at a time from the rightmost region, as a store's
    /// split checker would; returns every region in key order.
    async fn split(&mut self, count: usize) -> Result<Vec<SimRegion>> {
        let keys = split_keys(count);
        let first = self.region_by_id_first().await?;
        let mut done: Vec<SimRegion> = Vec::with_capacity(count);
        let mut current = first;
        for batch in keys.chunks(SPLIT_BATCH_MAX) {
            let resp = self
                .client
                .ask_batch_split(AskBatchSplitRequest {
                    header: self.header,
                    region: Some(current.clone()),
                    split_count: batch.len() as u32,
                })
                .await?
                .into_inner();
            check_header("AskBatchSplit", resp.header)?;
            ensure!(resp.ids.len() == batch.len(), "AskBatchSplit: too few ids");
            let mut epoch = current.region_epoch.unwrap_or_default();
            epoch.version += batch.len() as u64;
            // The parent keeps the left part (its id, its peers).
            let mut parent = current.clone();
            parent.end_key = batch[0].clone();
            parent.region_epoch = Some(epoch);
            let mut pieces = vec![parent];
            for (j, ids) in resp.ids.iter().enumerate() {
                let i = done.len() + pieces.len();
                let stores = self.placement(i, count);
                ensure!(
                    ids.new_peer_ids.len() == stores.len(),
                    "AskBatchSplit: peer ids"
                );
                let peers = ids
                    .new_peer_ids
                    .iter()
                    .zip(stores)
                    .map(|(id, s)| voter(*id, s))
                    .collect();
                pieces.push(Region {
                    id: ids.new_region_id,
                    start_key: batch[j].clone(),
                    end_key: batch
                        .get(j + 1)
                        .cloned()
                        .unwrap_or_else(|| current.end_key.clone()),
                    region_epoch: Some(epoch),
                    peers,
                });
            }
            let resp = self
                .client
                .report_batch_split(ReportBatchSplitRequest {
                    header: self.header,
                    regions: pieces.clone(),
                })
                .await?
                .into_inner();
            check_header("ReportBatchSplit", resp.header)?;
            current = pieces.pop().expect("a batch is never empty");
            done.extend(pieces.into_iter().map(SimRegion::new));
        }
        done.push(SimRegion::new(current));
        Ok(done)
    }

    async fn region_by_id_first(&mut self) -> Result<Region> {
        // The region holding the empty key: the bootstrap region.
        let resp = self
            .client
            .get_region(proto::pdpb::GetRegionRequest {
                header: self.header,
                region_key: Vec::new(),
                need_buckets: false,
            })
            .await?
            .into_inner();
        check_header("GetRegion", resp.header)?;
        resp.region.context("PD has no first region")
    }
}

impl SimRegion {
    fn new(region: Region) -> SimRegion {
        let leader = region.peers[0];
        SimRegion { region, leader }
    }
}

fn voter(id: u64, store_id: u64) -> Peer {
    Peer {
        id,
        store_id,
        role: PeerRole::Voter as i32,
        is_witness: false,
    }
}

fn heartbeat(
    header: Option<RequestHeader>,
    region: &Region,
    leader: Peer,
) -> RegionHeartbeatRequest {
    RegionHeartbeatRequest {
        header,
        region: Some(region.clone()),
        leader: Some(leader),
        approximate_size: REGION_SIZE_BYTES,
        approximate_keys: REGION_KEYS,
        term: 6,
        ..Default::default()
    }
}

/// Where the round-robin placement of the `i`-th of `total` regions starts. The regions of
/// the raw keyspace (all but the first and the last three, see [`split_keys`]) go round-robin;
/// the four outside every keyspace, a keyspace group of their own for PD's balancers, go
/// three stores apart, so that each group is as even as its count allows and the balancers
/// find nothing to move (the steady state of a balanced cluster, which is what is measured).
fn placement_slot(i: usize, total: usize) -> usize {
    if i == 0 {
        0
    } else if i + 3 >= total {
        (total - i) * REPLICAS_MAX
    } else {
        i
    }
}

/// The `count - 1` split keys: the keyspace pre-split boundaries (so no region spans one and
/// PD asks for no pre-split) and keys of the default raw keyspace between them, encoded.
fn split_keys(count: usize) -> Vec<Vec<u8>> {
    let mut keys = codec::keys::keyspace_presplit_keys();
    let prefix = codec::keys::raw_keyspace_prefix(codec::keys::DEFAULT_KEYSPACE_ID);
    let extra = count.saturating_sub(keys.len() + 1);
    keys.extend((0..extra as u64).map(|i| {
        let mut raw = prefix.to_vec();
        raw.extend_from_slice(b"sim");
        raw.extend_from_slice(&i.to_be_bytes());
        codec::encode_bytes(&raw)
    }));
    keys.sort();
    keys.truncate(count - 1);
    keys
}

/// A client-streaming request body fed from a channel.
fn request_stream(
    rx: mpsc::Receiver<RegionHeartbeatRequest>,
) -> impl futures::Stream<Item = RegionHeartbeatRequest> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
}

/// One RegionHeartbeat stream per store, and the regions each store leads.
struct Streams {
    header: Option<RequestHeader>,
    regions: Arc<Vec<SimRegion>>,
    /// Per store: the stream's sender and the indexes of the regions the store leads.
    stores: Vec<(mpsc::Sender<RegionHeartbeatRequest>, Vec<usize>)>,
    answers: Arc<AtomicU64>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Streams {
    async fn open(pd: &PdProc, sim: &Sim, regions: &Arc<Vec<SimRegion>>) -> Result<Streams> {
        let answers = Arc::new(AtomicU64::new(0));
        let mut stores = Vec::new();
        let mut readers = Vec::new();
        for store_id in &sim.stores {
            let led: Vec<usize> = (0..regions.len())
                .filter(|i| regions[*i].leader.store_id == *store_id)
                .collect();
            // Each store its own connection, as each store process has.
            let mut client = pd.connect().await?;
            let (tx, rx) = mpsc::channel(STREAM_QUEUE_MAX);
            let mut input = client
                .region_heartbeat(request_stream(rx))
                .await?
                .into_inner();
            let answers = answers.clone();
            readers.push(tokio::spawn(async move {
                while let Ok(Some(_)) = input.message().await {
                    answers.fetch_add(1, Ordering::Relaxed);
                }
            }));
            stores.push((tx, led));
        }
        Ok(Streams {
            header: sim.header,
            regions: regions.clone(),
            stores,
            answers,
            readers,
        })
    }

    fn request(&self, i: usize) -> RegionHeartbeatRequest {
        let r = &self.regions[i];
        heartbeat(self.header, &r.region, r.leader)
    }

    /// Every store heartbeats each region it leads once, as fast as PD takes them.
    async fn send_round(&self) -> Result<()> {
        let sends = self.stores.iter().map(|(tx, led)| async move {
            for i in led {
                tx.send(self.request(*i)).await.context("stream closed")?;
            }
            anyhow::Ok(())
        });
        futures::future::try_join_all(sends).await?;
        Ok(())
    }

    /// Every store sends its regions' heartbeats evenly spread, one per region per
    /// `interval`, for `run_for`; returns how many were sent.
    async fn send_steadily(&self, interval: Duration, run_for: Duration) -> Result<u64> {
        let sends = self.stores.iter().map(|(tx, led)| async move {
            let start = tokio::time::Instant::now();
            let per_sec = led.len() as f64 / interval.as_secs_f64();
            let mut ticker = tokio::time::interval(SEND_TICK);
            let mut sent = 0u64;
            while start.elapsed() < run_for && !led.is_empty() {
                ticker.tick().await;
                let due = (start.elapsed().as_secs_f64() * per_sec) as u64;
                while sent < due {
                    let i = led[sent as usize % led.len()];
                    tx.send(self.request(i)).await.context("stream closed")?;
                    sent += 1;
                }
            }
            anyhow::Ok(sent)
        });
        let sent = futures::future::try_join_all(sends).await?;
        Ok(sent.into_iter().sum())
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_regions_outside_every_keyspace_go_three_stores_apart() {
        let total = 200;
        let outside = [0, total - 3, total - 2, total - 1];
        let slots: Vec<usize> = outside.iter().map(|i| placement_slot(*i, total)).collect();
        assert_eq!(slots, vec![0, 9, 6, 3]);
        assert_eq!(
            placement_slot(7, total),
            7,
            "the raw keyspace goes round-robin"
        );
    }

    #[test]
    fn split_keys_are_sorted_distinct_and_as_many_as_asked() {
        for count in [5, 6, 200, 1000] {
            let keys = split_keys(count);
            assert_eq!(keys.len(), count - 1);
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "{count}");
        }
        // The pre-split boundaries are always among them.
        let keys = split_keys(200);
        for k in codec::keys::keyspace_presplit_keys() {
            assert!(keys.contains(&k));
        }
    }
}
