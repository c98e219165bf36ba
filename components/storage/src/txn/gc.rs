//! Garbage collection of old versions below a safe point, and whole-range deletion.
//!
//! For each user key, GC keeps every record newer than the safe point and the newest `Put` at
//! or below it (what a read at the safe point sees); it deletes `Lock` and `Rollback` records
//! at or below the safe point, everything older than that `Put`, and, if the newest data
//! record at or below the safe point is a `Delete`, that record and everything older. Values
//! of deleted `Put`s that live in the `default` CF go with them. Locks are never touched.

use codec::keys::origin_key;
use engine::{EngineSnapshot, Modify, CF_DEFAULT, CF_LOCK, CF_WRITE};
use txn_types::{Key, TimeStamp, Write, WriteType};

use super::{TxnResult, WriteBuffer};
use crate::raw::{delete_range_modify, scan_bounds, RegionRange, ScanRange};

/// The result of [`gc`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcOutcome {
    /// What to write.
    pub modifies: Vec<Modify>,
    /// Where to resume (pass its encoded form as `region_start`), if keys remain.
    pub next_key: Option<Key>,
}

/// What GC has decided so far for the key being visited.
#[derive(Default)]
struct KeyState {
    key: Option<Key>,
    /// A `Put` or `Delete` at or below the safe point was met: everything older goes.
    reached_data: bool,
}

/// Collects garbage of at most `limit_keys` user keys (0: unbounded) of the region's range
/// `[region_start, region_end)` (encoded) below `safe_point`.
pub fn gc(
    snap: &dyn EngineSnapshot,
    region_start: &[u8],
    region_end: &[u8],
    safe_point: TimeStamp,
    limit_keys: usize,
) -> TxnResult<GcOutcome> {
    let region = RegionRange {
        start_key: region_start,
        end_key: region_end,
    };
    let whole = ScanRange {
        lower: b"",
        upper: b"",
    };
    let mut out = GcOutcome::default();
    let Some((lower, upper)) = scan_bounds(region, whole) else {
        return Ok(out);
    };
    let mut buf = WriteBuffer::default();
    let mut state = KeyState::default();
    let mut keys_seen = 0usize;
    let mut iter = snap.iter_cf(CF_WRITE, &lower, Some(&upper))?;
    let mut valid = iter.seek_to_first()?;
    while valid {
        let (user_key, commit_ts) = Key::split_on_ts(origin_key(iter.key()))?;
        if state.key.as_ref().map(Key::as_encoded) != Some(user_key) {
            if limit_keys != 0 && keys_seen == limit_keys {
                out.next_key = Some(Key::from_encoded(user_key.to_vec()));
                break;
            }
            keys_seen += 1;
            state = KeyState {
                key: Some(Key::from_encoded(user_key.to_vec())),
                reached_data: false,
            };
        }
        if commit_ts <= safe_point {
            let key = state.key.as_ref().expect("set above");
            visit_old_version(
                &mut buf,
                &mut state.reached_data,
                key,
                commit_ts,
                Write::parse(iter.value())?,
            );
        }
        valid = iter.next()?;
    }
    out.modifies = buf.modifies;
    Ok(out)
}

/// Decides one record at or below the safe point, newest first.
fn visit_old_version(
    buf: &mut WriteBuffer,
    reached_data: &mut bool,
    key: &Key,
    commit_ts: TimeStamp,
    write: Write,
) {
    let delete = |buf: &mut WriteBuffer, write: &Write| {
        buf.delete_write(key, commit_ts);
        if write.write_type == WriteType::Put && write.short_value.is_none() {
            buf.delete_value(key, write.start_ts);
        }
    };
    if *reached_data {
        delete(buf, &write);
        return;
    }
    match write.write_type {
        WriteType::Put => *reached_data = true,
        WriteType::Delete => {
            *reached_data = true;
            delete(buf, &write);
        }
        WriteType::Lock | WriteType::Rollback => delete(buf, &write),
    }
}

/// Deletes everything of `[start_raw, end_raw)` (empty end: to the region's end) in the data
/// CFs, for KvDeleteRange.
pub fn delete_range_modifies(start_raw: &[u8], end_raw: &[u8]) -> Vec<Modify> {
    [CF_DEFAULT, CF_LOCK, CF_WRITE]
        .iter()
        .map(|cf| delete_range_modify(cf, start_raw, end_raw))
        .collect()
}
