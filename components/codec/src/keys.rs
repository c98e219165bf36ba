//! The key layout of a store's RocksDB, and TiKV API V2 keyspace prefixes.
//!
//! - Data keys: `z` + memcomparable-encoded key (+ descending ts for MVCC CFs).
//! - Local keys (region metadata, `raft` CF): `0x01` + kind + ...; they sort before every data
//!   key, so a data scan never meets them.
//! - Keyspaces (API V2): raw keys are `r` + 3-byte BE keyspace id + user key, transactional keys
//!   `x` + 3-byte id + user key.

use crate::memcomparable::encode_bytes;
use crate::number::{decode_u64, decode_u64_desc, encode_u64, encode_u64_desc, U64_SIZE};
use crate::{CodecError, Result};

/// Prefix of every data key.
pub const DATA_PREFIX: u8 = b'z';
/// Smallest data key (the data key of the empty region start key).
pub const DATA_MIN_KEY: &[u8] = &[DATA_PREFIX];
/// Exclusive upper bound of every data key (the data key of an empty region end key).
pub const DATA_MAX_KEY: &[u8] = &[DATA_PREFIX + 1];

/// Prefix of every local (store metadata) key.
pub const LOCAL_PREFIX: u8 = 0x01;
/// Second byte of the store identity key.
pub const STORE_IDENT_SUFFIX: u8 = 0x01;
/// Second byte of per-region metadata keys.
pub const REGION_META_PREFIX: u8 = 0x03;
/// Last byte of a region-state key.
pub const REGION_STATE_SUFFIX: u8 = 0x01;
/// Last byte of an apply-state key.
pub const APPLY_STATE_SUFFIX: u8 = 0x02;
/// Inclusive lower bound of all per-region metadata keys.
pub const REGION_META_MIN_KEY: &[u8] = &[LOCAL_PREFIX, REGION_META_PREFIX];
/// Exclusive upper bound of all per-region metadata keys.
pub const REGION_META_MAX_KEY: &[u8] = &[LOCAL_PREFIX, REGION_META_PREFIX + 1];
const STORE_IDENT_KEY: &[u8] = &[LOCAL_PREFIX, STORE_IDENT_SUFFIX];
const REGION_META_KEY_LEN: usize = REGION_META_MIN_KEY.len() + U64_SIZE + 1;

/// Keyspace id of the `DEFAULT` keyspace.
pub const DEFAULT_KEYSPACE_ID: u32 = 0;
/// Largest keyspace id: ids are 3 bytes.
pub const MAX_KEYSPACE_ID: u32 = (1 << 24) - 1;
/// Mode byte of raw (API V2) keys.
pub const RAW_MODE_PREFIX: u8 = b'r';
/// Mode byte of transactional (API V2) keys.
pub const TXN_MODE_PREFIX: u8 = b'x';

/// `z` + `encoded_key`.
pub fn data_key(encoded_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(encoded_key.len() + 1);
    key.push(DATA_PREFIX);
    key.extend_from_slice(encoded_key);
    key
}

/// Strips the data prefix. Panics if `data_key` is not a data key (a caller bug).
pub fn origin_key(data_key: &[u8]) -> &[u8] {
    assert!(
        data_key.first() == Some(&DATA_PREFIX),
        "not a data key: {data_key:?}"
    );
    &data_key[1..]
}

/// Data key of a region's start key (the empty key maps to [`DATA_MIN_KEY`]).
pub fn data_start_key(region_start_key: &[u8]) -> Vec<u8> {
    data_key(region_start_key)
}

/// Exclusive data-key bound of a region's end key; the empty end key (+infinity) maps to
/// [`DATA_MAX_KEY`].
pub fn data_end_key(region_end_key: &[u8]) -> Vec<u8> {
    if region_end_key.is_empty() {
        DATA_MAX_KEY.to_vec()
    } else {
        data_key(region_end_key)
    }
}

/// Key of the store identity record.
pub fn store_ident_key() -> &'static [u8] {
    STORE_IDENT_KEY
}

fn region_meta_key(region_id: u64, suffix: u8) -> Vec<u8> {
    let mut key = Vec::with_capacity(REGION_META_KEY_LEN);
    key.extend_from_slice(REGION_META_MIN_KEY);
    encode_u64(&mut key, region_id);
    key.push(suffix);
    key
}

/// Key of a region's state (`raft` CF).
pub fn region_state_key(region_id: u64) -> Vec<u8> {
    region_meta_key(region_id, REGION_STATE_SUFFIX)
}

/// Key of a region's apply state (`raft` CF).
pub fn apply_state_key(region_id: u64) -> Vec<u8> {
    region_meta_key(region_id, APPLY_STATE_SUFFIX)
}

/// Parses a per-region metadata key into `(region_id, suffix)`; `None` if it is not one.
pub fn region_id_from_local_key(key: &[u8]) -> Option<(u64, u8)> {
    if key.len() != REGION_META_KEY_LEN || !key.starts_with(REGION_META_MIN_KEY) {
        return None;
    }
    let id_bytes = &key[REGION_META_MIN_KEY.len()..REGION_META_KEY_LEN - 1];
    let region_id = decode_u64(id_bytes).ok()?;
    Some((region_id, key[REGION_META_KEY_LEN - 1]))
}

fn keyspace_prefix(mode: u8, keyspace_id: u32) -> [u8; 4] {
    assert!(
        keyspace_id <= MAX_KEYSPACE_ID,
        "keyspace id {keyspace_id} does not fit in 3 bytes"
    );
    let [_, a, b, c] = keyspace_id.to_be_bytes();
    [mode, a, b, c]
}

/// `r` + 3-byte big-endian keyspace id. Panics if the id does not fit in 3 bytes.
pub fn raw_keyspace_prefix(keyspace_id: u32) -> [u8; 4] {
    keyspace_prefix(RAW_MODE_PREFIX, keyspace_id)
}

/// `x` + 3-byte big-endian keyspace id. Panics if the id does not fit in 3 bytes.
pub fn txn_keyspace_prefix(keyspace_id: u32) -> [u8; 4] {
    keyspace_prefix(TXN_MODE_PREFIX, keyspace_id)
}

/// Encoded keys where PD pre-splits at bootstrap, ascending: the bounds of the default keyspace
/// in raw and transactional modes (`r\0\0\0`, `r\0\0\1`, `x\0\0\0`, `x\0\0\1`).
pub fn keyspace_presplit_keys() -> Vec<Vec<u8>> {
    let next = DEFAULT_KEYSPACE_ID + 1;
    [
        raw_keyspace_prefix(DEFAULT_KEYSPACE_ID),
        raw_keyspace_prefix(next),
        txn_keyspace_prefix(DEFAULT_KEYSPACE_ID),
        txn_keyspace_prefix(next),
    ]
    .iter()
    .map(|prefix| encode_bytes(prefix))
    .collect()
}

/// `encoded_key` + `ts` in descending order, so newer versions of a key sort first.
pub fn append_ts(encoded_key: &[u8], ts: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(encoded_key.len() + U64_SIZE);
    key.extend_from_slice(encoded_key);
    encode_u64_desc(&mut key, ts);
    key
}

/// Splits a key built by [`append_ts`] into the encoded key and the timestamp.
pub fn split_ts(key_with_ts: &[u8]) -> Result<(&[u8], u64)> {
    let split_at = key_with_ts
        .len()
        .checked_sub(U64_SIZE)
        .ok_or(CodecError::Truncated {
            needed_bytes: U64_SIZE,
            available_bytes: key_with_ts.len(),
        })?;
    let (key, ts) = key_with_ts.split_at(split_at);
    Ok((key, decode_u64_desc(ts)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_keys() {
        let encoded = encode_bytes(b"k");
        let dk = data_key(&encoded);
        assert_eq!(dk[0], b'z');
        assert_eq!(origin_key(&dk), &encoded[..]);
        assert_eq!(data_end_key(b""), vec![b'z' + 1]);
        assert_eq!(data_end_key(&encoded), dk);
        assert_eq!(data_start_key(b""), DATA_MIN_KEY);
        assert!(dk.as_slice() < DATA_MAX_KEY);
        assert!(region_state_key(u64::MAX).as_slice() < DATA_MIN_KEY);
    }

    #[test]
    #[should_panic(expected = "not a data key")]
    fn origin_key_requires_prefix() {
        origin_key(b"abc");
    }

    #[test]
    fn local_keys() {
        let key = region_state_key(0x0102);
        assert_eq!(key, [1, 3, 0, 0, 0, 0, 0, 0, 1, 2, 1]);
        assert_eq!(apply_state_key(0x0102)[10], 2);
        assert_eq!(store_ident_key(), &[1, 1]);
        assert_eq!(region_id_from_local_key(&key), Some((0x0102, 1)));
        assert_eq!(
            region_id_from_local_key(&apply_state_key(7)),
            Some((7, APPLY_STATE_SUFFIX))
        );
        assert_eq!(region_id_from_local_key(store_ident_key()), None);
        assert_eq!(region_id_from_local_key(&key[..10]), None);
        for id in [0, 1, 1 << 40, u64::MAX] {
            for k in [region_state_key(id), apply_state_key(id)] {
                assert!(REGION_META_MIN_KEY <= k.as_slice() && k.as_slice() < REGION_META_MAX_KEY);
            }
        }
        // Region ids order the metadata keys, so a scan visits regions in id order.
        assert!(region_state_key(1) < region_state_key(256));
    }

    #[test]
    fn keyspaces() {
        assert_eq!(raw_keyspace_prefix(0), *b"r\0\0\0");
        assert_eq!(txn_keyspace_prefix(0x010203), [b'x', 1, 2, 3]);
        let keys = keyspace_presplit_keys();
        let expected: Vec<Vec<u8>> = [b"r\0\0\0", b"r\0\0\x01", b"x\0\0\0", b"x\0\0\x01"]
            .iter()
            .map(|k| encode_bytes(&k[..]))
            .collect();
        assert_eq!(keys, expected);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(keys[0], [b'r', 0, 0, 0, 0, 0, 0, 0, 0xFB]);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn keyspace_id_bound() {
        raw_keyspace_prefix(MAX_KEYSPACE_ID + 1);
    }

    #[test]
    fn mvcc_keys() {
        let encoded = encode_bytes(b"key");
        let newer = append_ts(&encoded, 20);
        let older = append_ts(&encoded, 10);
        assert!(newer < older, "newer versions sort first");
        assert_eq!(split_ts(&newer).unwrap(), (&encoded[..], 20));
        assert!(matches!(
            split_ts(&[1, 2]),
            Err(CodecError::Truncated { .. })
        ));
    }
}
