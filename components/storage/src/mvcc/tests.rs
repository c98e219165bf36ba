//! Scans and scan_locks over the in-memory engine.

use codec::memcomparable::encode_bytes;
use engine::{KvEngine, MemEngine};
use txn_types::TimeStamp;

use super::*;
use crate::test_util::*;
use crate::txn::TxnError;
use crate::{ResponseBudget, StorageError};

fn opts<'a>(
    start: &'a [u8],
    end: &'a [u8],
    limit: usize,
    read: u64,
    reverse: bool,
) -> TxnScanOptions<'a> {
    TxnScanOptions {
        region_start: b"",
        region_end: b"",
        start_key: start,
        end_key: end,
        limit,
        read_ts: TimeStamp::new(read),
        key_only: false,
        reverse,
        bypass_locks: &[],
    }
}

/// Keys of the entries; locked keys are written `!key`.
fn keys(engine: &MemEngine, o: &TxnScanOptions<'_>) -> Vec<String> {
    scan(
        engine.snapshot().as_ref(),
        o,
        &mut ResponseBudget::unlimited(),
    )
    .unwrap()
    .into_iter()
    .map(|e| match e {
        Ok((k, _)) => String::from_utf8(k).unwrap(),
        Err(crate::txn::TxnError::KeyIsLocked(info)) => {
            format!("!{}", String::from_utf8(info.key).unwrap())
        }
        Err(e) => panic!("{e}"),
    })
    .collect()
}

/// a..f committed at 11 (c deleted at 21, e with two versions), d locked at 30.
fn setup() -> MemEngine {
    let engine = MemEngine::new();
    for k in [b"a", b"b", b"c", b"d", b"e", b"f"] {
        must_put_committed(&engine, k, &[k[0]; 300], 10, 11);
    }
    must_prewrite_delete(&engine, b"c", b"c", 20);
    must_commit(&engine, b"c", 20, 21);
    must_put_committed(&engine, b"e", b"e2", 22, 23);
    must_prewrite_put(&engine, b"d", b"d2", b"d", 30);
    engine
}

#[test]
fn forward_scan() {
    let engine = setup();
    assert_eq!(
        keys(&engine, &opts(b"", b"", 100, 40, false)),
        ["a", "b", "!d", "e", "f"]
    );
    assert_eq!(
        keys(&engine, &opts(b"", b"", 100, 15, false)),
        ["a", "b", "c", "d", "e", "f"]
    );
    assert_eq!(
        keys(&engine, &opts(b"b", b"e", 100, 40, false)),
        ["b", "!d"]
    );
    assert_eq!(
        keys(&engine, &opts(b"", b"", 3, 40, false)),
        ["a", "b", "!d"],
        "locks count towards the limit"
    );
    assert!(keys(&engine, &opts(b"", b"", 0, 40, false)).is_empty());
    let out = scan(
        engine.snapshot().as_ref(),
        &opts(b"e", b"", 1, 40, false),
        &mut ResponseBudget::unlimited(),
    )
    .unwrap();
    assert_eq!(out[0].as_ref().unwrap().1, b"e2");
    let out = scan(
        engine.snapshot().as_ref(),
        &opts(b"e", b"", 1, 15, false),
        &mut ResponseBudget::unlimited(),
    )
    .unwrap();
    assert_eq!(out[0].as_ref().unwrap().1, vec![b'e'; 300]);
    let mut bypass = opts(b"", b"", 100, 40, false);
    let locks = [TimeStamp::new(30)];
    bypass.bypass_locks = &locks;
    assert_eq!(keys(&engine, &bypass), ["a", "b", "d", "e", "f"]);
}

#[test]
fn reverse_scan() {
    let engine = setup();
    // Reverse: start_key is the exclusive upper bound, end_key the inclusive lower one.
    assert_eq!(
        keys(&engine, &opts(b"", b"", 100, 40, true)),
        ["f", "e", "!d", "b", "a"]
    );
    assert_eq!(keys(&engine, &opts(b"e", b"b", 100, 40, true)), ["!d", "b"]);
    assert_eq!(keys(&engine, &opts(b"", b"", 2, 15, true)), ["f", "e"]);
    let out = scan(
        engine.snapshot().as_ref(),
        &opts(b"f", b"", 1, 40, true),
        &mut ResponseBudget::unlimited(),
    )
    .unwrap();
    assert_eq!(out[0].as_ref().unwrap(), &(b"e".to_vec(), b"e2".to_vec()));
}

#[test]
fn key_only_and_region_bounds() {
    let engine = setup();
    let mut o = opts(b"", b"", 100, 40, false);
    o.key_only = true;
    let out = scan(
        engine.snapshot().as_ref(),
        &o,
        &mut ResponseBudget::unlimited(),
    )
    .unwrap();
    assert!(out
        .iter()
        .filter_map(|e| e.as_ref().ok())
        .all(|(_, v)| v.is_empty()));
    let (start, end) = (encode_bytes(b"b"), encode_bytes(b"e"));
    for reverse in [false, true] {
        let mut o = opts(b"", b"", 100, 15, reverse);
        o.region_start = &start;
        o.region_end = &end;
        let mut got = keys(&engine, &o);
        got.sort();
        assert_eq!(got, ["b", "c", "d"]);
    }
}

#[test]
fn scan_locks_in_range() {
    let engine = setup();
    must_prewrite_put(&engine, b"a", b"x", b"a", 50);
    must_prewrite_put(&engine, b"f", b"x", b"a", 35);
    let snap = engine.snapshot();
    let all = scan_locks(
        snap.as_ref(),
        b"",
        b"",
        b"",
        b"",
        TimeStamp::max(),
        0,
        &mut ResponseBudget::unlimited(),
    )
    .unwrap();
    let ks: Vec<_> = all.iter().map(|l| l.key.clone()).collect();
    assert_eq!(ks, [b"a".to_vec(), b"d".to_vec(), b"f".to_vec()]);
    let old = scan_locks(
        snap.as_ref(),
        b"",
        b"",
        b"",
        b"",
        TimeStamp::new(40),
        0,
        &mut ResponseBudget::unlimited(),
    )
    .unwrap();
    assert_eq!(old.len(), 2);
    let limited = scan_locks(
        snap.as_ref(),
        b"",
        b"",
        b"b",
        b"",
        TimeStamp::max(),
        1,
        &mut ResponseBudget::unlimited(),
    )
    .unwrap();
    assert_eq!(limited[0].key, b"d");
    let end = encode_bytes(b"e");
    let bounded = scan_locks(
        snap.as_ref(),
        b"",
        &end,
        b"",
        b"",
        TimeStamp::max(),
        0,
        &mut ResponseBudget::unlimited(),
    )
    .unwrap();
    assert_eq!(bounded.len(), 2);
}

#[test]
fn batch_get_pairs_and_locks() {
    let engine = setup();
    let snap = engine.snapshot();
    let pairs = batch_get(
        snap.as_ref(),
        &[b"a", b"c", b"e"],
        TimeStamp::new(40),
        &[],
        &mut ResponseBudget::unlimited(),
    )
    .unwrap();
    assert_eq!(
        pairs,
        vec![
            (b"a".to_vec(), vec![b'a'; 300]),
            (b"e".to_vec(), b"e2".to_vec())
        ]
    );
    assert!(batch_get(
        snap.as_ref(),
        &[b"a", b"d"],
        TimeStamp::new(40),
        &[],
        &mut ResponseBudget::unlimited()
    )
    .is_err());
}

#[test]
fn responses_are_bounded_by_bytes_not_by_limit() {
    let engine = setup();
    let snap = engine.snapshot();
    let every = opts(b"", b"", usize::MAX, 40, false);
    let all = scan(snap.as_ref(), &every, &mut ResponseBudget::unlimited()).unwrap();
    assert_eq!(all.len(), 5, "any limit is served");
    // "a" holds 300 bytes: a budget below the whole answer refuses it rather than cut it.
    let too_large = Err(TxnError::Storage(StorageError::ResponseTooLarge {
        max_bytes: 100,
    }));
    assert_eq!(
        scan(snap.as_ref(), &every, &mut ResponseBudget::new(100)),
        too_large
    );
    assert_eq!(
        batch_get(
            snap.as_ref(),
            &[b"a"],
            TimeStamp::new(40),
            &[],
            &mut ResponseBudget::new(100)
        ),
        too_large.map(|_: Vec<ScanEntry>| vec![])
    );
    let locks = |budget| {
        scan_locks(
            snap.as_ref(),
            b"",
            b"",
            b"",
            b"",
            TimeStamp::max(),
            65_536,
            &mut ResponseBudget::new(budget),
        )
    };
    assert_eq!(locks(100).unwrap().len(), 1);
    assert!(matches!(
        locks(1),
        Err(TxnError::Storage(StorageError::ResponseTooLarge {
            max_bytes: 1
        }))
    ));
}
