//! The recorded history: transactions, their operations and outcomes, and the byte form a
//! driver stores list values in.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Errors from decoding a stored history or a stored list value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The JSON text is not a history.
    #[error("history is not valid JSON: {0}")]
    Json(String),
    /// A stored list value is not a whole number of 8-byte elements.
    #[error("list value of {len_bytes} bytes is not a multiple of 8")]
    BadListValue {
        /// Length of the value that failed to decode.
        len_bytes: usize,
    },
}

/// One operation of a list-append transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// Append `value` to the list stored at `key`.
    Append {
        /// The key whose list grows.
        key: u64,
        /// The appended element; unique per key across the whole history.
        value: u64,
    },
    /// Read the whole list stored at `key`.
    Read {
        /// The key read.
        key: u64,
        /// The list observed, `None` until the driver has observed it (or if it never did).
        values: Option<Vec<u64>>,
    },
}

impl Op {
    /// An append of `value` to `key`.
    pub fn append(key: u64, value: u64) -> Op {
        Op::Append { key, value }
    }

    /// A read of `key` not yet observed.
    pub fn read(key: u64) -> Op {
        Op::Read { key, values: None }
    }

    /// A read of `key` that observed `values`.
    pub fn read_of(key: u64, values: &[u64]) -> Op {
        Op::Read {
            key,
            values: Some(values.to_vec()),
        }
    }

    /// The key this operation touches.
    pub fn key(&self) -> u64 {
        match self {
            Op::Append { key, .. } | Op::Read { key, .. } => *key,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Append { key, value } => write!(f, "append {key} {value}"),
            Op::Read { key, values: None } => write!(f, "read {key} ?"),
            Op::Read {
                key,
                values: Some(vs),
            } => write!(f, "read {key} {}", ListDisplay(vs)),
        }
    }
}

/// What the client knows about how a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// The commit was acknowledged.
    Committed,
    /// The transaction certainly did not commit (rolled back, or commit refused).
    Aborted,
    /// The client got an error or a timeout at commit: it may or may not have committed.
    Unknown,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Committed => "committed",
            Outcome::Aborted => "aborted",
            Outcome::Unknown => "unknown",
        })
    }
}

/// One transaction of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    /// Unique within the history.
    pub id: u64,
    /// The client (logical process) that ran it; one transaction at a time per process.
    pub process: u64,
    /// The operations in the order the transaction issued them.
    pub ops: Vec<Op>,
    /// How it ended, as far as the client knows.
    pub outcome: Outcome,
    /// Logical time (driver's monotonic counter) taken just before the transaction began.
    pub start: Option<u64>,
    /// Logical time taken just after the outcome was known.
    pub end: Option<u64>,
}

impl Txn {
    /// A transaction without real-time bounds.
    pub fn new(id: u64, process: u64, ops: Vec<Op>, outcome: Outcome) -> Txn {
        Txn {
            id,
            process,
            ops,
            outcome,
            start: None,
            end: None,
        }
    }

    /// The same transaction with invocation and completion times.
    pub fn with_times(mut self, start: u64, end: u64) -> Txn {
        self.start = Some(start);
        self.end = Some(end);
        self
    }
}

impl fmt::Display for Txn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "T{} (process {}, {}",
            self.id, self.process, self.outcome
        )?;
        if let (Some(s), Some(e)) = (self.start, self.end) {
            write!(f, ", time {s}..{e}")?;
        }
        f.write_str("): ")?;
        for (i, op) in self.ops.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{op}")?;
        }
        Ok(())
    }
}

/// Formats a list as `[1 2 3]`.
pub(crate) struct ListDisplay<'a>(pub(crate) &'a [u64]);

impl fmt::Display for ListDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{v}")?;
        }
        f.write_str("]")
    }
}

/// The history as pretty JSON, for a driver to write next to a failing test's output.
pub fn history_to_json(txns: &[Txn]) -> String {
    serde_json::to_string_pretty(txns).expect("a history has only string keys and integers")
}

/// Parses a history written by [`history_to_json`].
pub fn history_from_json(text: &str) -> Result<Vec<Txn>, HistoryError> {
    serde_json::from_str(text).map_err(|e| HistoryError::Json(e.to_string()))
}

/// The byte form of a list for the store: 8 bytes big-endian per element.
pub fn encode_list(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// Decodes [`encode_list`]; an absent key is the empty list, which the caller handles.
pub fn decode_list(bytes: &[u8]) -> Result<Vec<u64>, HistoryError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(HistoryError::BadListValue {
            len_bytes: bytes.len(),
        });
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("chunks_exact yields 8 bytes")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_codec_round_trips_and_refuses_partial_elements() {
        let vs = vec![0, 1, u64::MAX, 42];
        assert_eq!(decode_list(&encode_list(&vs)).unwrap(), vs);
        assert_eq!(decode_list(&[]).unwrap(), Vec::<u64>::new());
        assert_eq!(
            decode_list(&[1, 2, 3]),
            Err(HistoryError::BadListValue { len_bytes: 3 })
        );
    }

    #[test]
    fn history_json_round_trips() {
        let h = vec![
            Txn::new(1, 0, vec![Op::append(1, 2), Op::read(3)], Outcome::Unknown),
            Txn::new(2, 1, vec![Op::read_of(1, &[2])], Outcome::Committed).with_times(4, 9),
        ];
        assert_eq!(history_from_json(&history_to_json(&h)).unwrap(), h);
        assert!(history_from_json("{").is_err());
    }

    #[test]
    fn txn_display_names_ops() {
        let t = Txn::new(
            7,
            2,
            vec![Op::append(1, 5), Op::read_of(1, &[3, 5])],
            Outcome::Committed,
        )
        .with_times(1, 2);
        assert_eq!(
            t.to_string(),
            "T7 (process 2, committed, time 1..2): append 1 5, read 1 [3 5]"
        );
    }
}
