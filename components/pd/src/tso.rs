//! The timestamp oracle: `physical_ms << 18 | logical`, strictly increasing, also across
//! restarts. [`TsoState`] is the pure allocator (the caller passes the clock in); [`Tso`]
//! persists the window's upper bound before any timestamp below it is handed out.

use std::sync::Arc;

use proto::pdpb::Timestamp;

use crate::meta_store::MetaStore;
use crate::{PdError, Result, TSO_COUNT_MAX};

/// Bits of the logical part of a timestamp.
pub const LOGICAL_BITS: u32 = 18;
const LOGICAL_MAX: u64 = (1 << LOGICAL_BITS) - 1;
const TSO_KEY: &[u8] = b"meta/tso_saved_ms";

/// Composes a `u64` timestamp from its parts.
pub fn compose_ts(physical_ms: u64, logical: u64) -> u64 {
    (physical_ms << LOGICAL_BITS) | logical
}

/// Pure TSO allocator: the last timestamp handed out and the persisted bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsoState {
    physical_ms: u64,
    logical: u64,
    saved_ms: u64,
}

/// One allocation: the last timestamp of the window, and the bound to persist first (if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsoAlloc {
    /// Physical part of the last allocated timestamp.
    pub physical_ms: u64,
    /// Logical part of the last allocated timestamp; the window is `logical - count + 1..=logical`.
    pub logical: u64,
    /// New upper bound (ms) to persist before handing the window out.
    pub persist_ms: Option<u64>,
}

impl TsoState {
    /// State after a (re)start with `saved_ms` persisted: every new timestamp is above it.
    pub fn recover(saved_ms: u64) -> Self {
        TsoState {
            physical_ms: saved_ms,
            logical: LOGICAL_MAX,
            saved_ms,
        }
    }

    /// Plans `count` timestamps at wall clock `now_ms`; [`TsoState::commit`] applies it.
    pub fn plan(&self, now_ms: u64, count: u32, window_ms: u64) -> Result<TsoAlloc> {
        if count == 0 || count > TSO_COUNT_MAX {
            return Err(PdError::InvalidValue(format!("tso count {count}")));
        }
        let count = u64::from(count);
        let (mut physical_ms, mut logical) = if now_ms > self.physical_ms {
            (now_ms, count)
        } else {
            (self.physical_ms, self.logical + count)
        };
        if logical > LOGICAL_MAX {
            // The logical part would overflow: move physical forward rather than wrap.
            physical_ms += 1;
            logical = count;
        }
        let persist_ms = (physical_ms >= self.saved_ms).then(|| physical_ms + window_ms);
        Ok(TsoAlloc {
            physical_ms,
            logical,
            persist_ms,
        })
    }

    /// Applies a planned allocation once its bound (if any) is durable.
    pub fn commit(&mut self, alloc: &TsoAlloc) {
        let new = compose_ts(alloc.physical_ms, alloc.logical);
        assert!(
            new > compose_ts(self.physical_ms, self.logical),
            "tso went back: {self:?} -> {alloc:?}"
        );
        self.physical_ms = alloc.physical_ms;
        self.logical = alloc.logical;
        if let Some(saved) = alloc.persist_ms {
            self.saved_ms = saved;
        }
    }
}

/// The persisted timestamp oracle.
pub struct Tso {
    state: parking_lot::Mutex<TsoState>,
    store: Arc<dyn MetaStore>,
    window_ms: u64,
}

impl Tso {
    /// Loads the saved bound from `store`.
    pub fn load(store: Arc<dyn MetaStore>, window_ms: u64) -> Result<Self> {
        let saved_ms = match store.get(TSO_KEY)? {
            Some(v) => decode_u64(&v)?,
            None => 0,
        };
        Ok(Tso {
            state: parking_lot::Mutex::new(TsoState::recover(saved_ms)),
            store,
            window_ms,
        })
    }

    /// Allocates `count` timestamps at `now_ms`; returns the last one.
    pub fn alloc(&self, now_ms: u64, count: u32) -> Result<Timestamp> {
        let mut state = self.state.lock();
        let alloc = state.plan(now_ms, count, self.window_ms)?;
        if let Some(bound) = alloc.persist_ms {
            self.store
                .write(&[(TSO_KEY.to_vec(), bound.to_be_bytes().to_vec())])?;
        }
        state.commit(&alloc);
        Ok(Timestamp {
            physical: alloc.physical_ms as i64,
            logical: alloc.logical as i64,
            suffix_bits: 0,
        })
    }
}

/// Decodes a persisted big-endian u64.
pub(crate) fn decode_u64(v: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = v
        .try_into()
        .map_err(|_| PdError::Corrupted(format!("bad u64 of {} bytes", v.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta_store::MemMetaStore;

    fn ts(t: &Timestamp) -> u64 {
        compose_ts(t.physical as u64, t.logical as u64)
    }

    #[test]
    fn monotonic_with_clock_going_back() {
        let tso = Tso::load(Arc::new(MemMetaStore::default()), 3000).unwrap();
        let mut last = 0;
        for now in [100, 100, 99, 50, 101, 101, 200, 10] {
            let t = tso.alloc(now, 3).unwrap();
            assert!(ts(&t) > last, "{t:?}");
            assert!(t.logical >= 3);
            last = ts(&t);
        }
    }

    #[test]
    fn logical_overflow_advances_physical() {
        let mut s = TsoState::recover(0);
        let a = s.plan(10, TSO_COUNT_MAX, 3000).unwrap();
        s.commit(&a);
        assert_eq!((a.physical_ms, a.logical), (10, LOGICAL_MAX));
        let b = s.plan(10, 2, 3000).unwrap();
        assert_eq!((b.physical_ms, b.logical), (11, 2));
        assert!(s.plan(10, 0, 3000).is_err());
        assert!(s.plan(10, TSO_COUNT_MAX + 1, 3000).is_err());
    }

    #[test]
    fn persists_window_before_use() {
        let mut s = TsoState::recover(0);
        let a = s.plan(1000, 1, 3000).unwrap();
        assert_eq!(a.persist_ms, Some(4000));
        s.commit(&a);
        assert_eq!(s.plan(3999, 1, 3000).unwrap().persist_ms, None);
        assert_eq!(s.plan(4000, 1, 3000).unwrap().persist_ms, Some(7000));
    }

    #[test]
    fn restart_starts_above_saved_bound() {
        let store: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
        let before = {
            let tso = Tso::load(store.clone(), 3000).unwrap();
            tso.alloc(5000, 10).unwrap()
        };
        // The clock went back a lot across the restart.
        let tso = Tso::load(store, 3000).unwrap();
        let after = tso.alloc(10, 1).unwrap();
        assert!(ts(&after) > ts(&before));
        assert!(after.physical as u64 > 8000);
    }
}
