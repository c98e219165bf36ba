//! [`RpcPdClient`]: the [`PdClient`] over tonic, with timeouts, bounded retries, backoff and
//! reconnection through the endpoint list.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use proto::metapb::{Region, Store};
use proto::pdpb::pd_client::PdClient as PdGrpc;
use proto::pdpb::*;
use security::SecurityManager;
use tonic::transport::Channel;
use tonic::Status;

use crate::{
    PdClient, PdError, RegionHeartbeatReceiver, RegionHeartbeatSender, RegionWithLeader, Result,
};

/// Limits of the client.
#[derive(Clone, Debug)]
pub struct PdClientConfig {
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
    /// Timeout of one RPC attempt.
    pub rpc_timeout: Duration,
    /// Attempts per call (transport failures only) before giving up.
    pub retry_max: u32,
    /// First backoff between attempts; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Largest backoff between attempts.
    pub backoff_max: Duration,
    /// Capacity of each direction of the region heartbeat stream.
    pub heartbeat_queue_max: usize,
    /// TLS (this store's certificate, PD's verified against the CA) or plaintext.
    pub security: SecurityManager,
}

impl Default for PdClientConfig {
    fn default() -> Self {
        PdClientConfig {
            connect_timeout: Duration::from_secs(3),
            rpc_timeout: Duration::from_secs(5),
            retry_max: 10,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            heartbeat_queue_max: 1024,
            security: SecurityManager::plaintext(),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) endpoints: Vec<String>,
    pub(crate) cluster_id: u64,
    pub(crate) cfg: PdClientConfig,
    pub(crate) client: Mutex<PdGrpc<Channel>>,
}

/// The PD client over gRPC. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RpcPdClient {
    pub(crate) inner: Arc<Inner>,
}

fn transport(e: impl std::fmt::Display) -> PdError {
    PdError::Transport(e.to_string())
}

/// Connects to `url` and asks for its members; returns the client and the cluster id. When
/// `url` is a member of a PD group that does not lead, follows it to the leader it names; with
/// no leader named (an election), fails so that the caller retries.
async fn connect_one(url: &str, cfg: &PdClientConfig) -> Result<(PdGrpc<Channel>, u64)> {
    let (client, resp) = members_of(url, cfg).await?;
    if resp.members.len() <= 1 {
        // A lone PD: whatever address it advertises, the one we reached is the one to use.
        return Ok((client, cluster_id_of(url, &resp)?));
    }
    let leader = leader_url(&resp)
        .cloned()
        .ok_or_else(|| transport(format!("{url}: the PD group has no leader yet")))?;
    if leader == url {
        return Ok((client, cluster_id_of(url, &resp)?));
    }
    let (client, resp) = members_of(&leader, cfg).await?;
    if leader_url(&resp) != Some(&leader) {
        return Err(transport(format!("{leader}: named leader does not lead")));
    }
    Ok((client, cluster_id_of(&leader, &resp)?))
}

/// The cluster id a GetMembers answer carries. 0 means PD has not chosen one yet (a PD group
/// before its first leader): a store that took it would persist an identity no PD serves.
fn cluster_id_of(url: &str, resp: &GetMembersResponse) -> Result<u64> {
    match resp.header.as_ref().map_or(0, |h| h.cluster_id) {
        0 => Err(transport(format!("{url}: PD has no cluster id yet"))),
        id => Ok(id),
    }
}

/// The leader's URL a GetMembers answer of a PD group names. A Flotilla PD member names the
/// raft leader, once it serves, in `etcd_leader`, and in `leader` the member an official client
/// should talk to (itself while it hears no leader): the store's calls are the serving leader's
/// alone, so this follows `etcd_leader`.
fn leader_url(resp: &GetMembersResponse) -> Option<&String> {
    resp.etcd_leader
        .as_ref()
        .and_then(|m| m.client_urls.first())
}

/// A client of `url` and its GetMembers answer.
async fn members_of(
    url: &str,
    cfg: &PdClientConfig,
) -> Result<(PdGrpc<Channel>, GetMembersResponse)> {
    let endpoint = cfg
        .security
        .endpoint(url)
        .map_err(|e| PdError::InvalidArgument(format!("{url}: {e}")))?
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.rpc_timeout)
        .tcp_nodelay(true);
    let channel = tokio::time::timeout(cfg.connect_timeout, cfg.security.channel(endpoint))
        .await
        .map_err(|_| transport(format!("connect {url}: timeout")))?
        .map_err(|e| transport(format!("connect {url}: {e}")))?;
    let mut client = PdGrpc::new(channel);
    let resp = client
        .get_members(GetMembersRequest::default())
        .await
        .map_err(transport)?
        .into_inner();
    check_header(resp.header.as_ref())?;
    Ok((client, resp))
}

/// Turns a header error into [`PdError::Pd`].
fn check_header(header: Option<&ResponseHeader>) -> Result<()> {
    match header.and_then(|h| h.error.as_ref()) {
        Some(e) if e.r#type != ErrorType::Ok as i32 => Err(PdError::Pd {
            kind: ErrorType::try_from(e.r#type).unwrap_or(ErrorType::Unknown),
            message: e.message.clone(),
        }),
        _ => Ok(()),
    }
}

/// Whether a gRPC status is worth retrying (PD unreachable or overloaded, not a bad request).
fn retryable(status: &Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Cancelled
            | Code::Internal
    )
}

impl RpcPdClient {
    /// Connects with the default [`PdClientConfig`].
    pub async fn connect(endpoints: &[String]) -> Result<RpcPdClient> {
        Self::connect_with_config(endpoints, PdClientConfig::default()).await
    }

    /// Connects to the first endpoint that answers GetMembers, retrying the list with backoff.
    pub async fn connect_with_config(
        endpoints: &[String],
        cfg: PdClientConfig,
    ) -> Result<RpcPdClient> {
        if endpoints.is_empty() {
            return Err(PdError::InvalidArgument("no PD endpoint".into()));
        }
        let endpoints: Vec<String> = endpoints.iter().map(|e| cfg.security.url(e)).collect();
        let (client, cluster_id) = Self::connect_any(&endpoints, &cfg, None).await?;
        let inner = Inner {
            endpoints,
            cluster_id,
            cfg,
            client: Mutex::new(client),
        };
        Ok(RpcPdClient {
            inner: Arc::new(inner),
        })
    }

    async fn connect_any(
        endpoints: &[String],
        cfg: &PdClientConfig,
        expected: Option<u64>,
    ) -> Result<(PdGrpc<Channel>, u64)> {
        let mut backoff = cfg.backoff_min;
        let mut last = PdError::Transport("no attempt".into());
        for _ in 0..cfg.retry_max.max(1) {
            for url in endpoints {
                match connect_one(url, cfg).await {
                    Ok((_, got)) if expected.is_some_and(|e| e != got) => {
                        last = PdError::ClusterIdMismatch {
                            expected: expected.unwrap_or(0),
                            got,
                        };
                    }
                    Ok(ok) => return Ok(ok),
                    Err(e) => {
                        tracing::debug!("PD endpoint {url} failed: {e}");
                        last = e;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(cfg.backoff_max);
        }
        Err(last)
    }

    /// Replaces the connection with one to any endpoint of the same cluster (one round).
    pub(crate) async fn reconnect(&self) -> Result<()> {
        let mut cfg = self.inner.cfg.clone();
        cfg.retry_max = 1;
        let (client, _) =
            Self::connect_any(&self.inner.endpoints, &cfg, Some(self.inner.cluster_id)).await?;
        *self.inner.client.lock() = client;
        Ok(())
    }

    /// The current gRPC client (cheap clone of the channel).
    pub(crate) fn grpc(&self) -> PdGrpc<Channel> {
        self.inner.client.lock().clone()
    }

    pub(crate) fn header(&self) -> Option<RequestHeader> {
        Some(RequestHeader {
            cluster_id: self.inner.cluster_id,
            sender_id: 0,
        })
    }

    /// Runs `call` with a timeout, retrying transport failures with backoff and reconnection.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(PdGrpc<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let cfg = &self.inner.cfg;
        let mut backoff = cfg.backoff_min;
        let mut last = PdError::Transport("no attempt".into());
        for attempt in 0..cfg.retry_max.max(1) {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cfg.backoff_max);
                if let Err(e) = self.reconnect().await {
                    tracing::debug!("PD reconnect failed: {e}");
                }
            }
            match tokio::time::timeout(cfg.rpc_timeout, call(self.grpc())).await {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) if retryable(&status) => last = transport(status),
                Ok(Err(status)) => return Err(transport(status)),
                Err(_) => last = transport("rpc timeout"),
            }
        }
        Err(last)
    }

    async fn do_get_tso(&self) -> Result<u64> {
        let req = TsoRequest {
            header: self.header(),
            count: 1,
            dc_location: String::new(),
        };
        let resp = self
            .call(|mut c| {
                let req = req.clone();
                async move {
                    let mut stream = c.tso(futures::stream::iter([req])).await?.into_inner();
                    let resp = stream
                        .next()
                        .await
                        .ok_or_else(|| Status::unavailable("tso stream closed"))??;
                    Ok::<_, Status>(tonic::Response::new(resp))
                }
            })
            .await?;
        check_header(resp.header.as_ref())?;
        let ts = resp
            .timestamp
            .ok_or_else(|| PdError::InvalidResponse("tso without timestamp".into()))?;
        Ok(((ts.physical as u64) << 18) | ts.logical as u64)
    }
}

fn region_of(resp: GetRegionResponse) -> Result<Option<RegionWithLeader>> {
    check_header(resp.header.as_ref())?;
    Ok(resp.region.map(|region| RegionWithLeader {
        region,
        leader: resp.leader,
    }))
}

impl PdClient for RpcPdClient {
    fn cluster_id(&self) -> u64 {
        self.inner.cluster_id
    }

    fn bootstrap(&self, store: Store, region: Region) -> BoxFuture<'_, Result<()>> {
        let req = BootstrapRequest {
            header: self.header(),
            store: Some(store),
            region: Some(region),
        };
        async move {
            let resp = self
                .call(|mut c| {
                    let r = req.clone();
                    async move { c.bootstrap(r).await }
                })
                .await?;
            check_header(resp.header.as_ref())
        }
        .boxed()
    }

    fn is_bootstrapped(&self) -> BoxFuture<'_, Result<bool>> {
        let req = IsBootstrappedRequest {
            header: self.header(),
        };
        async move {
            let resp = self
                .call(|mut c| async move { c.is_bootstrapped(req).await })
                .await?;
            check_header(resp.header.as_ref())?;
            Ok(resp.bootstrapped)
        }
        .boxed()
    }

    fn alloc_id(&self) -> BoxFuture<'_, Result<u64>> {
        let req = AllocIdRequest {
            header: self.header(),
        };
        async move {
            let resp = self
                .call(|mut c| async move { c.alloc_id(req).await })
                .await?;
            check_header(resp.header.as_ref())?;
            Ok(resp.id)
        }
        .boxed()
    }

    fn put_store(&self, store: Store) -> BoxFuture<'_, Result<()>> {
        let req = PutStoreRequest {
            header: self.header(),
            store: Some(store),
        };
        async move {
            let resp = self
                .call(|mut c| {
                    let r = req.clone();
                    async move { c.put_store(r).await }
                })
                .await?;
            check_header(resp.header.as_ref())
        }
        .boxed()
    }

    fn get_store(&self, store_id: u64) -> BoxFuture<'_, Result<Store>> {
        let req = GetStoreRequest {
            header: self.header(),
            store_id,
        };
        async move {
            let resp = self
                .call(|mut c| async move { c.get_store(req).await })
                .await?;
            check_header(resp.header.as_ref())?;
            resp.store
                .ok_or_else(|| PdError::InvalidResponse(format!("no store {store_id} in response")))
        }
        .boxed()
    }

    fn get_all_stores(&self) -> BoxFuture<'_, Result<Vec<Store>>> {
        let req = GetAllStoresRequest {
            header: self.header(),
            exclude_tombstone_stores: false,
        };
        async move {
            let resp = self
                .call(|mut c| async move { c.get_all_stores(req).await })
                .await?;
            check_header(resp.header.as_ref())?;
            Ok(resp.stores)
        }
        .boxed()
    }

    fn store_heartbeat(&self, stats: StoreStats) -> BoxFuture<'_, Result<()>> {
        let req = StoreHeartbeatRequest {
            header: self.header(),
            stats: Some(stats),
        };
        async move {
            let resp = self
                .call(|mut c| async move { c.store_heartbeat(req).await })
                .await?;
            check_header(resp.header.as_ref())
        }
        .boxed()
    }

    fn region_heartbeat_stream(&self) -> (RegionHeartbeatSender, RegionHeartbeatReceiver) {
        crate::heartbeat::spawn(self.clone())
    }

    fn ask_batch_split(&self, region: Region, count: u32) -> BoxFuture<'_, Result<Vec<SplitId>>> {
        let req = AskBatchSplitRequest {
            header: self.header(),
            region: Some(region),
            split_count: count,
        };
        async move {
            let resp = self
                .call(|mut c| {
                    let r = req.clone();
                    async move { c.ask_batch_split(r).await }
                })
                .await?;
            check_header(resp.header.as_ref())?;
            Ok(resp.ids)
        }
        .boxed()
    }

    fn report_batch_split(&self, regions: Vec<Region>) -> BoxFuture<'_, Result<()>> {
        let req = ReportBatchSplitRequest {
            header: self.header(),
            regions,
        };
        async move {
            let resp = self
                .call(|mut c| {
                    let r = req.clone();
                    async move { c.report_batch_split(r).await }
                })
                .await?;
            check_header(resp.header.as_ref())
        }
        .boxed()
    }

    fn get_region(&self, key: Vec<u8>) -> BoxFuture<'_, Result<Option<RegionWithLeader>>> {
        let req = GetRegionRequest {
            header: self.header(),
            region_key: key,
            need_buckets: false,
        };
        async move {
            let resp = self
                .call(|mut c| {
                    let r = req.clone();
                    async move { c.get_region(r).await }
                })
                .await?;
            region_of(resp)
        }
        .boxed()
    }

    fn get_region_by_id(&self, region_id: u64) -> BoxFuture<'_, Result<Option<RegionWithLeader>>> {
        let req = GetRegionByIdRequest {
            header: self.header(),
            region_id,
            need_buckets: false,
        };
        async move {
            region_of(
                self.call(|mut c| async move { c.get_region_by_id(req).await })
                    .await?,
            )
        }
        .boxed()
    }

    fn get_gc_safe_point(&self) -> BoxFuture<'_, Result<u64>> {
        let req = GetGcSafePointRequest {
            header: self.header(),
        };
        async move {
            let resp = self
                .call(|mut c| async move { c.get_gc_safe_point(req).await })
                .await?;
            check_header(resp.header.as_ref())?;
            Ok(resp.safe_point)
        }
        .boxed()
    }

    fn get_tso(&self) -> BoxFuture<'_, Result<u64>> {
        self.do_get_tso().boxed()
    }
}
