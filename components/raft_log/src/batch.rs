//! [`LogBatch`]: an owned, engine-agnostic batch of raft-log operations across regions.

use std::collections::HashMap;

use protobuf::Message;
use raft::eraftpb::Entry;

use crate::state::{meta_key, RAFT_STATE_KEY};
use crate::{RaftLogError, RaftState, Result};

/// One operation of a [`LogBatch`], applied in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LogOp {
    /// Consecutive entries; they replace every existing entry at or after the first one.
    Append { region_id: u64, entries: Vec<Entry> },
    /// Sets a stored key (raft state or prefixed metadata).
    Put {
        region_id: u64,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Removes a stored key.
    Delete { region_id: u64, key: Vec<u8> },
    /// Removes entries below `index`.
    Compact { region_id: u64, index: u64 },
    /// Removes everything of the region.
    Clean { region_id: u64 },
}

/// First and last index of a region's log, `None` when it holds no entry.
pub(crate) type Span = Option<(u64, u64)>;

/// Operations on the raft logs of many regions, written together by
/// [`crate::RaftLogStore::write`]. Operations apply in the order they were added.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LogBatch {
    ops: Vec<LogOp>,
    size_bytes: usize,
}

impl LogBatch {
    fn push(&mut self, op: LogOp, size_bytes: usize) {
        self.size_bytes += size_bytes;
        self.ops.push(op);
    }

    /// Appends `entries` to the region's log; they replace any existing entries at or after
    /// the first one (raft's overwrite rule). Panics unless the indexes are consecutive.
    pub fn add_entries(&mut self, region_id: u64, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        for pair in entries.windows(2) {
            assert_eq!(
                pair[0].index + 1,
                pair[1].index,
                "region {region_id}: appended entries must be consecutive"
            );
        }
        let size_bytes = entries.iter().map(|e| e.compute_size() as usize).sum();
        self.push(LogOp::Append { region_id, entries }, size_bytes);
    }

    /// Sets the region's raft state.
    pub fn put_raft_state(&mut self, region_id: u64, state: &RaftState) {
        self.put(region_id, RAFT_STATE_KEY.to_vec(), state.encode());
    }

    /// Sets a metadata value of the region (e.g. snapshot meta).
    pub fn put_meta(&mut self, region_id: u64, key: &[u8], value: Vec<u8>) {
        self.put(region_id, meta_key(key), value);
    }

    fn put(&mut self, region_id: u64, key: Vec<u8>, value: Vec<u8>) {
        let size_bytes = key.len() + value.len();
        self.push(
            LogOp::Put {
                region_id,
                key,
                value,
            },
            size_bytes,
        );
    }

    /// Removes a metadata value of the region.
    pub fn delete_meta(&mut self, region_id: u64, key: &[u8]) {
        let key = meta_key(key);
        let size_bytes = key.len();
        self.push(LogOp::Delete { region_id, key }, size_bytes);
    }

    /// Removes the region's entries below `index`, in the same write as the rest of the batch
    /// (e.g. to start the log after an applied snapshot).
    pub fn compact_to(&mut self, region_id: u64, index: u64) {
        self.push(LogOp::Compact { region_id, index }, 8);
    }

    /// Drops every entry, the raft state and all metadata of the region (a destroyed peer).
    pub fn clean_region(&mut self, region_id: u64) {
        self.push(LogOp::Clean { region_id }, 8);
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Approximate bytes of the batch: encoded entries plus keys and values.
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    /// Moves every operation of `other` to the end of this batch, leaving `other` empty.
    pub fn append(&mut self, other: &mut LogBatch) {
        self.size_bytes += std::mem::take(&mut other.size_bytes);
        self.ops.append(&mut other.ops);
    }

    pub(crate) fn ops(&self) -> &[LogOp] {
        &self.ops
    }

    pub(crate) fn into_ops(self) -> Vec<LogOp> {
        self.ops
    }

    /// Checks that every append continues its region's log, given the spans before the write
    /// (`span_of`) and the effect of earlier operations of this batch.
    pub(crate) fn check_appends(&self, mut span_of: impl FnMut(u64) -> Span) -> Result<()> {
        let mut spans: HashMap<u64, Span> = HashMap::new();
        for op in &self.ops {
            match op {
                LogOp::Append { region_id, entries } => {
                    let span = spans
                        .entry(*region_id)
                        .or_insert_with(|| span_of(*region_id));
                    *span = Some(span_after_append(*region_id, *span, entries)?);
                }
                LogOp::Compact { region_id, index } => {
                    let span = spans
                        .entry(*region_id)
                        .or_insert_with(|| span_of(*region_id));
                    *span = span_after_compact(*span, *index);
                }
                LogOp::Clean { region_id } => {
                    spans.insert(*region_id, None);
                }
                LogOp::Put { .. } | LogOp::Delete { .. } => {}
            }
        }
        Ok(())
    }
}

fn span_after_append(region_id: u64, span: Span, entries: &[Entry]) -> Result<(u64, u64)> {
    let append_index = entries[0].index;
    let last_new = entries[entries.len() - 1].index;
    match span {
        None => Ok((append_index, last_new)),
        Some((first, last)) if first <= append_index && append_index <= last + 1 => {
            Ok((first, last_new))
        }
        Some((first_index, last_index)) => Err(RaftLogError::NonContiguousAppend {
            region_id,
            first_index,
            last_index,
            append_index,
        }),
    }
}

/// Compaction past the last entry empties the log; the next append may start anywhere.
pub(crate) fn span_after_compact(span: Span, index: u64) -> Span {
    match span {
        Some((first, last)) if index > first => (index <= last).then_some((index, last)),
        other => other,
    }
}

/// Checks that `[low, high)` (non-empty) lies inside the log span, as raft-engine does.
pub(crate) fn check_fetch_range(region_id: u64, low: u64, high: u64, span: Span) -> Result<()> {
    let Some((first, last)) = span else {
        return Err(RaftLogError::EntryUnavailable {
            region_id,
            index: low,
        });
    };
    if low < first {
        return Err(RaftLogError::EntryCompacted {
            region_id,
            index: low,
        });
    }
    if high > last + 1 {
        return Err(RaftLogError::EntryUnavailable {
            region_id,
            index: last + 1,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(range: std::ops::Range<u64>) -> Vec<Entry> {
        range
            .map(|index| Entry {
                index,
                term: 1,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn check_appends_simulates_the_batch() {
        let span_of = |region_id| (region_id == 1).then_some((5, 10));
        let mut batch = LogBatch::default();
        batch.add_entries(1, entries(8..12)); // overwrite the tail
        batch.add_entries(1, entries(12..13)); // continue within the batch
        batch.add_entries(2, entries(100..101)); // a new region starts anywhere
        batch.check_appends(span_of).unwrap();

        let mut hole = LogBatch::default();
        hole.add_entries(1, entries(12..13));
        assert!(matches!(
            hole.check_appends(span_of),
            Err(RaftLogError::NonContiguousAppend {
                region_id: 1,
                first_index: 5,
                last_index: 10,
                append_index: 12
            })
        ));
        let mut compacted = LogBatch::default();
        compacted.add_entries(1, entries(4..6));
        assert!(compacted.check_appends(span_of).is_err());

        // Compaction past the end or a clean lets the log restart anywhere.
        let mut rebase = LogBatch::default();
        rebase.compact_to(1, 50);
        rebase.add_entries(1, entries(50..52));
        rebase.clean_region(1);
        rebase.add_entries(1, entries(7..8));
        rebase.check_appends(span_of).unwrap();
    }

    #[test]
    #[should_panic(expected = "consecutive")]
    fn entries_must_be_consecutive() {
        let mut batch = LogBatch::default();
        let mut ents = entries(1..3);
        ents[1].index = 5;
        batch.add_entries(1, ents);
    }

    #[test]
    fn accounting() {
        let mut batch = LogBatch::default();
        assert!(batch.is_empty());
        batch.add_entries(1, vec![]);
        assert!(batch.is_empty());
        batch.add_entries(1, entries(1..3));
        batch.put_meta(1, b"k", b"v".to_vec());
        let size = batch.size_bytes();
        assert!(size > 3);
        let mut other = LogBatch::default();
        other.clean_region(2);
        batch.append(&mut other);
        assert!(other.is_empty() && other.size_bytes() == 0);
        assert_eq!(batch.ops().len(), 3);
        assert_eq!(batch.size_bytes(), size + 8);
    }
}
