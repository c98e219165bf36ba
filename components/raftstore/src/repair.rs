//! Getting back entries this store acknowledged and then lost.
//!
//! A damaged raft log tail is cut at start-up (see `raft_log`'s recovery mode). If the cut
//! entries had been acknowledged, the leader still counts them as this follower's: it sends
//! heartbeats whose commit index (`min(matched, committed)`) is past the follower's last
//! index, which raft-rs treats as a fatal error, and it discards the follower's rejections as
//! stale (they are below what it believes the follower matched), so plain log replication
//! never resends them.
//!
//! [`step`] handles that heartbeat instead of letting raft-rs panic: the commit index is
//! clamped to the local log, and the leader is sent a snapshot request that it does not
//! discard (a rejection *at* the heartbeat's commit index, with `request_snapshot` set; raft-rs
//! discards only rejections below `matched`, or at it without a snapshot request). The
//! snapshot carries everything up to the leader's applied index, so the lost entries come
//! back, and the log restarts after it. Until the leader's commit has reached `matched`
//! the request is stale, and the next heartbeat sends it again.

use raft::eraftpb::{Message, MessageType};
use raft::{RawNode, Storage};

/// Steps `msg` into `raw`, repairing a lost acknowledged tail as the module says. `region_id`
/// is for the log.
pub fn step<S: Storage>(
    region_id: u64,
    raw: &mut RawNode<S>,
    mut msg: Message,
) -> raft::Result<()> {
    let last_index = raw.raft.raft_log.last_index();
    let lost = msg.get_msg_type() == MessageType::MsgHeartbeat
        && msg.term >= raw.raft.term
        && msg.commit > last_index;
    if !lost {
        return raw.step(msg);
    }
    let (leader, commit) = (msg.from, msg.commit);
    tracing::warn!(
        region_id,
        leader,
        commit,
        last_index,
        "the leader counts entries this peer no longer has (a cut log tail); asking for a snapshot"
    );
    msg.commit = last_index;
    raw.step(msg)?;
    let mut req = Message::default();
    req.set_msg_type(MessageType::MsgAppendResponse);
    req.to = leader;
    req.from = raw.raft.id;
    req.term = raw.raft.term;
    req.reject = true;
    req.index = commit;
    req.reject_hint = last_index;
    req.log_term = raw.raft.raft_log.term(last_index).unwrap_or(0);
    req.request_snapshot = commit;
    raw.raft.msgs.push(req);
    Ok(())
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::{ConfState, Entry};
    use raft::storage::MemStorage;
    use raft::{Config, RawNode};

    use super::*;

    fn follower_with_log(last_index: u64) -> RawNode<MemStorage> {
        let storage = MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        let entries: Vec<Entry> = (1..=last_index)
            .map(|index| Entry {
                index,
                term: 1,
                ..Default::default()
            })
            .collect();
        storage.wl().append(&entries).unwrap();
        let cfg = Config {
            id: 1,
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        RawNode::new(&cfg, storage, &logger).unwrap()
    }

    fn heartbeat(commit: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.from = 2;
        m.to = 1;
        m.term = 2;
        m.commit = commit;
        m
    }

    #[test]
    fn a_heartbeat_past_the_log_asks_the_leader_for_a_snapshot() {
        let mut raw = follower_with_log(5);
        step(1, &mut raw, heartbeat(8)).unwrap();
        assert_eq!(raw.raft.raft_log.committed, 5, "commit clamped to the log");
        assert_eq!(raw.raft.leader_id, 2);
        let req = raw
            .raft
            .msgs
            .iter()
            .find(|m| m.get_msg_type() == MessageType::MsgAppendResponse)
            .expect("a snapshot request to the leader");
        assert_eq!((req.to, req.term, req.reject), (2, 2, true));
        assert_eq!(
            (req.index, req.request_snapshot, req.reject_hint),
            (8, 8, 5)
        );
    }

    #[test]
    fn other_messages_step_as_usual() {
        let mut raw = follower_with_log(5);
        step(1, &mut raw, heartbeat(4)).unwrap();
        assert_eq!(raw.raft.raft_log.committed, 4);
        assert!(raw
            .raft
            .msgs
            .iter()
            .all(|m| m.get_msg_type() != MessageType::MsgAppendResponse));
    }
}
