//! Network faults a chaos test injects into a running store: the store drops every raft
//! message to or from the stores it is told to cut off, in both directions (sending side in
//! [`crate::transport`], receiving side in [`crate::raft_service`]). Client traffic and PD
//! heartbeats are not touched, as in a partition between the stores' replication network.
//!
//! Only reachable when the store runs with `fault_injection = true`
//! (`POST /debug/fault/partition` on the status port); a production store refuses it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

/// The set of stores whose raft traffic this store drops. Cheap to check when empty.
#[derive(Debug, Default)]
pub struct RaftPartition {
    any: AtomicBool,
    blocked: RwLock<BTreeSet<u64>>,
}

impl RaftPartition {
    /// Whether raft messages to or from `store_id` are dropped.
    pub fn blocks(&self, store_id: u64) -> bool {
        self.any.load(Ordering::Relaxed) && self.blocked.read().contains(&store_id)
    }

    /// Replaces the blocked set (empty: heal).
    pub fn set(&self, stores: impl IntoIterator<Item = u64>) {
        let mut blocked = self.blocked.write();
        *blocked = stores.into_iter().collect();
        self.any.store(!blocked.is_empty(), Ordering::Relaxed);
    }

    /// The blocked stores, ascending.
    pub fn blocked(&self) -> Vec<u64> {
        self.blocked.read().iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_only_the_listed_stores_until_healed() {
        let p = RaftPartition::default();
        assert!(!p.blocks(2));
        p.set([2, 3]);
        assert!(p.blocks(2) && p.blocks(3) && !p.blocks(1));
        assert_eq!(p.blocked(), vec![2, 3]);
        p.set([]);
        assert!(!p.blocks(2));
    }
}
