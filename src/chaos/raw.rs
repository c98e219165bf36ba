//! A raw-API client for the register workload that never sends a write twice unless the
//! first attempt surely did not apply. The official client retries a write after a gRPC
//! deadline or a broken connection; when the first attempt was already replicated, the retry
//! applies it a second time and the history is not linearizable although every store behaved
//! (a campaign showed it: seed 1 of the register workload, see docs/reliability.md). This
//! client retries only after answers that prove nothing was applied (`NotLeader`,
//! `EpochNotMatch`, `RegionNotFound`, `KeyNotInRegion`, `StaleCommand`, or a connection that
//! could not be opened); anything else is an unknown outcome, as Jepsen's clients report it.
//! Reads are retried freely.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Result};
use pd_client::{PdClient, RpcPdClient};
use proto::errorpb;
use proto::kvrpcpb::{Context, RawCasRequest, RawGetRequest, RawPutRequest};
use proto::metapb::Peer;
use proto::tikvpb::tikv_client::TikvClient;
use tokio::sync::Mutex;
use tokio::time::{sleep, timeout, Instant};
use tonic::transport::Channel;

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a write came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written<T> {
    /// Applied; the answer.
    Done(T),
    /// Surely not applied, and no attempt is left in the time allowed.
    Failed,
    /// May or may not have been applied.
    Unknown,
}

/// Where a request for a key goes.
struct Route {
    ctx: Context,
    client: TikvClient<Channel>,
}

/// A raw client over one PD connection and a connection per store.
pub struct StrictRaw {
    pd: RpcPdClient,
    stores: Mutex<HashMap<u64, TikvClient<Channel>>>,
    /// Leader hints from `NotLeader` answers, by region.
    hints: Mutex<HashMap<u64, Peer>>,
}

/// Whether a region error proves the request was not applied (and may be sent again).
fn proves_not_applied(e: &errorpb::Error) -> bool {
    e.not_leader.is_some()
        || e.epoch_not_match.is_some()
        || e.region_not_found.is_some()
        || e.key_not_in_region.is_some()
        || e.stale_command.is_some()
}

impl StrictRaw {
    /// Connects to PD, retrying for up to a minute.
    pub async fn connect(pd: &str) -> Result<StrictRaw> {
        let mut last = None;
        for _ in 0..60 {
            let cfg = pd_client::PdClientConfig {
                security: crate::ctl::client_security(),
                ..Default::default()
            };
            match RpcPdClient::connect_with_config(&crate::ctl::pd_endpoints(pd), cfg).await {
                Ok(pd) => {
                    return Ok(StrictRaw {
                        pd,
                        stores: Mutex::new(HashMap::new()),
                        hints: Mutex::new(HashMap::new()),
                    })
                }
                Err(e) => last = Some(e),
            }
            sleep(Duration::from_secs(1)).await;
        }
        bail!("cannot connect to PD at {pd}: {last:?}")
    }

    fn data_key(key: &str) -> Vec<u8> {
        [
            codec::keys::raw_keyspace_prefix(0).as_slice(),
            key.as_bytes(),
        ]
        .concat()
    }

    /// The region of `key` and its leader's connection; an error means nothing was sent.
    async fn route(&self, key: &str) -> Result<Route> {
        let encoded = codec::memcomparable::encode_bytes(&Self::data_key(key));
        let Some(r) = timeout(ATTEMPT_TIMEOUT, self.pd.get_region(encoded)).await?? else {
            bail!("PD knows no region for {key}");
        };
        let hint = self.hints.lock().await.get(&r.region.id).cloned();
        let leader = hint
            .filter(|h| r.region.peers.iter().any(|p| p.id == h.id))
            .or(r.leader)
            .or_else(|| r.region.peers.first().cloned());
        let Some(leader) = leader else {
            bail!("region {} has no peer", r.region.id);
        };
        let client = self.store(leader.store_id).await?;
        let ctx = Context {
            region_id: r.region.id,
            region_epoch: r.region.region_epoch,
            peer: Some(leader),
            ..Default::default()
        };
        Ok(Route { ctx, client })
    }

    async fn store(&self, store_id: u64) -> Result<TikvClient<Channel>> {
        if let Some(c) = self.stores.lock().await.get(&store_id) {
            return Ok(c.clone());
        }
        let store = timeout(ATTEMPT_TIMEOUT, self.pd.get_store(store_id)).await??;
        let security = crate::ctl::client_security();
        let endpoint = security
            .endpoint(&store.address)?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        let channel = security.channel(endpoint).await?;
        let c = TikvClient::new(channel);
        self.stores.lock().await.insert(store_id, c.clone());
        Ok(c)
    }

    /// Remembers what a region error says about where to go next.
    async fn learn(&self, store_id: u64, e: &errorpb::Error) {
        if let Some(nl) = &e.not_leader {
            match &nl.leader {
                Some(l) => {
                    self.hints.lock().await.insert(nl.region_id, *l);
                }
                None => {
                    self.hints.lock().await.remove(&nl.region_id);
                }
            }
        }
        if e.not_leader.is_none() && e.epoch_not_match.is_none() {
            // Perhaps the store is gone: connect again next time.
            self.stores.lock().await.remove(&store_id);
        }
    }

    /// Reads `key`: `Some(value)` (None: absent), or None if no attempt succeeded by
    /// `deadline`.
    pub async fn get(&self, key: &str, deadline: Instant) -> Option<Option<Vec<u8>>> {
        while Instant::now() < deadline {
            if let Ok(mut r) = self.route(key).await {
                let store = r.ctx.peer.as_ref().map_or(0, |p| p.store_id);
                let req = RawGetRequest {
                    context: Some(r.ctx.clone()),
                    key: Self::data_key(key),
                    ..Default::default()
                };
                match timeout(ATTEMPT_TIMEOUT, r.client.raw_get(req)).await {
                    Ok(Ok(resp)) => {
                        let resp = resp.into_inner();
                        match &resp.region_error {
                            None if resp.error.is_empty() => {
                                return Some((!resp.not_found).then_some(resp.value));
                            }
                            Some(e) => self.learn(store, e).await,
                            None => {}
                        }
                    }
                    _ => {
                        self.stores.lock().await.remove(&store);
                    }
                }
            }
            sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Sends a write built by `make` for `key` until it is applied, surely refused past
    /// `deadline`, or of unknown outcome.
    async fn write<T, F, Fut>(&self, key: &str, deadline: Instant, send: F) -> Written<T>
    where
        F: Fn(Context, TikvClient<Channel>) -> Fut,
        Fut: std::future::Future<
            Output = Result<(Option<errorpb::Error>, String, T), tonic::Status>,
        >,
    {
        while Instant::now() < deadline {
            // Nothing is sent until a route is found.
            let Ok(r) = self.route(key).await else {
                sleep(Duration::from_millis(50)).await;
                continue;
            };
            let store = r.ctx.peer.as_ref().map_or(0, |p| p.store_id);
            match timeout(ATTEMPT_TIMEOUT, send(r.ctx, r.client)).await {
                Ok(Ok((None, error, answer))) if error.is_empty() => return Written::Done(answer),
                Ok(Ok((Some(e), _, _))) if proves_not_applied(&e) => {
                    self.learn(store, &e).await;
                }
                // A deadline, a broken connection, a busy or unknown error: it may have applied.
                _ => {
                    self.stores.lock().await.remove(&store);
                    return Written::Unknown;
                }
            }
            sleep(Duration::from_millis(50)).await;
        }
        Written::Failed
    }

    /// Puts `value` at `key` (atomic mode, as compare-and-swap needs).
    pub async fn put(&self, key: &str, value: Vec<u8>, deadline: Instant) -> Written<()> {
        self.write(key, deadline, |ctx, mut c| {
            let req = RawPutRequest {
                context: Some(ctx),
                key: Self::data_key(key),
                value: value.clone(),
                for_cas: true,
                ..Default::default()
            };
            async move {
                let r = c.raw_put(req).await?.into_inner();
                Ok((r.region_error, r.error, ()))
            }
        })
        .await
    }

    /// Sets `key` to `new` if it holds `expected` (None: absent); whether it swapped.
    pub async fn cas(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        deadline: Instant,
    ) -> Written<bool> {
        self.write(key, deadline, |ctx, mut c| {
            let req = RawCasRequest {
                context: Some(ctx),
                key: Self::data_key(key),
                value: new.clone(),
                previous_not_exist: expected.is_none(),
                previous_value: expected.clone().unwrap_or_default(),
                ..Default::default()
            };
            async move {
                let r = c.raw_compare_and_swap(req).await?.into_inner();
                Ok((r.region_error, r.error, r.succeed))
            }
        })
        .await
    }
}
