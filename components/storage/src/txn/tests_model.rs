//! Property test against a model of snapshot isolation.
//!
//! Random transactions (puts and deletes of short and long values on a few keys) start at
//! lagging timestamps, prewrite, and later commit or roll back, interleaved. The model keeps,
//! per key, the committed versions and rollback records and the pending locks. After every
//! step: prewrite success must match the model's conflict rule, and a read at a random ts must
//! return exactly the model's answer (the value, or a lock). At the end, GC at a random safe
//! point (in bounded, resumed batches) must not change any read at or above the safe point.

use std::collections::{BTreeMap, BTreeSet};

use engine::{KvEngine, MemEngine};
use proptest::prelude::*;
use txn_types::TimeStamp;

use super::*;
use crate::mvcc;
use crate::test_util::*;
use crate::txn;

const KEYS: [&[u8]; 3] = [b"k0", b"k1", b"k2"];

#[derive(Debug, Clone)]
struct TxnSpec {
    /// Key index -> value (None: delete).
    ops: BTreeMap<usize, Option<Vec<u8>>>,
    commit: bool,
    lag: u64,
}

fn value() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        (0u8..8).prop_map(|b| Some(vec![b'a' + b; 3])),
        (0u8..8).prop_map(|b| Some(vec![b'A' + b; 300])),
    ]
}

fn txn_spec() -> impl Strategy<Value = TxnSpec> {
    (
        proptest::collection::btree_map(0usize..KEYS.len(), value(), 1..=KEYS.len()),
        any::<bool>(),
        0u64..4,
    )
        .prop_map(|(ops, commit, lag)| TxnSpec { ops, commit, lag })
}

#[derive(Debug, Clone, PartialEq)]
enum Rec {
    Value(Option<Vec<u8>>),
    Rollback,
}

#[derive(Default)]
struct Model {
    /// Per key: ts -> record (commit ts for values, start ts for rollbacks).
    records: Vec<BTreeMap<u64, Rec>>,
    /// Per key: the pending lock's (start_ts, value).
    locks: Vec<Option<(u64, Option<Vec<u8>>)>>,
    used: BTreeSet<u64>,
    clock: u64,
}

impl Model {
    fn new() -> Self {
        Model {
            records: vec![BTreeMap::new(); KEYS.len()],
            locks: vec![None; KEYS.len()],
            clock: 100,
            ..Model::default()
        }
    }

    fn fresh_ts(&mut self) -> u64 {
        self.clock += 10;
        self.used.insert(self.clock);
        self.clock
    }

    fn lagging_ts(&mut self, lag: u64) -> u64 {
        let mut ts = self.clock - lag * 10 + 5;
        while self.used.contains(&ts) {
            ts -= 1;
        }
        self.used.insert(ts);
        ts
    }

    fn prewrite_ok(&self, spec: &TxnSpec, start: u64) -> bool {
        spec.ops.keys().all(|&k| {
            self.locks[k].is_none() && self.records[k].range(start + 1..).next().is_none()
        })
    }

    fn read(&self, k: usize, ts: u64) -> Result<Option<Vec<u8>>, u64> {
        if let Some((start, _)) = &self.locks[k] {
            if *start <= ts {
                return Err(*start);
            }
        }
        let found = self.records[k]
            .range(..=ts)
            .rev()
            .find_map(|(_, r)| match r {
                Rec::Value(v) => Some(v.clone()),
                Rec::Rollback => None,
            });
        Ok(found.flatten())
    }
}

fn read_engine(engine: &MemEngine, k: usize, ts: u64) -> Result<Option<Vec<u8>>, u64> {
    match mvcc::get(engine.snapshot().as_ref(), KEYS[k], TimeStamp::new(ts), &[]) {
        Ok(v) => Ok(v),
        Err(TxnError::KeyIsLocked(info)) => Err(info.lock_version.into_inner()),
        Err(e) => panic!("read failed: {e}"),
    }
}

fn keys_of(spec: &TxnSpec) -> Vec<Vec<u8>> {
    spec.ops.keys().map(|&k| KEYS[k].to_vec()).collect()
}

/// Prewrites `spec`; on failure rolls it back as a client would. Returns its start ts if it
/// is now pending.
fn run_prewrite(engine: &MemEngine, model: &mut Model, spec: &TxnSpec) -> Option<u64> {
    let start = model.lagging_ts(spec.lag);
    let mutations = spec
        .ops
        .iter()
        .map(|(&k, v)| match v {
            Some(v) => put(KEYS[k], v),
            None => delete(KEYS[k]),
        })
        .collect();
    let primary = KEYS[*spec.ops.keys().next().unwrap()];
    let out = try_prewrite(engine, &prewrite_req(mutations, primary, start), 0);
    assert_eq!(
        out.key_errors.is_empty(),
        model.prewrite_ok(spec, start),
        "prewrite at {start}: {:?}",
        out.key_errors
    );
    if !out.key_errors.is_empty() {
        let rollback = txn::batch_rollback(
            engine.snapshot().as_ref(),
            &keys_of(spec),
            TimeStamp::new(start),
        )
        .unwrap();
        must_apply(engine, rollback.modifies);
        for &k in spec.ops.keys() {
            model.records[k].insert(start, Rec::Rollback);
        }
        return None;
    }
    for (&k, v) in &spec.ops {
        model.locks[k] = Some((start, v.clone()));
    }
    Some(start)
}

fn run_finish(engine: &MemEngine, model: &mut Model, spec: &TxnSpec, start: u64) {
    let keys = keys_of(spec);
    if spec.commit {
        let commit = model.fresh_ts();
        let out = txn::commit(
            engine.snapshot().as_ref(),
            &keys,
            TimeStamp::new(start),
            TimeStamp::new(commit),
        )
        .unwrap();
        must_apply(engine, out.modifies);
        for &k in spec.ops.keys() {
            let (_, v) = model.locks[k].take().unwrap();
            model.records[k].insert(commit, Rec::Value(v));
        }
    } else {
        let out =
            txn::batch_rollback(engine.snapshot().as_ref(), &keys, TimeStamp::new(start)).unwrap();
        must_apply(engine, out.modifies);
        for &k in spec.ops.keys() {
            model.locks[k] = None;
            model.records[k].insert(start, Rec::Rollback);
        }
    }
}

fn all_reads(engine: &MemEngine, from: u64, to: u64) -> Vec<Result<Option<Vec<u8>>, u64>> {
    (0..KEYS.len())
        .flat_map(|k| (from..=to).map(move |ts| (k, ts)))
        .map(|(k, ts)| read_engine(engine, k, ts))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn snapshot_isolation_matches_model(
        specs in proptest::collection::vec(txn_spec(), 1..10),
        // true: start the next transaction; false: finish the oldest pending one.
        schedule in proptest::collection::vec(any::<bool>(), 20),
        reads in proptest::collection::vec((0usize..KEYS.len(), 0u64..1_000), 40),
        safe_point_pick in 0u64..1_000,
    ) {
        let engine = MemEngine::new();
        let mut model = Model::new();
        let mut pending: Vec<(usize, u64)> = Vec::new();
        let mut next = 0;
        let mut reads = reads.into_iter().cycle();
        let mut schedule = schedule.into_iter().chain(std::iter::repeat(false));
        while next < specs.len() || !pending.is_empty() {
            let start_next = next < specs.len() && (pending.is_empty() || schedule.next().unwrap());
            if start_next {
                model.fresh_ts();
                if let Some(start) = run_prewrite(&engine, &mut model, &specs[next]) {
                    pending.push((next, start));
                }
                next += 1;
            } else {
                let (i, start) = pending.remove(0);
                run_finish(&engine, &mut model, &specs[i], start);
            }
            let (k, pick) = reads.next().unwrap();
            let ts = 1 + pick % (model.clock + 10);
            prop_assert_eq!(read_engine(&engine, k, ts), model.read(k, ts), "key {} at {}", k, ts);
        }
        let end = model.clock + 10;
        let safe_point = 1 + safe_point_pick % end;
        let before = all_reads(&engine, safe_point, end);
        let mut region_start = Vec::new();
        loop {
            let out = txn::gc(engine.snapshot().as_ref(), &region_start, b"", TimeStamp::new(safe_point), 1).unwrap();
            must_apply(&engine, out.modifies);
            match out.next_key {
                Some(key) => region_start = key.into_encoded(),
                None => break,
            }
        }
        prop_assert_eq!(all_reads(&engine, safe_point, end), before);
    }
}
