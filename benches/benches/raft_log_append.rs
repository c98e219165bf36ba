//! Group commit into the raft log (`raft_log::RaftEngineLog`, raft-engine in a temporary
//! directory): one `LogBatch` holding new entries and the raft state of several regions,
//! written with one fsync, as the raft poller does once per round.
//!
//! Only the write is timed; building the batch and the periodic log GC are not. Entries carry
//! 256 random bytes (about a raw put of a 200-byte value), which LZ4 cannot shrink. The log is
//! cut and purged every few hundred writes, as log GC does on a store, so files are recycled
//! and the disk use stays bounded.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use benches::{short_criterion, SplitMix};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft_log::{Entry, HardState, LogBatch, RaftEngineLog, RaftLogConfig, RaftLogStore, RaftState};

const TERM: u64 = 1;
const PAYLOAD_BYTES: usize = 256;

/// Batch shapes: (regions in the batch, entries per region).
const SHAPES: [(u64, u64); 3] = [(1, 1), (8, 16), (64, 4)];
/// Writes between two (untimed) log GCs.
const GC_EVERY_WRITES: u64 = 512;

/// Smaller files and purge threshold than a store's defaults, so that GC runs within a case.
fn log_config() -> RaftLogConfig {
    RaftLogConfig {
        target_file_size_bytes: 32 << 20,
        purge_threshold_bytes: 128 << 20,
        ..RaftLogConfig::default()
    }
}

/// Drops every entry written so far and lets raft-engine purge or recycle the files.
fn gc(log: &RaftEngineLog, last_index: &HashMap<u64, u64>) {
    for (&region_id, &last) in last_index {
        log.compact_to(region_id, last).expect("compact");
    }
    log.purge_expired_files().expect("purge");
}

/// Builds the next batch: `entries` new entries and the raft state of each region.
fn next_batch(
    last_index: &mut HashMap<u64, u64>,
    regions: u64,
    entries: u64,
    rng: &mut SplitMix,
) -> LogBatch {
    let mut batch = LogBatch::default();
    for region_id in 1..=regions {
        let last = last_index.entry(region_id).or_insert(0);
        let ents = (*last + 1..=*last + entries)
            .map(|index| {
                let mut e = Entry {
                    index,
                    term: TERM,
                    ..Default::default()
                };
                e.data = rng.bytes(PAYLOAD_BYTES).into();
                e
            })
            .collect();
        *last += entries;
        batch.add_entries(region_id, ents);
        let state = RaftState {
            hard_state: HardState {
                term: TERM,
                vote: 1,
                commit: *last,
                ..Default::default()
            },
            last_index: *last,
        };
        batch.put_raft_state(region_id, &state);
    }
    batch
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_log_append");
    for sync in [true, false] {
        for (regions, entries) in SHAPES {
            // A fresh log per case: earlier cases do not leave files behind for this one.
            let dir = tempfile::tempdir().expect("tempdir");
            let log = RaftEngineLog::open(dir.path(), &log_config()).expect("open");
            let mut last_index = HashMap::new();
            let mut writes = 0u64;
            let mut rng = SplitMix::new(regions * 1_000 + entries);
            let name = if sync { "sync" } else { "nosync" };
            group.throughput(Throughput::Elements(regions * entries));
            let id = BenchmarkId::new(name, format!("{regions}x{entries}"));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let batch = next_batch(&mut last_index, regions, entries, &mut rng);
                        let started = Instant::now();
                        black_box(log.write(batch, sync).expect("write"));
                        spent += started.elapsed();
                        writes += 1;
                        if writes.is_multiple_of(GC_EVERY_WRITES) {
                            gc(&log, &last_index);
                        }
                    }
                    spent
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = short_criterion();
    targets = append
}
criterion_main!(benches);
