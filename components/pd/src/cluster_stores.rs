//! The store lifecycle of [`Cluster`], as PD has it: a store is **Up** when it registers;
//! an operator's `DELETE /pd/api/v1/store/{id}` makes it **Offline** (decommission: the
//! schedulers move its replicas away, [`Cluster::up_store`] cancels); once PD's directory shows
//! no peer on it, [`Cluster::update_store_states`] makes it **Tombstone**, for good: PutStore and
//! StoreHeartbeat from it are refused with `STORE_TOMBSTONE` and its address may be reused.
//! Every transition is persisted before it is applied, with `Cluster::inner` released and
//! `record_writes` held from the decision to the install. PD owns the state: what a store puts
//! about itself never changes it.
//!
//! Liveness is a separate axis, from heartbeats: a store silent for `store_down_after_secs` is
//! down (no new leaders, its peers are down peers), one silent for `max_store_down_time_secs`
//! is down long ([`Cluster::store_down_long`]): its replicas are rebuilt elsewhere.

use proto::metapb::{NodeState, Store, StoreState};
use proto::Message;

use super::{Cluster, StoreInfo};
use crate::operator::Step;
use crate::replica_view::store_key;
use crate::{PdConfig, PdError, Result};

/// Sets `store`'s state and the matching `node_state` (newer clients read the latter).
pub(super) fn set_state_fields(store: &mut Store, state: StoreState) {
    store.state = state as i32;
    store.node_state = match state {
        StoreState::Up => NodeState::Serving,
        StoreState::Offline => NodeState::Removing,
        StoreState::Tombstone => NodeState::Removed,
    } as i32;
}

fn state_of(s: &StoreInfo) -> StoreState {
    StoreState::try_from(s.store.state).unwrap_or(StoreState::Up)
}

impl Cluster {
    /// Starts decommissioning an Up store: it becomes Offline (PD's `RemoveStore`). Already
    /// Offline is a no-op. Refused for a Tombstone, and, unless `force`, when fewer Up stores
    /// than `max_replicas` would be left (its replicas would have nowhere to go).
    pub fn remove_store(&self, store_id: u64, force: bool) -> Result<()> {
        let _order = self.record_writes.lock();
        let inner = self.inner.lock();
        let info = inner
            .stores
            .get(&store_id)
            .ok_or(PdError::StoreNotFound(store_id))?;
        match state_of(info) {
            StoreState::Tombstone => Err(PdError::StoreTombstone(store_id)),
            StoreState::Offline => Ok(()),
            StoreState::Up => {
                let up_after = inner
                    .stores
                    .values()
                    .filter(|s| s.store.id != store_id && state_of(s) == StoreState::Up)
                    .count();
                if !force && up_after < self.cfg.max_replicas {
                    return Err(PdError::StoresNotEnough {
                        store_id,
                        up_after,
                        max_replicas: self.cfg.max_replicas,
                    });
                }
                drop(inner);
                tracing::info!(store_id, force, "store is Offline: decommissioning");
                self.set_store_state(store_id, StoreState::Offline)
            }
        }
    }

    /// Cancels a decommission: an Offline store becomes Up again (PD's `UpStore`). Already Up
    /// is a no-op; a Tombstone cannot come back.
    pub fn up_store(&self, store_id: u64) -> Result<()> {
        let _order = self.record_writes.lock();
        let inner = self.inner.lock();
        let info = inner
            .stores
            .get(&store_id)
            .ok_or(PdError::StoreNotFound(store_id))?;
        match state_of(info) {
            StoreState::Tombstone => Err(PdError::StoreTombstone(store_id)),
            StoreState::Up => Ok(()),
            StoreState::Offline => {
                drop(inner);
                tracing::info!(store_id, "store is Up again: decommission cancelled");
                self.set_store_state(store_id, StoreState::Up)
            }
        }
    }

    /// Makes Tombstone every Offline store that holds no peer in PD's region directory and is
    /// not the target of a running operator's AddLearner; returns their ids. Run periodically.
    ///
    /// The check and the write are not atomic against region reports (which do not wait for
    /// record writes): a report landing in between with a new peer on the store would find
    /// it Tombstone. Neither the schedulers nor PD's HTTP operators target an Offline store,
    /// and a report older than the directory is refused, so only a membership change made
    /// around PD could do that.
    pub fn update_store_states(&self) -> Result<Vec<u64>> {
        let _order = self.record_writes.lock();
        let inner = self.inner.lock();
        let offline: Vec<u64> = inner
            .stores
            .values()
            .filter(|s| state_of(s) == StoreState::Offline)
            .map(|s| s.store.id)
            .collect();
        if offline.is_empty() {
            return Ok(Vec::new());
        }
        let holds_peer = |id: u64| {
            let in_dir = inner.regions.tally(id).region_count > 0;
            let incoming = inner.operators.values().any(|op| {
                op.steps
                    .iter()
                    .any(|st| matches!(st, Step::AddLearner { store_id, .. } if *store_id == id))
            });
            in_dir || incoming
        };
        let empty: Vec<u64> = offline.into_iter().filter(|id| !holds_peer(*id)).collect();
        drop(inner);
        for &store_id in &empty {
            tracing::info!(store_id, "store holds no region: Tombstone");
            self.set_store_state(store_id, StoreState::Tombstone)?;
        }
        Ok(empty)
    }

    /// Whether `s` has been silent longer than `max_store_down_time_secs` at `now_ms`: its
    /// replicas are to be rebuilt on other stores. A Tombstone is never down long (it holds
    /// nothing to rebuild).
    pub fn store_down_long(cfg: &PdConfig, s: &StoreInfo, now_ms: u64) -> bool {
        state_of(s) != StoreState::Tombstone
            && now_ms.saturating_sub(s.last_heartbeat_ms) > cfg.max_store_down_time_secs * 1000
    }

    /// Persists `store_id`'s new state with `inner` released, then applies it. The caller
    /// holds `record_writes`: no one else changes the store's record meanwhile.
    fn set_store_state(&self, store_id: u64, state: StoreState) -> Result<()> {
        let mut store = self
            .inner
            .lock()
            .stores
            .get(&store_id)
            .ok_or(PdError::StoreNotFound(store_id))?
            .store
            .clone();
        set_state_fields(&mut store, state);
        self.meta
            .write(&[(store_key(store_id), store.encode_to_vec())])?;
        let mut inner = self.inner.lock();
        let info = inner
            .stores
            .get_mut(&store_id)
            .expect("stores are never forgotten");
        info.store = store;
        Ok(())
    }
}
