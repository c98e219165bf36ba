//! Load-based split: a region whose requests or bytes per second stay above a threshold for
//! `detect_times` seconds in a row is split at a key that balances its load, chosen from the
//! keys its requests touched (TiKV's idea, this store's own code).
//!
//! Per request the cost is one relaxed atomic add on the region's counters. While a region is
//! hot (its last second was above a threshold), the key ranges of its requests are sampled
//! too: a fixed-size reservoir, so a sample is a uniform pick of the hot window's requests.
//! Once a second, [`LoadSplitter::tick`] closes the second of every region and names the
//! regions to split and where ([`split_key`]): the sampled key that leaves about as many
//! requests on its left as on its right and cuts few ranges (scans) in two. A region hot on
//! one key alone has no such key and is left whole: a split cannot share one key's load.
//!
//! Keys here are client keys, as requests carry them; the caller encodes the split key as
//! region boundaries are before asking the region to split.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// When a region is split by its load.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadSplitConfig {
    /// Split regions by load at all. Default true.
    pub enabled: bool,
    /// Requests per second that make a region hot. Default 3,000.
    pub qps_threshold: u64,
    /// Bytes (keys and values, read and written) per second that make a region hot. Default
    /// 30 MiB.
    pub byte_threshold: u64,
    /// Consecutive hot seconds before a region is split. Default 10.
    pub detect_times: u32,
    /// Request key ranges sampled per hot region. Default 128.
    pub sample_num: usize,
    /// Most a chosen key may leave its sides unequal: `|left - right| / (left + right)`.
    /// Default 0.25.
    pub balance_score_max: f64,
    /// Most of the sampled requests a chosen key may cut in two (scans across it).
    /// Default 0.5.
    pub contained_score_max: f64,
}

impl Default for LoadSplitConfig {
    fn default() -> Self {
        LoadSplitConfig {
            enabled: true,
            qps_threshold: 3_000,
            byte_threshold: 30 << 20,
            detect_times: 10,
            sample_num: 128,
            balance_score_max: 0.25,
            contained_score_max: 0.5,
        }
    }
}

impl LoadSplitConfig {
    /// Why the settings cannot work, if they cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.detect_times == 0 {
            return Err("split.detect_times must be at least 1".into());
        }
        if self.sample_num < 2 {
            return Err("split.sample_num must be at least 2".into());
        }
        if !(0.0..=1.0).contains(&self.balance_score_max)
            || !(0.0..=1.0).contains(&self.contained_score_max)
        {
            return Err("split.balance_score_max and contained_score_max lie in [0, 1]".into());
        }
        Ok(())
    }
}

/// The keys one request touched: a point key, or a scan's `[start, end)` (empty end:
/// unbounded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// One key.
    Point(Vec<u8>),
    /// A range, end exclusive.
    Range(Vec<u8>, Vec<u8>),
}

impl KeyRange {
    fn start(&self) -> &[u8] {
        match self {
            KeyRange::Point(k) | KeyRange::Range(k, _) => k,
        }
    }

    /// Where the range lies against a split at `key` (the right side starts at `key`).
    fn side(&self, key: &[u8]) -> Side {
        match self {
            KeyRange::Point(k) if k.as_slice() < key => Side::Left,
            KeyRange::Point(_) => Side::Right,
            KeyRange::Range(start, _) if start.as_slice() >= key => Side::Right,
            KeyRange::Range(_, end) if !end.is_empty() && end.as_slice() <= key => Side::Left,
            KeyRange::Range(..) => Side::Across,
        }
    }
}

enum Side {
    Left,
    Right,
    Across,
}

/// The sampled key that best balances `samples`, if one is balanced enough: at least one
/// request on each side, `|left - right| / (left + right)` at most `balance_max`, and at most
/// `contained_max` of all samples cut in two. Ties go to the lower key.
pub fn split_key(samples: &[KeyRange], balance_max: f64, contained_max: f64) -> Option<Vec<u8>> {
    let mut candidates: Vec<&[u8]> = samples.iter().map(KeyRange::start).collect();
    candidates.sort_unstable();
    candidates.dedup();
    let mut best: Option<(f64, &[u8])> = None;
    for key in candidates {
        let (mut left, mut right, mut across) = (0u64, 0u64, 0u64);
        for s in samples {
            match s.side(key) {
                Side::Left => left += 1,
                Side::Right => right += 1,
                Side::Across => across += 1,
            }
        }
        if left == 0 || right == 0 {
            continue;
        }
        let balance = left.abs_diff(right) as f64 / (left + right) as f64;
        let contained = across as f64 / samples.len() as f64;
        if balance > balance_max || contained > contained_max {
            continue;
        }
        // Both matter; an unbalanced split and one that cuts scans cost alike.
        let score = balance + contained;
        if best.is_none_or(|(b, _)| score < b) {
            best = Some((score, key));
        }
    }
    best.map(|(_, k)| k.to_vec())
}

/// One region's counters for the current second, and its hot window.
#[derive(Default)]
struct Recorder {
    requests: AtomicU64,
    bytes: AtomicU64,
    /// The last second was hot: sample the requests' keys.
    sampling: AtomicBool,
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    hot_secs: u32,
    samples: Vec<KeyRange>,
    /// Ranges offered to the reservoir in this window.
    offered: u64,
    /// xorshift state for the reservoir's picks.
    rng: u64,
}

impl Window {
    fn offer(&mut self, range: KeyRange, cap: usize) {
        self.offered += 1;
        if self.samples.len() < cap {
            self.samples.push(range);
            return;
        }
        // Reservoir sampling: the n-th range replaces a sample with probability cap / n.
        let mut x = self.rng.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        let slot = x % self.offered;
        if let Some(s) = self.samples.get_mut(slot as usize) {
            *s = range;
        }
    }

    fn reset(&mut self) {
        self.hot_secs = 0;
        self.samples.clear();
        self.offered = 0;
    }
}

/// The load of every region this store serves, and the split decisions taken from it.
pub struct LoadSplitter {
    cfg: LoadSplitConfig,
    regions: DashMap<u64, Recorder>,
}

impl std::fmt::Debug for LoadSplitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadSplitter")
            .field("cfg", &self.cfg)
            .field("regions", &self.regions.len())
            .finish()
    }
}

impl LoadSplitter {
    /// A splitter with `cfg`.
    pub fn new(cfg: LoadSplitConfig) -> Self {
        LoadSplitter {
            cfg,
            regions: DashMap::new(),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &LoadSplitConfig {
        &self.cfg
    }

    fn with_region(&self, region_id: u64, f: impl FnOnce(&Recorder)) {
        if let Some(r) = self.regions.get(&region_id) {
            return f(&r);
        }
        f(&self.regions.entry(region_id).or_default());
    }

    /// Counts one request on `region_id`; `ranges` gives its keys, asked for only while the
    /// region is hot.
    pub fn on_request<I: IntoIterator<Item = KeyRange>>(
        &self,
        region_id: u64,
        ranges: impl FnOnce() -> I,
    ) {
        if !self.cfg.enabled || region_id == 0 {
            return;
        }
        self.with_region(region_id, |r| {
            r.requests.fetch_add(1, Ordering::Relaxed);
            if r.sampling.load(Ordering::Relaxed) {
                let mut w = r.window.lock();
                for range in ranges() {
                    w.offer(range, self.cfg.sample_num);
                }
            }
        });
    }

    /// Counts `bytes` read or written on `region_id`.
    pub fn on_bytes(&self, region_id: u64, bytes: u64) {
        if !self.cfg.enabled || region_id == 0 || bytes == 0 {
            return;
        }
        self.with_region(region_id, |r| {
            r.bytes.fetch_add(bytes, Ordering::Relaxed);
        });
    }

    /// Closes the current second of every region: the regions hot for `detect_times` seconds
    /// with a balancing key, and that key (a client key). A region split by this answer starts
    /// a new window; one idle for a second is forgotten.
    pub fn tick(&self) -> Vec<(u64, Vec<u8>)> {
        let mut splits = Vec::new();
        self.regions.retain(|&region_id, r| {
            let requests = r.requests.swap(0, Ordering::Relaxed);
            let bytes = r.bytes.swap(0, Ordering::Relaxed);
            let hot = requests >= self.cfg.qps_threshold || bytes >= self.cfg.byte_threshold;
            let mut w = r.window.lock();
            if !hot {
                r.sampling.store(false, Ordering::Relaxed);
                w.reset();
                return requests > 0 || bytes > 0;
            }
            if w.rng == 0 {
                w.rng = region_id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            }
            r.sampling.store(true, Ordering::Relaxed);
            w.hot_secs += 1;
            // The first hot second is counted, not sampled: detect_times seconds of samples
            // need one more.
            if w.hot_secs > self.cfg.detect_times {
                let key = split_key(
                    &w.samples,
                    self.cfg.balance_score_max,
                    self.cfg.contained_score_max,
                );
                if let Some(key) = key {
                    splits.push((region_id, key));
                }
                // Balanced or not, the next decision comes from a fresh window.
                w.reset();
            }
            true
        });
        splits
    }

    /// Number of regions with counters.
    #[cfg(test)]
    fn region_count(&self) -> usize {
        self.regions.len()
    }
}

/// Closes each second of `flow`'s load and asks the regions it names to split, until
/// `shutdown`.
pub(crate) async fn run(
    flow: std::sync::Arc<crate::flow::FlowMeter>,
    router: raftstore::RaftRouter,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if !flow.load.config().enabled {
        return;
    }
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        for (region_id, key) in flow.load.tick() {
            tracing::info!(region_id, key = ?key, "load-based split");
            crate::metrics::LOAD_SPLITS.inc();
            // Region boundaries are encoded client keys; a key outside the region or at its
            // start is dropped by the region, as any split request is.
            let encoded = codec::memcomparable::encode_bytes(&key);
            router.split_region(region_id, vec![encoded]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(k: &str) -> KeyRange {
        KeyRange::Point(k.as_bytes().to_vec())
    }

    fn range(s: &str, e: &str) -> KeyRange {
        KeyRange::Range(s.as_bytes().to_vec(), e.as_bytes().to_vec())
    }

    fn key(i: usize) -> String {
        format!("k{i:03}")
    }

    #[test]
    fn a_uniformly_hot_range_splits_near_its_middle() {
        let samples: Vec<KeyRange> = (0..100).map(|i| point(&key(i))).collect();
        let k = split_key(&samples, 0.25, 0.5).expect("a key");
        let k = String::from_utf8(k).unwrap();
        // Keys below k on the left: 50 of 100 is perfect; the best pick is exactly that.
        assert_eq!(k, key(50));
    }

    #[test]
    fn a_skewed_load_splits_where_the_requests_are_not_where_the_keys_are() {
        // 90 requests on k000..k009 (9 each), 10 on k010..k099.
        let mut samples = Vec::new();
        for i in 0..10 {
            for _ in 0..9 {
                samples.push(point(&key(i)));
            }
        }
        samples.extend((10..100).step_by(9).map(|i| point(&key(i))));
        let k = String::from_utf8(split_key(&samples, 0.25, 0.5).unwrap()).unwrap();
        assert!(k.as_str() > "k003" && k.as_str() <= "k007", "{k}");
    }

    #[test]
    fn a_single_hot_key_is_not_split() {
        let samples = vec![point("hot"); 100];
        assert_eq!(split_key(&samples, 0.25, 0.5), None);
        // Nor when a few other keys are touched: no key balances the load.
        let mut samples = vec![point("hot"); 95];
        samples.extend(["a", "b", "y", "z", "zz"].map(point));
        assert_eq!(split_key(&samples, 0.25, 0.5), None);
    }

    #[test]
    fn scans_across_a_key_count_against_it() {
        // Every request scans [a, z): any split cuts them all.
        let samples = vec![range("a", "z"); 50];
        assert_eq!(split_key(&samples, 0.25, 0.5), None);
        // Scans [a, c) and [m, p): the split falls between them, at m.
        let mut samples = vec![range("a", "c"); 20];
        samples.extend(vec![range("m", "p"); 20]);
        assert_eq!(split_key(&samples, 0.25, 0.5), Some(b"m".to_vec()));
        // An unbounded scan is right of any key at or below its start, across the others.
        assert!(matches!(
            KeyRange::Range(b"m".to_vec(), vec![]).side(b"x"),
            Side::Across
        ));
        assert!(matches!(
            KeyRange::Range(b"m".to_vec(), vec![]).side(b"m"),
            Side::Right
        ));
    }

    #[test]
    fn an_imbalance_beyond_the_bound_is_refused() {
        // Two keys, 3:1: the only split leaves 0.5 imbalance.
        let samples = vec![point("a"), point("a"), point("a"), point("b")];
        assert_eq!(split_key(&samples, 0.25, 0.5), None);
        assert_eq!(split_key(&samples, 0.5, 0.5), Some(b"b".to_vec()));
    }

    fn cfg(detect_times: u32) -> LoadSplitConfig {
        LoadSplitConfig {
            qps_threshold: 10,
            detect_times,
            sample_num: 32,
            ..Default::default()
        }
    }

    /// One second of `n` requests on `region` spread over k000..k099.
    fn second(s: &LoadSplitter, region: u64, n: usize) -> Vec<(u64, Vec<u8>)> {
        for i in 0..n {
            s.on_request(region, || [point(&key(i * 7 % 100))]);
        }
        s.tick()
    }

    #[test]
    fn a_region_hot_for_detect_times_seconds_is_split_once() {
        let s = LoadSplitter::new(cfg(3));
        // The first hot second only turns sampling on; three sampled seconds follow.
        for _ in 0..3 {
            assert_eq!(second(&s, 7, 200), vec![]);
        }
        let splits = second(&s, 7, 200);
        assert_eq!(splits.len(), 1, "{splits:?}");
        let (region, k) = &splits[0];
        assert_eq!(*region, 7);
        let k = String::from_utf8(k.clone()).unwrap();
        assert!(k.as_str() > "k030" && k.as_str() < "k070", "{k}");
        // A new window: not split again at once.
        assert_eq!(second(&s, 7, 200), vec![]);
    }

    #[test]
    fn a_cool_second_restarts_the_count_and_an_idle_region_is_forgotten() {
        let s = LoadSplitter::new(cfg(2));
        assert_eq!(second(&s, 7, 200), vec![]);
        assert_eq!(second(&s, 7, 200), vec![]);
        // Below the threshold: the window starts over.
        assert_eq!(second(&s, 7, 5), vec![]);
        assert_eq!(second(&s, 7, 200), vec![]);
        assert_eq!(second(&s, 7, 200), vec![]);
        assert_eq!(second(&s, 7, 200).len(), 1);
        assert_eq!(s.region_count(), 1);
        assert_eq!(second(&s, 7, 0), vec![]);
        assert_eq!(s.region_count(), 0);
    }

    #[test]
    fn bytes_alone_make_a_region_hot_and_disabled_counts_nothing() {
        let s = LoadSplitter::new(LoadSplitConfig {
            byte_threshold: 1_000,
            ..cfg(1)
        });
        let mut splits = Vec::new();
        for _ in 0..2 {
            s.on_bytes(3, 2_000);
            for i in 0..4 {
                s.on_request(3, || [point(&key(i * 25))]);
            }
            splits.push(s.tick());
        }
        // Hot on bytes (4 requests a second, below 10): counted the first second, split the
        // second, between the sampled keys.
        assert_eq!(splits, vec![vec![], vec![(3, key(50).into_bytes())]]);
        let off = LoadSplitter::new(LoadSplitConfig {
            enabled: false,
            ..cfg(1)
        });
        off.on_request(3, || [point("a")]);
        off.on_bytes(3, 1 << 30);
        assert_eq!((off.tick(), off.region_count()), (vec![], 0));
    }

    #[test]
    fn samples_are_bounded_whatever_the_load() {
        let mut w = Window {
            rng: 1,
            ..Default::default()
        };
        for i in 0..10_000 {
            w.offer(point(&format!("{i:05}")), 16);
        }
        assert_eq!((w.samples.len(), w.offered), (16, 10_000));
        // The reservoir kept a spread, not only the first keys.
        assert!(w.samples.iter().any(|s| s.start() > b"05000".as_slice()));
    }
}
