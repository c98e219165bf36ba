//! Point reads and the per-key lookups the write actions build on.

use codec::keys::{data_key, origin_key};
use engine::{EngineIterator, EngineSnapshot, CF_DEFAULT, CF_LOCK, CF_WRITE};
use txn_types::{Key, Lock, LockType, TimeStamp, Write, WriteType};

use crate::txn::{TxnError, TxnResult};
use crate::{ResponseBudget, StorageError};

/// A raw key and its value.
pub type TxnKvPair = (Vec<u8>, Vec<u8>);

/// Returns an error iff `lock` must block a read of `raw_key` at `read_ts`.
///
/// A lock blocks when its transaction started at or before `read_ts`, it is a prewritten put or
/// delete (read and pessimistic locks never change the value), the reader was not told to
/// bypass it, and its `min_commit_ts` does not already guarantee a commit after `read_ts`.
/// As in TiKV, a read at `TimeStamp::max()` ("latest committed") of a transaction's own primary
/// key ignores a non-async-commit lock there, since that transaction cannot commit until its
/// primary does; every other lock is reported.
pub fn check_lock_conflict(
    lock: &Lock,
    raw_key: &[u8],
    read_ts: TimeStamp,
    bypass_locks: &[TimeStamp],
) -> Result<(), TxnError> {
    if lock.ts > read_ts || matches!(lock.lock_type, LockType::Lock | LockType::Pessimistic) {
        return Ok(());
    }
    if lock.min_commit_ts > read_ts || bypass_locks.contains(&lock.ts) {
        return Ok(());
    }
    if read_ts.is_max() && raw_key == lock.primary.as_slice() && !lock.use_async_commit {
        return Ok(());
    }
    Err(TxnError::KeyIsLocked(Box::new(
        lock.to_lock_info(raw_key.to_vec()),
    )))
}

/// The value of `raw_key` visible at `read_ts`, or a lock that hides it.
pub fn get(
    snap: &dyn EngineSnapshot,
    raw_key: &[u8],
    read_ts: TimeStamp,
    bypass_locks: &[TimeStamp],
) -> Result<Option<Vec<u8>>, TxnError> {
    let key = Key::from_raw(raw_key);
    if let Some(lock) = load_lock(snap, &key)? {
        check_lock_conflict(&lock, raw_key, read_ts, bypass_locks)?;
    }
    read_value(snap, &key, read_ts)
}

/// The found pairs among `raw_keys` at `read_ts`, in request order; the first lock met aborts,
/// and so do pairs that pass `budget`.
pub fn batch_get<K: AsRef<[u8]>>(
    snap: &dyn EngineSnapshot,
    raw_keys: &[K],
    read_ts: TimeStamp,
    bypass_locks: &[TimeStamp],
    budget: &mut ResponseBudget,
) -> Result<Vec<TxnKvPair>, TxnError> {
    let mut pairs = Vec::with_capacity(raw_keys.len());
    for raw in raw_keys {
        let raw = raw.as_ref();
        if let Some(value) = get(snap, raw, read_ts, bypass_locks)? {
            budget.charge(raw.len() + value.len())?;
            pairs.push((raw.to_vec(), value));
        }
    }
    Ok(pairs)
}

/// The lock on `key`, if any.
pub(crate) fn load_lock(snap: &dyn EngineSnapshot, key: &Key) -> TxnResult<Option<Lock>> {
    match snap.get_cf(CF_LOCK, &data_key(key.as_encoded()))? {
        Some(bytes) => Ok(Some(Lock::parse(&bytes)?)),
        None => Ok(None),
    }
}

/// Exclusive data-key bound just past every version of `key` in the write/default CFs.
pub(crate) fn versions_end(key: &Key) -> Vec<u8> {
    let mut end = data_key(&key.append_ts(TimeStamp::zero()));
    end.push(0);
    end
}

/// Calls `f` on the records of `key` with commit ts <= `ts`, newest first, until it returns
/// `false`.
fn for_each_version(
    snap: &dyn EngineSnapshot,
    key: &Key,
    ts: TimeStamp,
    f: &mut dyn FnMut(TimeStamp, Write) -> TxnResult<bool>,
) -> TxnResult<()> {
    let lower = data_key(&key.append_ts(ts));
    let upper = versions_end(key);
    let mut iter = snap.iter_cf(CF_WRITE, &lower, Some(&upper))?;
    let mut valid = iter.seek_to_first()?;
    while valid {
        let (_, commit_ts) = Key::split_on_ts(origin_key(iter.key()))?;
        if !f(commit_ts, Write::parse(iter.value())?)? {
            break;
        }
        valid = iter.next()?;
    }
    Ok(())
}

/// The newest record of `key` with commit ts <= `ts`.
pub(crate) fn seek_write(
    snap: &dyn EngineSnapshot,
    key: &Key,
    ts: TimeStamp,
) -> TxnResult<Option<(TimeStamp, Write)>> {
    let mut found = None;
    for_each_version(snap, key, ts, &mut |commit_ts, write| {
        found = Some((commit_ts, write));
        Ok(false)
    })?;
    Ok(found)
}

/// The newest `Put` or `Delete` record of `key` with commit ts <= `ts`.
pub(crate) fn latest_data_write(
    snap: &dyn EngineSnapshot,
    key: &Key,
    ts: TimeStamp,
) -> TxnResult<Option<(TimeStamp, Write)>> {
    let mut found = None;
    for_each_version(snap, key, ts, &mut |commit_ts, write| {
        if matches!(write.write_type, WriteType::Put | WriteType::Delete) {
            found = Some((commit_ts, write));
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(found)
}

/// The committed value of `key` at `ts`, ignoring locks.
pub(crate) fn read_value(
    snap: &dyn EngineSnapshot,
    key: &Key,
    ts: TimeStamp,
) -> TxnResult<Option<Vec<u8>>> {
    match latest_data_write(snap, key, ts)? {
        Some((_, write)) if write.write_type == WriteType::Put => {
            Ok(Some(load_value(snap, key, write)?))
        }
        _ => Ok(None),
    }
}

/// The value of a `Put` record: inline, or in the `default` CF at `key + start_ts`.
pub(crate) fn load_value(snap: &dyn EngineSnapshot, key: &Key, write: Write) -> TxnResult<Vec<u8>> {
    if let Some(value) = write.short_value {
        return Ok(value);
    }
    snap.get_cf(CF_DEFAULT, &data_key(&key.append_ts(write.start_ts)))?
        .ok_or_else(|| {
            TxnError::Storage(StorageError::Corrupt(format!(
                "value of {key:?} at {} is missing from the default CF",
                write.start_ts
            )))
        })
}

/// Walks the versions of `key` from `read_ts` with a cursor over a wider range (a scan's) and
/// returns the visible value, if any; with `key_only`, an empty value stands for "exists" and
/// long values are not loaded. Leaves the cursor somewhere among `key`'s versions or after.
pub(crate) fn read_at_cursor(
    iter: &mut dyn EngineIterator,
    snap: &dyn EngineSnapshot,
    key: &Key,
    read_ts: TimeStamp,
    key_only: bool,
) -> TxnResult<Option<Vec<u8>>> {
    let mut valid = iter.seek(&data_key(&key.append_ts(read_ts)))?;
    while valid {
        let (user_key, _) = Key::split_on_ts(origin_key(iter.key()))?;
        if user_key != key.as_encoded() {
            return Ok(None);
        }
        let write = Write::parse(iter.value())?;
        match write.write_type {
            WriteType::Put if key_only => return Ok(Some(Vec::new())),
            WriteType::Put => return Ok(Some(load_value(snap, key, write)?)),
            WriteType::Delete => return Ok(None),
            WriteType::Lock | WriteType::Rollback => valid = iter.next()?,
        }
    }
    Ok(None)
}

/// Where a transaction stands on one key, judged from the `write` CF alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommitRecord {
    /// Committed at `commit_ts` with a record of `write_type`.
    Committed {
        /// The commit ts.
        commit_ts: TimeStamp,
    },
    /// A rollback record (or a record carrying an overlapped rollback) is there.
    RolledBack,
    /// No record of the transaction. `overlapped` is another transaction's record stored at
    /// `key + start_ts` (its commit ts equals our start ts), which a rollback must not
    /// overwrite.
    None {
        /// The record occupying our rollback's slot.
        overlapped: Option<Write>,
    },
}

/// The record of the transaction at `start_ts` on `key`: visits every record with commit ts
/// >= `start_ts` (a commit record is never older than its start ts).
pub(crate) fn get_txn_commit_record(
    snap: &dyn EngineSnapshot,
    key: &Key,
    start_ts: TimeStamp,
) -> TxnResult<CommitRecord> {
    let mut record = CommitRecord::None { overlapped: None };
    for_each_version(snap, key, TimeStamp::max(), &mut |commit_ts, write| {
        if commit_ts < start_ts {
            return Ok(false);
        }
        if write.start_ts == start_ts {
            record = if write.write_type == WriteType::Rollback {
                CommitRecord::RolledBack
            } else {
                CommitRecord::Committed { commit_ts }
            };
            return Ok(false);
        }
        if commit_ts == start_ts {
            record = if write.has_overlapped_rollback {
                CommitRecord::RolledBack
            } else {
                CommitRecord::None {
                    overlapped: Some(write),
                }
            };
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(record)
}
