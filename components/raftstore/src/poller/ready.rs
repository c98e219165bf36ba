//! The Ready procedure of a poller round (listed on [`Poller::handle_readys`]), with the
//! snapshot that is written off the poller: a Ready carrying a snapshot is parked in its peer
//! while the apply thread writes the data, and finished in the round that learns it is written.

use super::*;

use raft::eraftpb::Entry;

use crate::apply::Proposal;
use crate::peer::PendingSnapshot;

impl Poller {
    /// Handles the Readys of the regions touched since the last round (the active set). The
    /// steps of a round, in order:
    ///
    /// 1. (`run`) Control messages, then mailbox messages: apply results taken in, messages
    ///    stepped, proposals made, reads queued. Every region touched joins the active set.
    /// 2. (`run`) On a tick round, every awake peer ticks and joins the active set; idle
    ///    leaders hibernate (`poller/hibernate.rs`) and their last heartbeat goes out in 4a.
    /// 3. Each active peer whose leader transfer has ended proposes (or answers "not leader")
    ///    what the transfer held; each active peer with queued reads sends one ReadIndex for
    ///    them.
    /// 4. For each active peer with a Ready (a peer whose snapshot is being written is skipped:
    ///    no `ready()` is called on it until the apply thread reports):
    ///    - (a) the leader's messages go out at once;
    ///    - (b) a Ready with a snapshot is handed to the apply thread and parked in the peer;
    ///      the peer is done for this round;
    ///    - (c) committed entries go to the apply thread;
    ///    - (d) new entries, the hard state and the raft state go into the round's log batch;
    ///      confirmed read indexes are recorded; a role change is noted.
    ///
    ///    A peer whose snapshot the apply thread has written (its data, region state and apply
    ///    state are durable in the engine) resumes its parked Ready here: its raft log is reset
    ///    to start after the snapshot, in this round's batch, then c and d as above.
    /// 5. The log batch is written with one fsync (group commit across regions).
    /// 6. For each Ready of step 4: the messages that must follow persistence go out; raft-rs
    ///    is told the Ready is persisted (`advance_append`); the light Ready's commit index,
    ///    messages and committed entries are handled; reads whose index is applied are
    ///    answered. A resumed snapshot Ready is advanced without a light Ready (messages were
    ///    stepped while it was parked; what they produced comes with the peer's next Ready,
    ///    next round) and raft-rs learns the snapshot is applied (`advance_apply_to`).
    /// 7. The transport is flushed.
    ///
    /// Returns the number of peers looked at (for [`crate::msg::PollerStats`]).
    pub(super) fn handle_readys(&mut self) -> u64 {
        let ids: Vec<RegionId> = self.active.drain().collect();
        let examined = ids.len() as u64;
        for id in &ids {
            if let Some(p) = self.peers.get_mut(id) {
                p.release_held_proposals(&self.cfg);
                if p.submit_waiting_reads(self.next_read_id) {
                    self.next_read_id += 1;
                }
            }
        }
        let mut batch = LogBatch::default();
        let mut readys = Vec::new();
        for id in ids {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            match &p.pending_snapshot {
                Some(pending) if !pending.applied => continue,
                Some(_) => {
                    self.dirty.remove(&id);
                    readys.push((id, self.finish_snapshot(id, &mut batch)));
                    continue;
                }
                None => {}
            }
            if !p.raw.has_ready() {
                if self.dirty.remove(&id) {
                    p.raw.store().persist_state(&mut batch);
                }
                continue;
            }
            self.dirty.remove(&id);
            if let Some(rd) = self.collect_ready(id, &mut batch) {
                readys.push((id, rd));
            }
        }
        if !batch.is_empty() {
            fail_point_at!(self.store_id, "raft_log_before_write");
            if let Err(e) = self.raft_log.write(batch, true) {
                // An unpersisted raft log cannot be acknowledged; stopping is the only safe move.
                panic!("store {}: raft log write failed: {e}", self.store_id);
            }
            fail_point_at!(self.store_id, "raft_log_after_write");
        }
        for (id, rd) in readys {
            self.advance_ready(id, rd);
        }
        self.transport.flush();
        examined
    }

    /// Step 4 for one peer: `None` when the Ready was parked for its snapshot.
    fn collect_ready(&mut self, id: RegionId, batch: &mut LogBatch) -> Option<raft::Ready> {
        let p = self.peers.get_mut(&id)?;
        let mut rd = p.raw.ready();
        let msgs = rd.take_messages();
        self.send_messages(id, msgs);
        if !rd.snapshot().is_empty() {
            self.start_snapshot_apply(id, rd);
            return None;
        }
        self.persist_ready(id, &mut rd, batch);
        Some(rd)
    }

    /// Steps 4c and 4d.
    fn persist_ready(&mut self, id: RegionId, rd: &mut raft::Ready, batch: &mut LogBatch) {
        let committed = rd.take_committed_entries();
        self.handle_committed(id, committed);
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let entries = rd.take_entries();
        p.raw.mut_store().append(entries, batch);
        if let Some(hs) = rd.hs() {
            p.raw.mut_store().set_hard_state(hs);
        }
        for rs in rd.take_read_states() {
            p.on_read_state(&rs.request_ctx, rs.index, self.lease);
        }
        p.raw.store().persist_state(batch);
        if rd.ss().is_some() {
            self.on_role_changed(id);
        }
    }

    /// Step 4b: hands the snapshot's data to the apply thread and parks the Ready.
    fn start_snapshot_apply(&mut self, id: RegionId, rd: raft::Ready) {
        let data = SnapshotData::decode(rd.snapshot().get_data())
            .expect("snapshot data checked before stepping");
        let region = data
            .region_state
            .as_ref()
            .and_then(|s| s.region.clone())
            .expect("snapshot region checked before stepping");
        let p = self.peers.get_mut(&id).expect("peer");
        let task = ApplyTask::Snapshot {
            region_id: id,
            peer_id: p.meta.id,
            data: Box::new(data),
        };
        p.pending_snapshot = Some(PendingSnapshot {
            ready: rd,
            region,
            applied: false,
        });
        if let Err(e) = self.apply_tx.send(task) {
            panic!("apply thread is gone: {e}");
        }
    }

    /// The apply thread has written a snapshot: the parked Ready is finished in this round.
    pub(super) fn on_snapshot_applied(
        &mut self,
        id: RegionId,
        peer_id: u64,
        result: Result<(), String>,
    ) {
        let Some(p) = self.peers.get_mut(&id) else {
            return; // destroyed meanwhile
        };
        if p.meta.id != peer_id {
            return; // written for a peer this store destroyed since
        }
        let Some(pending) = p.pending_snapshot.as_mut() else {
            return;
        };
        if let Err(e) = result {
            // The engine refused a write: nothing this store holds can be trusted to move on.
            panic!("region {id}: applying snapshot failed: {e}");
        }
        pending.applied = true;
        self.active.insert(id);
    }

    /// Resumes a parked Ready whose snapshot is durable in the engine: the raft log is reset
    /// (in `batch`) to start after the snapshot, then the rest of the Ready is persisted.
    fn finish_snapshot(&mut self, id: RegionId, batch: &mut LogBatch) -> raft::Ready {
        let p = self.peers.get_mut(&id).expect("peer");
        let pending = p.pending_snapshot.take().expect("pending snapshot");
        let mut rd = pending.ready;
        p.raw
            .mut_store()
            .on_snapshot_applied(rd.snapshot(), pending.region.clone(), batch);
        if let Some(meta) = find_peer(&pending.region, self.store_id) {
            p.meta = *meta;
        }
        tracing::info!(
            region_id = id,
            index = rd.snapshot().get_metadata().index,
            "applied snapshot"
        );
        publish(&self.regions, &self.readers, p);
        self.persist_ready(id, &mut rd, batch);
        rd
    }

    /// Step 6 for one peer.
    fn advance_ready(&mut self, id: RegionId, mut rd: raft::Ready) {
        let persisted = rd.take_persisted_messages();
        self.send_messages(id, persisted);
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if !rd.snapshot().is_empty() {
            // A Ready parked for its snapshot: messages stepped while it was parked have left
            // new messages in raft-rs, which `advance_append` refuses on a follower. They, the
            // new commit index and the committed entries come out of the next Ready instead.
            let index = rd.snapshot().get_metadata().index;
            let number = rd.number();
            p.raw.advance_append_async(rd);
            p.raw.on_persist_ready(number);
            // The snapshot is applied (see `finish_snapshot`): raft-rs must know, or a campaign
            // before the next apply result reads the unapplied entries from the old applied
            // index, which the snapshot compacted away (raft-rs panics).
            p.raw.advance_apply_to(index);
            p.serve_ready_reads(&self.kv);
            self.active.insert(id);
            return;
        }
        let mut light = p.raw.advance_append(rd);
        if let Some(commit) = light.commit_index() {
            p.raw.mut_store().set_commit(commit);
            self.dirty.insert(id);
            self.active.insert(id);
        }
        let msgs = light.take_messages();
        let committed = light.take_committed_entries();
        self.send_messages(id, msgs);
        self.handle_committed(id, committed);
        if let Some(p) = self.peers.get_mut(&id) {
            p.serve_ready_reads(&self.kv);
            if p.raw.has_ready() {
                self.active.insert(id);
            }
        }
    }

    pub(super) fn send_messages(&mut self, id: RegionId, msgs: Vec<RaftMsg>) {
        if msgs.is_empty() {
            return;
        }
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let region = p.region().clone();
        // A leader that left the awake set sends only its hibernating heartbeats (see
        // `poller/hibernate.rs`); anything else it sends comes after something woke it.
        let hibernating = p.is_leader() && !self.awake.contains(&id);
        for m in msgs {
            let Some(to) = p.peer_by_id(m.to) else {
                continue;
            };
            if m.get_msg_type() == MessageType::MsgSnapshot {
                if snapshot_send_fails(self.store_id) {
                    p.raw.report_snapshot(m.to, SnapshotStatus::Failure);
                    continue;
                }
                p.snapshot_ticks.insert(m.to, 0);
            }
            let bytes = protobuf::Message::write_to_bytes(&m).expect("encode raft message");
            self.transport.send(flotillapb::RaftMessage {
                region_id: id,
                from_peer: Some(p.meta),
                to_peer: Some(to),
                region_epoch: region.region_epoch,
                message: bytes,
                start_key: region.start_key.clone(),
                end_key: region.end_key.clone(),
                hibernate: hibernating && m.get_msg_type() == MessageType::MsgHeartbeat,
                ..Default::default()
            });
        }
    }

    fn handle_committed(&mut self, id: RegionId, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let last = entries.last().map(|e| e.index).unwrap_or(0);
        let mut proposals: Vec<Proposal> = vec![];
        while p.proposals.front().is_some_and(|f| f.index <= last) {
            proposals.push(p.proposals.pop_front().expect("front"));
        }
        // A quorum holds these entries: the latest proposal of this term among them renews the
        // lease from when it was proposed.
        let term = p.raw.raft.term;
        if let Some(sent) = proposals
            .iter()
            .filter(|q| q.term == term)
            .map(|q| q.proposed_ns)
            .max()
        {
            p.renew_lease(sent, self.lease);
        }
        let task = ApplyTask::Apply {
            region_id: id,
            entries,
            proposals,
        };
        // The one place the poller may wait for another thread: the apply queue is bounded,
        // and the apply thread never waits for the poller (see the module docs).
        if let Err(e) = self.apply_tx.send(task) {
            panic!("apply thread is gone: {e}");
        }
    }

    fn on_role_changed(&mut self, id: RegionId) {
        self.wake(id);
        let tick = self.tick_count;
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.raw.raft.state != raft::StateRole::Leader {
            p.lease.revoke();
            p.fail_reads(p.not_leader());
            if p.raw.raft.leader_id != raft::INVALID_ID {
                p.transfer_target = None;
            }
        } else {
            p.leader_since = tick;
            p.leader_heard_tick = tick;
            let _ = self
                .pd_tx
                .try_send(p.heartbeat_task(tick, &self.cfg, false));
            // A new leader measures its region at once: its size feeds PD's merge checker,
            // which would take a region that nobody measured for an empty one.
            if self.cfg.split_enabled && p.splitting.is_none() && !p.is_merging() {
                p.written_since_check = 0;
                let _ = self.split_tx.try_send(SplitCheckTask {
                    region: p.region().clone(),
                });
            }
        }
        p.last_leader_id = p.raw.raft.leader_id;
        publish(&self.regions, &self.readers, p);
    }
}
