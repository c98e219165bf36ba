//! The store-to-store raft transport, receiving side: every message of a `Raft` stream goes
//! to the raftstore's router; a `Snapshot` stream is reassembled (bounded) and then delivered.

use std::sync::Arc;

use prost::Message as _;
use proto::flotillapb::raft_transport_server::RaftTransport;
use proto::flotillapb::{BatchRaftMessage, Done, SnapshotChunk};
use raftstore::RaftRouter;
use tonic::{Request, Response, Status, Streaming};

use crate::fault::RaftPartition;
use crate::metrics::raft_event;

/// The `flotillapb.RaftTransport` service of one store.
#[derive(Clone)]
pub struct RaftService {
    router: RaftRouter,
    snapshot_recv_max_bytes: u64,
    partition: Arc<RaftPartition>,
}

impl RaftService {
    /// Delivers into `router`; snapshots larger than `snapshot_recv_max_bytes` are refused,
    /// messages from the stores `partition` blocks are dropped.
    pub fn new(
        router: RaftRouter,
        snapshot_recv_max_bytes: u64,
        partition: Arc<RaftPartition>,
    ) -> Self {
        RaftService {
            router,
            snapshot_recv_max_bytes,
            partition,
        }
    }

    fn deliver(&self, batch: BatchRaftMessage) {
        raft_event("received", batch.msgs.len() as u64);
        for msg in batch.msgs {
            if self
                .partition
                .blocks(msg.from_peer.as_ref().map_or(0, |p| p.store_id))
            {
                raft_event("dropped_partition", 1);
                continue;
            }
            // A full mailbox drops the message: raft retransmits.
            if let Err(e) = self.router.send_raft_message(msg) {
                raft_event("dropped_full", 1);
                tracing::debug!(error = %e, "dropping received raft message");
            }
        }
    }
}

/// Appends one chunk to a snapshot being reassembled, enforcing the announced and configured
/// sizes. The first chunk announces the total.
pub fn push_chunk(
    buf: &mut Vec<u8>,
    expected: &mut Option<u64>,
    chunk: SnapshotChunk,
    max_bytes: u64,
) -> Result<(), Status> {
    let total = *expected.get_or_insert(chunk.total_bytes);
    if total > max_bytes {
        return Err(Status::resource_exhausted(format!(
            "snapshot of {total} bytes exceeds {max_bytes}"
        )));
    }
    if buf.len() as u64 + chunk.data.len() as u64 > total {
        return Err(Status::invalid_argument(format!(
            "snapshot chunks exceed the announced {total} bytes"
        )));
    }
    if buf.capacity() == 0 {
        buf.reserve_exact(total as usize);
    }
    buf.extend_from_slice(&chunk.data);
    Ok(())
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn raft(
        &self,
        req: Request<Streaming<BatchRaftMessage>>,
    ) -> Result<Response<Done>, Status> {
        let mut stream = req.into_inner();
        while let Some(batch) = stream.message().await? {
            self.deliver(batch);
        }
        Ok(Response::new(Done {}))
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        let mut stream = req.into_inner();
        let mut buf = Vec::new();
        let mut expected = None;
        while let Some(chunk) = stream.message().await? {
            push_chunk(&mut buf, &mut expected, chunk, self.snapshot_recv_max_bytes)?;
        }
        let total = expected.unwrap_or(0);
        if buf.len() as u64 != total {
            return Err(Status::invalid_argument(format!(
                "snapshot ended at {} of {total} bytes",
                buf.len()
            )));
        }
        let batch = BatchRaftMessage::decode(buf.as_slice())
            .map_err(|e| Status::invalid_argument(format!("bad snapshot message: {e}")))?;
        raft_event("snapshot_received", 1);
        self.deliver(batch);
        Ok(Response::new(Done {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::snapshot_chunks;

    #[test]
    fn reassembles_and_bounds_snapshots() {
        let data: Vec<u8> = (0..100).collect();
        let (mut buf, mut expected) = (Vec::new(), None);
        for c in snapshot_chunks(&data, 30) {
            push_chunk(&mut buf, &mut expected, c, 1000).unwrap();
        }
        assert_eq!(buf, data);
        let (mut buf, mut expected) = (Vec::new(), None);
        let first = snapshot_chunks(&data, 30).remove(0);
        assert_eq!(
            push_chunk(&mut buf, &mut expected, first, 50)
                .unwrap_err()
                .code(),
            tonic::Code::ResourceExhausted
        );
        let (mut buf, mut expected) = (Vec::new(), Some(10));
        let chunk = SnapshotChunk {
            total_bytes: 0,
            data: vec![0; 11],
        };
        assert_eq!(
            push_chunk(&mut buf, &mut expected, chunk, 50)
                .unwrap_err()
                .code(),
            tonic::Code::InvalidArgument
        );
    }
}
