//! Raw semantics over the in-memory engine: TTL expiry, scans bounded by region and range,
//! reverse scans, compare-and-swap.

use codec::keys::{data_end_key, data_key};
use codec::memcomparable::encode_bytes;
use engine::{KvEngine, MemEngine, WriteBatch, CF_DEFAULT};

use super::*;
use crate::ResponseBudget;

const NOW: u64 = 1_000;
const WHOLE: RegionRange<'static> = RegionRange {
    start_key: b"",
    end_key: b"",
};

fn must_apply(engine: &MemEngine, modifies: Vec<Modify>) {
    let mut wb = WriteBatch::default();
    for m in modifies {
        match m {
            Modify::Put { cf, key, value } => wb.put_cf(cf, &data_key(&key), &value),
            Modify::Delete { cf, key } => wb.delete_cf(cf, &data_key(&key)),
            Modify::DeleteRange { cf, start, end } => {
                wb.delete_range_cf(cf, &data_key(&start), &data_end_key(&end))
            }
        }
    }
    engine.write(&wb, false).unwrap();
}

fn must_put(engine: &MemEngine, key: &[u8], value: &[u8], ttl: u64) {
    must_apply(
        engine,
        put_modifies(CF_DEFAULT, &[(key, value)], &[], ttl, NOW).unwrap(),
    );
}

fn must_get(engine: &MemEngine, key: &[u8], now: u64) -> Option<Vec<u8>> {
    raw_get(engine.snapshot().as_ref(), CF_DEFAULT, key, now).unwrap()
}

fn keys(pairs: &[KvPair]) -> Vec<&[u8]> {
    pairs.iter().map(|p| p.key.as_slice()).collect()
}

fn scan(
    engine: &MemEngine,
    region: RegionRange<'_>,
    lower: &[u8],
    upper: &[u8],
    limit: usize,
    reverse: bool,
) -> Vec<KvPair> {
    let opts = ScanOptions {
        limit,
        key_only: false,
        reverse,
    };
    raw_scan(
        engine.snapshot().as_ref(),
        CF_DEFAULT,
        region,
        ScanRange { lower, upper },
        opts,
        NOW,
        &mut ResponseBudget::unlimited(),
    )
    .unwrap()
}

#[test]
fn put_get_delete() {
    let engine = MemEngine::new();
    must_put(&engine, b"r\0\0\0k", b"v", 0);
    assert_eq!(must_get(&engine, b"r\0\0\0k", NOW), Some(b"v".to_vec()));
    assert_eq!(
        must_get(&engine, b"r\0\0\0k", u64::MAX),
        Some(b"v".to_vec())
    );
    assert_eq!(must_get(&engine, b"r\0\0\0missing", NOW), None);
    must_apply(&engine, delete_modifies(CF_DEFAULT, &[b"r\0\0\0k"]));
    assert_eq!(must_get(&engine, b"r\0\0\0k", NOW), None);
}

#[test]
fn ttl_expiry_hides_values() {
    let engine = MemEngine::new();
    must_put(&engine, b"a", b"1", 10);
    must_put(&engine, b"b", b"2", 0);
    let snap = engine.snapshot();
    assert_eq!(
        raw_get_key_ttl(snap.as_ref(), CF_DEFAULT, b"a", NOW + 3).unwrap(),
        Some(7)
    );
    assert_eq!(
        raw_get_key_ttl(snap.as_ref(), CF_DEFAULT, b"b", NOW + 3).unwrap(),
        Some(0)
    );
    assert_eq!(
        raw_get_key_ttl(snap.as_ref(), CF_DEFAULT, b"c", NOW).unwrap(),
        None
    );
    assert_eq!(must_get(&engine, b"a", NOW + 9), Some(b"1".to_vec()));
    assert_eq!(must_get(&engine, b"a", NOW + 10), None);
    assert_eq!(
        raw_get_key_ttl(snap.as_ref(), CF_DEFAULT, b"a", NOW + 10).unwrap(),
        None
    );
    let batch = raw_batch_get(
        snap.as_ref(),
        CF_DEFAULT,
        &[b"a", b"b", b"c"],
        NOW + 10,
        &mut ResponseBudget::unlimited(),
    )
    .unwrap();
    assert_eq!(keys(&batch), vec![b"b".as_slice()]);
    let opts = ScanOptions {
        limit: 10,
        key_only: true,
        reverse: false,
    };
    let all = ScanRange {
        lower: b"",
        upper: b"",
    };
    let live = raw_scan(
        snap.as_ref(),
        CF_DEFAULT,
        WHOLE,
        all,
        opts,
        NOW + 10,
        &mut ResponseBudget::unlimited(),
    )
    .unwrap();
    assert_eq!(
        live,
        vec![KvPair {
            key: b"b".to_vec(),
            value: vec![]
        }]
    );
}

#[test]
fn batch_put_with_per_key_ttls() {
    let engine = MemEngine::new();
    let pairs = [(b"a".as_slice(), b"1".as_slice()), (b"b", b"2")];
    must_apply(
        &engine,
        put_modifies(CF_DEFAULT, &pairs, &[5, 0], 99, NOW).unwrap(),
    );
    assert_eq!(must_get(&engine, b"a", NOW + 5), None);
    assert_eq!(must_get(&engine, b"b", NOW + 500), Some(b"2".to_vec()));
    assert!(matches!(
        put_modifies(CF_DEFAULT, &pairs, &[1], 0, NOW),
        Err(StorageError::TtlCountMismatch { ttls: 1, pairs: 2 })
    ));
}

#[test]
fn scan_is_bounded_by_range_region_and_limit() {
    let engine = MemEngine::new();
    for k in [b"a", b"b", b"c", b"d", b"e"] {
        must_put(&engine, k, k, 0);
    }
    assert_eq!(
        keys(&scan(&engine, WHOLE, b"b", b"d", 10, false)),
        vec![b"b".as_slice(), b"c"]
    );
    assert_eq!(
        keys(&scan(&engine, WHOLE, b"b", b"", 2, false)),
        vec![b"b".as_slice(), b"c"]
    );
    assert!(scan(&engine, WHOLE, b"b", b"", 0, false).is_empty());
    let (start, end) = (encode_bytes(b"b"), encode_bytes(b"d"));
    let region = RegionRange {
        start_key: &start,
        end_key: &end,
    };
    assert_eq!(
        keys(&scan(&engine, region, b"", b"", 10, false)),
        vec![b"b".as_slice(), b"c"]
    );
    assert_eq!(
        keys(&scan(&engine, region, b"c", b"z", 10, false)),
        vec![b"c".as_slice()]
    );
    assert!(scan(&engine, region, b"d", b"z", 10, false).is_empty());
}

#[test]
fn reverse_scan_descends_from_upper_bound() {
    let engine = MemEngine::new();
    for k in [b"a", b"b", b"c", b"d", b"e"] {
        must_put(&engine, k, k, 0);
    }
    assert_eq!(
        keys(&scan(&engine, WHOLE, b"b", b"e", 10, true)),
        vec![b"d".as_slice(), b"c", b"b"]
    );
    assert_eq!(
        keys(&scan(&engine, WHOLE, b"", b"", 2, true)),
        vec![b"e".as_slice(), b"d"]
    );
    let end = encode_bytes(b"c");
    let region = RegionRange {
        start_key: b"",
        end_key: &end,
    };
    assert_eq!(
        keys(&scan(&engine, region, b"", b"z", 10, true)),
        vec![b"b".as_slice(), b"a"]
    );
}

#[test]
fn delete_range_clears_only_the_range() {
    let engine = MemEngine::new();
    for k in [b"a", b"b", b"c", b"d"] {
        must_put(&engine, k, k, 0);
    }
    must_apply(&engine, vec![delete_range_modify(CF_DEFAULT, b"b", b"d")]);
    assert_eq!(
        keys(&scan(&engine, WHOLE, b"", b"", 10, false)),
        vec![b"a".as_slice(), b"d"]
    );
    must_apply(&engine, vec![delete_range_modify(CF_DEFAULT, b"", b"")]);
    assert!(scan(&engine, WHOLE, b"", b"", 10, false).is_empty());
}

#[test]
fn region_contains() {
    let (start, end) = (encode_bytes(b"b"), encode_bytes(b"d"));
    let region = RegionRange {
        start_key: &start,
        end_key: &end,
    };
    assert!(region.contains(b"b") && region.contains(b"c\xff"));
    assert!(!region.contains(b"a") && !region.contains(b"d"));
    assert_eq!(region.first_outside(&[b"b", b"z"]), Some(b"z".as_slice()));
    assert!(WHOLE.contains(b""));
}

#[test]
fn compare_and_swap() {
    let engine = MemEngine::new();
    let cas = |expect: CasExpect<'_>, value: &[u8], now: u64| {
        let out = raw_cas(
            engine.snapshot().as_ref(),
            CF_DEFAULT,
            b"k",
            value,
            expect,
            0,
            now,
        )
        .unwrap();
        must_apply(&engine, out.modifies.clone());
        out
    };
    let first = cas(CasExpect::NotExist, b"v1", NOW);
    assert!(first.succeed && first.previous.is_none());
    let again = cas(CasExpect::NotExist, b"v2", NOW);
    assert!(!again.succeed && again.modifies.is_empty());
    assert_eq!(again.previous, Some(b"v1".to_vec()));
    let wrong = cas(CasExpect::Value(b"nope"), b"v2", NOW);
    assert!(!wrong.succeed);
    let right = cas(CasExpect::Value(b"v1"), b"v2", NOW);
    assert!(right.succeed && right.previous == Some(b"v1".to_vec()));
    assert_eq!(must_get(&engine, b"k", NOW), Some(b"v2".to_vec()));
}

#[test]
fn compare_and_swap_treats_expired_as_absent() {
    let engine = MemEngine::new();
    must_put(&engine, b"k", b"old", 5);
    let snap = engine.snapshot();
    let live = raw_cas(
        snap.as_ref(),
        CF_DEFAULT,
        b"k",
        b"new",
        CasExpect::NotExist,
        0,
        NOW + 1,
    )
    .unwrap();
    assert!(!live.succeed);
    let expired = raw_cas(
        snap.as_ref(),
        CF_DEFAULT,
        b"k",
        b"new",
        CasExpect::NotExist,
        0,
        NOW + 5,
    )
    .unwrap();
    assert!(expired.succeed && expired.previous.is_none());
    let stale = raw_cas(
        snap.as_ref(),
        CF_DEFAULT,
        b"k",
        b"new",
        CasExpect::Value(b"old"),
        0,
        NOW + 5,
    )
    .unwrap();
    assert!(!stale.succeed);
}

#[test]
fn scan_and_batch_get_are_bounded_by_bytes_not_by_limit() {
    let engine = MemEngine::new();
    for k in [b"a", b"b", b"c", b"d", b"e"] {
        must_put(&engine, k, k, 0);
    }
    assert_eq!(scan(&engine, WHOLE, b"", b"", usize::MAX, false).len(), 5);
    let snap = engine.snapshot();
    let opts = ScanOptions {
        limit: 65_536,
        key_only: false,
        reverse: false,
    };
    let all = ScanRange {
        lower: b"",
        upper: b"",
    };
    // Five pairs of two bytes: ten fit, nine refuse the whole answer rather than cut it.
    let scan_in = |max_bytes| {
        raw_scan(
            snap.as_ref(),
            CF_DEFAULT,
            WHOLE,
            all,
            opts,
            NOW,
            &mut ResponseBudget::new(max_bytes),
        )
    };
    assert_eq!(scan_in(10).unwrap().len(), 5);
    let too_large = StorageError::ResponseTooLarge { max_bytes: 9 };
    assert_eq!(scan_in(9), Err(too_large.clone()));
    let keys = [b"a", b"b", b"c", b"d", b"e"];
    let get_in = |max_bytes| {
        raw_batch_get(
            snap.as_ref(),
            CF_DEFAULT,
            &keys,
            NOW,
            &mut ResponseBudget::new(max_bytes),
        )
    };
    assert_eq!(get_in(10).unwrap().len(), 5);
    assert_eq!(get_in(9), Err(too_large));
}
