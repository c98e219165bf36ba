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
        if count == 0 || count > ID_ALLOC_COUNT_MAX {
            return Err(PdError::InvalidValue(format!("id count {count}")));
        }
        let mut range = self.range.lock();
        if range.next + count > range.end {
            let new_end = range.next + count + self.batch;
            self.store
                .write(&[(ALLOC_KEY.to_vec(), new_end.to_be_bytes().to_vec())])?;
            range.end = new_end;
        }
        let ids = range.next..range.next + count;
        range.next += count;
        Ok(ids)
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
}
