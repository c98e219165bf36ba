//! Checks of a store-to-store [`flotillapb::RaftMessage`] before the receiving store looks up
//! or creates a peer for it and steps raft-rs with it.
//!
//! The envelope must address a peer of this store from another peer of a region, and its raft
//! message must decode and agree with the envelope. What the message carries must be
//! something the store can apply without panicking: every entry decodes as the command or conf
//! change it claims to be (an undecodable committed entry is a broken invariant at apply time,
//! on every replica), and a snapshot describes the addressed region with its data inside that
//! region's range. Messages raft-rs only makes locally (`MsgHup`, `MsgBeat`, ...) and
//! proposals (a Flotilla store proposes only on its leader, it never forwards) are refused.

use codec::keys::{data_end_key, data_start_key};
use prost::Message as _;
use proto::flotillapb::{self, RaftCmdRequest, SnapshotData};
use proto::metapb;
use raft::eraftpb::{ConfChange, Entry, EntryType, Message as RaftMsg, MessageType};

/// Why a raft message from another store is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftMessageError {
    /// Region id zero.
    #[error("message without a region id")]
    NoRegion,
    /// `from_peer` or `to_peer` is missing or has id zero.
    #[error("message without a valid {0} peer")]
    BadPeer(&'static str),
    /// Addressed to a peer on another store.
    #[error("message for store {to_store} received by store {store_id}")]
    WrongStore {
        /// The receiving store.
        store_id: u64,
        /// The store the message names.
        to_store: u64,
    },
    /// The sender's region range is out of order.
    #[error("region range out of order")]
    BadRange,
    /// The raft message does not decode.
    #[error("undecodable raft message: {0}")]
    Undecodable(String),
    /// The raft message's `from`/`to` disagree with the envelope's peers.
    #[error("raft message from {from} to {to} in an envelope from {env_from} to {env_to}")]
    PeerMismatch {
        /// The raft message's sender.
        from: u64,
        /// The raft message's target.
        to: u64,
        /// The envelope's sender.
        env_from: u64,
        /// The envelope's target.
        env_to: u64,
    },
    /// A message type that never travels between Flotilla stores.
    #[error("{0:?} is not accepted from another store")]
    NotFromRemote(MessageType),
    /// An entry whose data does not decode as its type.
    #[error("entry {index}: {reason}")]
    BadEntry {
        /// The entry's index.
        index: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A snapshot whose data cannot be applied to the addressed region.
    #[error("bad snapshot: {0}")]
    BadSnapshot(String),
    /// A store keepalive that carries a region's fields, or a region message flagged as one.
    #[error("malformed store keepalive")]
    BadKeepalive,
}

/// Checks `msg` as received by store `store_id`, and returns its decoded raft message.
pub fn check_raft_message(
    msg: &flotillapb::RaftMessage,
    store_id: u64,
) -> Result<RaftMsg, RaftMessageError> {
    if msg.store_keepalive {
        return Err(RaftMessageError::BadKeepalive);
    }
    if msg.region_id == 0 {
        return Err(RaftMessageError::NoRegion);
    }
    let to = valid_peer(msg.to_peer.as_ref(), "target")?;
    let from = valid_peer(msg.from_peer.as_ref(), "source")?;
    if to.store_id != store_id {
        return Err(RaftMessageError::WrongStore {
            store_id,
            to_store: to.store_id,
        });
    }
    if from.id == to.id {
        return Err(RaftMessageError::BadPeer("source"));
    }
    if !msg.end_key.is_empty() && msg.start_key >= msg.end_key {
        return Err(RaftMessageError::BadRange);
    }
    let m: RaftMsg = protobuf::Message::parse_from_bytes(&msg.message)
        .map_err(|e| RaftMessageError::Undecodable(e.to_string()))?;
    if m.from != from.id || m.to != to.id {
        return Err(RaftMessageError::PeerMismatch {
            from: m.from,
            to: m.to,
            env_from: from.id,
            env_to: to.id,
        });
    }
    let t = m.get_msg_type();
    if matches!(
        t,
        MessageType::MsgHup
            | MessageType::MsgBeat
            | MessageType::MsgPropose
            | MessageType::MsgUnreachable
            | MessageType::MsgSnapStatus
            | MessageType::MsgCheckQuorum
    ) {
        return Err(RaftMessageError::NotFromRemote(t));
    }
    m.get_entries().iter().try_for_each(check_entry)?;
    if t == MessageType::MsgSnapshot {
        check_snapshot(msg.region_id, m.get_snapshot().get_data())?;
    }
    Ok(m)
}

/// Checks a store keepalive (`store_keepalive` set) as received by store `store_id`, and
/// returns the sending store's id. A keepalive names no region and no peer: only the two
/// stores, different and non-zero, and it carries nothing else.
pub fn check_store_keepalive(
    msg: &flotillapb::RaftMessage,
    store_id: u64,
) -> Result<u64, RaftMessageError> {
    let bare = msg.store_keepalive
        && msg.region_id == 0
        && msg.message.is_empty()
        && msg.region_epoch.is_none()
        && msg.start_key.is_empty()
        && msg.end_key.is_empty()
        && !msg.is_tombstone
        && !msg.hibernate;
    if !bare {
        return Err(RaftMessageError::BadKeepalive);
    }
    let store_of = |p: Option<&metapb::Peer>| p.map_or(0, |p| p.store_id);
    let (from, to) = (
        store_of(msg.from_peer.as_ref()),
        store_of(msg.to_peer.as_ref()),
    );
    if to != store_id {
        return Err(RaftMessageError::WrongStore {
            store_id,
            to_store: to,
        });
    }
    if from == 0 || from == to {
        return Err(RaftMessageError::BadKeepalive);
    }
    Ok(from)
}

fn valid_peer<'a>(
    peer: Option<&'a metapb::Peer>,
    which: &'static str,
) -> Result<&'a metapb::Peer, RaftMessageError> {
    peer.filter(|p| p.id != 0 && p.store_id != 0)
        .ok_or(RaftMessageError::BadPeer(which))
}

/// An entry the apply thread can decode: a command (or a leader's empty entry), or a v1 conf
/// change (Flotilla never proposes v2 ones).
pub fn check_entry(e: &Entry) -> Result<(), RaftMessageError> {
    let bad = |reason: String| RaftMessageError::BadEntry {
        index: e.index,
        reason,
    };
    match e.get_entry_type() {
        EntryType::EntryNormal if e.data.is_empty() => Ok(()),
        EntryType::EntryNormal => RaftCmdRequest::decode(e.data.as_ref())
            .map(drop)
            .map_err(|err| bad(format!("undecodable command: {err}"))),
        EntryType::EntryConfChange => protobuf::Message::parse_from_bytes(e.data.as_ref())
            .map(|_: ConfChange| ())
            .map_err(|err| bad(format!("undecodable conf change: {err}"))),
        EntryType::EntryConfChangeV2 => Err(bad("v2 conf change".into())),
    }
}

/// Snapshot data the apply thread can install for `region_id`: the region and its apply
/// state, and data only in known column families and inside the region's range.
pub fn check_snapshot(region_id: u64, data: &[u8]) -> Result<SnapshotData, RaftMessageError> {
    let bad = |m: String| RaftMessageError::BadSnapshot(m);
    let snap = SnapshotData::decode(data).map_err(|e| bad(format!("undecodable: {e}")))?;
    let region = snap
        .region_state
        .as_ref()
        .and_then(|s| s.region.as_ref())
        .ok_or_else(|| bad("no region".into()))?;
    if region.id != region_id {
        return Err(bad(format!("region {} for region {region_id}", region.id)));
    }
    if !region.end_key.is_empty() && region.start_key >= region.end_key {
        return Err(bad("region range out of order".into()));
    }
    if snap.apply_state.is_none() {
        return Err(bad("no apply state".into()));
    }
    let (lower, upper) = (
        data_start_key(&region.start_key),
        data_end_key(&region.end_key),
    );
    for cf in &snap.cfs {
        if !matches!(cf.cf.as_str(), "" | "default" | "lock" | "write") {
            return Err(bad(format!("unknown column family {:?}", cf.cf)));
        }
        if cf.keys.len() != cf.values.len() {
            return Err(bad(format!(
                "{} keys, {} values",
                cf.keys.len(),
                cf.values.len()
            )));
        }
        if let Some(k) = cf.keys.iter().find(|k| **k < lower || **k >= upper) {
            return Err(bad(format!("key {k:?} outside the region")));
        }
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::flotillapb::{CfData, RaftApplyState, RegionLocalState};

    fn peer(id: u64, store_id: u64) -> Option<metapb::Peer> {
        Some(metapb::Peer {
            id,
            store_id,
            ..Default::default()
        })
    }

    fn envelope(m: &RaftMsg) -> flotillapb::RaftMessage {
        flotillapb::RaftMessage {
            region_id: 7,
            from_peer: peer(1, 1),
            to_peer: peer(2, 2),
            message: protobuf::Message::write_to_bytes(m).unwrap(),
            ..Default::default()
        }
    }

    fn heartbeat() -> RaftMsg {
        let mut m = RaftMsg::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.from = 1;
        m.to = 2;
        m
    }

    fn snapshot_data(region_id: u64, key: &[u8]) -> Vec<u8> {
        SnapshotData {
            region_state: Some(RegionLocalState {
                state: 0,
                merge_state: None,
                region: Some(metapb::Region {
                    id: region_id,
                    start_key: b"b".to_vec(),
                    end_key: b"d".to_vec(),
                    ..Default::default()
                }),
            }),
            apply_state: Some(RaftApplyState::default()),
            cfs: vec![CfData {
                cf: "default".into(),
                keys: vec![key.to_vec()],
                values: vec![b"v".to_vec()],
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn accepts_a_well_formed_message() {
        assert_eq!(
            check_raft_message(&envelope(&heartbeat()), 2).unwrap(),
            heartbeat()
        );
    }

    fn keepalive(from: u64, to: u64) -> flotillapb::RaftMessage {
        flotillapb::RaftMessage {
            from_peer: peer(0, from),
            to_peer: peer(0, to),
            store_keepalive: true,
            ..Default::default()
        }
    }

    #[test]
    fn store_keepalives_name_two_stores_and_nothing_else() {
        assert_eq!(check_store_keepalive(&keepalive(1, 2), 2), Ok(1));
        assert_eq!(
            check_store_keepalive(&keepalive(1, 2), 3),
            Err(RaftMessageError::WrongStore {
                store_id: 3,
                to_store: 2
            })
        );
        let bad = [
            keepalive(0, 2),
            keepalive(2, 2),
            flotillapb::RaftMessage {
                region_id: 7,
                ..keepalive(1, 2)
            },
            flotillapb::RaftMessage {
                message: vec![1],
                ..keepalive(1, 2)
            },
            flotillapb::RaftMessage {
                store_keepalive: false,
                ..keepalive(1, 2)
            },
        ];
        for m in bad {
            assert_eq!(
                check_store_keepalive(&m, 2),
                Err(RaftMessageError::BadKeepalive)
            );
        }
        // A region message flagged as a keepalive is neither.
        let mut flagged = envelope(&heartbeat());
        flagged.store_keepalive = true;
        assert_eq!(
            check_raft_message(&flagged, 2),
            Err(RaftMessageError::BadKeepalive)
        );
    }

    #[test]
    fn refuses_bad_envelopes() {
        let good = envelope(&heartbeat());
        assert_eq!(
            check_raft_message(&good, 3),
            Err(RaftMessageError::WrongStore {
                store_id: 3,
                to_store: 2
            })
        );
        let cases = [
            flotillapb::RaftMessage {
                region_id: 0,
                ..good.clone()
            },
            flotillapb::RaftMessage {
                to_peer: None,
                ..good.clone()
            },
            flotillapb::RaftMessage {
                from_peer: peer(0, 1),
                ..good.clone()
            },
            flotillapb::RaftMessage {
                from_peer: peer(2, 1),
                ..good.clone()
            },
            flotillapb::RaftMessage {
                to_peer: peer(9, 2),
                ..good.clone()
            },
            flotillapb::RaftMessage {
                message: vec![0xFF; 5],
                ..good.clone()
            },
            flotillapb::RaftMessage {
                start_key: b"b".to_vec(),
                end_key: b"a".to_vec(),
                ..good
            },
        ];
        for c in cases {
            assert!(check_raft_message(&c, 2).is_err(), "{c:?}");
        }
    }

    #[test]
    fn refuses_local_messages_and_proposals() {
        for t in [
            MessageType::MsgHup,
            MessageType::MsgPropose,
            MessageType::MsgBeat,
        ] {
            let mut m = heartbeat();
            m.set_msg_type(t);
            assert_eq!(
                check_raft_message(&envelope(&m), 2),
                Err(RaftMessageError::NotFromRemote(t))
            );
        }
    }

    #[test]
    fn refuses_undecodable_entries() {
        let mut m = heartbeat();
        m.set_msg_type(MessageType::MsgAppend);
        let mut e = Entry {
            index: 5,
            data: RaftCmdRequest::default().encode_to_vec().into(),
            ..Default::default()
        };
        m.mut_entries().push(e.clone());
        assert!(check_raft_message(&envelope(&m), 2).is_ok());
        e.data = vec![0xFF, 0xFF].into();
        m.mut_entries().push(e.clone());
        assert!(matches!(
            check_raft_message(&envelope(&m), 2),
            Err(RaftMessageError::BadEntry { index: 5, .. })
        ));
        let mut cc = Entry::default();
        cc.set_entry_type(EntryType::EntryConfChangeV2);
        assert!(check_entry(&cc).is_err());
    }

    #[test]
    fn refuses_snapshots_for_other_regions_or_ranges() {
        let inside = data_start_key(b"c");
        assert!(check_snapshot(7, &snapshot_data(7, &inside)).is_ok());
        assert!(check_snapshot(8, &snapshot_data(7, &inside)).is_err());
        assert!(check_snapshot(7, &snapshot_data(7, &data_start_key(b"d"))).is_err());
        assert!(check_snapshot(7, &snapshot_data(7, b"\x01\x03raft")).is_err());
        assert!(check_snapshot(7, &[0xFF]).is_err());
        let mut no_apply = SnapshotData::decode(snapshot_data(7, &inside).as_slice()).unwrap();
        no_apply.apply_state = None;
        assert!(check_snapshot(7, &no_apply.encode_to_vec()).is_err());
        let mut m = heartbeat();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.mut_snapshot().data = snapshot_data(8, &inside).into();
        assert!(matches!(
            check_raft_message(&envelope(&m), 2),
            Err(RaftMessageError::BadSnapshot(_))
        ));
    }
}
