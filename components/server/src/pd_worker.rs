//! The PD worker: carries the raftstore's [`PdTask`]s to PD and PD's answers back to the
//! router (split ids, a stale peer's region), keeps the region heartbeat stream open, and sends
//! periodic store heartbeats. Both carry the traffic counted since the previous one
//! ([`FlowMeter`]).
//!
//! The raftstore's crossbeam queue is bridged into tokio by one small thread; the worker itself
//! is one tokio task.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::{metapb, pdpb};
use raftstore::{PdTask, RaftRouter};
use tokio::sync::{mpsc, watch};

use crate::config::PdWorkerConfig;
use crate::flow::{Flow, FlowMeter};
use crate::kv::now_secs;
use crate::pd::Pd;
use crate::ServerError;

/// A running PD worker.
pub(crate) struct PdWorker {
    stop: Arc<AtomicBool>,
    bridge: Option<std::thread::JoinHandle<()>>,
    task: tokio::task::JoinHandle<()>,
}

struct WorkerState {
    pd: Pd,
    router: RaftRouter,
    cfg: PdWorkerConfig,
    store_id: u64,
    data_dir: PathBuf,
    start_time_secs: u32,
    flow: Arc<FlowMeter>,
}

impl PdWorker {
    /// Starts forwarding `tasks` to PD until [`PdWorker::stop`] or `shutdown`; heartbeats
    /// report the traffic counted in `flow`.
    pub(crate) fn start(
        pd: Pd,
        router: RaftRouter,
        tasks: crossbeam_channel::Receiver<PdTask>,
        cfg: PdWorkerConfig,
        data_dir: PathBuf,
        flow: Arc<FlowMeter>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<PdWorker, ServerError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(cfg.task_queue_max);
        let bridge_stop = stop.clone();
        let bridge = std::thread::Builder::new()
            .name("pd-task-bridge".into())
            .spawn(move || bridge_tasks(tasks, tx, bridge_stop))?;
        let start_time_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        let state = WorkerState {
            pd,
            store_id: router.store_id(),
            router,
            cfg,
            data_dir,
            start_time_secs,
            flow,
        };
        let task = tokio::spawn(state.run(rx, shutdown));
        Ok(PdWorker {
            stop,
            bridge: Some(bridge),
            task,
        })
    }

    /// Stops the bridge thread and the worker task.
    pub(crate) async fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.abort();
        let _ = (&mut self.task).await;
        if let Some(bridge) = self.bridge.take() {
            let _ = tokio::task::spawn_blocking(move || bridge.join()).await;
        }
    }
}

/// Moves tasks from the raftstore's queue into tokio, until either side closes or `stop`.
fn bridge_tasks(
    tasks: crossbeam_channel::Receiver<PdTask>,
    tx: mpsc::Sender<PdTask>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        match tasks.recv_timeout(Duration::from_millis(100)) {
            Ok(task) => {
                if tx.blocking_send(task).is_err() {
                    return;
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl WorkerState {
    async fn run(self, mut tasks: mpsc::Receiver<PdTask>, mut shutdown: watch::Receiver<bool>) {
        let mut store_tick =
            tokio::time::interval(Duration::from_millis(self.cfg.store_heartbeat_interval_ms));
        let (heartbeats, mut responses) = self.pd.region_heartbeat_stream();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                task = tasks.recv() => match task {
                    Some(task) => self.on_task(task, &heartbeats),
                    None => return,
                },
                _ = store_tick.tick() => self.on_store_heartbeat_tick().await,
                Some(resp) = responses.recv() => self.router.on_heartbeat_response(resp),
            }
        }
    }

    fn on_task(&self, task: PdTask, heartbeats: &mpsc::Sender<pdpb::RegionHeartbeatRequest>) {
        match task {
            PdTask::RegionHeartbeat {
                region,
                leader,
                pending_peers,
                down_peers,
                approximate_size,
                approximate_keys,
                term,
            } => {
                // Taken even if the heartbeat is then dropped: PD sees a gap in the region's
                // traffic, not the same traffic twice.
                let flow = self.flow.take_region(region.id, now_secs());
                let req = pdpb::RegionHeartbeatRequest {
                    bytes_written: flow.bytes_written,
                    keys_written: flow.keys_written,
                    bytes_read: flow.bytes_read,
                    keys_read: flow.keys_read,
                    query_stats: Some(flow.queries.to_pb()),
                    interval: Some(flow.interval()),
                    region: Some(region),
                    leader: Some(leader),
                    pending_peers,
                    down_peers,
                    approximate_size,
                    approximate_keys,
                    term,
                    ..Default::default()
                };
                // A full stream drops the heartbeat: the next one carries the same news.
                if heartbeats.try_send(req).is_err() {
                    tracing::debug!("region heartbeat dropped");
                }
            }
            PdTask::AskBatchSplit { region, split_keys } => {
                let (pd, router) = (self.pd.clone(), self.router.clone());
                tokio::spawn(ask_batch_split(pd, router, region, split_keys));
            }
            PdTask::CheckStalePeer { region, peer } => {
                let (pd, router) = (self.pd.clone(), self.router.clone());
                tokio::spawn(check_stale_peer(pd, router, region, peer.id));
            }
            PdTask::ReportBatchSplit { regions } => {
                let pd = self.pd.clone();
                tokio::spawn(async move {
                    if let Err(e) = pd.report_batch_split(regions).await {
                        tracing::warn!(error = %e, "report batch split failed");
                    }
                });
            }
        }
    }

    async fn on_store_heartbeat_tick(&self) {
        let regions = self.router.region_infos();
        let here: std::collections::HashSet<u64> = regions.iter().map(|r| r.region.id).collect();
        self.flow.retain_regions(|id| here.contains(&id));
        let (capacity, available) = disk_space(&self.data_dir);
        let flow: Flow = self.flow.take_store(now_secs());
        let stats = pdpb::StoreStats {
            bytes_written: flow.bytes_written,
            keys_written: flow.keys_written,
            bytes_read: flow.bytes_read,
            keys_read: flow.keys_read,
            query_stats: Some(flow.queries.to_pb()),
            interval: Some(flow.interval()),
            store_id: self.store_id,
            capacity,
            available,
            used_size: capacity.saturating_sub(available),
            region_count: regions.len() as u32,
            start_time: self.start_time_secs,
            ..Default::default()
        };
        if let Err(e) = self.pd.store_heartbeat(stats).await {
            tracing::warn!(error = %e, "store heartbeat failed");
        }
    }
}

async fn ask_batch_split(
    pd: Pd,
    router: RaftRouter,
    region: proto::metapb::Region,
    split_keys: Vec<Vec<u8>>,
) {
    let region_id = region.id;
    let epoch = region.region_epoch.unwrap_or_default();
    match pd.ask_batch_split(region, split_keys.len() as u32).await {
        Ok(ids) => router.on_split_ids(region_id, epoch, split_keys, ids),
        Err(e) => tracing::warn!(region_id, error = %e, "ask batch split failed"),
    }
}

/// Asks PD for the region of a peer that has heard from no leader for a while, and hands the
/// answer to the raftstore (which decides; an unanswered question is asked again later).
/// Asks PD for the region of a peer that has heard from no leader for a while; a region PD
/// does not know (merged away) is answered with the region that holds its start key now.
async fn check_stale_peer(pd: Pd, router: RaftRouter, region: metapb::Region, peer_id: u64) {
    let answer = match pd.get_region_by_id(region.id).await {
        Ok(None) if !region.peers.is_empty() => pd.get_region(region.start_key.clone()).await,
        other => other,
    };
    match answer {
        Ok(pd_region) => router.on_stale_peer_check(region.id, peer_id, pd_region),
        Err(e) => tracing::warn!(region_id = region.id, error = %e, "stale peer check failed"),
    }
}

/// `(capacity, available)` bytes of the filesystem holding `dir`; zeros if unknown.
pub(crate) fn disk_space(dir: &std::path::Path) -> (u64, u64) {
    match (fs2::total_space(dir), fs2::available_space(dir)) {
        (Ok(total), Ok(avail)) => (total, avail),
        _ => (0, 0),
    }
}
