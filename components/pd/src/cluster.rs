//! The cluster state behind every RPC: stores, the region directory, operators, the GC safe
//! point, plus the id allocator and the TSO. Every change is persisted before it is applied
//! in memory and acknowledged. Methods take the current time as an argument (no clock inside).
//!
//! One lock, `inner`, guards the state in memory, and no meta-store write happens under it:
//! a write in a PD group is a raft round trip of up to 5 s, and lookups, store heartbeats and
//! region reports go on meanwhile. Region reports, the hot path, claim what they touch and
//! persist with the lock released (see `cluster_regions.rs`). The rare record changes
//! (bootstrap, store records and states, the GC safe point) decide under `inner`, release it,
//! persist, and install, all under `record_writes`, which orders them among themselves (so
//! a decision still holds when installed) and which nothing else takes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use proto::metapb::{Region, Store, StoreState};
use proto::pdpb::{self, SplitId, StoreStats};
use proto::Message;

use crate::meta_store::MetaStore;
use crate::operator::Operator;
use crate::region_dir::{RegionDirectory, RegionInfo};
use crate::replica_view::{
    region_key, region_value, scan_limit, store_key, Lookup, Persisted, BOOTSTRAPPED_KEY,
    CLUSTER_ID_KEY, GC_SAFE_POINT_KEY,
};
use crate::store_limit::StoreLimits;
use crate::tso::decode_u64;
use crate::{IdAllocator, PdConfig, PdError, Result, Tso};

/// A store and its liveness.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreInfo {
    /// The store's meta as last put.
    pub store: Store,
    /// Stats of the last store heartbeat.
    pub stats: Option<StoreStats>,
    /// When the store last heartbeated (or was put, or PD started), ms since the epoch.
    pub last_heartbeat_ms: u64,
}

/// Per-store counts and liveness, for the HTTP API and the schedulers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreStatus {
    /// The store.
    pub info: StoreInfo,
    /// Region peers on the store (from the directory).
    pub region_count: u64,
    /// Regions led by the store (from the directory).
    pub leader_count: u64,
    /// Whether the store is up (state Up and a recent heartbeat).
    pub is_up: bool,
    /// Whether the store has been silent longer than `max_store_down_time_secs`
    /// ([`Cluster::store_down_long`]): its replicas are to be rebuilt elsewhere.
    pub is_down_long: bool,
}

#[derive(Default)]
struct Inner {
    bootstrapped: bool,
    stores: BTreeMap<u64, StoreInfo>,
    regions: RegionDirectory,
    operators: HashMap<u64, Operator>,
    /// Store limits of peer additions and removals (in memory only).
    limits: StoreLimits,
    gc_safe_point: u64,
    /// What the region writes persisting right now (lock released) have claimed.
    claims: regions::Claims,
}

/// PD's state. Shared by the gRPC services, the HTTP API and the background schedulers.
pub struct Cluster {
    cfg: PdConfig,
    meta: Arc<dyn MetaStore>,
    cluster_id: u64,
    ids: IdAllocator,
    tso: Tso,
    presplit_keys: Vec<Vec<u8>>,
    inner: Mutex<Inner>,
    /// Signalled (with `inner`) when a region write releases its claims.
    claims_released: Condvar,
    /// Held by a record change (bootstrap, store record, GC safe point) from its decision to
    /// its install, across its write; never taken with `inner` held.
    record_writes: Mutex<()>,
}

impl Cluster {
    /// The cluster id persisted in `meta`, if one was chosen.
    pub fn persisted_id(meta: &dyn MetaStore) -> Option<u64> {
        meta.get(CLUSTER_ID_KEY)
            .ok()?
            .and_then(|v| decode_u64(&v).ok())
    }

    /// Loads the state from `meta` (a fresh cluster gets a random id), at time `now_ms`.
    pub fn open(meta: Arc<dyn MetaStore>, cfg: PdConfig, now_ms: u64) -> Result<Cluster> {
        Self::open_with(meta, cfg, now_ms, None)
    }

    /// Like [`Cluster::open`]; a PD group's new leader passes the state its replica view
    /// holds (what `meta` holds, already decoded, plus the stale coverage that keeps lookups
    /// answered across a split's gap), so nothing is read twice.
    pub(crate) fn open_with(
        meta: Arc<dyn MetaStore>,
        cfg: PdConfig,
        now_ms: u64,
        state: Option<Persisted>,
    ) -> Result<Cluster> {
        let mut state = match state {
            Some(state) => state,
            None => Persisted::load(meta.as_ref())?,
        };
        let cluster_id = match state.cluster_id {
            0 => {
                let id = rand::random::<u64>().max(1);
                meta.write(&[(CLUSTER_ID_KEY.to_vec(), id.to_be_bytes().to_vec())])?;
                id
            }
            id => id,
        };
        // Liveness is not persisted: every store gets a full grace period after a restart.
        let stores = std::mem::take(&mut state.stores)
            .into_iter()
            .map(|(id, store)| {
                let info = StoreInfo {
                    store,
                    stats: None,
                    last_heartbeat_ms: now_ms,
                };
                (id, info)
            })
            .collect();
        let inner = Inner {
            bootstrapped: state.bootstrapped,
            gc_safe_point: state.gc_safe_point,
            stores,
            regions: state.regions,
            limits: StoreLimits::new(
                cfg.store_limit_add_peer_per_min,
                cfg.store_limit_remove_peer_per_min,
            ),
            ..Default::default()
        };
        Ok(Cluster {
            ids: IdAllocator::load(meta.clone(), cfg.id_batch)?,
            tso: Tso::load(meta.clone(), cfg.tso_save_window_ms)?,
            presplit_keys: codec::keys::keyspace_presplit_keys(),
            inner: Mutex::new(inner),
            claims_released: Condvar::new(),
            record_writes: Mutex::new(()),
            cfg,
            meta,
            cluster_id,
        })
    }

    /// This cluster's id.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The configuration.
    pub fn config(&self) -> &PdConfig {
        &self.cfg
    }

    /// Allocates one id.
    pub fn alloc_id(&self) -> Result<u64> {
        self.ids.alloc()
    }

    /// Allocates `count` timestamps at `now_ms`; returns the last one.
    pub fn tso(&self, now_ms: u64, count: u32) -> Result<pdpb::Timestamp> {
        self.tso.alloc(now_ms, count)
    }

    /// Whether the cluster has been bootstrapped.
    pub fn is_bootstrapped(&self) -> bool {
        self.inner.lock().bootstrapped
    }

    /// Bootstraps with the first store and the first region (one peer, on that store).
    pub fn bootstrap(&self, store: Store, region: Region, now_ms: u64) -> Result<()> {
        let _order = self.record_writes.lock();
        if self.inner.lock().bootstrapped {
            return Err(PdError::AlreadyBootstrapped);
        }
        if store.id == 0 || region.id == 0 || region.peers.is_empty() {
            return Err(PdError::InvalidValue(
                "bootstrap needs a store id, a region id and peers".into(),
            ));
        }
        let leader = region
            .peers
            .iter()
            .find(|p| p.store_id == store.id)
            .cloned();
        let info = RegionInfo::new(region, leader);
        self.meta.write(&[
            (store_key(store.id), store.encode_to_vec()),
            (region_key(info.region.id), region_value(&info)),
            (BOOTSTRAPPED_KEY.to_vec(), vec![1]),
        ])?;
        // No region write is in flight: they need a bootstrapped cluster.
        let mut inner = self.inner.lock();
        inner.stores.insert(
            store.id,
            StoreInfo {
                store,
                stats: None,
                last_heartbeat_ms: now_ms,
            },
        );
        inner.regions = RegionDirectory::default();
        inner.regions.upsert(info)?;
        inner.bootstrapped = true;
        Ok(())
    }

    /// Registers or updates a store. PD owns the store's state: a new store is Up, a known
    /// one keeps its state (an Offline store that restarts is still being decommissioned), a
    /// Tombstone is refused.
    pub fn put_store(&self, mut store: Store, now_ms: u64) -> Result<()> {
        if store.id == 0 {
            return Err(PdError::InvalidValue("store id 0".into()));
        }
        let _order = self.record_writes.lock();
        let inner = self.inner.lock();
        let state = match inner.stores.get(&store.id) {
            Some(old) if old.store.state == StoreState::Tombstone as i32 => {
                return Err(PdError::StoreTombstone(store.id));
            }
            Some(old) => StoreState::try_from(old.store.state).unwrap_or(StoreState::Up),
            None => StoreState::Up,
        };
        stores::set_state_fields(&mut store, state);
        let dup = inner.stores.values().find(|s| {
            s.store.id != store.id
                && s.store.address == store.address
                && s.store.state != StoreState::Tombstone as i32
        });
        if let Some(dup) = dup {
            return Err(PdError::InvalidValue(format!(
                "address {} is used by store {}",
                store.address, dup.store.id
            )));
        }
        drop(inner);
        self.meta
            .write(&[(store_key(store.id), store.encode_to_vec())])?;
        let mut inner = self.inner.lock();
        let stats = inner.stores.get(&store.id).and_then(|s| s.stats);
        inner.stores.insert(
            store.id,
            StoreInfo {
                store,
                stats,
                last_heartbeat_ms: now_ms,
            },
        );
        Ok(())
    }

    /// The store with this id.
    pub fn get_store(&self, id: u64) -> Result<StoreInfo> {
        self.inner
            .lock()
            .stores
            .get(&id)
            .cloned()
            .ok_or(PdError::StoreNotFound(id))
    }

    /// Every store, optionally without tombstones.
    pub fn all_stores(&self, exclude_tombstone: bool) -> Vec<Store> {
        let inner = self.inner.lock();
        let keep =
            |s: &&StoreInfo| !exclude_tombstone || s.store.state != StoreState::Tombstone as i32;
        inner
            .stores
            .values()
            .filter(keep)
            .map(|s| s.store.clone())
            .collect()
    }

    /// Records a store heartbeat.
    pub fn store_heartbeat(&self, stats: StoreStats, now_ms: u64) -> Result<()> {
        let mut inner = self.inner.lock();
        let s = inner
            .stores
            .get_mut(&stats.store_id)
            .ok_or(PdError::StoreNotFound(stats.store_id))?;
        if s.store.state == StoreState::Tombstone as i32 {
            return Err(PdError::StoreTombstone(stats.store_id));
        }
        s.last_heartbeat_ms = now_ms;
        s.stats = Some(stats);
        Ok(())
    }

    fn must_bootstrapped(inner: &Inner) -> Result<()> {
        if inner.bootstrapped {
            Ok(())
        } else {
            Err(PdError::NotBootstrapped)
        }
    }

    /// The region holding the encoded `key`, if any.
    pub fn get_region(&self, key: &[u8]) -> Result<Option<RegionInfo>> {
        let inner = self.inner.lock();
        Self::must_bootstrapped(&inner)?;
        Ok(inner.regions.get_by_key(key).cloned())
    }

    /// The region before the one holding `key`, if any.
    pub fn get_prev_region(&self, key: &[u8]) -> Result<Option<RegionInfo>> {
        let inner = self.inner.lock();
        Self::must_bootstrapped(&inner)?;
        Ok(inner.regions.get_prev(key).cloned())
    }

    /// The region with this id, if any.
    pub fn get_region_by_id(&self, id: u64) -> Result<Option<RegionInfo>> {
        let inner = self.inner.lock();
        Self::must_bootstrapped(&inner)?;
        Ok(inner.regions.get(id).cloned())
    }

    /// Regions from the one holding `start` up to `end`, at most `limit` (0: the configured max).
    pub fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<RegionInfo>> {
        let inner = self.inner.lock();
        Self::must_bootstrapped(&inner)?;
        let limit = scan_limit(limit, self.cfg.scan_regions_max);
        Ok(inner
            .regions
            .scan(start, end, limit)
            .into_iter()
            .cloned()
            .collect())
    }

    /// Number of regions in the directory (O(1), unlike `all_regions().len()`).
    pub fn region_count(&self) -> usize {
        self.inner.lock().regions.len()
    }

    /// Every region, in key order.
    pub fn all_regions(&self) -> Vec<RegionInfo> {
        self.inner.lock().regions.iter().cloned().collect()
    }

    fn store_is_up(cfg: &PdConfig, s: &StoreInfo, now_ms: u64) -> bool {
        s.store.state == StoreState::Up as i32
            && now_ms.saturating_sub(s.last_heartbeat_ms) <= cfg.store_down_after_secs * 1000
    }

    /// Every store's status: O(stores), the counts come from the directory's tallies.
    fn store_status(inner: &Inner, cfg: &PdConfig, now_ms: u64) -> Vec<StoreStatus> {
        inner
            .stores
            .values()
            .map(|s| {
                let tally = inner.regions.tally(s.store.id);
                StoreStatus {
                    info: s.clone(),
                    region_count: tally.region_count,
                    leader_count: tally.leader_count,
                    is_up: Self::store_is_up(cfg, s, now_ms),
                    is_down_long: Self::store_down_long(cfg, s, now_ms),
                }
            })
            .collect()
    }

    /// Every store with its counts and liveness at `now_ms`.
    pub fn stores_status(&self, now_ms: u64) -> Vec<StoreStatus> {
        Self::store_status(&self.inner.lock(), &self.cfg, now_ms)
    }

    /// Number of running operators.
    pub fn operator_count(&self) -> usize {
        self.inner.lock().operators.len()
    }

    /// The running operator of a region, if any.
    pub fn operator(&self, region_id: u64) -> Option<Operator> {
        self.inner.lock().operators.get(&region_id).cloned()
    }

    /// Queues an operator moving the leader of `region_id` to its voter on `to_store_id`, sent
    /// on the region's next heartbeat (an operator's request, as PD's `transfer-leader`).
    pub fn add_transfer_leader_operator(
        &self,
        region_id: u64,
        to_store_id: u64,
        now_ms: u64,
    ) -> Result<()> {
        self.add_manual_operator(region_id, "transfer-leader", now_ms, |info| {
            let peer = info
                .region
                .peers
                .iter()
                .find(|p| {
                    p.store_id == to_store_id && p.role == proto::metapb::PeerRole::Voter as i32
                })
                .ok_or_else(|| {
                    PdError::InvalidValue(format!(
                        "region {region_id} has no voter on store {to_store_id}"
                    ))
                })?;
            Ok(crate::operator::Step::TransferLeader {
                store_id: to_store_id,
                peer_id: peer.id,
            })
        })
    }

    /// Queues an operator splitting `region_id` at `keys` (encoded region keys), sent on the
    /// region's next heartbeat (an operator's request, as PD's `split-region` with the
    /// `usekey` policy). Every key must lie strictly inside the region.
    pub fn add_split_operator(
        &self,
        region_id: u64,
        keys: Vec<Vec<u8>>,
        now_ms: u64,
    ) -> Result<()> {
        // A store asks PD for the new regions' ids in one AskBatchSplit, which PD caps at
        // `split_count_max`: an operator with more keys would be refused on every attempt.
        let max = self.cfg.split_count_max as usize;
        self.add_manual_operator(region_id, "split-region", now_ms, |info| {
            let r = &info.region;
            let inside = |k: &Vec<u8>| {
                k.as_slice() > r.start_key.as_slice()
                    && (r.end_key.is_empty() || k.as_slice() < r.end_key.as_slice())
            };
            if keys.is_empty() || !keys.iter().all(inside) {
                return Err(PdError::InvalidValue(format!(
                    "split keys must be non-empty and strictly inside region {region_id}"
                )));
            }
            let mut keys = keys.clone();
            keys.sort();
            keys.dedup();
            if keys.len() > max {
                return Err(PdError::InvalidValue(format!(
                    "{} split keys in one operator (max {max}, split_count_max): send them in \
                     batches, each to the region that then holds them",
                    keys.len()
                )));
            }
            Ok(crate::operator::Step::Split { keys })
        })
    }

    /// Queues a one-step operator an operator asked for over HTTP, unless the region already
    /// has one or too many run.
    fn add_manual_operator(
        &self,
        region_id: u64,
        name: &'static str,
        now_ms: u64,
        step: impl FnOnce(&RegionInfo) -> Result<crate::operator::Step>,
    ) -> Result<()> {
        let mut inner = self.inner.lock();
        Self::must_bootstrapped(&inner)?;
        let info = inner
            .regions
            .get(region_id)
            .ok_or(PdError::RegionNotFound(region_id))?;
        let step = step(info)?;
        let mut op = Operator::new(info, name, vec![step]);
        op.created_ms = now_ms;
        if inner.operators.contains_key(&region_id) {
            return Err(PdError::Busy(format!(
                "region {region_id} already has an operator"
            )));
        }
        if inner.operators.len() >= self.cfg.operators_max {
            return Err(PdError::Busy(format!(
                "{} operators running (operators_max)",
                inner.operators.len()
            )));
        }
        inner.operators.insert(region_id, op);
        Ok(())
    }

    /// New ids for `count` regions split from `region`: one region id and one peer id per peer.
    pub fn ask_batch_split(&self, region: &Region, count: u32) -> Result<Vec<SplitId>> {
        if count == 0 || count > self.cfg.split_count_max {
            return Err(PdError::InvalidValue(format!(
                "split_count {count} (max {})",
                self.cfg.split_count_max
            )));
        }
        let peers = {
            let inner = self.inner.lock();
            Self::must_bootstrapped(&inner)?;
            match inner.regions.get(region.id) {
                Some(known) if region.peers.is_empty() => known.region.peers.len(),
                _ => region.peers.len(),
            }
        };
        let mut ids = self.ids.alloc_many(u64::from(count) * (peers as u64 + 1))?;
        Ok((0..count)
            .map(|_| SplitId {
                new_region_id: ids.next().expect("allocated"),
                new_peer_ids: ids.by_ref().take(peers).collect(),
            })
            .collect())
    }

    /// The GC safe point.
    pub fn gc_safe_point(&self) -> u64 {
        self.inner.lock().gc_safe_point
    }

    /// Moves the GC safe point forward to `safe_point` (never back); returns the new value.
    pub fn update_gc_safe_point(&self, safe_point: u64) -> Result<u64> {
        let _order = self.record_writes.lock();
        let current = self.inner.lock().gc_safe_point;
        if safe_point <= current {
            return Ok(current);
        }
        self.meta.write(&[(
            GC_SAFE_POINT_KEY.to_vec(),
            safe_point.to_be_bytes().to_vec(),
        )])?;
        self.inner.lock().gc_safe_point = safe_point;
        Ok(safe_point)
    }
}

impl Lookup for Cluster {
    fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    fn get_region(&self, key: &[u8]) -> Result<Option<RegionInfo>> {
        Cluster::get_region(self, key)
    }

    fn get_prev_region(&self, key: &[u8]) -> Result<Option<RegionInfo>> {
        Cluster::get_prev_region(self, key)
    }

    fn get_region_by_id(&self, id: u64) -> Result<Option<RegionInfo>> {
        Cluster::get_region_by_id(self, id)
    }

    fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<RegionInfo>> {
        Cluster::scan_regions(self, start, end, limit)
    }

    fn get_store(&self, id: u64) -> Result<StoreInfo> {
        Cluster::get_store(self, id)
    }

    fn all_stores(&self, exclude_tombstone: bool) -> Vec<Store> {
        Cluster::all_stores(self, exclude_tombstone)
    }

    fn gc_safe_point(&self) -> u64 {
        Cluster::gc_safe_point(self)
    }
}

#[path = "cluster_merge.rs"]
mod merge;

#[path = "cluster_regions.rs"]
mod regions;

#[path = "cluster_schedule.rs"]
mod schedule;

#[path = "cluster_stores.rs"]
mod stores;

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
