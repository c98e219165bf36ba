//! The region directory: every region PD knows, by encoded start key and by id. A report
//! replaces what PD knows only if its epoch is not older, and evicts the stale regions it
//! overlaps. Pure data structure, no I/O.

use std::collections::{BTreeMap, HashMap};

use proto::metapb::{Peer, Region, RegionEpoch};
use proto::pdpb::PeerStats;

use crate::{PdError, Result};

/// What PD knows of one region.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionInfo {
    /// The region's meta (range, epoch, peers).
    pub region: Region,
    /// The leader as last reported; None until a heartbeat (or bootstrap) says.
    pub leader: Option<Peer>,
    /// Peers whose log is behind.
    pub pending_peers: Vec<Peer>,
    /// Peers that did not answer the leader for a while.
    pub down_peers: Vec<PeerStats>,
    /// Approximate size in bytes.
    pub approximate_size: u64,
    /// Approximate number of keys.
    pub approximate_keys: u64,
    /// The leader's raft term.
    pub term: u64,
}

impl RegionInfo {
    /// A region with no heartbeat data.
    pub fn new(region: Region, leader: Option<Peer>) -> Self {
        RegionInfo {
            region,
            leader,
            ..Default::default()
        }
    }

    /// The region's epoch (default when absent).
    pub fn epoch(&self) -> RegionEpoch {
        self.region.region_epoch.unwrap_or_default()
    }

    /// Whether `key` lies in `[start_key, end_key)`; an empty end key is +infinity.
    pub fn contains(&self, key: &[u8]) -> bool {
        contains(&self.region, key)
    }
}

/// Whether `key` lies in the region's range.
pub fn contains(region: &Region, key: &[u8]) -> bool {
    key >= region.start_key.as_slice()
        && (region.end_key.is_empty() || key < region.end_key.as_slice())
}

/// Whether `new` is older than `old`: compares version, then conf_ver.
pub fn epoch_is_stale(new: &RegionEpoch, old: &RegionEpoch) -> bool {
    (new.version, new.conf_ver) < (old.version, old.conf_ver)
}

/// Regions by encoded start key and by id. Invariant: the ranges never overlap.
#[derive(Default, Debug)]
pub struct RegionDirectory {
    by_start: BTreeMap<Vec<u8>, u64>,
    by_id: HashMap<u64, RegionInfo>,
}

impl RegionDirectory {
    /// Number of regions.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there is no region.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The region with this id.
    pub fn get(&self, id: u64) -> Option<&RegionInfo> {
        self.by_id.get(&id)
    }

    /// Mutable access to the region with this id (for heartbeat stats; not its range).
    pub fn get_mut(&mut self, id: u64) -> Option<&mut RegionInfo> {
        self.by_id.get_mut(&id)
    }

    /// The region holding the encoded `key`.
    pub fn get_by_key(&self, key: &[u8]) -> Option<&RegionInfo> {
        let (_, id) = self.by_start.range(..=key.to_vec()).next_back()?;
        let info = &self.by_id[id];
        info.contains(key).then_some(info)
    }

    /// The region just before the one holding `key` (the one ending where it starts).
    pub fn get_prev(&self, key: &[u8]) -> Option<&RegionInfo> {
        let cur = self.get_by_key(key)?;
        if cur.region.start_key.is_empty() {
            return None;
        }
        let (_, id) = self
            .by_start
            .range(..cur.region.start_key.clone())
            .next_back()?;
        let prev = &self.by_id[id];
        (prev.region.end_key == cur.region.start_key).then_some(prev)
    }

    /// Up to `limit` regions from the one holding `start` (or the first after it) whose start
    /// is below `end` (empty: +infinity), in key order.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<&RegionInfo> {
        let first = self.get_by_key(start).map(|r| r.region.start_key.clone());
        let from = first.unwrap_or_else(|| start.to_vec());
        self.by_start
            .range(from..)
            .map(|(_, id)| &self.by_id[id])
            .take_while(|r| end.is_empty() || r.region.start_key.as_slice() < end)
            .take(limit)
            .collect()
    }

    /// Every region in key order.
    pub fn iter(&self) -> impl Iterator<Item = &RegionInfo> {
        self.by_start.values().map(|id| &self.by_id[id])
    }

    /// Ids of the regions (other than `region`'s own id) whose range intersects `region`'s.
    fn overlaps(&self, region: &Region) -> Vec<u64> {
        let mut ids = Vec::new();
        if let Some(r) = self.get_by_key(&region.start_key) {
            ids.push(r.region.id);
        }
        let tail = self
            .by_start
            .range(region.start_key.clone()..)
            .take_while(|(k, _)| {
                region.end_key.is_empty() || k.as_slice() < region.end_key.as_slice()
            })
            .map(|(_, id)| *id);
        for id in tail {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids.retain(|id| *id != region.id);
        ids
    }

    /// Checks `info` against the epoch rules without changing anything; returns the ids of
    /// the regions it would evict.
    pub fn check(&self, info: &RegionInfo) -> Result<Vec<u64>> {
        let epoch = info.epoch();
        let stale = |reason: String| PdError::StaleRegion {
            region_id: info.region.id,
            reason,
        };
        if let Some(old) = self.by_id.get(&info.region.id) {
            if epoch_is_stale(&epoch, &old.epoch()) {
                return Err(stale(format!(
                    "epoch {:?} < known {:?}",
                    epoch,
                    old.epoch()
                )));
            }
        }
        let overlaps = self.overlaps(&info.region);
        for id in &overlaps {
            let other = self.by_id[id].epoch();
            if other.version > epoch.version {
                return Err(stale(format!(
                    "overlaps region {id} with newer version {}",
                    other.version
                )));
            }
        }
        Ok(overlaps)
    }

    /// Inserts or replaces `info` if the epoch rules allow; returns the evicted region ids.
    pub fn upsert(&mut self, info: RegionInfo) -> Result<Vec<u64>> {
        let evicted = self.check(&info)?;
        for id in evicted.iter().chain(std::iter::once(&info.region.id)) {
            if let Some(old) = self.by_id.remove(id) {
                self.by_start.remove(&old.region.start_key);
            }
        }
        self.by_start
            .insert(info.region.start_key.clone(), info.region.id);
        self.by_id.insert(info.region.id, info);
        Ok(evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, start: &[u8], end: &[u8], version: u64, conf_ver: u64) -> RegionInfo {
        RegionInfo::new(
            Region {
                id,
                start_key: start.to_vec(),
                end_key: end.to_vec(),
                region_epoch: Some(RegionEpoch { conf_ver, version }),
                peers: vec![],
            },
            None,
        )
    }

    #[test]
    fn lookup_by_key_and_prev() {
        let mut d = RegionDirectory::default();
        d.upsert(region(1, b"", b"m", 1, 1)).unwrap();
        d.upsert(region(2, b"m", b"", 1, 1)).unwrap();
        assert_eq!(d.get_by_key(b"").unwrap().region.id, 1);
        assert_eq!(d.get_by_key(b"l").unwrap().region.id, 1);
        assert_eq!(d.get_by_key(b"m").unwrap().region.id, 2);
        assert_eq!(d.get_by_key(b"zzz").unwrap().region.id, 2);
        assert_eq!(d.get_prev(b"q").unwrap().region.id, 1);
        assert!(d.get_prev(b"a").is_none());
        let ids: Vec<u64> = d.scan(b"c", b"", 10).iter().map(|r| r.region.id).collect();
        assert_eq!(ids, vec![1, 2]);
        let ids: Vec<u64> = d.scan(b"c", b"m", 10).iter().map(|r| r.region.id).collect();
        assert_eq!(ids, vec![1]);
    }

    #[test]
    fn hole_in_directory_is_not_found() {
        let mut d = RegionDirectory::default();
        d.upsert(region(1, b"", b"c", 1, 1)).unwrap();
        d.upsert(region(2, b"m", b"", 1, 1)).unwrap();
        assert!(d.get_by_key(b"d").is_none());
        assert!(d.get_prev(b"n").is_none());
    }

    #[test]
    fn split_report_evicts_parent() {
        let mut d = RegionDirectory::default();
        d.upsert(region(1, b"", b"", 1, 1)).unwrap();
        // The new right region arrives first: it overlaps region 1 (older version) and evicts it.
        assert_eq!(d.upsert(region(2, b"m", b"", 2, 1)).unwrap(), vec![1]);
        d.upsert(region(1, b"", b"m", 2, 1)).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.get_by_key(b"a").unwrap().region.id, 1);
        // A late heartbeat of the unsplit parent is stale: version 1 < 2.
        assert!(matches!(
            d.upsert(region(1, b"", b"", 1, 5)),
            Err(PdError::StaleRegion { .. })
        ));
        assert_eq!(d.get_by_key(b"z").unwrap().region.id, 2);
    }

    #[test]
    fn epoch_order_is_version_then_conf_ver() {
        let mut d = RegionDirectory::default();
        d.upsert(region(1, b"", b"", 2, 2)).unwrap();
        assert!(d.upsert(region(1, b"", b"", 2, 1)).is_err());
        assert!(d.upsert(region(1, b"", b"", 1, 9)).is_err());
        d.upsert(region(1, b"", b"", 2, 2)).unwrap();
        d.upsert(region(1, b"", b"", 2, 3)).unwrap();
        assert_eq!(d.get(1).unwrap().epoch().conf_ver, 3);
        assert!(epoch_is_stale(
            &RegionEpoch {
                conf_ver: 9,
                version: 1
            },
            &RegionEpoch {
                conf_ver: 1,
                version: 2
            }
        ));
    }

    #[test]
    fn merged_region_evicts_both() {
        let mut d = RegionDirectory::default();
        d.upsert(region(1, b"", b"m", 2, 1)).unwrap();
        d.upsert(region(2, b"m", b"", 2, 1)).unwrap();
        let mut evicted = d.upsert(region(1, b"", b"", 3, 1)).unwrap();
        evicted.sort();
        assert_eq!(evicted, vec![2]);
        assert_eq!(d.len(), 1);
    }
}
