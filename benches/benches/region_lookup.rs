//! Key-to-region lookup: PD's region directory (`pd::RegionDirectory::get_by_key`), which
//! answers every `GetRegion` a client sends for a key it has no cached region for. A store
//! does not look keys up: requests name their region, and the store only checks the range.
//!
//! The keyspace is cut into N adjacent regions at evenly spaced transactional keys; lookups
//! take encoded keys at random inside it.

use std::hint::black_box;

use benches::{random_indexes, short_criterion, txn_key};
use codec::memcomparable::encode_bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pd::{RegionDirectory, RegionInfo};
use proto::metapb::{Peer, Region, RegionEpoch};

/// Regions in the directory.
const REGION_COUNTS: [u64; 2] = [1_000, 100_000];
/// Client keys between two region boundaries.
const KEYS_PER_REGION: u64 = 100;
/// Lookups cycle through this many random keys.
const LOOKUPS: usize = 4_096;

/// N regions covering the whole keyspace, split at every `KEYS_PER_REGION`-th key.
fn directory(regions: u64) -> RegionDirectory {
    let boundary = |i: u64| -> Vec<u8> {
        match i {
            0 => vec![],
            i if i == regions => vec![],
            i => encode_bytes(&txn_key(i * KEYS_PER_REGION)),
        }
    };
    let mut dir = RegionDirectory::default();
    for i in 0..regions {
        let id = i + 1;
        let peer = Peer {
            id: 1_000_000 + id,
            store_id: 1,
            ..Default::default()
        };
        let region = Region {
            id,
            start_key: boundary(i),
            end_key: boundary(i + 1),
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![peer],
        };
        dir.upsert(RegionInfo::new(region, Some(peer)))
            .expect("regions do not overlap");
    }
    assert_eq!(dir.len() as u64, regions);
    dir
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("region_lookup");
    for regions in REGION_COUNTS {
        let dir = directory(regions);
        let keys: Vec<Vec<u8>> = random_indexes(LOOKUPS, regions * KEYS_PER_REGION, 3)
            .into_iter()
            .map(|i| encode_bytes(&txn_key(i)))
            .collect();
        let mut next = keys.iter().cycle();
        group.bench_function(BenchmarkId::new("pd_get_by_key", regions), |b| {
            b.iter(|| {
                let key = next.next().expect("cycle");
                dir.get_by_key(black_box(key)).expect("covered").region.id
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = short_criterion();
    targets = lookup
}
criterion_main!(benches);
