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
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) metrics: Arc<Metrics>,
    /// `http://<advertise addr>`.
    pub(crate) client_url: String,
    /// Flips to true on shutdown; stream loops end on it.
    pub(crate) stop: watch::Receiver<bool>,
}

/// Forwards `input` through `handle` into a bounded response stream until the client ends it
/// or PD shuts down.
fn pump<Req, Resp>(
    mut input: Streaming<Req>,
    mut stop: watch::Receiver<bool>,
    queue_max: usize,
    handle: impl Fn(Req) -> Option<Resp> + Send + 'static,
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
                req = input.next() => match req {
                    Some(Ok(req)) => req,
                    _ => break,
                },
            };
            if let Some(resp) = handle(req) {
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
type RpcResult<T> = Result<Response<T>, Status>;

impl PdService {
    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster.cluster_id(),
            error: None,
        })
    }

    fn err_header(&self, e: &PdError) -> Option<ResponseHeader> {
        let error = Error {
            r#type: e.error_type() as i32,
            message: e.to_string(),
        };
        Some(ResponseHeader {
            cluster_id: self.cluster.cluster_id(),
            error: Some(error),
        })
    }

    /// The header for `result`: the error if any.
    fn header_of<T>(&self, result: &crate::Result<T>) -> Option<ResponseHeader> {
        match result {
            Ok(_) => self.header(),
            Err(e) => self.err_header(e),
        }
    }

    /// Rejects requests addressed to another cluster (0 means "unknown yet").
    fn check(&self, header: &Option<RequestHeader>) -> crate::Result<()> {
        let request = header.as_ref().map_or(0, |h| h.cluster_id);
        let pd = self.cluster.cluster_id();
        if request != 0 && request != pd {
            return Err(PdError::ClusterIdMismatch { request, pd });
        }
        Ok(())
    }

    fn region_response(&self, result: crate::Result<Option<RegionInfo>>) -> GetRegionResponse {
        match result {
            // Not found is an empty answer, as PD does; the client reports it as such.
            Ok(None) => GetRegionResponse {
                header: self.header(),
                ..Default::default()
            },
            Ok(Some(info)) => GetRegionResponse {
                header: self.header(),
                region: Some(info.region),
                leader: info.leader,
                down_peers: info.down_peers,
                pending_peers: info.pending_peers,
            },
            Err(e) => GetRegionResponse {
                header: self.err_header(&e),
                ..Default::default()
            },
        }
    }

    fn on_tso(&self, req: TsoRequest) -> TsoResponse {
        let result = self
            .check(&req.header)
            .and_then(|_| self.cluster.tso(now_ms(), req.count));
        self.metrics.tso_requests.inc();
        if result.is_ok() {
            self.metrics.tso_timestamps.inc_by(u64::from(req.count));
        }
        TsoResponse {
            header: self.header_of(&result),
            count: req.count,
            timestamp: result.ok(),
        }
    }

    fn on_region_heartbeat(&self, req: RegionHeartbeatRequest) -> Option<RegionHeartbeatResponse> {
        self.metrics.region_heartbeats.inc();
        let region_id = req.region.as_ref().map_or(0, |r| r.id);
        let result = self
            .check(&req.header)
            .and_then(|_| self.cluster.region_heartbeat(req, now_ms()));
        match result {
            Ok(Some(mut resp)) => {
                let kind = if resp.split_region.is_some() {
                    "split"
                } else if resp.transfer_leader.is_some() {
                    "transfer_leader"
                } else {
                    "change_peer"
                };
                self.metrics.operator_steps.with_label_values(&[kind]).inc();
                resp.header = self.header();
                Some(resp)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(region_id, "region heartbeat rejected: {e}");
                None
            }
        }
    }
}

#[tonic::async_trait]
impl Pd for PdService {
    async fn get_members(&self, _req: Request<GetMembersRequest>) -> RpcResult<GetMembersResponse> {
        let member = Member {
            name: "pd".to_owned(),
            member_id: self.cluster.cluster_id(),
            peer_urls: vec![self.client_url.clone()],
            client_urls: vec![self.client_url.clone()],
            ..Default::default()
        };
        Ok(Response::new(GetMembersResponse {
            header: self.header(),
            members: vec![member.clone()],
            leader: Some(member.clone()),
            etcd_leader: Some(member),
        }))
    }

    type TsoStream = ResponseStream<TsoResponse>;

    async fn tso(&self, req: Request<Streaming<TsoRequest>>) -> RpcResult<Self::TsoStream> {
        let svc = self.clone();
        let queue_max = self.cluster.config().stream_queue_max;
        let stream = pump(req.into_inner(), self.stop.clone(), queue_max, move |r| {
            Some(svc.on_tso(r))
        });
        Ok(Response::new(stream))
    }

    async fn bootstrap(&self, req: Request<BootstrapRequest>) -> RpcResult<BootstrapResponse> {
        let req = req.into_inner();
        let result = self.check(&req.header).and_then(|_| {
            let store = req
                .store
                .ok_or_else(|| PdError::InvalidValue("missing store".into()))?;
            let region = req
                .region
                .ok_or_else(|| PdError::InvalidValue("missing region".into()))?;
            self.cluster.bootstrap(store, region, now_ms())
        });
        Ok(Response::new(BootstrapResponse {
            header: self.header_of(&result),
        }))
    }

    async fn is_bootstrapped(
        &self,
        _req: Request<IsBootstrappedRequest>,
    ) -> RpcResult<IsBootstrappedResponse> {
        let bootstrapped = self.cluster.is_bootstrapped();
        Ok(Response::new(IsBootstrappedResponse {
            header: self.header(),
            bootstrapped,
        }))
    }

    async fn alloc_id(&self, req: Request<AllocIdRequest>) -> RpcResult<AllocIdResponse> {
        let result = self
            .check(&req.get_ref().header)
            .and_then(|_| self.cluster.alloc_id());
        Ok(Response::new(AllocIdResponse {
            header: self.header_of(&result),
            id: result.unwrap_or(0),
        }))
    }

    async fn get_store(&self, req: Request<GetStoreRequest>) -> RpcResult<GetStoreResponse> {
        let req = req.into_inner();
        let result = self
            .check(&req.header)
            .and_then(|_| self.cluster.get_store(req.store_id));
        let header = self.header_of(&result);
        let (store, stats) = result.map(|s| (Some(s.store), s.stats)).unwrap_or_default();
        Ok(Response::new(GetStoreResponse {
            header,
            store,
            stats,
        }))
    }

    async fn put_store(&self, req: Request<PutStoreRequest>) -> RpcResult<PutStoreResponse> {
        let req = req.into_inner();
        let result = self.check(&req.header).and_then(|_| {
            let store = req
                .store
                .ok_or_else(|| PdError::InvalidValue("missing store".into()))?;
            self.cluster.put_store(store, now_ms())
        });
        Ok(Response::new(PutStoreResponse {
            header: self.header_of(&result),
        }))
    }

    async fn get_all_stores(
        &self,
        req: Request<GetAllStoresRequest>,
    ) -> RpcResult<GetAllStoresResponse> {
        let req = req.into_inner();
        let result = self
            .check(&req.header)
            .map(|_| self.cluster.all_stores(req.exclude_tombstone_stores));
        let header = self.header_of(&result);
        Ok(Response::new(GetAllStoresResponse {
            header,
            stores: result.unwrap_or_default(),
        }))
    }

    async fn store_heartbeat(
        &self,
        req: Request<StoreHeartbeatRequest>,
    ) -> RpcResult<StoreHeartbeatResponse> {
        let req = req.into_inner();
        let result = self.check(&req.header).and_then(|_| {
            let stats = req
                .stats
                .ok_or_else(|| PdError::InvalidValue("missing stats".into()))?;
            self.cluster.store_heartbeat(stats, now_ms())
        });
        Ok(Response::new(StoreHeartbeatResponse {
            header: self.header_of(&result),
            cluster_version: String::new(),
        }))
    }

    type RegionHeartbeatStream = ResponseStream<RegionHeartbeatResponse>;

    async fn region_heartbeat(
        &self,
        req: Request<Streaming<RegionHeartbeatRequest>>,
    ) -> RpcResult<Self::RegionHeartbeatStream> {
        let svc = self.clone();
        let queue_max = self.cluster.config().stream_queue_max;
        let stream = pump(req.into_inner(), self.stop.clone(), queue_max, move |r| {
            svc.on_region_heartbeat(r)
        });
        Ok(Response::new(stream))
    }

    async fn get_region(&self, req: Request<GetRegionRequest>) -> RpcResult<GetRegionResponse> {
        let req = req.into_inner();
        let result = self
            .check(&req.header)
            .and_then(|_| self.cluster.get_region(&req.region_key));
        Ok(Response::new(self.region_response(result)))
    }

    async fn get_prev_region(
        &self,
        req: Request<GetRegionRequest>,
    ) -> RpcResult<GetRegionResponse> {
        let req = req.into_inner();
        let result = self
            .check(&req.header)
            .and_then(|_| self.cluster.get_prev_region(&req.region_key));
        Ok(Response::new(self.region_response(result)))
    }

    async fn get_region_by_id(
        &self,
        req: Request<GetRegionByIdRequest>,
    ) -> RpcResult<GetRegionResponse> {
        let req = req.into_inner();
        let result = self
            .check(&req.header)
            .and_then(|_| self.cluster.get_region_by_id(req.region_id));
        Ok(Response::new(self.region_response(result)))
    }

    async fn scan_regions(
        &self,
        req: Request<ScanRegionsRequest>,
    ) -> RpcResult<ScanRegionsResponse> {
        let req = req.into_inner();
        let limit = usize::try_from(req.limit.max(0)).unwrap_or(0);
        let result = self.check(&req.header).and_then(|_| {
            self.cluster
                .scan_regions(&req.start_key, &req.end_key, limit)
        });
        let mut resp = ScanRegionsResponse {
            header: self.header_of(&result),
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
        let req = req.into_inner();
        let result = self.check(&req.header).and_then(|_| {
            let region = req
                .region
                .ok_or_else(|| PdError::InvalidValue("missing region".into()))?;
            self.cluster.ask_batch_split(&region, req.split_count)
        });
        Ok(Response::new(AskBatchSplitResponse {
            header: self.header_of(&result),
            ids: result.unwrap_or_default(),
        }))
    }

    async fn report_batch_split(
        &self,
        req: Request<ReportBatchSplitRequest>,
    ) -> RpcResult<ReportBatchSplitResponse> {
        let req = req.into_inner();
        let result = self
            .check(&req.header)
            .and_then(|_| self.cluster.report_batch_split(req.regions));
        Ok(Response::new(ReportBatchSplitResponse {
            header: self.header_of(&result),
        }))
    }

    async fn get_gc_safe_point(
        &self,
        req: Request<GetGcSafePointRequest>,
    ) -> RpcResult<GetGcSafePointResponse> {
        let result = self
            .check(&req.get_ref().header)
            .map(|_| self.cluster.gc_safe_point());
        Ok(Response::new(GetGcSafePointResponse {
            header: self.header_of(&result),
            safe_point: result.unwrap_or(0),
        }))
    }

    async fn update_gc_safe_point(
        &self,
        req: Request<UpdateGcSafePointRequest>,
    ) -> RpcResult<UpdateGcSafePointResponse> {
        let req = req.into_inner();
        let result = self
            .check(&req.header)
            .and_then(|_| self.cluster.update_gc_safe_point(req.safe_point));
        let header = self.header_of(&result);
        Ok(Response::new(UpdateGcSafePointResponse {
            header,
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
        let resp = if req.name == "DEFAULT" {
            LoadKeyspaceResponse {
                header: self.header(),
                keyspace: Some(default_keyspace()),
            }
        } else {
            let error = Error {
                r#type: ErrorType::EntryNotFound as i32,
                message: format!("keyspace {} not found", req.name),
            };
            let header = Some(ResponseHeader {
                cluster_id: self.cluster.cluster_id(),
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
            header: self.header(),
            keyspaces,
        }))
    }
}
