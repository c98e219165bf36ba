//! Register histories built by hand (each linearizable or showing one violation), parsing,
//! and property tests over a simulated atomic register.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::register::{
    history_to_json_lines, parse_history, RegisterHistoryError, RegisterOpError,
};
use crate::{
    check_register, check_register_with, RegisterCheckOptions, RegisterOp, RegisterOpKind,
    RegisterValue, RegisterVerdict, RegisterViolation,
};

const KEY: &str = "k";

fn val(v: Option<i64>) -> Option<RegisterValue> {
    v.map(RegisterValue::Int)
}
fn w(client: u64, v: i64, call: u64, ret: u64) -> RegisterOp {
    RegisterOp::write(client, KEY, v.into(), call, Some(ret))
}
fn w_unknown(client: u64, v: i64, call: u64) -> RegisterOp {
    RegisterOp::write(client, KEY, v.into(), call, None)
}
fn r(client: u64, out: Option<i64>, call: u64, ret: u64) -> RegisterOp {
    RegisterOp::read(client, KEY, val(out), call, ret)
}
fn cas(client: u64, (e, n): (Option<i64>, i64), ok: bool, call: u64, ret: u64) -> RegisterOp {
    RegisterOp::cas(client, KEY, (val(e), n.into()), Some(ok), call, Some(ret))
}
fn cas_unknown(client: u64, (e, n): (Option<i64>, i64), call: u64) -> RegisterOp {
    RegisterOp::cas(client, KEY, (val(e), n.into()), None, call, None)
}

fn must_pass(history: &[RegisterOp]) {
    let report = check_register(history);
    assert!(report.is_linearizable(), "{report}");
}

fn must_fail(history: &[RegisterOp]) -> RegisterViolation {
    let report = check_register(history);
    let violations: Vec<_> = report.violations().collect();
    assert_eq!(violations.len(), 1, "expected one violation: {report}");
    assert!(!report.is_linearizable());
    violations[0].1.clone()
}

#[test]
fn sequential_history_passes() {
    must_pass(&[
        r(1, None, 0, 1),
        w(1, 1, 2, 3),
        r(2, Some(1), 4, 5),
        w(3, 2, 6, 7),
        r(1, Some(2), 8, 9),
        cas(2, (Some(2), 3), true, 10, 11),
        r(3, Some(3), 12, 13),
        cas(1, (Some(2), 4), false, 14, 15),
        cas(1, (None, 5), false, 16, 17),
        r(2, Some(3), 18, 19),
    ]);
    must_pass(&[]);
}

#[test]
fn concurrent_overlapping_history_passes() {
    // w1 and w2 overlap; reads inside both windows may see them in either order, as long as
    // one order explains all: w2, r->2, w1, r->1.
    must_pass(&[
        w(1, 1, 0, 10),
        w(2, 2, 5, 15),
        r(3, Some(2), 6, 7),
        r(4, Some(1), 8, 9),
        r(3, Some(1), 16, 17),
    ]);
    // A cas concurrent with the write it depends on.
    must_pass(&[
        cas(2, (Some(1), 2), true, 0, 10),
        w(1, 1, 1, 2),
        r(3, Some(2), 11, 12),
    ]);
    // A failed cas concurrent with the write that makes it fail.
    must_pass(&[w(1, 1, 3, 4), cas(2, (None, 5), false, 0, 10)]);
    must_fail(&[cas(2, (None, 5), false, 1, 2), w(1, 1, 3, 4)]);
}

#[test]
fn unknown_outcome_writes_may_or_may_not_take_effect() {
    // Took effect, long after the client gave up on it.
    must_pass(&[
        w(1, 1, 0, 1),
        w_unknown(2, 2, 2),
        r(3, Some(1), 3, 4),
        r(3, Some(2), 100, 101),
        r(3, Some(2), 102, 103),
    ]);
    // Never took effect.
    must_pass(&[w_unknown(1, 1, 0), r(2, None, 5, 6), r(2, None, 7, 8)]);
    // An unknown cas that did.
    must_pass(&[
        w(1, 1, 0, 1),
        cas_unknown(2, (Some(1), 2), 2),
        r(3, Some(2), 9, 10),
    ]);
    // A read with an unknown outcome constrains nothing, whatever it claims.
    let mut h = vec![w(1, 1, 0, 1)];
    h.push(RegisterOp::read(2, KEY, val(Some(9)), 2, 3));
    h[1].ret_ns = None;
    must_pass(&h);
    assert_eq!(check_register(&h).keys[0].ops, 1);
}

#[test]
fn unknown_write_needed_to_explain_a_read_passes_and_fails_without_it() {
    let with = [w(1, 1, 0, 1), w_unknown(2, 2, 2), r(3, Some(2), 5, 6)];
    must_pass(&with);
    let without = [w(1, 1, 0, 1), r(3, Some(2), 5, 6)];
    must_fail(&without);
    // But it cannot take effect before it was called.
    must_fail(&[w(1, 1, 0, 1), r(3, Some(2), 2, 3), w_unknown(2, 2, 4)]);
}

#[test]
fn stale_read_fails_and_names_the_read() {
    let h = [w(1, 1, 0, 1), w(2, 2, 2, 3), r(3, Some(1), 4, 5)];
    let v = must_fail(&h);
    assert_eq!(v.stuck, 2, "{v}");
    assert_eq!(v.stuck_op, h[2]);
    assert_eq!(v.prefix, vec![0, 1]);
    assert_eq!(v.value, val(Some(2)));
    assert!(
        v.to_string()
            .starts_with("op #2 (client 3 k r -> 1 [4..5])"),
        "{v}"
    );
}

#[test]
fn read_of_a_value_never_written_fails() {
    let v = must_fail(&[w(1, 1, 0, 1), r(2, Some(1), 2, 3), r(2, Some(9), 4, 5)]);
    assert_eq!((v.stuck, v.prefix.len()), (2, 2), "{v}");
}

#[test]
fn lost_write_followed_by_reads_fails() {
    // The acknowledged write of 2 is not seen by reads that begin after it returned.
    let v = must_fail(&[
        w(1, 1, 0, 1),
        w(2, 2, 2, 3),
        r(3, Some(1), 4, 5),
        r(1, Some(1), 6, 7),
    ]);
    assert_eq!(v.stuck, 2, "{v}");
    // An acknowledged first write that reads never see.
    must_fail(&[w(1, 1, 0, 1), r(2, None, 2, 3)]);
}

#[test]
fn cas_against_a_value_not_current_fails() {
    let v = must_fail(&[
        w(1, 1, 0, 1),
        w(2, 2, 2, 3),
        cas(3, (Some(1), 3), true, 4, 5),
    ]);
    assert_eq!(v.stuck, 2, "{v}");
    // A cas that claims to fail while the register holds what it expected.
    must_fail(&[w(1, 1, 0, 1), cas(3, (Some(1), 3), false, 4, 5)]);
}

#[test]
fn two_cas_from_the_same_value_cannot_both_win() {
    let h = [
        w(1, 1, 0, 1),
        cas(2, (Some(1), 2), true, 2, 10),
        cas(3, (Some(1), 3), true, 3, 11),
    ];
    must_fail(&h);
    // One winning and one losing is fine, in either order.
    let mut ok = h.clone();
    ok[2] = cas(3, (Some(1), 3), false, 3, 11);
    must_pass(&ok);
    ok[1] = cas(2, (Some(1), 2), false, 2, 10);
    ok[2] = cas(3, (Some(1), 3), true, 3, 11);
    must_pass(&ok);
}

#[test]
fn keys_are_checked_independently() {
    let mut h = vec![w(1, 1, 0, 1), r(2, Some(1), 2, 3)];
    let mut bad = vec![w(1, 1, 0, 1), w(2, 2, 2, 3), r(3, Some(1), 4, 5)];
    for op in &mut bad {
        op.key = "other".into();
    }
    h.extend(bad);
    let report = check_register(&h);
    assert_eq!(report.keys.len(), 2);
    assert_eq!(report.keys[0].verdict, RegisterVerdict::Linearizable);
    let violations: Vec<_> = report.violations().collect();
    assert_eq!(violations.len(), 1, "{report}");
    assert_eq!((violations[0].0, violations[0].1.stuck), ("other", 4));
}

#[test]
fn exceeding_the_state_bound_is_unknown_not_a_pass() {
    let h: Vec<RegisterOp> = (0..8).map(|c| w(c, c as i64 + 1, 0, 100)).collect();
    let opts = RegisterCheckOptions { states_max: 5 };
    let report = check_register_with(&h, &opts);
    assert!(!report.is_linearizable(), "{report}");
    assert_eq!(report.undecided().collect::<Vec<_>>(), vec![KEY]);
    assert_eq!(
        report.keys[0].verdict,
        RegisterVerdict::Unknown { states_max: 5 }
    );
    must_pass(&h);
}

#[test]
fn parse_reads_every_kind_and_round_trips() {
    let text = r#"
{"client": 3, "key": "k17", "f": "w", "value": 5, "out": null, "call_ns": 10, "ret_ns": 20}
{"client": 4, "key": "k17", "f": "r", "value": null, "out": 5, "call_ns": 15, "ret_ns": 30}
{"client": 5, "key": "k17", "f": "cas", "value": [5, "six"], "out": true, "call_ns": 31, "ret_ns": 40}
{"client": 6, "key": "k17", "f": "w", "value": 7, "call_ns": 41, "ret_ns": null}
{"client": 7, "key": "k17", "f": "cas", "value": [null, 8], "out": null, "call_ns": 42, "ret_ns": null}
{"client": 8, "key": "k17", "f": "r", "value": null, "out": null, "call_ns": 1, "ret_ns": 2}
"#;
    let ops = parse_history(text).unwrap();
    assert_eq!(ops.len(), 6);
    assert_eq!(ops[0], RegisterOp::write(3, "k17", 5.into(), 10, Some(20)));
    let six = RegisterValue::from("six");
    let swap = (Some(RegisterValue::Int(5)), six.clone());
    assert_eq!(
        ops[2],
        RegisterOp::cas(5, "k17", swap, Some(true), 31, Some(40))
    );
    assert_eq!(ops[3].ret_ns, None);
    assert_eq!(ops[5].kind, RegisterOpKind::Read { out: None });
    assert_eq!(parse_history(&history_to_json_lines(&ops)).unwrap(), ops);
    assert!(check_register(&ops).is_linearizable());
}

#[test]
fn parse_errors_name_the_line() {
    let good = r#"{"client": 1, "key": "k", "f": "w", "value": 1, "call_ns": 0, "ret_ns": 1}"#;
    let must_err = |bad: &str| {
        let text = format!("{good}\n\n{bad}\n{good}");
        let err = parse_history(&text).unwrap_err();
        assert!(err.to_string().starts_with("line 3: "), "{err}");
        err
    };
    assert!(matches!(
        must_err(r#"{"client": 1, "key": "k""#),
        RegisterHistoryError::Json { line: 3, .. }
    ));
    let op_err = |bad: &str| match must_err(bad) {
        RegisterHistoryError::Op { line: 3, source } => source,
        other => panic!("not an op error: {other}"),
    };
    let op = |f: &str, value: &str, out: &str, ret: &str| {
        op_err(&format!(
            r#"{{"client": 1, "key": "k", "f": "{f}", "value": {value}, "out": {out}, "call_ns": 5, "ret_ns": {ret}}}"#
        ))
    };
    assert_eq!(
        op("x", "1", "null", "6"),
        RegisterOpError::UnknownF("x".into())
    );
    assert_eq!(
        op("w", "null", "null", "6"),
        RegisterOpError::BadWriteValue("null".into())
    );
    assert_eq!(
        op("w", "1.5", "null", "6"),
        RegisterOpError::BadWriteValue("1.5".into())
    );
    assert_eq!(
        op("r", "1", "null", "6"),
        RegisterOpError::ReadWithValue("1".into())
    );
    assert_eq!(
        op("r", "null", "[1]", "6"),
        RegisterOpError::BadReadOut("[1]".into())
    );
    assert!(matches!(
        op("r", "null", "1", "null"),
        RegisterOpError::OutWithoutReturn { .. }
    ));
    assert!(matches!(
        op("cas", "[1]", "true", "6"),
        RegisterOpError::BadCasValue(_)
    ));
    assert!(matches!(
        op("cas", "[1, null]", "true", "6"),
        RegisterOpError::BadCasValue(_)
    ));
    assert!(matches!(
        op("cas", "[1, 2]", "null", "6"),
        RegisterOpError::BadCasOut { .. }
    ));
    assert!(matches!(
        op("cas", "[1, 2]", "true", "null"),
        RegisterOpError::BadCasOut { .. }
    ));
    assert_eq!(
        op("w", "1", "null", "4"),
        RegisterOpError::ReturnBeforeCall {
            call_ns: 5,
            ret_ns: 4
        }
    );
}

/// How a simulated history is drawn.
struct SimConfig {
    seed: u64,
    clients: u64,
    ops_per_client: usize,
    keys: usize,
    /// Percent of ops whose outcome the client never learns.
    unknown_pct: u32,
}

/// One op of a simulated client, with the instant it takes effect (or `None`: never).
struct SimOp {
    op: RegisterOp,
    effect_ns: Option<u64>,
}

/// Draws each client's ops with random intervals and a random instant in each where the op
/// takes effect (some never do, with an unknown outcome), then runs them against an atomic
/// register in that order to fill in their outputs. Written values are unique and positive.
fn simulate(cfg: &SimConfig) -> Vec<RegisterOp> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut sim: Vec<SimOp> = Vec::new();
    let mut next_value = 1i64;
    for client in 0..cfg.clients {
        let mut now = rng.gen_range(0..10u64);
        for _ in 0..cfg.ops_per_client {
            let key = format!("k{}", rng.gen_range(0..cfg.keys));
            let call = now + rng.gen_range(0..5);
            let effect = call + rng.gen_range(0..20);
            let ret = effect + rng.gen_range(0..20);
            now = ret + 1;
            let unknown = rng.gen_range(0..100) < cfg.unknown_pct;
            let ret_ns = (!unknown).then_some(ret);
            let effect_ns = (!unknown || rng.gen_bool(0.5)).then_some(effect);
            let op = match rng.gen_range(0..10) {
                0..=3 => RegisterOp {
                    ret_ns,
                    ..RegisterOp::read(client, &key, None, call, ret)
                },
                4..=6 => RegisterOp::write(client, &key, next_value.into(), call, ret_ns),
                _ => {
                    // Expect a recent value, or absent, so that some swaps succeed.
                    let back = rng.gen_range(0..4);
                    let expected = (next_value > back + 1).then(|| (next_value - 1 - back).into());
                    RegisterOp::cas(
                        client,
                        &key,
                        (expected, next_value.into()),
                        None,
                        call,
                        ret_ns,
                    )
                }
            };
            next_value += 1;
            sim.push(SimOp { op, effect_ns });
        }
    }
    run_atomically(&mut sim);
    sim.into_iter().map(|s| s.op).collect()
}

/// Applies the ops that take effect in order of their instants and records their outputs.
fn run_atomically(sim: &mut [SimOp]) {
    let mut order: Vec<usize> = (0..sim.len())
        .filter(|&i| sim[i].effect_ns.is_some())
        .collect();
    order.sort_by_key(|&i| (sim[i].effect_ns, i));
    let mut state: std::collections::HashMap<String, RegisterValue> = Default::default();
    for i in order {
        let op = &mut sim[i].op;
        let known = op.ret_ns.is_some();
        let cur = state.get(&op.key).cloned();
        match &mut op.kind {
            RegisterOpKind::Read { out } => *out = cur,
            RegisterOpKind::Write { value } => {
                state.insert(op.key.clone(), value.clone());
            }
            RegisterOpKind::Cas { expected, new, out } => {
                let swapped = cur == *expected;
                if swapped {
                    state.insert(op.key.clone(), new.clone());
                }
                *out = known.then_some(swapped);
            }
        }
    }
    for s in sim.iter_mut() {
        // Unknown-outcome ops have no output.
        if s.op.ret_ns.is_none() {
            if let RegisterOpKind::Read { out } = &mut s.op.kind {
                *out = None;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn atomic_register_histories_pass_and_a_corrupted_read_fails(
        seed in any::<u64>(),
        clients in 1u64..6,
        ops_per_client in 1usize..25,
        keys in 1usize..3,
        unknown_pct in prop_oneof![Just(0u32), 1u32..20],
    ) {
        let cfg = SimConfig { seed, clients, ops_per_client, keys, unknown_pct };
        let mut h = simulate(&cfg);
        let report = check_register(&h);
        prop_assert!(report.is_linearizable(), "{}\n{}", report, history_to_json_lines(&h));

        let reads: Vec<usize> = (0..h.len())
            .filter(|&i| h[i].ret_ns.is_some() && matches!(h[i].kind, RegisterOpKind::Read { .. }))
            .collect();
        if let Some(&i) = reads.get(seed as usize % reads.len().max(1)) {
            h[i].kind = RegisterOpKind::Read { out: val(Some(-1)) };
            let report = check_register(&h);
            let violations: Vec<_> = report.violations().collect();
            prop_assert_eq!(violations.len(), 1, "{}", report);
            prop_assert_eq!(violations[0].0, h[i].key.as_str());
        }
    }
}

/// Draws up to `n` ops on one key with values from a small set, random intervals and
/// outcomes: about as often linearizable as not.
fn random_small_history(seed: u64, n: usize) -> Vec<RegisterOp> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // 0 stands for absent.
    let small = |rng: &mut ChaCha8Rng| val(Some(rng.gen_range(0..4)).filter(|v| *v != 0));
    (0..n)
        .map(|i| {
            let call = rng.gen_range(0..20);
            let ret = (rng.gen_range(0..100) >= 15).then(|| call + rng.gen_range(0..10));
            let v = RegisterValue::Int(rng.gen_range(1..4));
            let mut op = match rng.gen_range(0..3) {
                0 => RegisterOp::read(i as u64, KEY, small(&mut rng), call, 0),
                1 => RegisterOp::write(i as u64, KEY, v, call, ret),
                _ => {
                    let out = ret.map(|_| rng.gen_bool(0.5));
                    RegisterOp::cas(i as u64, KEY, (small(&mut rng), v), out, call, ret)
                }
            };
            op.ret_ns = ret;
            op
        })
        .collect()
}

/// The definition, by exhaustion: some subset of the unknown-outcome ops, with every op of
/// known outcome, has an order in which no op comes after one that was called after it
/// returned, and every op's output matches a sequential register.
fn linearizable_by_exhaustion(h: &[RegisterOp]) -> bool {
    fn go(h: &[RegisterOp], left: &mut Vec<usize>, state: Option<RegisterValue>) -> bool {
        if left.is_empty() {
            return true;
        }
        for k in 0..left.len() {
            let j = left[k];
            let preceded = left
                .iter()
                .any(|&i| h[i].ret_ns.is_some_and(|r| r < h[j].call_ns));
            let next = match &h[j].kind {
                RegisterOpKind::Read { out } => (*out == state).then(|| state.clone()),
                RegisterOpKind::Write { value } => Some(Some(value.clone())),
                RegisterOpKind::Cas { expected, new, out } => match out {
                    Some(false) => (*expected != state).then(|| state.clone()),
                    _ => (*expected == state).then(|| Some(new.clone())),
                },
            };
            if let (false, Some(next)) = (preceded, next) {
                left.swap_remove(k);
                let ok = go(h, left, next);
                left.push(j);
                let last = left.len() - 1;
                left.swap(k, last);
                if ok {
                    return true;
                }
            }
        }
        false
    }
    let known: Vec<usize> = (0..h.len()).filter(|&i| h[i].ret_ns.is_some()).collect();
    let unknown: Vec<usize> = (0..h.len())
        .filter(|&i| h[i].ret_ns.is_none() && !matches!(h[i].kind, RegisterOpKind::Read { .. }))
        .collect();
    (0..1u32 << unknown.len()).any(|subset| {
        let mut left = known.clone();
        left.extend(
            (0..unknown.len())
                .filter(|b| subset & (1 << b) != 0)
                .map(|b| unknown[b]),
        );
        go(h, &mut left, None)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn small_random_histories_agree_with_exhaustion(seed in any::<u64>(), n in 1usize..8) {
        let h = random_small_history(seed, n);
        let report = check_register(&h);
        let expected = linearizable_by_exhaustion(&h);
        prop_assert_eq!(report.is_linearizable(), expected, "{}\n{}", report, history_to_json_lines(&h));
        for (_, v) in report.violations() {
            prop_assert!(h[v.stuck].ret_ns.is_some(), "stuck on an optional op: {}", v);
        }
    }
}

#[test]
fn exhaustion_sees_both_verdicts() {
    // Guards the oracle test against a generator that only ever draws one kind of history.
    let verdicts: Vec<bool> = (0..200)
        .map(|s| linearizable_by_exhaustion(&random_small_history(s, 6)))
        .collect();
    let passing = verdicts.iter().filter(|v| **v).count();
    assert!(
        (20..180).contains(&passing),
        "{passing} of 200 linearizable"
    );
}

#[test]
fn five_clients_of_two_hundred_ops_on_one_key_check_quickly() {
    for (seed, unknown_pct) in [(1, 0), (2, 0), (3, 2)] {
        let cfg = SimConfig {
            seed,
            clients: 5,
            ops_per_client: 200,
            keys: 1,
            unknown_pct,
        };
        let h = simulate(&cfg);
        let report = check_register(&h);
        assert!(report.is_linearizable(), "{report}");
        assert_eq!(report.keys.len(), 1);
        // A corrupted read near the end: the search must exhaust everything before it.
        let mut bad = h.clone();
        let last_read = (0..bad.len())
            .rev()
            .find(|&i| {
                bad[i].ret_ns.is_some() && matches!(bad[i].kind, RegisterOpKind::Read { .. })
            })
            .expect("a long history has reads");
        bad[last_read].kind = RegisterOpKind::Read { out: val(Some(-1)) };
        let bad_report = check_register(&bad);
        assert_eq!(bad_report.violations().count(), 1, "{bad_report}");
        eprintln!("{report}{bad_report}");
    }
}
