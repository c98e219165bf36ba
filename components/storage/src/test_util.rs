//! TiKV-style `must_*` helpers over [`MemEngine`]: run an action on a fresh snapshot, assert it
//! succeeded, and apply its modifies as raft would (adding the `z` data prefix).

use codec::keys::{data_end_key, data_key};
use engine::{KvEngine, MemEngine, Modify, WriteBatch};
use txn_types::{Key, LockInfo, Mutation, TimeStamp};

use crate::mvcc;
use crate::txn::{self, PrewriteOutcome, PrewriteRequest, TxnError};

pub(crate) const TTL_MS: u64 = 3_000;

pub(crate) fn ts(v: u64) -> TimeStamp {
    TimeStamp::new(v)
}

pub(crate) fn must_apply(engine: &MemEngine, modifies: Vec<Modify>) {
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

/// An optimistic 2PC prewrite request of `mutations`.
pub(crate) fn prewrite_req(
    mutations: Vec<Mutation>,
    primary: &[u8],
    start: u64,
) -> PrewriteRequest {
    PrewriteRequest {
        mutations,
        primary: primary.to_vec(),
        start_ts: ts(start),
        lock_ttl_ms: TTL_MS,
        ..PrewriteRequest::default()
    }
}

pub(crate) fn put(key: &[u8], value: &[u8]) -> Mutation {
    Mutation::Put(Key::from_raw(key), value.to_vec())
}

pub(crate) fn delete(key: &[u8]) -> Mutation {
    Mutation::Delete(Key::from_raw(key))
}

/// Runs a prewrite and applies it; returns the outcome (key errors included).
pub(crate) fn try_prewrite(
    engine: &MemEngine,
    req: &PrewriteRequest,
    max_ts: u64,
) -> PrewriteOutcome {
    let out = txn::prewrite(engine.snapshot().as_ref(), req, ts(max_ts)).unwrap();
    must_apply(engine, out.modifies.clone());
    out
}

pub(crate) fn must_prewrite(engine: &MemEngine, req: &PrewriteRequest) -> PrewriteOutcome {
    let out = try_prewrite(engine, req, 0);
    assert!(
        out.key_errors.is_empty(),
        "prewrite failed: {:?}",
        out.key_errors
    );
    out
}

pub(crate) fn must_prewrite_put(
    engine: &MemEngine,
    key: &[u8],
    value: &[u8],
    primary: &[u8],
    start: u64,
) {
    must_prewrite(engine, &prewrite_req(vec![put(key, value)], primary, start));
}

pub(crate) fn must_prewrite_delete(engine: &MemEngine, key: &[u8], primary: &[u8], start: u64) {
    must_prewrite(engine, &prewrite_req(vec![delete(key)], primary, start));
}

/// The single key error of a failing prewrite.
pub(crate) fn must_prewrite_err(engine: &MemEngine, req: &PrewriteRequest) -> TxnError {
    let out = txn::prewrite(engine.snapshot().as_ref(), req, ts(0)).unwrap();
    assert!(out.modifies.is_empty());
    assert_eq!(out.key_errors.len(), 1, "{:?}", out.key_errors);
    out.key_errors.into_iter().next().unwrap()
}

pub(crate) fn try_commit(
    engine: &MemEngine,
    keys: &[&[u8]],
    start: u64,
    commit: u64,
) -> Result<(), TxnError> {
    let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    let out = txn::commit(engine.snapshot().as_ref(), &keys, ts(start), ts(commit))?;
    must_apply(engine, out.modifies);
    Ok(())
}

pub(crate) fn must_commit(engine: &MemEngine, key: &[u8], start: u64, commit: u64) {
    try_commit(engine, &[key], start, commit).unwrap();
}

pub(crate) fn try_rollback(engine: &MemEngine, keys: &[&[u8]], start: u64) -> Result<(), TxnError> {
    let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    let out = txn::batch_rollback(engine.snapshot().as_ref(), &keys, ts(start))?;
    must_apply(engine, out.modifies);
    Ok(())
}

pub(crate) fn must_rollback(engine: &MemEngine, key: &[u8], start: u64) {
    try_rollback(engine, &[key], start).unwrap();
}

pub(crate) fn must_get(engine: &MemEngine, key: &[u8], read: u64) -> Option<Vec<u8>> {
    mvcc::get(engine.snapshot().as_ref(), key, ts(read), &[]).unwrap()
}

pub(crate) fn must_get_locked(engine: &MemEngine, key: &[u8], read: u64) -> LockInfo {
    match mvcc::get(engine.snapshot().as_ref(), key, ts(read), &[]) {
        Err(TxnError::KeyIsLocked(info)) => *info,
        other => panic!("expected a lock on {key:?}, got {other:?}"),
    }
}

pub(crate) fn must_put_committed(
    engine: &MemEngine,
    key: &[u8],
    value: &[u8],
    start: u64,
    commit: u64,
) {
    must_prewrite_put(engine, key, value, key, start);
    must_commit(engine, key, start, commit);
}

pub(crate) fn lock_of(engine: &MemEngine, key: &[u8]) -> Option<txn_types::Lock> {
    mvcc::load_lock(engine.snapshot().as_ref(), &Key::from_raw(key)).unwrap()
}
