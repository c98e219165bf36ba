//! The bank-workload checker: transfers move money between accounts, full-table reads must
//! see a total that never changes, and (given times) every transfer acknowledged before the
//! read began.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::Outcome;

/// Transfers of unknown visibility a read may be explained by before the real-time check gives
/// up on it (it tries every subset).
pub const UNDETERMINED_TRANSFERS_DEFAULT_MAX: usize = 16;

/// A committed transaction's read of every account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankRead {
    /// The reading transaction.
    pub txn_id: u64,
    /// Account to balance.
    pub balances: BTreeMap<u64, i64>,
    /// Logical time taken just before the transaction began.
    pub start: Option<u64>,
    /// Logical time taken just after it committed.
    pub end: Option<u64>,
}

/// A transfer transaction, for the real-time check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankTransfer {
    /// The transferring transaction.
    pub txn_id: u64,
    /// Debited account.
    pub from: u64,
    /// Credited account.
    pub to: u64,
    /// Amount moved.
    pub amount: i64,
    /// How it ended, as far as the client knows.
    pub outcome: Outcome,
    /// Logical time taken just before it began.
    pub start: Option<u64>,
    /// Logical time taken just after its outcome was known.
    pub end: Option<u64>,
}

/// What [`check_bank_with`] checks beyond the totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankOptions {
    /// Whether a balance may go below zero.
    pub allow_negative: bool,
    /// Balances before any transfer; needed for the real-time check.
    pub initial: BTreeMap<u64, i64>,
    /// Every transfer attempted; an empty list skips the real-time check.
    pub transfers: Vec<BankTransfer>,
    /// See [`UNDETERMINED_TRANSFERS_DEFAULT_MAX`].
    pub undetermined_max: usize,
}

impl Default for BankOptions {
    fn default() -> Self {
        BankOptions {
            allow_negative: false,
            initial: BTreeMap::new(),
            transfers: Vec::new(),
            undetermined_max: UNDETERMINED_TRANSFERS_DEFAULT_MAX,
        }
    }
}

/// How much of the real-time check could be decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BankSummary {
    /// Reads whose totals and balances were checked.
    pub reads_checked: usize,
    /// Reads the real-time check decided.
    pub realtime_checked: usize,
    /// Reads it skipped: without times, or concurrent with too many transfers.
    pub realtime_undecided: usize,
}

/// The first violation found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankViolation {
    /// The balances do not add up.
    #[error("T{txn_id} read a total of {actual}, expected {expected}")]
    WrongTotal {
        /// The reading transaction.
        txn_id: u64,
        /// The invariant total.
        expected: i64,
        /// What the read adds up to.
        actual: i64,
    },
    /// A balance below zero where the workload forbids it.
    #[error("T{txn_id} read account {account} at {balance}, below zero")]
    NegativeBalance {
        /// The reading transaction.
        txn_id: u64,
        /// The account.
        account: u64,
        /// Its balance.
        balance: i64,
    },
    /// No set of possibly visible transfers, together with every transfer acknowledged before
    /// the read began, turns the initial balances into the ones read.
    #[error(
        "T{txn_id}'s balances are not the initial ones plus the {acknowledged} transfers acknowledged before it began and any of the {undetermined} concurrent or unknown ones (acknowledged earlier: {acknowledged_ids:?})"
    )]
    UnexplainedRead {
        /// The reading transaction.
        txn_id: u64,
        /// How many transfers it had to see.
        acknowledged: usize,
        /// Their ids.
        acknowledged_ids: Vec<u64>,
        /// How many others it may or may not have seen.
        undetermined: usize,
    },
}

/// Checks each committed full-table read: it sums to `total` and no balance is negative.
pub fn check_bank(total: i64, reads: &[BankRead]) -> Result<(), BankViolation> {
    check_bank_with(total, reads, &BankOptions::default()).map(|_| ())
}

/// Like [`check_bank`] with `options`, including the real-time check if transfers are given.
pub fn check_bank_with(
    total: i64,
    reads: &[BankRead],
    options: &BankOptions,
) -> Result<BankSummary, BankViolation> {
    let mut summary = BankSummary::default();
    for read in reads {
        let actual: i64 = read.balances.values().sum();
        if actual != total {
            return Err(BankViolation::WrongTotal {
                txn_id: read.txn_id,
                expected: total,
                actual,
            });
        }
        if let Some((&account, &balance)) = read.balances.iter().find(|(_, b)| **b < 0) {
            if !options.allow_negative {
                return Err(BankViolation::NegativeBalance {
                    txn_id: read.txn_id,
                    account,
                    balance,
                });
            }
        }
        summary.reads_checked += 1;
        if options.transfers.is_empty() {
            continue;
        }
        if check_realtime(read, options)? {
            summary.realtime_checked += 1;
        } else {
            summary.realtime_undecided += 1;
        }
    }
    Ok(summary)
}

/// Ok(true) if the read is explained, Ok(false) if undecided.
fn check_realtime(read: &BankRead, options: &BankOptions) -> Result<bool, BankViolation> {
    let (Some(start), Some(end)) = (read.start, read.end) else {
        return Ok(false);
    };
    let mut must = Vec::new();
    let mut maybe = Vec::new();
    for t in &options.transfers {
        let acked_before = t.outcome == Outcome::Committed && t.end.is_some_and(|e| e < start);
        let began_after = t.start.is_some_and(|s| s > end);
        if acked_before {
            must.push(t);
        } else if t.outcome != Outcome::Aborted && !began_after {
            maybe.push(t);
        }
    }
    if maybe.len() > options.undetermined_max {
        return Ok(false);
    }
    let accounts: BTreeSet<u64> = options
        .initial
        .keys()
        .chain(read.balances.keys())
        .chain(options.transfers.iter().flat_map(|t| [&t.from, &t.to]))
        .copied()
        .collect();
    let slot = |a: u64| accounts.range(..a).count();
    // What the undetermined transfers must add up to, per account.
    let mut need: Vec<i64> = accounts
        .iter()
        .map(|a| {
            read.balances.get(a).copied().unwrap_or(0)
                - options.initial.get(a).copied().unwrap_or(0)
        })
        .collect();
    for t in &must {
        need[slot(t.from)] += t.amount;
        need[slot(t.to)] -= t.amount;
    }
    let moves: Vec<(usize, usize, i64)> = maybe
        .iter()
        .map(|t| (slot(t.from), slot(t.to), t.amount))
        .collect();
    let nonzero = need.iter().filter(|n| **n != 0).count();
    if subset_explains(&moves, &mut need, nonzero) {
        return Ok(true);
    }
    Err(BankViolation::UnexplainedRead {
        txn_id: read.txn_id,
        acknowledged: must.len(),
        acknowledged_ids: must.iter().map(|t| t.txn_id).collect(),
        undetermined: maybe.len(),
    })
}

/// Whether some subset of `moves` (from, to, amount) brings every entry of `need` to zero;
/// `nonzero` counts the entries that are not zero yet.
fn subset_explains(moves: &[(usize, usize, i64)], need: &mut [i64], nonzero: usize) -> bool {
    let Some((&(from, to, amount), rest)) = moves.split_first() else {
        return nonzero == 0;
    };
    if subset_explains(rest, need, nonzero) {
        return true;
    }
    // Taking a transfer: the debit moved `amount` out of `from`, into `to`.
    let nz = adjust(need, nonzero, from, amount);
    let nz = adjust(need, nz, to, -amount);
    let found = subset_explains(rest, need, nz);
    let nz = adjust(need, nz, from, -amount);
    adjust(need, nz, to, amount);
    found
}

/// Adds `d` to `need[i]` and returns the updated count of non-zero entries.
fn adjust(need: &mut [i64], nonzero: usize, i: usize, d: i64) -> usize {
    let was = usize::from(need[i] != 0);
    need[i] += d;
    nonzero + usize::from(need[i] != 0) - was
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(txn_id: u64, balances: &[i64], times: Option<(u64, u64)>) -> BankRead {
        BankRead {
            txn_id,
            balances: balances
                .iter()
                .enumerate()
                .map(|(a, b)| (a as u64, *b))
                .collect(),
            start: times.map(|t| t.0),
            end: times.map(|t| t.1),
        }
    }

    fn transfer(
        txn_id: u64,
        from: u64,
        to: u64,
        amount: i64,
        outcome: Outcome,
        t: (u64, u64),
    ) -> BankTransfer {
        BankTransfer {
            txn_id,
            from,
            to,
            amount,
            outcome,
            start: Some(t.0),
            end: Some(t.1),
        }
    }

    #[test]
    fn totals_and_negative_balances() {
        assert_eq!(
            check_bank(
                30,
                &[read(1, &[10, 10, 10], None), read(2, &[0, 25, 5], None)]
            ),
            Ok(())
        );
        assert_eq!(
            check_bank(30, &[read(1, &[10, 10, 11], None)]),
            Err(BankViolation::WrongTotal {
                txn_id: 1,
                expected: 30,
                actual: 31
            })
        );
        assert_eq!(
            check_bank(30, &[read(3, &[-5, 25, 10], None)]),
            Err(BankViolation::NegativeBalance {
                txn_id: 3,
                account: 0,
                balance: -5
            })
        );
        let lenient = BankOptions {
            allow_negative: true,
            ..BankOptions::default()
        };
        assert!(check_bank_with(30, &[read(3, &[-5, 25, 10], None)], &lenient).is_ok());
    }

    #[test]
    fn realtime_requires_acknowledged_transfers() {
        let options = BankOptions {
            initial: [(0, 10), (1, 10), (2, 10)].into(),
            transfers: vec![
                transfer(10, 0, 1, 3, Outcome::Committed, (1, 2)),
                transfer(11, 1, 2, 5, Outcome::Unknown, (3, 4)),
                transfer(12, 2, 0, 7, Outcome::Aborted, (3, 4)),
                transfer(13, 0, 2, 1, Outcome::Committed, (20, 21)),
            ],
            ..BankOptions::default()
        };
        // Sees 10; may or may not see the unknown 11; cannot see 13 (began after it ended).
        let ok = [
            read(1, &[7, 13, 10], Some((5, 6))),
            read(2, &[7, 8, 15], Some((5, 6))),
        ];
        let summary = check_bank_with(30, &ok, &options).unwrap();
        assert_eq!(summary.realtime_checked, 2);
        // Misses 10, acknowledged before it began.
        let stale = read(3, &[10, 10, 10], Some((5, 6)));
        assert!(matches!(
            check_bank_with(30, &[stale], &options),
            Err(BankViolation::UnexplainedRead {
                txn_id: 3,
                acknowledged: 1,
                ..
            })
        ));
        // Sees the aborted 12.
        let dirty = read(4, &[14, 13, 3], Some((5, 6)));
        assert!(check_bank_with(30, &[dirty], &options).is_err());
        // Without times it cannot decide.
        let summary = check_bank_with(30, &[read(5, &[10, 10, 10], None)], &options).unwrap();
        assert_eq!(summary.realtime_undecided, 1);
    }
}
