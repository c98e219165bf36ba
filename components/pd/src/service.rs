//! The gRPC services: `pdpb.PD` and `keyspacepb.Keyspace` over a shared [`Cluster`]. Errors
//! are answered in `ResponseHeader.error`; a gRPC status is only for malformed streams.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use proto::keyspacepb::keyspace_server::Keyspace;
use proto::keyspacepb::{
    GetAllKeyspacesRequest, GetAllKeyspacesResponse, KeyspaceMeta, KeyspaceState,
    LoadKeyspaceRequest, LoadKeyspaceResponse,
};
use proto::pdpb::pd_client::PdClient;
use proto::pdpb::pd_server::Pd;
use proto::pdpb::*;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::region_dir::RegionInfo;
use crate::replica_view::Lookup;
use crate::server::Serving;
use crate::{Cluster, PdError};

/// Wall clock in ms since the Unix epoch; the only clock PD reads.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Implements both gRPC services.
#[derive(Clone)]
pub(crate) struct PdService {
    pub(crate) serving: Serving,
    pub(crate) metrics: Arc<Metrics>,
    /// Flips to true on shutdown; stream loops end on it.
    pub(crate) stop: watch::Receiver<bool>,
    /// Capacity of each response stream's queue.
    pub(crate) queue_max: usize,
}

/// The status a member that does not lead answers; clients reconnect to the leader.
fn not_leader() -> Status {
    Status::unavailable("not leader: this PD member does not lead the PD group")
}

/// How a stream's handler runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Run {
    /// On the stream's task: the handler seldom blocks (TSO: a write once per save window).
    Inline,
    /// On tokio's blocking pool, one request at a time: the handler may wait on a meta-store
    /// write (region heartbeats: a raft round trip of up to 5 s in a PD group), which must not
    /// hold a runtime worker.
    Blocking,
}

/// Forwards `input` through `handle` into a bounded response stream until the client ends it
/// or PD shuts down. The stream ends with `Unavailable` when `cluster` stops being served (the
/// member lost the lead) or `handle` fails. Requests are handled one at a time, in order.
fn pump<Req, Resp>(
    mut input: Streaming<Req>,
    mut stop: watch::Receiver<bool>,
    mut served: watch::Receiver<Option<Arc<Cluster>>>,
    cluster: Arc<Cluster>,
    queue_max: usize,
    run: Run,
    handle: impl Fn(&Cluster, Req) -> Result<Option<Resp>, Status> + Send + Sync + 'static,
) -> ResponseStream<Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    let (tx, rx) = mpsc::channel(queue_max);
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        loop {
            let req = tokio::select! {
                _ = stop.changed() => break,
                _ = served.changed() => {
                    let still = served.borrow().as_ref().is_some_and(|c| Arc::ptr_eq(c, &cluster));
                    if still {
                        continue;
                    }
                    let _ = tx.send(Err(not_leader())).await;
                    break;
                }
                req = input.next() => match req {
                    Some(Ok(req)) => req,
                    _ => break,
                },
            };
            let result = match run {
                Run::Inline => handle(&cluster, req),
                Run::Blocking => {
                    let (handle, cluster) = (handle.clone(), cluster.clone());
                    tokio::task::spawn_blocking(move || handle(&cluster, req))
                        .await
                        .unwrap_or_else(|e| Err(Status::internal(format!("handler: {e}"))))
                }
            };
            match result {
                Ok(Some(resp)) => {
                    if tx.send(Ok(resp)).await.is_err() {
                        break;
                    }
                }
                Ok(None) => {}
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// Longest a new TSO stream waits for a leader to serve or forward it to.
const TSO_ROUTE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(3);

/// How soon a relay whose leader did not answer looks for one again.
const TSO_RELAY_RETRY: std::time::Duration = std::time::Duration::from_millis(100);
/// Marks a TSO stream one member relays to another.
const FORWARDED_HEADER: &str = "flotilla-pd-forwarded";

/// A connection to another member's client port.
async fn connect(
    url: &str,
    security: &security::SecurityManager,
) -> Result<tonic::transport::Channel, String> {
    let endpoint = security
        .endpoint(url)
        .map_err(|e| e.to_string())?
        .connect_timeout(std::time::Duration::from_secs(1))
        .tcp_nodelay(true);
    endpoint.connect().await.map_err(|e| e.to_string())
}

/// Where a TSO stream is answered.
enum TsoRoute {
    /// This member leads and serves.
    Here,
    /// Relayed to the leader at this client URL.
    Forward(String),
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
type RpcResult<T> = Result<Response<T>, Status>;

fn header(cluster_id: u64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id,
        error: None,
    })
}

/// The header for `result` (its error if any); losing the lead mid-request is `Unavailable`.
fn header_of<T>(
    cluster_id: u64,
    result: &crate::Result<T>,
) -> Result<Option<ResponseHeader>, Status> {
    match result {
        Ok(_) => Ok(header(cluster_id)),
        Err(PdError::NotLeader) => Err(not_leader()),
        Err(e) => Ok(Some(ResponseHeader {
            cluster_id,
            error: Some(Error {
                r#type: e.error_type() as i32,
                message: e.to_string(),
            }),
        })),
    }
}

/// Rejects requests addressed to another cluster (0 means "unknown yet").
fn check(pd: u64, header: &Option<RequestHeader>) -> crate::Result<()> {
    let request = header.as_ref().map_or(0, |h| h.cluster_id);
    if request != 0 && request != pd {
        return Err(PdError::ClusterIdMismatch { request, pd });
    }
    Ok(())
}

fn region_response(
    cluster_id: u64,
    result: crate::Result<Option<RegionInfo>>,
) -> RpcResult<GetRegionResponse> {
    let header = header_of(cluster_id, &result)?;
    let resp = match result {
        // Not found is an empty answer, as PD does; the client reports it as such.
        Ok(None) | Err(_) => GetRegionResponse {
            header,
            ..Default::default()
        },
        Ok(Some(info)) => GetRegionResponse {
            header,
            region: Some(info.region),
            leader: info.leader,
            down_peers: info.down_peers,
            pending_peers: info.pending_peers,
        },
    };
    Ok(Response::new(resp))
}

impl PdService {
    /// The served cluster state, or `Unavailable` on a member that does not lead.
    fn cluster(&self) -> Result<Arc<Cluster>, Status> {
        self.serving.cluster().ok_or_else(not_leader)
    }

    /// What answers lookups: the served state, or this member's replica view.
    fn lookup(&self) -> Result<Arc<dyn Lookup>, Status> {
        if let Some(cluster) = self.serving.cluster() {
            return Ok(cluster);
        }
        self.metrics.view_lookups.inc();
        self.serving.view().ok_or_else(|| {
            Status::unavailable("this PD member has not learnt the cluster's state yet")
        })
    }

    /// Answers a bidirectional stream with `handle` while this member serves (see [`pump`]).
    fn stream<Req, Resp>(
        &self,
        req: Request<Streaming<Req>>,
        run: Run,
        handle: impl Fn(&Cluster, Req) -> Result<Option<Resp>, Status> + Send + Sync + 'static,
    ) -> RpcResult<ResponseStream<Resp>>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
    {
        let stream = pump(
            req.into_inner(),
            self.stop.clone(),
            self.serving.watch(),
            self.cluster()?,
            self.queue_max,
            run,
            handle,
        );
        Ok(Response::new(stream))
    }

    /// Where a new TSO stream goes: served here when this member leads, else (unless the
    /// stream was already relayed once) to the leader this member hears from. During an
    /// election or a take-over it waits, until `deadline`, rather than fail the client at once.
    async fn tso_route(
        &self,
        deadline: tokio::time::Instant,
        may_forward: bool,
    ) -> Result<TsoRoute, Status> {
        let mut served = self.serving.watch();
        let mut role = self.serving.role_watch();
        let mut stop = self.stop.clone();
        loop {
            if self.serving.cluster().is_some() {
                return Ok(TsoRoute::Here);
            }
            if let Some(url) = self.serving.forward_target().filter(|_| may_forward) {
                return Ok(TsoRoute::Forward(url));
            }
            let role_changed = async {
                match role.as_mut() {
                    Some(r) => r.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = served.changed() => {}
                ok = role_changed => if !ok { return Err(not_leader()) },
                _ = stop.changed() => return Err(not_leader()),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Status::unavailable("no PD leader elected in time"));
                }
            }
        }
    }

    /// Relays a client's TSO stream to the leader over `channel`; the leader's answers (and
    /// its end of the stream, e.g. when it loses the lead) go back unchanged.
    async fn forward_tso(
        &self,
        req: Request<Streaming<TsoRequest>>,
        channel: tonic::transport::Channel,
        url: &str,
    ) -> RpcResult<ResponseStream<TsoResponse>> {
        let input = req
            .into_inner()
            .take_while(|r| futures::future::ready(r.is_ok()))
            .filter_map(|r| futures::future::ready(r.ok()));
        let mut relayed = Request::new(input);
        relayed.metadata_mut().insert(
            FORWARDED_HEADER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        self.metrics.tso_forwarded_streams.inc();
        let answers = PdClient::new(channel)
            .tso(relayed)
            .await
            .map_err(|e| Status::unavailable(format!("relaying to PD leader {url}: {e}")))?
            .into_inner();
        Ok(Response::new(Box::pin(answers)))
    }

    fn on_tso(&self, cluster: &Cluster, req: TsoRequest) -> Result<Option<TsoResponse>, Status> {
        if !self.serving.lease_valid() {
            return Err(Status::unavailable(
                "not leader: this PD member's leader lease has lapsed",
            ));
        }
        let result =
            check(cluster.cluster_id(), &req.header).and_then(|_| cluster.tso(now_ms(), req.count));
        self.metrics.tso_requests.inc();
        if result.is_ok() {
            self.metrics.tso_timestamps.inc_by(u64::from(req.count));
        }
        Ok(Some(TsoResponse {
            header: header_of(cluster.cluster_id(), &result)?,
            count: req.count,
            timestamp: result.ok(),
        }))
    }

    fn on_region_heartbeat(
        &self,
        cluster: &Cluster,
        req: RegionHeartbeatRequest,
    ) -> Result<Option<RegionHeartbeatResponse>, Status> {
        self.metrics.region_heartbeats.inc();
        let timer = self.metrics.region_heartbeat_seconds.start_timer();
        let region_id = req.region.as_ref().map_or(0, |r| r.id);
        let result = check(cluster.cluster_id(), &req.header)
            .and_then(|_| cluster.region_heartbeat(req, now_ms()));
        timer.observe_duration();
        Ok(match result {
            Ok(Some(mut resp)) => {
                let kind = if resp.split_region.is_some() {
                    "split"
                } else if resp.merge.is_some() {
                    "merge"
                } else if resp.transfer_leader.is_some() {
                    "transfer_leader"
                } else {
                    "change_peer"
                };
                self.metrics.operator_steps.with_label_values(&[kind]).inc();
                resp.header = header(cluster.cluster_id());
                Some(resp)
            }
            Ok(None) => None,
            Err(PdError::NotLeader) => return Err(not_leader()),
            Err(e) => {
                tracing::debug!(region_id, "region heartbeat rejected: {e}");
                None
            }
        })
    }
}

#[tonic::async_trait]
impl Pd for PdService {
    async fn get_members(&self, _req: Request<GetMembersRequest>) -> RpcResult<GetMembersResponse> {
        Ok(Response::new(GetMembersResponse {
            header: header(self.serving.cluster_id()),
            members: self.serving.members(),
            leader: self.serving.leader_for_clients(),
            etcd_leader: self.serving.leader(),
        }))
    }

    type TsoStream = ResponseStream<TsoResponse>;

    async fn tso(&self, req: Request<Streaming<TsoRequest>>) -> RpcResult<Self::TsoStream> {
        // A relayed stream is served by its receiver or not at all: no relay chains or loops.
        let may_forward = !req.metadata().contains_key(FORWARDED_HEADER);
        let deadline = tokio::time::Instant::now() + TSO_ROUTE_WAIT_MAX;
        loop {
            match self.tso_route(deadline, may_forward).await? {
                TsoRoute::Here => {
                    let svc = self.clone();
                    return self.stream(req, Run::Inline, move |c, r| svc.on_tso(c, r));
                }
                TsoRoute::Forward(url) => match connect(&url, &self.serving.security).await {
                    Ok(channel) => return self.forward_tso(req, channel, &url).await,
                    // The leader this member heard from may just have died: wait for news.
                    Err(e) => {
                        tracing::debug!("relaying a TSO stream to {url}: {e}");
                        if tokio::time::Instant::now() + TSO_RELAY_RETRY >= deadline {
                            return Err(Status::unavailable(format!("PD leader {url}: {e}")));
                        }
                        tokio::time::sleep(TSO_RELAY_RETRY).await;
                    }
                },
            }
        }
    }

    async fn bootstrap(&self, req: Request<BootstrapRequest>) -> RpcResult<BootstrapResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let result = check(cluster.cluster_id(), &req.header).and_then(|_| {
            let store = req
                .store
                .ok_or_else(|| PdError::InvalidValue("missing store".into()))?;
            let region = req
                .region
                .ok_or_else(|| PdError::InvalidValue("missing region".into()))?;
            cluster.bootstrap(store, region, now_ms())
        });
        Ok(Response::new(BootstrapResponse {
            header: header_of(cluster.cluster_id(), &result)?,
        }))
    }

    async fn is_bootstrapped(
        &self,
        _req: Request<IsBootstrappedRequest>,
    ) -> RpcResult<IsBootstrappedResponse> {
        let cluster = self.cluster()?;
        Ok(Response::new(IsBootstrappedResponse {
            header: header(cluster.cluster_id()),
            bootstrapped: cluster.is_bootstrapped(),
        }))
    }

    async fn alloc_id(&self, req: Request<AllocIdRequest>) -> RpcResult<AllocIdResponse> {
        let cluster = self.cluster()?;
        let result =
            check(cluster.cluster_id(), &req.get_ref().header).and_then(|_| cluster.alloc_id());
        Ok(Response::new(AllocIdResponse {
            header: header_of(cluster.cluster_id(), &result)?,
            id: result.unwrap_or(0),
        }))
    }

    async fn get_store(&self, req: Request<GetStoreRequest>) -> RpcResult<GetStoreResponse> {
        let cluster = self.lookup()?;
        let req = req.into_inner();
        let result =
            check(cluster.cluster_id(), &req.header).and_then(|_| cluster.get_store(req.store_id));
        let header = header_of(cluster.cluster_id(), &result)?;
        let (store, stats) = result.map(|s| (Some(s.store), s.stats)).unwrap_or_default();
        Ok(Response::new(GetStoreResponse {
            header,
            store,
            stats,
        }))
    }

    async fn put_store(&self, req: Request<PutStoreRequest>) -> RpcResult<PutStoreResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let result = check(cluster.cluster_id(), &req.header).and_then(|_| {
            let store = req
                .store
                .ok_or_else(|| PdError::InvalidValue("missing store".into()))?;
            cluster.put_store(store, now_ms())
        });
        Ok(Response::new(PutStoreResponse {
            header: header_of(cluster.cluster_id(), &result)?,
        }))
    }

    async fn get_all_stores(
        &self,
        req: Request<GetAllStoresRequest>,
    ) -> RpcResult<GetAllStoresResponse> {
        let cluster = self.lookup()?;
        let req = req.into_inner();
        let result = check(cluster.cluster_id(), &req.header)
            .map(|_| cluster.all_stores(req.exclude_tombstone_stores));
        Ok(Response::new(GetAllStoresResponse {
            header: header_of(cluster.cluster_id(), &result)?,
            stores: result.unwrap_or_default(),
        }))
    }

    async fn store_heartbeat(
        &self,
        req: Request<StoreHeartbeatRequest>,
    ) -> RpcResult<StoreHeartbeatResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let result = check(cluster.cluster_id(), &req.header).and_then(|_| {
            let stats = req
                .stats
                .ok_or_else(|| PdError::InvalidValue("missing stats".into()))?;
            cluster.store_heartbeat(stats, now_ms())
        });
        Ok(Response::new(StoreHeartbeatResponse {
            header: header_of(cluster.cluster_id(), &result)?,
            cluster_version: String::new(),
        }))
    }

    type RegionHeartbeatStream = ResponseStream<RegionHeartbeatResponse>;

    async fn region_heartbeat(
        &self,
        req: Request<Streaming<RegionHeartbeatRequest>>,
    ) -> RpcResult<Self::RegionHeartbeatStream> {
        let svc = self.clone();
        self.stream(req, Run::Blocking, move |c, r| {
            svc.on_region_heartbeat(c, r)
        })
    }

    async fn get_region(&self, req: Request<GetRegionRequest>) -> RpcResult<GetRegionResponse> {
        let cluster = self.lookup()?;
        let req = req.into_inner();
        let result = check(cluster.cluster_id(), &req.header)
            .and_then(|_| cluster.get_region(&req.region_key));
        region_response(cluster.cluster_id(), result)
    }

    async fn get_prev_region(
        &self,
        req: Request<GetRegionRequest>,
    ) -> RpcResult<GetRegionResponse> {
        let cluster = self.lookup()?;
        let req = req.into_inner();
        let result = check(cluster.cluster_id(), &req.header)
            .and_then(|_| cluster.get_prev_region(&req.region_key));
        region_response(cluster.cluster_id(), result)
    }

    async fn get_region_by_id(
        &self,
        req: Request<GetRegionByIdRequest>,
    ) -> RpcResult<GetRegionResponse> {
        let cluster = self.lookup()?;
        let req = req.into_inner();
        let result = check(cluster.cluster_id(), &req.header)
            .and_then(|_| cluster.get_region_by_id(req.region_id));
        region_response(cluster.cluster_id(), result)
    }

    async fn scan_regions(
        &self,
        req: Request<ScanRegionsRequest>,
    ) -> RpcResult<ScanRegionsResponse> {
        let cluster = self.lookup()?;
        let req = req.into_inner();
        let limit = usize::try_from(req.limit.max(0)).unwrap_or(0);
        let result = check(cluster.cluster_id(), &req.header)
            .and_then(|_| cluster.scan_regions(&req.start_key, &req.end_key, limit));
        let mut resp = ScanRegionsResponse {
            header: header_of(cluster.cluster_id(), &result)?,
            ..Default::default()
        };
        for info in result.unwrap_or_default() {
            resp.region_metas.push(info.region.clone());
            resp.leaders.push(info.leader.unwrap_or_default());
            resp.regions.push(Region {
                region: Some(info.region),
                leader: info.leader,
                down_peers: info.down_peers,
                pending_peers: info.pending_peers,
            });
        }
        Ok(Response::new(resp))
    }

    async fn ask_batch_split(
        &self,
        req: Request<AskBatchSplitRequest>,
    ) -> RpcResult<AskBatchSplitResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let result = check(cluster.cluster_id(), &req.header).and_then(|_| {
            let region = req
                .region
                .ok_or_else(|| PdError::InvalidValue("missing region".into()))?;
            cluster.ask_batch_split(&region, req.split_count)
        });
        Ok(Response::new(AskBatchSplitResponse {
            header: header_of(cluster.cluster_id(), &result)?,
            ids: result.unwrap_or_default(),
        }))
    }

    async fn report_batch_split(
        &self,
        req: Request<ReportBatchSplitRequest>,
    ) -> RpcResult<ReportBatchSplitResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let result = check(cluster.cluster_id(), &req.header)
            .and_then(|_| cluster.report_batch_split(req.regions));
        Ok(Response::new(ReportBatchSplitResponse {
            header: header_of(cluster.cluster_id(), &result)?,
        }))
    }

    async fn get_gc_safe_point(
        &self,
        req: Request<GetGcSafePointRequest>,
    ) -> RpcResult<GetGcSafePointResponse> {
        let cluster = self.lookup()?;
        let result =
            check(cluster.cluster_id(), &req.get_ref().header).map(|_| cluster.gc_safe_point());
        Ok(Response::new(GetGcSafePointResponse {
            header: header_of(cluster.cluster_id(), &result)?,
            safe_point: result.unwrap_or(0),
        }))
    }

    async fn update_gc_safe_point(
        &self,
        req: Request<UpdateGcSafePointRequest>,
    ) -> RpcResult<UpdateGcSafePointResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let result = check(cluster.cluster_id(), &req.header)
            .and_then(|_| cluster.update_gc_safe_point(req.safe_point));
        Ok(Response::new(UpdateGcSafePointResponse {
            header: header_of(cluster.cluster_id(), &result)?,
            new_safe_point: result.unwrap_or(0),
        }))
    }
}

fn default_keyspace() -> KeyspaceMeta {
    KeyspaceMeta {
        id: codec::keys::DEFAULT_KEYSPACE_ID,
        name: "DEFAULT".to_owned(),
        state: KeyspaceState::Enabled as i32,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Keyspace for PdService {
    async fn load_keyspace(
        &self,
        req: Request<LoadKeyspaceRequest>,
    ) -> RpcResult<LoadKeyspaceResponse> {
        let req = req.into_inner();
        let cluster_id = self.lookup()?.cluster_id();
        let resp = if req.name == "DEFAULT" {
            LoadKeyspaceResponse {
                header: header(cluster_id),
                keyspace: Some(default_keyspace()),
            }
        } else {
            let error = Error {
                r#type: ErrorType::EntryNotFound as i32,
                message: format!("keyspace {} not found", req.name),
            };
            let header = Some(ResponseHeader {
                cluster_id,
                error: Some(error),
            });
            LoadKeyspaceResponse {
                header,
                keyspace: None,
            }
        };
        Ok(Response::new(resp))
    }

    async fn get_all_keyspaces(
        &self,
        req: Request<GetAllKeyspacesRequest>,
    ) -> RpcResult<GetAllKeyspacesResponse> {
        let cluster_id = self.lookup()?.cluster_id();
        let req = req.into_inner();
        let keyspaces = std::iter::once(default_keyspace())
            .filter(|k| k.id >= req.start_id)
            .take(if req.limit == 0 {
                usize::MAX
            } else {
                req.limit as usize
            })
            .collect();
        Ok(Response::new(GetAllKeyspacesResponse {
            header: header(cluster_id),
            keyspaces,
        }))
    }
}
