//! What the list-append checker finds, and the report that explains it.

use std::collections::BTreeMap;
use std::fmt;

use crate::history::{ListDisplay, Txn};

/// The kind of a dependency edge between two transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EdgeKind {
    /// Write-write: the source's append comes right before the target's in a key's order.
    Ww,
    /// Write-read: the target read a list ending in the source's append.
    Wr,
    /// Read-write (anti-dependency): the target's append is the next one after the state the
    /// source read.
    Rw,
}

impl EdgeKind {
    pub(crate) fn bit(self) -> u8 {
        match self {
            EdgeKind::Ww => 1,
            EdgeKind::Wr => 2,
            EdgeKind::Rw => 4,
        }
    }
}

/// One edge of a cycle, with the key and values that justify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleStep {
    /// Source transaction id.
    pub from: u64,
    /// Target transaction id.
    pub to: u64,
    /// The kind of dependency.
    pub kind: EdgeKind,
    /// The key whose order or read justifies the edge.
    pub key: u64,
    /// Ww: the source's append; Rw: the last element the source read (`None` = empty list);
    /// Wr: the element read.
    pub from_value: Option<u64>,
    /// Ww and Rw: the target's append; Wr: the element read.
    pub to_value: u64,
}

impl fmt::Display for CycleStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, k, v) = (self.from, self.to, self.key, self.to_value);
        match self.kind {
            EdgeKind::Ww => write!(
                f,
                "T{a} -ww-> T{b} (key {k}: T{a} appended {}, then T{b} appended {v})",
                self.from_value.unwrap_or_default()
            ),
            EdgeKind::Wr => write!(f, "T{a} -wr-> T{b} (key {k}: T{b} read T{a}'s append {v})"),
            EdgeKind::Rw => match self.from_value {
                Some(last) => write!(
                    f,
                    "T{a} -rw-> T{b} (key {k}: T{a} read a list ending in {last}, T{b} appended the next element {v})"
                ),
                None => write!(
                    f,
                    "T{a} -rw-> T{b} (key {k}: T{a} read the empty list, T{b} appended the first element {v})"
                ),
            },
        }
    }
}

/// Every class of anomaly the checkers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// The history itself is malformed (duplicate ids or appended values).
    Malformed,
    /// A cycle of ww edges only.
    G0,
    /// Aborted read.
    G1a,
    /// Intermediate read.
    G1b,
    /// A cycle of ww and wr edges with at least one wr.
    G1c,
    /// A cycle with exactly one rw edge (read skew).
    GSingle,
    /// A cycle with two or more rw edges (write skew; allowed by snapshot isolation).
    G2Item,
    /// A read of a value no transaction appended.
    GarbageRead,
    /// A read inside a transaction that does not reflect its own earlier ops.
    InternalInconsistency,
    /// Two committed transactions read the same version of a key and both appended to it.
    LostUpdate,
    /// A read returned a list with an element twice.
    DuplicateElements,
    /// Two reads of a key that cannot both be prefixes of one order.
    IncompatibleOrder,
    /// A read missed a commit acknowledged before its transaction began.
    StaleRead,
}

impl AnomalyKind {
    /// Whether snapshot isolation (with the optional real-time check) forbids this kind.
    pub fn forbidden_by_snapshot_isolation(self) -> bool {
        self != AnomalyKind::G2Item
    }

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::Malformed => "malformed history",
            AnomalyKind::G0 => "G0 (write cycle)",
            AnomalyKind::G1a => "G1a (aborted read)",
            AnomalyKind::G1b => "G1b (intermediate read)",
            AnomalyKind::G1c => "G1c (circular information flow)",
            AnomalyKind::GSingle => "G-single (read skew)",
            AnomalyKind::G2Item => "G2-item (write skew)",
            AnomalyKind::GarbageRead => "garbage read",
            AnomalyKind::InternalInconsistency => "internal inconsistency",
            AnomalyKind::LostUpdate => "lost update",
            AnomalyKind::DuplicateElements => "duplicate elements",
            AnomalyKind::IncompatibleOrder => "incompatible order",
            AnomalyKind::StaleRead => "stale read (real time)",
        }
    }
}

/// One anomaly with the transactions involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// Duplicate transaction ids or appended values: the driver broke the history's contract.
    Malformed {
        /// What is wrong.
        reason: String,
        /// Transactions involved.
        txns: Vec<u64>,
    },
    /// A dependency cycle; `kind` is one of G0, G1c, G-single, G2-item.
    Cycle {
        /// The cycle class.
        kind: AnomalyKind,
        /// The edges, each step's `to` being the next step's `from`, the last closing the cycle.
        steps: Vec<CycleStep>,
    },
    /// `reader` observed `value`, appended by the aborted `writer`.
    G1a {
        /// The reading transaction.
        reader: u64,
        /// The aborted appender.
        writer: u64,
        /// The key read.
        key: u64,
        /// The aborted element observed.
        value: u64,
    },
    /// `reader` observed a list ending in `value`, which `writer` later followed with `final_value`.
    G1b {
        /// The reading transaction.
        reader: u64,
        /// The appender whose intermediate state was observed.
        writer: u64,
        /// The key read.
        key: u64,
        /// The last element of the read.
        value: u64,
        /// The writer's last append to the key.
        final_value: u64,
    },
    /// `reader` observed `value`, which no transaction appended to `key`.
    GarbageRead {
        /// The reading transaction.
        reader: u64,
        /// The key read.
        key: u64,
        /// The unknown element.
        value: u64,
    },
    /// A read in `txn` that contradicts the transaction's own earlier ops on `key`.
    InternalInconsistency {
        /// The transaction.
        txn: u64,
        /// The key read.
        key: u64,
        /// What the read returned.
        observed: Vec<u64>,
        /// What the transaction's own ops imply instead.
        reason: String,
    },
    /// Committed `txns` all read the version of `key` ending in `read_last` and all appended.
    LostUpdate {
        /// The key.
        key: u64,
        /// The last element of the version they read (`None` = empty list).
        read_last: Option<u64>,
        /// The transactions that each overwrote that version.
        txns: Vec<u64>,
    },
    /// `txn` read `values` of `key`, which holds an element twice.
    DuplicateElements {
        /// The reading transaction.
        txn: u64,
        /// The key read.
        key: u64,
        /// The list read.
        values: Vec<u64>,
    },
    /// Two reads of `key` where neither's list is a prefix of the other's.
    IncompatibleOrder {
        /// The key.
        key: u64,
        /// The transaction whose read is the longest, taken as the key's order.
        longest_txn: u64,
        /// The longest list (the reader's own appends excluded).
        longest: Vec<u64>,
        /// The transaction whose read disagrees.
        other_txn: u64,
        /// Its list (own appends excluded).
        other: Vec<u64>,
    },
    /// `reader` began after `writer`'s commit was acknowledged yet missed its append `value`.
    StaleRead {
        /// The reading transaction.
        reader: u64,
        /// The acknowledged writer.
        writer: u64,
        /// The key.
        key: u64,
        /// The writer's append the read should have contained.
        value: u64,
    },
}

impl Anomaly {
    /// The class of this anomaly.
    pub fn kind(&self) -> AnomalyKind {
        match self {
            Anomaly::Malformed { .. } => AnomalyKind::Malformed,
            Anomaly::Cycle { kind, .. } => *kind,
            Anomaly::G1a { .. } => AnomalyKind::G1a,
            Anomaly::G1b { .. } => AnomalyKind::G1b,
            Anomaly::GarbageRead { .. } => AnomalyKind::GarbageRead,
            Anomaly::InternalInconsistency { .. } => AnomalyKind::InternalInconsistency,
            Anomaly::LostUpdate { .. } => AnomalyKind::LostUpdate,
            Anomaly::DuplicateElements { .. } => AnomalyKind::DuplicateElements,
            Anomaly::IncompatibleOrder { .. } => AnomalyKind::IncompatibleOrder,
            Anomaly::StaleRead { .. } => AnomalyKind::StaleRead,
        }
    }

    /// Ids of the transactions involved, in first-mention order without repeats.
    pub fn txns(&self) -> Vec<u64> {
        let ids: Vec<u64> = match self {
            Anomaly::Malformed { txns, .. } | Anomaly::LostUpdate { txns, .. } => txns.clone(),
            Anomaly::Cycle { steps, .. } => steps.iter().map(|s| s.from).collect(),
            Anomaly::G1a { reader, writer, .. }
            | Anomaly::G1b { reader, writer, .. }
            | Anomaly::StaleRead { reader, writer, .. } => vec![*reader, *writer],
            Anomaly::GarbageRead { reader, .. } => vec![*reader],
            Anomaly::InternalInconsistency { txn, .. } | Anomaly::DuplicateElements { txn, .. } => {
                vec![*txn]
            }
            Anomaly::IncompatibleOrder {
                longest_txn,
                other_txn,
                ..
            } => vec![*longest_txn, *other_txn],
        };
        let mut seen = Vec::with_capacity(ids.len());
        for id in ids {
            if !seen.contains(&id) {
                seen.push(id);
            }
        }
        seen
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.kind().name())?;
        match self {
            Anomaly::Malformed { reason, .. } => f.write_str(reason),
            Anomaly::Cycle { steps, .. } => {
                for (i, s) in steps.iter().enumerate() {
                    write!(f, "{}{s}", if i == 0 { "" } else { "; " })?;
                }
                Ok(())
            }
            Anomaly::G1a { reader, writer, key, value } => write!(
                f,
                "T{reader} read element {value} of key {key}, appended by T{writer}, which aborted"
            ),
            Anomaly::G1b { reader, writer, key, value, final_value } => write!(
                f,
                "T{reader} read key {key} ending in {value}, but T{writer}'s final append to it is {final_value}"
            ),
            Anomaly::GarbageRead { reader, key, value } => {
                write!(f, "T{reader} read element {value} of key {key}, which nobody appended")
            }
            Anomaly::InternalInconsistency { txn, key, observed, reason } => write!(
                f,
                "T{txn} read key {key} as {}, but {reason}",
                ListDisplay(observed)
            ),
            Anomaly::LostUpdate { key, read_last, txns } => {
                let version = match read_last {
                    Some(v) => format!("the list ending in {v}"),
                    None => "the empty list".to_string(),
                };
                let names: Vec<String> = txns.iter().map(|t| format!("T{t}")).collect();
                write!(
                    f,
                    "{} read {version} of key {key} and all appended to it",
                    names.join(", ")
                )
            }
            Anomaly::DuplicateElements { txn, key, values } => {
                write!(f, "T{txn} read key {key} as {}, which repeats an element", ListDisplay(values))
            }
            Anomaly::IncompatibleOrder { key, longest_txn, longest, other_txn, other } => write!(
                f,
                "key {key}: T{other_txn} read {} which is not a prefix of T{longest_txn}'s {}",
                ListDisplay(other),
                ListDisplay(longest)
            ),
            Anomaly::StaleRead { reader, writer, key, value } => write!(
                f,
                "T{reader} began after T{writer}'s commit was acknowledged but its read of key {key} lacks T{writer}'s append {value}"
            ),
        }
    }
}

/// Kept anomalies per kind; more are counted in [`Report::suppressed`], not stored.
pub const ANOMALIES_PER_KIND_MAX: usize = 32;

/// The outcome of [`crate::check_list_append`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Transactions in the history.
    pub txns_checked: usize,
    /// Transactions in the dependency graph (committed, or unknown but observed).
    pub graph_txns: usize,
    /// Distinct ordered transaction pairs joined by at least one dependency edge.
    pub graph_edges: usize,
    /// What was found, up to [`ANOMALIES_PER_KIND_MAX`] per kind.
    pub anomalies: Vec<Anomaly>,
    /// Anomalies found beyond the per-kind limit, by kind.
    pub suppressed: BTreeMap<AnomalyKind, usize>,
    /// Every transaction an anomaly names, for explaining it.
    pub involved: BTreeMap<u64, Txn>,
}

impl Report {
    /// False if any anomaly that snapshot isolation forbids was found. G2-item (write skew) is
    /// allowed; a stale read only appears when the real-time check was asked for.
    pub fn is_valid_snapshot_isolation(&self) -> bool {
        self.anomalies
            .iter()
            .all(|a| !a.kind().forbidden_by_snapshot_isolation())
    }

    /// True if nothing at all was found (serializable as far as this checker can tell).
    pub fn is_clean(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// The distinct kinds found, in order.
    pub fn kinds(&self) -> Vec<AnomalyKind> {
        let mut kinds: Vec<AnomalyKind> = self.anomalies.iter().map(Anomaly::kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// Records an anomaly unless its kind is already at the limit.
    pub(crate) fn push(&mut self, anomaly: Anomaly) {
        let kind = anomaly.kind();
        let kept = self.anomalies.iter().filter(|a| a.kind() == kind).count();
        if kept >= ANOMALIES_PER_KIND_MAX {
            *self.suppressed.entry(kind).or_default() += 1;
        } else {
            self.anomalies.push(anomaly);
        }
    }

    /// Copies every transaction an anomaly names into `involved`.
    pub(crate) fn collect_involved(&mut self, txns: &[Txn]) {
        let by_id: BTreeMap<u64, &Txn> = txns.iter().map(|t| (t.id, t)).collect();
        for a in &self.anomalies {
            for id in a.txns() {
                if let Some(t) = by_id.get(&id) {
                    self.involved.insert(id, (*t).clone());
                }
            }
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} txns ({} in the dependency graph, {} edges): {} anomalies; snapshot isolation {}",
            self.txns_checked,
            self.graph_txns,
            self.graph_edges,
            self.anomalies.len(),
            if self.is_valid_snapshot_isolation() { "holds" } else { "VIOLATED" }
        )?;
        // What snapshot isolation allows first, what it forbids last: a failing check ends with
        // its finding, not with a page of permitted write skews.
        let mut n = 0;
        for forbidden in [false, true] {
            let listed = self
                .anomalies
                .iter()
                .filter(|a| a.kind().forbidden_by_snapshot_isolation() == forbidden);
            for a in listed {
                n += 1;
                writeln!(f, "{n}. {a}")?;
                for id in a.txns() {
                    match self.involved.get(&id) {
                        Some(t) => writeln!(f, "     {t}")?,
                        None => writeln!(f, "     T{id} (not in the history)")?,
                    }
                }
            }
            for (kind, more) in &self.suppressed {
                if kind.forbidden_by_snapshot_isolation() == forbidden {
                    writeln!(f, "... and {more} more {} not listed", kind.name())?;
                }
            }
        }
        Ok(())
    }
}
