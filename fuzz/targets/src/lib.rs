//! The bodies of Flotilla's fuzz targets, one function per target. `fuzz/fuzz_targets/*.rs`
//! hand them libFuzzer's input (`cargo fuzz run -s none <target>`); the tests below run them
//! over a small seed corpus so that a normal `cargo test` compiles and exercises them.
//!
//! Every function takes arbitrary bytes, must never panic on them, and asserts the properties
//! that hold for whatever decodes: codecs round-trip, stored records re-encode to the same
//! bytes, request checks are monotonic in the limits, and raft messages that pass the store's
//! checks carry only entries and snapshots the store can apply.
//!
//! Depends on the light crates only (`codec`, `txn_types`, `proto`, `wire_check`, raft-rs's
//! messages): nothing here builds RocksDB.
#![deny(missing_docs)]

use codec::keys;
use codec::memcomparable::{decode_bytes, encode_bytes};
use prost::Message as _;
use proto::{flotillapb, kvrpcpb, metapb};
use txn_types::{Key, Lock, TimeStamp, Write};
use wire_check::{check_raft_message, CheckRequest, Limits};

/// Memcomparable codec: decoding arbitrary bytes never panics and what decodes re-encodes to
/// the bytes consumed; encoding round-trips and preserves order.
pub fn memcomparable(data: &[u8]) {
    if let Ok((key, consumed)) = decode_bytes(data) {
        assert!(consumed <= data.len());
        assert_eq!(encode_bytes(&key), &data[..consumed]);
    }
    let encoded = encode_bytes(data);
    assert_eq!(encoded.len(), codec::encoded_len(data.len()));
    assert_eq!(decode_bytes(&encoded), Ok((data.to_vec(), encoded.len())));
    let (a, b) = data.split_at(data.len() / 2);
    assert_eq!(a.cmp(b), encode_bytes(a).cmp(&encode_bytes(b)));
}

/// Store keys: data keys, MVCC keys with a timestamp, local region-metadata keys and the
/// numeric codecs. The first 8 bytes (if any) are the timestamp, the rest the key.
pub fn mvcc_keys(data: &[u8]) {
    let (ts, raw) = match data.split_first_chunk::<8>() {
        Some((ts, rest)) => (u64::from_be_bytes(*ts), rest),
        None => (0, data),
    };
    let key = Key::from_raw(raw);
    assert_eq!(key.to_raw().unwrap(), raw);
    let versioned = key.append_ts(TimeStamp::new(ts));
    assert_eq!(versioned, keys::append_ts(key.as_encoded(), ts));
    let data_key = keys::data_key(&versioned);
    assert!(keys::DATA_MIN_KEY <= data_key.as_slice() && data_key.as_slice() < keys::DATA_MAX_KEY);
    let (encoded, got_ts) = Key::split_on_ts(keys::origin_key(&data_key)).unwrap();
    assert_eq!((encoded, got_ts), (key.as_encoded(), TimeStamp::new(ts)));
    assert_eq!(keys::split_ts(&versioned).unwrap(), (key.as_encoded(), ts));

    // Arbitrary bytes as stored keys: errors, never panics.
    let _ = Key::split_on_ts(data);
    let _ = keys::split_ts(data);
    let _ = Key::from_encoded(data.to_vec()).to_raw();
    let _ = codec::decode_u64(data);
    let _ = codec::decode_u64_desc(data);
    if let Some((region_id, suffix)) = keys::region_id_from_local_key(data) {
        let rebuilt = match suffix {
            keys::REGION_STATE_SUFFIX => keys::region_state_key(region_id),
            keys::APPLY_STATE_SUFFIX => keys::apply_state_key(region_id),
            _ => return,
        };
        assert_eq!(rebuilt, data);
    }
}

/// Stored Percolator records: parsing arbitrary bytes never panics, and a record that parses
/// re-encodes to exactly the same bytes (the format has one encoding per record).
pub fn txn_records(data: &[u8]) {
    if let Ok(lock) = Lock::parse(data) {
        assert_eq!(lock.to_bytes(), data);
        let info = lock.to_lock_info(b"k".to_vec());
        assert_eq!(info.lock_version, lock.ts);
    }
    if let Ok(write) = Write::parse(data) {
        assert_eq!(write.to_bytes(), data);
    }
}

/// Small limits that a fuzzer can reach, and the server's default ones.
const LIMIT_SETS: [Limits; 2] = [
    Limits {
        key_max_bytes: 8,
        value_max_bytes: 16,
    },
    Limits {
        key_max_bytes: 8 << 10,
        value_max_bytes: 8 << 20,
    },
];

fn decode_and_check<T>(bytes: &[u8])
where
    T: prost::Message + Default + PartialEq + std::fmt::Debug + CheckRequest,
{
    let Ok(req) = T::decode(bytes) else {
        return;
    };
    assert_eq!(T::decode(req.encode_to_vec().as_slice()).as_ref(), Ok(&req));
    let [small, large] = LIMIT_SETS.map(|l| req.check(&l));
    // Raising the limits never refuses a request the lower ones accepted.
    assert!(small.is_err() || large.is_ok(), "{req:?}: {large:?}");
    assert_eq!(
        req.check(&LIMIT_SETS[1]),
        large,
        "the check is deterministic"
    );
}

/// Every request type the `tikvpb.Tikv` service decodes, in the order of the selector byte.
const REQUESTS: &[fn(&[u8])] = &[
    decode_and_check::<kvrpcpb::RawGetRequest>,
    decode_and_check::<kvrpcpb::RawBatchGetRequest>,
    decode_and_check::<kvrpcpb::RawGetKeyTtlRequest>,
    decode_and_check::<kvrpcpb::RawPutRequest>,
    decode_and_check::<kvrpcpb::RawBatchPutRequest>,
    decode_and_check::<kvrpcpb::RawDeleteRequest>,
    decode_and_check::<kvrpcpb::RawBatchDeleteRequest>,
    decode_and_check::<kvrpcpb::RawDeleteRangeRequest>,
    decode_and_check::<kvrpcpb::RawScanRequest>,
    decode_and_check::<kvrpcpb::RawBatchScanRequest>,
    decode_and_check::<kvrpcpb::RawCasRequest>,
    decode_and_check::<kvrpcpb::UnsafeDestroyRangeRequest>,
    decode_and_check::<kvrpcpb::GetRequest>,
    decode_and_check::<kvrpcpb::BatchGetRequest>,
    decode_and_check::<kvrpcpb::ScanRequest>,
    decode_and_check::<kvrpcpb::PrewriteRequest>,
    decode_and_check::<kvrpcpb::PessimisticLockRequest>,
    decode_and_check::<kvrpcpb::PessimisticRollbackRequest>,
    decode_and_check::<kvrpcpb::TxnHeartBeatRequest>,
    decode_and_check::<kvrpcpb::CheckTxnStatusRequest>,
    decode_and_check::<kvrpcpb::CheckSecondaryLocksRequest>,
    decode_and_check::<kvrpcpb::CommitRequest>,
    decode_and_check::<kvrpcpb::CleanupRequest>,
    decode_and_check::<kvrpcpb::BatchRollbackRequest>,
    decode_and_check::<kvrpcpb::ScanLockRequest>,
    decode_and_check::<kvrpcpb::ResolveLockRequest>,
    decode_and_check::<kvrpcpb::GcRequest>,
    decode_and_check::<kvrpcpb::DeleteRangeRequest>,
];

/// Client requests: the first byte picks a request type, the rest is its protobuf encoding.
/// Decoding never panics, what decodes round-trips, and the server's request check
/// (`wire_check`) never panics and is monotonic in the limits.
pub fn kv_request(data: &[u8]) {
    if let Some((sel, bytes)) = data.split_first() {
        REQUESTS[usize::from(*sel) % REQUESTS.len()](bytes);
    }
}

fn envelope(message: Vec<u8>) -> flotillapb::RaftMessage {
    let peer = |id| {
        Some(metapb::Peer {
            id,
            store_id: id,
            ..Default::default()
        })
    };
    flotillapb::RaftMessage {
        region_id: 1,
        from_peer: peer(1),
        to_peer: peer(2),
        message,
        ..Default::default()
    }
}

/// The raft message path of a receiving store: the bytes as a `BatchRaftMessage` (what the
/// `Raft` stream and a reassembled snapshot carry), as a raft-rs message inside a valid
/// envelope, and as snapshot data. Nothing panics, and whatever passes the store's check
/// carries only entries and a snapshot that the store can decode and apply.
pub fn raft_message(data: &[u8]) {
    if let Ok(batch) = flotillapb::BatchRaftMessage::decode(data) {
        for msg in &batch.msgs {
            let store_id = msg.to_peer.map_or(1, |p| p.store_id);
            check_accepted(msg, store_id);
        }
    }
    check_accepted(&envelope(data.to_vec()), 2);
    let _ = wire_check::raft_message::check_snapshot(1, data);
}

fn check_accepted(msg: &flotillapb::RaftMessage, store_id: u64) {
    let Ok(m) = check_raft_message(msg, store_id) else {
        return;
    };
    assert_eq!(m.to, msg.to_peer.unwrap().id);
    assert_eq!(msg.to_peer.unwrap().store_id, store_id);
    for e in m.get_entries() {
        if e.get_entry_type() == raft::eraftpb::EntryType::EntryNormal && !e.data.is_empty() {
            flotillapb::RaftCmdRequest::decode(e.data.as_ref()).expect("checked entry decodes");
        }
    }
    if m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
        let snap = flotillapb::SnapshotData::decode(m.get_snapshot().get_data())
            .expect("checked snapshot decodes");
        assert_eq!(snap.region_state.unwrap().region.unwrap().id, msg.region_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, Message as RaftMsg, MessageType};

    /// Hand-written inputs that reach past the first checks of each target.
    fn seeds() -> Vec<Vec<u8>> {
        let mut seeds = vec![
            vec![],
            vec![0],
            vec![0xFF; 9],
            encode_bytes(b"r\0\0\0key"),
            keys::region_state_key(42),
            keys::apply_state_key(u64::MAX),
            Lock::new(txn_types::LockType::Put, b"p".to_vec(), 5.into(), 10).to_bytes(),
            Write::new(txn_types::WriteType::Put, 5.into(), Some(b"v".to_vec())).to_bytes(),
        ];
        let put = kvrpcpb::RawPutRequest {
            key: b"r\0\0\0k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        seeds.push([vec![3], put.encode_to_vec()].concat());
        let prewrite = kvrpcpb::PrewriteRequest {
            mutations: vec![kvrpcpb::Mutation {
                key: b"x\0\0\0k".to_vec(),
                ..Default::default()
            }],
            primary_lock: b"x\0\0\0k".to_vec(),
            start_version: 1,
            ..Default::default()
        };
        seeds.push([vec![15], prewrite.encode_to_vec()].concat());
        let mut m = RaftMsg::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.from = 1;
        m.to = 2;
        m.mut_entries().push(Entry {
            data: flotillapb::RaftCmdRequest::default().encode_to_vec().into(),
            ..Default::default()
        });
        let bytes = protobuf::Message::write_to_bytes(&m).unwrap();
        seeds.push(bytes.clone());
        seeds.push(
            flotillapb::BatchRaftMessage {
                msgs: vec![envelope(bytes)],
            }
            .encode_to_vec(),
        );
        seeds
    }

    #[test]
    fn memcomparable_seeds() {
        seeds().iter().for_each(|s| memcomparable(s));
    }

    #[test]
    fn mvcc_keys_seeds() {
        seeds().iter().for_each(|s| mvcc_keys(s));
    }

    #[test]
    fn txn_records_seeds() {
        seeds().iter().for_each(|s| txn_records(s));
    }

    #[test]
    fn kv_request_seeds() {
        for s in seeds() {
            for sel in 0..REQUESTS.len() as u8 {
                kv_request(&[&[sel], s.as_slice()].concat());
            }
        }
    }

    #[test]
    fn raft_message_seeds() {
        seeds().iter().for_each(|s| raft_message(s));
    }
}
