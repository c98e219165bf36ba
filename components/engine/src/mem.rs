//! [`MemEngine`]: the in-memory twin of the RocksDB engine, for tests.

use std::collections::BTreeMap;
use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::{
    check_cf, CfName, EngineError, EngineIterator, EngineSnapshot, KvEngine, Modify, Result,
    WriteBatch, ALL_CFS,
};

type CfMap = BTreeMap<Vec<u8>, Vec<u8>>;

/// One ordered map per column family, indexed like [`ALL_CFS`].
#[derive(Clone, Default)]
struct CfMaps([CfMap; 4]);

impl CfMaps {
    fn cf(&self, cf: &str) -> Result<&CfMap> {
        Ok(&self.0[cf_index(cf)?])
    }

    fn cf_mut(&mut self, cf: &str) -> Result<&mut CfMap> {
        Ok(&mut self.0[cf_index(cf)?])
    }
}

fn cf_index(cf: &str) -> Result<usize> {
    ALL_CFS
        .iter()
        .position(|name| *name == cf)
        .ok_or_else(|| EngineError::UnknownCf(cf.to_owned()))
}

/// An engine that keeps every CF in a `BTreeMap` behind a lock. Snapshots copy the maps, which
/// is fine for tests and nothing else. Cloning shares the data.
#[derive(Clone, Default)]
pub struct MemEngine {
    maps: Arc<RwLock<CfMaps>>,
}

impl MemEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }
}

fn apply(maps: &mut CfMaps, modify: &Modify) -> Result<()> {
    match modify {
        Modify::Put { cf, key, value } => {
            maps.cf_mut(cf)?.insert(key.clone(), value.clone());
        }
        Modify::Delete { cf, key } => {
            maps.cf_mut(cf)?.remove(key);
        }
        Modify::DeleteRange { cf, start, end } => {
            let map = maps.cf_mut(cf)?;
            let mut tail = map.split_off(start.as_slice());
            let mut kept = tail.split_off(end.as_slice());
            map.append(&mut kept);
        }
    }
    Ok(())
}

impl KvEngine for MemEngine {
    fn get_cf(&self, cf: CfName, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.maps.read().cf(cf)?.get(key).cloned())
    }

    fn write(&self, batch: &WriteBatch, _sync: bool) -> Result<()> {
        // Validate first so that a bad batch changes nothing (atomicity).
        for modify in batch {
            check_cf(modify.cf())?;
        }
        let mut maps = self.maps.write();
        for modify in batch {
            apply(&mut maps, modify)?;
        }
        Ok(())
    }

    fn snapshot(&self) -> Arc<dyn EngineSnapshot> {
        Arc::new(MemSnapshot {
            maps: self.maps.read().clone(),
        })
    }

    fn sync_wal(&self) -> Result<()> {
        Ok(())
    }

    fn approximate_size_and_keys(
        &self,
        cf: CfName,
        start: &[u8],
        end: &[u8],
    ) -> Result<(u64, u64)> {
        let maps = self.maps.read();
        let map = maps.cf(cf)?;
        let hi = if end.is_empty() {
            Unbounded
        } else {
            Excluded(end)
        };
        if range_is_empty(Included(start), hi) {
            return Ok((0, 0));
        }
        let (size, keys) = map
            .range::<[u8], _>((Included(start), hi))
            .fold((0u64, 0u64), |(size, keys), (k, v)| {
                (size + (k.len() + v.len()) as u64, keys + 1)
            });
        Ok((size, keys))
    }
}

/// A full copy of the maps at snapshot time.
struct MemSnapshot {
    maps: CfMaps,
}

impl EngineSnapshot for MemSnapshot {
    fn get_cf(&self, cf: CfName, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.maps.cf(cf)?.get(key).cloned())
    }

    fn iter_cf(
        &self,
        cf: CfName,
        lower: &[u8],
        upper: Option<&[u8]>,
    ) -> Result<Box<dyn EngineIterator + '_>> {
        Ok(Box::new(MemIterator::new(self.maps.cf(cf)?, lower, upper)))
    }
}

struct MemIterator<'a> {
    map: &'a CfMap,
    lower: Vec<u8>,
    upper: Option<Vec<u8>>,
    cur: Option<(&'a [u8], &'a [u8])>,
}

/// Whether `(lo, hi)` holds no key; `BTreeMap::range` panics on such ranges.
fn range_is_empty(lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    match (lo, hi) {
        (Unbounded, _) | (_, Unbounded) => false,
        (Included(a), Included(b)) => a > b,
        (Included(a) | Excluded(a), Excluded(b)) | (Excluded(a), Included(b)) => a >= b,
    }
}

impl<'a> MemIterator<'a> {
    fn new(map: &'a CfMap, lower: &[u8], upper: Option<&[u8]>) -> Self {
        MemIterator {
            map,
            lower: lower.to_vec(),
            upper: upper.map(<[u8]>::to_vec),
            cur: None,
        }
    }

    fn upper(&self) -> Bound<&[u8]> {
        self.upper.as_deref().map_or(Unbounded, Excluded)
    }

    /// The first (or, with `back`, last) entry in `(lo, hi)`.
    fn first_in(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        back: bool,
    ) -> Option<(&'a [u8], &'a [u8])> {
        if range_is_empty(lo, hi) {
            return None;
        }
        let mut range = self.map.range::<[u8], _>((lo, hi));
        let entry = if back {
            range.next_back()
        } else {
            range.next()
        };
        entry.map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    fn set(&mut self, cur: Option<(&'a [u8], &'a [u8])>) -> Result<bool> {
        self.cur = cur;
        Ok(cur.is_some())
    }

    fn current(&self) -> (&'a [u8], &'a [u8]) {
        self.cur.expect("iterator is not valid")
    }
}

impl EngineIterator for MemIterator<'_> {
    fn seek(&mut self, key: &[u8]) -> Result<bool> {
        let start = key.max(self.lower.as_slice());
        self.set(self.first_in(Included(start), self.upper(), false))
    }

    fn seek_for_prev(&mut self, key: &[u8]) -> Result<bool> {
        let hi = match self.upper.as_deref() {
            Some(upper) if key >= upper => Excluded(upper),
            _ => Included(key),
        };
        self.set(self.first_in(Included(self.lower.as_slice()), hi, true))
    }

    fn seek_to_first(&mut self) -> Result<bool> {
        self.set(self.first_in(Included(self.lower.as_slice()), self.upper(), false))
    }

    fn seek_to_last(&mut self) -> Result<bool> {
        self.set(self.first_in(Included(self.lower.as_slice()), self.upper(), true))
    }

    fn next(&mut self) -> Result<bool> {
        let (key, _) = self.current();
        self.set(self.first_in(Excluded(key), self.upper(), false))
    }

    fn prev(&mut self) -> Result<bool> {
        let (key, _) = self.current();
        self.set(self.first_in(Included(self.lower.as_slice()), Excluded(key), true))
    }

    fn valid(&self) -> bool {
        self.cur.is_some()
    }

    fn key(&self) -> &[u8] {
        self.current().0
    }

    fn value(&self) -> &[u8] {
        self.current().1
    }
}
