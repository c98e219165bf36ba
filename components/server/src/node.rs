//! A store process: engines, PD registration, raftstore, gRPC and status servers, started and
//! stopped as one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use engine::{KvEngine, RocksEngine};
use proto::flotillapb::raft_transport_server::RaftTransportServer;
use proto::metapb;
use proto::tikvpb::tikv_server::TikvServer;
use raft_log::{RaftEngineLog, RaftLogStore};
use raftstore::{RaftRouter, RaftStore, Transport};
use security::Incoming;
use storage::ConcurrencyManager;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use txn_types::TimeStamp;

use crate::bootstrap::{bootstrap_cluster_if_needed, ensure_store_id};
use crate::disk::DiskMonitor;
use crate::fault::RaftPartition;
use crate::flow::FlowMeter;
use crate::kv::KvService;
use crate::pd::{Pd, PdResolver};
use crate::pd_worker::PdWorker;
use crate::raft_service::RaftService;
use crate::transport::GrpcTransport;
use crate::{ServerConfig, ServerError};

/// A running store. Dropping it without [`Node::stop`] leaves its threads running.
pub struct Node {
    store_id: u64,
    addr: SocketAddr,
    status_addr: SocketAddr,
    router: RaftRouter,
    kv: Arc<dyn KvEngine>,
    raftstore: Option<RaftStore>,
    grpc_transport: Option<GrpcTransport>,
    pd_worker: Option<PdWorker>,
    removed: watch::Receiver<bool>,
    shutdown: watch::Sender<bool>,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    status_task: JoinHandle<()>,
    gc_task: JoinHandle<()>,
    disk_task: JoinHandle<()>,
    split_task: JoinHandle<()>,
    grace: Duration,
}

impl Node {
    /// Starts a store with the gRPC raft transport (addresses resolved through PD).
    pub async fn start(cfg: ServerConfig) -> Result<Node, ServerError> {
        Node::start_inner(cfg, None, None).await
    }

    /// Starts a store whose raft messages go through `transport` (an in-process test
    /// harness's); messages for this store are handed to [`Node::router`].
    pub async fn start_with_transport(
        cfg: ServerConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<Node, ServerError> {
        Node::start_inner(cfg, Some(transport), None).await
    }

    /// Like [`Node::start_with_transport`], on `raft_log` instead of a raft log opened in the
    /// data dir (crash tests put it on a fault-injecting file system).
    pub async fn start_with_raft_log(
        cfg: ServerConfig,
        transport: Arc<dyn Transport>,
        raft_log: Arc<dyn RaftLogStore>,
    ) -> Result<Node, ServerError> {
        Node::start_inner(cfg, Some(transport), Some(raft_log)).await
    }

    async fn start_inner(
        cfg: ServerConfig,
        transport: Option<Arc<dyn Transport>>,
        raft_log: Option<Arc<dyn RaftLogStore>>,
    ) -> Result<Node, ServerError> {
        cfg.validate()?;
        let security = security::SecurityManager::new(&cfg.security)
            .map_err(|e| ServerError::Config(e.to_string()))?;
        std::fs::create_dir_all(&cfg.data_dir)?;
        let disk = DiskMonitor::new(
            cfg.data_dir.clone(),
            cfg.storage.capacity_bytes,
            cfg.storage.reserve_space_bytes,
        );
        disk.check();
        let kv: Arc<dyn KvEngine> =
            Arc::new(RocksEngine::open(cfg.data_dir.join("db"), &cfg.rocksdb)?);
        let raft_log: Arc<dyn RaftLogStore> = match raft_log {
            Some(log) => log,
            None => Arc::new(RaftEngineLog::open(
                cfg.data_dir.join("raft"),
                &cfg.raft_log,
            )?),
        };
        let pd = Pd::connect(&cfg.pd_endpoints, &security).await?;
        let store_id = ensure_store_id(kv.as_ref(), &pd).await?;

        let grpc_listener = TcpListener::bind(&cfg.addr).await?;
        let status_listener = TcpListener::bind(&cfg.status_addr).await?;
        let (addr, status_addr) = (grpc_listener.local_addr()?, status_listener.local_addr()?);
        let store = store_record(&cfg, store_id, addr, status_addr);
        bootstrap_cluster_if_needed(kv.as_ref(), raft_log.as_ref(), &pd, &store).await?;
        pd.put_store(store.clone()).await?;

        let partition = Arc::new(RaftPartition::default());
        let grpc_transport = transport.is_none().then(|| {
            let resolver = Arc::new(PdResolver::new(pd.clone()));
            let rt = tokio::runtime::Handle::current();
            GrpcTransport::new(
                cfg.transport.clone(),
                cfg.grpc_message_max_bytes,
                resolver,
                rt,
                partition.clone(),
                security.clone(),
            )
        });
        let transport =
            transport.unwrap_or_else(|| Arc::new(grpc_transport.clone().expect("built above")));
        let (pd_tx, pd_rx) = crossbeam_channel::bounded(cfg.pd_worker.task_queue_max);
        let raftstore = RaftStore::start(
            cfg.raftstore.clone(),
            store_id,
            kv.clone(),
            raft_log,
            transport,
            pd_tx,
        )?;
        let router = raftstore.router();
        if let Some(t) = &grpc_transport {
            t.set_router(router.clone());
        }

        let (shutdown, shutdown_rx) = watch::channel(false);
        let flow = Arc::new(FlowMeter::new(crate::kv::now_secs(), cfg.split.clone()));
        let pd_worker = PdWorker::start(
            pd.clone(),
            router.clone(),
            pd_rx,
            cfg.pd_worker.clone(),
            cfg.data_dir.clone(),
            flow.clone(),
            shutdown_rx.clone(),
        )?;
        let split_task = tokio::spawn(crate::load_split::run(
            flow.clone(),
            router.clone(),
            shutdown_rx.clone(),
        ));
        // Every timestamp a client read with before this start came from PD earlier.
        let cm = Arc::new(ConcurrencyManager::new(TimeStamp::new(pd.get_tso().await?)));
        let kv_service = KvService::new(
            router.clone(),
            kv.clone(),
            cfg.storage.clone(),
            Duration::from_millis(cfg.request_timeout_ms),
            cm,
            pd.clone(),
            disk.clone(),
            flow,
        );
        let disk_task = tokio::spawn(crate::disk::run(
            disk,
            Duration::from_millis(cfg.storage.disk_check_interval_ms),
            shutdown_rx.clone(),
        ));
        let gc_task = tokio::spawn(crate::gc_worker::run(
            kv_service.inner(),
            Duration::from_millis(cfg.pd_worker.gc_safe_point_poll_ms),
            shutdown_rx.clone(),
        ));
        let grpc_task = tokio::spawn(serve_grpc(
            &cfg,
            Incoming::new(grpc_listener, &security),
            kv_service,
            router.clone(),
            partition.clone(),
            shutdown_rx.clone(),
        ));
        let status_task = tokio::spawn(crate::status::serve(
            Incoming::new(status_listener, &security),
            router.clone(),
            store.address.clone(),
            cfg.fault_injection.then_some(partition),
            shutdown_rx,
        ));
        tracing::info!(store_id, %addr, %status_addr, "store started");
        Ok(Node {
            store_id,
            addr,
            status_addr,
            router,
            kv,
            raftstore: Some(raftstore),
            grpc_transport,
            pd_worker: Some(pd_worker),
            removed: pd.removed(),
            shutdown,
            grpc_task,
            status_task,
            gc_task,
            disk_task,
            split_task,
            grace: Duration::from_millis(cfg.shutdown_grace_ms),
        })
    }

    /// This store's id.
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// The bound gRPC address (the real port when the configured one was 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound status HTTP address.
    pub fn status_addr(&self) -> SocketAddr {
        self.status_addr
    }

    /// The way into this store's raftstore.
    pub fn router(&self) -> RaftRouter {
        self.router.clone()
    }

    /// Resolves once PD has answered that this store is a Tombstone (decommissioned, its
    /// replicas moved away): the process should [`Node::stop`] and not start on this data dir
    /// again (PD refuses it).
    pub async fn removed_from_cluster(&self) {
        let mut removed = self.removed.clone();
        if removed.wait_for(|r| *r).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// This store's KV engine.
    pub fn kv_engine(&self) -> Arc<dyn KvEngine> {
        self.kv.clone()
    }

    /// Stops serving, then stops the PD worker, the transport and the raftstore. The data
    /// stays in the data dir; a new node on it keeps the store id and the regions.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        // Long-lived raft streams from other stores keep a graceful shutdown waiting.
        if tokio::time::timeout(self.grace, &mut self.grpc_task)
            .await
            .is_err()
        {
            self.grpc_task.abort();
        }
        if tokio::time::timeout(self.grace, &mut self.status_task)
            .await
            .is_err()
        {
            self.status_task.abort();
        }
        if tokio::time::timeout(self.grace, &mut self.gc_task)
            .await
            .is_err()
        {
            self.gc_task.abort();
        }
        // The disk check ends at the shutdown signal; at worst it finishes one measurement.
        let _ = tokio::time::timeout(self.grace, &mut self.disk_task).await;
        // The load-split tick ends at the shutdown signal too.
        let _ = tokio::time::timeout(self.grace, &mut self.split_task).await;
        if let Some(w) = self.pd_worker.take() {
            w.stop().await;
        }
        if let Some(t) = self.grpc_transport.take() {
            t.close();
        }
        if let Some(store) = self.raftstore.take() {
            let _ = tokio::task::spawn_blocking(move || store.stop()).await;
        }
        tracing::info!(store_id = self.store_id, "store stopped");
    }
}

/// This store as registered in PD.
fn store_record(
    cfg: &ServerConfig,
    store_id: u64,
    addr: SocketAddr,
    status_addr: SocketAddr,
) -> metapb::Store {
    let or_bound = |advertised: &str, bound: SocketAddr| {
        if advertised.is_empty() {
            bound.to_string()
        } else {
            advertised.to_owned()
        }
    };
    let address = or_bound(&cfg.advertise_addr, addr);
    metapb::Store {
        id: store_id,
        peer_address: address.clone(),
        address,
        status_address: or_bound(&cfg.advertise_status_addr, status_addr),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

fn serve_grpc(
    cfg: &ServerConfig,
    incoming: Incoming,
    kv_service: KvService,
    router: RaftRouter,
    partition: Arc<RaftPartition>,
    mut shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = Result<(), tonic::transport::Error>> {
    let max = cfg.grpc_message_max_bytes;
    let raft_service = RaftService::new(router, cfg.transport.snapshot_recv_max_bytes, partition);
    let router = tonic::transport::Server::builder()
        .add_service(
            TikvServer::new(kv_service)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            RaftTransportServer::new(raft_service)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        );
    // `Incoming` sets TCP_NODELAY on every accepted connection: with Nagle, a small response
    // written behind an unacknowledged one waits for the peer's delayed ACK (40 ms). The
    // builder's `tcp_nodelay` does not reach connections from `serve_with_incoming`.
    async move {
        router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .await
    }
}
