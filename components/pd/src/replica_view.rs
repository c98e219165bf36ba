//! What every member of a PD group can answer without leading: the persisted part of PD's state
//! (cluster id, bootstrap flag, stores, the region directory, the GC safe point), kept in memory
//! and brought up to date by each committed write the member applies.
//!
//! Why followers answer lookups: tikv-client 0.4 drops a request whose region lookup fails and
//! still acknowledges the transaction it belonged to, and it retries a failed PD call at once,
//! on the same connection, for up to a second after any reconnect. A lookup that fails because
//! the member it reaches does not lead (the leader just died, an election runs, the new leader
//! is still loading its state) is therefore a lost write. A follower's view is at most a few
//! milliseconds behind the leader's persisted state; a stale region only costs the client an
//! `EpochNotMatch` or `NotLeader` answer from a store and another lookup.
//!
//! Key types: [`Persisted`] (the state and the key layout it is stored under, also what a new
//! leader's [`crate::Cluster`] loads), [`ReplicaView`] (a `Persisted` behind a lock, fed by the
//! replication's apply), [`Lookup`] (what both the leader's `Cluster` and a view answer).

use std::collections::BTreeMap;

use parking_lot::RwLock;
use proto::metapb::{Store, StoreState};
use proto::pdpb;
use proto::Message;

use crate::cluster::StoreInfo;
use crate::meta_store::MetaStore;
use crate::region_dir::{RegionDirectory, RegionInfo};
use crate::tso::decode_u64;
use crate::{PdError, Result};

pub(crate) const CLUSTER_ID_KEY: &[u8] = b"meta/cluster_id";
pub(crate) const BOOTSTRAPPED_KEY: &[u8] = b"meta/bootstrapped";
pub(crate) const GC_SAFE_POINT_KEY: &[u8] = b"meta/gc_safe_point";
pub(crate) const STORE_PREFIX: &[u8] = b"store/";
pub(crate) const REGION_PREFIX: &[u8] = b"region/";

pub(crate) fn store_key(id: u64) -> Vec<u8> {
    [STORE_PREFIX, &id.to_be_bytes()].concat()
}

pub(crate) fn region_key(id: u64) -> Vec<u8> {
    [REGION_PREFIX, &id.to_be_bytes()].concat()
}

/// A region as persisted: its meta and its leader (heartbeat statistics are not persisted).
pub(crate) fn region_value(info: &RegionInfo) -> Vec<u8> {
    pdpb::Region {
        region: Some(info.region.clone()),
        leader: info.leader,
        ..Default::default()
    }
    .encode_to_vec()
}

fn region_id_of(key: &[u8]) -> Result<u64> {
    decode_u64(&key[REGION_PREFIX.len()..])
}

/// The persisted part of PD's state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Persisted {
    /// 0 until the first leader chose it.
    pub cluster_id: u64,
    pub bootstrapped: bool,
    pub gc_safe_point: u64,
    pub stores: BTreeMap<u64, Store>,
    pub regions: RegionDirectory,
}

impl Persisted {
    /// Reads the whole state from `meta`.
    pub(crate) fn load(meta: &dyn MetaStore) -> Result<Persisted> {
        Self::from_pairs(meta.scan_prefix(b"")?)
    }

    /// Builds the state from every persisted pair (a snapshot's content, or a scan).
    pub(crate) fn from_pairs(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Persisted> {
        let mut state = Persisted::default();
        for (k, v) in pairs {
            state.apply(&k, &v)?;
        }
        Ok(state)
    }

    /// Applies one persisted pair; an empty value is a delete. Unknown keys (the id allocator's
    /// and the TSO's bounds) are not part of the state.
    pub(crate) fn apply(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let deleted = value.is_empty();
        if key == CLUSTER_ID_KEY {
            self.cluster_id = if deleted { 0 } else { decode_u64(value)? };
        } else if key == BOOTSTRAPPED_KEY {
            self.bootstrapped = !deleted;
        } else if key == GC_SAFE_POINT_KEY {
            self.gc_safe_point = if deleted { 0 } else { decode_u64(value)? };
        } else if key.starts_with(STORE_PREFIX) {
            let id = decode_u64(&key[STORE_PREFIX.len()..])?;
            if deleted {
                self.stores.remove(&id);
            } else {
                self.stores.insert(id, Store::decode(value)?);
            }
        } else if key.starts_with(REGION_PREFIX) {
            let id = region_id_of(key)?;
            if deleted {
                self.regions.remove(id);
            } else {
                let r = pdpb::Region::decode(value)?;
                let info = RegionInfo::new(r.region.unwrap_or_default(), r.leader);
                if info.region.id != id {
                    return Err(PdError::Corrupted(format!(
                        "region {} stored under the key of region {id}",
                        info.region.id
                    )));
                }
                if let Err(e) = self.regions.upsert(info) {
                    // The leader persisted it, so its own directory accepted it; a refusal here
                    // means a region persisted before an older one was (not written any more).
                    tracing::warn!("skipping persisted region: {e}");
                }
            }
        }
        Ok(())
    }
}

/// What clients look up: answered by the leader's [`crate::Cluster`] and by a member's
/// [`ReplicaView`] alike.
pub(crate) trait Lookup: Send + Sync {
    /// The cluster id (0 before the first leader chose it).
    fn cluster_id(&self) -> u64;
    /// The region holding the encoded `key`, if any.
    fn get_region(&self, key: &[u8]) -> Result<Option<RegionInfo>>;
    /// The region before the one holding `key`, if any.
    fn get_prev_region(&self, key: &[u8]) -> Result<Option<RegionInfo>>;
    /// The region with this id, if any.
    fn get_region_by_id(&self, id: u64) -> Result<Option<RegionInfo>>;
    /// Regions from the one holding `start` up to `end`, at most `limit` (0: the configured max).
    fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<RegionInfo>>;
    /// The store with this id.
    fn get_store(&self, id: u64) -> Result<StoreInfo>;
    /// Every store, optionally without tombstones.
    fn all_stores(&self, exclude_tombstone: bool) -> Vec<Store>;
    /// The GC safe point.
    fn gc_safe_point(&self) -> u64;
}

/// A member's in-memory copy of the persisted state, updated as it applies committed writes.
pub(crate) struct ReplicaView {
    state: RwLock<Persisted>,
    scan_regions_max: usize,
}

impl ReplicaView {
    /// The view of what `meta` holds now.
    pub(crate) fn load(meta: &dyn MetaStore, scan_regions_max: usize) -> Result<ReplicaView> {
        Ok(ReplicaView {
            state: RwLock::new(Persisted::load(meta)?),
            scan_regions_max,
        })
    }

    /// Applies one committed write (pairs in the order they were written).
    pub(crate) fn apply(&self, pairs: &[(Vec<u8>, Vec<u8>)]) {
        let mut state = self.state.write();
        for (k, v) in pairs {
            if let Err(e) = state.apply(k, v) {
                tracing::warn!(key = %String::from_utf8_lossy(k), "PD view skips a pair: {e}");
            }
        }
    }

    /// Replaces the view with a snapshot's content.
    pub(crate) fn reset(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        let fresh = Persisted::from_pairs(pairs)?;
        *self.state.write() = fresh;
        Ok(())
    }

    /// A copy of the state (a new leader starts from it, stale coverage included).
    pub(crate) fn state(&self) -> Persisted {
        self.state.read().clone()
    }

    fn bootstrapped<T>(&self, f: impl FnOnce(&Persisted) -> T) -> Result<T> {
        let state = self.state.read();
        if !state.bootstrapped {
            return Err(PdError::NotBootstrapped);
        }
        Ok(f(&state))
    }
}

impl Lookup for ReplicaView {
    fn cluster_id(&self) -> u64 {
        self.state.read().cluster_id
    }

    fn get_region(&self, key: &[u8]) -> Result<Option<RegionInfo>> {
        self.bootstrapped(|s| s.regions.get_by_key(key).cloned())
    }

    fn get_prev_region(&self, key: &[u8]) -> Result<Option<RegionInfo>> {
        self.bootstrapped(|s| s.regions.get_prev(key).cloned())
    }

    fn get_region_by_id(&self, id: u64) -> Result<Option<RegionInfo>> {
        self.bootstrapped(|s| s.regions.get(id).cloned())
    }

    fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<RegionInfo>> {
        let limit = scan_limit(limit, self.scan_regions_max);
        self.bootstrapped(|s| {
            s.regions
                .scan(start, end, limit)
                .into_iter()
                .cloned()
                .collect()
        })
    }

    fn get_store(&self, id: u64) -> Result<StoreInfo> {
        let store = self.state.read().stores.get(&id).cloned();
        let store = store.ok_or(PdError::StoreNotFound(id))?;
        Ok(StoreInfo {
            store,
            ..Default::default()
        })
    }

    fn all_stores(&self, exclude_tombstone: bool) -> Vec<Store> {
        let state = self.state.read();
        state
            .stores
            .values()
            .filter(|s| !exclude_tombstone || s.state != StoreState::Tombstone as i32)
            .cloned()
            .collect()
    }

    fn gc_safe_point(&self) -> u64 {
        self.state.read().gc_safe_point
    }
}

/// A scan's limit: `asked`, or the configured max when 0 or above it.
pub(crate) fn scan_limit(asked: usize, max: usize) -> usize {
    if asked == 0 {
        max
    } else {
        asked.min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta_store::MemMetaStore;
    use proto::metapb::{Peer, Region, RegionEpoch};

    fn region(id: u64, start: &[u8], end: &[u8], version: u64) -> RegionInfo {
        RegionInfo::new(
            Region {
                id,
                start_key: start.to_vec(),
                end_key: end.to_vec(),
                region_epoch: Some(RegionEpoch {
                    conf_ver: 1,
                    version,
                }),
                peers: vec![Peer {
                    id: id * 10,
                    store_id: 1,
                    ..Default::default()
                }],
            },
            Some(Peer {
                id: id * 10,
                store_id: 1,
                ..Default::default()
            }),
        )
    }

    #[test]
    fn a_view_follows_the_writes_it_applies() {
        let meta = MemMetaStore::default();
        meta.write(&[(CLUSTER_ID_KEY.to_vec(), 7u64.to_be_bytes().to_vec())])
            .unwrap();
        let view = ReplicaView::load(&meta, 100).unwrap();
        assert_eq!(view.cluster_id(), 7);
        assert!(matches!(
            view.get_region(b"k"),
            Err(PdError::NotBootstrapped)
        ));
        let store = Store {
            id: 1,
            address: "127.0.0.1:1".into(),
            ..Default::default()
        };
        view.apply(&[
            (store_key(1), store.encode_to_vec()),
            (region_key(2), region_value(&region(2, b"", b"", 1))),
            (BOOTSTRAPPED_KEY.to_vec(), vec![1]),
        ]);
        assert_eq!(view.get_region(b"k").unwrap().unwrap().region.id, 2);
        assert_eq!(view.get_store(1).unwrap().store, store);
        assert!(matches!(view.get_store(9), Err(PdError::StoreNotFound(9))));
        // A split: the shrunk region and the new one, each persisted by its own write.
        view.apply(&[(region_key(2), region_value(&region(2, b"", b"m", 2)))]);
        view.apply(&[(region_key(3), region_value(&region(3, b"m", b"", 2)))]);
        assert_eq!(view.get_region(b"a").unwrap().unwrap().region.id, 2);
        assert_eq!(view.get_region(b"x").unwrap().unwrap().region.id, 3);
        let ids: Vec<u64> = view
            .scan_regions(b"", b"", 0)
            .unwrap()
            .iter()
            .map(|r| r.region.id)
            .collect();
        assert_eq!(ids, vec![2, 3]);
        view.apply(&[(GC_SAFE_POINT_KEY.to_vec(), 42u64.to_be_bytes().to_vec())]);
        assert_eq!(view.gc_safe_point(), 42);
        // A bad pair is skipped; the rest of the write still applies.
        view.apply(&[
            (region_key(4), b"not a region".to_vec()),
            (GC_SAFE_POINT_KEY.to_vec(), 43u64.to_be_bytes().to_vec()),
        ]);
        assert_eq!(view.gc_safe_point(), 43);
    }

    #[test]
    fn a_snapshot_replaces_the_view_and_load_reads_what_was_written() {
        let meta = MemMetaStore::default();
        let pairs = vec![
            (CLUSTER_ID_KEY.to_vec(), 9u64.to_be_bytes().to_vec()),
            (BOOTSTRAPPED_KEY.to_vec(), vec![1]),
            (region_key(5), region_value(&region(5, b"", b"", 3))),
        ];
        meta.write(&pairs).unwrap();
        let loaded = Persisted::load(&meta).unwrap();
        assert_eq!(loaded.cluster_id, 9);
        assert!(loaded.bootstrapped);
        assert_eq!(loaded.regions.len(), 1);
        let view = ReplicaView::load(&MemMetaStore::default(), 10).unwrap();
        assert_eq!(view.cluster_id(), 0);
        view.reset(pairs).unwrap();
        assert_eq!(view.cluster_id(), 9);
        assert_eq!(view.get_region_by_id(5).unwrap().unwrap().region.id, 5);
        assert!(view
            .reset(vec![(region_key(6), b"garbage".to_vec())])
            .is_err());
    }

    #[test]
    fn scan_limits_take_the_configured_max() {
        assert_eq!(scan_limit(0, 10), 10);
        assert_eq!(scan_limit(3, 10), 3);
        assert_eq!(scan_limit(30, 10), 10);
    }
}
