//! Start-up and shutdown: one TCP listener serving gRPC (h2c) and HTTP/1 through one router,
//! plus the periodic balance-leader and balance-region tasks. Shutdown closes every connection
//! and stream and releases the embedded RocksDB, so a test can restart PD on the same data dir.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use proto::keyspacepb::keyspace_server::KeyspaceServer;
use proto::pdpb::pd_server::PdServer as PdGrpcServer;
use proto::pdpb::Member;
use security::{Incoming, SecurityManager};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::meta_store::{MetaStore, RocksMetaStore};
use crate::metrics::Metrics;
use crate::replica_view::{Lookup, ReplicaView};
use crate::replication::{RaftMetaStore, Role};
use crate::service::{now_ms, PdService};
use crate::{Cluster, PdConfig, PdMember, Result};

/// How long shutdown waits for in-flight tasks to release the cluster state.
const SHUTDOWN_WAIT_MAX: Duration = Duration::from_secs(5);
/// How soon a new leader retries loading the state after a failure.
const TAKE_OVER_RETRY: Duration = Duration::from_millis(200);

/// What this PD member serves: the cluster state while it leads (always, when PD runs alone),
/// and what it knows of the group. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Serving {
    current: watch::Receiver<Option<Arc<Cluster>>>,
    meta: Arc<dyn MetaStore>,
    /// The PD group this member belongs to; `None` when PD runs alone.
    group: Option<Group>,
    client_url: String,
    /// TLS or plaintext: the scheme of every URL this member hands out, and how it connects
    /// to other members.
    pub(crate) security: SecurityManager,
}

/// A member's view of its PD group.
#[derive(Clone)]
struct Group {
    replica: Arc<RaftMetaStore>,
    role: watch::Receiver<Role>,
    members: Vec<PdMember>,
    member_id: u64,
}

impl Serving {
    /// The cluster state, if this member serves now.
    pub(crate) fn cluster(&self) -> Option<Arc<Cluster>> {
        self.current.borrow().clone()
    }

    /// A receiver that changes whenever the served state does.
    pub(crate) fn watch(&self) -> watch::Receiver<Option<Arc<Cluster>>> {
        self.current.clone()
    }

    /// Whether timestamps may be handed out now: always alone; in a group, while the leader
    /// lease holds.
    pub(crate) fn lease_valid(&self) -> bool {
        self.group.as_ref().is_none_or(|g| g.replica.lease_valid())
    }

    /// The cluster id: the served state's, else the replicated one (0 before the first leader
    /// chose it).
    pub(crate) fn cluster_id(&self) -> u64 {
        match self.cluster() {
            Some(c) => c.cluster_id(),
            None => Cluster::persisted_id(self.meta.as_ref()).unwrap_or(0),
        }
    }

    /// Every member as GetMembers lists them.
    pub(crate) fn members(&self) -> Vec<Member> {
        let Some(g) = &self.group else {
            return vec![Member {
                name: "pd".to_owned(),
                member_id: 1,
                peer_urls: vec![self.client_url.clone()],
                client_urls: vec![self.client_url.clone()],
                ..Default::default()
            }];
        };
        g.members
            .iter()
            .map(|m| Member {
                name: format!("pd-{}", m.id),
                member_id: m.id,
                peer_urls: vec![self.security.url(&m.peer_addr)],
                client_urls: vec![if m.id == g.member_id {
                    self.client_url.clone()
                } else {
                    self.security.url(&m.client_addr)
                }],
                ..Default::default()
            })
            .collect()
    }

    /// In a PD group, this member's view of the replicated state, which answers clients'
    /// lookups while it does not serve (once a leader chose the cluster id).
    pub(crate) fn view(&self) -> Option<Arc<dyn Lookup>> {
        let view: Arc<ReplicaView> = self.group.as_ref()?.replica.view().clone();
        (view.cluster_id() != 0).then_some(view as Arc<dyn Lookup>)
    }

    /// The member GetMembers names as leader to clients: the leader while this member hears
    /// from it, else this member itself, which answers lookups and forwards timestamps. A
    /// client then always reaches a member that answers (tikv-client 0.4 retries a failed
    /// lookup at once on the same connection and then drops the request it was for).
    pub(crate) fn leader_for_clients(&self) -> Option<Member> {
        let members = self.members();
        let Some(g) = &self.group else {
            return members.into_iter().next();
        };
        let role = g.role.borrow().clone();
        let id = if role.leader_fresh {
            role.leader_id
        } else {
            g.member_id
        };
        members.into_iter().find(|m| m.member_id == id)
    }

    /// The client URL of the leader to forward a timestamp stream to: another member that
    /// leads and that this member hears from.
    pub(crate) fn forward_target(&self) -> Option<String> {
        let m = self.leader_for_clients()?;
        if m.member_id == self.member_id() {
            return None;
        }
        m.client_urls.into_iter().next()
    }

    /// Role updates of this member's PD group (none when alone).
    pub(crate) fn role_watch(&self) -> Option<watch::Receiver<Role>> {
        self.group.as_ref().map(|g| g.role.clone())
    }

    /// The leader as this member knows it: itself while it serves; another member that raft
    /// names leader; none during an election or while the new leader takes over. The stores'
    /// PD client and the HTTP API follow this one (GetMembers' `etcd_leader`).
    pub(crate) fn leader(&self) -> Option<Member> {
        let members = self.members();
        let Some(g) = &self.group else {
            return members.into_iter().next();
        };
        let leader_id = g.role.borrow().leader_id;
        if leader_id == g.member_id && self.cluster().is_none() {
            return None;
        }
        members.into_iter().find(|m| m.member_id == leader_id)
    }

    /// This member's id (1 when alone).
    pub(crate) fn member_id(&self) -> u64 {
        self.group.as_ref().map_or(1, |g| g.member_id)
    }
}

/// Entry point of the placement driver.
pub struct PdServer;

impl PdServer {
    /// Opens the data dir, binds the listener and serves until [`PdHandle::shutdown`]. With an
    /// initial cluster, also binds the peer address and joins the PD group.
    pub async fn start(cfg: PdConfig) -> Result<PdHandle> {
        cfg.validate()?;
        let security = security_of(&cfg)?;
        let local = Arc::new(RocksMetaStore::open(&cfg.data_dir)?);
        if !cfg.is_replicated() {
            return Self::start_inner(cfg, local, None, security).await;
        }
        let (replica, role) = RaftMetaStore::start(local, &cfg, &security)?;
        Self::start_inner(cfg, replica.clone(), Some((replica, role)), security).await
    }

    /// Like [`PdServer::start`] for a lone PD on a given [`MetaStore`] (e.g. in memory).
    pub async fn start_with_store(cfg: PdConfig, meta: Arc<dyn MetaStore>) -> Result<PdHandle> {
        let security = security_of(&cfg)?;
        Self::start_inner(cfg, meta, None, security).await
    }

    async fn start_inner(
        cfg: PdConfig,
        meta: Arc<dyn MetaStore>,
        replica: Option<(Arc<RaftMetaStore>, watch::Receiver<Role>)>,
        security: SecurityManager,
    ) -> Result<PdHandle> {
        cfg.validate()?;
        let listener = TcpListener::bind(&cfg.listen_addr).await?;
        let addr = listener.local_addr()?;
        let advertise = if cfg.advertise_addr.is_empty() {
            addr.to_string()
        } else {
            cfg.advertise_addr.clone()
        };
        let balance_interval = Duration::from_millis(cfg.balance_leader_interval_ms);
        let region_interval = Duration::from_millis(cfg.balance_region_interval_ms);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (current_tx, current_rx) = watch::channel(None);
        let group = replica.map(|(replica, role)| Group {
            replica,
            role,
            members: cfg.initial_cluster.clone(),
            member_id: cfg.member_id,
        });
        let take_over = match &group {
            None => {
                let cluster = Arc::new(Cluster::open(meta.clone(), cfg.clone(), now_ms())?);
                tracing::info!(%addr, cluster_id = cluster.cluster_id(), "PD started");
                let _ = current_tx.send(Some(cluster));
                None
            }
            Some(g) => {
                tracing::info!(%addr, member_id = g.member_id, "PD member started");
                Some(tokio::spawn(take_over_loop(
                    g.role.clone(),
                    g.replica.view().clone(),
                    meta.clone(),
                    cfg.clone(),
                    current_tx.clone(),
                    stop_rx.clone(),
                )))
            }
        };
        let serving = Serving {
            current: current_rx,
            meta,
            group,
            client_url: security.url(&advertise),
            security: security.clone(),
        };
        let metrics = Arc::new(Metrics::new());
        let svc = PdService {
            serving: serving.clone(),
            metrics: metrics.clone(),
            stop: stop_rx.clone(),
            queue_max: cfg.stream_queue_max,
        };
        let grpc = tonic::service::Routes::new(PdGrpcServer::new(svc.clone()))
            .add_service(KeyspaceServer::new(svc))
            .into_axum_router();
        let router = crate::http::routes(grpc, serving.clone(), metrics);
        let incoming = Incoming::new(listener, &security);
        let serve = tokio::spawn(accept_loop(incoming, router, stop_rx.clone()));
        let balance = tokio::spawn(balance_loop(
            serving.clone(),
            balance_interval,
            region_interval,
            stop_rx,
        ));
        Ok(PdHandle {
            addr,
            serving,
            current_tx,
            stop: stop_tx,
            tasks: [serve, balance].into_iter().chain(take_over).collect(),
        })
    }
}

/// Follows the raft role: loads the state when this member starts to lead, drops it when it
/// stops. On shutdown the state stays published: [`PdHandle::shutdown`] takes it back and waits
/// for its last user.
async fn take_over_loop(
    mut role: watch::Receiver<Role>,
    view: Arc<ReplicaView>,
    meta: Arc<dyn MetaStore>,
    cfg: PdConfig,
    current: watch::Sender<Option<Arc<Cluster>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut serving_term = 0;
    loop {
        let term = role.borrow_and_update().serving_term;
        if term != serving_term {
            if current.borrow().is_some() {
                tracing::info!(term = serving_term, "PD member stopped leading");
                let _ = current.send(None);
            }
            serving_term = 0;
            if term != 0 {
                let (meta, cfg) = (meta.clone(), cfg.clone());
                // Everything up to this term's first entry is applied, so the view holds it.
                let state = view.state();
                let opened = tokio::task::spawn_blocking(move || {
                    Cluster::open_with(meta, cfg, now_ms(), Some(state))
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
                match opened {
                    Ok(cluster) if role.borrow().serving_term == term => {
                        tracing::info!(term, cluster_id = cluster.cluster_id(), "PD member leads");
                        let _ = current.send(Some(Arc::new(cluster)));
                        serving_term = term;
                    }
                    Ok(_) => continue,
                    Err(e) => tracing::warn!(term, "taking over as PD leader failed: {e}"),
                }
                if serving_term == 0 {
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep(TAKE_OVER_RETRY) => continue,
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => break,
            changed = role.changed() => if changed.is_err() { break },
        }
    }
}

/// The security manager `cfg.security` makes.
fn security_of(cfg: &PdConfig) -> Result<SecurityManager> {
    SecurityManager::new(&cfg.security).map_err(|e| crate::PdError::InvalidConfig(e.to_string()))
}

/// Serves `router` (gRPC and HTTP) on every connection `incoming` accepts (TLS handshakes
/// done, when configured) until `stop`.
pub(crate) async fn accept_loop(
    mut incoming: Incoming,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    use futures::StreamExt;
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = incoming.next() => {
                let stream = match accepted {
                    Some(Ok(stream)) => stream,
                    Some(Err(e)) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    None => break,
                };
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

/// Runs balance-leader every `interval`, balance-region, hot-region and the merge checker
/// every `region_interval`.
async fn balance_loop(
    serving: Serving,
    interval: Duration,
    region_interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    let mut region_ticker = tokio::time::interval(region_interval);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {
                let Some(cluster) = serving.cluster() else { continue };
                if let Err(e) = cluster.update_store_states() {
                    tracing::warn!(error = %e, "store states not updated");
                }
                let n = cluster.run_balance_leader(now_ms());
                if n > 0 {
                    tracing::debug!(operators = n, "balance-leader scheduled");
                }
            }
            _ = region_ticker.tick() => {
                let Some(cluster) = serving.cluster() else { continue };
                let n = cluster.run_balance_region(now_ms());
                if n > 0 {
                    tracing::debug!(operators = n, "balance-region scheduled");
                }
                let n = cluster.run_hot_region(now_ms());
                if n > 0 {
                    tracing::debug!(operators = n, "hot-region scheduled");
                }
                let n = cluster.run_merge_checker(now_ms());
                if n > 0 {
                    tracing::debug!(merges = n, "merge-region scheduled");
                }
            }
        }
    }
}

/// A running PD. Dropping it also stops PD, without waiting for the data dir to be released.
pub struct PdHandle {
    addr: SocketAddr,
    serving: Serving,
    current_tx: watch::Sender<Option<Arc<Cluster>>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl PdHandle {
    /// The bound address (the real port when the config asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>` (`https://` with TLS), the endpoint clients connect to.
    pub fn endpoint(&self) -> String {
        self.serving.security.url(&self.addr.to_string())
    }

    /// The cluster state while this PD serves (always when alone; while leading in a group).
    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.serving.cluster()
    }

    /// Whether this member of a PD group is its serving leader (always true alone).
    pub fn is_leader(&self) -> bool {
        self.serving.cluster().is_some()
    }

    /// Stops serving, closes every connection and stream, and releases the data dir.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let last = self.current_tx.send_replace(None);
        // Stream tasks hold the cluster until they observe the stop signal.
        if let Some(cluster) = last {
            let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT_MAX;
            while Arc::strong_count(&cluster) > 1 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if Arc::strong_count(&cluster) > 1 {
                tracing::warn!("PD state still referenced after shutdown");
            }
        }
        if let Some(g) = &self.serving.group {
            let replica = g.replica.clone();
            let _ = tokio::task::spawn_blocking(move || replica.stop()).await;
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
