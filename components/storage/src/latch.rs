//! Per-key latches: commands touching the same key on one store run one at a time.
//!
//! Keys hash into a fixed number of slots (bounded memory); a command takes the slots of all
//! its keys in ascending slot order, so two commands can never wait on each other in a cycle.
//! Two keys sharing a slot only serialize more than needed.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

/// A fixed table of async mutexes, one per slot.
pub struct Latches {
    slots: Vec<Arc<Mutex<()>>>,
}

/// Holds the latches of one command; they are released when it drops.
#[must_use = "the latches are released when the guard drops"]
pub struct LatchGuard {
    _guards: Vec<OwnedMutexGuard<()>>,
}

impl Latches {
    /// A table of `slot_count` slots (at least one).
    pub fn new(slot_count: usize) -> Latches {
        assert!(slot_count > 0, "latch table needs at least one slot");
        Latches {
            slots: (0..slot_count).map(|_| Arc::new(Mutex::new(()))).collect(),
        }
    }

    /// The slots of `keys`, sorted and deduplicated: the order they are taken in.
    pub fn slot_ids<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<usize> {
        let mut ids: Vec<usize> = keys
            .iter()
            .map(|k| {
                let mut h = DefaultHasher::new();
                k.as_ref().hash(&mut h);
                (h.finish() % self.slots.len() as u64) as usize
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Waits until every key's slot is free and takes them all.
    pub async fn acquire<K: AsRef<[u8]>>(&self, keys: &[K]) -> LatchGuard {
        let ids = self.slot_ids(keys);
        let mut guards = Vec::with_capacity(ids.len());
        for id in ids {
            guards.push(self.slots[id].clone().lock_owned().await);
        }
        LatchGuard { _guards: guards }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn same_key_waits_other_key_does_not() {
        let latches = Arc::new(Latches::new(64));
        let g = latches.acquire(&[b"a".as_slice()]).await;
        let l2 = latches.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.acquire(&[b"a".as_slice()]).await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        // A key in another slot is not blocked.
        let other = (0u32..)
            .map(|i| i.to_be_bytes().to_vec())
            .find(|k| latches.slot_ids(&[k]) != latches.slot_ids(&[b"a"]))
            .unwrap();
        let _g2 = latches.acquire(&[other]).await;
        drop(g);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn slot_ids_sorted_and_deduplicated() {
        let latches = Latches::new(4);
        let ids = latches.slot_ids(&[b"a", b"a", b"b", b"c", b"d", b"e"]);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
