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
//! [`register`] checks single-key register histories (read, write, compare-and-set, one JSON
//! line each, [`register::parse_history`]) for linearizability: [`check_register`] searches,
//! per key, for an order of the ops that respects real time, with Wing & Gong's algorithm,
//! Lowe's just-in-time linearization and a memo of visited states, bounded by
//! [`RegisterCheckOptions::states_max`] (reaching it is an undecided key, not a pass).
//!
//! # Recording a history
//!
//! - Take `start` from the driver's monotonic counter just before beginning the transaction
//!   (before its start timestamp is fetched) and `end` just after its outcome is known.
//! - Run an append as read-modify-write inside the transaction: get the key's list (absent =
//!   empty, [`decode_list`]), push the value, put it back ([`encode_list`]).
//! - Fill in every read that returned: `values: Some(list)`, `Some(vec![])` for an absent key.
//!   Keep those reads even if the transaction later aborts or its outcome is unknown: a
//!   snapshot read is an observation either way. Leave a read that failed or never ran `None`.
//! - Outcome: `Committed` only when commit returned Ok. `Aborted` when the transaction surely
//!   did not commit: rolled back, failed before commit was sent, or commit was refused with a
//!   definite error (write conflict, key already locked by a winner). Anything else at commit
//!   (timeout, region or transport error, undetermined result) is `Unknown`: never guess
//!   `Aborted`, which would turn a visible commit into a false G1a.
//! - Record every transaction begun, whatever its outcome, with ids unique in the history.
//!
//! Everything here is pure: no I/O, no clock, randomness only from a caller's seed. This crate
//! must not depend on the store, its engines or any client; it only knows the history.
#![deny(missing_docs)]

mod anomaly;
mod bank;
mod gen;
mod graph;
mod history;
pub mod jsonl;
mod list_append;
pub mod register;

#[cfg(test)]
mod list_append_tests;
#[cfg(test)]
mod register_tests;
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
pub use register::{
    check_register, check_register_with, RegisterCheckOptions, RegisterOp, RegisterOpKind,
    RegisterReport, RegisterValue, RegisterVerdict, RegisterViolation,
};
