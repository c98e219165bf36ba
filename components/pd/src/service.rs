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
use proto::pdpb::pd_server::Pd;
use proto::pdpb::*;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::region_dir::RegionInfo;
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

/// Forwards `input` through `handle` into a bounded response stream until the client ends it
/// or PD shuts down.
/// or PD shuts down. The stream ends with `Unavailable` when `cluster` stops being served (the
/// member lost the lead) or `handle` fails.
fn pump<Req, Resp>(
    mut input: Streaming<Req>,
    mut stop: watch::Receiver<bool>,
    mut served: watch::Receiver<Option<Arc<Cluster>>>,
    cluster: Arc<Cluster>,
    queue_max: usize,
    handle: impl Fn(&Cluster, Req) -> Result<Option<Resp>, Status> + Send + 'static,
) -> ResponseStream<Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    let (tx, rx) = mpsc::channel(queue_max);
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
            match handle(&cluster, req) {
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
    cluster: &Cluster,
    result: &crate::Result<T>,
) -> Result<Option<ResponseHeader>, Status> {
    match result {
        Ok(_) => Ok(header(cluster.cluster_id())),
        Err(PdError::NotLeader) => Err(not_leader()),
        Err(e) => Ok(Some(ResponseHeader {
            cluster_id: cluster.cluster_id(),
            error: Some(Error {
                r#type: e.error_type() as i32,
                message: e.to_string(),
            }),
        })),
    }
}

/// Rejects requests addressed to another cluster (0 means "unknown yet").
fn check(cluster: &Cluster, header: &Option<RequestHeader>) -> crate::Result<()> {
    let request = header.as_ref().map_or(0, |h| h.cluster_id);
    let pd = cluster.cluster_id();
    if request != 0 && request != pd {
        return Err(PdError::ClusterIdMismatch { request, pd });
    }
    Ok(())
}

fn region_response(
    cluster: &Cluster,
    result: crate::Result<Option<RegionInfo>>,
) -> RpcResult<GetRegionResponse> {
    let header = header_of(cluster, &result)?;
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

    /// Answers a bidirectional stream with `handle` while this member serves (see [`pump`]).
    fn stream<Req, Resp>(
        &self,
        req: Request<Streaming<Req>>,
        handle: impl Fn(&Cluster, Req) -> Result<Option<Resp>, Status> + Send + 'static,
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
            handle,
        );
        Ok(Response::new(stream))
    }

    fn on_tso(&self, cluster: &Cluster, req: TsoRequest) -> Result<Option<TsoResponse>, Status> {
        if !self.serving.lease_valid() {
            return Err(Status::unavailable(
                "not leader: this PD member's leader lease has lapsed",
            ));
        }
        let result = check(cluster, &req.header).and_then(|_| cluster.tso(now_ms(), req.count));
        self.metrics.tso_requests.inc();
        if result.is_ok() {
            self.metrics.tso_timestamps.inc_by(u64::from(req.count));
        }
        Ok(Some(TsoResponse {
            header: header_of(cluster, &result)?,
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
        let region_id = req.region.as_ref().map_or(0, |r| r.id);
        let result =
            check(cluster, &req.header).and_then(|_| cluster.region_heartbeat(req, now_ms()));
        Ok(match result {
            Ok(Some(mut resp)) => {
                let kind = if resp.split_region.is_some() {
                    "split"
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
        let leader = self.serving.leader();
        Ok(Response::new(GetMembersResponse {
            header: header(self.serving.cluster_id()),
            members: self.serving.members(),
            etcd_leader: leader.clone(),
            leader,
        }))
    }

    type TsoStream = ResponseStream<TsoResponse>;

    async fn tso(&self, req: Request<Streaming<TsoRequest>>) -> RpcResult<Self::TsoStream> {
        let svc = self.clone();
        self.stream(req, move |c, r| svc.on_tso(c, r))
    }

    async fn bootstrap(&self, req: Request<BootstrapRequest>) -> RpcResult<BootstrapResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let result = check(&cluster, &req.header).and_then(|_| {
            let store = req
                .store
                .ok_or_else(|| PdError::InvalidValue("missing store".into()))?;
            let region = req
                .region
                .ok_or_else(|| PdError::InvalidValue("missing region".into()))?;
            cluster.bootstrap(store, region, now_ms())
        });
        Ok(Response::new(BootstrapResponse {
            header: header_of(&cluster, &result)?,
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
        let result = check(&cluster, &req.get_ref().header).and_then(|_| cluster.alloc_id());
        Ok(Response::new(AllocIdResponse {
            header: header_of(&cluster, &result)?,
            id: result.unwrap_or(0),
        }))
    }

    async fn get_store(&self, req: Request<GetStoreRequest>) -> RpcResult<GetStoreResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let result = check(&cluster, &req.header).and_then(|_| cluster.get_store(req.store_id));
        let header = header_of(&cluster, &result)?;
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
        let result = check(&cluster, &req.header).and_then(|_| {
            let store = req
                .store
                .ok_or_else(|| PdError::InvalidValue("missing store".into()))?;
            cluster.put_store(store, now_ms())
        });
        Ok(Response::new(PutStoreResponse {
            header: header_of(&cluster, &result)?,
        }))
    }

    async fn get_all_stores(
        &self,
        req: Request<GetAllStoresRequest>,
    ) -> RpcResult<GetAllStoresResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let result =
            check(&cluster, &req.header).map(|_| cluster.all_stores(req.exclude_tombstone_stores));
        Ok(Response::new(GetAllStoresResponse {
            header: header_of(&cluster, &result)?,
            stores: result.unwrap_or_default(),
        }))
    }

    async fn store_heartbeat(
        &self,
        req: Request<StoreHeartbeatRequest>,
    ) -> RpcResult<StoreHeartbeatResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let result = check(&cluster, &req.header).and_then(|_| {
            let stats = req
                .stats
                .ok_or_else(|| PdError::InvalidValue("missing stats".into()))?;
            cluster.store_heartbeat(stats, now_ms())
        });
        Ok(Response::new(StoreHeartbeatResponse {
            header: header_of(&cluster, &result)?,
            cluster_version: String::new(),
        }))
    }

    type RegionHeartbeatStream = ResponseStream<RegionHeartbeatResponse>;

    async fn region_heartbeat(
        &self,
        req: Request<Streaming<RegionHeartbeatRequest>>,
    ) -> RpcResult<Self::RegionHeartbeatStream> {
        let svc = self.clone();
        self.stream(req, move |c, r| svc.on_region_heartbeat(c, r))
    }

    async fn get_region(&self, req: Request<GetRegionRequest>) -> RpcResult<GetRegionResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let result = check(&cluster, &req.header).and_then(|_| cluster.get_region(&req.region_key));
        region_response(&cluster, result)
    }

    async fn get_prev_region(
        &self,
        req: Request<GetRegionRequest>,
    ) -> RpcResult<GetRegionResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let result =
            check(&cluster, &req.header).and_then(|_| cluster.get_prev_region(&req.region_key));
        region_response(&cluster, result)
    }

    async fn get_region_by_id(
        &self,
        req: Request<GetRegionByIdRequest>,
    ) -> RpcResult<GetRegionResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let result =
            check(&cluster, &req.header).and_then(|_| cluster.get_region_by_id(req.region_id));
        region_response(&cluster, result)
    }

    async fn scan_regions(
        &self,
        req: Request<ScanRegionsRequest>,
    ) -> RpcResult<ScanRegionsResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let limit = usize::try_from(req.limit.max(0)).unwrap_or(0);
        let result = check(&cluster, &req.header)
            .and_then(|_| cluster.scan_regions(&req.start_key, &req.end_key, limit));
        let mut resp = ScanRegionsResponse {
            header: header_of(&cluster, &result)?,
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
        let result = check(&cluster, &req.header).and_then(|_| {
            let region = req
                .region
                .ok_or_else(|| PdError::InvalidValue("missing region".into()))?;
            cluster.ask_batch_split(&region, req.split_count)
        });
        Ok(Response::new(AskBatchSplitResponse {
            header: header_of(&cluster, &result)?,
            ids: result.unwrap_or_default(),
        }))
    }

    async fn report_batch_split(
        &self,
        req: Request<ReportBatchSplitRequest>,
    ) -> RpcResult<ReportBatchSplitResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let result =
            check(&cluster, &req.header).and_then(|_| cluster.report_batch_split(req.regions));
        Ok(Response::new(ReportBatchSplitResponse {
            header: header_of(&cluster, &result)?,
        }))
    }

    async fn get_gc_safe_point(
        &self,
        req: Request<GetGcSafePointRequest>,
    ) -> RpcResult<GetGcSafePointResponse> {
        let cluster = self.cluster()?;
        let result = check(&cluster, &req.get_ref().header).map(|_| cluster.gc_safe_point());
        Ok(Response::new(GetGcSafePointResponse {
            header: header_of(&cluster, &result)?,
            safe_point: result.unwrap_or(0),
        }))
    }

    async fn update_gc_safe_point(
        &self,
        req: Request<UpdateGcSafePointRequest>,
    ) -> RpcResult<UpdateGcSafePointResponse> {
        let cluster = self.cluster()?;
        let req = req.into_inner();
        let result =
            check(&cluster, &req.header).and_then(|_| cluster.update_gc_safe_point(req.safe_point));
        Ok(Response::new(UpdateGcSafePointResponse {
            header: header_of(&cluster, &result)?,
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
        let cluster_id = self.cluster()?.cluster_id();
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
        let cluster_id = self.cluster()?.cluster_id();
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
