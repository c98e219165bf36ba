//! Lock resolution (check_txn_status, check_secondary_locks, resolve_lock, heartbeat),
//! pessimistic locks and GC over the in-memory engine.

use engine::{KvEngine, MemEngine};
use txn_types::{Key, LockType, Mutation};

use super::*;
use crate::test_util::*;
use crate::txn;

fn phys(ms: u64) -> u64 {
    TimeStamp::compose(ms, 0).into_inner()
}

fn check_status(
    engine: &MemEngine,
    primary: &[u8],
    lock_ts: u64,
    caller: u64,
    current: u64,
    rollback_if_not_exist: bool,
) -> TxnResult<CheckTxnStatusOutcome> {
    let out = txn::check_txn_status(
        engine.snapshot().as_ref(),
        primary,
        ts(lock_ts),
        ts(caller),
        ts(current),
        rollback_if_not_exist,
        false,
        false,
    )?;
    must_apply(engine, out.modifies.clone());
    Ok(out)
}

#[test]
fn check_txn_status_shapes() {
    let engine = MemEngine::new();
    let start = phys(1_000);
    // Alive: ttl and lock info, nothing written for a lock without min_commit_ts.
    must_prewrite_put(&engine, b"p", b"v", b"p", start);
    let out = check_status(&engine, b"p", start, start + 5, phys(1_001), false).unwrap();
    assert_eq!(out.lock_ttl, TTL_MS);
    assert_eq!(out.commit_version, ts(0));
    assert_eq!(out.action, CheckTxnStatusAction::NoAction);
    assert!(out.modifies.is_empty());
    assert_eq!(out.lock_info.unwrap().lock_version, ts(start));
    // Expired: rolled back, both zero.
    let out = check_status(&engine, b"p", start, 0, phys(1_001 + TTL_MS), false).unwrap();
    assert_eq!(out.action, CheckTxnStatusAction::TtlExpireRollback);
    assert_eq!(
        (out.lock_ttl, out.commit_version, out.lock_info),
        (0, ts(0), None)
    );
    assert!(lock_of(&engine, b"p").is_none());
    assert!(matches!(
        try_commit(&engine, &[b"p"], start, start + 10),
        Err(TxnError::TxnLockNotFound { .. })
    ));
    // Asked again: rolled back, no action.
    let out = check_status(&engine, b"p", start, 0, phys(5_000), false).unwrap();
    assert_eq!(
        (out.lock_ttl, out.commit_version, out.action),
        (0, ts(0), CheckTxnStatusAction::NoAction)
    );
    // Committed.
    must_put_committed(&engine, b"c", b"v", start, start + 7);
    let out = check_status(&engine, b"c", start, 0, phys(5_000), false).unwrap();
    assert_eq!((out.lock_ttl, out.commit_version), (0, ts(start + 7)));
    // Not there: error, or a rollback record when asked.
    assert!(matches!(
        check_status(&engine, b"n", start, 0, phys(1_001), false),
        Err(TxnError::TxnNotFound { .. })
    ));
    let out = check_status(&engine, b"n", start, 0, phys(1_001), true).unwrap();
    assert_eq!(out.action, CheckTxnStatusAction::LockNotExistRollback);
    assert_eq!((out.lock_ttl, out.commit_version), (0, ts(0)));
    let err = must_prewrite_err(&engine, &prewrite_req(vec![put(b"n", b"v")], b"n", start));
    assert!(matches!(
        err,
        TxnError::WriteConflict {
            reason: WriteConflictReason::SelfRolledBack,
            ..
        }
    ));
}

#[test]
fn check_txn_status_pushes_min_commit_ts() {
    let engine = MemEngine::new();
    let start = phys(1_000);
    let mut req = prewrite_req(vec![put(b"p", b"v")], b"p", start);
    req.min_commit_ts = ts(start + 1);
    must_prewrite(&engine, &req);
    let caller = start + 100;
    let out = check_status(&engine, b"p", start, caller, start + 50, false).unwrap();
    assert_eq!(out.action, CheckTxnStatusAction::MinCommitTsPushed);
    assert!(out.lock_ttl > 0);
    assert_eq!(out.lock_info.unwrap().min_commit_ts, ts(caller + 1));
    // The reader now passes; the committer must use a newer ts.
    assert_eq!(must_get(&engine, b"p", caller), None);
    assert!(matches!(
        try_commit(&engine, &[b"p"], start, caller),
        Err(TxnError::CommitTsExpired { .. })
    ));
    must_commit(&engine, b"p", start, caller + 1);
}

#[test]
fn check_txn_status_async_commit_and_pessimistic() {
    let engine = MemEngine::new();
    let start = phys(1_000);
    let mut req = prewrite_req(vec![put(b"p", b"v")], b"p", start);
    req.use_async_commit = true;
    req.secondaries = vec![b"s".to_vec()];
    must_prewrite(&engine, &req);
    // An expired async-commit lock is reported, not rolled back.
    let out = check_status(&engine, b"p", start, 0, phys(1_000 + 10 * TTL_MS), false).unwrap();
    assert!(out.lock_ttl > 0 && out.modifies.is_empty());
    let info = out.lock_info.unwrap();
    assert!(info.use_async_commit);
    assert_eq!(info.secondaries, vec![b"s".to_vec()]);
    // With force_sync_commit it is treated as 2PC.
    let out = txn::check_txn_status(
        engine.snapshot().as_ref(),
        b"p",
        ts(start),
        ts(0),
        ts(phys(1_000 + 10 * TTL_MS)),
        false,
        true,
        false,
    )
    .unwrap();
    assert_eq!(out.action, CheckTxnStatusAction::TtlExpireRollback);
    // An expired pessimistic primary is only unlocked when resolving a pessimistic lock.
    let lock = PessimisticLockRequest {
        keys: vec![b"q".to_vec()],
        primary: b"q".to_vec(),
        start_ts: ts(start),
        for_update_ts: ts(start),
        lock_ttl_ms: TTL_MS,
        ..PessimisticLockRequest::default()
    };
    must_apply(
        &engine,
        txn::pessimistic_lock(engine.snapshot().as_ref(), &lock)
            .unwrap()
            .modifies,
    );
    let out = txn::check_txn_status(
        engine.snapshot().as_ref(),
        b"q",
        ts(start),
        ts(0),
        ts(phys(1_000 + 10 * TTL_MS)),
        false,
        false,
        true,
    )
    .unwrap();
    assert_eq!(
        out.action,
        CheckTxnStatusAction::TtlExpirePessimisticRollback
    );
    assert_eq!(out.modifies.len(), 1, "only the lock is removed");
    let out = txn::check_txn_status(
        engine.snapshot().as_ref(),
        b"z",
        ts(start),
        ts(0),
        ts(phys(2_000)),
        true,
        false,
        true,
    )
    .unwrap();
    assert_eq!(out.action, CheckTxnStatusAction::LockNotExistDoNothing);
    assert!(out.modifies.is_empty());
}

/// Regression for list-append seed 3030: a one-key async-commit transaction was acknowledged,
/// its commit never arrived, and the lock resolver rolled it back.
#[test]
fn check_txn_status_commits_a_one_key_async_commit_transaction() {
    let engine = MemEngine::new();
    let start = phys(1_000);
    let mut req = prewrite_req(vec![put(b"p", b"v")], b"p", start);
    req.use_async_commit = true;
    let promised = must_prewrite(&engine, &req).min_commit_ts;
    assert!(promised > ts(start));
    // A resolver sweeping as GC does (current ts at the maximum, rollback if not found).
    let out = check_status(&engine, b"p", start, 0, u64::MAX, true).unwrap();
    assert_eq!(
        (out.lock_ttl, out.commit_version, out.lock_info),
        (0, promised, None)
    );
    assert!(lock_of(&engine, b"p").is_none());
    assert_eq!(
        must_get(&engine, b"p", promised.into_inner()),
        Some(b"v".to_vec())
    );
    assert_eq!(must_get(&engine, b"p", promised.into_inner() - 1), None);
    // The client's own commit, arriving late at the promised ts, still succeeds.
    must_commit(&engine, b"p", start, promised.into_inner());
    // Asked again: committed.
    let out = check_status(&engine, b"p", start, 0, u64::MAX, true).unwrap();
    assert_eq!(out.commit_version, promised);
}

#[test]
fn heart_beat_extends_ttl() {
    let engine = MemEngine::new();
    must_prewrite_put(&engine, b"p", b"v", b"p", 10);
    let out = txn::txn_heart_beat(engine.snapshot().as_ref(), b"p", ts(10), 100).unwrap();
    assert_eq!(out.lock_ttl, TTL_MS);
    assert!(out.modifies.is_empty());
    let out = txn::txn_heart_beat(engine.snapshot().as_ref(), b"p", ts(10), TTL_MS * 2).unwrap();
    assert_eq!(out.lock_ttl, TTL_MS * 2);
    must_apply(&engine, out.modifies);
    assert_eq!(lock_of(&engine, b"p").unwrap().ttl_ms, TTL_MS * 2);
    assert!(matches!(
        txn::txn_heart_beat(engine.snapshot().as_ref(), b"p", ts(11), 1),
        Err(TxnError::TxnNotFound { .. })
    ));
}

#[test]
fn check_secondary_locks_outcomes() {
    let engine = MemEngine::new();
    let mut req = prewrite_req(
        vec![put(b"p", b"1"), put(b"s1", b"2"), put(b"s2", b"3")],
        b"p",
        10,
    );
    req.use_async_commit = true;
    req.secondaries = vec![b"s1".to_vec(), b"s2".to_vec()];
    must_prewrite(&engine, &req);
    let keys = vec![b"s1".to_vec(), b"s2".to_vec()];
    let out = txn::check_secondary_locks(engine.snapshot().as_ref(), &keys, ts(10)).unwrap();
    assert_eq!(out.locks.len(), 2);
    assert!(out.locks.iter().all(|l| l.use_async_commit));
    assert!(out.modifies.is_empty() && out.commit_ts.is_zero());
    // One secondary committed: the answer is its commit ts.
    must_commit(&engine, b"s1", 10, 20);
    let out = txn::check_secondary_locks(engine.snapshot().as_ref(), &keys, ts(10)).unwrap();
    assert_eq!(out.commit_ts, ts(20));
    assert!(out.locks.is_empty());
    // A secondary that never got its prewrite is rolled back, and so is the transaction.
    let keys = vec![b"s3".to_vec(), b"never".to_vec()];
    must_prewrite(&engine, &{
        let mut r = prewrite_req(vec![put(b"s3", b"4")], b"p3", 30);
        r.use_async_commit = true;
        r
    });
    let out = txn::check_secondary_locks(engine.snapshot().as_ref(), &keys, ts(30)).unwrap();
    assert!(out.locks.is_empty() && out.commit_ts.is_zero());
    assert_eq!(out.modifies.len(), 1);
    must_apply(&engine, out.modifies);
    let err = must_prewrite_err(
        &engine,
        &prewrite_req(vec![put(b"never", b"v")], b"never", 30),
    );
    assert!(matches!(
        err,
        TxnError::WriteConflict {
            reason: WriteConflictReason::SelfRolledBack,
            ..
        }
    ));
}

#[test]
fn resolve_lock_in_batches() {
    let engine = MemEngine::new();
    let keys: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'k', i]).collect();
    let mutations = keys.iter().map(|k| put(k, b"v")).collect();
    must_prewrite(&engine, &prewrite_req(mutations, &keys[0], 10));
    must_prewrite_put(&engine, b"other", b"v", b"other", 11);
    let status = [(ts(10), ts(20))];
    let mut rounds = 0;
    loop {
        let out =
            txn::resolve_lock(engine.snapshot().as_ref(), &status, None, b"", b"", 2).unwrap();
        must_apply(&engine, out.modifies);
        rounds += 1;
        if !out.has_more {
            break;
        }
    }
    assert_eq!(rounds, 3);
    for k in &keys {
        assert_eq!(must_get(&engine, k, 20), Some(b"v".to_vec()));
    }
    assert!(
        lock_of(&engine, b"other").is_some(),
        "other transactions untouched"
    );
    // Roll back by explicit keys; a key without lock still gets a rollback record.
    let out = txn::resolve_lock(
        engine.snapshot().as_ref(),
        &[(ts(11), ts(0))],
        Some(&[b"other".to_vec(), b"x".to_vec()]),
        b"",
        b"",
        0,
    )
    .unwrap();
    must_apply(&engine, out.modifies);
    assert!(lock_of(&engine, b"other").is_none());
    let err = must_prewrite_err(&engine, &prewrite_req(vec![put(b"x", b"v")], b"x", 11));
    assert!(matches!(
        err,
        TxnError::WriteConflict {
            reason: WriteConflictReason::SelfRolledBack,
            ..
        }
    ));
}

fn lock_req(keys: &[&[u8]], start: u64, for_update: u64) -> PessimisticLockRequest {
    PessimisticLockRequest {
        keys: keys.iter().map(|k| k.to_vec()).collect(),
        primary: keys[0].to_vec(),
        start_ts: ts(start),
        for_update_ts: ts(for_update),
        lock_ttl_ms: TTL_MS,
        return_values: true,
        check_existence: true,
        ..PessimisticLockRequest::default()
    }
}

fn pessimistic(engine: &MemEngine, req: &PessimisticLockRequest) -> PessimisticLockOutcome {
    let out = txn::pessimistic_lock(engine.snapshot().as_ref(), req).unwrap();
    must_apply(engine, out.modifies.clone());
    out
}

#[test]
fn pessimistic_lock_prewrite_commit() {
    let engine = MemEngine::new();
    must_put_committed(&engine, b"a", b"old", 1, 2);
    let out = pessimistic(&engine, &lock_req(&[b"a", b"b"], 10, 10));
    assert!(out.key_errors.is_empty());
    assert_eq!(out.values, vec![Some(b"old".to_vec()), None]);
    assert_eq!(out.exists, vec![true, false]);
    assert_eq!(
        lock_of(&engine, b"a").unwrap().lock_type,
        LockType::Pessimistic
    );
    // Pessimistic locks never block readers; other writers meet them.
    assert_eq!(must_get(&engine, b"a", 20), Some(b"old".to_vec()));
    let out = pessimistic(&engine, &lock_req(&[b"a"], 11, 11));
    assert!(matches!(out.key_errors[..], [TxnError::KeyIsLocked(_)]));
    // Idempotent, raising for_update_ts.
    let out = pessimistic(&engine, &lock_req(&[b"a"], 10, 15));
    assert!(out.key_errors.is_empty());
    assert_eq!(lock_of(&engine, b"a").unwrap().for_update_ts, ts(15));
    // Prewrite converts the locks; a key without a pessimistic lock fails the check.
    let mut req = prewrite_req(vec![put(b"a", b"new"), put(b"b", b"b")], b"a", 10);
    req.pessimistic_actions = vec![PessimisticAction::DoPessimisticCheck; 2];
    req.for_update_ts = ts(15);
    must_prewrite(&engine, &req);
    let mut missing = prewrite_req(vec![put(b"c", b"c")], b"a", 10);
    missing.pessimistic_actions = vec![PessimisticAction::DoPessimisticCheck];
    assert!(matches!(
        must_prewrite_err(&engine, &missing),
        TxnError::PessimisticLockNotFound { .. }
    ));
    try_commit(&engine, &[b"a", b"b"], 10, 20).unwrap();
    assert_eq!(must_get(&engine, b"a", 20), Some(b"new".to_vec()));
}

#[test]
fn pessimistic_conflicts_and_rollback() {
    let engine = MemEngine::new();
    must_put_committed(&engine, b"k", b"v", 10, 20);
    let out = pessimistic(&engine, &lock_req(&[b"k"], 5, 15));
    assert!(matches!(
        out.key_errors[..],
        [TxnError::WriteConflict {
            reason: WriteConflictReason::PessimisticRetry,
            ..
        }]
    ));
    assert!(out.modifies.is_empty());
    // Retry with a newer for_update_ts succeeds.
    assert!(pessimistic(&engine, &lock_req(&[b"k"], 5, 25))
        .key_errors
        .is_empty());
    // pessimistic_rollback removes only our pessimistic locks up to for_update_ts.
    let keys = vec![b"k".to_vec()];
    let out = txn::pessimistic_rollback(engine.snapshot().as_ref(), &keys, ts(5), ts(24)).unwrap();
    assert!(out.modifies.is_empty());
    let out = txn::pessimistic_rollback(engine.snapshot().as_ref(), &keys, ts(5), ts(25)).unwrap();
    must_apply(&engine, out.modifies);
    assert!(lock_of(&engine, b"k").is_none());
    // After a rollback record, the lock request learns it was rolled back.
    must_rollback(&engine, b"r", 30);
    let out = pessimistic(&engine, &lock_req(&[b"r"], 30, 30));
    assert!(matches!(
        out.key_errors[..],
        [TxnError::PessimisticLockRolledBack { .. }]
    ));
    // A prewritten (non-pessimistic) lock is not removed by pessimistic rollback.
    must_prewrite_put(&engine, b"w", b"v", b"w", 40);
    let out =
        txn::pessimistic_rollback(engine.snapshot().as_ref(), &[b"w".to_vec()], ts(40), ts(50))
            .unwrap();
    assert!(out.modifies.is_empty());
    // A non-locked key of a pessimistic txn is checked against for_update_ts.
    must_put_committed(&engine, b"u", b"v", 41, 45);
    let mut req = prewrite_req(
        vec![Mutation::Put(Key::from_raw(b"u"), b"x".to_vec())],
        b"w2",
        42,
    );
    req.pessimistic_actions = vec![PessimisticAction::SkipPessimisticCheck];
    req.for_update_ts = ts(50);
    must_prewrite(&engine, &req);
    req.start_ts = ts(43);
    req.for_update_ts = ts(44);
    assert!(matches!(
        must_prewrite_err(&engine, &req),
        TxnError::KeyIsLocked(_)
    ));
}

#[test]
fn gc_keeps_the_newest_readable_version() {
    let engine = MemEngine::new();
    let long = vec![b'l'; 300];
    must_put_committed(&engine, b"a", &long, 10, 11);
    must_put_committed(&engine, b"a", b"2", 20, 21);
    must_rollback(&engine, b"a", 25);
    must_put_committed(&engine, b"a", b"3", 30, 31);
    must_prewrite_delete(&engine, b"b", b"b", 10);
    must_commit(&engine, b"b", 10, 11);
    must_put_committed(&engine, b"c", b"1", 10, 11);
    must_prewrite_delete(&engine, b"c", b"c", 40);
    must_commit(&engine, b"c", 40, 41);
    let out = txn::gc(engine.snapshot().as_ref(), b"", b"", ts(26), 0).unwrap();
    assert!(out.next_key.is_none());
    must_apply(&engine, out.modifies);
    assert_eq!(must_get(&engine, b"a", 26), Some(b"2".to_vec()));
    assert_eq!(must_get(&engine, b"a", 31), Some(b"3".to_vec()));
    assert_eq!(must_get(&engine, b"c", 30), Some(b"1".to_vec()));
    let snap = engine.snapshot();
    let versions = |k: &[u8]| {
        let mut n = 0;
        let start = codec::keys::data_key(Key::from_raw(k).as_encoded());
        let end = crate::mvcc::tests_versions_end(&Key::from_raw(k));
        snap.scan_cf(engine::CF_WRITE, &start, Some(&end), false, &mut |_, _| {
            n += 1;
            Ok(true)
        })
        .unwrap();
        n
    };
    assert_eq!(versions(b"a"), 2, "put@21 and put@31 remain");
    assert_eq!(versions(b"b"), 0, "a delete at the bottom goes");
    assert_eq!(versions(b"c"), 2);
    // The long value of the collected put left the default CF.
    let dk = codec::keys::data_key(&Key::from_raw(b"a").append_ts(ts(10)));
    assert_eq!(snap.get_cf(engine::CF_DEFAULT, &dk).unwrap(), None);
    // Bounded and resumable.
    let out = txn::gc(engine.snapshot().as_ref(), b"", b"", ts(100), 1).unwrap();
    assert_eq!(out.next_key, Some(Key::from_raw(b"c")));
}
