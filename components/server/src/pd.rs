//! The store's view of PD: the few calls start-up, the transport and the PD worker make,
//! over `pd_client`. Every `pd_client` call of this crate is in this file.

use std::sync::Arc;

use futures::future::BoxFuture;
use pd_client::PdClient;
use proto::{metapb, pdpb};
use tokio::sync::watch;

use crate::transport::StoreResolver;
use crate::ServerError;

/// PD as the server uses it. Cheap to clone.
#[derive(Clone)]
pub struct Pd {
    client: Arc<dyn PdClient>,
    /// Flips to true once PD answers that this store is a Tombstone (decommissioned).
    removed: Arc<watch::Sender<bool>>,
}

/// What PD answered to a bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// This store's first region is the cluster's first region.
    Bootstrapped,
    /// Another store bootstrapped the cluster first.
    AlreadyBootstrapped,
}

fn pd_err(e: impl std::fmt::Display) -> ServerError {
    ServerError::Pd(e.to_string())
}

impl Pd {
    /// Connects to any of `endpoints`, with TLS as `security` says.
    pub async fn connect(
        endpoints: &[String],
        security: &security::SecurityManager,
    ) -> Result<Pd, ServerError> {
        let cfg = pd_client::PdClientConfig {
            security: security.clone(),
            ..Default::default()
        };
        let client = pd_client::RpcPdClient::connect_with_config(endpoints, cfg)
            .await
            .map_err(pd_err)?;
        Ok(Pd::from_client(Arc::new(client)))
    }

    /// Over any PD client (a test's substitute).
    pub fn from_client(client: Arc<dyn PdClient>) -> Pd {
        Pd {
            client,
            removed: Arc::new(watch::channel(false).0),
        }
    }

    /// Turns true once PD has answered `STORE_TOMBSTONE` to this store's registration or
    /// heartbeat: the store was decommissioned and must stop serving.
    pub fn removed(&self) -> watch::Receiver<bool> {
        self.removed.subscribe()
    }

    /// The error of a store registration or heartbeat; notes a tombstone.
    fn store_err(&self, e: pd_client::PdError) -> ServerError {
        match e {
            pd_client::PdError::Pd {
                kind: pdpb::ErrorType::StoreTombstone,
                message,
            } => {
                self.removed.send_replace(true);
                ServerError::Tombstone(message)
            }
            e => pd_err(e),
        }
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> u64 {
        self.client.cluster_id()
    }

    /// Whether the cluster has its first region.
    pub async fn is_bootstrapped(&self) -> Result<bool, ServerError> {
        self.client.is_bootstrapped().await.map_err(pd_err)
    }

    /// Offers `store` and `region` as the cluster's first.
    pub async fn bootstrap(
        &self,
        store: metapb::Store,
        region: metapb::Region,
    ) -> Result<BootstrapOutcome, ServerError> {
        match self.client.bootstrap(store, region).await {
            Ok(()) => Ok(BootstrapOutcome::Bootstrapped),
            Err(e) if e.is_already_bootstrapped() => Ok(BootstrapOutcome::AlreadyBootstrapped),
            Err(e) => Err(pd_err(e)),
        }
    }

    /// A fresh cluster-unique id.
    pub async fn alloc_id(&self) -> Result<u64, ServerError> {
        self.client.alloc_id().await.map_err(pd_err)
    }

    /// Registers or updates this store.
    pub async fn put_store(&self, store: metapb::Store) -> Result<(), ServerError> {
        self.client
            .put_store(store)
            .await
            .map_err(|e| self.store_err(e))
    }

    /// A store's record.
    pub async fn get_store(&self, store_id: u64) -> Result<metapb::Store, ServerError> {
        self.client.get_store(store_id).await.map_err(pd_err)
    }

    /// A fresh timestamp from PD's TSO.
    pub async fn get_tso(&self) -> Result<u64, ServerError> {
        self.client.get_tso().await.map_err(pd_err)
    }

    /// The cluster's GC safe point (0 if none was set).
    pub async fn get_gc_safe_point(&self) -> Result<u64, ServerError> {
        self.client.get_gc_safe_point().await.map_err(pd_err)
    }

    /// Reports this store's statistics.
    pub async fn store_heartbeat(&self, stats: pdpb::StoreStats) -> Result<(), ServerError> {
        self.client
            .store_heartbeat(stats)
            .await
            .map_err(|e| self.store_err(e))
    }

    /// Ids for splitting `region` into `count + 1` regions.
    pub async fn ask_batch_split(
        &self,
        region: metapb::Region,
        count: u32,
    ) -> Result<Vec<pdpb::SplitId>, ServerError> {
        self.client
            .ask_batch_split(region, count)
            .await
            .map_err(pd_err)
    }

    /// The region with this id as PD knows it (`None`: PD does not know it).
    pub async fn get_region_by_id(
        &self,
        region_id: u64,
    ) -> Result<Option<metapb::Region>, ServerError> {
        let found = self
            .client
            .get_region_by_id(region_id)
            .await
            .map_err(pd_err)?;
        Ok(found.map(|r| r.region))
    }

    /// The region holding encoded `key` as PD knows it.
    pub async fn get_region(&self, key: Vec<u8>) -> Result<Option<metapb::Region>, ServerError> {
        let found = self.client.get_region(key).await.map_err(pd_err)?;
        Ok(found.map(|r| r.region))
    }

    /// Tells PD the regions a split produced.
    pub async fn report_batch_split(
        &self,
        regions: Vec<metapb::Region>,
    ) -> Result<(), ServerError> {
        self.client
            .report_batch_split(regions)
            .await
            .map_err(pd_err)
    }

    /// Opens the region heartbeat stream (re-established by the client when it breaks):
    /// requests go into the sender, PD's answers come out of the receiver.
    pub fn region_heartbeat_stream(
        &self,
    ) -> (
        pd_client::RegionHeartbeatSender,
        pd_client::RegionHeartbeatReceiver,
    ) {
        self.client.region_heartbeat_stream()
    }
}

/// Resolves store addresses through PD's `GetStore`, cached until invalidated.
pub struct PdResolver {
    pd: Pd,
    cache: Arc<dashmap::DashMap<u64, String>>,
}

impl PdResolver {
    /// A resolver over `pd`.
    pub fn new(pd: Pd) -> Self {
        PdResolver {
            pd,
            cache: Default::default(),
        }
    }
}

impl StoreResolver for PdResolver {
    fn resolve(&self, store_id: u64) -> BoxFuture<'static, Result<String, ServerError>> {
        let (pd, cache) = (self.pd.clone(), self.cache.clone());
        Box::pin(async move {
            if let Some(addr) = cache.get(&store_id) {
                return Ok(addr.clone());
            }
            let store = pd.get_store(store_id).await?;
            let addr = if store.peer_address.is_empty() {
                store.address
            } else {
                store.peer_address
            };
            if addr.is_empty() {
                return Err(ServerError::Pd(format!("store {store_id} has no address")));
            }
            cache.insert(store_id, addr.clone());
            Ok(addr)
        })
    }

    fn invalidate(&self, store_id: u64) {
        self.cache.remove(&store_id);
    }
}
