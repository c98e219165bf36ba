//! [`FaultFileSystem`]: a raft-engine file system for crash and I/O-error tests. It passes every
//! call to raft-engine's default file system and, through a shared [`FaultInjector`] the test
//! holds, can
//!
//! - simulate a **power loss** ([`FaultInjector::power_loss`]): every byte written but not yet
//!   synced is dropped (each file is truncated to its last synced length), files created and
//!   never synced are deleted, and renames not yet followed by a sync of the renamed file are
//!   undone. Deletions count as durable at once (raft-engine only deletes obsolete files);
//!   overwriting synced bytes makes them count as unsynced again, which is more pessimistic than
//!   a real disk;
//! - **inject I/O errors** on writes, syncs and opens ([`FaultInjector::fail_next`]);
//! - **hold syncs** ([`FaultInjector::hold_syncs`]), so that a test can stop the machine while a
//!   write is on the page cache only.
//!
//! After a power loss the machine is off until [`FaultInjector::power_on`]: writes fail; a sync
//! held at the power loss fails, and so does the first later sync of a file that lost bytes
//! (its writer must not believe them durable), unless the calling thread is already unwinding
//! (raft-engine panics on a failed sync, and a second panic would abort the process); any other
//! sync does nothing. raft-engine syncs its files when it is dropped, so dropping the engine
//! that ran before the power loss may panic: drop it where a panic is contained (a store's own
//! thread). Production stores use the default file system.

use std::collections::{HashMap, HashSet};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use raft_engine::env::{DefaultFileSystem, FileSystem, Handle, Permission, WriteExt};

type InnerHandle = <DefaultFileSystem as FileSystem>::Handle;
type InnerReader = <DefaultFileSystem as FileSystem>::Reader;
type InnerWriter = <DefaultFileSystem as FileSystem>::Writer;

/// A file operation that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsOp {
    /// Writes through a file writer.
    Write,
    /// `fdatasync` of a file.
    Sync,
    /// Creating or opening a file.
    Open,
}

/// What a power loss did, for tests to assert on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PowerLossReport {
    /// Written but unsynced bytes that were dropped.
    pub dropped_bytes: u64,
    /// Files created and never synced, deleted.
    pub deleted_files: usize,
    /// Renames undone.
    pub undone_renames: usize,
}

#[derive(Debug, Clone, Copy)]
struct FileTrack {
    /// Bytes written (the logical end of the file).
    len: u64,
    /// Prefix known to be on stable storage.
    synced_len: u64,
    /// Whether the file's existence is durable (false for a file created and never synced).
    durable: bool,
}

#[derive(Debug, Clone, Copy)]
struct Injection {
    times_left: u32,
    kind: io::ErrorKind,
}

#[derive(Default)]
struct State {
    files: HashMap<PathBuf, FileTrack>,
    /// Renames not yet made durable, oldest first: (from, to).
    renames: Vec<(PathBuf, PathBuf)>,
    injections: HashMap<FsOp, Injection>,
    injected: HashMap<FsOp, u64>,
    hold_syncs: bool,
    held_syncs: usize,
    powered_off: bool,
    /// Files that lost bytes at the last power loss and whose writer has not yet been told.
    lost: HashSet<PathBuf>,
}

impl State {
    fn inject(&mut self, op: FsOp) -> io::Result<()> {
        let Some(inj) = self.injections.get_mut(&op) else {
            return Ok(());
        };
        let kind = inj.kind;
        inj.times_left -= 1;
        if inj.times_left == 0 {
            self.injections.remove(&op);
        }
        *self.injected.entry(op).or_default() += 1;
        Err(io::Error::new(kind, format!("injected {op:?} error")))
    }

    fn track_existing(&mut self, path: &Path) {
        if !self.files.contains_key(path) {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            self.files.insert(
                path.to_path_buf(),
                FileTrack {
                    len,
                    synced_len: len,
                    durable: true,
                },
            );
        }
    }

    fn on_write(&mut self, path: &Path, offset: u64, n: u64) {
        self.track_existing(path);
        let t = self.files.get_mut(path).expect("tracked");
        t.len = t.len.max(offset + n);
        // Overwritten synced bytes are in the page cache only, until the next sync.
        t.synced_len = t.synced_len.min(offset);
    }

    fn on_sync(&mut self, path: &Path) {
        self.track_existing(path);
        let t = self.files.get_mut(path).expect("tracked");
        t.synced_len = t.len;
        t.durable = true;
        // raft-engine syncs a renamed or created file and then its directory.
        self.renames.retain(|(_, to)| to != path);
    }

    fn on_truncate(&mut self, path: &Path, offset: u64) {
        self.track_existing(path);
        let t = self.files.get_mut(path).expect("tracked");
        t.len = offset;
        t.synced_len = t.synced_len.min(offset);
    }
}

/// The shared control of one or more [`FaultFileSystem`]s: one per store in a test.
#[derive(Default)]
pub struct FaultInjector {
    state: Mutex<State>,
    sync_wakeup: Condvar,
}

impl FaultInjector {
    /// A fault-free injector.
    pub fn new() -> Arc<FaultInjector> {
        Arc::new(FaultInjector::default())
    }

    /// Makes the next `times` calls of `op` fail with an error of `kind` (`u32::MAX`: until
    /// [`FaultInjector::clear_faults`]).
    pub fn fail_next(&self, op: FsOp, times: u32, kind: io::ErrorKind) {
        let mut st = self.state.lock();
        if times == 0 {
            st.injections.remove(&op);
        } else {
            st.injections.insert(
                op,
                Injection {
                    times_left: times,
                    kind,
                },
            );
        }
    }

    /// Stops injecting errors.
    pub fn clear_faults(&self) {
        self.state.lock().injections.clear();
    }

    /// How many errors were injected on `op` so far.
    pub fn injected(&self, op: FsOp) -> u64 {
        self.state.lock().injected.get(&op).copied().unwrap_or(0)
    }

    /// From now on, a sync waits (before reaching the disk) until [`FaultInjector::release_syncs`]
    /// or a power loss.
    pub fn hold_syncs(&self) {
        self.state.lock().hold_syncs = true;
    }

    /// Lets held and future syncs proceed.
    pub fn release_syncs(&self) {
        self.state.lock().hold_syncs = false;
        self.sync_wakeup.notify_all();
    }

    /// Waits up to `timeout` until at least one sync is held; returns whether one is.
    pub fn wait_for_held_sync(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock();
        while st.held_syncs == 0 {
            if self.sync_wakeup.wait_until(&mut st, deadline).timed_out() {
                return st.held_syncs > 0;
            }
        }
        true
    }

    /// Bytes written to tracked files and not yet synced.
    pub fn unsynced_bytes(&self) -> u64 {
        let st = self.state.lock();
        st.files.values().map(|t| t.len - t.synced_len).sum()
    }

    /// Whether the machine is off (after [`FaultInjector::power_loss`], before
    /// [`FaultInjector::power_on`]).
    pub fn is_powered_off(&self) -> bool {
        self.state.lock().powered_off
    }

    /// Cuts the power: drops what was not synced (see the module doc) and fails held syncs.
    pub fn power_loss(&self) -> io::Result<PowerLossReport> {
        let mut st = self.state.lock();
        st.powered_off = true;
        let mut report = PowerLossReport::default();
        let files: Vec<(PathBuf, FileTrack)> = st.files.drain().collect();
        for (path, t) in files {
            if !t.durable {
                match std::fs::remove_file(&path) {
                    Ok(()) => report.deleted_files += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                st.lost.insert(path);
                continue;
            }
            let on_disk = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if t.len > t.synced_len {
                report.dropped_bytes += t.len - t.synced_len;
                st.lost.insert(path.clone());
            }
            // Also cuts space preallocated past the synced end.
            if on_disk > t.synced_len {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(t.synced_len)?;
            }
        }
        for (from, to) in std::mem::take(&mut st.renames).into_iter().rev() {
            if to.exists() {
                std::fs::rename(&to, &from)?;
                report.undone_renames += 1;
            }
        }
        drop(st);
        self.sync_wakeup.notify_all();
        Ok(report)
    }

    /// Turns the machine back on: what is on disk now counts as synced, held syncs and injected
    /// errors are cleared. The engine that ran before the power loss must be gone.
    pub fn power_on(&self) {
        let mut st = self.state.lock();
        let injected = std::mem::take(&mut st.injected);
        *st = State {
            injected,
            ..State::default()
        };
    }

    fn sync(&self, path: &Path, handle: &InnerHandle) -> io::Result<()> {
        let mut st = self.state.lock();
        let mut held = false;
        if st.hold_syncs && !st.powered_off {
            held = true;
            st.held_syncs += 1;
            self.sync_wakeup.notify_all();
            while st.hold_syncs && !st.powered_off {
                self.sync_wakeup.wait(&mut st);
            }
            st.held_syncs -= 1;
        }
        if st.powered_off {
            let lost = st.lost.remove(path);
            // A writer unwinding from a crash is closing its files: failing it would abort.
            if held || (lost && !std::thread::panicking()) {
                return Err(io::Error::other("power lost before the sync"));
            }
            return Ok(());
        }
        st.inject(FsOp::Sync)?;
        handle.sync()?;
        st.on_sync(path);
        Ok(())
    }
}

/// raft-engine's default file system with faults from a [`FaultInjector`].
pub struct FaultFileSystem {
    inner: DefaultFileSystem,
    faults: Arc<FaultInjector>,
}

impl FaultFileSystem {
    /// A file system controlled by `faults`.
    pub fn new(faults: Arc<FaultInjector>) -> FaultFileSystem {
        FaultFileSystem {
            inner: DefaultFileSystem,
            faults,
        }
    }
}

fn powered_off() -> io::Error {
    io::Error::other("the machine is powered off")
}

impl FileSystem for FaultFileSystem {
    type Handle = FaultHandle;
    type Reader = InnerReader;
    type Writer = FaultWriter;

    fn create<P: AsRef<Path>>(&self, path: P) -> io::Result<FaultHandle> {
        let path = path.as_ref();
        let mut st = self.faults.state.lock();
        if st.powered_off {
            return Err(powered_off());
        }
        st.inject(FsOp::Open)?;
        let existed = path.exists();
        let inner = self.inner.create(path)?;
        if existed {
            st.track_existing(path);
        } else {
            st.files.insert(
                path.to_path_buf(),
                FileTrack {
                    len: 0,
                    synced_len: 0,
                    durable: false,
                },
            );
        }
        Ok(FaultHandle::new(inner, path, &self.faults))
    }

    fn open<P: AsRef<Path>>(&self, path: P, perm: Permission) -> io::Result<FaultHandle> {
        let path = path.as_ref();
        let mut st = self.faults.state.lock();
        if st.powered_off {
            return Err(powered_off());
        }
        st.inject(FsOp::Open)?;
        let inner = self.inner.open(path, perm)?;
        st.track_existing(path);
        Ok(FaultHandle::new(inner, path, &self.faults))
    }

    fn delete<P: AsRef<Path>>(&self, path: P) -> io::Result<()> {
        let path = path.as_ref();
        let mut st = self.faults.state.lock();
        if st.powered_off {
            return Ok(());
        }
        self.inner.delete(path)?;
        st.files.remove(path);
        st.renames.retain(|(_, to)| to != path);
        Ok(())
    }

    fn rename<P: AsRef<Path>>(&self, src_path: P, dst_path: P) -> io::Result<()> {
        let (src, dst) = (src_path.as_ref(), dst_path.as_ref());
        let mut st = self.faults.state.lock();
        if st.powered_off {
            return Ok(());
        }
        self.inner.rename(src, dst)?;
        if let Some(t) = st.files.remove(src) {
            st.files.insert(dst.to_path_buf(), t);
        }
        st.renames.push((src.to_path_buf(), dst.to_path_buf()));
        Ok(())
    }

    fn new_reader(&self, handle: Arc<FaultHandle>) -> io::Result<InnerReader> {
        self.inner.new_reader(handle.inner.clone())
    }

    fn new_writer(&self, handle: Arc<FaultHandle>) -> io::Result<FaultWriter> {
        Ok(FaultWriter {
            inner: self.inner.new_writer(handle.inner.clone())?,
            handle,
        })
    }
}

/// An open file of a [`FaultFileSystem`].
pub struct FaultHandle {
    inner: Arc<InnerHandle>,
    path: PathBuf,
    faults: Arc<FaultInjector>,
}

impl FaultHandle {
    fn new(inner: InnerHandle, path: &Path, faults: &Arc<FaultInjector>) -> FaultHandle {
        FaultHandle {
            inner: Arc::new(inner),
            path: path.to_path_buf(),
            faults: faults.clone(),
        }
    }
}

impl Handle for FaultHandle {
    fn truncate(&self, offset: usize) -> io::Result<()> {
        let mut st = self.faults.state.lock();
        if st.powered_off {
            return Ok(());
        }
        self.inner.truncate(offset)?;
        st.on_truncate(&self.path, offset as u64);
        Ok(())
    }

    fn file_size(&self) -> io::Result<usize> {
        self.inner.file_size()
    }

    fn sync(&self) -> io::Result<()> {
        self.faults.sync(&self.path, &self.inner)
    }
}

/// A writer of a [`FaultFileSystem`] file: records what reached the page cache.
pub struct FaultWriter {
    inner: InnerWriter,
    handle: Arc<FaultHandle>,
}

impl Write for FaultWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.handle.faults.state.lock();
        if st.powered_off {
            return Err(powered_off());
        }
        st.inject(FsOp::Write)?;
        let offset = self.inner.stream_position()?;
        let n = self.inner.write(buf)?;
        st.on_write(&self.handle.path, offset, n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Seek for FaultWriter {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl WriteExt for FaultWriter {
    fn truncate(&mut self, offset: usize) -> io::Result<()> {
        let mut st = self.handle.faults.state.lock();
        if st.powered_off {
            return Ok(());
        }
        self.inner.truncate(offset)?;
        st.on_truncate(&self.handle.path, offset as u64);
        Ok(())
    }

    fn allocate(&mut self, offset: usize, size: usize) -> io::Result<()> {
        if self.handle.faults.is_powered_off() {
            return Ok(());
        }
        self.inner.allocate(offset, size)
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use super::*;
    use crate::{Entry, LogBatch, RaftEngineLog, RaftLogConfig, RaftLogError, RaftLogStore};

    fn config() -> RaftLogConfig {
        RaftLogConfig {
            recovery_threads: 1,
            enable_log_recycle: false,
            ..RaftLogConfig::default()
        }
    }

    fn open(dir: &Path, faults: &Arc<FaultInjector>) -> RaftEngineLog<FaultFileSystem> {
        RaftEngineLog::open_with_faults(dir, &config(), faults.clone()).unwrap()
    }

    /// The engine's last syncs fail after a power loss, and raft-engine panics on them.
    fn drop_after_power_loss<T>(log: T) {
        let _ = catch_unwind(AssertUnwindSafe(move || drop(log)));
    }

    fn append(log: &RaftEngineLog<FaultFileSystem>, first: u64, last: u64, sync: bool) {
        let mut batch = LogBatch::default();
        let entries = (first..=last)
            .map(|index| Entry {
                index,
                term: 1,
                data: vec![7; 64].into(),
                ..Default::default()
            })
            .collect();
        batch.add_entries(1, entries);
        log.write(batch, sync).unwrap();
    }

    #[test]
    fn power_loss_keeps_synced_writes_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultInjector::new();
        let log = open(dir.path(), &faults);
        append(&log, 1, 10, true);
        // raft-engine leaves its (empty) rewrite file unsynced.
        let unsynced_before = faults.unsynced_bytes();
        append(&log, 11, 20, false);
        assert!(faults.unsynced_bytes() > unsynced_before + 640);
        let report = faults.power_loss().unwrap();
        assert!(report.dropped_bytes > 0, "{report:?}");
        drop_after_power_loss(log);
        faults.power_on();
        let log = open(dir.path(), &faults);
        assert_eq!(log.last_index(1), Some(10));
        assert_eq!(log.entry(1, 10).unwrap().map(|e| e.index), Some(10));
    }

    #[test]
    fn a_sync_held_at_power_loss_fails_and_its_write_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultInjector::new();
        let log = Arc::new(open(dir.path(), &faults));
        append(&log, 1, 5, true);
        faults.hold_syncs();
        let writer = {
            let log = log.clone();
            std::thread::spawn(move || append(&log, 6, 9, true))
        };
        assert!(faults.wait_for_held_sync(Duration::from_secs(10)));
        faults.power_loss().unwrap();
        // raft-engine panics on a failed sync: the write is never reported as done.
        assert!(writer.join().is_err());
        drop_after_power_loss(log);
        faults.power_on();
        let log = open(dir.path(), &faults);
        assert_eq!(log.last_index(1), Some(5));
    }

    #[test]
    fn an_injected_write_error_is_returned_and_leaves_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultInjector::new();
        let log = open(dir.path(), &faults);
        append(&log, 1, 3, true);
        faults.fail_next(FsOp::Write, u32::MAX, io::ErrorKind::Other);
        let mut batch = LogBatch::default();
        batch.add_entries(
            1,
            vec![Entry {
                index: 4,
                term: 1,
                ..Default::default()
            }],
        );
        assert!(matches!(log.write(batch, true), Err(RaftLogError::Io(_))));
        assert!(faults.injected(FsOp::Write) > 0);
        assert_eq!(log.last_index(1), Some(3));
        faults.clear_faults();
        append(&log, 4, 6, true);
        drop(log);
        let log = open(dir.path(), &faults);
        assert_eq!(log.last_index(1), Some(6));
    }

    #[test]
    fn an_injected_sync_error_is_never_a_successful_write() {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultInjector::new();
        let log = open(dir.path(), &faults);
        append(&log, 1, 3, true);
        faults.fail_next(FsOp::Sync, 1, io::ErrorKind::Other);
        // raft-engine panics rather than return a sync error.
        let r = catch_unwind(AssertUnwindSafe(|| append(&log, 4, 6, true)));
        assert!(r.is_err());
        assert_eq!(faults.injected(FsOp::Sync), 1);
    }

    #[test]
    fn an_injected_open_error_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultInjector::new();
        drop(open(dir.path(), &faults));
        faults.fail_next(FsOp::Open, 1, io::ErrorKind::PermissionDenied);
        assert!(RaftEngineLog::open_with_faults(dir.path(), &config(), faults.clone()).is_err());
        drop(open(dir.path(), &faults));
    }

    #[test]
    fn power_loss_undoes_unsynced_creations_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultInjector::new();
        let fs = FaultFileSystem::new(faults.clone());
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        let synced = Arc::new(fs.create(&a).unwrap());
        let mut w = fs.new_writer(synced.clone()).unwrap();
        w.write_all(b"durable").unwrap();
        synced.sync().unwrap();
        w.write_all(b" and lost").unwrap();
        fs.rename(&a, &b).unwrap();
        let fresh = Arc::new(fs.create(&c).unwrap());
        fs.new_writer(fresh).unwrap().write_all(b"new").unwrap();
        let report = faults.power_loss().unwrap();
        assert_eq!(report.deleted_files, 1);
        assert_eq!(report.undone_renames, 1);
        assert_eq!(report.dropped_bytes, 9);
        assert_eq!(std::fs::read(&a).unwrap(), b"durable");
        assert!(!b.exists() && !c.exists());
    }
}
