//! One conformance suite, run against every [`RaftLogStore`] implementation.

use std::path::Path;

use protobuf::Message;

use crate::*;

fn with_log<S: RaftLogStore>(factory: fn(&Path) -> S, case: fn(&S)) {
    let dir = tempfile::tempdir().unwrap();
    let log = factory(dir.path());
    case(&log);
}

fn entry(index: u64, term: u64) -> Entry {
    let mut e = Entry {
        index,
        term,
        ..Default::default()
    };
    e.data = format!("payload-{index}-{term}").into_bytes().into();
    e
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|index| entry(index, term)).collect()
}

fn must_append<S: RaftLogStore>(log: &S, region_id: u64, ents: Vec<Entry>) {
    let mut batch = LogBatch::default();
    batch.add_entries(region_id, ents);
    log.write(batch, true).unwrap();
}

fn must_fetch<S: RaftLogStore>(log: &S, region_id: u64, low: u64, high: u64) -> Vec<Entry> {
    let mut out = vec![];
    let n = log
        .fetch_entries(region_id, low, high, None, &mut out)
        .unwrap();
    assert_eq!(n, out.len());
    out
}

fn state(term: u64, commit: u64, last_index: u64) -> RaftState {
    let mut state = RaftState {
        last_index,
        ..Default::default()
    };
    state.hard_state.term = term;
    state.hard_state.vote = 1;
    state.hard_state.commit = commit;
    state
}

pub fn append_and_fetch<S: RaftLogStore>(log: &S) {
    assert_eq!((log.first_index(1), log.last_index(1)), (None, None));
    must_append(log, 1, entries(1..=10, 1));
    assert_eq!((log.first_index(1), log.last_index(1)), (Some(1), Some(10)));
    assert_eq!(must_fetch(log, 1, 1, 11), entries(1..=10, 1));
    assert_eq!(must_fetch(log, 1, 3, 5), entries(3..=4, 1));
    assert_eq!(log.entry(1, 5).unwrap(), Some(entry(5, 1)));
    assert_eq!(log.entry(1, 11).unwrap(), None);
    assert_eq!(log.entry(2, 1).unwrap(), None);
    let mut out = vec![];
    assert_eq!(log.fetch_entries(1, 5, 5, None, &mut out).unwrap(), 0);
    assert!(matches!(
        log.fetch_entries(1, 5, 12, None, &mut out),
        Err(RaftLogError::EntryUnavailable { region_id: 1, .. })
    ));
    assert!(matches!(
        log.fetch_entries(2, 1, 2, None, &mut out),
        Err(RaftLogError::EntryUnavailable { region_id: 2, .. })
    ));
    // Size limit: whole entries only, but always at least one.
    let size = u64::from(entry(1, 1).compute_size());
    assert_eq!(log.fetch_entries(1, 1, 11, Some(0), &mut out).unwrap(), 1);
    out.clear();
    assert_eq!(
        log.fetch_entries(1, 1, 11, Some(size * 3 + 1), &mut out)
            .unwrap(),
        3
    );
    assert_eq!(out, entries(1..=3, 1));
}

pub fn overwrite_truncates<S: RaftLogStore>(log: &S) {
    must_append(log, 1, entries(1..=10, 1));
    must_append(log, 1, entries(5..=6, 2));
    assert_eq!(log.last_index(1), Some(6));
    assert_eq!(log.entry(1, 7).unwrap(), None);
    let mut expected = entries(1..=4, 1);
    expected.extend(entries(5..=6, 2));
    assert_eq!(must_fetch(log, 1, 1, 7), expected);
    // Overwrite from the very first entry.
    must_append(log, 1, entries(1..=2, 3));
    assert_eq!(must_fetch(log, 1, 1, 3), entries(1..=2, 3));
    assert_eq!(log.last_index(1), Some(2));

    // A hole rejects the whole batch, including other regions' operations.
    let mut batch = LogBatch::default();
    batch.put_raft_state(2, &state(1, 0, 0));
    batch.add_entries(1, entries(4..=4, 3));
    assert!(matches!(
        log.write(batch, true),
        Err(RaftLogError::NonContiguousAppend {
            region_id: 1,
            first_index: 1,
            last_index: 2,
            append_index: 4
        })
    ));
    assert_eq!(log.raft_state(2).unwrap(), None);
    assert_eq!(log.last_index(1), Some(2));
}

pub fn state_and_meta<S: RaftLogStore>(log: &S) {
    assert_eq!(log.raft_state(1).unwrap(), None);
    let mut batch = LogBatch::default();
    batch.put_raft_state(1, &state(5, 3, 4));
    // A meta key equal to the internal state key must not clash with it.
    batch.put_meta(1, b"s", b"meta-s".to_vec());
    batch.put_meta(1, b"snap", b"snapshot meta".to_vec());
    log.write(batch, true).unwrap();
    assert_eq!(log.raft_state(1).unwrap(), Some(state(5, 3, 4)));
    assert_eq!(log.get_meta(1, b"s").unwrap(), Some(b"meta-s".to_vec()));
    assert_eq!(
        log.get_meta(1, b"snap").unwrap(),
        Some(b"snapshot meta".to_vec())
    );
    assert_eq!(log.get_meta(2, b"snap").unwrap(), None);

    let mut batch = LogBatch::default();
    batch.put_raft_state(1, &state(6, 4, 9));
    batch.delete_meta(1, b"snap");
    log.write(batch, false).unwrap();
    assert_eq!(log.raft_state(1).unwrap(), Some(state(6, 4, 9)));
    assert_eq!(log.get_meta(1, b"snap").unwrap(), None);
    assert_eq!(
        log.region_ids().unwrap(),
        vec![1],
        "state alone makes a region"
    );
}

pub fn compact<S: RaftLogStore>(log: &S) {
    assert_eq!(log.compact_to(1, 5).unwrap(), 0, "unknown region");
    must_append(log, 1, entries(1..=10, 1));
    assert_eq!(log.compact_to(1, 5).unwrap(), 4);
    assert_eq!((log.first_index(1), log.last_index(1)), (Some(5), Some(10)));
    assert_eq!(log.compact_to(1, 3).unwrap(), 0, "already compacted");
    assert_eq!(log.entry(1, 4).unwrap(), None);
    let mut out = vec![];
    assert!(matches!(
        log.fetch_entries(1, 4, 6, None, &mut out),
        Err(RaftLogError::EntryCompacted {
            region_id: 1,
            index: 4
        })
    ));
    let mut batch = LogBatch::default();
    batch.add_entries(1, entries(3..=4, 2));
    assert!(matches!(
        log.write(batch, true),
        Err(RaftLogError::NonContiguousAppend {
            append_index: 3,
            ..
        })
    ));
    // Overwrite at the first index is allowed.
    must_append(log, 1, entries(5..=7, 2));
    assert_eq!(must_fetch(log, 1, 5, 8), entries(5..=7, 2));
    // Compacting past the end empties the log; it may restart anywhere (after a snapshot).
    assert_eq!(log.compact_to(1, 100).unwrap(), 3);
    assert_eq!((log.first_index(1), log.last_index(1)), (None, None));
    must_append(log, 1, entries(100..=101, 3));
    assert_eq!(must_fetch(log, 1, 100, 102), entries(100..=101, 3));

    // The same rebase inside one batch, together with the new state.
    let mut batch = LogBatch::default();
    batch.compact_to(1, 200);
    batch.put_raft_state(1, &state(4, 200, 200));
    batch.add_entries(1, entries(201..=202, 4));
    log.write(batch, true).unwrap();
    assert_eq!(
        (log.first_index(1), log.last_index(1)),
        (Some(201), Some(202))
    );
}

pub fn clean_region<S: RaftLogStore>(log: &S) {
    for region_id in [1, 2] {
        let mut batch = LogBatch::default();
        batch.add_entries(region_id, entries(1..=5, 1));
        batch.put_raft_state(region_id, &state(1, 5, 5));
        batch.put_meta(region_id, b"m", b"v".to_vec());
        log.write(batch, true).unwrap();
    }
    let mut batch = LogBatch::default();
    batch.clean_region(1);
    log.write(batch, true).unwrap();
    assert_eq!((log.first_index(1), log.last_index(1)), (None, None));
    assert_eq!(log.raft_state(1).unwrap(), None);
    assert_eq!(log.get_meta(1, b"m").unwrap(), None);
    assert_eq!(log.region_ids().unwrap(), vec![2]);
    assert_eq!(log.raft_state(2).unwrap(), Some(state(1, 5, 5)));
    assert_eq!(must_fetch(log, 2, 1, 6), entries(1..=5, 1));
    // A cleaned region can be recreated, from any index.
    must_append(log, 1, entries(7..=8, 2));
    assert_eq!(log.first_index(1), Some(7));
    assert_eq!(log.region_ids().unwrap(), vec![1, 2]);
}

pub fn many_regions_one_batch<S: RaftLogStore>(log: &S) {
    let mut batch = LogBatch::default();
    for region_id in (1..=50).rev() {
        batch.add_entries(region_id, entries(1..=region_id, region_id));
        batch.put_raft_state(region_id, &state(region_id, 1, region_id));
    }
    assert!(!batch.is_empty());
    let size = batch.size_bytes();
    assert!(size > 0);
    assert!(log.write(batch, true).unwrap() > 0);
    assert_eq!(log.region_ids().unwrap(), (1..=50).collect::<Vec<_>>());
    for region_id in 1..=50 {
        assert_eq!(log.last_index(region_id), Some(region_id));
        assert_eq!(
            must_fetch(log, region_id, 1, region_id + 1),
            entries(1..=region_id, region_id)
        );
        assert_eq!(
            log.raft_state(region_id).unwrap(),
            Some(state(region_id, 1, region_id))
        );
    }
    assert!(log.purge_expired_files().is_ok());
    // An empty batch is fine too.
    log.write(LogBatch::default(), true).unwrap();
}

fn mem_log(_: &Path) -> MemRaftLog {
    MemRaftLog::new()
}

fn small_config() -> RaftLogConfig {
    RaftLogConfig {
        target_file_size_bytes: 4 << 10,
        purge_threshold_bytes: 16 << 10,
        batch_compression_threshold_bytes: 1 << 10,
        recovery_threads: 1,
        enable_log_recycle: false,
        ..Default::default()
    }
}

fn engine_log(dir: &Path) -> RaftEngineLog {
    RaftEngineLog::open(dir, &small_config()).unwrap()
}

fn fault_fs_log(dir: &Path) -> RaftEngineLog<FaultFileSystem> {
    RaftEngineLog::open_with_faults(dir, &small_config(), FaultInjector::new()).unwrap()
}

macro_rules! conformance {
    ($name:ident, $factory:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn append_and_fetch() {
                with_log($factory, super::append_and_fetch);
            }

            #[test]
            fn overwrite_truncates() {
                with_log($factory, super::overwrite_truncates);
            }

            #[test]
            fn state_and_meta() {
                with_log($factory, super::state_and_meta);
            }

            #[test]
            fn compact() {
                with_log($factory, super::compact);
            }

            #[test]
            fn clean_region() {
                with_log($factory, super::clean_region);
            }

            #[test]
            fn many_regions_one_batch() {
                with_log($factory, super::many_regions_one_batch);
            }
        }
    };
}

conformance!(mem, mem_log);
conformance!(raft_engine, engine_log);
conformance!(raft_engine_fault_fs, fault_fs_log);

#[test]
fn raft_engine_reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = engine_log(dir.path());
        let mut batch = LogBatch::default();
        for region_id in 1..=3 {
            batch.add_entries(region_id, entries(1..=20, 1));
            batch.put_raft_state(region_id, &state(1, 20, 20));
            batch.put_meta(region_id, b"snap", vec![region_id as u8]);
        }
        log.write(batch, true).unwrap();
        must_append(&log, 1, entries(15..=16, 2));
        log.compact_to(2, 10).unwrap();
        let mut batch = LogBatch::default();
        batch.clean_region(3);
        log.write(batch, true).unwrap();
    }
    let log = engine_log(dir.path());
    assert_eq!(log.region_ids().unwrap(), vec![1, 2]);
    let mut expected = entries(1..=14, 1);
    expected.extend(entries(15..=16, 2));
    assert_eq!(must_fetch(&log, 1, 1, 17), expected);
    assert_eq!(
        (log.first_index(2), log.last_index(2)),
        (Some(10), Some(20))
    );
    assert_eq!(must_fetch(&log, 2, 10, 21), entries(10..=20, 1));
    assert_eq!(log.raft_state(2).unwrap(), Some(state(1, 20, 20)));
    assert_eq!(log.get_meta(2, b"snap").unwrap(), Some(vec![2]));
    assert_eq!(log.raft_state(3).unwrap(), None);
    assert_eq!(log.first_index(3), None);
}

#[test]
fn raft_engine_purge_keeps_live_entries() {
    let dir = tempfile::tempdir().unwrap();
    let log = engine_log(dir.path());
    for round in 0..40u64 {
        let mut batch = LogBatch::default();
        for region_id in [1, 2] {
            let first = round * 10 + 1;
            batch.add_entries(region_id, entries(first..=first + 9, 1));
        }
        log.write(batch, false).unwrap();
        log.compact_to(1, round * 10 + 1).unwrap();
    }
    let used_before = log.used_size_bytes();
    let to_compact = log.purge_expired_files().unwrap();
    assert!(
        to_compact.iter().all(|id| [1, 2].contains(id)),
        "{to_compact:?}"
    );
    assert!(log.used_size_bytes() <= used_before);
    assert_eq!(must_fetch(&log, 2, 1, 401).len(), 400);
    assert_eq!(must_fetch(&log, 1, 391, 401), entries(391..=400, 1));
}

#[test]
fn config_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bad = RaftLogConfig {
        purge_threshold_bytes: 1,
        ..RaftLogConfig::default()
    };
    assert!(matches!(
        RaftEngineLog::open(dir.path(), &bad),
        Err(RaftLogError::InvalidConfig(_))
    ));
    RaftLogConfig::default().validate().unwrap();
}
