//! What a campaign writes down: the history (one completed operation per JSON line, flushed as
//! it goes so a crash of the driver keeps it) and the fault timeline, both stamped with one
//! monotonic clock in nanoseconds since the run began.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Result;
use serde_json::Value;

/// Nanoseconds since the run began; the one clock of histories and timelines.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    /// A clock starting now.
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// A JSON-lines file written line by line.
pub struct Lines {
    out: Mutex<BufWriter<File>>,
    count: AtomicU64,
}

impl Lines {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> Result<Lines> {
        Ok(Lines {
            out: Mutex::new(BufWriter::new(File::create(path)?)),
            count: AtomicU64::new(0),
        })
    }

    /// Appends one line. A write error is reported once on stderr and the run goes on: the
    /// in-memory history is what the checker reads.
    pub fn push(&self, line: &str) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if writeln!(out, "{line}").is_err() && self.count.load(Ordering::Relaxed) == 0 {
            eprintln!("cannot write a history line");
        }
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends one JSON value as a line and flushes (the timeline: few lines, each wanted
    /// even if the driver is killed).
    pub fn push_json(&self, v: &Value) {
        self.push(&v.to_string());
        let _ = self.flush();
    }

    /// Flushes to the file.
    pub fn flush(&self) -> Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.flush()?;
        Ok(())
    }
}
