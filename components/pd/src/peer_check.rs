//! Checks of a raft message that arrives on PD's peer port, before the raft thread steps it.
//!
//! Threat model: anyone who can reach the peer port can send bytes; identity (which member is
//! on the other end) is the job of transport security, not of this check. What this check
//! guarantees is that nothing PD steps can make it misbehave on its own: the message must come
//! from another member of the group and be addressed to this one; it must be of a type that one
//! PD member sends to another over the network; and whatever it carries that PD will later
//! apply must decode as PD applies it. Then a committed entry that does not decode cannot come
//! from the network, only from a damaged disk.
//!
//! Which types travel between PD members (raft-rs 0.7, PD's use of it):
//! - appends, heartbeats, (pre)votes, their responses, and snapshots: accepted;
//! - `MsgPropose`: refused. PD proposes only on its leader (`Cmd::Propose` on the raft
//!   thread), so a proposal never needs forwarding, and one from outside would write to PD's
//!   state;
//! - `MsgReadIndex`/`MsgReadIndexResp`: refused. PD asks for a read index only on its leader
//!   (to renew the lease), so raft-rs never forwards one;
//! - `MsgTransferLeader`/`MsgTimeoutNow`: refused. PD never transfers its leadership;
//! - `MsgHup`, `MsgBeat`, `MsgUnreachable`, `MsgSnapStatus`, `MsgCheckQuorum`: raft-rs makes
//!   these locally, they never travel.
//!
//! The function is total: malformed input gives a typed error, never a panic. It reads no
//! clock and does no I/O.

use std::collections::BTreeSet;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};

use crate::replication::decode_pairs;

/// The group as one member sees it: who may send to it.
#[derive(Clone, Debug)]
pub(crate) struct PeerGroup {
    /// Every member's id, this one's included. PD's membership is static (the initial
    /// cluster): it never proposes a conf change, so this is also raft's voter set.
    pub members: BTreeSet<u64>,
    /// This member's id.
    pub me: u64,
}

/// Why a message on the peer port is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PeerMessageError {
    /// The bytes are not a raft message.
    #[error("undecodable raft message: {0}")]
    Undecodable(String),
    /// The sender is not a member of the group (or is this member itself).
    #[error("message from {from}, not another member of the group")]
    NotMember {
        /// The claimed sender.
        from: u64,
    },
    /// Addressed to another member.
    #[error("message for member {to} received by member {me}")]
    NotForMe {
        /// The addressed member.
        to: u64,
        /// This member.
        me: u64,
    },
    /// A type that one PD member never sends to another.
    #[error("{0:?} is not accepted from another PD member")]
    NotFromPeer(MessageType),
    /// Entries on a message that carries none.
    #[error("{0:?} with entries")]
    UnexpectedEntries(MessageType),
    /// An entry that PD's apply could not decode.
    #[error("entry {index}: {reason}")]
    BadEntry {
        /// The entry's index.
        index: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A snapshot on a message that carries none.
    #[error("{0:?} with a snapshot")]
    UnexpectedSnapshot(MessageType),
    /// A snapshot PD could not install.
    #[error("bad snapshot: {0}")]
    BadSnapshot(String),
    /// A vote that claims to be a leadership transfer, which PD never makes.
    #[error("{0:?} with a campaign context (PD never transfers its leadership)")]
    TransferVote(MessageType),
    /// A heartbeat that commits entries this member does not have.
    #[error("heartbeat from {from} commits {commit}, past this member's last index {last_index}")]
    CommitBeyondLog {
        /// The sender.
        from: u64,
        /// The heartbeat's commit index.
        commit: u64,
        /// This member's last log index.
        last_index: u64,
    },
    /// An append answer about entries this member never had.
    #[error("{from} answers about index {index}, past this member's last index {last_index}")]
    AckBeyondLog {
        /// The sender.
        from: u64,
        /// The acknowledged index.
        index: u64,
        /// This member's last log index.
        last_index: u64,
    },
}

impl PeerMessageError {
    /// Whether the refusal is about who sent the message (rather than what it holds).
    pub(crate) fn is_about_sender(&self) -> bool {
        matches!(self, Self::NotMember { .. } | Self::NotForMe { .. })
    }
}

/// Decodes `bytes` as a raft message and checks it as received by `group.me`.
pub(crate) fn check_peer_message(
    bytes: &[u8],
    group: &PeerGroup,
) -> Result<Message, PeerMessageError> {
    let m = Message::parse_from_bytes(bytes)
        .map_err(|e| PeerMessageError::Undecodable(e.to_string()))?;
    if m.from == group.me || !group.members.contains(&m.from) {
        return Err(PeerMessageError::NotMember { from: m.from });
    }
    if m.to != group.me {
        return Err(PeerMessageError::NotForMe {
            to: m.to,
            me: group.me,
        });
    }
    let t = m.get_msg_type();
    match t {
        MessageType::MsgAppend
        | MessageType::MsgAppendResponse
        | MessageType::MsgHeartbeat
        | MessageType::MsgHeartbeatResponse
        | MessageType::MsgRequestVote
        | MessageType::MsgRequestVoteResponse
        | MessageType::MsgRequestPreVote
        | MessageType::MsgRequestPreVoteResponse
        | MessageType::MsgSnapshot => {}
        MessageType::MsgHup
        | MessageType::MsgBeat
        | MessageType::MsgPropose
        | MessageType::MsgUnreachable
        | MessageType::MsgSnapStatus
        | MessageType::MsgCheckQuorum
        | MessageType::MsgTransferLeader
        | MessageType::MsgTimeoutNow
        | MessageType::MsgReadIndex
        | MessageType::MsgReadIndexResp => return Err(PeerMessageError::NotFromPeer(t)),
    }
    if t == MessageType::MsgAppend {
        m.get_entries().iter().try_for_each(check_entry)?;
    } else if !m.get_entries().is_empty() {
        return Err(PeerMessageError::UnexpectedEntries(t));
    }
    if t == MessageType::MsgSnapshot {
        check_snapshot(m.get_snapshot(), &group.members)?;
    } else if *m.get_snapshot() != Snapshot::default() {
        return Err(PeerMessageError::UnexpectedSnapshot(t));
    }
    // raft-rs grants a vote that carries the transfer context even to a candidate that its
    // leader's lease should keep out; PD's own campaigns never carry a context.
    if matches!(
        t,
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
    ) && !m.context.is_empty()
    {
        return Err(PeerMessageError::TransferVote(t));
    }
    Ok(m)
}

/// The part of the check that needs this member's raft state (`term`, `last_index`), made on
/// the raft thread just before [`check_peer_message`]'s result is stepped: what raft-rs would
/// treat as a broken invariant of its own and panic on. A member that tells the truth never
/// sends it (PD fsyncs its log before acknowledging), so only a member that lies, or a sender
/// that is not the member it claims to be, can; it is dropped.
pub(crate) fn check_against_log(
    m: &Message,
    term: u64,
    last_index: u64,
) -> Result<(), PeerMessageError> {
    if m.term < term {
        return Ok(()); // raft-rs ignores a message of an older term
    }
    match m.get_msg_type() {
        // raft-rs: "to_commit .. is out of range [last_index ..]".
        MessageType::MsgHeartbeat if m.commit > last_index => {
            Err(PeerMessageError::CommitBeyondLog {
                from: m.from,
                commit: m.commit,
                last_index,
            })
        }
        // A follower answers an append the leader sent (index) with at most that index as its
        // hint: neither lies past the leader's own log. raft-rs adds one to the hint.
        MessageType::MsgAppendResponse
            if m.index > last_index || (m.reject && m.reject_hint > last_index) =>
        {
            Err(PeerMessageError::AckBeyondLog {
                from: m.from,
                index: m.index.max(m.reject_hint),
                last_index,
            })
        }
        _ => Ok(()),
    }
}

/// An entry PD's apply decodes: a write ([`decode_pairs`]) or a leader's empty entry. PD never
/// proposes a conf change.
fn check_entry(e: &Entry) -> Result<(), PeerMessageError> {
    let bad = |reason: String| PeerMessageError::BadEntry {
        index: e.index,
        reason,
    };
    match e.get_entry_type() {
        EntryType::EntryNormal => decode_pairs(&e.data)
            .map(drop)
            .map_err(|err| bad(err.to_string())),
        t @ (EntryType::EntryConfChange | EntryType::EntryConfChangeV2) => Err(bad(format!(
            "{t:?}: PD's membership is static, it never proposes one"
        ))),
    }
}

/// A snapshot PD can install: its data is PD's state ([`decode_pairs`]), and its membership
/// is the group's, unchanged (installing it resets raft's voters).
fn check_snapshot(snap: &Snapshot, members: &BTreeSet<u64>) -> Result<(), PeerMessageError> {
    let bad = PeerMessageError::BadSnapshot;
    decode_pairs(&snap.data).map_err(|e| bad(e.to_string()))?;
    let cs = snap.get_metadata().get_conf_state();
    let mut voters = cs.voters.clone();
    voters.sort_unstable();
    let expected = ConfState {
        voters: members.iter().copied().collect(),
        ..Default::default()
    };
    let got = ConfState {
        voters,
        ..cs.clone()
    };
    if got != expected {
        return Err(bad(format!("membership {cs:?}, the group is {members:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::encode_pairs;

    fn group() -> PeerGroup {
        PeerGroup {
            members: [1, 2, 3].into(),
            me: 2,
        }
    }

    fn msg(t: MessageType) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = 1;
        m.to = 2;
        m.term = 5;
        m
    }

    fn check(m: &Message) -> Result<Message, PeerMessageError> {
        check_peer_message(&m.write_to_bytes().unwrap(), &group())
    }

    fn write_entry(index: u64) -> Entry {
        Entry {
            index,
            term: 5,
            data: encode_pairs(&[(b"k".to_vec(), b"v".to_vec())]).into(),
            ..Default::default()
        }
    }

    fn snapshot(voters: Vec<u64>, data: Vec<u8>) -> Snapshot {
        let mut s = Snapshot::default();
        s.set_data(data.into());
        s.mut_metadata().index = 10;
        s.mut_metadata().term = 5;
        s.mut_metadata().mut_conf_state().voters = voters;
        s
    }

    #[test]
    fn accepts_what_members_send_each_other() {
        for t in [
            MessageType::MsgAppendResponse,
            MessageType::MsgHeartbeat,
            MessageType::MsgHeartbeatResponse,
            MessageType::MsgRequestVote,
            MessageType::MsgRequestVoteResponse,
            MessageType::MsgRequestPreVote,
            MessageType::MsgRequestPreVoteResponse,
        ] {
            let m = msg(t);
            assert_eq!(check(&m), Ok(m.clone()), "{t:?}");
        }
        // Appends with writes and a new leader's empty entry; heartbeats carrying a read
        // index context (ReadOnlySafe).
        let mut append = msg(MessageType::MsgAppend);
        append.mut_entries().push(Entry {
            index: 7,
            term: 5,
            ..Default::default()
        });
        append.mut_entries().push(write_entry(8));
        assert_eq!(check(&append), Ok(append.clone()));
        let mut hb = msg(MessageType::MsgHeartbeat);
        hb.context = 9u64.to_be_bytes().to_vec().into();
        assert!(check(&hb).is_ok());
        // A snapshot of PD's state with the group's membership, in any order.
        let mut snap = msg(MessageType::MsgSnapshot);
        let data = encode_pairs(&[(b"cluster_id".to_vec(), b"1".to_vec())]);
        snap.set_snapshot(snapshot(vec![3, 1, 2], data));
        assert!(check(&snap).is_ok());
    }

    #[test]
    fn refuses_strangers_and_misaddressed_messages() {
        for from in [0, 2, 4, u64::MAX] {
            let mut m = msg(MessageType::MsgHeartbeat);
            m.from = from;
            assert_eq!(check(&m), Err(PeerMessageError::NotMember { from }));
            assert!(check(&m).unwrap_err().is_about_sender());
        }
        for to in [0, 1, 3, 4] {
            let mut m = msg(MessageType::MsgHeartbeat);
            m.to = to;
            assert_eq!(check(&m), Err(PeerMessageError::NotForMe { to, me: 2 }));
        }
        // A stranger's proposal is refused for who sent it.
        let mut m = msg(MessageType::MsgPropose);
        m.from = 99;
        assert_eq!(check(&m), Err(PeerMessageError::NotMember { from: 99 }));
    }

    #[test]
    fn refuses_garbage() {
        for bytes in [&[0xFF; 7][..], &[0x0A, 0x80], b"\x08\x02\x12"] {
            assert!(matches!(
                check_peer_message(bytes, &group()),
                Err(PeerMessageError::Undecodable(_))
            ));
        }
    }

    #[test]
    fn refuses_proposals_and_local_or_unused_types() {
        for t in [
            MessageType::MsgHup,
            MessageType::MsgBeat,
            MessageType::MsgPropose,
            MessageType::MsgUnreachable,
            MessageType::MsgSnapStatus,
            MessageType::MsgCheckQuorum,
            MessageType::MsgTransferLeader,
            MessageType::MsgTimeoutNow,
            MessageType::MsgReadIndex,
            MessageType::MsgReadIndexResp,
        ] {
            assert_eq!(
                check(&msg(t)),
                Err(PeerMessageError::NotFromPeer(t)),
                "{t:?}"
            );
        }
        // Even a well-formed write proposed by a member.
        let mut m = msg(MessageType::MsgPropose);
        m.mut_entries().push(write_entry(0));
        assert_eq!(
            check(&m),
            Err(PeerMessageError::NotFromPeer(MessageType::MsgPropose))
        );
    }

    #[test]
    fn refuses_entries_apply_could_not_decode() {
        let mut m = msg(MessageType::MsgAppend);
        m.mut_entries().push(write_entry(7));
        let mut bad = write_entry(8);
        bad.data = vec![0, 0, 0, 9, b'k'].into();
        m.mut_entries().push(bad);
        assert!(matches!(
            check(&m),
            Err(PeerMessageError::BadEntry { index: 8, .. })
        ));
        for t in [EntryType::EntryConfChange, EntryType::EntryConfChangeV2] {
            let mut m = msg(MessageType::MsgAppend);
            let mut cc = write_entry(9);
            cc.data = Default::default();
            cc.set_entry_type(t);
            m.mut_entries().push(cc);
            assert!(matches!(
                check(&m),
                Err(PeerMessageError::BadEntry { index: 9, .. })
            ));
        }
        // Entries only travel on appends.
        let mut hb = msg(MessageType::MsgHeartbeat);
        hb.mut_entries().push(write_entry(7));
        assert_eq!(
            check(&hb),
            Err(PeerMessageError::UnexpectedEntries(
                MessageType::MsgHeartbeat
            ))
        );
    }

    #[test]
    fn refuses_snapshots_pd_could_not_install() {
        let good = encode_pairs(&[(b"a".to_vec(), b"1".to_vec())]);
        let cases = [
            snapshot(vec![1, 2, 3], vec![0, 0, 0, 1]),
            snapshot(vec![1, 2], good.clone()),
            snapshot(vec![1, 2, 3, 4], good.clone()),
            snapshot(vec![1, 2, 2, 3], good.clone()),
            {
                let mut s = snapshot(vec![1, 2, 3], good.clone());
                s.mut_metadata().mut_conf_state().learners = vec![4];
                s
            },
            {
                let mut s = snapshot(vec![1, 2, 3], good.clone());
                s.mut_metadata().mut_conf_state().voters_outgoing = vec![1, 2, 3];
                s
            },
        ];
        for s in cases {
            let mut m = msg(MessageType::MsgSnapshot);
            m.set_snapshot(s.clone());
            assert!(
                matches!(check(&m), Err(PeerMessageError::BadSnapshot(_))),
                "{s:?}"
            );
        }
        let mut hb = msg(MessageType::MsgHeartbeat);
        hb.set_snapshot(snapshot(vec![1, 2, 3], good));
        assert_eq!(
            check(&hb),
            Err(PeerMessageError::UnexpectedSnapshot(
                MessageType::MsgHeartbeat
            ))
        );
    }

    #[test]
    fn refuses_commits_and_acks_past_the_log() {
        let mut hb = msg(MessageType::MsgHeartbeat);
        hb.commit = 10;
        assert_eq!(check_against_log(&hb, 5, 10), Ok(()));
        assert_eq!(
            check_against_log(&hb, 5, 9),
            Err(PeerMessageError::CommitBeyondLog {
                from: 1,
                commit: 10,
                last_index: 9
            })
        );
        // A newer term too; an older one raft-rs ignores.
        assert!(check_against_log(&hb, 4, 9).is_err());
        assert_eq!(check_against_log(&hb, 6, 9), Ok(()));

        let mut ack = msg(MessageType::MsgAppendResponse);
        ack.index = 10;
        assert_eq!(check_against_log(&ack, 5, 10), Ok(()));
        assert!(matches!(
            check_against_log(&ack, 5, 9),
            Err(PeerMessageError::AckBeyondLog { index: 10, .. })
        ));
        // A rejection of an index the leader sent, with a hint at or below it.
        ack.reject = true;
        ack.index = 9;
        ack.reject_hint = 5;
        assert_eq!(check_against_log(&ack, 5, 9), Ok(()));
        ack.reject_hint = u64::MAX;
        assert!(matches!(
            check_against_log(&ack, 5, 9),
            Err(PeerMessageError::AckBeyondLog { .. })
        ));
        // Other types carry no index raft-rs trusts this way.
        let mut vote = msg(MessageType::MsgRequestVote);
        vote.commit = 100;
        vote.index = 100;
        assert_eq!(check_against_log(&vote, 5, 9), Ok(()));
    }

    #[test]
    fn refuses_transfer_votes() {
        for t in [MessageType::MsgRequestVote, MessageType::MsgRequestPreVote] {
            let mut m = msg(t);
            m.context = b"CampaignTransfer".to_vec().into();
            assert_eq!(check(&m), Err(PeerMessageError::TransferVote(t)));
        }
    }
}
