//! Region and store traffic for PD: the keys and bytes that this store's leaders wrote and
//! served to readers, per region and for the whole store, counted by the request handlers and
//! reported, as deltas over an interval, in region and store heartbeats (PD's hot-region
//! statistics and its store flows read them).
//!
//! A write is counted where it was proposed, once its command has applied: only a leader
//! proposes, so each write counts once, as in TiKV. Its keys are the puts and deletes of the
//! applied batch in every column family (a transactional write counts its lock, data and
//! write records) and its bytes their keys and values. A read counts the pairs it returns.
//! Requests are counted by kind ([`QueryKind`], PD's `QueryStats`) once they were served,
//! whatever their answer, on the region their context names.
//!
//! Counting is a few relaxed atomic adds under a shard read lock of the region map; a
//! heartbeat swaps the counters to zero, so an add is in exactly one report. No clock is read
//! here: the caller passes the time in.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use engine::Modify;
use proto::pdpb;

use crate::load_split::{LoadSplitConfig, LoadSplitter};

/// A request's kind, as PD's `QueryStats` counts requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryKind {
    /// Point and batch gets, raw and transactional, and TTL lookups.
    Get,
    /// Scans, raw and transactional.
    Scan,
    /// Raw puts, batch puts and compare-and-swaps.
    Put,
    /// Raw deletes.
    Delete,
    /// Range deletes, raw and transactional.
    DeleteRange,
    /// Prewrites.
    Prewrite,
    /// Pessimistic locks.
    AcquirePessimisticLock,
    /// Commits.
    Commit,
    /// Rollbacks, cleanups and pessimistic rollbacks.
    Rollback,
    /// GC requests.
    Gc,
}

/// How many kinds of [`QueryKind`] there are.
const QUERY_KINDS: usize = 10;

/// Counts of requests by [`QueryKind`] (indexed by `kind as usize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queries(pub [u64; QUERY_KINDS]);

impl Queries {
    /// The count of one kind.
    pub fn get(&self, kind: QueryKind) -> u64 {
        self.0[kind as usize]
    }

    /// The counts as PD's protocol carries them.
    pub fn to_pb(self) -> pdpb::QueryStats {
        use QueryKind::*;
        pdpb::QueryStats {
            gc: self.get(Gc),
            get: self.get(Get),
            scan: self.get(Scan),
            coprocessor: 0,
            delete: self.get(Delete),
            delete_range: self.get(DeleteRange),
            put: self.get(Put),
            prewrite: self.get(Prewrite),
            acquire_pessimistic_lock: self.get(AcquirePessimisticLock),
            commit: self.get(Commit),
            rollback: self.get(Rollback),
        }
    }
}

/// Traffic over one interval, as a heartbeat reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// Bytes (keys and values) written.
    pub bytes_written: u64,
    /// Keys written (puts and deletes).
    pub keys_written: u64,
    /// Bytes (keys and values) returned to readers.
    pub bytes_read: u64,
    /// Keys returned to readers.
    pub keys_read: u64,
    /// Requests served, by kind.
    pub queries: Queries,
    /// Start of the interval, seconds since the Unix epoch.
    pub start_secs: u64,
    /// End of the interval, seconds since the Unix epoch.
    pub end_secs: u64,
}

impl Flow {
    /// The interval as PD's protocol carries it.
    pub fn interval(&self) -> pdpb::TimeInterval {
        pdpb::TimeInterval {
            start_timestamp: self.start_secs,
            end_timestamp: self.end_secs,
        }
    }
}

/// Running totals since the last report.
#[derive(Debug, Default)]
struct Counters {
    bytes_written: AtomicU64,
    keys_written: AtomicU64,
    bytes_read: AtomicU64,
    keys_read: AtomicU64,
    queries: [AtomicU64; QUERY_KINDS],
    /// When the counters were last taken (the start of the next interval).
    since_secs: AtomicU64,
}

impl Counters {
    fn starting(since_secs: u64) -> Self {
        Counters {
            since_secs: AtomicU64::new(since_secs),
            ..Default::default()
        }
    }

    fn add_written(&self, keys: u64, bytes: u64) {
        self.keys_written.fetch_add(keys, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }

    fn add_read(&self, keys: u64, bytes: u64) {
        self.keys_read.fetch_add(keys, Ordering::Relaxed);
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    fn add_query(&self, kind: QueryKind) {
        self.queries[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// What was counted since the last take, which ends at `now_secs`; starts the next interval.
    fn take(&self, now_secs: u64) -> Flow {
        let start_secs = self.since_secs.swap(now_secs, Ordering::Relaxed);
        Flow {
            bytes_written: self.bytes_written.swap(0, Ordering::Relaxed),
            keys_written: self.keys_written.swap(0, Ordering::Relaxed),
            bytes_read: self.bytes_read.swap(0, Ordering::Relaxed),
            keys_read: self.keys_read.swap(0, Ordering::Relaxed),
            queries: Queries(std::array::from_fn(|i| {
                self.queries[i].swap(0, Ordering::Relaxed)
            })),
            start_secs: start_secs.min(now_secs),
            end_secs: now_secs,
        }
    }
}

/// The traffic of one store, per region and in total. Shared by the request handlers (which
/// count) and the PD worker (which reports).
#[derive(Debug)]
pub struct FlowMeter {
    regions: DashMap<u64, Counters>,
    store: Counters,
    /// When counting began: the start of a region's first interval.
    started_secs: u64,
    /// The same traffic, per second, for load-based split.
    pub(crate) load: LoadSplitter,
}

impl FlowMeter {
    /// A meter counting from `now_secs`, splitting hot regions as `load_split` says.
    pub fn new(now_secs: u64, load_split: LoadSplitConfig) -> Self {
        FlowMeter {
            regions: DashMap::new(),
            store: Counters::starting(now_secs),
            started_secs: now_secs,
            load: LoadSplitter::new(load_split),
        }
    }

    /// Runs `f` on the region's counters, creating them on its first traffic.
    fn with_region(&self, region_id: u64, f: impl Fn(&Counters)) {
        if let Some(c) = self.regions.get(&region_id) {
            return f(&c);
        }
        let c = self
            .regions
            .entry(region_id)
            .or_insert_with(|| Counters::starting(self.started_secs));
        f(&c);
    }

    /// Counts a write of `keys` keys and `bytes` bytes (see [`write_size`]), applied to
    /// `region_id` after this store's leader proposed it.
    pub fn on_write(&self, region_id: u64, keys: u64, bytes: u64) {
        if keys == 0 && bytes == 0 {
            return;
        }
        self.store.add_written(keys, bytes);
        self.with_region(region_id, |c| c.add_written(keys, bytes));
        self.load.on_bytes(region_id, bytes);
    }

    /// Counts a read of `region_id` that returned `keys` pairs of `bytes` bytes in all.
    pub fn on_read(&self, region_id: u64, keys: u64, bytes: u64) {
        if keys == 0 && bytes == 0 {
            return;
        }
        self.store.add_read(keys, bytes);
        self.with_region(region_id, |c| c.add_read(keys, bytes));
        self.load.on_bytes(region_id, bytes);
    }

    /// Counts one request of `kind` served on `region_id` (0: none named; the store's only).
    pub fn on_query(&self, region_id: u64, kind: QueryKind) {
        self.store.add_query(kind);
        if region_id != 0 {
            self.with_region(region_id, |c| c.add_query(kind));
        }
    }

    /// The region's traffic since its previous report (or since counting began), ending at
    /// `now_secs`. Only the region's leader reports, so an interval may span a time when
    /// another store led it; what that store counted it reports itself.
    pub fn take_region(&self, region_id: u64, now_secs: u64) -> Flow {
        self.regions
            .entry(region_id)
            .or_insert_with(|| Counters::starting(self.started_secs))
            .take(now_secs)
    }

    /// The store's traffic since its previous report, ending at `now_secs`.
    pub fn take_store(&self, now_secs: u64) -> Flow {
        self.store.take(now_secs)
    }

    /// Forgets the regions `keep` rejects (no longer on this store); their untaken counts go.
    pub fn retain_regions(&self, keep: impl Fn(u64) -> bool) {
        self.regions.retain(|id, _| keep(*id));
    }

    /// Number of regions with counters.
    pub fn region_count(&self) -> usize {
        self.regions.len()
    }
}

/// `(keys, bytes)` of a batch: puts count key and value, deletes their key. A range delete
/// counts nothing: how many keys it removes is unknown without reading them.
pub fn write_size(modifies: &[Modify]) -> (u64, u64) {
    modifies.iter().fold((0, 0), |(keys, bytes), m| match m {
        Modify::Put { key, value, .. } => (keys + 1, bytes + (key.len() + value.len()) as u64),
        Modify::Delete { key, .. } => (keys + 1, bytes + key.len() as u64),
        Modify::DeleteRange { .. } => (keys, bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::CF_DEFAULT;

    fn put(key: &[u8], value: &[u8]) -> Modify {
        Modify::Put {
            cf: CF_DEFAULT,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn write_size_counts_puts_and_deletes() {
        let del = Modify::Delete {
            cf: CF_DEFAULT,
            key: b"abc".to_vec(),
        };
        let range = Modify::DeleteRange {
            cf: CF_DEFAULT,
            start: b"a".to_vec(),
            end: b"z".to_vec(),
        };
        assert_eq!(write_size(&[put(b"k", b"vv"), del, range]), (2, 6));
    }

    #[test]
    fn a_region_reports_its_delta_since_its_previous_heartbeat() {
        let m = FlowMeter::new(100, LoadSplitConfig::default());
        let (keys, bytes) = write_size(&[put(b"k1", b"v1"), put(b"k2", b"value2")]);
        m.on_write(1, keys, bytes);
        m.on_read(1, 3, 30);
        m.on_read(2, 1, 5);
        let f = m.take_region(1, 110);
        assert_eq!(
            f,
            Flow {
                bytes_written: 12,
                keys_written: 2,
                bytes_read: 30,
                keys_read: 3,
                queries: Queries::default(),
                start_secs: 100,
                end_secs: 110,
            }
        );
        assert_eq!(f.interval().start_timestamp, 100);
        // The next report starts where this one ended and holds only what came since.
        m.on_read(1, 1, 4);
        let f = m.take_region(1, 120);
        assert_eq!((f.keys_read, f.bytes_read, f.keys_written), (1, 4, 0));
        assert_eq!((f.start_secs, f.end_secs), (110, 120));
        // Another region's counts are its own.
        let f = m.take_region(2, 125);
        assert_eq!((f.keys_read, f.bytes_read, f.start_secs), (1, 5, 100));
        // An untouched region reports nothing, over the time since counting began.
        let f = m.take_region(3, 130);
        assert_eq!((f.keys_read, f.keys_written, f.start_secs), (0, 0, 100));
        assert_eq!(m.take_region(3, 140).start_secs, 130);
    }

    #[test]
    fn the_store_reports_its_totals_apart_from_region_heartbeats() {
        let m = FlowMeter::new(100, LoadSplitConfig::default());
        m.on_write(1, 1, 2);
        m.on_read(2, 2, 8);
        // Region heartbeats take the region counters, not the store's.
        m.take_region(1, 105);
        m.take_region(2, 105);
        let f = m.take_store(110);
        assert_eq!((f.keys_written, f.bytes_written), (1, 2));
        assert_eq!((f.keys_read, f.bytes_read), (2, 8));
        assert_eq!((f.start_secs, f.end_secs), (100, 110));
        let f = m.take_store(120);
        assert_eq!((f.keys_written, f.keys_read, f.start_secs), (0, 0, 110));
    }

    #[test]
    fn requests_are_counted_by_kind_per_region_and_store() {
        let m = FlowMeter::new(0, LoadSplitConfig::default());
        m.on_query(1, QueryKind::Get);
        m.on_query(1, QueryKind::Get);
        m.on_query(1, QueryKind::Commit);
        m.on_query(2, QueryKind::Scan);
        let f = m.take_region(1, 10);
        let pb = f.queries.to_pb();
        assert_eq!((pb.get, pb.commit, pb.scan, pb.put), (2, 1, 0, 0));
        assert_eq!(m.take_region(1, 20).queries, Queries::default());
        let store = m.take_store(10).queries.to_pb();
        assert_eq!((store.get, store.commit, store.scan), (2, 1, 1));
    }

    #[test]
    fn a_clock_going_back_gives_an_empty_interval_not_a_negative_one() {
        let m = FlowMeter::new(100, LoadSplitConfig::default());
        let f = m.take_store(90);
        assert_eq!((f.start_secs, f.end_secs), (90, 90));
    }

    #[test]
    fn regions_gone_from_the_store_are_forgotten() {
        let m = FlowMeter::new(0, LoadSplitConfig::default());
        m.on_read(1, 1, 1);
        m.on_read(2, 1, 1);
        m.retain_regions(|id| id == 2);
        assert_eq!(m.region_count(), 1);
        assert_eq!(m.take_region(1, 10).keys_read, 0);
    }
}
