//! An in-memory snapshot-isolation database that runs generated templates, and the property
//! tests built on it: what it produces must pass, and mutations of it must not.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{check_list_append_with, AnomalyKind, CheckOptions, ListAppendGen, Op, Outcome, Txn};

/// How faithfully the simulated database implements snapshot isolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    SnapshotIsolation,
    /// No first-committer-wins: concurrent writers of a key all commit.
    NoWriteConflicts,
    /// Snapshots taken up to 20 ticks before the transaction began.
    StaleSnapshots,
    /// Rolled-back transactions' appends get installed anyway.
    AbortedWritesVisible,
}

struct SimConfig {
    mode: Mode,
    seed: u64,
    keys: u64,
    max_ops: usize,
    txns: usize,
    concurrency: usize,
    appends_per_key_max: u64,
}

struct Running {
    txn: Txn,
    start_ts: u64,
    /// Own appends per key, in order.
    writes: BTreeMap<u64, Vec<u64>>,
}

type Db = HashMap<u64, Vec<(u64, Vec<u64>)>>;

fn snapshot(db: &Db, key: u64, ts: u64) -> Vec<u64> {
    db.get(&key)
        .and_then(|versions| versions.iter().rev().find(|(t, _)| *t <= ts))
        .map(|(_, list)| list.clone())
        .unwrap_or_default()
}

/// Runs `cfg.txns` generated transactions, up to `cfg.concurrency` at a time, each reading the
/// snapshot at its start and committing first-committer-wins. Some roll back, some fail midway
/// (later reads unobserved), some commit or not with an unknown outcome.
fn simulate(cfg: &SimConfig) -> Vec<Txn> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_5eed);
    let mut gen = ListAppendGen::new(cfg.seed, cfg.keys, cfg.max_ops)
        .with_appends_per_key_max(cfg.appends_per_key_max);
    let mut db = Db::new();
    let (mut now, mut begun) = (0u64, 0usize);
    let mut running: Vec<Running> = Vec::new();
    let mut done = Vec::with_capacity(cfg.txns);
    while begun < cfg.txns || !running.is_empty() {
        let can_begin = begun < cfg.txns && running.len() < cfg.concurrency;
        now += 1;
        if can_begin && (running.is_empty() || rng.gen_bool(0.5)) {
            let lag = match cfg.mode {
                Mode::StaleSnapshots => rng.gen_range(0..20),
                _ => 0,
            };
            running.push(begin(&db, &mut gen, begun as u64, now, lag));
            begun += 1;
            continue;
        }
        let mut t = running.swap_remove(rng.gen_range(0..running.len()));
        let conflict = cfg.mode != Mode::NoWriteConflicts
            && t.writes.keys().any(|k| {
                db.get(k)
                    .and_then(|v| v.last())
                    .is_some_and(|(ts, _)| *ts > t.start_ts)
            });
        let roll = rng.gen_range(0..100);
        let (outcome, applied) = match roll {
            _ if conflict => (Outcome::Aborted, false),
            0..=4 => (Outcome::Aborted, cfg.mode == Mode::AbortedWritesVisible),
            5..=9 => {
                // Failed midway: ops after the failure were never observed.
                let cut = rng.gen_range(0..t.txn.ops.len());
                for op in &mut t.txn.ops[cut..] {
                    if let Op::Read { values, .. } = op {
                        *values = None;
                    }
                }
                (Outcome::Aborted, false)
            }
            10..=14 => (Outcome::Unknown, rng.gen_bool(0.5)),
            _ => (Outcome::Committed, true),
        };
        if applied {
            for (key, appends) in &t.writes {
                // Append is read-modify-write at the snapshot, as a driver does it over a KV
                // store; with first-committer-wins that snapshot is the latest version.
                let mut list = snapshot(&db, *key, t.start_ts);
                list.extend(appends);
                db.entry(*key).or_default().push((now, list));
            }
        }
        t.txn.outcome = outcome;
        t.txn.end = Some(now);
        done.push(t.txn);
    }
    done
}

fn begin(db: &Db, gen: &mut ListAppendGen, id: u64, now: u64, lag: u64) -> Running {
    let snapshot_ts = now.saturating_sub(lag);
    let mut writes: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut ops = gen.next_ops();
    for op in &mut ops {
        match op {
            Op::Append { key, value } => writes.entry(*key).or_default().push(*value),
            Op::Read { key, values } => {
                let mut list = snapshot(db, *key, snapshot_ts);
                list.extend(writes.get(key).into_iter().flatten());
                *values = Some(list);
            }
        }
    }
    let mut txn = Txn::new(id, id % 16, ops, Outcome::Unknown);
    txn.start = Some(now);
    Running {
        txn,
        start_ts: snapshot_ts,
        writes,
    }
}

fn config(seed: u64, keys: u64, concurrency: usize, txns: usize) -> SimConfig {
    SimConfig {
        mode: Mode::SnapshotIsolation,
        seed,
        keys,
        max_ops: 5,
        txns,
        concurrency,
        appends_per_key_max: 16,
    }
}

fn realtime() -> CheckOptions {
    CheckOptions { realtime: true }
}

/// The element `txn` appended to `key`, if any.
fn appends(txn: &Txn, key: u64, value: u64) -> bool {
    txn.ops.contains(&Op::append(key, value))
}

/// Drops the first element of a read whose first two elements another transaction appended,
/// where the first is also held by a read of a third transaction (not its appender). Returns
/// false if none qualifies.
fn drop_first_element_of_a_read(h: &mut [Txn]) -> bool {
    let mut observed: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for (i, t) in h.iter().enumerate() {
        for op in &t.ops {
            if let Op::Read {
                key,
                values: Some(vs),
            } = op
            {
                vs.iter()
                    .for_each(|v| observed.entry((*key, *v)).or_default().push(i));
            }
        }
    }
    let writer = |h: &[Txn], key: u64, v: u64| h.iter().position(|t| appends(t, key, v));
    for i in 0..h.len() {
        for o in 0..h[i].ops.len() {
            let Op::Read {
                key,
                values: Some(vs),
            } = &h[i].ops[o]
            else {
                continue;
            };
            // Both of the first two elements came from the database, not the reader's own
            // appends: dropping the first then leaves a list that is no prefix of the order.
            if vs.len() < 2 || vs[..2].iter().any(|v| Some(i) == writer(h, *key, *v)) {
                continue;
            }
            let w = writer(h, *key, vs[0]);
            let others = &observed[&(*key, vs[0])];
            if others.iter().any(|&j| j != i && Some(j) != w) {
                let Op::Read {
                    values: Some(vs), ..
                } = &mut h[i].ops[o]
                else {
                    unreachable!()
                };
                vs.remove(0);
                return true;
            }
        }
    }
    false
}

/// Makes the first read of a key (by a transaction other than the appender) also return an
/// element an aborted transaction appended. Returns false if none qualifies.
fn read_from_an_aborted_txn(h: &mut [Txn]) -> bool {
    let aborted: Vec<(usize, u64, u64)> = h
        .iter()
        .enumerate()
        .filter(|(_, t)| t.outcome == Outcome::Aborted)
        .flat_map(|(i, t)| {
            t.ops.iter().filter_map(move |op| match op {
                Op::Append { key, value } => Some((i, *key, *value)),
                _ => None,
            })
        })
        .collect();
    for (w, key, value) in aborted {
        for (_, t) in h.iter_mut().enumerate().filter(|(i, _)| *i != w) {
            let mut own = 0;
            for op in &mut t.ops {
                match op {
                    Op::Append { key: k, .. } if *k == key => own += 1,
                    Op::Read {
                        key: k,
                        values: Some(vs),
                    } if *k == key => {
                        let at = vs.len() - own;
                        vs.insert(at, value);
                        return true;
                    }
                    Op::Read { key: k, .. } if *k == key => break,
                    _ => {}
                }
            }
        }
    }
    false
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn simulated_snapshot_isolation_passes(
        seed in any::<u64>(), keys in 1u64..6, concurrency in 1usize..7, txns in 10usize..160
    ) {
        let h = simulate(&config(seed, keys, concurrency, txns));
        let report = check_list_append_with(&h, &realtime());
        prop_assert!(report.kinds().iter().all(|k| *k == AnomalyKind::G2Item), "{}", report);
    }

    #[test]
    fn serial_simulation_is_clean(seed in any::<u64>(), keys in 1u64..6, txns in 10usize..160) {
        let h = simulate(&config(seed, keys, 1, txns));
        let report = check_list_append_with(&h, &realtime());
        prop_assert!(report.is_clean(), "{}", report);
    }

    #[test]
    fn dropping_an_element_from_a_read_is_caught(
        seed in any::<u64>(), keys in 1u64..4, concurrency in 1usize..5
    ) {
        let mut h = simulate(&config(seed, keys, concurrency, 60));
        if drop_first_element_of_a_read(&mut h) {
            let report = check_list_append_with(&h, &realtime());
            prop_assert!(!report.is_valid_snapshot_isolation(), "{}", report);
        }
    }

    #[test]
    fn reading_from_an_aborted_txn_is_caught(
        seed in any::<u64>(), keys in 1u64..4, concurrency in 1usize..5
    ) {
        let mut h = simulate(&config(seed, keys, concurrency, 60));
        if read_from_an_aborted_txn(&mut h) {
            let report = check_list_append_with(&h, &realtime());
            prop_assert!(report.kinds().contains(&AnomalyKind::G1a), "{}", report);
        }
    }

    #[test]
    fn aborting_an_observed_writer_is_caught(seed in any::<u64>(), concurrency in 1usize..5) {
        let mut h = simulate(&config(seed, 3, concurrency, 60));
        // An element some transaction other than its appender read.
        let observed = h.iter().enumerate().flat_map(|(i, t)| t.ops.iter().map(move |op| (i, op)))
            .find_map(|(i, op)| match op {
                Op::Read { key, values: Some(vs) } => vs
                    .iter()
                    .find(|v| !appends(&h[i], *key, **v))
                    .map(|v| (*key, *v)),
                _ => None,
            });
        if let Some((key, value)) = observed {
            let w = h.iter().position(|t| appends(t, key, value)).expect("no garbage in a simulation");
            h[w].outcome = Outcome::Aborted;
            let report = check_list_append_with(&h, &realtime());
            prop_assert!(report.kinds().contains(&AnomalyKind::G1a), "{}", report);
        }
    }
}

/// How many of 20 seeds' histories from a database in `mode` the checker rejects.
fn rejected_of_20(mode: Mode) -> usize {
    (0..20)
        .filter(|&seed| {
            let h = simulate(&SimConfig {
                mode,
                ..config(seed, 2, 4, 100)
            });
            !check_list_append_with(&h, &realtime()).is_valid_snapshot_isolation()
        })
        .count()
}

#[test]
fn broken_databases_are_caught() {
    assert_eq!(rejected_of_20(Mode::SnapshotIsolation), 0);
    assert_eq!(rejected_of_20(Mode::NoWriteConflicts), 20);
    assert_eq!(rejected_of_20(Mode::StaleSnapshots), 20);
    // An installed aborted append that no later read happens to return is invisible to any
    // checker (seed 16 has one).
    assert!(rejected_of_20(Mode::AbortedWritesVisible) >= 18);
}

#[test]
fn mutations_apply_to_a_typical_history() {
    let h = simulate(&config(42, 2, 4, 60));
    assert!(drop_first_element_of_a_read(&mut h.clone()));
    assert!(read_from_an_aborted_txn(&mut h.clone()));
    let outcomes: Vec<Outcome> = h.iter().map(|t| t.outcome).collect();
    for o in [Outcome::Committed, Outcome::Aborted, Outcome::Unknown] {
        assert!(outcomes.contains(&o), "the simulation produces {o} txns");
    }
}

#[test]
fn five_thousand_txns_check_quickly() {
    let cfg = SimConfig {
        appends_per_key_max: crate::APPENDS_PER_KEY_DEFAULT,
        max_ops: 7,
        ..config(7, 10, 10, 5_000)
    };
    let h = simulate(&cfg);
    let ops: usize = h.iter().map(|t| t.ops.len()).sum();
    let started = Instant::now();
    let report = check_list_append_with(&h, &realtime());
    let elapsed = started.elapsed();
    println!(
        "checked {} txns, {ops} ops, {} graph txns, {} edges in {elapsed:?}: {:?}",
        h.len(),
        report.graph_txns,
        report.graph_edges,
        report.kinds()
    );
    assert!(report.is_valid_snapshot_isolation(), "{report}");
}
