//! The region directory: every region PD knows, by encoded start key and by id. A report
//! replaces what PD knows only if its epoch is not stale (`proto::epoch`, the rule the store
//! uses too), and evicts the regions it overlaps whose version is lower. Pure data structure,
//! no I/O.
//!
//! It keeps a [`StoreTally`] per store (peers, leaders, bytes) as regions come and go, so
//! that PD's store statuses and the schedulers' snapshot never walk every region.
//!
//! It also keeps stale coverage: a key range some region covered until a report shrank,
//! evicted or removed it, and that no live region has taken over yet (say the shrunk left half
//! of a split is reported before the new right half). A lookup there answers the old region
//! rather than nothing, because tikv-client 0.4 silently drops a request whose region lookup
//! finds no region and still reports success; the old epoch only costs it an EpochNotMatch
//! and a fresh lookup.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use proto::epoch;
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
    /// When PD first heard a heartbeat of the region at its current version (ms since the
    /// epoch); None while no heartbeat has (a region known from a split report, or loaded at
    /// start-up). In memory only: the merge checker leaves a region this young alone.
    pub version_seen_ms: Option<u64>,
    /// The traffic of the interval its leader last reported (in memory only).
    pub flow: RegionFlow,
}

/// The keys and bytes a region's leader wrote and served to readers over the interval of its
/// last heartbeat, as PD's API shows them (`written_bytes`, `read_keys`, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionFlow {
    /// Bytes (keys and values) written.
    pub written_bytes: u64,
    /// Keys written.
    pub written_keys: u64,
    /// Bytes returned to readers.
    pub read_bytes: u64,
    /// Keys returned to readers.
    pub read_keys: u64,
    /// Write requests served (puts, deletes, prewrites, commits, rollbacks, locks, GC).
    pub write_queries: u64,
    /// Read requests served (gets and scans).
    pub read_queries: u64,
    /// Length of the interval in seconds; 0 when the heartbeat carried none.
    pub interval_secs: u64,
}

/// The write requests of `q`, as PD counts them.
pub fn write_queries(q: &proto::pdpb::QueryStats) -> u64 {
    q.put
        + q.delete
        + q.delete_range
        + q.prewrite
        + q.acquire_pessimistic_lock
        + q.commit
        + q.rollback
        + q.gc
}

/// The read requests of `q`, as PD counts them.
pub fn read_queries(q: &proto::pdpb::QueryStats) -> u64 {
    q.get + q.scan + q.coprocessor
}

impl RegionFlow {
    /// The flow a region heartbeat carries.
    pub fn from_heartbeat(req: &proto::pdpb::RegionHeartbeatRequest) -> Self {
        Self::from_parts(
            (req.bytes_written, req.keys_written),
            (req.bytes_read, req.keys_read),
            req.query_stats.as_ref(),
            req.interval,
        )
    }

    /// The flow of a whole store, as its heartbeat's stats carry it.
    pub fn from_store_stats(stats: &proto::pdpb::StoreStats) -> Self {
        Self::from_parts(
            (stats.bytes_written, stats.keys_written),
            (stats.bytes_read, stats.keys_read),
            stats.query_stats.as_ref(),
            stats.interval,
        )
    }

    /// From `(bytes, keys)` written and read, the requests, and the interval they span.
    fn from_parts(
        (written_bytes, written_keys): (u64, u64),
        (read_bytes, read_keys): (u64, u64),
        queries: Option<&proto::pdpb::QueryStats>,
        interval: Option<proto::pdpb::TimeInterval>,
    ) -> Self {
        RegionFlow {
            written_bytes,
            written_keys,
            read_bytes,
            read_keys,
            write_queries: queries.map_or(0, write_queries),
            read_queries: queries.map_or(0, read_queries),
            interval_secs: interval
                .map_or(0, |i| i.end_timestamp.saturating_sub(i.start_timestamp)),
        }
    }

    /// `amount` per second over the interval; an interval shorter than a second (the clock's
    /// resolution) counts as one.
    pub fn per_sec(&self, amount: u64) -> f64 {
        amount as f64 / self.interval_secs.max(1) as f64
    }
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

/// What the live regions put on one store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreTally {
    /// Live regions with a peer on the store.
    pub region_count: u64,
    /// Live regions whose reported leader is on the store.
    pub leader_count: u64,
    /// Sum of the approximate sizes of the live regions with a peer on the store.
    pub region_size_bytes: u64,
}

impl StoreTally {
    /// Adds one region's share (`add`), or subtracts it.
    fn count(&mut self, peers: u64, leaders: u64, size_bytes: u64, add: bool) {
        if add {
            self.region_count += peers;
            self.leader_count += leaders;
            self.region_size_bytes += size_bytes;
        } else {
            self.region_count -= peers;
            self.leader_count -= leaders;
            self.region_size_bytes -= size_bytes;
        }
    }
}

/// How many stale ranges the directory keeps. A stale range lives until the report of the
/// region that now holds it arrives, normally within seconds; the bound stops ranges that never
/// get a new region (replayed deletes, lost reports) from growing memory without limit. Past it
/// the oldest go first: they are the least likely to still be awaited.
const STALE_MAX: usize = 4096;

/// A key range that a region covered until a report shrank, evicted or removed it.
#[derive(Clone, Debug)]
struct StaleRange {
    /// Exclusive end key; empty is +infinity.
    end_key: Vec<u8>,
    /// The region as it was when it last covered the range (shared by the pieces of one range).
    info: Arc<RegionInfo>,
    /// When the range went stale, as a counter: the order in which the bound drops ranges.
    seq: u64,
}

/// Live regions by encoded start key and by id, and stale coverage by start key.
///
/// Invariants: live ranges never overlap; stale ranges overlap neither each other nor a live
/// range; `stale_age` holds `(seq, start key)` of exactly the stale ranges, at most
/// [`STALE_MAX`] of them; `tallies` are the sums over the live regions (no all-zero entry).
/// Everything but [`RegionDirectory::get_by_key`] sees live regions only.
#[derive(Clone, Default, Debug)]
pub struct RegionDirectory {
    by_start: BTreeMap<Vec<u8>, u64>,
    by_id: HashMap<u64, RegionInfo>,
    tallies: HashMap<u64, StoreTally>,
    stale: BTreeMap<Vec<u8>, StaleRange>,
    stale_age: BTreeSet<(u64, Vec<u8>)>,
    stale_seq: u64,
}

/// Keys up to and including `key`, for a `BTreeMap<Vec<u8>, _>` range without a copy.
fn up_to(key: &[u8]) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (Bound::Unbounded, Bound::Included(key))
}

/// Whether `key` is below `end`, an empty end being +infinity.
fn below(key: &[u8], end: &[u8]) -> bool {
    end.is_empty() || key < end
}

/// The entries of `map` (disjoint ranges keyed by start key, ends given by `end_of`) whose
/// range meets `[start, end)`, in key order.
fn overlapping<'a, V>(
    map: &'a BTreeMap<Vec<u8>, V>,
    end_of: impl Fn(&'a V) -> &'a [u8],
    start: &'a [u8],
    end: &'a [u8],
) -> impl Iterator<Item = (&'a Vec<u8>, &'a V)> + 'a {
    let before = map
        .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(start)))
        .next_back()
        .filter(|(_, v)| below(start, end_of(v)));
    let from = map
        .range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
        .take_while(move |(k, _)| below(k, end));
    before.into_iter().chain(from)
}

/// The parts of `[start, end)` outside `[cut_start, cut_end)`: none, one or two ranges.
fn minus(start: &[u8], end: &[u8], cut_start: &[u8], cut_end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut parts = Vec::new();
    if start < cut_start {
        let left_end = if below(cut_start, end) {
            cut_start
        } else {
            end
        };
        parts.push((start.to_vec(), left_end.to_vec()));
    }
    if !cut_end.is_empty() && below(cut_end, end) {
        parts.push((start.max(cut_end).to_vec(), end.to_vec()));
    }
    parts
}

impl RegionDirectory {
    /// Number of live regions.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there is no live region.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Number of stale ranges (key ranges answered with an old region), at most [`STALE_MAX`].
    pub fn stale_len(&self) -> usize {
        self.stale.len()
    }

    /// The region with this id.
    pub fn get(&self, id: u64) -> Option<&RegionInfo> {
        self.by_id.get(&id)
    }

    /// What the live regions put on `store_id`.
    pub fn tally(&self, store_id: u64) -> StoreTally {
        self.tallies.get(&store_id).copied().unwrap_or_default()
    }

    /// The region holding the encoded `key`: the live one, else, while no live region has taken
    /// the key over, the region that last covered it, as it was then (old epoch).
    pub fn get_by_key(&self, key: &[u8]) -> Option<&RegionInfo> {
        self.live_by_key(key).or_else(|| {
            let (_, stale) = self.stale.range::<[u8], _>(up_to(key)).next_back()?;
            below(key, &stale.end_key).then_some(&*stale.info)
        })
    }

    /// The live region holding the encoded `key`.
    fn live_by_key(&self, key: &[u8]) -> Option<&RegionInfo> {
        let (_, id) = self.by_start.range::<[u8], _>(up_to(key)).next_back()?;
        let info = &self.by_id[id];
        info.contains(key).then_some(info)
    }

    /// The region just before the live one holding `key` (the one ending where it starts).
    pub fn get_prev(&self, key: &[u8]) -> Option<&RegionInfo> {
        let cur = self.live_by_key(key)?;
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

    /// Up to `limit` live regions from the one holding `start` (or the first after it) whose
    /// start is below `end` (empty: +infinity), in key order.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<&RegionInfo> {
        let from = self
            .live_by_key(start)
            .map_or(start, |r| r.region.start_key.as_slice());
        self.by_start
            .range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
            .map(|(_, id)| &self.by_id[id])
            .take_while(|r| below(&r.region.start_key, end))
            .take(limit)
            .collect()
    }

    /// Every live region in key order.
    pub fn iter(&self) -> impl Iterator<Item = &RegionInfo> {
        self.by_start.values().map(|id| &self.by_id[id])
    }

    /// Ids of the live regions whose range meets `[start, end)`, in key order.
    fn live_overlapping<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = u64> + 'a {
        let end_of = |id: &'a u64| self.by_id[id].region.end_key.as_slice();
        overlapping(&self.by_start, end_of, start, end).map(|(_, id)| *id)
    }

    /// Ids of the live regions (other than `region`'s own id) whose range intersects `region`'s.
    fn overlaps(&self, region: &Region) -> Vec<u64> {
        self.live_overlapping(&region.start_key, &region.end_key)
            .filter(|id| *id != region.id)
            .collect()
    }

    /// Checks `info` against the epoch rules (live regions only) without changing anything;
    /// returns the ids of the regions it would evict.
    pub fn check(&self, info: &RegionInfo) -> Result<Vec<u64>> {
        let epoch = info.epoch();
        let stale = |reason: String| PdError::StaleRegion {
            region_id: info.region.id,
            reason,
        };
        if let Some(old) = self.by_id.get(&info.region.id) {
            if epoch::is_stale(&epoch, &old.epoch()) {
                return Err(stale(format!(
                    "epoch {:?} is stale against known {:?}",
                    epoch,
                    old.epoch()
                )));
            }
        }
        let overlaps = self.overlaps(&info.region);
        for id in &overlaps {
            let other = self.by_id[id].epoch();
            if epoch::range_is_stale(&epoch, &other) {
                return Err(stale(format!(
                    "overlaps region {id} with newer version {}",
                    other.version
                )));
            }
        }
        Ok(overlaps)
    }

    /// Inserts or replaces `info` if the epoch rules allow; returns the evicted region ids. The
    /// parts of the replaced and evicted ranges that `info` does not cover become stale.
    pub fn upsert(&mut self, info: RegionInfo) -> Result<Vec<u64>> {
        let evicted = self.check(&info)?;
        let mut replaced = Vec::with_capacity(evicted.len() + 1);
        for id in evicted.iter().chain(std::iter::once(&info.region.id)) {
            replaced.extend(self.take_live(*id));
        }
        let (start, end) = (info.region.start_key.clone(), info.region.end_key.clone());
        self.cut_stale(&start, &end);
        self.by_start.insert(start.clone(), info.region.id);
        self.count(&info, true);
        self.by_id.insert(info.region.id, info);
        self.stale_seq += 1;
        // Live ranges were disjoint, so what no longer is live of an old range is exactly what
        // the new range leaves of it.
        for old in replaced {
            let parts = minus(&old.region.start_key, &old.region.end_key, &start, &end);
            self.add_stale(parts, &Arc::new(old), self.stale_seq);
        }
        self.trim_stale();
        Ok(evicted)
    }

    /// Removes the live region `id`; its range stays as stale coverage until a region takes it.
    pub fn remove(&mut self, id: u64) -> Option<RegionInfo> {
        let info = self.take_live(id)?;
        let range = (info.region.start_key.clone(), info.region.end_key.clone());
        self.stale_seq += 1;
        self.add_stale(vec![range], &Arc::new(info.clone()), self.stale_seq);
        self.trim_stale();
        Some(info)
    }

    /// Removes the live region `id` from both indexes.
    fn take_live(&mut self, id: u64) -> Option<RegionInfo> {
        let info = self.by_id.remove(&id)?;
        self.by_start.remove(&info.region.start_key);
        self.count(&info, false);
        Some(info)
    }

    /// Adds `info`'s share to the store tallies, or takes it away.
    fn count(&mut self, info: &RegionInfo, add: bool) {
        let leader_store = info.leader.as_ref().map(|l| l.store_id);
        let mut stores: Vec<u64> = info.region.peers.iter().map(|p| p.store_id).collect();
        stores.extend(leader_store);
        stores.sort_unstable();
        stores.dedup();
        for store_id in stores {
            let peers = info
                .region
                .peers
                .iter()
                .filter(|p| p.store_id == store_id)
                .count() as u64;
            let leaders = u64::from(leader_store == Some(store_id));
            let tally = self.tallies.entry(store_id).or_default();
            tally.count(peers, leaders, peers * info.approximate_size, add);
            if *tally == StoreTally::default() {
                self.tallies.remove(&store_id);
            }
        }
    }

    /// Subtracts `[start, end)` from every stale range; a range around it splits in two.
    fn cut_stale(&mut self, start: &[u8], end: &[u8]) {
        let hit: Vec<Vec<u8>> = overlapping(&self.stale, |s| &s.end_key, start, end)
            .map(|(k, _)| k.clone())
            .collect();
        for key in hit {
            let old = self.stale.remove(&key).expect("listed as overlapping");
            self.stale_age.remove(&(old.seq, key.clone()));
            self.add_stale(minus(&key, &old.end_key, start, end), &old.info, old.seq);
        }
    }

    /// Records `parts` as stale coverage answered by `info`, gone stale at `seq`.
    fn add_stale(&mut self, parts: Vec<(Vec<u8>, Vec<u8>)>, info: &Arc<RegionInfo>, seq: u64) {
        for (start, end_key) in parts {
            debug_assert!(
                self.is_uncovered(&start, &end_key),
                "stale range {start:?}..{end_key:?} of region {} overlaps another range",
                info.region.id
            );
            self.stale_age.insert((seq, start.clone()));
            let info = info.clone();
            self.stale.insert(start, StaleRange { end_key, info, seq });
        }
    }

    /// Whether no live region and no stale range meets `[start, end)`.
    fn is_uncovered(&self, start: &[u8], end: &[u8]) -> bool {
        let mut stale = overlapping(&self.stale, |s| &s.end_key, start, end);
        stale.next().is_none() && self.live_overlapping(start, end).next().is_none()
    }

    /// Drops the oldest stale ranges past [`STALE_MAX`].
    fn trim_stale(&mut self) {
        while self.stale.len() > STALE_MAX {
            let (_, start) = self.stale_age.pop_first().expect("stale_age indexes stale");
            self.stale.remove(&start);
        }
    }
}

#[cfg(test)]
#[path = "region_dir_tests.rs"]
mod tests;
