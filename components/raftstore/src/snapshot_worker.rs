//! The snapshot worker: builds the snapshots that leaders send, on a thread of its own, so that
//! scanning a region (up to `snapshot_max_bytes` of it) never stalls the poller, and with it
//! every other region of the store.
//!
//! raft-rs asks a leader's storage for a snapshot when a follower is behind the start of the
//! log. The storage hands the job to this worker and answers "temporarily unavailable", which
//! raft-rs takes as "ask again later". When the snapshot is built the worker tells the poller
//! ([`ControlMsg::SnapshotBuilt`]), which has raft-rs send to that follower again; this time
//! the storage hands over the built snapshot. A peer has at most one snapshot in the making.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{unbounded, Receiver, Sender};
use engine::KvEngine;
use raft::eraftpb::Snapshot;

use crate::msg::{ControlMsg, PeerId, RegionId};

/// One snapshot to build.
pub(crate) struct SnapshotJob {
    pub kv: Arc<dyn KvEngine>,
    pub store_id: u64,
    pub region_id: RegionId,
    /// The follower that needs it.
    pub to: PeerId,
    pub request_index: u64,
    pub max_bytes: u64,
}

/// The handle peers' storages build snapshots through. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SnapshotWorker {
    tx: Sender<(SnapshotJob, Sender<raft::Result<Snapshot>>)>,
}

impl SnapshotWorker {
    /// Starts the worker's thread; it tells the poller through `control` when a snapshot is
    /// built, and ends when every handle is dropped.
    pub fn start(control: Sender<ControlMsg>) -> (SnapshotWorker, JoinHandle<()>) {
        let (tx, rx) = unbounded::<(SnapshotJob, Sender<raft::Result<Snapshot>>)>();
        let thread = crate::poller::spawn("snapshot-gen", move || {
            for (job, done) in rx {
                let built = crate::peer_storage::build_snapshot(
                    job.kv.as_ref(),
                    job.store_id,
                    job.region_id,
                    job.request_index,
                    job.max_bytes,
                );
                // Only a built snapshot hurries raft-rs: after a failure (a region too large, or
                // not applied far enough yet) the next build waits for raft-rs's own retry, at
                // the follower's next heartbeat answer, instead of starting again at once.
                let ok = built.is_ok();
                if let Err(e) = &built {
                    tracing::debug!(region_id = job.region_id, "snapshot not built: {e}");
                }
                let _ = done.send(built);
                if ok {
                    let _ = control.send(ControlMsg::SnapshotBuilt {
                        region_id: job.region_id,
                        to: job.to,
                    });
                }
            }
        });
        (SnapshotWorker { tx }, thread)
    }

    /// Queues `job`; its result arrives on the returned receiver.
    pub fn build(&self, job: SnapshotJob) -> Receiver<raft::Result<Snapshot>> {
        let (done, rx) = crossbeam_channel::bounded(1);
        // With the worker gone (the store is stopping) the sender is dropped: the receiver
        // reports it, and raft-rs asks again.
        let _ = self.tx.send((job, done));
        rx
    }
}
