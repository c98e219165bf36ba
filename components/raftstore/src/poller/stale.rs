//! Stale peers: a peer of this store that its region no longer counts as a member (removed
//! while the store was down or cut off) is destroyed and tombstoned, and never brought back by
//! a message from before its removal.
//!
//! - **Told by a member.** A peer that receives a vote request or a heartbeat answer from a
//!   peer outside its region, under an older epoch, answers with an `is_tombstone` message
//!   carrying its own epoch; the receiver destroys itself if that epoch is newer than its own
//!   (the sender has seen its removal).
//! - **Asked of PD.** A peer that has heard from no leader for `stale_peer_check_ticks` asks PD
//!   for the region ([`PdTask::CheckStalePeer`]); it destroys itself if PD's region is newer
//!   and lacks it. PD's answer may be older than the local state: then nothing happens.
//! - **Tombstones.** The destroyed peer's region state becomes `Tombstone` with the newest
//!   epoch heard of; `Poller::tombstones` mirrors it (loaded at start-up), and no message whose
//!   epoch is not newer creates a peer for the region again (`Poller::maybe_create_peer`).
//!
//! Epochs are compared with `util::is_epoch_stale` only.

use super::*;

use crate::util::find_peer_by_id;

impl Poller {
    /// Whether `msg` is a vote request or heartbeat answer from a peer that the local region
    /// (initialized, with a newer epoch) does not count as a member: such a sender has been
    /// removed and is told so instead of being stepped.
    pub(super) fn is_from_removed_peer(
        &self,
        msg: &flotillapb::RaftMessage,
        raft_msg: &RaftMsg,
    ) -> bool {
        let asks_or_answers = matches!(
            raft_msg.get_msg_type(),
            MessageType::MsgRequestVote
                | MessageType::MsgRequestPreVote
                | MessageType::MsgHeartbeatResponse
        );
        let Some(p) = self.peers.get(&msg.region_id) else {
            return false;
        };
        let Some(from) = &msg.from_peer else {
            return false;
        };
        asks_or_answers
            && p.raw.store().is_initialized()
            && find_peer_by_id(p.region(), from.id).is_none()
            && is_epoch_stale(&msg.region_epoch.unwrap_or_default(), &epoch_of(p.region()))
    }

    /// Tells the sender of `msg` that it is no longer a member of the region, as of this peer's
    /// epoch.
    pub(super) fn send_tombstone_message(&mut self, msg: &flotillapb::RaftMessage) {
        let (Some(p), Some(from)) = (self.peers.get(&msg.region_id), msg.from_peer) else {
            return;
        };
        tracing::info!(
            region_id = msg.region_id,
            stale_peer = from.id,
            "telling a removed peer to destroy itself"
        );
        let m = tombstone_message(p.region(), p.meta, from);
        self.transport.send(m);
    }

    /// Another peer says this store's peer is no longer a member: destroyed if the sender's
    /// epoch is newer than the local one.
    pub(super) fn on_tombstone_message(&mut self, msg: &flotillapb::RaftMessage) {
        let Some(p) = self.peers.get(&msg.region_id) else {
            return;
        };
        let to = msg.to_peer.unwrap_or_default();
        let remote = msg.region_epoch.unwrap_or_default();
        if to.id != p.meta.id || !is_epoch_stale(&epoch_of(p.region()), &remote) {
            return;
        }
        tracing::info!(
            region_id = msg.region_id,
            peer_id = p.meta.id,
            "a member with a newer epoch says this peer was removed; destroying"
        );
        self.destroy_peer(msg.region_id, true, Some(remote));
    }

    /// On a tick, a peer that has heard from no leader for `stale_peer_check_ticks` asks PD
    /// whether it is still a member (and asks again after as many ticks).
    pub(super) fn maybe_check_stale_peer(&mut self, id: RegionId) {
        let now = self.tick_count;
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if now.saturating_sub(p.leader_heard_tick) < self.cfg.stale_peer_check_ticks {
            return;
        }
        p.leader_heard_tick = now;
        let task = PdTask::CheckStalePeer {
            region: p.region().clone(),
            peer: p.meta,
        };
        // A full PD queue skips this check; the next one comes after as many ticks.
        let _ = self.pd_tx.try_send(task);
    }

    /// PD's region for a peer that asked: the peer is destroyed if PD's region is newer than
    /// its own and does not contain it. PD answers for a region it no longer knows with the one
    /// that holds its start key: if that one took the whole range over (a merge) with a higher
    /// version, the peer is stale too (its store missed the merge), unless this store has an
    /// initialized peer of the region that took it over: that one may still apply CommitMerge
    /// from its log, which needs the source. Otherwise the range is served elsewhere, and this
    /// store's next peer of it (PD may place one here) comes with a snapshot of the whole range.
    pub(super) fn on_stale_peer_check(
        &mut self,
        id: RegionId,
        peer_id: u64,
        pd_region: Option<metapb::Region>,
    ) {
        let (Some(p), Some(pd_region)) = (self.peers.get(&id), pd_region) else {
            return;
        };
        if pd_region.id != id {
            let local = p.region();
            let covers = pd_region.start_key <= local.start_key
                && (pd_region.end_key.is_empty()
                    || (!local.end_key.is_empty() && local.end_key <= pd_region.end_key));
            let merged_away = p.meta.id == peer_id
                && p.raw.store().is_initialized()
                && covers
                && epoch_of(&pd_region).version > epoch_of(local).version
                && !self
                    .peers
                    .get(&pd_region.id)
                    .is_some_and(|t| t.raw.store().is_initialized());
            if merged_away {
                tracing::info!(
                    region_id = id,
                    by = pd_region.id,
                    "merged away, and this store holds no initialized peer of the region that took it over; destroying"
                );
                self.destroy_peer(id, true, None);
            }
            return;
        }
        let pd_epoch = epoch_of(&pd_region);
        if p.meta.id != peer_id
            || !is_epoch_stale(&epoch_of(p.region()), &pd_epoch)
            || find_peer_by_id(&pd_region, peer_id).is_some()
        {
            return;
        }
        tracing::info!(
            region_id = id,
            peer_id,
            "PD's newer region does not contain this peer; destroying"
        );
        self.destroy_peer(id, true, Some(pd_epoch));
    }
}

/// The message that tells peer `to` it is no longer a member of `region`, from `from`.
fn tombstone_message(
    region: &metapb::Region,
    from: metapb::Peer,
    to: metapb::Peer,
) -> flotillapb::RaftMessage {
    // The envelope says it all; the raft message only names the two peers (it is never
    // stepped) with a type a store accepts from another store.
    let mut m = RaftMsg::default();
    m.set_msg_type(MessageType::MsgHeartbeatResponse);
    m.from = from.id;
    m.to = to.id;
    flotillapb::RaftMessage {
        region_id: region.id,
        from_peer: Some(from),
        to_peer: Some(to),
        region_epoch: region.region_epoch,
        message: protobuf::Message::write_to_bytes(&m).expect("encode raft message"),
        start_key: region.start_key.clone(),
        end_key: region.end_key.clone(),
        is_tombstone: true,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_message_passes_the_receivers_wire_check() {
        let peer = |id, store_id| metapb::Peer {
            id,
            store_id,
            ..Default::default()
        };
        let region = metapb::Region {
            id: 7,
            start_key: b"a".to_vec(),
            end_key: b"m".to_vec(),
            region_epoch: Some(metapb::RegionEpoch {
                version: 2,
                conf_ver: 5,
            }),
            peers: vec![peer(11, 1), peer(13, 3)],
        };
        let m = tombstone_message(&region, peer(11, 1), peer(12, 2));
        assert!(m.is_tombstone);
        assert_eq!(m.region_epoch, region.region_epoch);
        let raft_msg = wire_check::check_raft_message(&m, 2).expect("accepted by store 2");
        assert_eq!((raft_msg.from, raft_msg.to), (11, 12));
        assert!(wire_check::check_raft_message(&m, 3).is_err());
    }
}
