//! [`ConcurrencyManager`]: the store's `max_ts` and its table of in-memory locks, which together
//! keep async commit and 1PC correct.
//!
//! An async-commit (or 1PC) transaction picks its commit ts at prewrite as
//! `max(.., max_ts + 1)`. That is only safe if no reader can read a prewritten key at a ts >=
//! the chosen commit ts without seeing the lock. The protocol:
//! - a reader first raises `max_ts` to its read ts ([`ConcurrencyManager::update_max_ts`]),
//!   then checks the in-memory locks of the keys it reads ([`ConcurrencyManager::read_key_check`]
//!   / [`ConcurrencyManager::read_range_check`], under the table mutex), then reads the snapshot;
//! - a prewrite reads `max_ts` and installs its locks in the table in one critical section under
//!   the same mutex ([`ConcurrencyManager::lock_with`]), and the locks stay there until the
//!   write has applied (the [`MemoryLockGuard`] is dropped after that).
//!
//! Either the reader's check runs first, and then its `max_ts` update (made before the check)
//! is visible to the prewrite's read of `max_ts`, so the commit ts is above the read ts; or the
//! prewrite's critical section runs first, and the reader's check finds the lock and reports
//! it. A commit ts is therefore never at or below a ts that already read the key unlocked.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use txn_types::{Key, Lock, TimeStamp};

type LockTable = BTreeMap<Key, Lock>;

/// The store's largest read ts and its in-memory locks. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct ConcurrencyManager {
    max_ts: AtomicU64,
    table: Arc<Mutex<LockTable>>,
}

impl ConcurrencyManager {
    /// A manager whose `max_ts` starts at `initial_max_ts` (e.g. a fresh TSO ts at start-up,
    /// since reads served before a restart are forgotten).
    pub fn new(initial_max_ts: TimeStamp) -> Self {
        ConcurrencyManager {
            max_ts: AtomicU64::new(initial_max_ts.into_inner()),
            table: Arc::new(Mutex::new(LockTable::new())),
        }
    }

    /// Raises `max_ts` to `ts`. `TimeStamp::max()` ("read the latest") is ignored: it would
    /// push every later commit ts out of range.
    pub fn update_max_ts(&self, ts: TimeStamp) {
        if !ts.is_max() {
            self.max_ts.fetch_max(ts.into_inner(), Ordering::SeqCst);
        }
    }

    /// The largest ts that read anything on this store.
    pub fn max_ts(&self) -> TimeStamp {
        TimeStamp::new(self.max_ts.load(Ordering::SeqCst))
    }

    fn table(&self) -> MutexGuard<'_, LockTable> {
        // A panic while holding the table cannot leave it half-updated (single map operations).
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the in-memory lock of `key`, if any. Call after [`Self::update_max_ts`].
    pub fn read_key_check<E>(
        &self,
        key: &Key,
        f: impl Fn(&Lock) -> Result<(), E>,
    ) -> Result<(), E> {
        match self.table().get(key) {
            Some(lock) => f(lock),
            None => Ok(()),
        }
    }

    /// Runs `f` on the in-memory locks in `[start, end)` (`None`: unbounded), in key order,
    /// stopping at the first error. Call after [`Self::update_max_ts`].
    pub fn read_range_check<E>(
        &self,
        start: Option<&Key>,
        end: Option<&Key>,
        f: impl Fn(&Key, &Lock) -> Result<(), E>,
    ) -> Result<(), E> {
        let table = self.table();
        let lower = start.map_or(Bound::Unbounded, Bound::Included);
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        if let (Some(s), Some(e)) = (start, end) {
            if s >= e {
                return Ok(());
            }
        }
        for (key, lock) in table.range::<Key, _>((lower, upper)) {
            f(key, lock)?;
        }
        Ok(())
    }

    /// Under the table mutex: reads `max_ts`, runs `f` with it (the caller runs its prewrite
    /// there) and installs the locks `f` returns. The guard removes exactly those entries when
    /// dropped; drop it once the prewrite's modifies have applied (or failed).
    pub fn lock_with<R, E>(
        &self,
        f: impl FnOnce(TimeStamp) -> Result<(R, Vec<(Key, Lock)>), E>,
    ) -> Result<(R, MemoryLockGuard), E> {
        let mut table = self.table();
        let (result, locks) = f(self.max_ts())?;
        let mut keys = Vec::with_capacity(locks.len());
        for (key, lock) in locks {
            table.insert(key.clone(), lock.clone());
            keys.push((key, lock.ts));
        }
        Ok((
            result,
            MemoryLockGuard {
                table: Arc::clone(&self.table),
                keys,
            },
        ))
    }

    /// Number of in-memory locks (for metrics and tests).
    pub fn lock_count(&self) -> usize {
        self.table().len()
    }
}

/// Removes the in-memory locks installed by one [`ConcurrencyManager::lock_with`] when dropped.
#[derive(Debug)]
#[must_use = "dropping the guard releases the in-memory locks at once"]
pub struct MemoryLockGuard {
    table: Arc<Mutex<LockTable>>,
    keys: Vec<(Key, TimeStamp)>,
}

impl Drop for MemoryLockGuard {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        for (key, ts) in &self.keys {
            // Only our own entry: a later prewrite of the same key (after ours failed) may own it.
            if table.get(key).is_some_and(|l| l.ts == *ts) {
                table.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicU64;
    use std::thread;

    use txn_types::LockType;

    use super::*;
    use crate::mvcc::check_lock_conflict;

    fn lock(ts: u64, min_commit_ts: u64) -> Lock {
        let mut lock = Lock::new(LockType::Put, b"k".to_vec(), TimeStamp::new(ts), 100);
        lock.min_commit_ts = TimeStamp::new(min_commit_ts);
        lock
    }

    #[test]
    fn max_ts_and_guards() {
        let cm = ConcurrencyManager::new(TimeStamp::new(5));
        cm.update_max_ts(TimeStamp::new(3));
        cm.update_max_ts(TimeStamp::max());
        assert_eq!(cm.max_ts(), TimeStamp::new(5));
        cm.update_max_ts(TimeStamp::new(9));
        let ((), guard) = cm
            .lock_with(|max_ts| {
                assert_eq!(max_ts, TimeStamp::new(9));
                Ok::<_, ()>((
                    (),
                    vec![
                        (Key::from_raw(b"a"), lock(1, 10)),
                        (Key::from_raw(b"c"), lock(1, 10)),
                    ],
                ))
            })
            .unwrap();
        assert_eq!(cm.lock_count(), 2);
        assert!(cm
            .read_key_check(&Key::from_raw(b"a"), |_| Err(()))
            .is_err());
        assert!(cm.read_key_check(&Key::from_raw(b"b"), |_| Err(())).is_ok());
        let (b, c) = (Key::from_raw(b"b"), Key::from_raw(b"c"));
        assert!(cm
            .read_range_check(Some(&b), Some(&c), |_, _| Err(()))
            .is_ok());
        assert!(cm.read_range_check(Some(&b), None, |_, _| Err(())).is_err());
        assert!(cm
            .read_range_check(Some(&c), Some(&b), |_, _| Err(()))
            .is_ok());
        drop(guard);
        assert_eq!(cm.lock_count(), 0);
        // A failed closure installs nothing.
        assert!(cm
            .lock_with(|_| Err::<((), Vec<(Key, Lock)>), _>("no"))
            .is_err());
        assert_eq!(cm.lock_count(), 0);
    }

    /// Writers pick commit ts = max_ts + 1 under `lock_with`, "apply" the commit to a shared
    /// store, then drop the guard; readers take a ts, update max_ts, check the memory lock and,
    /// if not blocked, snapshot the store. Snapshot isolation demands that every commit at or
    /// below a reader's ts is in its snapshot: a commit that lands there later is the bug this
    /// protocol prevents (e.g. if max_ts were updated after the check). Each writer has its own
    /// key, as latches and the lock column family guarantee in a store: the memory table holds
    /// one lock per key.
    #[test]
    fn commit_ts_never_below_an_unblocked_read() {
        let cm = Arc::new(ConcurrencyManager::new(TimeStamp::new(1)));
        let tso = Arc::new(AtomicU64::new(10));
        let store = Arc::new(Mutex::new(BTreeSet::<u64>::new()));
        let keys: Vec<Key> = [b"k0", b"k1"].iter().map(|k| Key::from_raw(*k)).collect();
        let mut handles = Vec::new();
        for key in keys.clone() {
            let (cm, tso, store) = (cm.clone(), tso.clone(), store.clone());
            handles.push(thread::spawn(move || {
                for _ in 0..300 {
                    // Transactions start long before they prewrite: only max_ts keeps their
                    // commit ts above concurrent reads.
                    let start_ts = tso.load(Ordering::SeqCst).saturating_sub(100).max(1);
                    let (commit_ts, guard) = cm
                        .lock_with(|max_ts| {
                            let commit_ts = max_ts.next().max(TimeStamp::new(start_ts + 1));
                            let l = lock(start_ts, commit_ts.into_inner());
                            Ok::<_, ()>((commit_ts, vec![(key.clone(), l)]))
                        })
                        .unwrap();
                    store.lock().unwrap().insert(commit_ts.into_inner());
                    drop(guard);
                }
            }));
        }
        let mut readers = Vec::new();
        for _ in 0..2 {
            let (cm, tso, store, keys) = (cm.clone(), tso.clone(), store.clone(), keys.clone());
            readers.push(thread::spawn(move || {
                let mut seen = Vec::new();
                for _ in 0..2_000 {
                    let read_ts = TimeStamp::new(tso.fetch_add(1, Ordering::SeqCst));
                    cm.update_max_ts(read_ts);
                    let blocked = keys.iter().any(|key| {
                        cm.read_key_check(key, |l| check_lock_conflict(l, b"k", read_ts, &[]))
                            .is_err()
                    });
                    if !blocked {
                        seen.push((read_ts.into_inner(), store.lock().unwrap().clone()));
                    }
                }
                seen
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
        let all: BTreeSet<u64> = store.lock().unwrap().clone();
        for r in readers {
            for (read_ts, snapshot) in r.join().unwrap() {
                for commit_ts in all.range(..=read_ts) {
                    assert!(
                        snapshot.contains(commit_ts),
                        "commit at {commit_ts} landed after an unblocked read at {read_ts}"
                    );
                }
            }
        }
    }
}
