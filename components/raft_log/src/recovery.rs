//! What opening a damaged raft-engine log does: a torn tail is cut, any other damage refuses
//! to open with an error naming the damage, so a store never serves from a damaged log.
//!
//! raft-engine checks two things at start-up: the header of every file and the checksum of
//! every batch's item block (keys, commands, entry positions). A batch's *entries* block has
//! its own checksum, checked only when the entries are read. [`check_entries`] reads every
//! live entry once after opening, so that damage there also refuses the start instead of
//! surfacing later as a read error inside the raftstore.
//!
//! Why cutting a torn tail is acceptable (the reasoning is in `docs/architecture.md`,
//! "Raft log corruption"): a batch is acknowledged only after its fsync returns, so the tail a
//! crash tears is a write nobody was told about. A tail damaged *after* it was synced (bit rot,
//! a lying disk) may hold entries this store acknowledged; the store then restarts like a
//! follower that lost its last appends, and the leader, which holds every committed entry,
//! sends them again.

use std::path::{Path, PathBuf};

use raft_engine::Engine;
use serde::{Deserialize, Serialize};

use crate::engine_log::EntryExt;
use crate::RaftLogError;

/// How the log treats damage found when it opens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryMode {
    /// Damage at the end of the newest file (a torn last write) is cut off, and the log opens
    /// without it; damage anywhere else refuses to open. The default, as in TiKV.
    #[default]
    TolerateTailCorruption,
    /// Any damage, the tail included, refuses to open.
    AbsoluteConsistency,
}

impl RecoveryMode {
    pub(crate) fn to_engine(self) -> raft_engine::RecoveryMode {
        match self {
            RecoveryMode::TolerateTailCorruption => {
                raft_engine::RecoveryMode::TolerateTailCorruption
            }
            RecoveryMode::AbsoluteConsistency => raft_engine::RecoveryMode::AbsoluteConsistency,
        }
    }
}

/// Entries read per step of [`check_entries`]: bounds the memory of the check.
const CHECK_CHUNK_BYTES: usize = 8 << 20;

/// Turns raft-engine's refusal to open `dir` into our error; a corruption names the first
/// damaged file (raft-engine's own message does not).
pub(crate) fn open_error(dir: &Path, err: raft_engine::Error) -> RaftLogError {
    match RaftLogError::from(err) {
        RaftLogError::Corruption(msg) => {
            let place = match first_damaged_file(dir) {
                Some((file, why)) => format!("file {}: {why}", file.display()),
                None => format!("directory {}", dir.display()),
            };
            RaftLogError::Corruption(format!(
                "refusing to open the raft log, {place} (raft-engine: {msg})"
            ))
        }
        other => other,
    }
}

/// The first log file, in sequence order, that does not read back cleanly, and why.
fn first_damaged_file(dir: &Path) -> Option<(PathBuf, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".raftlog") || name.ends_with(".rewrite")
        })
        .collect();
    files.sort();
    for file in files {
        let items = match Engine::dump(&file) {
            Ok(items) => items,
            Err(e) => return Some((file, e.to_string())),
        };
        for item in items {
            if let Err(e) = item {
                return Some((file, e.to_string()));
            }
        }
    }
    None
}

/// Reads every live entry of every region once, so that a damaged entries block refuses the
/// start. Bounded memory: [`CHECK_CHUNK_BYTES`] per step.
pub(crate) fn check_entries(engine: &Engine, dir: &Path) -> Result<(), RaftLogError> {
    let mut out = Vec::new();
    for region_id in engine.raft_groups() {
        let (Some(first), Some(last)) =
            (engine.first_index(region_id), engine.last_index(region_id))
        else {
            continue;
        };
        let mut low = first;
        while low <= last {
            out.clear();
            let n = engine
                .fetch_entries_to::<EntryExt>(
                    region_id,
                    low,
                    last + 1,
                    Some(CHECK_CHUNK_BYTES),
                    &mut out,
                )
                .map_err(|e| match RaftLogError::from(e) {
                    RaftLogError::Corruption(msg) => RaftLogError::Corruption(format!(
                        "refusing to open the raft log in {}: region {region_id}, entries from \
                         index {low} are damaged: {msg}",
                        dir.display()
                    )),
                    other => other,
                })?;
            assert!(n > 0, "raft-engine returned no entry in [{low}, {last}]");
            low += n as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::{Read, Seek, SeekFrom, Write};

    use raft::eraftpb::Entry;

    use super::*;
    use crate::{LogBatch, RaftEngineLog, RaftLogConfig, RaftLogStore};

    const MARK: &[u8] = b"@@payload-mark@@";

    fn cfg(mode: RecoveryMode) -> RaftLogConfig {
        RaftLogConfig {
            target_file_size_bytes: 16 << 10,
            purge_threshold_bytes: 1 << 30,
            batch_compression_threshold_bytes: 0,
            recovery_mode: mode,
            ..Default::default()
        }
    }

    /// Entry `index` of region 1, one synced batch each; the payload holds a findable mark.
    fn must_write(log: &RaftEngineLog, indexes: std::ops::RangeInclusive<u64>) {
        for index in indexes {
            let mut data = MARK.to_vec();
            data.extend_from_slice(format!("{index:08}").as_bytes());
            data.resize(600, b'x');
            let e = Entry {
                index,
                term: 1,
                data: data.into(),
                ..Default::default()
            };
            let mut batch = LogBatch::default();
            batch.add_entries(1, vec![e]);
            log.write(batch, true).unwrap();
        }
    }

    fn log_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".raftlog"))
            .collect();
        files.sort();
        files
    }

    fn read(path: &Path) -> Vec<u8> {
        let mut buf = vec![];
        std::fs::File::open(path)
            .unwrap()
            .read_to_end(&mut buf)
            .unwrap();
        buf
    }

    fn overwrite(path: &Path, offset: usize, bytes: &[u8]) {
        let mut f = OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(offset as u64)).unwrap();
        f.write_all(bytes).unwrap();
        f.sync_all().unwrap();
    }

    /// Length of the file without the zeros raft-engine preallocates past the last write.
    fn data_len(buf: &[u8]) -> usize {
        buf.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_log_opens() {
        let live = tempfile::tempdir().unwrap();
        let log = RaftEngineLog::open(live.path(), &cfg(RecoveryMode::default())).unwrap();
        must_write(&log, 1..=10);
        // A crash image: the files as they are while open, the preallocated zeros included.
        let dir = tempfile::tempdir().unwrap();
        for file in log_files(live.path()) {
            std::fs::copy(&file, dir.path().join(file.file_name().unwrap())).unwrap();
        }
        drop(log);
        let newest = log_files(dir.path()).pop().unwrap();
        let len = data_len(&read(&newest));
        // Tear the last batch: garble its last bytes (checksum and item block).
        overwrite(&newest, len - 12, &[0xA5; 12]);

        let log = RaftEngineLog::open(dir.path(), &cfg(RecoveryMode::default())).unwrap();
        assert_eq!(
            log.last_index(1),
            Some(9),
            "the torn batch is cut, the rest kept"
        );
        let mut out = vec![];
        log.fetch_entries(1, 1, 10, None, &mut out).unwrap();
        assert_eq!(out.len(), 9);
        // Appending after the cut works, and survives another restart.
        must_write(&log, 10..=11);
        drop(log);
        let log = RaftEngineLog::open(dir.path(), &cfg(RecoveryMode::default())).unwrap();
        assert_eq!(log.last_index(1), Some(11));
    }

    #[test]
    fn absolute_consistency_refuses_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftEngineLog::open(dir.path(), &cfg(RecoveryMode::default())).unwrap();
        must_write(&log, 1..=10);
        drop(log);
        let newest = log_files(dir.path()).pop().unwrap();
        let len = std::fs::metadata(&newest).unwrap().len() as usize;
        overwrite(&newest, len - 12, &[0xA5; 12]);
        let err = RaftEngineLog::open(dir.path(), &cfg(RecoveryMode::AbsoluteConsistency))
            .err()
            .expect("a damaged tail must refuse to open");
        assert!(matches!(err, RaftLogError::Corruption(_)), "{err}");
    }

    #[test]
    fn a_damaged_batch_in_an_older_file_refuses_to_open_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftEngineLog::open(dir.path(), &cfg(RecoveryMode::default())).unwrap();
        must_write(&log, 1..=100);
        drop(log);
        let files = log_files(dir.path());
        assert!(files.len() >= 3, "test needs several files: {files:?}");
        // The end of the first file's data is the item block and checksum of its last batch.
        let victim = &files[0];
        let len = data_len(&read(victim));
        overwrite(victim, len - 8, &[0x5A; 4]);

        let err = RaftEngineLog::open(dir.path(), &cfg(RecoveryMode::default()))
            .err()
            .expect("damage outside the tail must refuse to open");
        let msg = err.to_string();
        assert!(matches!(err, RaftLogError::Corruption(_)), "{msg}");
        let name = victim.file_name().unwrap().to_string_lossy().into_owned();
        assert!(msg.contains(&name), "the error names the file: {msg}");
    }

    #[test]
    fn damaged_entries_in_an_older_file_refuse_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftEngineLog::open(dir.path(), &cfg(RecoveryMode::default())).unwrap();
        must_write(&log, 1..=100);
        drop(log);
        let files = log_files(dir.path());
        assert!(files.len() >= 3, "test needs several files: {files:?}");
        // Garble an entry's payload: only the entries block's checksum covers it.
        let victim = &files[1];
        let buf = read(victim);
        let at = buf
            .windows(MARK.len())
            .position(|w| w == MARK)
            .expect("payload in file");
        overwrite(victim, at + MARK.len() + 20, b"rot");

        let err = RaftEngineLog::open(dir.path(), &cfg(RecoveryMode::default()))
            .err()
            .expect("damaged entries must refuse to open");
        let msg = err.to_string();
        assert!(matches!(err, RaftLogError::Corruption(_)), "{msg}");
        assert!(
            msg.contains("region 1"),
            "the error names the region: {msg}"
        );
    }
}
