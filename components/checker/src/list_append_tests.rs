//! Hand-built histories, each showing one anomaly (or none).

use crate::{
    check_list_append, check_list_append_with, Anomaly, AnomalyKind, CheckOptions, EdgeKind, Op,
    Outcome, Report, Txn,
};
use AnomalyKind::*;

fn txn(id: u64, outcome: Outcome, ops: Vec<Op>) -> Txn {
    Txn::new(id, id, ops, outcome)
}
fn ok(id: u64, ops: Vec<Op>) -> Txn {
    txn(id, Outcome::Committed, ops)
}
fn w(key: u64, value: u64) -> Op {
    Op::append(key, value)
}
fn r(key: u64, values: &[u64]) -> Op {
    Op::read_of(key, values)
}

fn must_find(history: &[Txn], expected: &[AnomalyKind]) -> Report {
    let report = check_list_append(history);
    assert_eq!(report.kinds(), expected, "{report}");
    report
}

#[test]
fn serial_history_is_clean() {
    let h = [
        ok(1, vec![w(1, 1), r(2, &[])]),
        ok(2, vec![r(1, &[1]), w(1, 2), r(1, &[1, 2]), w(2, 3)]),
        ok(3, vec![r(1, &[1, 2]), r(2, &[3]), Op::read(4)]),
        txn(4, Outcome::Aborted, vec![w(1, 4), r(1, &[1, 2, 4])]),
    ];
    let report = must_find(&h, &[]);
    assert!(report.is_valid_snapshot_isolation() && report.is_clean());
    assert_eq!((report.txns_checked, report.graph_txns), (4, 3));
}

#[test]
fn g0_write_cycle() {
    let h = [
        ok(1, vec![w(1, 1), w(2, 2)]),
        ok(2, vec![w(1, 3), w(2, 4)]),
        ok(3, vec![r(1, &[1, 3]), r(2, &[4, 2])]),
    ];
    let report = must_find(&h, &[G0]);
    assert!(!report.is_valid_snapshot_isolation());
    let Anomaly::Cycle { steps, .. } = &report.anomalies[0] else {
        panic!()
    };
    assert_eq!(steps.len(), 2);
    assert!(steps.iter().all(|s| s.kind == EdgeKind::Ww));
}

#[test]
fn g1a_aborted_read() {
    let h = [
        txn(1, Outcome::Aborted, vec![w(1, 1)]),
        ok(2, vec![r(1, &[1])]),
    ];
    let report = must_find(&h, &[G1a]);
    assert_eq!(
        report.anomalies[0],
        Anomaly::G1a {
            reader: 2,
            writer: 1,
            key: 1,
            value: 1
        }
    );
}

#[test]
fn g1b_intermediate_read() {
    let h = [ok(1, vec![w(1, 1), w(1, 2)]), ok(2, vec![r(1, &[1])])];
    let report = must_find(&h, &[G1b]);
    assert_eq!(
        report.anomalies[0],
        Anomaly::G1b {
            reader: 2,
            writer: 1,
            key: 1,
            value: 1,
            final_value: 2
        }
    );
}

#[test]
fn g1c_circular_information_flow() {
    let h = [
        ok(1, vec![w(1, 1), r(2, &[2])]),
        ok(2, vec![w(2, 2), r(1, &[1])]),
    ];
    must_find(&h, &[G1c]);
}

#[test]
fn g_single_read_skew() {
    let h = [
        ok(1, vec![w(1, 1), w(2, 2)]),
        ok(2, vec![r(1, &[]), r(2, &[2])]),
        ok(3, vec![r(1, &[1])]),
    ];
    let report = must_find(&h, &[GSingle]);
    let Anomaly::Cycle { steps, .. } = &report.anomalies[0] else {
        panic!()
    };
    let kinds: Vec<_> = steps.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, [EdgeKind::Rw, EdgeKind::Wr]);
    assert_eq!(
        (steps[0].from, steps[0].to, steps[0].from_value),
        (2, 1, None)
    );
}

#[test]
fn g2_write_skew_is_allowed_by_snapshot_isolation() {
    let h = [
        ok(1, vec![r(1, &[]), r(2, &[]), w(1, 1)]),
        ok(2, vec![r(1, &[]), r(2, &[]), w(2, 2)]),
        ok(3, vec![r(1, &[1]), r(2, &[2])]),
    ];
    let report = must_find(&h, &[G2Item]);
    assert!(report.is_valid_snapshot_isolation());
    assert!(!report.is_clean());
}

#[test]
fn lost_update() {
    let h = [
        ok(1, vec![r(1, &[]), w(1, 1)]),
        ok(2, vec![r(1, &[]), w(1, 2)]),
        ok(3, vec![r(1, &[1, 2])]),
    ];
    // Two writers of the same read version are also a read-skew cycle through ww and rw.
    let report = must_find(&h, &[GSingle, LostUpdate]);
    assert!(report.anomalies.contains(&Anomaly::LostUpdate {
        key: 1,
        read_last: None,
        txns: vec![1, 2]
    }));
    assert!(
        report
            .to_string()
            .contains("T1, T2 read the empty list of key 1"),
        "{report}"
    );
}

#[test]
fn incompatible_order() {
    let h = [
        ok(1, vec![w(1, 1)]),
        ok(2, vec![w(1, 2)]),
        ok(3, vec![r(1, &[1, 2])]),
        ok(4, vec![r(1, &[2, 1])]),
    ];
    must_find(&h, &[IncompatibleOrder]);
}

#[test]
fn internal_inconsistency_against_an_earlier_read() {
    let h = [
        ok(1, vec![w(1, 1)]),
        ok(2, vec![r(1, &[1]), w(1, 2), r(1, &[1])]),
    ];
    must_find(&h, &[InternalInconsistency]);
}

#[test]
fn internal_inconsistency_missing_own_append() {
    must_find(&[ok(1, vec![w(1, 1), r(1, &[])])], &[InternalInconsistency]);
}

#[test]
fn internal_inconsistency_reading_own_future_append() {
    must_find(
        &[ok(1, vec![r(1, &[1]), w(1, 1)])],
        &[InternalInconsistency],
    );
}

#[test]
fn garbage_read() {
    let report = must_find(&[ok(1, vec![r(1, &[42])])], &[GarbageRead]);
    assert_eq!(
        report.anomalies[0],
        Anomaly::GarbageRead {
            reader: 1,
            key: 1,
            value: 42
        }
    );
}

#[test]
fn duplicate_elements() {
    must_find(
        &[ok(1, vec![w(1, 1)]), ok(2, vec![r(1, &[1, 1])])],
        &[DuplicateElements],
    );
}

#[test]
fn malformed_history() {
    must_find(&[ok(1, vec![w(1, 1)]), ok(2, vec![w(1, 1)])], &[Malformed]);
    must_find(&[ok(1, vec![w(1, 1)]), ok(1, vec![w(1, 2)])], &[Malformed]);
}

#[test]
fn aborted_txn_reading_its_own_append_is_fine() {
    must_find(&[txn(1, Outcome::Aborted, vec![w(1, 1), r(1, &[1])])], &[]);
}

#[test]
fn unknown_outcomes_join_the_graph_only_once_observed() {
    let unobserved = [
        txn(1, Outcome::Unknown, vec![w(1, 1)]),
        ok(2, vec![r(1, &[])]),
    ];
    assert_eq!(must_find(&unobserved, &[]).graph_txns, 1);
    let observed_read_skew = [
        txn(1, Outcome::Unknown, vec![w(1, 1), w(2, 2)]),
        ok(2, vec![r(1, &[]), r(2, &[2])]),
        ok(3, vec![r(1, &[1])]),
    ];
    assert_eq!(must_find(&observed_read_skew, &[GSingle]).graph_txns, 3);
}

#[test]
fn realtime_stale_read_only_when_asked() {
    let h = [
        ok(1, vec![w(1, 1)]).with_times(1, 2),
        ok(2, vec![r(1, &[])]).with_times(3, 4),
        txn(3, Outcome::Unknown, vec![w(1, 7)]).with_times(0, 1),
        ok(4, vec![r(1, &[1])]).with_times(1, 5),
    ];
    must_find(&h, &[]);
    let report = check_list_append_with(&h, &CheckOptions { realtime: true });
    assert_eq!(
        report.anomalies,
        [Anomaly::StaleRead {
            reader: 2,
            writer: 1,
            key: 1,
            value: 1
        }]
    );
    assert!(!report.is_valid_snapshot_isolation());
}

#[test]
fn realtime_catches_an_acknowledged_append_nobody_ever_sees() {
    let h = [
        ok(1, vec![w(1, 1)]).with_times(1, 2),
        ok(2, vec![w(1, 2)]).with_times(3, 4),
        ok(3, vec![r(1, &[2])]).with_times(5, 6),
    ];
    let report = check_list_append_with(&h, &CheckOptions { realtime: true });
    assert_eq!(report.kinds(), [StaleRead], "{report}");
}

#[test]
fn report_display_ends_with_what_snapshot_isolation_forbids() {
    let h = [
        // Write skew on keys 10 and 11 (allowed)...
        ok(4, vec![r(10, &[]), w(11, 5)]),
        ok(5, vec![r(11, &[]), w(10, 6)]),
        ok(6, vec![r(10, &[6]), r(11, &[5])]),
        // ...and two reads of key 20 in orders no history explains (forbidden; the checker
        // finds these before it looks for cycles).
        ok(1, vec![w(20, 1)]),
        ok(2, vec![w(20, 2)]),
        ok(3, vec![r(20, &[1, 2])]),
        ok(7, vec![r(20, &[2, 1])]),
    ];
    let report = check_list_append(&h);
    assert!(report.kinds().contains(&G2Item), "{report}");
    assert!(report.kinds().contains(&IncompatibleOrder), "{report}");
    let text = report.to_string();
    let skew = text.find("G2-item").expect("the write skew is listed");
    let finding = text
        .rfind("incompatible order")
        .expect("the bad order is listed");
    assert!(skew < finding, "{text}");
    assert!(!text[finding..].contains("G2-item"), "{text}");
}

#[test]
fn report_display_explains_each_anomaly_with_ops() {
    let h = [
        ok(1, vec![w(1, 1), w(2, 2)]),
        ok(2, vec![r(1, &[]), r(2, &[2])]),
        ok(3, vec![r(1, &[1])]),
    ];
    let text = check_list_append(&h).to_string();
    assert!(text.contains("snapshot isolation VIOLATED"), "{text}");
    assert!(text.contains("G-single (read skew)"), "{text}");
    assert!(
        text.contains("T2 -rw-> T1 (key 1: T2 read the empty list"),
        "{text}"
    );
    assert!(
        text.contains("T1 (process 1, committed): append 1 1, append 2 2"),
        "{text}"
    );
    assert!(
        text.contains("T2 (process 2, committed): read 1 [], read 2 [2]"),
        "{text}"
    );
}

#[test]
fn anomalies_beyond_the_limit_are_counted() {
    let h: Vec<Txn> = (0..40).map(|i| ok(i, vec![r(i, &[1000 + i])])).collect();
    let report = check_list_append(&h);
    assert_eq!(report.anomalies.len(), crate::ANOMALIES_PER_KIND_MAX);
    assert_eq!(
        report.suppressed[&GarbageRead],
        40 - crate::ANOMALIES_PER_KIND_MAX
    );
}
