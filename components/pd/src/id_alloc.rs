//! The id allocator: ids for stores, regions and peers, unique for the cluster's lifetime.
//! Ids are reserved in persisted batches: the new upper bound is durable before any id below
//! it is handed out, so a restart resumes at the bound and never repeats an id.

use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::meta_store::MetaStore;
use crate::tso::decode_u64;
use crate::{PdError, Result};

const ALLOC_KEY: &[u8] = b"meta/alloc_id_end";

/// Largest number of ids one call may take.
pub const ID_ALLOC_COUNT_MAX: u64 = 1 << 20;

struct IdRange {
    next: u64,
    end: u64,
}

/// Persisted, batched id allocator. Ids start at 1.
pub struct IdAllocator {
    range: Mutex<IdRange>,
    store: Arc<dyn MetaStore>,
    batch: u64,
}

impl IdAllocator {
    /// Loads the persisted bound; the next id is the bound (or 1 on a fresh cluster).
    pub fn load(store: Arc<dyn MetaStore>, batch: u64) -> Result<Self> {
        let end = match store.get(ALLOC_KEY)? {
            Some(v) => decode_u64(&v)?,
            None => 1,
        };
        let end = end.max(1);
        Ok(IdAllocator {
            range: Mutex::new(IdRange { next: end, end }),
            store,
            batch,
        })
    }

    /// One new id.
    pub fn alloc(&self) -> Result<u64> {
        Ok(self.alloc_many(1)?.start)
    }

    /// `count` consecutive new ids.
    pub fn alloc_many(&self, count: u64) -> Result<Range<u64>> {
        let mut range = self.range.lock();
        self.extend(&mut range, count)?;
        Ok(Self::take(&mut range, count))
    }

    /// Makes sure `count` ids lie below the persisted bound (persisting a new bound if not), so
    /// that [`IdAllocator::alloc_reserved`] can hand them out without a write. The write
    /// happens under the allocator's own lock only: callers holding a lock of their own reserve
    /// first and take later.
    pub fn reserve(&self, count: u64) -> Result<()> {
        self.extend(&mut self.range.lock(), count)
    }

    /// `count` new ids if they lie below the persisted bound; None, taking nothing, when a
    /// write would be needed (see [`IdAllocator::reserve`]).
    pub fn alloc_reserved(&self, count: u64) -> Option<Range<u64>> {
        let mut range = self.range.lock();
        (count > 0 && range.next + count <= range.end).then(|| Self::take(&mut range, count))
    }

    /// Persists a new bound unless `count` ids lie below the current one.
    fn extend(&self, range: &mut IdRange, count: u64) -> Result<()> {
        if count == 0 || count > ID_ALLOC_COUNT_MAX {
            return Err(PdError::InvalidValue(format!("id count {count}")));
        }
        if range.next + count > range.end {
            let new_end = range.next + count + self.batch;
            self.store
                .write(&[(ALLOC_KEY.to_vec(), new_end.to_be_bytes().to_vec())])?;
            range.end = new_end;
        }
        Ok(())
    }

    fn take(range: &mut IdRange, count: u64) -> Range<u64> {
        let ids = range.next..range.next + count;
        range.next += count;
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta_store::MemMetaStore;

    #[test]
    fn ids_are_unique_across_restart() {
        let store: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
        let a = IdAllocator::load(store.clone(), 10).unwrap();
        assert_eq!(a.alloc().unwrap(), 1);
        let many = a.alloc_many(25).unwrap();
        assert_eq!(many, 2..27);
        let last = a.alloc().unwrap();
        drop(a);
        let b = IdAllocator::load(store, 10).unwrap();
        let after = b.alloc().unwrap();
        assert!(after > last, "{after} <= {last}");
        assert!(b.alloc_many(0).is_err());
    }

    #[test]
    fn reserved_ids_are_handed_out_without_a_write() {
        let store: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
        let a = IdAllocator::load(store.clone(), 3).unwrap();
        assert_eq!(
            a.alloc_reserved(1),
            None,
            "nothing reserved on a fresh cluster"
        );
        a.reserve(2).unwrap();
        let bound = store.get(ALLOC_KEY).unwrap();
        assert_eq!(a.alloc_reserved(6), None, "the batch holds 5");
        assert_eq!(a.alloc_reserved(2), Some(1..3));
        assert_eq!(a.alloc_reserved(3), Some(3..6));
        assert_eq!(store.get(ALLOC_KEY).unwrap(), bound, "no write");
        assert_eq!(a.alloc_reserved(1), None);
        a.reserve(1).unwrap();
        assert_eq!(a.alloc_reserved(1), Some(6..7));
        // Reserved ids are below a persisted bound: a restart never repeats them.
        let b = IdAllocator::load(store, 3).unwrap();
        assert!(b.alloc().unwrap() >= 7);
    }
}
