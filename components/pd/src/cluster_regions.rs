//! The region half of [`Cluster`]: region heartbeats and split reports, and how a region
//! change is persisted without holding the cluster's lock.
//!
//! A report is judged under the lock against the directory (the epoch rules of
//! `region_dir`). One that changes nothing durable (same range, epoch, peers and leader: most
//! heartbeats) is installed at once, stats and all. One that does *claims* what it touches —
//! its region id, the ids of the regions it evicts, its new key range — and the lock is
//! released while the meta store writes (in a PD group a raft round trip of up to 5 s), then
//! re-taken to install it. A report touching a claimed id or range waits (the lock released,
//! on `claims_released`) until that write is installed or has failed, and is judged again.
//!
//! So: a change is durable before PD installs it, answers from it or acts on it; two reports
//! of one region, or of regions whose ranges meet, reach the meta store and the directory in
//! the same order, so an older epoch never lands over a newer one in either; and lookups,
//! store heartbeats, the schedulers and unrelated regions' writes go on meanwhile. Writes
//! that claim nothing in common commute: neither changes what the other was judged against
//! (an overlapping live region is evicted, so its id is claimed), so the judgment still holds
//! at install, which asserts it. A refusal needs no claim: epochs only grow, so a report stale
//! against the directory stays stale whatever is in flight.
//!
//! The work per report is O(log n) in the number of regions: no step walks the directory.

use parking_lot::MutexGuard;
use proto::epoch;
use proto::metapb::{Peer, Region};
use proto::pdpb::{RegionHeartbeatRequest, RegionHeartbeatResponse};

use super::schedule::Queued;
use super::{Cluster, Inner};
use crate::operator::{OpStatus, Step};
use crate::region_dir::{RegionFlow, RegionInfo};
use crate::replica_view::{region_key, region_value};
use crate::{scheduler, PdError, Result};

/// What one region write persisting outside the lock has claimed.
#[derive(Debug)]
struct Claim {
    seq: u64,
    /// The reported region and the regions it evicts.
    region_ids: Vec<u64>,
    /// The reported region's new range; an empty end is +infinity.
    start_key: Vec<u8>,
    end_key: Vec<u8>,
}

/// The claims of the region writes in flight: one per heartbeat stream at most, so a few
/// dozen; a linear scan is the cheapest lookup.
#[derive(Debug, Default)]
pub(super) struct Claims {
    next_seq: u64,
    held: Vec<Claim>,
}

/// Whether `[s1, e1)` and `[s2, e2)` meet (empty ends are +infinity).
fn ranges_meet(s1: &[u8], e1: &[u8], s2: &[u8], e2: &[u8]) -> bool {
    (e2.is_empty() || s1 < e2) && (e1.is_empty() || s2 < e1)
}

impl Claims {
    /// Whether a write of `info` evicting `evicted` touches what a write in flight claimed.
    fn conflicts(&self, info: &RegionInfo, evicted: &[u64]) -> bool {
        let r = &info.region;
        self.held.iter().any(|c| {
            c.region_ids
                .iter()
                .any(|id| *id == r.id || evicted.contains(id))
                || ranges_meet(&c.start_key, &c.end_key, &r.start_key, &r.end_key)
        })
    }

    /// Claims what a write of `info` evicting `evicted` touches; returns the claim's number.
    fn take(&mut self, info: &RegionInfo, evicted: &[u64]) -> u64 {
        self.next_seq += 1;
        let mut region_ids = vec![info.region.id];
        region_ids.extend_from_slice(evicted);
        self.held.push(Claim {
            seq: self.next_seq,
            region_ids,
            start_key: info.region.start_key.clone(),
            end_key: info.region.end_key.clone(),
        });
        self.next_seq
    }

    fn release(&mut self, seq: u64) {
        let before = self.held.len();
        self.held.retain(|c| c.seq != seq);
        assert_eq!(self.held.len() + 1, before, "claim {seq} released twice");
    }

    /// Number of writes in flight.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }
}

/// What a heartbeat answers, once its report is installed.
enum Next {
    /// This step, or nothing.
    Answer(Option<Box<RegionHeartbeatResponse>>),
    /// The operator planned needs this many peer ids beyond those reserved.
    NeedIds(u64),
}

impl Cluster {
    /// Judges the report `prepare` makes from the state (None: nothing to apply), persists it
    /// when it changes what is durable — with the lock released, see the module docs — and
    /// installs it. Returns the lock, held, once the report is installed; None when skipped.
    fn apply_region(
        &self,
        mut prepare: impl FnMut(&Inner) -> Option<RegionInfo>,
    ) -> Result<Option<MutexGuard<'_, Inner>>> {
        let mut inner = self.inner.lock();
        let (info, evicted, seq) = loop {
            Self::must_bootstrapped(&inner)?;
            let Some(info) = prepare(&inner) else {
                return Ok(None);
            };
            let evicted = inner.regions.check(&info)?;
            let unchanged = evicted.is_empty()
                && inner
                    .regions
                    .get(info.region.id)
                    .is_some_and(|old| old.region == info.region && old.leader == info.leader);
            if unchanged {
                // Only the stats change, which are not persisted.
                inner.regions.upsert(info)?;
                return Ok(Some(inner));
            }
            if inner.claims.conflicts(&info, &evicted) {
                self.claims_released.wait(&mut inner);
                continue;
            }
            let seq = inner.claims.take(&info, &evicted);
            break (info, evicted, seq);
        };
        drop(inner);
        let mut pairs = vec![(region_key(info.region.id), region_value(&info))];
        pairs.extend(evicted.iter().map(|id| (region_key(*id), Vec::new())));
        let written = self.meta.write(&pairs);
        let mut inner = self.inner.lock();
        inner.claims.release(seq);
        self.claims_released.notify_all();
        written?;
        let region_id = info.region.id;
        let now_evicted = inner.regions.upsert(info).unwrap_or_else(|e| {
            panic!("region {region_id}: a claimed write is refused at install: {e}")
        });
        assert_eq!(
            now_evicted, evicted,
            "region {region_id}: a claimed write evicts other regions at install than judged"
        );
        for id in now_evicted {
            Self::end_operator(&mut inner, id);
        }
        Ok(Some(inner))
    }

    /// Handles one region heartbeat; returns the step to send, if any.
    pub fn region_heartbeat(
        &self,
        req: RegionHeartbeatRequest,
        now_ms: u64,
    ) -> Result<Option<RegionHeartbeatResponse>> {
        let flow = RegionFlow::from_heartbeat(&req);
        // Whether this report's interval was hot (None: it carries no interval).
        let hot_now = (flow.interval_secs > 0)
            .then(|| scheduler::is_hot(&flow, self.cfg.hot_region_byte_rate_min_per_sec));
        let region = req
            .region
            .ok_or_else(|| PdError::InvalidValue("heartbeat without region".into()))?;
        let info = RegionInfo {
            flow,
            region,
            leader: req.leader,
            pending_peers: req.pending_peers,
            down_peers: req.down_peers,
            approximate_size: req.approximate_size,
            approximate_keys: req.approximate_keys,
            term: req.term,
            version_seen_ms: Some(now_ms),
            hot_reports: 0,
        };
        let region_id = info.region.id;
        // A heartbeat from a leader of an older term (queued before a leader change) must not
        // overwrite the newer leader's report: balance-leader would chase stale counts.
        let prepare = |inner: &Inner| {
            let mut info = info.clone();
            let mut known_reports = 0;
            if let Some(known) = inner.regions.get(region_id) {
                if known.term > info.term && !epoch::is_stale(&known.epoch(), &info.epoch()) {
                    tracing::debug!(
                        region_id,
                        known = known.term,
                        got = info.term,
                        "stale-term heartbeat ignored"
                    );
                    return None;
                }
                if known.epoch().version == info.epoch().version {
                    // Still the version PD first saw then (the merge checker's clock).
                    info.version_seen_ms = known.version_seen_ms.or(info.version_seen_ms);
                }
                known_reports = known.hot_reports;
            }
            info.hot_reports = match hot_now {
                Some(true) => known_reports.saturating_add(1),
                Some(false) => 0,
                None => known_reports,
            };
            Some(info)
        };
        let Some(mut inner) = self.apply_region(prepare)? else {
            return Ok(None);
        };
        match self.next_step(&mut inner, region_id, now_ms)? {
            Next::Answer(resp) => Ok(resp.map(|r| *r)),
            Next::NeedIds(n) => {
                // The operator needs peer ids and the allocator must persist a new bound:
                // reserve them with the lock released, then plan again.
                drop(inner);
                self.ids.reserve(n)?;
                let mut inner = self.inner.lock();
                if inner.regions.get(region_id).is_none() {
                    return Ok(None);
                }
                match self.next_step(&mut inner, region_id, now_ms)? {
                    Next::Answer(resp) => Ok(resp.map(|r| *r)),
                    // Taken by others meanwhile: the next heartbeat plans again.
                    Next::NeedIds(_) => Ok(None),
                }
            }
        }
    }

    /// Advances the region's operator, or asks the schedulers for one.
    fn next_step(&self, inner: &mut Inner, region_id: u64, now_ms: u64) -> Result<Next> {
        let info = inner
            .regions
            .get(region_id)
            .expect("region just installed")
            .clone();
        let timeout_ms = self.cfg.operator_timeout_secs * 1000;
        if let Some(op) = inner.operators.get(&region_id) {
            match op.advance(&info, now_ms, timeout_ms) {
                OpStatus::Running(resp) => return Ok(Next::Answer(resp)),
                status => {
                    tracing::debug!(region_id, ?status, name = op.name, "operator ended");
                    Self::end_operator(inner, region_id);
                }
            }
        }
        if inner.operators.len() >= self.cfg.operators_max {
            return Ok(Next::Answer(None));
        }
        // The replica checker sees the stores only (O(stores), from the directory's tallies).
        let op = scheduler::presplit(&info, &self.presplit_keys).or_else(|| {
            let snap = Self::snapshot(inner, &self.cfg, now_ms, false);
            let rules = scheduler::PlacementRules::from_config(&self.cfg);
            scheduler::check_replicas(&info, &snap, &rules)
        });
        let Some(op) = op else {
            return Ok(Next::Answer(None));
        };
        // Restoring a missing voter, or only removing peers, goes before the store limits.
        let adds = op
            .steps
            .iter()
            .any(|s| matches!(s, Step::AddLearner { .. }));
        let force = !adds || scheduler::is_under_replicated(&info, self.cfg.max_replicas);
        match self.queue_operator(inner, op, now_ms, force) {
            Queued::Yes => {}
            Queued::NoTokens => return Ok(Next::Answer(None)),
            Queued::NeedIds(n) => return Ok(Next::NeedIds(n)),
        }
        let op = inner.operators.get(&region_id).expect("just queued");
        Ok(Next::Answer(match op.advance(&info, now_ms, timeout_ms) {
            OpStatus::Running(resp) => resp,
            _ => None,
        }))
    }

    /// Applies the regions a split produced, one write each. Their leader is presumed on the
    /// store that led the parent, until their own heartbeats say otherwise.
    pub fn report_batch_split(&self, regions: Vec<Region>) -> Result<()> {
        let leader_store = {
            let inner = self.inner.lock();
            Self::must_bootstrapped(&inner)?;
            let old_leader_store = |r: &Region| {
                let old = inner.regions.get(r.id)?;
                old.leader.as_ref().map(|l| l.store_id)
            };
            regions.iter().find_map(old_leader_store).or_else(|| {
                let r = regions.first()?;
                let parent = inner.regions.get_by_key(&r.start_key)?;
                parent.leader.as_ref().map(|l| l.store_id)
            })
        };
        let mut first_err = None;
        for region in regions {
            let presumed =
                leader_store.and_then(|s| region.peers.iter().find(|p| p.store_id == s).cloned());
            let prepare = |inner: &Inner| {
                let known = inner.regions.get(region.id).and_then(|old| old.leader);
                let leader: Option<Peer> = match known {
                    Some(l) if region.peers.contains(&l) => Some(l),
                    _ => presumed,
                };
                Some(RegionInfo::new(region.clone(), leader))
            };
            if let Err(e) = self.apply_region(prepare) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::Duration;

    use parking_lot::{Condvar, Mutex};
    use proto::metapb::{PeerRole, RegionEpoch, Store};

    use super::*;
    use crate::meta_store::{MemMetaStore, MetaStore};
    use crate::PdConfig;

    #[derive(Default)]
    struct Gate {
        /// Whether writes block.
        closed: bool,
        /// Writes that reached the store while it was closed.
        entered: usize,
        /// Writes that may still pass.
        passes: usize,
        /// Whether the next write fails (at once, without blocking).
        fail_next: bool,
    }

    /// A [`MemMetaStore`] whose writes, while the gate is closed, block until let through one
    /// by one: a PD group's write waiting on its raft round trip.
    #[derive(Default)]
    struct GatedMetaStore {
        mem: MemMetaStore,
        gate: Mutex<Gate>,
        changed: Condvar,
    }

    impl GatedMetaStore {
        fn close(&self) {
            self.gate.lock().closed = true;
        }

        /// Waits until `n` writes in all have reached the closed gate.
        fn must_have_entered(&self, n: usize) {
            let mut gate = self.gate.lock();
            while gate.entered < n {
                let timed_out = self
                    .changed
                    .wait_for(&mut gate, Duration::from_secs(5))
                    .timed_out();
                assert!(!timed_out, "{} writes entered, want {n}", gate.entered);
            }
        }

        fn entered(&self) -> usize {
            self.gate.lock().entered
        }

        /// Lets one blocked (or the next) write through.
        fn pass_one(&self) {
            self.gate.lock().passes += 1;
            self.changed.notify_all();
        }
    }

    impl MetaStore for GatedMetaStore {
        fn get(&self, key: &[u8]) -> crate::Result<Option<Vec<u8>>> {
            self.mem.get(key)
        }

        fn write(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> crate::Result<()> {
            let mut gate = self.gate.lock();
            if std::mem::take(&mut gate.fail_next) {
                return Err(PdError::Storage("injected".into()));
            }
            if gate.closed {
                gate.entered += 1;
                self.changed.notify_all();
                while gate.passes == 0 {
                    self.changed.wait(&mut gate);
                }
                gate.passes -= 1;
            }
            drop(gate);
            self.mem.write(pairs)
        }

        fn scan_prefix(&self, prefix: &[u8]) -> crate::Result<Vec<(Vec<u8>, Vec<u8>)>> {
            self.mem.scan_prefix(prefix)
        }
    }

    fn peer(id: u64, store_id: u64) -> Peer {
        Peer {
            id,
            store_id,
            role: PeerRole::Voter as i32,
            is_witness: false,
        }
    }

    /// Region 2 over the whole keyspace on store 1, at `conf_ver` (version 1).
    fn region_at(conf_ver: u64) -> Region {
        Region {
            id: 2,
            region_epoch: Some(RegionEpoch {
                version: 1,
                conf_ver,
            }),
            peers: vec![peer(3, 1)],
            ..Default::default()
        }
    }

    fn heartbeat(region: Region, size: u64) -> RegionHeartbeatRequest {
        RegionHeartbeatRequest {
            leader: region.peers.first().copied(),
            region: Some(region),
            approximate_size: size,
            term: 1,
            ..Default::default()
        }
    }

    /// A bootstrapped cluster (stores 1 and 2, region 2 at conf_ver 1) over a closed gate.
    fn gated_cluster() -> (Arc<GatedMetaStore>, Arc<Cluster>) {
        let meta = Arc::new(GatedMetaStore::default());
        let c = Cluster::open(meta.clone(), PdConfig::default(), 1_000).unwrap();
        let store = |id: u64| Store {
            id,
            address: format!("127.0.0.1:{}", 20160 + id),
            ..Default::default()
        };
        c.bootstrap(store(1), region_at(1), 1_000).unwrap();
        c.put_store(store(2), 1_000).unwrap();
        meta.close();
        (meta, Arc::new(c))
    }

    /// Runs `f` on a thread; panics unless it ends within 5 s (it would hang on a held lock).
    fn must_finish<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(Duration::from_secs(5))
            .expect("a call into Cluster blocked behind a persisting region write")
    }

    fn must_store_heartbeat(c: &Cluster, store_id: u64) {
        let stats = proto::pdpb::StoreStats {
            store_id,
            ..Default::default()
        };
        c.store_heartbeat(stats, 2_000).unwrap();
    }

    fn conf_ver(c: &Cluster) -> u64 {
        let info = c.get_region_by_id(2).unwrap().unwrap();
        info.epoch().conf_ver
    }

    #[test]
    fn a_persisting_heartbeat_does_not_hold_the_lock() {
        let (meta, c) = gated_cluster();
        let writer = {
            let c = c.clone();
            std::thread::spawn(move || c.region_heartbeat(heartbeat(region_at(2), 0), 2_000))
        };
        meta.must_have_entered(1);
        // The write blocks; every other call goes on, and sees the region as still durable.
        let c2 = c.clone();
        must_finish(move || {
            must_store_heartbeat(&c2, 2);
            assert_eq!(conf_ver(&c2), 1, "not installed before it is durable");
            assert_eq!(c2.get_region(b"k").unwrap().unwrap().region.id, 2);
            assert_eq!(c2.stores_status(2_000).len(), 2);
            assert_eq!(c2.inner.lock().claims.len(), 1);
            // A heartbeat that changes nothing durable (stats only) needs no write.
            c2.region_heartbeat(heartbeat(region_at(1), 7), 2_000)
                .unwrap();
            let info = c2.get_region_by_id(2).unwrap().unwrap();
            assert_eq!(info.approximate_size, 7);
        });
        meta.pass_one();
        writer.join().unwrap().unwrap();
        assert_eq!(conf_ver(&c), 2);
        assert_eq!(c.inner.lock().claims.len(), 0);
    }

    #[test]
    fn a_stale_heartbeat_never_lands_over_a_newer_one_while_writes_interleave() {
        let (meta, c) = gated_cluster();
        let send = |conf_ver: u64| {
            let c = c.clone();
            std::thread::spawn(move || c.region_heartbeat(heartbeat(region_at(conf_ver), 0), 2_000))
        };
        // conf_ver 3 is persisting; conf_ver 2, newer than what is installed, arrives meanwhile.
        let newer = send(3);
        meta.must_have_entered(1);
        let older = send(2);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            meta.entered(),
            1,
            "the older report waits: it never reaches the store"
        );
        meta.pass_one();
        newer.join().unwrap().unwrap();
        let err = older.join().unwrap().unwrap_err();
        assert!(matches!(err, PdError::StaleRegion { .. }), "{err}");
        assert_eq!(conf_ver(&c), 3);
        // The reverse: conf_ver 5 arrives while 4 persists, waits, and is written after it.
        let first = send(4);
        meta.must_have_entered(2);
        let second = send(5);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(meta.entered(), 2);
        meta.pass_one();
        first.join().unwrap().unwrap();
        meta.must_have_entered(3);
        assert_eq!(conf_ver(&c), 4);
        meta.pass_one();
        second.join().unwrap().unwrap();
        assert_eq!(conf_ver(&c), 5);
        // What is durable is what is installed.
        let meta: Arc<dyn MetaStore> = meta;
        let reopened = Cluster::open(meta, PdConfig::default(), 3_000).unwrap();
        assert_eq!(conf_ver(&reopened), 5);
    }

    #[test]
    fn a_split_half_waits_for_the_shrinking_parent_instead_of_evicting_it() {
        let (meta, c) = gated_cluster();
        let half = |id: u64, start: &[u8], end: &[u8]| Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(RegionEpoch {
                version: 2,
                conf_ver: 1,
            }),
            peers: vec![peer(id * 10, 1)],
        };
        let send = |r: Region| {
            let c = c.clone();
            std::thread::spawn(move || c.region_heartbeat(heartbeat(r, 0), 2_000))
        };
        let left = send(half(2, b"", b"m"));
        meta.must_have_entered(1);
        // Judged now, the right half would evict the parent (still [-inf, +inf) at version 1).
        let right = send(half(9, b"m", b""));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            meta.entered(),
            1,
            "the right half waits for the parent's write"
        );
        meta.pass_one();
        meta.must_have_entered(2);
        meta.pass_one();
        left.join().unwrap().unwrap();
        right.join().unwrap().unwrap();
        let ids = |key: &[u8]| c.get_region(key).unwrap().unwrap().region.id;
        assert_eq!((ids(b"a"), ids(b"x")), (2, 9));
        let meta: Arc<dyn MetaStore> = meta;
        let reopened = Cluster::open(meta, PdConfig::default(), 3_000).unwrap();
        assert_eq!(
            reopened.all_regions().len(),
            2,
            "neither half evicted the other"
        );
    }

    #[test]
    fn record_writes_do_not_hold_the_lock_either() {
        let (meta, c) = gated_cluster();
        let writers = [
            std::thread::spawn({
                let c = c.clone();
                move || c.update_gc_safe_point(10).map(|_| ())
            }),
            std::thread::spawn({
                let c = c.clone();
                move || c.remove_store(2, true)
            }),
        ];
        // One record write blocks; the other waits behind it (record_writes), not the lock.
        meta.must_have_entered(1);
        let c2 = c.clone();
        must_finish(move || {
            must_store_heartbeat(&c2, 1);
            c2.region_heartbeat(heartbeat(region_at(1), 3), 2_000)
                .unwrap();
            assert_eq!(c2.gc_safe_point(), 0, "not installed before it is durable");
            assert_eq!(c2.all_stores(true).len(), 2);
        });
        meta.pass_one();
        meta.must_have_entered(2);
        meta.pass_one();
        for w in writers {
            w.join().unwrap().unwrap();
        }
        assert_eq!(c.gc_safe_point(), 10);
        assert_eq!(
            c.get_store(2).unwrap().store.state,
            proto::metapb::StoreState::Offline as i32
        );
    }

    #[test]
    fn a_failed_write_installs_nothing_and_releases_its_claim() {
        let (meta, c) = gated_cluster();
        meta.gate.lock().fail_next = true;
        let err = c.region_heartbeat(heartbeat(region_at(2), 0), 2_000);
        assert!(matches!(err, Err(PdError::Storage(_))), "{err:?}");
        assert_eq!(conf_ver(&c), 1);
        assert_eq!(c.inner.lock().claims.len(), 0);
        // The next report of the region is not kept waiting by the failed one.
        meta.pass_one();
        let c2 = c.clone();
        must_finish(move || c2.region_heartbeat(heartbeat(region_at(2), 0), 2_000)).unwrap();
        assert_eq!(conf_ver(&c), 2);
    }
}
