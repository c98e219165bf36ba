//! Key codecs: the memcomparable encoding every region boundary and MVCC key goes through,
//! and the timestamp suffix of versioned keys (`txn_types::Key`).

use std::hint::black_box;

use benches::{short_criterion, txn_key};
use codec::memcomparable::{decode_bytes, encode_bytes};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use txn_types::{Key, TimeStamp};

/// Client keys of these lengths: a short txn key and a long one.
const KEY_LENS: [usize; 2] = [18, 128];

fn key_of_len(len: usize) -> Vec<u8> {
    let mut key = txn_key(42);
    key.resize(len, b'k');
    key
}

fn memcomparable(c: &mut Criterion) {
    let mut group = c.benchmark_group("memcomparable");
    for len in KEY_LENS {
        let raw = key_of_len(len);
        let encoded = encode_bytes(&raw);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("encode", len), &raw, |b, raw| {
            b.iter(|| encode_bytes(black_box(raw)))
        });
        group.bench_with_input(BenchmarkId::new("decode", len), &encoded, |b, enc| {
            b.iter(|| decode_bytes(black_box(enc)).expect("valid encoding"))
        });
    }
    group.finish();
}

fn versioned_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("txn_key");
    let raw = txn_key(42);
    let ts = TimeStamp::new(449_000_000_000_000_000);
    group.bench_function("from_raw+append_ts", |b| {
        b.iter(|| Key::from_raw(black_box(&raw)).append_ts(black_box(ts)))
    });
    let key = Key::from_raw(&raw);
    group.bench_function("append_ts", |b| {
        b.iter(|| black_box(&key).append_ts(black_box(ts)))
    });
    let versioned = key.append_ts(ts);
    group.bench_function("split_on_ts", |b| {
        b.iter(|| Key::split_on_ts(black_box(&versioned)).expect("has a ts"))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = short_criterion();
    targets = memcomparable, versioned_key
}
criterion_main!(benches);
