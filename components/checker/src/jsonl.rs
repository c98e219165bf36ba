//! The JSON-lines form of transactional histories (list-append and bank), one transaction per
//! line, in the shape of the register form ([`crate::register`]):
//!
//! ```text
//! {"client": 3, "id": 41, "f": "txn", "key": null,
//!  "value": [["append", 7, 12], ["r", 9, null]],
//!  "out":   [["append", 7, 12], ["r", 9, [1, 4]]],
//!  "outcome": "committed", "call_ns": 1000, "ret_ns": 2500}
//! ```
//!
//! - `value` lists the micro-operations as issued, `out` the same list with each read's
//!   observed list filled in (`null` where the read failed or never ran).
//! - `outcome` is `committed`, `aborted` (surely not committed) or `unknown`; `ret_ns` is null
//!   exactly when it is `unknown`.
//! - Bank histories use the micro-operations `["w", account, balance]` (the first line: the
//!   committed transaction that sets the initial balances), `["transfer", from, to, amount]`
//!   and `["r", account, null]`, whose `out` is `["r", account, balance]`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::bank::{BankOptions, BankRead, BankTransfer};
use crate::history::{Op, Outcome, Txn};

/// Why a line of a transactional history does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct TxnLineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Committed => "committed",
        Outcome::Aborted => "aborted",
        Outcome::Unknown => "unknown",
    }
}

fn line_of(
    txn_id: u64,
    client: u64,
    value: Value,
    out: Value,
    o: Outcome,
    call: u64,
    ret: Option<u64>,
) -> Value {
    json!({
        "client": client,
        "id": txn_id,
        "f": "txn",
        "key": null,
        "value": value,
        "out": out,
        "outcome": outcome_name(o),
        "call_ns": call,
        "ret_ns": if o == Outcome::Unknown { None } else { ret },
    })
}

/// One list-append transaction as a JSON line (no trailing newline). `start` and `end` are
/// taken as `call_ns` and `ret_ns`.
pub fn list_append_line(txn: &Txn) -> String {
    list_append_record(txn).to_string()
}

/// [`list_append_line`] as a JSON object, for a writer that adds fields of its own.
pub fn list_append_record(txn: &Txn) -> Value {
    let micro = |op: &Op, filled: bool| match op {
        Op::Append { key, value } => json!(["append", key, value]),
        Op::Read { key, values } => {
            json!(["r", key, if filled { json!(values) } else { Value::Null }])
        }
    };
    line_of(
        txn.id,
        txn.process,
        Value::Array(txn.ops.iter().map(|o| micro(o, false)).collect()),
        Value::Array(txn.ops.iter().map(|o| micro(o, true)).collect()),
        txn.outcome,
        txn.start.unwrap_or(0),
        txn.end,
    )
}

/// The fields every transaction line has.
struct Line {
    client: u64,
    id: u64,
    value: Vec<Value>,
    out: Vec<Value>,
    outcome: Outcome,
    call_ns: u64,
    ret_ns: Option<u64>,
}

fn parse_line(n: usize, raw: &str) -> Result<Line, TxnLineError> {
    let err = |message: String| TxnLineError { line: n, message };
    let v: Value = serde_json::from_str(raw).map_err(|e| err(e.to_string()))?;
    let u = |field: &str| {
        v[field]
            .as_u64()
            .ok_or_else(|| err(format!("{field} must be an unsigned integer")))
    };
    if v["f"] != "txn" {
        return Err(err(format!("f is {}, not \"txn\"", v["f"])));
    }
    let outcome = match v["outcome"].as_str() {
        Some("committed") => Outcome::Committed,
        Some("aborted") => Outcome::Aborted,
        Some("unknown") => Outcome::Unknown,
        _ => {
            return Err(err(format!(
                "outcome {} is not committed|aborted|unknown",
                v["outcome"]
            )))
        }
    };
    let ret_ns = match &v["ret_ns"] {
        Value::Null => None,
        r => Some(
            r.as_u64()
                .ok_or_else(|| err("ret_ns must be an integer or null".into()))?,
        ),
    };
    if ret_ns.is_none() != (outcome == Outcome::Unknown) {
        return Err(err(
            "ret_ns is null exactly when the outcome is unknown".into()
        ));
    }
    let list = |field: &str| match &v[field] {
        Value::Array(a) => Ok(a.clone()),
        Value::Null if field == "out" => Ok(vec![]),
        _ => Err(err(format!("{field} must be a list of micro-operations"))),
    };
    Ok(Line {
        client: u("client")?,
        id: u("id")?,
        value: list("value")?,
        out: list("out")?,
        outcome,
        call_ns: u("call_ns")?,
        ret_ns,
    })
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty())
}

/// A micro-operation `[name, a, b]` of a line, or `[name, a, b, c]`.
fn micro(n: usize, m: &Value) -> Result<(&str, &[Value]), TxnLineError> {
    let a = m.as_array().filter(|a| !a.is_empty());
    let name = a.and_then(|a| a[0].as_str());
    match (a, name) {
        (Some(a), Some(name)) => Ok((name, &a[1..])),
        _ => Err(TxnLineError {
            line: n,
            message: format!("micro-operation {m} is not [name, ...]"),
        }),
    }
}

fn arg_u64(n: usize, args: &[Value], i: usize) -> Result<u64, TxnLineError> {
    args.get(i).and_then(Value::as_u64).ok_or(TxnLineError {
        line: n,
        message: format!("argument {i} of a micro-operation must be an unsigned integer"),
    })
}

fn arg_i64(n: usize, args: &[Value], i: usize) -> Result<i64, TxnLineError> {
    args.get(i).and_then(Value::as_i64).ok_or(TxnLineError {
        line: n,
        message: format!("argument {i} of a micro-operation must be an integer"),
    })
}

/// Parses a list-append history written with [`list_append_line`].
pub fn parse_list_append_lines(text: &str) -> Result<Vec<Txn>, TxnLineError> {
    let mut txns = Vec::new();
    for (n, raw) in lines(text) {
        let l = parse_line(n, raw)?;
        let mut ops = Vec::with_capacity(l.value.len());
        for (i, m) in l.value.iter().enumerate() {
            let (name, args) = micro(n, m)?;
            let key = arg_u64(n, args, 0)?;
            ops.push(match name {
                "append" => Op::append(key, arg_u64(n, args, 1)?),
                "r" => {
                    let observed = l.out.get(i).map(|o| micro(n, o)).transpose()?;
                    let values = match observed.and_then(|(_, a)| a.get(1)) {
                        None | Some(Value::Null) => None,
                        Some(list) => Some(
                            serde_json::from_value::<Vec<u64>>(list.clone()).map_err(|e| {
                                TxnLineError {
                                    line: n,
                                    message: format!("read of {key} observed {list}: {e}"),
                                }
                            })?,
                        ),
                    };
                    Op::Read { key, values }
                }
                other => {
                    return Err(TxnLineError {
                        line: n,
                        message: format!("unknown micro-operation {other:?}"),
                    })
                }
            });
        }
        let mut txn = Txn::new(l.id, l.client, ops, l.outcome);
        txn.start = Some(l.call_ns);
        txn.end = l.ret_ns;
        txns.push(txn);
    }
    Ok(txns)
}

/// The line of the transaction that sets the bank's initial balances.
pub fn bank_init_line(
    id: u64,
    client: u64,
    initial: &BTreeMap<u64, i64>,
    call: u64,
    ret: u64,
) -> String {
    let ops: Vec<Value> = initial.iter().map(|(a, b)| json!(["w", a, b])).collect();
    line_of(
        id,
        client,
        Value::Array(ops.clone()),
        Value::Array(ops),
        Outcome::Committed,
        call,
        Some(ret),
    )
    .to_string()
}

/// The line of one transfer.
pub fn bank_transfer_line(t: &BankTransfer, client: u64) -> String {
    bank_transfer_record(t, client).to_string()
}

/// [`bank_transfer_line`] as a JSON object, for a writer that adds fields of its own.
pub fn bank_transfer_record(t: &BankTransfer, client: u64) -> Value {
    let op = json!([["transfer", t.from, t.to, t.amount]]);
    line_of(
        t.txn_id,
        client,
        op,
        Value::Null,
        t.outcome,
        t.start.unwrap_or(0),
        t.end,
    )
}

/// The line of one full read (committed: it observed `balances`).
pub fn bank_read_line(r: &BankRead, client: u64) -> String {
    let value: Vec<Value> = r.balances.keys().map(|a| json!(["r", a, null])).collect();
    let out: Vec<Value> = r.balances.iter().map(|(a, b)| json!(["r", a, b])).collect();
    line_of(
        r.txn_id,
        client,
        Value::Array(value),
        Value::Array(out),
        Outcome::Committed,
        r.start.unwrap_or(0),
        r.end,
    )
    .to_string()
}

/// A bank history read back: the invariant total, and the options (initial balances and
/// transfers) for [`crate::check_bank_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BankHistory {
    /// The sum of the initial balances.
    pub total: i64,
    /// Committed full reads.
    pub reads: Vec<BankRead>,
    /// Initial balances and every transfer.
    pub options: BankOptions,
}

/// Parses a bank history written with the `bank_*_line` functions; the first line must be
/// the initial balances.
pub fn parse_bank_lines(text: &str) -> Result<BankHistory, TxnLineError> {
    let mut h = BankHistory::default();
    let mut initialised = false;
    for (n, raw) in lines(text) {
        let l = parse_line(n, raw)?;
        let err = |message: &str| TxnLineError {
            line: n,
            message: message.to_owned(),
        };
        let Some(first) = l.value.first() else {
            return Err(err("a bank transaction has at least one micro-operation"));
        };
        match micro(n, first)?.0 {
            "w" => {
                if initialised || l.outcome != Outcome::Committed {
                    return Err(err("only the first line, committed, sets balances"));
                }
                for m in &l.value {
                    let (_, args) = micro(n, m)?;
                    h.options
                        .initial
                        .insert(arg_u64(n, args, 0)?, arg_i64(n, args, 1)?);
                }
                h.total = h.options.initial.values().sum();
                initialised = true;
            }
            "transfer" => {
                let (_, args) = micro(n, first)?;
                h.options.transfers.push(BankTransfer {
                    txn_id: l.id,
                    from: arg_u64(n, args, 0)?,
                    to: arg_u64(n, args, 1)?,
                    amount: arg_i64(n, args, 2)?,
                    outcome: l.outcome,
                    start: Some(l.call_ns),
                    end: l.ret_ns,
                });
            }
            "r" if l.outcome == Outcome::Committed => {
                let mut balances = BTreeMap::new();
                for m in &l.out {
                    let (_, args) = micro(n, m)?;
                    balances.insert(arg_u64(n, args, 0)?, arg_i64(n, args, 1)?);
                }
                h.reads.push(BankRead {
                    txn_id: l.id,
                    balances,
                    start: Some(l.call_ns),
                    end: l.ret_ns,
                });
            }
            "r" => {}
            other => return Err(err(&format!("unknown bank micro-operation {other:?}"))),
        }
        if !initialised {
            return Err(err("the first line must set the initial balances"));
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{check_bank_with, check_list_append, AnomalyKind, BankViolation};

    #[test]
    fn list_append_lines_round_trip_and_keep_unknown_without_return() {
        let txns = vec![
            Txn::new(
                1,
                0,
                vec![Op::append(1, 1), Op::read_of(2, &[])],
                Outcome::Committed,
            )
            .with_times(10, 20),
            Txn::new(2, 1, vec![Op::read(1), Op::append(2, 5)], Outcome::Unknown)
                .with_times(15, 40),
            Txn::new(3, 2, vec![Op::read_of(1, &[1])], Outcome::Aborted).with_times(30, 35),
        ];
        let text: String = txns.iter().map(|t| list_append_line(t) + "\n").collect();
        let mut expected = txns.clone();
        expected[1].end = None;
        assert_eq!(parse_list_append_lines(&text).unwrap(), expected);
        let second: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert!(second["ret_ns"].is_null());
        assert_eq!(second["value"], json!([["r", 1, null], ["append", 2, 5]]));
    }

    #[test]
    fn a_lost_append_read_back_from_lines_is_found() {
        // T1 appends 1 to key 0 and commits; T2 starts after and reads key 0 empty, T3 later
        // reads [1]: T2's read cannot be placed (it lost T1's committed append).
        let text = [
            r#"{"client":0,"id":1,"f":"txn","value":[["append",0,1]],"out":[["append",0,1]],"outcome":"committed","call_ns":1,"ret_ns":2}"#,
            r#"{"client":1,"id":2,"f":"txn","value":[["append",0,2],["r",0,null]],"out":[["append",0,2],["r",0,[2]]],"outcome":"committed","call_ns":3,"ret_ns":4}"#,
            r#"{"client":2,"id":3,"f":"txn","value":[["r",0,null]],"out":[["r",0,[1,2]]],"outcome":"committed","call_ns":5,"ret_ns":6}"#,
        ]
        .join("\n");
        let report = check_list_append(&parse_list_append_lines(&text).unwrap());
        assert!(!report.is_valid_snapshot_isolation(), "{report}");
        assert!(
            report
                .kinds()
                .iter()
                .any(|k| matches!(k, AnomalyKind::LostUpdate | AnomalyKind::GSingle)),
            "{report}"
        );
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for bad in [
            r#"{"client":0,"id":1,"f":"w","value":[],"out":[],"outcome":"committed","call_ns":1,"ret_ns":2}"#,
            r#"{"client":0,"id":1,"f":"txn","value":[["append",0]],"out":[],"outcome":"committed","call_ns":1,"ret_ns":2}"#,
            r#"{"client":0,"id":1,"f":"txn","value":[],"out":[],"outcome":"unknown","call_ns":1,"ret_ns":2}"#,
            r#"{"client":0,"id":1,"f":"txn","value":[],"out":[],"outcome":"maybe","call_ns":1,"ret_ns":2}"#,
        ] {
            let text = format!("\n{bad}\n");
            assert_eq!(parse_list_append_lines(&text).unwrap_err().line, 2, "{bad}");
        }
    }

    #[test]
    fn bank_lines_round_trip_and_a_lost_transfer_is_found() {
        let initial: BTreeMap<u64, i64> = [(0, 10), (1, 10)].into();
        let transfer = BankTransfer {
            txn_id: 2,
            from: 0,
            to: 1,
            amount: 3,
            outcome: Outcome::Committed,
            start: Some(3),
            end: Some(4),
        };
        let read = |id, b0, start| BankRead {
            txn_id: id,
            balances: [(0, b0), (1, 20 - b0)].into(),
            start: Some(start),
            end: Some(start + 1),
        };
        let text = [
            bank_init_line(1, 9, &initial, 1, 2),
            bank_transfer_line(&transfer, 0),
            bank_read_line(&read(3, 7, 5), 1),
        ]
        .join("\n");
        let h = parse_bank_lines(&text).unwrap();
        assert_eq!(h.total, 20);
        assert_eq!(h.options.transfers, vec![transfer.clone()]);
        assert_eq!(h.reads, vec![read(3, 7, 5)]);
        check_bank_with(h.total, &h.reads, &h.options).unwrap();
        // A read after the acknowledged transfer that does not see it.
        let stale = format!("{text}\n{}", bank_read_line(&read(4, 10, 7), 1));
        let h = parse_bank_lines(&stale).unwrap();
        assert!(matches!(
            check_bank_with(h.total, &h.reads, &h.options),
            Err(BankViolation::UnexplainedRead { txn_id: 4, .. })
        ));
        assert!(parse_bank_lines(&bank_transfer_line(&transfer, 0)).is_err());
    }
}
