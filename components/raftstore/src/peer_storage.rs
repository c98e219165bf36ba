//! One region's raft storage: raft-rs's `Storage` over the store's shared raft log, plus the
//! region's metadata and apply progress. Also builds snapshots from the KV engine.

use std::sync::Arc;

use crossbeam_channel::{Receiver, TryRecvError};
use engine::{KvEngine, WriteBatch, CF_RAFT, DATA_CFS};
use parking_lot::Mutex;
use prost::Message as _;
use proto::flotillapb::{
    CfData, MergeState, PeerState, RaftApplyState, RegionLocalState, SnapshotData,
};
use proto::metapb;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, StorageError};
use raft_log::{LogBatch, RaftLogStore, RaftState};

use crate::snapshot_worker::{SnapshotJob, SnapshotWorker};
use crate::util::conf_state_from_region;
use crate::StoreError;

/// Log index at which every region's raft log starts: a new region (bootstrap or split) begins
/// with this index applied, so that a peer created empty (index 0) is always behind a real one.
pub const RAFT_INIT_LOG_INDEX: u64 = 5;
/// Term of [`RAFT_INIT_LOG_INDEX`].
pub const RAFT_INIT_LOG_TERM: u64 = 5;

/// Reads a region's apply state from the engine.
pub fn load_apply_state(
    kv: &dyn KvEngine,
    region_id: u64,
) -> Result<Option<RaftApplyState>, StoreError> {
    match kv.get_cf(CF_RAFT, &codec::keys::apply_state_key(region_id))? {
        Some(v) => Ok(Some(
            RaftApplyState::decode(v.as_slice()).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        )),
        None => Ok(None),
    }
}

/// Every region state this store has in its engine (tombstones included), in region-id order.
/// Undecodable metadata is an error, never skipped.
pub fn load_region_states(kv: &dyn KvEngine) -> Result<Vec<RegionLocalState>, StoreError> {
    let mut states = Vec::new();
    let mut corrupt = None;
    kv.snapshot().scan_cf(
        CF_RAFT,
        codec::keys::REGION_META_MIN_KEY,
        Some(codec::keys::REGION_META_MAX_KEY),
        false,
        &mut |k, v| {
            if let Some((_, codec::keys::REGION_STATE_SUFFIX)) =
                codec::keys::region_id_from_local_key(k)
            {
                match RegionLocalState::decode(v) {
                    Ok(state) => states.push(state),
                    Err(e) => corrupt = Some(e.to_string()),
                }
            }
            Ok(corrupt.is_none())
        },
    )?;
    match corrupt {
        Some(e) => Err(StoreError::Corrupt(format!("unreadable region state: {e}"))),
        None => Ok(states),
    }
}

/// The apply state of a region that was just created (bootstrap or split).
pub fn init_apply_state() -> RaftApplyState {
    RaftApplyState {
        applied_index: RAFT_INIT_LOG_INDEX,
        applied_term: RAFT_INIT_LOG_TERM,
        truncated_index: RAFT_INIT_LOG_INDEX,
        truncated_term: RAFT_INIT_LOG_TERM,
    }
}

/// The raft state of a region that was just created (bootstrap or split).
pub fn init_raft_state() -> RaftState {
    let hs = HardState {
        term: RAFT_INIT_LOG_TERM,
        commit: RAFT_INIT_LOG_INDEX,
        ..Default::default()
    };
    RaftState {
        hard_state: hs,
        last_index: RAFT_INIT_LOG_INDEX,
    }
}

/// Adds the metadata of a new initialized region to `wb` (region state and apply state).
pub fn write_initial_region(wb: &mut WriteBatch, region: &metapb::Region) {
    let state = RegionLocalState {
        state: PeerState::Normal as i32,
        region: Some(region.clone()),
        merge_state: None,
    };
    wb.put_cf(
        CF_RAFT,
        &codec::keys::region_state_key(region.id),
        &state.encode_to_vec(),
    );
    wb.put_cf(
        CF_RAFT,
        &codec::keys::apply_state_key(region.id),
        &init_apply_state().encode_to_vec(),
    );
}

/// Writes the first region of a new cluster on this store, durably. Fails if the store
/// already has regions.
pub fn bootstrap_first_region(
    kv: &dyn KvEngine,
    raft_log: &dyn RaftLogStore,
    region: &metapb::Region,
) -> Result<(), StoreError> {
    let existing = !load_region_states(kv)?.is_empty();
    if existing {
        return Err(StoreError::AlreadyBootstrapped);
    }
    let mut lb = LogBatch::default();
    lb.put_raft_state(region.id, &init_raft_state());
    raft_log.write(lb, true)?;
    let mut wb = WriteBatch::default();
    write_initial_region(&mut wb, region);
    kv.write(&wb, true)?;
    Ok(())
}

/// Removes every trace of a region's metadata from this store (used when a bootstrap lost the
/// race to another store).
pub fn clear_region_meta(
    kv: &dyn KvEngine,
    raft_log: &dyn RaftLogStore,
    region_id: u64,
) -> Result<(), StoreError> {
    let mut wb = WriteBatch::default();
    wb.delete_cf(CF_RAFT, &codec::keys::region_state_key(region_id));
    wb.delete_cf(CF_RAFT, &codec::keys::apply_state_key(region_id));
    kv.write(&wb, true)?;
    let mut lb = LogBatch::default();
    lb.clean_region(region_id);
    raft_log.write(lb, true)?;
    Ok(())
}

/// Makes the log of `region_id` start right after its applied index, durably: the truncation
/// point moves up to the applied index (in the engine first), then the stale entries still in
/// the log are dropped, so that the next append (at applied + 1) is contiguous. Every step
/// can be repeated after a crash.
fn restart_log_after_applied(
    kv: &dyn KvEngine,
    raft_log: &dyn RaftLogStore,
    region_id: u64,
    raft_state: &mut RaftState,
    apply_state: &mut RaftApplyState,
) -> Result<(), StoreError> {
    tracing::warn!(
        region_id,
        last_index = raft_state.last_index,
        applied_index = apply_state.applied_index,
        "raft log ends before the applied index; restarting it after the applied index"
    );
    if apply_state.truncated_index < apply_state.applied_index {
        apply_state.truncated_index = apply_state.applied_index;
        apply_state.truncated_term = apply_state.applied_term;
        let mut wb = WriteBatch::default();
        wb.put_cf(
            CF_RAFT,
            &codec::keys::apply_state_key(region_id),
            &apply_state.encode_to_vec(),
        );
        kv.write(&wb, true)?;
    }
    raft_state.last_index = apply_state.applied_index;
    raft_state.hard_state.commit = apply_state.applied_index;
    raft_state.hard_state.term = raft_state.hard_state.term.max(apply_state.applied_term);
    let mut lb = LogBatch::default();
    lb.clean_region(region_id);
    lb.put_raft_state(region_id, raft_state);
    raft_log.write(lb, true)?;
    Ok(())
}

/// raft-rs storage of one region.
pub struct PeerStorage {
    /// The region as this peer knows it (empty range and no peers while uninitialized).
    pub region: metapb::Region,
    raft_log: Arc<dyn RaftLogStore>,
    kv: Arc<dyn KvEngine>,
    /// Hard state and last index, as persisted (or about to be, in this round's batch).
    pub raft_state: RaftState,
    /// Truncation point and apply progress, mirrored from the apply thread.
    pub apply_state: RaftApplyState,
    /// Set while the region is the source of a merge (PrepareMerge applied, neither
    /// CommitMerge nor RollbackMerge yet), mirrored from the apply thread.
    pub merge_state: Option<MergeState>,
    last_term: u64,
    snapshot_max_bytes: u64,
    /// Where this peer's snapshots are built (`None`: on the caller's thread, as in tests).
    pub(crate) snapshot_worker: Option<SnapshotWorker>,
    /// The snapshot the worker is building (or has built) for this peer, if any.
    building: Mutex<Option<Receiver<raft::Result<Snapshot>>>>,
    /// Names the store-scoped failpoints.
    store_id: u64,
}

impl PeerStorage {
    /// Loads a region's storage at start-up, or creates it for a new peer. `region` without
    /// peers means an uninitialized peer, waiting for a snapshot.
    pub fn new(
        store_id: u64,
        region: metapb::Region,
        kv: Arc<dyn KvEngine>,
        raft_log: Arc<dyn RaftLogStore>,
        snapshot_max_bytes: u64,
    ) -> Result<Self, StoreError> {
        let initialized = !region.peers.is_empty();
        // An uninitialized peer has applied nothing. An apply state in the engine for its
        // region belongs to a peer this store destroyed (the apply thread deletes it after the
        // poller has already made the new peer): taking it would start the new peer's log at
        // the old peer's applied index.
        let mut apply_state = match load_apply_state(kv.as_ref(), region.id)? {
            Some(s) if initialized => s,
            None if initialized => init_apply_state(),
            _ => RaftApplyState::default(),
        };
        let mut raft_state = match raft_log.raft_state(region.id)? {
            Some(s) => s,
            None if initialized => init_raft_state(),
            None => RaftState {
                hard_state: HardState::default(),
                last_index: 0,
            },
        };
        // The log ends before the applied index: a snapshot reached the engine but the log did
        // not record it before a crash, or the log lost a damaged tail (cut at start-up) whose
        // entries were already applied. Either way the log restarts right after the applied
        // index, as after a snapshot (see `restart_log_after_applied`).
        if raft_state.last_index < apply_state.applied_index {
            restart_log_after_applied(
                kv.as_ref(),
                raft_log.as_ref(),
                region.id,
                &mut raft_state,
                &mut apply_state,
            )?;
        }
        if raft_state.hard_state.commit < apply_state.applied_index {
            raft_state.hard_state.commit = apply_state.applied_index;
        }
        let mut ps = PeerStorage {
            region,
            raft_log,
            kv,
            raft_state,
            apply_state,
            merge_state: None,
            last_term: 0,
            snapshot_max_bytes,
            snapshot_worker: None,
            building: Mutex::new(None),
            store_id,
        };
        ps.last_term = ps.term_of(ps.raft_state.last_index).map_err(|e| {
            StoreError::Corrupt(format!(
                "region {}: no term for last index {}: {e}",
                ps.region.id, ps.raft_state.last_index
            ))
        })?;
        Ok(ps)
    }

    /// Whether the peer has data (a range and members).
    pub fn is_initialized(&self) -> bool {
        !self.region.peers.is_empty()
    }

    /// The first index still in the log.
    pub fn truncated_index(&self) -> u64 {
        self.apply_state.truncated_index
    }

    fn term_of(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.apply_state.truncated_index {
            return Ok(self.apply_state.truncated_term);
        }
        if idx < self.apply_state.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.raft_state.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if idx == self.raft_state.last_index && self.last_term != 0 {
            return Ok(self.last_term);
        }
        match self.raft_log.entry(self.region.id, idx) {
            Ok(Some(e)) => Ok(e.term),
            Ok(None) => Err(raft::Error::Store(StorageError::Unavailable)),
            Err(e) => Err(raft::Error::Store(StorageError::Other(Box::new(e)))),
        }
    }

    /// Records new entries (already handed to raft-rs's ready) in this round's log batch.
    pub fn append(&mut self, entries: Vec<Entry>, batch: &mut LogBatch) {
        let Some(last) = entries.last() else { return };
        self.raft_state.last_index = last.index;
        self.last_term = last.term;
        batch.add_entries(self.region.id, entries);
    }

    /// Records the hard state in this round's log batch.
    pub fn set_hard_state(&mut self, hs: &HardState) {
        self.raft_state.hard_state = hs.clone();
    }

    /// Records the commit index in the hard state.
    pub fn set_commit(&mut self, commit: u64) {
        self.raft_state.hard_state.commit = commit;
    }

    /// Adds the raft state to `batch`.
    pub fn persist_state(&self, batch: &mut LogBatch) {
        batch.put_raft_state(self.region.id, &self.raft_state);
    }

    /// Takes in a snapshot whose data the apply thread has already written: the log now starts
    /// right after it.
    pub fn on_snapshot_applied(
        &mut self,
        snap: &Snapshot,
        region: metapb::Region,
        batch: &mut LogBatch,
    ) {
        let meta = snap.get_metadata();
        self.region = region;
        self.raft_state.last_index = meta.index;
        self.last_term = meta.term;
        if self.raft_state.hard_state.commit < meta.index {
            self.raft_state.hard_state.commit = meta.index;
        }
        if self.raft_state.hard_state.term < meta.term {
            self.raft_state.hard_state.term = meta.term;
        }
        self.apply_state = RaftApplyState {
            applied_index: meta.index,
            applied_term: meta.term,
            truncated_index: meta.index,
            truncated_term: meta.term,
        };
        batch.clean_region(self.region.id);
        batch.put_raft_state(self.region.id, &self.raft_state);
    }
}

impl raft::Storage for PeerStorage {
    fn initial_state(&self) -> raft::Result<raft::RaftState> {
        let conf_state: ConfState = if self.is_initialized() {
            conf_state_from_region(&self.region)
        } else {
            ConfState::default()
        };
        Ok(raft::RaftState {
            hard_state: self.raft_state.hard_state.clone(),
            conf_state,
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.apply_state.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.raft_state.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        self.raft_log
            .fetch_entries(self.region.id, low, high, max_size.into(), &mut out)
            .map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))?;
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.term_of(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.apply_state.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.raft_state.last_index)
    }

    /// With a worker: the snapshot it built, if it is recent enough, else "not available now"
    /// after queueing a build (see `snapshot_worker`).
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let Some(worker) = &self.snapshot_worker else {
            return build_snapshot(
                self.kv.as_ref(),
                self.store_id,
                self.region.id,
                request_index,
                self.snapshot_max_bytes,
            );
        };
        let unavailable = || raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable);
        let mut building = self.building.lock();
        if let Some(rx) = building.as_ref() {
            match rx.try_recv() {
                Err(TryRecvError::Empty) => return Err(unavailable()),
                // A snapshot from before the log's start would need another one at once.
                Ok(Ok(s))
                    if s.get_metadata().index >= request_index
                        && s.get_metadata().index >= self.apply_state.truncated_index =>
                {
                    *building = None;
                    return Ok(s);
                }
                // Failed, too old, or the worker stopped: build again.
                _ => *building = None,
            }
        }
        *building = Some(worker.build(SnapshotJob {
            kv: self.kv.clone(),
            store_id: self.store_id,
            region_id: self.region.id,
            to,
            request_index,
            max_bytes: self.snapshot_max_bytes,
        }));
        Err(unavailable())
    }
}

/// Builds region `region_id`'s snapshot from a consistent view of the engine: its region and
/// apply states and every key of its range in the data CFs, at the applied index. Not
/// available now (raft-rs asks again later) when the region applied less than `request_index`,
/// is merging, or holds more than `max_bytes`.
#[allow(unused_variables)] // the store id only serves the failpoint
pub(crate) fn build_snapshot(
    kv: &dyn KvEngine,
    store_id: u64,
    region_id: u64,
    request_index: u64,
    max_bytes: u64,
) -> raft::Result<Snapshot> {
    let unavailable = || raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable);
    fail_point_at!(store_id, "snapshot_generate", |_| Err(unavailable()));
    let snap = kv.snapshot();
    let get = |key: Vec<u8>| snap.get_cf(CF_RAFT, &key).map_err(|_| unavailable());
    let region_state = get(codec::keys::region_state_key(region_id))?
        .and_then(|v| RegionLocalState::decode(v.as_slice()).ok())
        .ok_or_else(unavailable)?;
    let apply_state = get(codec::keys::apply_state_key(region_id))?
        .and_then(|v| RaftApplyState::decode(v.as_slice()).ok())
        .ok_or_else(unavailable)?;
    if apply_state.applied_index < request_index {
        return Err(unavailable());
    }
    // A merging region sends no snapshot: a follower that took one would not know the
    // region is merging (and its data is about to belong to the target). A follower behind
    // catches up from the entries CommitMerge carries instead.
    if region_state.state == PeerState::Merging as i32 {
        return Err(unavailable());
    }
    let region = region_state.region.clone().ok_or_else(unavailable)?;
    let lower = codec::keys::data_key(&region.start_key);
    let upper = codec::keys::data_end_key(&region.end_key);
    let mut cfs = Vec::with_capacity(DATA_CFS.len());
    let mut total = 0u64;
    for cf in DATA_CFS {
        let mut data = CfData {
            cf: cf.to_string(),
            keys: vec![],
            values: vec![],
        };
        snap.scan_cf(cf, &lower, Some(&upper), false, &mut |k, v| {
            total += (k.len() + v.len()) as u64;
            data.keys.push(k.to_vec());
            data.values.push(v.to_vec());
            Ok(total <= max_bytes)
        })
        .map_err(|_| unavailable())?;
        cfs.push(data);
    }
    if total > max_bytes {
        tracing::warn!(
            region_id = region.id,
            total,
            "region too large to snapshot; waiting for a split"
        );
        return Err(unavailable());
    }
    let data = SnapshotData {
        region_state: Some(region_state),
        apply_state: Some(apply_state),
        cfs,
    };
    let mut s = Snapshot::default();
    s.set_data(data.encode_to_vec().into());
    let m = s.mut_metadata();
    m.index = apply_state.applied_index;
    m.term = apply_state.applied_term;
    m.set_conf_state(conf_state_from_region(&region));
    Ok(s)
}

#[cfg(test)]
mod tests {
    use engine::MemEngine;
    use raft::Storage as _;
    use raft_log::MemRaftLog;

    use super::*;

    fn region() -> metapb::Region {
        metapb::Region {
            id: 1,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![metapb::Peer {
                id: 2,
                store_id: 3,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    /// The log lost a damaged tail at start-up, but the engine had applied past it: the peer
    /// must start (not fail on the missing term) and take appends after the applied index.
    #[test]
    fn a_log_cut_below_the_applied_index_restarts_after_it() {
        let kv: Arc<dyn KvEngine> = Arc::new(MemEngine::default());
        let raft_log: Arc<dyn RaftLogStore> = Arc::new(MemRaftLog::new());
        let mut wb = WriteBatch::default();
        write_initial_region(&mut wb, &region());
        let applied = RaftApplyState {
            applied_index: 12,
            applied_term: 6,
            truncated_index: RAFT_INIT_LOG_INDEX,
            truncated_term: RAFT_INIT_LOG_TERM,
        };
        wb.put_cf(
            CF_RAFT,
            &codec::keys::apply_state_key(1),
            &applied.encode_to_vec(),
        );
        kv.write(&wb, true).unwrap();
        // What survived of the log: entries 6..=8 (9..=12 were in the cut tail).
        let mut lb = LogBatch::default();
        lb.add_entries(1, (6..=8).map(|i| entry(i, 6)).collect());
        let mut state = init_raft_state();
        state.last_index = 8;
        state.hard_state.term = 6;
        state.hard_state.commit = 8;
        lb.put_raft_state(1, &state);
        raft_log.write(lb, true).unwrap();

        // Twice: the repair is durable and a second start finds nothing to repair.
        for start in 0..2 {
            let ps = PeerStorage::new(1, region(), kv.clone(), raft_log.clone(), 1 << 20)
                .unwrap_or_else(|e| panic!("start {start}: {e}"));
            assert_eq!(ps.last_index().unwrap(), 12);
            assert_eq!(ps.first_index().unwrap(), 13);
            assert_eq!(ps.term(12).unwrap(), 6);
            assert_eq!(ps.raft_state.hard_state.commit, 12);
        }
        let mut ps = PeerStorage::new(1, region(), kv.clone(), raft_log.clone(), 1 << 20).unwrap();
        let mut lb = LogBatch::default();
        ps.append(vec![entry(13, 7)], &mut lb);
        ps.persist_state(&mut lb);
        raft_log
            .write(lb, true)
            .expect("append right after the applied index");
        assert_eq!(raft_log.last_index(1), Some(13));
    }

    fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range
            .map(|index| Entry {
                index,
                term,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn a_snapshot_in_the_engine_but_not_in_the_log_restarts_the_log_after_it() {
        let kv = Arc::new(MemEngine::new());
        let log = Arc::new(MemRaftLog::new());
        let region = metapb::Region {
            id: 1,
            peers: vec![metapb::Peer {
                id: 1,
                store_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        // The log as a crash between the snapshot's engine write and the log reset left it.
        let mut lb = LogBatch::default();
        lb.add_entries(1, entries(6..=8, 6));
        let mut stale = init_raft_state();
        stale.last_index = 8;
        lb.put_raft_state(1, &stale);
        log.write(lb, true).unwrap();
        let mut wb = WriteBatch::default();
        write_initial_region(&mut wb, &region);
        let snapshot_state = RaftApplyState {
            applied_index: 20,
            applied_term: 7,
            truncated_index: 20,
            truncated_term: 7,
        };
        wb.put_cf(
            CF_RAFT,
            &codec::keys::apply_state_key(1),
            &snapshot_state.encode_to_vec(),
        );
        kv.write(&wb, true).unwrap();

        let mut ps = PeerStorage::new(1, region, kv, log.clone(), u64::MAX).unwrap();
        assert_eq!(ps.raft_state.last_index, 20);
        assert_eq!(
            log.first_index(1),
            None,
            "entries below the snapshot stayed"
        );
        assert_eq!(log.raft_state(1).unwrap().map(|s| s.last_index), Some(20));
        // The next entry appends right after the snapshot.
        let mut lb = LogBatch::default();
        ps.append(entries(21..=21, 7), &mut lb);
        log.write(lb, true).unwrap();
        assert_eq!(log.last_index(1), Some(21));
    }

    #[test]
    fn an_uninitialized_peer_ignores_a_destroyed_peers_apply_state() {
        let kv = Arc::new(MemEngine::new());
        let log = Arc::new(MemRaftLog::new());
        // What the destroyed predecessor left until the apply thread deletes it.
        let stale = RaftApplyState {
            applied_index: 34,
            applied_term: 6,
            truncated_index: 30,
            truncated_term: 6,
        };
        let mut wb = WriteBatch::default();
        wb.put_cf(
            CF_RAFT,
            &codec::keys::apply_state_key(14),
            &stale.encode_to_vec(),
        );
        kv.write(&wb, true).unwrap();
        let region = metapb::Region {
            id: 14,
            ..Default::default()
        };
        let ps = PeerStorage::new(1, region, kv, log.clone(), u64::MAX).unwrap();
        assert_eq!(ps.apply_state.applied_index, 0);
        assert_eq!(ps.raft_state.last_index, 0);
        assert_eq!(log.raft_state(14).unwrap(), None, "the log was not touched");
    }
}
