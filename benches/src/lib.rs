//! Criterion micro-benchmarks of a store's hot paths, one `[[bench]]` target per file in this
//! directory: key codecs (`codec`), MVCC point reads (`mvcc_get`), raft-log group commit
//! (`raft_log_append`) and key-to-region lookup (`region_lookup`).
//!
//! This library holds what the benchmarks share: keys shaped like a client's, deterministic
//! pseudo-random bytes (no seed from the clock, so two runs measure the same work), and the one
//! short criterion configuration that keeps `cargo bench --bench <name>` under a minute.
//! Results and the commands that produced them are in `docs/perf.md` ("Micro-benchmarks").
//!
//! Nothing depends on this crate; it depends only on the crates it measures and criterion.
#![deny(missing_docs)]

use std::time::Duration;

use criterion::Criterion;

/// Prefix of transactional keys in keyspace `DEFAULT` (API V2: `x` + 3-byte keyspace id).
pub const TXN_PREFIX: &[u8] = b"x\0\0\0";

/// The `i`-th transactional client key, `x\0\0\0user` + 10 digits (18 bytes); keys sort as
/// their indexes do.
pub fn txn_key(i: u64) -> Vec<u8> {
    let mut key = TXN_PREFIX.to_vec();
    key.extend_from_slice(format!("user{i:010}").as_bytes());
    key
}

/// A splitmix64 generator: deterministic, fast, good enough to pick keys and fill payloads.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "empty range");
        self.next_u64() % bound
    }

    /// `len` random bytes: incompressible, as a worst case for LZ4 in the raft log.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// `count` indexes in `0..bound` in random order, for lookups that do not walk memory in
/// key order.
pub fn random_indexes(count: usize, bound: u64, seed: u64) -> Vec<u64> {
    let mut rng = SplitMix::new(seed);
    (0..count).map(|_| rng.below(bound)).collect()
}

/// The configuration of every benchmark here: 1 s of warm-up and 3 s of measurement in 20
/// samples per case. Short, so a whole bench file runs in under a minute; compare figures of
/// one run rather than across runs.
pub fn short_criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}
