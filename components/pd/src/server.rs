//! Start-up and shutdown: one TCP listener serving gRPC (h2c) and HTTP/1 through one router,
//! plus the periodic balance-leader task. Shutdown closes every connection and stream and
//! releases the embedded RocksDB, so a test can restart PD on the same data dir.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use proto::keyspacepb::keyspace_server::KeyspaceServer;
use proto::pdpb::pd_server::PdServer as PdGrpcServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::meta_store::{MetaStore, RocksMetaStore};
use crate::metrics::Metrics;
use crate::service::{now_ms, PdService};
use crate::{Cluster, PdConfig, Result};

/// How long shutdown waits for in-flight tasks to release the cluster state.
const SHUTDOWN_WAIT_MAX: Duration = Duration::from_secs(5);

/// Entry point of the placement driver.
pub struct PdServer;

impl PdServer {
    /// Opens the data dir, binds the listener and serves until [`PdHandle::shutdown`].
    pub async fn start(cfg: PdConfig) -> Result<PdHandle> {
        cfg.validate()?;
        let meta = Arc::new(RocksMetaStore::open(&cfg.data_dir)?);
        Self::start_with_store(cfg, meta).await
    }

    /// Like [`PdServer::start`] on a given [`MetaStore`] (e.g. in memory, for tests).
    pub async fn start_with_store(cfg: PdConfig, meta: Arc<dyn MetaStore>) -> Result<PdHandle> {
        cfg.validate()?;
        let listener = TcpListener::bind(&cfg.listen_addr).await?;
        let addr = listener.local_addr()?;
        let advertise = if cfg.advertise_addr.is_empty() {
            addr.to_string()
        } else {
            cfg.advertise_addr.clone()
        };
        let balance_interval = Duration::from_millis(cfg.balance_leader_interval_ms);
        let cluster = Arc::new(Cluster::open(meta, cfg, now_ms())?);
        let metrics = Arc::new(Metrics::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let svc = PdService {
            cluster: cluster.clone(),
            metrics: metrics.clone(),
            client_url: format!("http://{advertise}"),
            stop: stop_rx.clone(),
        };
        let grpc = tonic::service::Routes::new(PdGrpcServer::new(svc.clone()))
            .add_service(KeyspaceServer::new(svc))
            .into_axum_router();
        let router = crate::http::routes(grpc, cluster.clone(), metrics);
        let serve = tokio::spawn(accept_loop(listener, router, stop_rx.clone()));
        let balance = tokio::spawn(balance_loop(cluster.clone(), balance_interval, stop_rx));
        tracing::info!(%addr, cluster_id = cluster.cluster_id(), "PD started");
        Ok(PdHandle {
            addr,
            cluster,
            stop: stop_tx,
            tasks: vec![serve, balance],
        })
    }
}

async fn accept_loop(listener: TcpListener, router: axum::Router, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let svc = TowerToHyperService::new(router.clone());
                conns.spawn(async move {
                    let conn = Builder::new(TokioExecutor::new());
                    if let Err(e) = conn.serve_connection(TokioIo::new(stream), svc).await {
                        tracing::debug!("connection ended: {e}");
                    }
                });
            }
        }
    }
    conns.shutdown().await;
}

async fn balance_loop(cluster: Arc<Cluster>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {
                let n = cluster.run_balance_leader(now_ms());
                if n > 0 {
                    tracing::debug!(operators = n, "balance-leader scheduled");
                }
            }
        }
    }
}

/// A running PD. Dropping it also stops PD, without waiting for the data dir to be released.
pub struct PdHandle {
    addr: SocketAddr,
    cluster: Arc<Cluster>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl PdHandle {
    /// The bound address (the real port when the config asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, the endpoint clients connect to.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The cluster state, for in-process tests and tools.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Stops serving, closes every connection and stream, and releases the data dir.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        // Stream tasks hold the cluster until they observe the stop signal.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT_MAX;
        while Arc::strong_count(&self.cluster) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if Arc::strong_count(&self.cluster) > 1 {
            tracing::warn!("PD state still referenced after shutdown");
        }
        tracing::info!(addr = %self.addr, "PD stopped");
    }

    /// Waits until the server stops (after a [`PdHandle::shutdown`] from elsewhere, or a crash).
    pub async fn stopped(&mut self) {
        if let Some(task) = self.tasks.first_mut() {
            let _ = task.await;
        }
    }
}
