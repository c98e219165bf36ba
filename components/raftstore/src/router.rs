//! The way into a running raftstore: a bounded mailbox to the raft poller for what may be
//! refused under load (client requests, raft messages from other stores), an unbounded control
//! channel for what must never be lost (PD's answers, snapshot status, operator requests), and a
//! shared map of region states that gRPC threads read without waiting for the poller.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use dashmap::DashMap;
use engine::KvEngine;
use proto::{flotillapb, metapb, pdpb};

use crate::lease::{self, ReadDelegates};
use crate::msg::{
    ControlMsg, DataModify, PeerId, PollerCounters, PollerStats, ReadCallback, RegionError,
    RegionId, RegionInfo, RequestHeader, StoreMsg, WriteCallback,
};

/// Cheap to clone; every method returns at once (none waits for the poller).
#[derive(Clone)]
pub struct RaftRouter {
    pub(crate) tx: Sender<StoreMsg>,
    pub(crate) control: Sender<ControlMsg>,
    pub(crate) regions: Arc<DashMap<RegionId, RegionInfo>>,
    /// Leaders' read delegates, for reads served on the caller's thread (see `lease.rs`).
    pub(crate) readers: ReadDelegates,
    pub(crate) kv: Arc<dyn KvEngine>,
    pub(crate) stats: Arc<PollerCounters>,
    pub(crate) store_id: u64,
}

impl RaftRouter {
    /// This store's id.
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    #[allow(clippy::result_large_err)] // the message is handed back to answer its callback
    fn send(&self, msg: StoreMsg) -> Result<(), (StoreMsg, RegionError)> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(m)) => Err((
                m,
                RegionError::ServerIsBusy("raftstore mailbox is full".into()),
            )),
            Err(TrySendError::Disconnected(m)) => {
                Err((m, RegionError::Other("raftstore is stopped".into())))
            }
        }
    }

    /// Hands a raft message from another store to its peer. Dropped when the mailbox is full:
    /// raft retransmits.
    pub fn send_raft_message(&self, msg: flotillapb::RaftMessage) -> Result<(), RegionError> {
        self.send(StoreMsg::Raft(Box::new(msg))).map_err(|(_, e)| e)
    }

    /// Proposes `modifies` to the region's raft group; `cb` runs once they are applied.
    pub fn propose_write(
        &self,
        header: RequestHeader,
        modifies: Vec<DataModify>,
        cb: WriteCallback,
    ) {
        if let Err((StoreMsg::Write { cb, .. }, e)) = self.send(StoreMsg::Write {
            header,
            modifies,
            cb,
        }) {
            cb(Err(e));
        }
    }

    /// Asks the region's leader for a linearizable read view; `cb` runs with it. Served at
    /// once from the engine when this store's leader holds a valid lease, else through the
    /// poller (a ReadIndex round).
    pub fn read(&self, header: RequestHeader, cb: ReadCallback) {
        if let Some(view) = lease::local_read(&self.readers, &self.kv, &header) {
            self.stats.local_reads.fetch_add(1, Ordering::Relaxed);
            return cb(Ok(view));
        }
        if let Err((StoreMsg::Read { cb, .. }, e)) = self.send(StoreMsg::Read { header, cb }) {
            cb(Err(e));
        }
    }

    /// Asks the region's leader for a view to compute a write from, checked by term instead of
    /// a ReadIndex round (see `Peer::write_view`); the write must carry the view's term.
    pub fn write_view(&self, header: RequestHeader, cb: ReadCallback) {
        // The write carries the view's term, so a view from a delegate that is already out of
        // date only costs a refused proposal (no lease needed).
        if let Some(view) = lease::local_write_view(&self.readers, &self.kv, &header) {
            return cb(Ok(view));
        }
        if let Err((StoreMsg::WriteView { cb, .. }, e)) =
            self.send(StoreMsg::WriteView { header, cb })
        {
            cb(Err(e));
        }
    }

    /// Puts `msg` on the control channel. It only fails once the poller has stopped, when
    /// there is nobody left to tell.
    fn send_control(&self, msg: ControlMsg) {
        let _ = self.control.send(msg);
    }

    /// Delivers PD's answer to a region heartbeat (a membership change, a leader transfer or a
    /// split request).
    pub fn on_heartbeat_response(&self, resp: pdpb::RegionHeartbeatResponse) {
        self.send_control(ControlMsg::HeartbeatResponse(Box::new(resp)));
    }

    /// Delivers PD's region for a peer that asked with `PdTask::CheckStalePeer` (`None`: PD does
    /// not know the region). The peer destroys itself if PD's region is newer and lacks it.
    pub fn on_stale_peer_check(
        &self,
        region_id: RegionId,
        peer_id: PeerId,
        pd_region: Option<metapb::Region>,
    ) {
        self.send_control(ControlMsg::StalePeerCheck {
            region_id,
            peer_id,
            pd_region,
        });
    }

    /// Delivers the ids PD allocated for a split asked for with `PdTask::AskBatchSplit`.
    pub fn on_split_ids(
        &self,
        region_id: RegionId,
        epoch: metapb::RegionEpoch,
        split_keys: Vec<Vec<u8>>,
        ids: Vec<pdpb::SplitId>,
    ) {
        self.send_control(ControlMsg::SplitIds {
            region_id,
            epoch,
            split_keys,
            ids,
        });
    }

    /// Tells the leader whether a snapshot it sent reached the target peer's store.
    pub fn report_snapshot_status(&self, region_id: RegionId, to_peer_id: u64, delivered: bool) {
        self.send_control(ControlMsg::SnapshotStatus {
            region_id,
            to_peer_id,
            delivered,
        });
    }

    /// Asks the region's leader to split at `split_keys` (encoded, ascending), as an operator
    /// would. Errors come back through the usual PD round trip, not here.
    pub fn split_region(&self, region_id: RegionId, split_keys: Vec<Vec<u8>>) {
        self.send_control(ControlMsg::SplitRequest {
            region_id,
            split_keys,
        });
    }

    /// The regions this store holds, as of the poller's last update.
    pub fn region_infos(&self) -> Vec<RegionInfo> {
        self.regions.iter().map(|r| r.value().clone()).collect()
    }

    /// One region as of the poller's last update.
    pub fn region_info(&self, region_id: RegionId) -> Option<RegionInfo> {
        self.regions.get(&region_id).map(|r| r.value().clone())
    }

    /// The poller's work counters so far.
    pub fn poller_stats(&self) -> PollerStats {
        self.stats.stats()
    }
}
