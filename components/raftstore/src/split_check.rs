//! The split checker: measures a region's data and, when it has outgrown the configured size or
//! key count, picks split keys. Runs on its own thread because it scans; its results go on the
//! poller's unbounded control channel, so it never waits for the poller.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use engine::{KvEngine, CF_DEFAULT, CF_WRITE};
use proto::metapb;

use crate::config::StoreConfig;
use crate::msg::ControlMsg;
use crate::util::epoch_of;

/// Most split keys produced by one check.
const SPLIT_KEYS_MAX: usize = 16;

/// Measure one region.
pub struct SplitCheckTask {
    /// The region, as its leader saw it.
    pub region: metapb::Region,
}

/// What a scan found.
#[derive(Debug, Default, PartialEq)]
pub struct Measure {
    /// Bytes of keys and values.
    pub size: u64,
    /// Keys.
    pub keys: u64,
    /// Encoded split keys, ascending; empty when the region is small enough.
    pub split_keys: Vec<Vec<u8>>,
}

/// Runs until the channel closes.
pub fn run(
    kv: Arc<dyn KvEngine>,
    cfg: StoreConfig,
    rx: Receiver<SplitCheckTask>,
    tx: Sender<ControlMsg>,
) {
    while let Ok(task) = rx.recv() {
        let region = task.region;
        match measure(kv.as_ref(), &cfg, &region) {
            Ok(m) => {
                let _ = tx.send(ControlMsg::SplitCheckResult {
                    region_id: region.id,
                    epoch: epoch_of(&region),
                    size: m.size,
                    keys: m.keys,
                    split_keys: m.split_keys,
                });
            }
            Err(e) => tracing::warn!(region_id = region.id, "split check failed: {e}"),
        }
    }
}

/// Scans the region, counting size and keys, and picks split keys if it is too large.
/// Split points are user keys of the `default` CF; the `write` CF counts toward size.
pub fn measure(
    kv: &dyn KvEngine,
    cfg: &StoreConfig,
    region: &metapb::Region,
) -> engine::Result<Measure> {
    let snap = kv.snapshot();
    let lower = codec::keys::data_key(&region.start_key);
    let upper = codec::keys::data_end_key(&region.end_key);
    let mut m = Measure::default();
    let mut by_size = vec![];
    let mut by_keys = vec![];
    let (mut part_size, mut part_keys) = (0u64, 0u64);
    // Raw data lives in `default`; transactional data is counted by its `write` records, one
    // key per user key however many versions it has. A split key is always a user key (the
    // timestamp suffix stripped), so every version of a key stays in one region.
    let mut last_user_key: Vec<u8> = vec![];
    let mut visit = |cf: &str, k: &[u8], v: &[u8]| {
        let origin = codec::keys::origin_key(k);
        let versioned = cf == CF_WRITE || is_txn_key(origin);
        let user_key = if versioned {
            origin
                .get(..origin.len().saturating_sub(8))
                .unwrap_or(origin)
        } else {
            origin
        };
        let n = (k.len() + v.len()) as u64;
        m.size += n;
        part_size += n;
        let counts = if cf == CF_WRITE {
            user_key != last_user_key.as_slice()
        } else {
            !versioned
        };
        if counts {
            m.keys += 1;
            part_keys += 1;
            if cf == CF_WRITE {
                last_user_key = user_key.to_vec();
            }
        }
        if part_size >= cfg.region_split_size_bytes {
            by_size.push(user_key.to_vec());
            part_size = 0;
        }
        if part_keys >= cfg.region_split_keys {
            by_keys.push(user_key.to_vec());
            part_keys = 0;
        }
    };
    for cf in [CF_DEFAULT, CF_WRITE] {
        snap.scan_cf(cf, &lower, Some(&upper), false, &mut |k, v| {
            visit(cf, k, v);
            Ok(true)
        })?;
    }
    by_size.sort();
    by_keys.sort();
    let mut keys = if m.size > cfg.region_max_size_bytes {
        by_size
    } else if m.keys > cfg.region_max_keys {
        by_keys
    } else {
        vec![]
    };
    keys.retain(|k| *k != region.start_key);
    keys.dedup();
    keys.truncate(SPLIT_KEYS_MAX);
    m.split_keys = keys;
    Ok(m)
}

/// Whether an encoded key is in a transactional keyspace (`x` + keyspace id): its `default`
/// CF entries carry a timestamp suffix.
fn is_txn_key(encoded: &[u8]) -> bool {
    encoded.first() == Some(&b'x')
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{MemEngine, WriteBatch};

    #[test]
    fn splits_by_keys_and_size() {
        let kv = MemEngine::default();
        let mut wb = WriteBatch::default();
        for i in 0..100u32 {
            let key = codec::memcomparable::encode_bytes(format!("k{i:04}").as_bytes());
            wb.put_cf(CF_DEFAULT, &codec::keys::data_key(&key), &[0u8; 100]);
        }
        kv.write(&wb, false).unwrap();
        let region = metapb::Region::default();
        let cfg = StoreConfig {
            region_max_keys: 50,
            region_split_keys: 30,
            ..Default::default()
        };
        let m = measure(&kv, &cfg, &region).unwrap();
        assert_eq!(m.keys, 100);
        assert_eq!(m.split_keys.len(), 3);
        assert!(m.split_keys.windows(2).all(|w| w[0] < w[1]));
        let cfg = StoreConfig {
            region_max_size_bytes: 5_000,
            region_split_size_bytes: 4_000,
            ..Default::default()
        };
        let m = measure(&kv, &cfg, &region).unwrap();
        assert!(m.size > 10_000);
        assert!(!m.split_keys.is_empty());
        let cfg = StoreConfig::default();
        assert!(measure(&kv, &cfg, &region).unwrap().split_keys.is_empty());
    }

    #[test]
    fn transactional_keys_split_between_user_keys() {
        let kv = MemEngine::default();
        let mut wb = WriteBatch::default();
        for i in 0..40u32 {
            let key = codec::memcomparable::encode_bytes(format!("x\0\0\0k{i:04}").as_bytes());
            for ts in 1..=3u64 {
                let versioned = codec::keys::append_ts(&key, ts);
                wb.put_cf(CF_WRITE, &codec::keys::data_key(&versioned), &[1u8; 20]);
            }
        }
        kv.write(&wb, false).unwrap();
        let cfg = StoreConfig {
            region_max_keys: 30,
            region_split_keys: 20,
            ..Default::default()
        };
        let m = measure(&kv, &cfg, &metapb::Region::default()).unwrap();
        assert_eq!(m.keys, 40, "versions of one key count once");
        assert_eq!(m.split_keys.len(), 2);
        for k in &m.split_keys {
            let raw = codec::memcomparable::decode_bytes(k).unwrap().0;
            assert!(
                raw.starts_with(b"x\0\0\0k"),
                "split key {raw:?} is not a user key"
            );
        }
    }
}
