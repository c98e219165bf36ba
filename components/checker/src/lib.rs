//! Transactional isolation checkers for histories recorded against a cluster.
//!
//! A driver runs transactions from [`ListAppendGen`] (each op appends a unique value to a
//! key's list, or reads the whole list) through real clients, records each as a [`Txn`] with
//! what its reads returned and its [`Outcome`], and hands the history to
//! [`check_list_append`]. The checker, in the spirit of Jepsen's Elle: strips each read of the
//! reader's own appends and checks it against the reader's earlier ops (internal consistency);
//! traces every element read to its appender (garbage, G1a aborted and G1b intermediate
//! reads); takes each key's longest read as its version order (every other read must be a
//! prefix); builds ww/wr/rw dependency edges between committed transactions (and
//! unknown-outcome ones whose appends were observed); and finds cycles with Tarjan's SCCs and
//! BFS under each class's edge constraint (G0, G1c, G-single, G2-item). Optionally it checks
//! that every read sees each commit acknowledged before its transaction began. The
//! [`Report`] lists each [`Anomaly`] with the transactions involved and says whether snapshot
//! isolation holds (G2-item write skew is allowed). [`check_bank`] checks a bank workload's
//! full-table reads.
//!
//! Everything here is pure: no I/O, no clock, randomness only from a caller's seed. This crate
//! must not depend on the store, its engines or any client; it only knows the history.
#![deny(missing_docs)]

mod anomaly;
mod bank;
mod gen;
mod graph;
mod history;
mod list_append;

#[cfg(test)]
mod list_append_tests;
#[cfg(test)]
mod sim;

pub use anomaly::{Anomaly, AnomalyKind, CycleStep, EdgeKind, Report, ANOMALIES_PER_KIND_MAX};
pub use bank::{
    check_bank, check_bank_with, BankOptions, BankRead, BankSummary, BankTransfer, BankViolation,
    UNDETERMINED_TRANSFERS_DEFAULT_MAX,
};
pub use gen::{ListAppendGen, APPENDS_PER_KEY_DEFAULT};
pub use history::{
    decode_list, encode_list, history_from_json, history_to_json, HistoryError, Op, Outcome, Txn,
};
pub use list_append::{check_list_append, check_list_append_with, CheckOptions};
