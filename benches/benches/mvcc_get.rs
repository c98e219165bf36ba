//! MVCC point reads (`storage::mvcc::get`) over the in-memory engine and over RocksDB in a
//! temporary directory, on keys that each hold a few committed versions.
//!
//! Cases: the newest version with an inline value, the oldest version (the seek lands past the
//! newer ones), a value too long to be inline (a second lookup in the `default` CF), and a key
//! that was never written (the lock check and the write-CF seek both miss).

use std::hint::black_box;
use std::time::Duration;

use benches::{random_indexes, short_criterion, txn_key, SplitMix};
use codec::keys::data_key;
use criterion::{criterion_group, criterion_main, Criterion};
use engine::{EngineSnapshot, KvEngine, MemEngine, RocksConfig, RocksEngine, WriteBatch};
use engine::{CF_DEFAULT, CF_WRITE};
use txn_types::{Key, TimeStamp, Write, WriteType, SHORT_VALUE_MAX_LEN};

/// Keys of each kind (inline values, long values).
const KEYS: u64 = 10_000;
/// Committed versions per key: start ts 10, 20, 30, 40, commit ts 5 later.
const VERSIONS: u64 = 4;
const SHORT_VALUE_BYTES: usize = 64;
const LONG_VALUE_BYTES: usize = 1_024;
// One kind of value is inline in the write record, the other is not.
const _: () = assert!(SHORT_VALUE_BYTES <= SHORT_VALUE_MAX_LEN);
const _: () = assert!(LONG_VALUE_BYTES > SHORT_VALUE_MAX_LEN);
/// Reads cycle through this many random keys.
const LOOKUPS: usize = 4_096;

/// Kinds of keys: key `i` of kind `k` is `txn_key(2 * i + k)`, so inline-value keys are the
/// even indexes, long-value keys the odd ones, and `ABSENT` keys lie past every written key.
const INLINE: u64 = 0;
const LONG: u64 = 1;
const ABSENT: u64 = 2 * KEYS;

fn key_index(kind: u64, i: u64) -> u64 {
    2 * i + kind
}

fn commit_ts(version: u64) -> TimeStamp {
    TimeStamp::new(10 * version + 5)
}

/// Writes every version of every key as committed transactions leave them.
fn load(engine: &dyn KvEngine) {
    let mut rng = SplitMix::new(7);
    for kind in [INLINE, LONG] {
        for i in 0..KEYS {
            let key = Key::from_raw(&txn_key(key_index(kind, i)));
            let mut wb = WriteBatch::default();
            for version in 1..=VERSIONS {
                let start_ts = TimeStamp::new(10 * version);
                let write = if kind == INLINE {
                    Write::new(WriteType::Put, start_ts, Some(rng.bytes(SHORT_VALUE_BYTES)))
                } else {
                    let value = rng.bytes(LONG_VALUE_BYTES);
                    wb.put_cf(CF_DEFAULT, &data_key(&key.append_ts(start_ts)), &value);
                    Write::new(WriteType::Put, start_ts, None)
                };
                let write_key = data_key(&key.append_ts(commit_ts(version)));
                wb.put_cf(CF_WRITE, &write_key, &write.to_bytes());
            }
            engine.write(&wb, false).expect("load");
        }
    }
}

fn bench_reads(c: &mut Criterion, engine_name: &str, snap: &dyn EngineSnapshot) {
    let mut group = c.benchmark_group(format!("mvcc_get/{engine_name}"));
    let picks = random_indexes(LOOKUPS, KEYS, 11);
    let keys = |kind: u64| -> Vec<Vec<u8>> {
        picks.iter().map(|&i| txn_key(key_index(kind, i))).collect()
    };
    let newest = commit_ts(VERSIONS + 1);
    let cases = [
        ("inline_newest", keys(INLINE), newest, true),
        ("inline_oldest", keys(INLINE), commit_ts(1), true),
        ("default_cf_newest", keys(LONG), newest, true),
        ("absent", keys(ABSENT), newest, false),
    ];
    for (name, keys, read_ts, found) in cases {
        // A wrong setup would measure the wrong path: check one read first.
        let first = storage::mvcc::get(snap, &keys[0], read_ts, &[]).expect("no lock");
        assert_eq!(first.is_some(), found, "{name}");
        let mut next = keys.iter().cycle();
        group.bench_function(name, |b| {
            b.iter(|| {
                let key = next.next().expect("cycle");
                storage::mvcc::get(snap, black_box(key), read_ts, &[]).expect("no lock")
            })
        });
    }
    group.finish();
}

fn mem_engine(c: &mut Criterion) {
    let engine = MemEngine::new();
    load(&engine);
    let snap = engine.snapshot();
    bench_reads(c, "mem", snap.as_ref());
}

fn rocks_engine(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small memtables, so that most versions are read from SST files, not the memtable.
    let cfg = RocksConfig {
        write_buffer_bytes: 1 << 20,
        ..RocksConfig::default()
    };
    let engine = RocksEngine::open(dir.path().join("db"), &cfg).expect("open");
    load(&engine);
    // Let the flushes and the first compactions that the load started settle.
    std::thread::sleep(Duration::from_secs(2));
    let snap = engine.snapshot();
    bench_reads(c, "rocksdb", snap.as_ref());
}

criterion_group! {
    name = benches;
    config = short_criterion();
    targets = mem_engine, rocks_engine
}
criterion_main!(benches);
