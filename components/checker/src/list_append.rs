//! The list-append checker: per-read checks, version orders, the dependency graph and its
//! cycles, and the optional real-time check.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::anomaly::{Anomaly, AnomalyKind, CycleStep, EdgeKind, Report};
use crate::graph::{self, Adj};
use crate::history::{ListDisplay, Op, Outcome, Txn};

/// What [`check_list_append_with`] checks beyond the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Also require that a read in a transaction that started after another transaction's
    /// commit was acknowledged observes that transaction's appends (needs `start`/`end`).
    pub realtime: bool,
}

/// Checks a list-append history for snapshot-isolation anomalies (no real-time check).
pub fn check_list_append(txns: &[Txn]) -> Report {
    check_list_append_with(txns, &CheckOptions::default())
}

/// Checks a list-append history with `options`.
pub fn check_list_append_with(txns: &[Txn], options: &CheckOptions) -> Report {
    let mut report = Report {
        txns_checked: txns.len(),
        ..Report::default()
    };
    let index = Index::build(txns, &mut report);
    let mut reads = Vec::new();
    for (i, txn) in txns.iter().enumerate() {
        split_txn_reads(i, txn, &mut reads, &mut report);
    }
    check_read_sources(txns, &index, &reads, &mut report);
    let orders = version_orders(txns, &mut reads, &mut report);
    let in_graph = graph_members(txns, &index, &reads);
    lost_updates(txns, &index, &reads, &orders, &in_graph, &mut report);
    let deps = Deps::build(txns, &index, &reads, &orders, &in_graph);
    report.graph_txns = deps.txn_of.len();
    report.graph_edges = deps.edges.len();
    for cycle in graph::find_cycles(&deps.adjacency()) {
        report.push(deps.explain(txns, cycle));
    }
    if options.realtime {
        stale_reads(txns, &index, &reads, &orders, &mut report);
    }
    report.collect_involved(txns);
    report
}

/// Who appended what.
struct Index {
    /// `(key, value)` to the index of the transaction that appended it.
    writer: HashMap<(u64, u64), usize>,
    /// `(txn index, key)` to that transaction's last append to the key.
    final_append: HashMap<(usize, u64), u64>,
}

impl Index {
    fn build(txns: &[Txn], report: &mut Report) -> Index {
        let mut ids: HashMap<u64, usize> = HashMap::with_capacity(txns.len());
        let mut index = Index {
            writer: HashMap::new(),
            final_append: HashMap::new(),
        };
        for (i, txn) in txns.iter().enumerate() {
            if ids.insert(txn.id, i).is_some() {
                report.push(Anomaly::Malformed {
                    reason: format!("transaction id {} appears more than once", txn.id),
                    txns: vec![txn.id],
                });
            }
            for op in &txn.ops {
                let Op::Append { key, value } = *op else {
                    continue;
                };
                if let Some(&prev) = index.writer.get(&(key, value)) {
                    report.push(Anomaly::Malformed {
                        reason: format!("value {value} is appended to key {key} more than once"),
                        txns: vec![txns[prev].id, txn.id],
                    });
                } else {
                    index.writer.insert((key, value), i);
                }
                index.final_append.insert((i, key), value);
            }
        }
        index
    }
}

/// A read as the database served it: the list minus the reader's own appends at its end.
struct ExtRead {
    txn: usize,
    op: usize,
    key: u64,
    ext_len: usize,
    /// Whether the list is a prefix of the key's inferred version order.
    compatible: bool,
}

impl ExtRead {
    fn values<'a>(&self, txns: &'a [Txn]) -> &'a [u64] {
        match &txns[self.txn].ops[self.op] {
            Op::Read {
                values: Some(vs), ..
            } => &vs[..self.ext_len],
            op => unreachable!("ExtRead points at an observed read, not {op}"),
        }
    }
}

/// Checks each observed read against the transaction's own earlier ops on the key, and keeps
/// the consistent ones with the transaction's own appends stripped.
fn split_txn_reads(i: usize, txn: &Txn, out: &mut Vec<ExtRead>, report: &mut Report) {
    let mut own: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut expected: HashMap<u64, Vec<u64>> = HashMap::new();
    for (op_idx, op) in txn.ops.iter().enumerate() {
        match op {
            Op::Append { key, value } => {
                own.entry(*key).or_default().push(*value);
                if let Some(e) = expected.get_mut(key) {
                    e.push(*value);
                }
            }
            Op::Read { values: None, .. } => {}
            Op::Read {
                key,
                values: Some(vs),
            } => {
                let key = *key;
                let mut seen = HashSet::with_capacity(vs.len());
                if !vs.iter().all(|v| seen.insert(*v)) {
                    report.push(Anomaly::DuplicateElements {
                        txn: txn.id,
                        key,
                        values: vs.clone(),
                    });
                }
                let mine = own.get(&key).map(Vec::as_slice).unwrap_or(&[]);
                let reason = match expected.get(&key) {
                    Some(e) if e != vs => Some(format!(
                        "its earlier read of the key plus its own appends since give {}",
                        ListDisplay(e)
                    )),
                    None if !vs.ends_with(mine) => Some(format!(
                        "it must end with the transaction's own appends {}",
                        ListDisplay(mine)
                    )),
                    _ => None,
                };
                if let Some(reason) = reason {
                    report.push(Anomaly::InternalInconsistency {
                        txn: txn.id,
                        key,
                        observed: vs.clone(),
                        reason,
                    });
                } else if vs.ends_with(mine) {
                    out.push(ExtRead {
                        txn: i,
                        op: op_idx,
                        key,
                        ext_len: vs.len() - mine.len(),
                        compatible: true,
                    });
                }
                expected.insert(key, vs.clone());
            }
        }
    }
}

/// Garbage reads, aborted reads (G1a), intermediate reads (G1b) and reads of a transaction's
/// own later appends.
fn check_read_sources(txns: &[Txn], index: &Index, reads: &[ExtRead], report: &mut Report) {
    let mut reported: HashSet<(AnomalyKind, usize, u64, u64)> = HashSet::new();
    for r in reads {
        let reader = &txns[r.txn];
        let vs = r.values(txns);
        for &v in vs {
            let found = match index.writer.get(&(r.key, v)) {
                None => Some(Anomaly::GarbageRead {
                    reader: reader.id,
                    key: r.key,
                    value: v,
                }),
                Some(&w) if w == r.txn => Some(Anomaly::InternalInconsistency {
                    txn: reader.id,
                    key: r.key,
                    observed: vs.to_vec(),
                    reason: format!("it holds {v}, which the transaction only appends later"),
                }),
                Some(&w) if txns[w].outcome == Outcome::Aborted => Some(Anomaly::G1a {
                    reader: reader.id,
                    writer: txns[w].id,
                    key: r.key,
                    value: v,
                }),
                Some(_) => None,
            };
            if let Some(a) = found {
                if reported.insert((a.kind(), r.txn, r.key, v)) {
                    report.push(a);
                }
            }
        }
        let Some(&last) = vs.last() else { continue };
        let Some(&w) = index.writer.get(&(r.key, last)) else {
            continue;
        };
        let final_value = index.final_append[&(w, r.key)];
        if w != r.txn
            && final_value != last
            && reported.insert((AnomalyKind::G1b, r.txn, r.key, last))
        {
            report.push(Anomaly::G1b {
                reader: reader.id,
                writer: txns[w].id,
                key: r.key,
                value: last,
                final_value,
            });
        }
    }
}

/// A key's version order: its longest read, and each element's position in it.
struct KeyOrder {
    values: Vec<u64>,
    pos: HashMap<u64, usize>,
}

/// Infers each key's order from its longest read and marks every read that is not a prefix of
/// it incompatible (reported once per distinct list).
fn version_orders(
    txns: &[Txn],
    reads: &mut [ExtRead],
    report: &mut Report,
) -> BTreeMap<u64, KeyOrder> {
    let mut longest: BTreeMap<u64, (usize, &[u64])> = BTreeMap::new();
    for r in reads.iter() {
        let vs = r.values(txns);
        let best = longest.entry(r.key).or_insert((r.txn, vs));
        if vs.len() > best.1.len() {
            *best = (r.txn, vs);
        }
    }
    let mut reported: HashSet<(u64, &[u64])> = HashSet::new();
    for r in reads.iter_mut() {
        let (longest_txn, order) = longest[&r.key];
        let vs = r.values(txns);
        if order.starts_with(vs) {
            continue;
        }
        r.compatible = false;
        if reported.insert((r.key, vs)) {
            report.push(Anomaly::IncompatibleOrder {
                key: r.key,
                longest_txn: txns[longest_txn].id,
                longest: order.to_vec(),
                other_txn: txns[r.txn].id,
                other: vs.to_vec(),
            });
        }
    }
    longest
        .into_iter()
        .map(|(key, (_, vs))| {
            let pos = vs.iter().enumerate().map(|(p, &v)| (v, p)).collect();
            let values = vs.to_vec();
            (key, KeyOrder { values, pos })
        })
        .collect()
}

/// Which transactions are graph nodes: the committed ones, and those of unknown outcome whose
/// appends another transaction observed (so they did commit).
fn graph_members(txns: &[Txn], index: &Index, reads: &[ExtRead]) -> Vec<bool> {
    let mut member: Vec<bool> = txns
        .iter()
        .map(|t| t.outcome == Outcome::Committed)
        .collect();
    for r in reads {
        for v in r.values(txns) {
            if let Some(&w) = index.writer.get(&(r.key, *v)) {
                if w != r.txn && txns[w].outcome == Outcome::Unknown {
                    member[w] = true;
                }
            }
        }
    }
    member
}

/// Two or more graph transactions that read the same version of a key and each appended to it.
fn lost_updates(
    txns: &[Txn],
    index: &Index,
    reads: &[ExtRead],
    orders: &BTreeMap<u64, KeyOrder>,
    in_graph: &[bool],
    report: &mut Report,
) {
    let mut groups: BTreeMap<(u64, usize), Vec<usize>> = BTreeMap::new();
    for r in reads {
        if r.compatible && in_graph[r.txn] && index.final_append.contains_key(&(r.txn, r.key)) {
            let group = groups.entry((r.key, r.ext_len)).or_default();
            if !group.contains(&r.txn) {
                group.push(r.txn);
            }
        }
    }
    for ((key, len), group) in groups {
        if group.len() > 1 {
            report.push(Anomaly::LostUpdate {
                key,
                read_last: len.checked_sub(1).map(|p| orders[&key].values[p]),
                txns: group.iter().map(|&t| txns[t].id).collect(),
            });
        }
    }
}

/// Why an edge exists: the key and the values on either side of it.
#[derive(Debug, Clone, Copy)]
struct Why {
    key: u64,
    from_value: Option<u64>,
    to_value: u64,
}

/// The dependency graph over graph transactions, with one justification per edge kind.
struct Deps {
    /// Transaction index to node, `u32::MAX` if not in the graph.
    node_of: Vec<u32>,
    /// Node to transaction index.
    txn_of: Vec<usize>,
    edges: HashMap<(u32, u32), EdgeKinds>,
}

/// An edge's kind mask, and the first justification seen for each kind (indexed by kind).
type EdgeKinds = (u8, [Option<Why>; 3]);

impl Deps {
    fn build(
        txns: &[Txn],
        index: &Index,
        reads: &[ExtRead],
        orders: &BTreeMap<u64, KeyOrder>,
        in_graph: &[bool],
    ) -> Deps {
        let mut deps = Deps {
            node_of: vec![u32::MAX; txns.len()],
            txn_of: Vec::new(),
            edges: HashMap::new(),
        };
        for (i, _) in in_graph.iter().enumerate().filter(|(_, m)| **m) {
            deps.node_of[i] = deps.txn_of.len() as u32;
            deps.txn_of.push(i);
        }
        let node_writer = |key: u64, v: u64| {
            index
                .writer
                .get(&(key, v))
                .copied()
                .filter(|&w| in_graph[w])
        };
        for (&key, order) in orders {
            let mut prev: Option<(usize, u64)> = None;
            for &v in &order.values {
                let Some(w) = node_writer(key, v) else {
                    continue;
                };
                if let Some((pw, pv)) = prev {
                    deps.add(
                        pw,
                        w,
                        EdgeKind::Ww,
                        Why {
                            key,
                            from_value: Some(pv),
                            to_value: v,
                        },
                    );
                }
                prev = Some((w, v));
            }
        }
        for r in reads.iter().filter(|r| in_graph[r.txn]) {
            let vs = r.values(txns);
            if let Some(w) = vs.last().and_then(|&v| node_writer(r.key, v)) {
                let v = *vs.last().expect("non-empty");
                deps.add(
                    w,
                    r.txn,
                    EdgeKind::Wr,
                    Why {
                        key: r.key,
                        from_value: Some(v),
                        to_value: v,
                    },
                );
            }
            if !r.compatible {
                continue;
            }
            let next = orders[&r.key].values[r.ext_len..]
                .iter()
                .find_map(|&v| node_writer(r.key, v).map(|w| (w, v)));
            if let Some((w, v)) = next {
                let why = Why {
                    key: r.key,
                    from_value: vs.last().copied(),
                    to_value: v,
                };
                deps.add(r.txn, w, EdgeKind::Rw, why);
            }
        }
        deps
    }

    /// Adds an edge between two graph transactions (self-edges are dropped).
    fn add(&mut self, from: usize, to: usize, kind: EdgeKind, why: Why) {
        let (a, b) = (self.node_of[from], self.node_of[to]);
        if a == b || a == u32::MAX || b == u32::MAX {
            return;
        }
        let entry = self.edges.entry((a, b)).or_insert((0, [None; 3]));
        entry.0 |= kind.bit();
        entry.1[kind as usize].get_or_insert(why);
    }

    /// Adjacency lists, sorted so that the cycles reported do not depend on hashing.
    fn adjacency(&self) -> Adj {
        let mut adj: Adj = vec![Vec::new(); self.txn_of.len()];
        for (&(a, b), &(mask, _)) in &self.edges {
            adj[a as usize].push((b, mask));
        }
        adj.iter_mut().for_each(|es| es.sort_unstable());
        adj
    }

    fn explain(&self, txns: &[Txn], cycle: graph::FoundCycle) -> Anomaly {
        let steps = cycle
            .steps
            .into_iter()
            .map(|(a, b, kind)| {
                let why = self.edges[&(a, b)].1[kind as usize].expect("edge kinds carry a why");
                CycleStep {
                    from: txns[self.txn_of[a as usize]].id,
                    to: txns[self.txn_of[b as usize]].id,
                    kind,
                    key: why.key,
                    from_value: why.from_value,
                    to_value: why.to_value,
                }
            })
            .collect();
        Anomaly::Cycle {
            kind: cycle.kind,
            steps,
        }
    }
}

/// A position in a key's order (`usize::MAX` if never read), its appender and the element.
type Acked = (usize, usize, u64);

/// Real-time check: a read in a transaction that began after a commit was acknowledged must
/// hold every element that commit appended to the key.
fn stale_reads(
    txns: &[Txn],
    index: &Index,
    reads: &[ExtRead],
    orders: &BTreeMap<u64, KeyOrder>,
    report: &mut Report,
) {
    // Per key: (end, position in the order or MAX if never observed, txn, value), by end.
    let mut acked: HashMap<u64, Vec<(u64, usize, usize, u64)>> = HashMap::new();
    for (&(key, value), &w) in &index.writer {
        let (Outcome::Committed, Some(end)) = (txns[w].outcome, txns[w].end) else {
            continue;
        };
        let pos = orders
            .get(&key)
            .and_then(|o| o.pos.get(&value).copied())
            .unwrap_or(usize::MAX);
        acked.entry(key).or_default().push((end, pos, w, value));
    }
    // Prefix maxima of the position: the latest element any commit acked by then must be seen.
    // Per key: the sorted ends, and at each the (position, txn, value) furthest in the order.
    let mut worst: HashMap<u64, (Vec<u64>, Vec<Acked>)> = HashMap::new();
    for (key, mut ws) in acked {
        ws.sort_unstable();
        let mut best = (0, usize::MAX, 0);
        let mut maxima = Vec::with_capacity(ws.len());
        for (i, &(_, pos, w, value)) in ws.iter().enumerate() {
            if i == 0 || pos > best.0 {
                best = (pos, w, value);
            }
            maxima.push(best);
        }
        worst.insert(key, (ws.iter().map(|w| w.0).collect(), maxima));
    }
    let mut reported: HashSet<(usize, u64)> = HashSet::new();
    for r in reads.iter().filter(|r| r.compatible) {
        let (Some(start), Some((ends, maxima))) = (txns[r.txn].start, worst.get(&r.key)) else {
            continue;
        };
        let n = ends.partition_point(|&e| e < start);
        let Some(&(pos, w, value)) = n.checked_sub(1).map(|i| &maxima[i]) else {
            continue;
        };
        if pos >= r.ext_len && w != r.txn && reported.insert((r.txn, r.key)) {
            report.push(Anomaly::StaleRead {
                reader: txns[r.txn].id,
                writer: txns[w].id,
                key: r.key,
                value,
            });
        }
    }
}
