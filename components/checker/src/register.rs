//! Single-key register histories: the ops a driver records (read, write, compare-and-set, one
//! per JSON line), their parsing, and [`check_register`], which says per key whether some
//! total order of the ops respects real time and register semantics (linearizability).
//!
//! # The JSON-lines form
//!
//! One completed (or abandoned) operation per line:
//!
//! ```text
//! {"client": 3, "key": "k17", "f": "w",   "value": 5,      "out": null,  "call_ns": 10, "ret_ns": 20}
//! {"client": 4, "key": "k17", "f": "r",   "value": null,   "out": 5,     "call_ns": 15, "ret_ns": 30}
//! {"client": 5, "key": "k17", "f": "cas", "value": [5, 6], "out": true,  "call_ns": 31, "ret_ns": 40}
//! {"client": 6, "key": "k17", "f": "w",   "value": 7,      "out": null,  "call_ns": 41, "ret_ns": null}
//! ```
//!
//! - A value ([`RegisterValue`]) is a JSON integer (fits `i64`) or string; `null` is the
//!   absent key, every key's initial state. Writes should write values unique per key, so
//!   that a read names the write it saw; the checker is correct without that, but slower and
//!   its explanations vaguer.
//! - `r`: `value` is null, `out` the value read (null = absent).
//! - `w`: `value` is the value written (not null); `out` is ignored.
//! - `cas`: `value` is `[expected, new]` (`expected` may be null: set only if absent; `new` is
//!   not null); `out` is `true` if it swapped, `false` if it saw a value other than
//!   `expected` and did nothing.
//! - `ret_ns` is null when the client does not know the outcome (timeout, lost connection):
//!   the op may take effect at any point after `call_ns`, or never. `out` must then be null.
//!   Otherwise `call_ns <= ret_ns` and the op took effect at one instant in between.
//!
//! Times are the driver's monotonic clock; two ops are ordered only when one returned strictly
//! before the other was called.
//!
//! # What the checker assumes
//!
//! Keys are independent and start absent. An op that returned took effect at one instant
//! between its call and return; a `cas` that returned `false` took effect as a read that saw
//! a value other than `expected`. An op with an unknown outcome took effect at some instant
//! after its call, or never: a write or cas may be placed or left out, and a read is dropped
//! (it constrains nothing). The verdict per key is linearizable, not (with the op that could
//! not be placed after the longest prefix found), or unknown when the search reached its
//! bound of explored states.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

mod search;

pub use search::{
    check_register, check_register_with, KeyReport, RegisterCheckOptions, RegisterReport,
    RegisterVerdict, RegisterViolation, REGISTER_STATES_DEFAULT_MAX,
};

/// A value held by a register. `Option<RegisterValue>` is a register's state, `None` absent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RegisterValue {
    /// A JSON integer.
    Int(i64),
    /// A JSON string.
    Str(String),
}

impl fmt::Display for RegisterValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterValue::Int(i) => write!(f, "{i}"),
            RegisterValue::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<i64> for RegisterValue {
    fn from(i: i64) -> Self {
        RegisterValue::Int(i)
    }
}

impl From<&str> for RegisterValue {
    fn from(s: &str) -> Self {
        RegisterValue::Str(s.to_owned())
    }
}

/// What an op did, with what it returned (the JSON `f`, `value` and `out`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegisterOpKind {
    /// `r`: `out` is the value read, `None` for absent (and for an unknown outcome).
    Read {
        /// The value read.
        out: Option<RegisterValue>,
    },
    /// `w`: set the register to `value`.
    Write {
        /// The value written.
        value: RegisterValue,
    },
    /// `cas`: if the register holds `expected`, set it to `new`.
    Cas {
        /// The value the register must hold for the swap (`None`: absent).
        expected: Option<RegisterValue>,
        /// The value swapped in.
        new: RegisterValue,
        /// Whether it swapped; `None` when the outcome is unknown.
        out: Option<bool>,
    },
}

/// One operation of a register history.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "WireOp", into = "WireOp")]
pub struct RegisterOp {
    /// The client (logical process) that ran it.
    pub client: u64,
    /// The register; keys are checked independently.
    pub key: String,
    /// What it did and returned.
    pub kind: RegisterOpKind,
    /// Driver's monotonic time just before the call.
    pub call_ns: u64,
    /// Time just after the outcome was known; `None` when it is unknown.
    pub ret_ns: Option<u64>,
}

impl RegisterOp {
    /// A completed read of `key` that returned `out`.
    pub fn read(
        client: u64,
        key: &str,
        out: Option<RegisterValue>,
        call_ns: u64,
        ret_ns: u64,
    ) -> Self {
        Self::new(
            client,
            key,
            RegisterOpKind::Read { out },
            call_ns,
            Some(ret_ns),
        )
    }

    /// A write of `value` to `key`; `ret_ns` `None` when its outcome is unknown.
    pub fn write(
        client: u64,
        key: &str,
        value: RegisterValue,
        call_ns: u64,
        ret_ns: Option<u64>,
    ) -> Self {
        Self::new(
            client,
            key,
            RegisterOpKind::Write { value },
            call_ns,
            ret_ns,
        )
    }

    /// A compare-and-set on `key`; `out` (whether it swapped) is `None` exactly when `ret_ns` is.
    pub fn cas(
        client: u64,
        key: &str,
        (expected, new): (Option<RegisterValue>, RegisterValue),
        out: Option<bool>,
        call_ns: u64,
        ret_ns: Option<u64>,
    ) -> Self {
        let kind = RegisterOpKind::Cas { expected, new, out };
        Self::new(client, key, kind, call_ns, ret_ns)
    }

    fn new(
        client: u64,
        key: &str,
        kind: RegisterOpKind,
        call_ns: u64,
        ret_ns: Option<u64>,
    ) -> Self {
        RegisterOp {
            client,
            key: key.to_owned(),
            kind,
            call_ns,
            ret_ns,
        }
    }
}

impl fmt::Display for RegisterOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} {} ", self.client, self.key)?;
        match &self.kind {
            RegisterOpKind::Read { out } => write!(f, "r -> {}", OptDisplay(out))?,
            RegisterOpKind::Write { value } => write!(f, "w {value}")?,
            RegisterOpKind::Cas { expected, new, out } => {
                write!(f, "cas {}->{new}", OptDisplay(expected))?;
                match out {
                    Some(ok) => write!(f, " -> {ok}")?,
                    None => f.write_str(" -> ?")?,
                }
            }
        }
        match self.ret_ns {
            Some(ret) => write!(f, " [{}..{ret}]", self.call_ns),
            None => write!(f, " [{}..?]", self.call_ns),
        }
    }
}

/// Formats an optional value, `nil` for absent.
pub(crate) struct OptDisplay<'a>(pub(crate) &'a Option<RegisterValue>);

impl fmt::Display for OptDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("nil"),
        }
    }
}

/// Why one line is not a register op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterOpError {
    /// `f` is not one of `r`, `w`, `cas`.
    #[error("f is {0:?}, not \"r\", \"w\" or \"cas\"")]
    UnknownF(String),
    /// A read's `value` is not null.
    #[error("r has value {0}; it must be null")]
    ReadWithValue(String),
    /// A read's `out` is not an integer, string or null.
    #[error("r has out {0}; it must be an integer, a string or null")]
    BadReadOut(String),
    /// A write's `value` is not an integer or string.
    #[error("w has value {0}; it must be an integer or a string")]
    BadWriteValue(String),
    /// A cas's `value` is not `[expected, new]`.
    #[error("cas has value {0}; it must be [expected, new] with new an integer or a string")]
    BadCasValue(String),
    /// A cas's `out` is not a bool (returned) or null (unknown outcome).
    #[error("cas has out {out} with ret_ns {ret}; it must be a bool if it returned, else null")]
    BadCasOut {
        /// The `out` found.
        out: String,
        /// Whether `ret_ns` was null.
        ret: &'static str,
    },
    /// An op with an unknown outcome has a non-null `out`.
    #[error("{f} has out {out} but ret_ns null; an unknown outcome has no output")]
    OutWithoutReturn {
        /// The op's `f`.
        f: &'static str,
        /// The `out` found.
        out: String,
    },
    /// `ret_ns < call_ns`.
    #[error("ret_ns {ret_ns} is before call_ns {call_ns}")]
    ReturnBeforeCall {
        /// The call time.
        call_ns: u64,
        /// The return time.
        ret_ns: u64,
    },
}

/// Why a JSON-lines history does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterHistoryError {
    /// The line is not a JSON object with the op's fields.
    #[error("line {line}: not a register op: {message}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// serde_json's message.
        message: String,
    },
    /// The line is JSON of the right shape but not a meaningful op.
    #[error("line {line}: {source}")]
    Op {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        #[source]
        source: RegisterOpError,
    },
}

/// Parses a JSON-lines history (blank lines skipped) in the form of the module doc.
pub fn parse_history(text: &str) -> Result<Vec<RegisterOp>, RegisterHistoryError> {
    let mut ops = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let wire: WireOp = serde_json::from_str(raw).map_err(|e| RegisterHistoryError::Json {
            line,
            message: e.to_string(),
        })?;
        ops.push(
            RegisterOp::try_from(wire)
                .map_err(|source| RegisterHistoryError::Op { line, source })?,
        );
    }
    Ok(ops)
}

/// The history as JSON lines that [`parse_history`] reads back.
pub fn history_to_json_lines(ops: &[RegisterOp]) -> String {
    let mut text = String::new();
    for op in ops {
        let line = serde_json::to_string(op).expect("a register op has only strings and integers");
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// The JSON shape of an op, before its fields are checked against its `f`.
#[derive(Serialize, Deserialize)]
struct WireOp {
    client: u64,
    key: String,
    f: String,
    #[serde(default)]
    value: Json,
    #[serde(default)]
    out: Json,
    call_ns: u64,
    #[serde(default)]
    ret_ns: Option<u64>,
}

fn value_of(j: &Json) -> Option<Option<RegisterValue>> {
    match j {
        Json::Null => Some(None),
        Json::Number(n) => n.as_i64().map(|i| Some(RegisterValue::Int(i))),
        Json::String(s) => Some(Some(RegisterValue::Str(s.clone()))),
        _ => None,
    }
}

fn json_of(v: &Option<RegisterValue>) -> Json {
    match v {
        None => Json::Null,
        Some(RegisterValue::Int(i)) => Json::from(*i),
        Some(RegisterValue::Str(s)) => Json::from(s.as_str()),
    }
}

fn kind_of(w: &WireOp) -> Result<RegisterOpKind, RegisterOpError> {
    let unknown = w.ret_ns.is_none();
    let no_out = |f: &'static str| match (&w.out, unknown) {
        (Json::Null, _) | (_, false) => Ok(()),
        (out, true) => Err(RegisterOpError::OutWithoutReturn {
            f,
            out: out.to_string(),
        }),
    };
    match w.f.as_str() {
        "r" => {
            no_out("r")?;
            if !w.value.is_null() {
                return Err(RegisterOpError::ReadWithValue(w.value.to_string()));
            }
            let out =
                value_of(&w.out).ok_or_else(|| RegisterOpError::BadReadOut(w.out.to_string()))?;
            Ok(RegisterOpKind::Read { out })
        }
        "w" => match value_of(&w.value) {
            Some(Some(value)) => Ok(RegisterOpKind::Write { value }),
            _ => Err(RegisterOpError::BadWriteValue(w.value.to_string())),
        },
        "cas" => {
            let bad_value = || RegisterOpError::BadCasValue(w.value.to_string());
            let Json::Array(pair) = &w.value else {
                return Err(bad_value());
            };
            let [expected, new] = pair.as_slice() else {
                return Err(bad_value());
            };
            let expected = value_of(expected).ok_or_else(bad_value)?;
            let new = value_of(new).flatten().ok_or_else(bad_value)?;
            let out = match (&w.out, unknown) {
                (Json::Bool(b), false) => Some(*b),
                (Json::Null, true) => None,
                (out, _) => {
                    return Err(RegisterOpError::BadCasOut {
                        out: out.to_string(),
                        ret: if unknown { "null" } else { "set" },
                    })
                }
            };
            Ok(RegisterOpKind::Cas { expected, new, out })
        }
        other => Err(RegisterOpError::UnknownF(other.to_owned())),
    }
}

impl TryFrom<WireOp> for RegisterOp {
    type Error = RegisterOpError;

    fn try_from(w: WireOp) -> Result<Self, Self::Error> {
        if let Some(ret_ns) = w.ret_ns {
            if ret_ns < w.call_ns {
                return Err(RegisterOpError::ReturnBeforeCall {
                    call_ns: w.call_ns,
                    ret_ns,
                });
            }
        }
        let kind = kind_of(&w)?;
        Ok(RegisterOp {
            client: w.client,
            key: w.key,
            kind,
            call_ns: w.call_ns,
            ret_ns: w.ret_ns,
        })
    }
}

impl From<RegisterOp> for WireOp {
    fn from(op: RegisterOp) -> Self {
        let (f, value, out) = match op.kind {
            RegisterOpKind::Read { out } => ("r", Json::Null, json_of(&out)),
            RegisterOpKind::Write { value } => ("w", json_of(&Some(value)), Json::Null),
            RegisterOpKind::Cas { expected, new, out } => {
                let pair = Json::Array(vec![json_of(&expected), json_of(&Some(new))]);
                ("cas", pair, out.map_or(Json::Null, Json::Bool))
            }
        };
        WireOp {
            client: op.client,
            key: op.key,
            f: f.to_owned(),
            value,
            out,
            call_ns: op.call_ns,
            ret_ns: op.ret_ns,
        }
    }
}
