//! The way into a running raftstore: a bounded mailbox to the raft poller and a shared map of
//! region states that gRPC threads read without waiting for the poller.

use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use dashmap::DashMap;
use proto::{flotillapb, metapb, pdpb};

use crate::msg::{
    DataModify, ReadCallback, RegionError, RegionId, RegionInfo, RequestHeader, WriteCallback,
};
use crate::poller::StoreMsg;

/// Cheap to clone; every method returns at once.
#[derive(Clone)]
pub struct RaftRouter {
    pub(crate) tx: Sender<StoreMsg>,
    pub(crate) regions: Arc<DashMap<RegionId, RegionInfo>>,
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

    /// Asks the region's leader for a linearizable read view; `cb` runs with it.
    pub fn read(&self, header: RequestHeader, cb: ReadCallback) {
        if let Err((StoreMsg::Read { cb, .. }, e)) = self.send(StoreMsg::Read { header, cb }) {
            cb(Err(e));
        }
    }

    /// Asks the region's leader for a view to compute a write from, checked by term instead of
    /// a ReadIndex round (see `Peer::write_view`); the write must carry the view's term.
    pub fn write_view(&self, header: RequestHeader, cb: ReadCallback) {
        if let Err((StoreMsg::WriteView { cb, .. }, e)) =
            self.send(StoreMsg::WriteView { header, cb })
        {
            cb(Err(e));
        }
    }

    /// Delivers PD's answer to a region heartbeat (a membership change, a leader transfer or a
    /// split request).
    pub fn on_heartbeat_response(&self, resp: pdpb::RegionHeartbeatResponse) {
        let _ = self.send(StoreMsg::HeartbeatResponse(Box::new(resp)));
    }

    /// Delivers the ids PD allocated for a split asked for with `PdTask::AskBatchSplit`.
    pub fn on_split_ids(
        &self,
        region_id: RegionId,
        epoch: metapb::RegionEpoch,
        split_keys: Vec<Vec<u8>>,
        ids: Vec<pdpb::SplitId>,
    ) {
        let _ = self.send(StoreMsg::SplitIds {
            region_id,
            epoch,
            split_keys,
            ids,
        });
    }

    /// Tells the leader whether a snapshot it sent reached the target peer's store.
    pub fn report_snapshot_status(&self, region_id: RegionId, to_peer_id: u64, delivered: bool) {
        let _ = self.send(StoreMsg::SnapshotStatus {
            region_id,
            to_peer_id,
            delivered,
        });
    }

    /// Asks the region's leader to split at `split_keys` (encoded, ascending), as an operator
    /// would. Errors come back through the usual PD round trip, not here.
    pub fn split_region(&self, region_id: RegionId, split_keys: Vec<Vec<u8>>) {
        let _ = self.send(StoreMsg::SplitRequest {
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
}
