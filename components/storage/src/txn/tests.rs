//! Prewrite, commit, rollback and cleanup over the in-memory engine.

use engine::{KvEngine, MemEngine, Modify, CF_DEFAULT};
use txn_types::{Key, LockType, Mutation, SHORT_VALUE_MAX_LEN};

use super::*;
use crate::test_util::*;
use crate::txn;

#[test]
fn prewrite_commit_get() {
    let engine = MemEngine::new();
    must_prewrite_put(&engine, b"k", b"v1", b"k", 10);
    // A reader above the start ts must not guess; one below sees the old state.
    let info = must_get_locked(&engine, b"k", 15);
    assert_eq!(info.lock_version, ts(10));
    assert_eq!(info.primary_lock, b"k");
    assert_eq!(must_get(&engine, b"k", 5), None);
    must_commit(&engine, b"k", 10, 20);
    assert_eq!(must_get(&engine, b"k", 19), None);
    assert_eq!(must_get(&engine, b"k", 20), Some(b"v1".to_vec()));
    must_prewrite_delete(&engine, b"k", b"k", 30);
    must_commit(&engine, b"k", 30, 40);
    assert_eq!(must_get(&engine, b"k", 35), Some(b"v1".to_vec()));
    assert_eq!(must_get(&engine, b"k", 40), None);
    // Committing again is idempotent.
    must_commit(&engine, b"k", 30, 40);
}

#[test]
fn locks_that_do_not_block_reads() {
    let engine = MemEngine::new();
    must_put_committed(&engine, b"k", b"v", 1, 2);
    let req = prewrite_req(vec![Mutation::Lock(Key::from_raw(b"k"))], b"k", 10);
    must_prewrite(&engine, &req);
    assert_eq!(must_get(&engine, b"k", 20), Some(b"v".to_vec()));
    must_commit(&engine, b"k", 10, 11);
    assert_eq!(must_get(&engine, b"k", 20), Some(b"v".to_vec()));
    // Bypassed locks and locks whose min_commit_ts is above the read ts do not block.
    must_prewrite_put(&engine, b"k", b"w", b"k", 30);
    let snap = engine.snapshot();
    assert_eq!(
        crate::mvcc::get(snap.as_ref(), b"k", ts(40), &[ts(30)]).unwrap(),
        Some(b"v".to_vec())
    );
    let mut lock = lock_of(&engine, b"k").unwrap();
    lock.min_commit_ts = ts(50);
    assert!(crate::mvcc::check_lock_conflict(&lock, b"k", ts(40), &[]).is_ok());
    assert!(crate::mvcc::check_lock_conflict(&lock, b"k", ts(50), &[]).is_err());
    // Reading the latest committed value of a primary ignores its own 2PC lock.
    assert!(crate::mvcc::check_lock_conflict(&lock, b"k", TimeStamp::max(), &[]).is_ok());
    assert!(crate::mvcc::check_lock_conflict(&lock, b"other", TimeStamp::max(), &[]).is_err());
}

#[test]
fn write_conflicts_and_locked_keys() {
    let engine = MemEngine::new();
    must_prewrite_put(&engine, b"k", b"v", b"k", 10);
    // Another transaction meets the lock.
    let err = must_prewrite_err(&engine, &prewrite_req(vec![put(b"k", b"x")], b"k", 5));
    assert!(matches!(err, TxnError::KeyIsLocked(ref i) if i.lock_version == ts(10)));
    must_commit(&engine, b"k", 10, 20);
    // A transaction that started before the commit conflicts.
    let err = must_prewrite_err(&engine, &prewrite_req(vec![put(b"k", b"x")], b"k", 15));
    assert!(matches!(
        err,
        TxnError::WriteConflict { conflict_start_ts, conflict_commit_ts, reason: WriteConflictReason::Optimistic, .. }
            if conflict_start_ts == ts(10) && conflict_commit_ts == ts(20)
    ));
    // Lock errors accumulate over keys; nothing is written.
    must_prewrite_put(&engine, b"a", b"v", b"a", 30);
    must_prewrite_put(&engine, b"b", b"v", b"b", 31);
    let out = txn::prewrite(
        engine.snapshot().as_ref(),
        &prewrite_req(
            vec![put(b"a", b"1"), put(b"b", b"2"), put(b"c", b"3")],
            b"a",
            40,
        ),
        ts(0),
    )
    .unwrap();
    assert_eq!(out.key_errors.len(), 2);
    assert!(out.modifies.is_empty() && out.locks.is_empty());
}

#[test]
fn prewrite_is_idempotent() {
    let engine = MemEngine::new();
    let req = prewrite_req(vec![put(b"k", b"v")], b"k", 10);
    let first = must_prewrite(&engine, &req);
    assert_eq!(first.locks.len(), 1);
    let again = must_prewrite(&engine, &req);
    assert!(again.modifies.is_empty() && again.locks.is_empty());
    must_commit(&engine, b"k", 10, 20);
    // A prewrite retried after its commit writes nothing and fails nothing.
    let late = must_prewrite(&engine, &req);
    assert!(late.modifies.is_empty());
    assert_eq!(must_get(&engine, b"k", 30), Some(b"v".to_vec()));
}

#[test]
fn rollback_protects_against_late_prewrite() {
    let engine = MemEngine::new();
    // Rollback before the prewrite arrives: it leaves a record.
    must_rollback(&engine, b"k", 10);
    let err = must_prewrite_err(&engine, &prewrite_req(vec![put(b"k", b"v")], b"k", 10));
    assert!(matches!(
        err,
        TxnError::WriteConflict {
            reason: WriteConflictReason::SelfRolledBack,
            ..
        }
    ));
    // A rolled-back transaction cannot commit.
    must_prewrite_put(&engine, b"j", b"v", b"j", 20);
    must_rollback(&engine, b"j", 20);
    assert!(lock_of(&engine, b"j").is_none());
    assert!(matches!(
        try_commit(&engine, &[b"j"], 20, 30),
        Err(TxnError::TxnLockNotFound { .. })
    ));
    assert_eq!(must_get(&engine, b"j", 40), None);
    // Rollback is idempotent; a committed transaction cannot roll back.
    must_rollback(&engine, b"j", 20);
    must_put_committed(&engine, b"c", b"v", 50, 60);
    assert!(
        matches!(try_rollback(&engine, &[b"c"], 50), Err(TxnError::Committed { commit_ts, .. }) if commit_ts == ts(60))
    );
}

#[test]
fn rollback_does_not_overwrite_a_commit_at_the_same_ts() {
    let engine = MemEngine::new();
    // Transaction 10 commits at 20; then transaction 20 is rolled back on the same key.
    must_put_committed(&engine, b"k", b"v", 10, 20);
    must_rollback(&engine, b"k", 20);
    assert_eq!(must_get(&engine, b"k", 25), Some(b"v".to_vec()));
    let err = must_prewrite_err(&engine, &prewrite_req(vec![put(b"k", b"x")], b"k", 20));
    assert!(matches!(
        err,
        TxnError::WriteConflict {
            reason: WriteConflictReason::SelfRolledBack,
            ..
        }
    ));
}

#[test]
fn commit_errors() {
    let engine = MemEngine::new();
    assert!(matches!(
        try_commit(&engine, &[b"k"], 10, 10),
        Err(TxnError::Invalid(_))
    ));
    assert!(matches!(
        try_commit(&engine, &[b"k"], 10, 20),
        Err(TxnError::TxnLockNotFound { .. })
    ));
    let mut req = prewrite_req(vec![put(b"k", b"v")], b"k", 10);
    req.min_commit_ts = ts(30);
    must_prewrite(&engine, &req);
    assert!(matches!(
        try_commit(&engine, &[b"k"], 10, 20),
        Err(TxnError::CommitTsExpired { min_commit_ts, .. }) if min_commit_ts == ts(30)
    ));
    must_commit(&engine, b"k", 10, 30);
    // Request errors write nothing.
    let bad = prewrite_req(vec![put(b"x", b"v")], b"", 10);
    assert!(matches!(
        txn::prewrite(engine.snapshot().as_ref(), &bad, ts(0)),
        Err(TxnError::Invalid(_))
    ));
}

#[test]
fn insert_and_check_not_exists() {
    let engine = MemEngine::new();
    must_put_committed(&engine, b"k", b"v", 1, 2);
    let insert = Mutation::Insert(Key::from_raw(b"k"), b"x".to_vec());
    let err = must_prewrite_err(&engine, &prewrite_req(vec![insert.clone()], b"k", 10));
    assert!(matches!(err, TxnError::AlreadyExist { ref key } if key == b"k"));
    let check = Mutation::CheckNotExists(Key::from_raw(b"k"));
    assert!(matches!(
        must_prewrite_err(&engine, &prewrite_req(vec![check], b"k", 10)),
        TxnError::AlreadyExist { .. }
    ));
    // The constraint check can be skipped.
    let mut skip = prewrite_req(vec![insert], b"k", 10);
    skip.skip_constraint_check = true;
    must_prewrite(&engine, &skip);
    must_rollback(&engine, b"k", 10);
    // After a delete (even followed by lock and rollback records), the key may be inserted.
    must_prewrite_delete(&engine, b"k", b"k", 20);
    must_commit(&engine, b"k", 20, 21);
    must_rollback(&engine, b"k", 22);
    let insert = Mutation::Insert(Key::from_raw(b"k"), b"x".to_vec());
    let check = Mutation::CheckNotExists(Key::from_raw(b"n"));
    let out = must_prewrite(&engine, &prewrite_req(vec![insert, check], b"k", 30));
    assert_eq!(out.locks.len(), 1, "CheckNotExists writes nothing");
    must_commit(&engine, b"k", 30, 31);
    assert_eq!(must_get(&engine, b"k", 40), Some(b"x".to_vec()));
}

#[test]
fn short_and_long_values() {
    let engine = MemEngine::new();
    let short = vec![b's'; SHORT_VALUE_MAX_LEN];
    let long = vec![b'l'; SHORT_VALUE_MAX_LEN + 1];
    let req = prewrite_req(vec![put(b"s", &short), put(b"l", &long)], b"s", 10);
    let out = must_prewrite(&engine, &req);
    let defaults: Vec<_> = out
        .modifies
        .iter()
        .filter(|m| m.cf() == CF_DEFAULT)
        .collect();
    assert_eq!(defaults.len(), 1);
    assert!(
        matches!(defaults[0], Modify::Put { key, .. } if *key == Key::from_raw(b"l").append_ts(ts(10)))
    );
    assert_eq!(
        lock_of(&engine, b"s").unwrap().short_value,
        Some(short.clone())
    );
    assert_eq!(lock_of(&engine, b"l").unwrap().short_value, None);
    try_commit(&engine, &[b"s", b"l"], 10, 20).unwrap();
    assert_eq!(must_get(&engine, b"s", 20), Some(short));
    assert_eq!(must_get(&engine, b"l", 20), Some(long.clone()));
    // Rolling back a long value removes it from the default CF.
    let req = prewrite_req(vec![put(b"m", &long)], b"m", 30);
    must_prewrite(&engine, &req);
    let out = txn::batch_rollback(engine.snapshot().as_ref(), &[b"m".to_vec()], ts(30)).unwrap();
    assert!(out
        .modifies
        .iter()
        .any(|m| matches!(m, Modify::Delete { cf, .. } if cf == &CF_DEFAULT)));
}

/// One region's share of a transaction that spans regions (the primary or a secondary it names
/// is elsewhere) takes locks even when asked for 1PC: committed alone it would commit piecemeal.
#[test]
fn one_pc_needs_the_whole_transaction() {
    let engine = MemEngine::new();
    // The share without the primary.
    let mut req = prewrite_req(vec![put(b"b", b"2")], b"a", 10);
    req.try_one_pc = true;
    req.secondaries = vec![b"b".to_vec()];
    let out = try_prewrite(&engine, &req, 50);
    assert!(out.key_errors.is_empty());
    assert!(out.one_pc_commit_ts.is_zero());
    assert!(lock_of(&engine, b"b").is_some());
    // The primary's share, naming a secondary it does not hold.
    let mut req = prewrite_req(vec![put(b"a", b"1")], b"a", 10);
    req.try_one_pc = true;
    req.secondaries = vec![b"b".to_vec()];
    let out = try_prewrite(&engine, &req, 50);
    assert!(out.one_pc_commit_ts.is_zero());
    assert!(lock_of(&engine, b"a").is_some());
}

#[test]
fn one_pc_commits_directly() {
    let engine = MemEngine::new();
    let mut req = prewrite_req(vec![put(b"a", b"1"), put(b"b", b"2")], b"a", 10);
    req.try_one_pc = true;
    let out = try_prewrite(&engine, &req, 50);
    assert!(out.key_errors.is_empty());
    assert_eq!(out.one_pc_commit_ts, ts(51), "above max_ts");
    assert_eq!(out.min_commit_ts, ts(51));
    // Nothing is locked in the engine, but the memory table covers both keys until applied.
    assert_eq!(out.locks.len(), 2);
    assert!(out.locks.iter().all(|(_, l)| l.min_commit_ts == ts(51)));
    assert!(lock_of(&engine, b"a").is_none());
    assert_eq!(must_get(&engine, b"b", 50), None);
    assert_eq!(must_get(&engine, b"b", 51), Some(b"2".to_vec()));
    // A retried 1PC prewrite reports the same commit.
    let again = try_prewrite(&engine, &req, 70);
    assert!(again.modifies.is_empty());
    assert_eq!(again.one_pc_commit_ts, ts(51));
}

#[test]
fn async_commit_min_commit_ts() {
    let engine = MemEngine::new();
    let mut req = prewrite_req(vec![put(b"p", b"1"), put(b"s", b"2")], b"p", 10);
    req.use_async_commit = true;
    req.secondaries = vec![b"s".to_vec()];
    req.min_commit_ts = ts(12);
    let out = try_prewrite(&engine, &req, 100);
    assert_eq!(out.min_commit_ts, ts(101));
    assert_eq!(out.one_pc_commit_ts, ts(0));
    let primary = lock_of(&engine, b"p").unwrap();
    assert!(primary.use_async_commit);
    assert_eq!(primary.min_commit_ts, ts(101));
    assert_eq!(primary.secondaries, vec![b"s".to_vec()]);
    assert!(lock_of(&engine, b"s").unwrap().secondaries.is_empty());
    // A retry reports the stored min_commit_ts even if max_ts moved.
    let again = try_prewrite(&engine, &req, 5);
    assert_eq!(again.min_commit_ts, ts(101));
    let again = try_prewrite(&engine, &req, 200);
    assert_eq!(
        again.min_commit_ts,
        ts(101),
        "a retry must not promise a newer ts"
    );
    // Readers below min_commit_ts are not blocked.
    assert_eq!(must_get(&engine, b"s", 100), None);
    must_get_locked(&engine, b"s", 101);
    // max_commit_ts bounds the decision.
    let mut bounded = prewrite_req(vec![put(b"q", b"1")], b"q", 10);
    bounded.use_async_commit = true;
    bounded.max_commit_ts = ts(50);
    assert!(matches!(
        txn::prewrite(engine.snapshot().as_ref(), &bounded, ts(100)),
        Err(TxnError::CommitTsTooLarge { .. })
    ));
}

#[test]
fn cleanup_respects_ttl_and_commits() {
    let engine = MemEngine::new();
    let start = TimeStamp::compose(1_000, 0).into_inner();
    must_prewrite_put(&engine, b"k", b"v", b"k", start);
    let now = TimeStamp::compose(1_000 + TTL_MS, 0);
    let err = txn::cleanup(engine.snapshot().as_ref(), b"k", ts(start), now).unwrap_err();
    assert!(matches!(err, TxnError::KeyIsLocked(_)));
    let later = TimeStamp::compose(1_001 + TTL_MS, 0);
    let out = txn::cleanup(engine.snapshot().as_ref(), b"k", ts(start), later).unwrap();
    assert_eq!(out.commit_ts, ts(0));
    must_apply(&engine, out.modifies);
    assert!(lock_of(&engine, b"k").is_none());
    must_put_committed(&engine, b"c", b"v", start, start + 5);
    let out = txn::cleanup(engine.snapshot().as_ref(), b"c", ts(start), later).unwrap();
    assert_eq!(out.commit_ts, ts(start + 5));
    assert!(out.modifies.is_empty());
}

#[test]
fn delete_range_covers_all_data_cfs() {
    let engine = MemEngine::new();
    must_put_committed(&engine, b"a", b"1", 1, 2);
    must_put_committed(&engine, b"b", b"1", 1, 2);
    must_prewrite_put(&engine, b"c", b"1", b"c", 5);
    must_put_committed(&engine, b"d", b"1", 1, 2);
    must_apply(&engine, delete_range_modifies(b"b", b"d"));
    assert_eq!(must_get(&engine, b"a", 10), Some(b"1".to_vec()));
    assert_eq!(must_get(&engine, b"b", 10), None);
    assert!(lock_of(&engine, b"c").is_none());
    assert_eq!(must_get(&engine, b"d", 10), Some(b"1".to_vec()));
}

#[test]
fn lock_types() {
    let engine = MemEngine::new();
    must_prewrite_delete(&engine, b"k", b"k", 10);
    assert_eq!(lock_of(&engine, b"k").unwrap().lock_type, LockType::Delete);
}
