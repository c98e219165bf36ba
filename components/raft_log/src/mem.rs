//! [`MemRaftLog`]: the in-memory twin of [`crate::RaftEngineLog`], for tests.

use std::collections::{BTreeMap, HashMap};

use parking_lot::RwLock;
use protobuf::Message;
use raft::eraftpb::Entry;

use crate::batch::{check_fetch_range, LogOp, Span};
use crate::state::{meta_key, RAFT_STATE_KEY};
use crate::{LogBatch, RaftLogStore, RaftState, Result};

#[derive(Default)]
struct RegionLog {
    entries: BTreeMap<u64, Entry>,
    kvs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl RegionLog {
    fn span(&self) -> Span {
        let (first, _) = self.entries.first_key_value()?;
        let (last, _) = self.entries.last_key_value()?;
        Some((*first, *last))
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.kvs.is_empty()
    }
}

/// A raft log kept in ordered maps behind a lock; nothing survives a drop.
#[derive(Default)]
pub struct MemRaftLog {
    regions: RwLock<HashMap<u64, RegionLog>>,
}

impl MemRaftLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn get_kv(&self, region_id: u64, key: &[u8]) -> Option<Vec<u8>> {
        let regions = self.regions.read();
        regions.get(&region_id)?.kvs.get(key).cloned()
    }
}

fn apply(regions: &mut HashMap<u64, RegionLog>, op: LogOp) {
    match op {
        LogOp::Append { region_id, entries } => {
            let log = &mut regions.entry(region_id).or_default().entries;
            // Raft overwrite rule: the new entries replace everything from their first index.
            let _replaced = log.split_off(&entries[0].index);
            log.extend(entries.into_iter().map(|e| (e.index, e)));
        }
        LogOp::Put {
            region_id,
            key,
            value,
        } => {
            regions.entry(region_id).or_default().kvs.insert(key, value);
        }
        LogOp::Delete { region_id, key } => {
            if let Some(log) = regions.get_mut(&region_id) {
                log.kvs.remove(&key);
            }
        }
        LogOp::Compact { region_id, index } => {
            if let Some(log) = regions.get_mut(&region_id) {
                log.entries = log.entries.split_off(&index);
            }
        }
        LogOp::Clean { region_id } => {
            regions.remove(&region_id);
        }
    }
}

impl RaftLogStore for MemRaftLog {
    fn write(&self, batch: LogBatch, _sync: bool) -> Result<usize> {
        let size_bytes = batch.size_bytes();
        let mut regions = self.regions.write();
        batch.check_appends(|region_id| regions.get(&region_id).and_then(RegionLog::span))?;
        for op in batch.into_ops() {
            apply(&mut regions, op);
        }
        Ok(size_bytes)
    }

    fn raft_state(&self, region_id: u64) -> Result<Option<RaftState>> {
        self.get_kv(region_id, RAFT_STATE_KEY)
            .map(|bytes| RaftState::decode(&bytes))
            .transpose()
    }

    fn get_meta(&self, region_id: u64, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_kv(region_id, &meta_key(key)))
    }

    fn fetch_entries(
        &self,
        region_id: u64,
        low: u64,
        high: u64,
        max_size_bytes: Option<u64>,
        out: &mut Vec<Entry>,
    ) -> Result<usize> {
        if low >= high {
            return Ok(0);
        }
        let regions = self.regions.read();
        let log = regions.get(&region_id);
        check_fetch_range(region_id, low, high, log.and_then(RegionLog::span))?;
        let mut total_bytes = 0u64;
        let mut fetched = 0;
        for entry in log.unwrap().entries.range(low..high).map(|(_, e)| e) {
            total_bytes += u64::from(entry.compute_size());
            if fetched > 0 && max_size_bytes.is_some_and(|max| total_bytes > max) {
                break;
            }
            out.push(entry.clone());
            fetched += 1;
        }
        Ok(fetched)
    }

    fn entry(&self, region_id: u64, index: u64) -> Result<Option<Entry>> {
        let regions = self.regions.read();
        Ok(regions
            .get(&region_id)
            .and_then(|log| log.entries.get(&index).cloned()))
    }

    fn first_index(&self, region_id: u64) -> Option<u64> {
        Some(self.regions.read().get(&region_id)?.span()?.0)
    }

    fn last_index(&self, region_id: u64) -> Option<u64> {
        Some(self.regions.read().get(&region_id)?.span()?.1)
    }

    fn compact_to(&self, region_id: u64, index: u64) -> Result<u64> {
        let mut regions = self.regions.write();
        let Some(log) = regions.get_mut(&region_id) else {
            return Ok(0);
        };
        let before = log.entries.len();
        log.entries = log.entries.split_off(&index);
        Ok((before - log.entries.len()) as u64)
    }

    fn purge_expired_files(&self) -> Result<Vec<u64>> {
        Ok(vec![])
    }

    fn region_ids(&self) -> Result<Vec<u64>> {
        let regions = self.regions.read();
        let mut ids: Vec<u64> = regions
            .iter()
            .filter(|(_, log)| !log.is_empty())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }
}
