//! A seeded generator of list-append transaction templates.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::history::Op;

/// Appends a key receives before the generator retires it for a fresh one (as Elle does), so
/// that lists, and the reads that return them, stay short.
pub const APPENDS_PER_KEY_DEFAULT: u64 = 32;

/// Yields transaction templates: 1..=`max_ops_per_txn` ops over `keys` active keys, half reads
/// (`values: None`, for the driver to fill in) and half appends of values unique in the whole
/// run (a global counter from 1). The same seed yields the same templates.
#[derive(Debug, Clone)]
pub struct ListAppendGen {
    rng: ChaCha8Rng,
    max_ops_per_txn: usize,
    appends_per_key_max: u64,
    active: Vec<u64>,
    appends: HashMap<u64, u64>,
    next_key: u64,
    next_value: u64,
}

impl ListAppendGen {
    /// A generator over `keys` keys at a time. Panics if `keys` or `max_ops_per_txn` is 0.
    pub fn new(seed: u64, keys: u64, max_ops_per_txn: usize) -> ListAppendGen {
        assert!(keys > 0, "a list-append workload needs at least one key");
        assert!(max_ops_per_txn > 0, "a transaction needs at least one op");
        ListAppendGen {
            rng: ChaCha8Rng::seed_from_u64(seed),
            max_ops_per_txn,
            appends_per_key_max: APPENDS_PER_KEY_DEFAULT,
            active: (0..keys).collect(),
            appends: HashMap::new(),
            next_key: keys,
            next_value: 1,
        }
    }

    /// Retires a key after `n` appends (default [`APPENDS_PER_KEY_DEFAULT`]); `u64::MAX` never
    /// retires keys. Panics if `n` is 0.
    pub fn with_appends_per_key_max(mut self, n: u64) -> ListAppendGen {
        assert!(n > 0, "keys must take at least one append");
        self.appends_per_key_max = n;
        self
    }

    /// The next template.
    pub fn next_ops(&mut self) -> Vec<Op> {
        let n = self.rng.gen_range(1..=self.max_ops_per_txn);
        (0..n)
            .map(|_| {
                let slot = self.rng.gen_range(0..self.active.len());
                let key = self.active[slot];
                if self.rng.gen_bool(0.5) {
                    return Op::read(key);
                }
                let value = self.next_value;
                self.next_value += 1;
                let count = self.appends.entry(key).or_default();
                *count += 1;
                if *count >= self.appends_per_key_max {
                    self.appends.remove(&key);
                    self.active[slot] = self.next_key;
                    self.next_key += 1;
                }
                Op::append(key, value)
            })
            .collect()
    }
}

impl Iterator for ListAppendGen {
    type Item = Vec<Op>;

    fn next(&mut self) -> Option<Vec<Op>> {
        Some(self.next_ops())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn same_seed_same_templates_and_values_unique() {
        let a: Vec<_> = ListAppendGen::new(7, 3, 4).take(200).collect();
        let b: Vec<_> = ListAppendGen::new(7, 3, 4).take(200).collect();
        assert_eq!(a, b);
        assert_ne!(a, ListAppendGen::new(8, 3, 4).take(200).collect::<Vec<_>>());
        let mut seen = HashSet::new();
        for op in a.iter().flatten() {
            match op {
                Op::Append { value, .. } => assert!(seen.insert(*value)),
                Op::Read { values, .. } => assert!(values.is_none()),
            }
        }
        assert!(a.iter().all(|t| (1..=4).contains(&t.len())));
    }

    #[test]
    fn keys_retire_after_their_appends() {
        let mut g = ListAppendGen::new(1, 2, 3).with_appends_per_key_max(5);
        let mut per_key: HashMap<u64, u64> = HashMap::new();
        for op in g.by_ref().take(500).flatten() {
            if let Op::Append { key, .. } = op {
                *per_key.entry(key).or_default() += 1;
            }
        }
        assert!(per_key.values().all(|&n| n <= 5));
        assert!(per_key.len() > 20, "fresh keys replace retired ones");
        assert_eq!(g.active.len(), 2);
    }
}
