//! [`RaftEngineLog`]: the raft-engine implementation of [`RaftLogStore`].

use std::path::Path;
use std::sync::Arc;

use raft::eraftpb::Entry;
use raft_engine::env::{DefaultFileSystem, FileSystem};
use raft_engine::{Command, Config, Engine, MessageExt, ReadableSize};
use serde::{Deserialize, Serialize};

use crate::batch::{check_fetch_range, span_after_compact, LogOp};
use crate::fault_fs::{FaultFileSystem, FaultInjector};
use crate::recovery::{self, RecoveryMode};
use crate::state::{meta_key, RAFT_STATE_KEY};
use crate::{LogBatch, RaftLogError, RaftLogStore, RaftState, Result};

/// Tuning of the raft-engine log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RaftLogConfig {
    /// Size at which a log file is rotated. Default 128 MiB.
    pub target_file_size_bytes: u64,
    /// Total log size above which purging rewrites or asks regions to compact old entries.
    /// Must be at least `target_file_size_bytes`. Default 2 GiB.
    pub purge_threshold_bytes: u64,
    /// Write batches larger than this are LZ4-compressed; 0 disables compression. Default 8 KiB.
    pub batch_compression_threshold_bytes: u64,
    /// Threads replaying the log at start-up. Default 2.
    pub recovery_threads: usize,
    /// Reuse purged files instead of deleting them (saves fsync of new files). Default true.
    pub enable_log_recycle: bool,
    /// What a damaged log does at start-up: `tolerate-tail-corruption` (default: a torn tail
    /// of the newest file is cut, other damage refuses to open) or `absolute-consistency`
    /// (any damage refuses to open).
    pub recovery_mode: RecoveryMode,
    /// Read every live entry once at start-up, so that damaged entries refuse the start
    /// rather than fail a read later. Default true.
    pub check_entries_on_open: bool,
}

impl Default for RaftLogConfig {
    fn default() -> Self {
        RaftLogConfig {
            target_file_size_bytes: 128 << 20,
            purge_threshold_bytes: 2 << 30,
            batch_compression_threshold_bytes: 8 << 10,
            recovery_threads: 2,
            enable_log_recycle: true,
            recovery_mode: RecoveryMode::default(),
            check_entries_on_open: true,
        }
    }
}

impl RaftLogConfig {
    /// Checks the bounds raft-engine relies on.
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: &str| Err(RaftLogError::InvalidConfig(msg.to_owned()));
        if self.target_file_size_bytes == 0 {
            return invalid("target_file_size_bytes must be positive");
        }
        if self.purge_threshold_bytes < self.target_file_size_bytes {
            return invalid("purge_threshold_bytes must be >= target_file_size_bytes");
        }
        if self.recovery_threads == 0 {
            return invalid("recovery_threads must be positive");
        }
        Ok(())
    }

    fn to_engine_config(&self, dir: &Path) -> Result<Config> {
        self.validate()?;
        let dir = dir
            .to_str()
            .ok_or_else(|| RaftLogError::InvalidConfig(format!("non UTF-8 path {dir:?}")))?;
        Ok(Config {
            dir: dir.to_owned(),
            target_file_size: ReadableSize(self.target_file_size_bytes),
            purge_threshold: ReadableSize(self.purge_threshold_bytes),
            batch_compression_threshold: ReadableSize(self.batch_compression_threshold_bytes),
            recovery_threads: self.recovery_threads,
            enable_log_recycle: self.enable_log_recycle,
            recovery_mode: self.recovery_mode.to_engine(),
            ..Config::default()
        })
    }
}

/// Tells raft-engine how to find the index of a raft-rs entry.
#[derive(Clone, Copy)]
pub(crate) struct EntryExt;

impl MessageExt for EntryExt {
    type Entry = Entry;

    fn index(entry: &Entry) -> u64 {
        entry.index
    }
}

fn is_no_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.to_string().contains("No space left")
}

impl From<raft_engine::Error> for RaftLogError {
    fn from(e: raft_engine::Error) -> Self {
        use raft_engine::Error as E;
        match e {
            E::Io(io) if is_no_space(&io) => RaftLogError::NoSpace(io.to_string()),
            E::Io(io) => RaftLogError::Io(io.to_string()),
            E::Corruption(msg) => RaftLogError::Corruption(msg),
            E::Codec(e) => RaftLogError::Corruption(e.to_string()),
            E::Protobuf(e) => RaftLogError::Corruption(e.to_string()),
            other => {
                let msg = other.to_string();
                if msg.contains("No space left") {
                    RaftLogError::NoSpace(msg)
                } else {
                    RaftLogError::Engine(msg)
                }
            }
        }
    }
}

/// One raft-engine instance holding the logs of every region of a store. `F` is raft-engine's
/// file system: the default one in production, a [`FaultFileSystem`] in fault tests.
pub struct RaftEngineLog<F: FileSystem = DefaultFileSystem> {
    engine: Engine<F>,
}

impl RaftEngineLog {
    /// Opens (creating if missing) the log in `dir`, replaying it. Damage is cut or refused
    /// as `cfg.recovery_mode` says (see the `recovery` module).
    pub fn open(dir: impl AsRef<Path>, cfg: &RaftLogConfig) -> Result<RaftEngineLog> {
        let dir = dir.as_ref();
        let engine =
            Engine::open(cfg.to_engine_config(dir)?).map_err(|e| recovery::open_error(dir, e))?;
        if cfg.check_entries_on_open {
            recovery::check_entries(&engine, dir)?;
        }
        Ok(RaftEngineLog { engine })
    }
}

impl RaftEngineLog<FaultFileSystem> {
    /// Opens the log in `dir` on a [`FaultFileSystem`] controlled by `faults` (tests only).
    pub fn open_with_faults(
        dir: impl AsRef<Path>,
        cfg: &RaftLogConfig,
        faults: Arc<FaultInjector>,
    ) -> Result<RaftEngineLog<FaultFileSystem>> {
        let engine = Engine::open_with_file_system(
            cfg.to_engine_config(dir.as_ref())?,
            Arc::new(FaultFileSystem::new(faults)),
        )?;
        Ok(RaftEngineLog { engine })
    }
}

impl<F: FileSystem> RaftEngineLog<F> {
    /// Bytes of log files on disk.
    pub fn used_size_bytes(&self) -> usize {
        self.engine.get_used_size()
    }

    fn span(&self, region_id: u64) -> Option<(u64, u64)> {
        let first = self.engine.first_index(region_id)?;
        Some((first, self.engine.last_index(region_id)?))
    }

    fn to_engine_batch(batch: LogBatch) -> Result<raft_engine::LogBatch> {
        let mut out = raft_engine::LogBatch::with_capacity(batch.ops().len());
        for op in batch.into_ops() {
            match op {
                LogOp::Append { region_id, entries } => {
                    out.add_entries::<EntryExt>(region_id, &entries)?
                }
                LogOp::Put {
                    region_id,
                    key,
                    value,
                } => out.put(region_id, key, value)?,
                LogOp::Delete { region_id, key } => out.delete(region_id, key),
                LogOp::Compact { region_id, index } => {
                    out.add_command(region_id, Command::Compact { index })
                }
                LogOp::Clean { region_id } => out.add_command(region_id, Command::Clean),
            }
        }
        Ok(out)
    }

    fn has_any_kv(&self, region_id: u64) -> Result<bool> {
        let mut found = false;
        self.engine
            .scan_raw_messages(region_id, None, None, false, |_, _| {
                found = true;
                false
            })?;
        Ok(found)
    }
}

impl<F: FileSystem + 'static> RaftLogStore for RaftEngineLog<F> {
    fn write(&self, batch: LogBatch, sync: bool) -> Result<usize> {
        // raft-engine panics on a non-contiguous append, and would again on every replay.
        batch.check_appends(|region_id| self.span(region_id))?;
        let mut engine_batch = Self::to_engine_batch(batch)?;
        Ok(self.engine.write(&mut engine_batch, sync)?)
    }

    fn raft_state(&self, region_id: u64) -> Result<Option<RaftState>> {
        self.engine
            .get(region_id, RAFT_STATE_KEY)
            .map(|bytes| RaftState::decode(&bytes))
            .transpose()
    }

    fn get_meta(&self, region_id: u64, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.engine.get(region_id, &meta_key(key)))
    }

    fn fetch_entries(
        &self,
        region_id: u64,
        low: u64,
        high: u64,
        max_size_bytes: Option<u64>,
        out: &mut Vec<Entry>,
    ) -> Result<usize> {
        if low >= high {
            return Ok(0);
        }
        check_fetch_range(region_id, low, high, self.span(region_id))?;
        let max_size = max_size_bytes.map(|max| usize::try_from(max).unwrap_or(usize::MAX));
        self.engine
            .fetch_entries_to::<EntryExt>(region_id, low, high, max_size, out)
            .map_err(|e| match e {
                // Lost a race with compaction or an overwrite between the check and the read.
                raft_engine::Error::EntryCompacted => RaftLogError::EntryCompacted {
                    region_id,
                    index: low,
                },
                raft_engine::Error::EntryNotFound => RaftLogError::EntryUnavailable {
                    region_id,
                    index: low,
                },
                other => other.into(),
            })
    }

    fn entry(&self, region_id: u64, index: u64) -> Result<Option<Entry>> {
        Ok(self.engine.get_entry::<EntryExt>(region_id, index)?)
    }

    fn first_index(&self, region_id: u64) -> Option<u64> {
        self.engine.first_index(region_id)
    }

    fn last_index(&self, region_id: u64) -> Option<u64> {
        self.engine.last_index(region_id)
    }

    fn compact_to(&self, region_id: u64, index: u64) -> Result<u64> {
        let Some((first, last)) = self.span(region_id) else {
            return Ok(0);
        };
        if index <= first {
            return Ok(0);
        }
        let mut batch = LogBatch::default();
        batch.compact_to(region_id, index);
        self.write(batch, false)?;
        debug_assert_eq!(
            self.span(region_id),
            span_after_compact(Some((first, last)), index)
        );
        Ok(index.min(last + 1) - first)
    }

    fn purge_expired_files(&self) -> Result<Vec<u64>> {
        Ok(self.engine.purge_expired_files()?)
    }

    fn region_ids(&self) -> Result<Vec<u64>> {
        let mut ids = vec![];
        for region_id in self.engine.raft_groups() {
            if self.engine.first_index(region_id).is_some() || self.has_any_kv(region_id)? {
                ids.push(region_id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }
}
