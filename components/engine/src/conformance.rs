//! One conformance suite, run against every [`KvEngine`] implementation.

use std::path::Path;

use crate::*;

/// Runs `case` against a fresh engine built by `factory` in a temporary directory.
fn with_engine<E: KvEngine>(factory: fn(&Path) -> E, case: fn(&E)) {
    let dir = tempfile::tempdir().unwrap();
    let engine = factory(dir.path());
    case(&engine);
}

fn must_put<E: KvEngine>(engine: &E, cf: CfName, key: &[u8], value: &[u8]) {
    let mut wb = WriteBatch::default();
    wb.put_cf(cf, key, value);
    engine.write(&wb, false).unwrap();
}

fn must_get<E: KvEngine>(engine: &E, cf: CfName, key: &[u8]) -> Option<Vec<u8>> {
    engine.get_cf(cf, key).unwrap()
}

/// Writes keys `k0..k9` (values `v0..v9`) into `cf`.
fn fill<E: KvEngine>(engine: &E, cf: CfName) {
    let mut wb = WriteBatch::default();
    for i in 0..10 {
        wb.put_cf(cf, format!("k{i}").as_bytes(), format!("v{i}").as_bytes());
    }
    engine.write(&wb, true).unwrap();
}

fn scan(
    snap: &dyn EngineSnapshot,
    lower: &[u8],
    upper: Option<&[u8]>,
    reverse: bool,
    limit: usize,
) -> Vec<String> {
    let mut keys = vec![];
    snap.scan_cf(CF_DEFAULT, lower, upper, reverse, &mut |k, v| {
        assert_eq!(&k[1..], &v[1..], "value matches key");
        keys.push(String::from_utf8(k.to_vec()).unwrap());
        Ok(keys.len() < limit)
    })
    .unwrap();
    keys
}

fn keys(range: impl Iterator<Item = usize>) -> Vec<String> {
    range.map(|i| format!("k{i}")).collect()
}

pub fn put_get_delete<E: KvEngine>(engine: &E) {
    assert_eq!(must_get(engine, CF_DEFAULT, b"k"), None);
    for (i, &cf) in ALL_CFS.iter().enumerate() {
        must_put(engine, cf, b"k", format!("v{i}").as_bytes());
    }
    for (i, &cf) in ALL_CFS.iter().enumerate() {
        assert_eq!(
            must_get(engine, cf, b"k"),
            Some(format!("v{i}").into_bytes())
        );
    }
    must_put(engine, CF_LOCK, b"k", b"overwritten");
    let mut wb = WriteBatch::default();
    wb.delete_cf(CF_WRITE, b"k");
    engine.write(&wb, false).unwrap();
    assert_eq!(must_get(engine, CF_WRITE, b"k"), None);
    assert_eq!(
        must_get(engine, CF_LOCK, b"k"),
        Some(b"overwritten".to_vec())
    );
    assert_eq!(must_get(engine, CF_DEFAULT, b"k"), Some(b"v0".to_vec()));
    // Empty values are values.
    must_put(engine, CF_RAFT, b"empty", b"");
    assert_eq!(must_get(engine, CF_RAFT, b"empty"), Some(vec![]));
    assert!(matches!(
        engine.get_cf("nope", b"k"),
        Err(EngineError::UnknownCf(_))
    ));
    engine.sync_wal().unwrap();
}

pub fn delete_range<E: KvEngine>(engine: &E) {
    fill(engine, CF_DEFAULT);
    fill(engine, CF_WRITE);
    let mut wb = WriteBatch::default();
    wb.delete_range_cf(CF_DEFAULT, b"k3", b"k6");
    engine.write(&wb, false).unwrap();
    for i in 0..10 {
        let expected = (!(3..6).contains(&i)).then(|| format!("v{i}").into_bytes());
        assert_eq!(
            must_get(engine, CF_DEFAULT, format!("k{i}").as_bytes()),
            expected
        );
        assert!(must_get(engine, CF_WRITE, format!("k{i}").as_bytes()).is_some());
    }
    assert_eq!(
        engine
            .approximate_size_and_keys(CF_DEFAULT, b"", b"")
            .unwrap(),
        (28, 7)
    );
    assert_eq!(
        engine
            .approximate_size_and_keys(CF_WRITE, b"k2", b"k5")
            .unwrap(),
        (12, 3)
    );
    assert_eq!(
        engine.approximate_size_and_keys(CF_LOCK, b"", b"").unwrap(),
        (0, 0)
    );
}

pub fn atomic_batch<E: KvEngine>(engine: &E) {
    let mut wb = WriteBatch::default();
    wb.put_cf(CF_DEFAULT, b"a", b"1");
    wb.put_cf(CF_LOCK, b"a", b"2");
    wb.put_cf("bogus", b"a", b"3");
    assert!(matches!(
        engine.write(&wb, true),
        Err(EngineError::UnknownCf(_))
    ));
    assert_eq!(
        must_get(engine, CF_DEFAULT, b"a"),
        None,
        "bad batch applies nothing"
    );
    assert_eq!(must_get(engine, CF_LOCK, b"a"), None);

    // Modifications apply in order.
    let mut wb = WriteBatch::default();
    wb.put_cf(CF_DEFAULT, b"a", b"1");
    wb.delete_cf(CF_DEFAULT, b"a");
    wb.put_cf(CF_DEFAULT, b"b", b"1");
    wb.delete_range_cf(CF_DEFAULT, b"b", b"c");
    wb.put_cf(CF_DEFAULT, b"b", b"2");
    wb.put_cf(CF_WRITE, b"c", b"3");
    engine.write(&wb, true).unwrap();
    assert_eq!(must_get(engine, CF_DEFAULT, b"a"), None);
    assert_eq!(must_get(engine, CF_DEFAULT, b"b"), Some(b"2".to_vec()));
    assert_eq!(must_get(engine, CF_WRITE, b"c"), Some(b"3".to_vec()));
    engine.write(&WriteBatch::default(), true).unwrap();
}

pub fn snapshot_isolation<E: KvEngine>(engine: &E) {
    must_put(engine, CF_DEFAULT, b"a", b"old");
    must_put(engine, CF_LOCK, b"l", b"lock");
    let snap = engine.snapshot();
    must_put(engine, CF_DEFAULT, b"a", b"new");
    must_put(engine, CF_DEFAULT, b"b", b"new");
    let mut wb = WriteBatch::default();
    wb.delete_cf(CF_LOCK, b"l");
    engine.write(&wb, false).unwrap();

    assert_eq!(
        snap.get_cf(CF_DEFAULT, b"a").unwrap(),
        Some(b"old".to_vec())
    );
    assert_eq!(snap.get_cf(CF_DEFAULT, b"b").unwrap(), None);
    assert_eq!(snap.get_cf(CF_LOCK, b"l").unwrap(), Some(b"lock".to_vec()));
    let mut seen = vec![];
    snap.scan_cf(CF_DEFAULT, b"", None, false, &mut |k, v| {
        seen.push((k.to_vec(), v.to_vec()));
        Ok(true)
    })
    .unwrap();
    assert_eq!(seen, vec![(b"a".to_vec(), b"old".to_vec())]);
    assert!(matches!(
        snap.get_cf("bogus", b"a"),
        Err(EngineError::UnknownCf(_))
    ));
    assert!(snap.iter_cf("bogus", b"", None).is_err());
    assert_eq!(must_get(engine, CF_DEFAULT, b"a"), Some(b"new".to_vec()));
}

pub fn snapshot_outlives_engine<E: KvEngine + Clone>(engine: &E) {
    must_put(engine, CF_DEFAULT, b"a", b"1");
    let snap = {
        let owned = engine.clone();
        owned.snapshot()
    };
    let handle = std::thread::spawn(move || snap.get_cf(CF_DEFAULT, b"a").unwrap());
    assert_eq!(handle.join().unwrap(), Some(b"1".to_vec()));
}

pub fn scans<E: KvEngine>(engine: &E) {
    fill(engine, CF_DEFAULT);
    fill(engine, CF_LOCK);
    let snap = engine.snapshot();
    let snap = snap.as_ref();
    assert_eq!(scan(snap, b"", None, false, 100), keys(0..10));
    assert_eq!(scan(snap, b"", None, true, 100), keys((0..10).rev()));
    assert_eq!(scan(snap, b"k2", Some(b"k5"), false, 100), keys(2..5));
    assert_eq!(
        scan(snap, b"k2", Some(b"k5"), true, 100),
        keys((2..5).rev())
    );
    // Bounds between keys.
    assert_eq!(scan(snap, b"k2a", Some(b"k4a"), false, 100), keys(3..5));
    assert_eq!(
        scan(snap, b"k2a", Some(b"k4a"), true, 100),
        keys((3..5).rev())
    );
    // Early stop.
    assert_eq!(scan(snap, b"k1", None, false, 3), keys(1..4));
    assert_eq!(
        scan(snap, b"", Some(b"k8"), true, 2),
        keys([7, 6].into_iter())
    );
    // Empty and inverted ranges yield nothing.
    assert!(scan(snap, b"k5", Some(b"k5"), false, 100).is_empty());
    assert!(scan(snap, b"k6", Some(b"k5"), true, 100).is_empty());
    assert!(scan(snap, b"z", None, false, 100).is_empty());
    // Callback errors propagate.
    let err = snap.scan_cf(CF_DEFAULT, b"", None, false, &mut |_, _| {
        Err(EngineError::Corruption("stop".into()))
    });
    assert!(matches!(err, Err(EngineError::Corruption(_))));
}

pub fn iterator_semantics<E: KvEngine>(engine: &E) {
    fill(engine, CF_WRITE);
    let snap = engine.snapshot();
    let mut it = snap.iter_cf(CF_WRITE, b"k2", Some(b"k7")).unwrap();
    assert!(!it.valid());
    assert!(it.seek(b"k4").unwrap());
    assert_eq!((it.key(), it.value()), (&b"k4"[..], &b"v4"[..]));
    assert!(it.seek(b"k4a").unwrap());
    assert_eq!(it.key(), b"k5");
    assert!(
        it.seek(b"a").unwrap(),
        "seek below lower bound clamps to it"
    );
    assert_eq!(it.key(), b"k2");
    assert!(!it.prev().unwrap(), "prev stops at the lower bound");
    assert!(!it.seek(b"k7").unwrap(), "seek at upper bound is invalid");
    assert!(!it.valid());

    assert!(it.seek_for_prev(b"k4").unwrap());
    assert_eq!(it.key(), b"k4");
    assert!(it.seek_for_prev(b"k4a").unwrap());
    assert_eq!(it.key(), b"k4");
    assert!(
        it.seek_for_prev(b"zzz").unwrap(),
        "clamps to the upper bound"
    );
    assert_eq!(it.key(), b"k6");
    assert!(!it.next().unwrap(), "next stops at the upper bound");
    assert!(
        !it.seek_for_prev(b"k1").unwrap(),
        "below the lower bound is invalid"
    );

    assert!(it.seek_to_first().unwrap());
    let mut forward = vec![it.key().to_vec()];
    while it.next().unwrap() {
        forward.push(it.key().to_vec());
    }
    assert_eq!(forward.len(), 5);
    assert!(it.seek_to_last().unwrap());
    assert_eq!(it.key(), b"k6");
    assert!(it.prev().unwrap());
    assert_eq!(it.key(), b"k5");
    assert!(it.next().unwrap());
    assert_eq!(it.key(), b"k6");

    let mut unbounded = snap.iter_cf(CF_WRITE, b"", None).unwrap();
    assert!(unbounded.seek_to_last().unwrap());
    assert_eq!(unbounded.key(), b"k9");
    assert!(unbounded.seek_to_first().unwrap());
    assert_eq!(unbounded.key(), b"k0");
    let mut empty_cf = snap.iter_cf(CF_LOCK, b"", None).unwrap();
    assert!(!empty_cf.seek_to_first().unwrap());
    assert!(!empty_cf.seek_to_last().unwrap());
}

fn mem_engine(_: &Path) -> MemEngine {
    MemEngine::new()
}

fn rocks_engine(path: &Path) -> RocksEngine {
    RocksEngine::open(path, &RocksConfig::default()).unwrap()
}

macro_rules! conformance {
    ($name:ident, $factory:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn put_get_delete() {
                with_engine($factory, super::put_get_delete);
            }

            #[test]
            fn delete_range() {
                with_engine($factory, super::delete_range);
            }

            #[test]
            fn atomic_batch() {
                with_engine($factory, super::atomic_batch);
            }

            #[test]
            fn snapshot_isolation() {
                with_engine($factory, super::snapshot_isolation);
            }

            #[test]
            fn snapshot_outlives_engine() {
                with_engine($factory, super::snapshot_outlives_engine);
            }

            #[test]
            fn scans() {
                with_engine($factory, super::scans);
            }

            #[test]
            fn iterator_semantics() {
                with_engine($factory, super::iterator_semantics);
            }
        }
    };
}

conformance!(mem, mem_engine);
conformance!(rocks, rocks_engine);

#[test]
fn rocks_reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RocksConfig {
        block_cache_bytes: 1 << 20,
        write_buffer_bytes: 1 << 20,
        max_background_jobs: 1,
    };
    {
        let engine = RocksEngine::open(dir.path(), &cfg).unwrap();
        fill(&engine, CF_DEFAULT);
        must_put(&engine, CF_RAFT, b"state", b"applied=5");
        let mut wb = WriteBatch::default();
        wb.delete_cf(CF_DEFAULT, b"k0");
        engine.write(&wb, false).unwrap();
        engine.sync_wal().unwrap();
        assert_eq!(engine.path(), dir.path());
    }
    let engine = RocksEngine::open(dir.path(), &cfg).unwrap();
    assert_eq!(
        must_get(&engine, CF_RAFT, b"state"),
        Some(b"applied=5".to_vec())
    );
    assert_eq!(must_get(&engine, CF_DEFAULT, b"k0"), None);
    assert_eq!(
        engine
            .approximate_size_and_keys(CF_DEFAULT, b"", b"")
            .unwrap(),
        (36, 9)
    );
}

#[test]
fn rocks_config_defaults() {
    let cfg = RocksConfig::default();
    assert_eq!(cfg.max_background_jobs, 2);
    assert!(cfg.block_cache_bytes > 0 && cfg.write_buffer_bytes > 0);
}
