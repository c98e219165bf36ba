//! Disk space: a store refuses writes that add data once the free space of its data dir falls
//! below a reserve, and takes them again by itself once space returns.
//!
//! A [`DiskMonitor`] measures every `storage.disk_check_interval_ms`: available bytes are the
//! filesystem's free space for the data dir, or, with `storage.capacity_bytes` set, the
//! smaller of that and the capacity minus the bytes the data dir holds ([`available_bytes`]).
//! Below `storage.reserve_space_bytes` the store is full: the KV service answers proposals that
//! put data with the `DiskFull` region error (deletes, GC and reads go on), and the reserve
//! keeps RocksDB and raft-engine, which still take raft appends from leaders and deletions,
//! clear of a real `ENOSPC`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics;

/// Bytes a store may still write: the filesystem's free bytes, capped, when `capacity_bytes`
/// is set (non-zero), by what the data dir may still grow (`capacity_bytes - used_bytes`).
pub fn available_bytes(fs_available_bytes: u64, capacity_bytes: u64, used_bytes: u64) -> u64 {
    if capacity_bytes == 0 {
        fs_available_bytes
    } else {
        fs_available_bytes.min(capacity_bytes.saturating_sub(used_bytes))
    }
}

/// Whether a store with `available` bytes must refuse new data.
pub fn is_full(available_bytes: u64, reserve_bytes: u64) -> bool {
    available_bytes < reserve_bytes
}

/// Bytes of every file under `dir` (files that vanish while walking count as zero).
pub fn dir_size_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// The store's view of its disk, shared by the KV service and the check loop. Cheap to clone.
#[derive(Clone)]
pub struct DiskMonitor {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    capacity_bytes: u64,
    reserve_bytes: u64,
    available_bytes: AtomicU64,
    full: AtomicBool,
}

impl DiskMonitor {
    /// A monitor of `dir`; not full until the first [`DiskMonitor::check`].
    pub fn new(dir: PathBuf, capacity_bytes: u64, reserve_bytes: u64) -> DiskMonitor {
        DiskMonitor {
            inner: Arc::new(Inner {
                dir,
                capacity_bytes,
                reserve_bytes,
                available_bytes: AtomicU64::new(u64::MAX),
                full: AtomicBool::new(false),
            }),
        }
    }

    /// Measures the disk once and updates the state and the metrics; returns the available
    /// bytes. An unreadable filesystem leaves the state as it was.
    pub fn check(&self) -> u64 {
        let s = &self.inner;
        let fs_available = match fs2::available_space(&s.dir) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(dir = %s.dir.display(), error = %e, "cannot read free disk space");
                return s.available_bytes.load(Ordering::Relaxed);
            }
        };
        let used = if s.capacity_bytes == 0 {
            0
        } else {
            dir_size_bytes(&s.dir)
        };
        let available = available_bytes(fs_available, s.capacity_bytes, used);
        let full = is_full(available, s.reserve_bytes);
        s.available_bytes.store(available, Ordering::Relaxed);
        let was_full = s.full.swap(full, Ordering::Relaxed);
        if full != was_full {
            if full {
                tracing::warn!(
                    available_bytes = available,
                    reserve_bytes = s.reserve_bytes,
                    "disk full: refusing writes that add data until space returns"
                );
            } else {
                tracing::info!(
                    available_bytes = available,
                    "disk space is back: writes resume"
                );
            }
        }
        metrics::DISK_AVAILABLE_BYTES.set(i64::try_from(available).unwrap_or(i64::MAX));
        metrics::DISK_FULL.set(i64::from(full));
        available
    }

    /// Whether the last check found less than the reserve available.
    pub fn is_full(&self) -> bool {
        self.inner.full.load(Ordering::Relaxed)
    }

    /// Why writes are refused, for the client's error.
    pub fn full_reason(&self) -> String {
        let s = &self.inner;
        format!(
            "{} bytes available in {}, below the reserve of {} bytes",
            s.available_bytes.load(Ordering::Relaxed),
            s.dir.display(),
            s.reserve_bytes
        )
    }
}

/// Checks the disk every `interval` until `shutdown` turns true.
pub(crate) async fn run(
    monitor: DiskMonitor,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let m = monitor.clone();
        // Walking the data dir is blocking I/O.
        let _ = tokio::task::spawn_blocking(move || m.check()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_is_the_smaller_of_the_filesystem_and_the_capacity_left() {
        // No capacity: the filesystem decides.
        assert_eq!(available_bytes(500, 0, 10_000), 500);
        // Capacity leaves less than the filesystem has.
        assert_eq!(available_bytes(500, 1_000, 800), 200);
        // The filesystem has less than the capacity leaves.
        assert_eq!(available_bytes(100, 1_000, 800), 100);
        // Used beyond the capacity: nothing, not an underflow.
        assert_eq!(available_bytes(500, 1_000, 1_500), 0);
    }

    #[test]
    fn full_below_the_reserve_only() {
        assert!(is_full(99, 100));
        assert!(!is_full(100, 100));
        assert!(!is_full(0, 0), "a zero reserve never refuses");
    }

    #[test]
    fn the_monitor_follows_files_coming_and_going() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 1_000]).unwrap();
        std::fs::write(dir.path().join("sub/b"), vec![0u8; 3_000]).unwrap();
        assert_eq!(dir_size_bytes(dir.path()), 4_000);

        let m = DiskMonitor::new(dir.path().to_path_buf(), 10_000, 5_000);
        assert!(!m.is_full(), "not full before the first check");
        assert_eq!(m.check(), 6_000);
        assert!(!m.is_full());
        let ballast = dir.path().join("sub/ballast");
        std::fs::write(&ballast, vec![0u8; 2_000]).unwrap();
        assert_eq!(m.check(), 4_000);
        assert!(m.is_full());
        assert!(m.full_reason().contains("4000 bytes available"));
        std::fs::remove_file(&ballast).unwrap();
        m.check();
        assert!(!m.is_full(), "space returned");
    }
}
