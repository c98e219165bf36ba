//! The store-to-store raft transport over gRPC, sending side.
//!
//! One tokio task per target store owns a bounded queue (full: the message is dropped; raft
//! retransmits) and a long-lived `Raft` client stream on which it sends `BatchRaftMessage`s.
//! When the stream breaks, the task forgets the store's address and reconnects after a
//! backoff. Snapshots, and any message too large for a batch, go on a separate `Snapshot`
//! stream in chunks, and the raftstore learns whether they were delivered.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use futures::future::BoxFuture;
use prost::Message as _;
use proto::flotillapb::raft_transport_client::RaftTransportClient;
use proto::flotillapb::{BatchRaftMessage, RaftMessage, SnapshotChunk};
use raftstore::{RaftRouter, Transport};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::config::TransportConfig;
use crate::fault::RaftPartition;
use crate::metrics::raft_event;
use crate::ServerError;

/// Finds the raft address of a store.
pub trait StoreResolver: Send + Sync + 'static {
    /// The `host:port` that store `store_id` receives raft messages on.
    fn resolve(&self, store_id: u64) -> BoxFuture<'static, Result<String, ServerError>>;
    /// Forgets a cached address (the store could not be reached there).
    fn invalidate(&self, _store_id: u64) {}
}

/// Whether a raft-rs message (encoded by its protobuf codec) is a `MsgSnapshot`. rust-protobuf
/// writes fields in number order and omits defaults, so a snapshot starts with field 1
/// (`msg_type`, tag `0x08`) set to `MsgSnapshot` (7).
pub fn is_snapshot_message(raft_message: &[u8]) -> bool {
    raft_message.starts_with(&[0x08, 0x07])
}

/// [`Transport`] over gRPC. Cheap to clone.
#[derive(Clone)]
pub struct GrpcTransport {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: TransportConfig,
    message_max_bytes: usize,
    resolver: Arc<dyn StoreResolver>,
    router: OnceLock<RaftRouter>,
    queues: DashMap<u64, mpsc::Sender<RaftMessage>>,
    runtime: tokio::runtime::Handle,
    snapshot_permits: Arc<Semaphore>,
    closed: std::sync::atomic::AtomicBool,
    partition: Arc<RaftPartition>,
    security: security::SecurityManager,
}

impl GrpcTransport {
    /// A transport whose tasks run on `runtime`. Call [`GrpcTransport::set_router`] once the
    /// raftstore is started so that snapshot outcomes can be reported.
    pub fn new(
        cfg: TransportConfig,
        message_max_bytes: usize,
        resolver: Arc<dyn StoreResolver>,
        runtime: tokio::runtime::Handle,
        partition: Arc<RaftPartition>,
        security: security::SecurityManager,
    ) -> Self {
        let snapshot_permits = Arc::new(Semaphore::new(cfg.snapshot_send_concurrency_max));
        GrpcTransport {
            inner: Arc::new(Inner {
                cfg,
                message_max_bytes,
                resolver,
                router: OnceLock::new(),
                queues: DashMap::new(),
                runtime,
                snapshot_permits,
                closed: Default::default(),
                partition,
                security,
            }),
        }
    }

    /// Where snapshot delivery outcomes go.
    pub fn set_router(&self, router: RaftRouter) {
        let _ = self.inner.router.set(router);
    }

    /// Stops every per-store task; later messages are dropped.
    pub fn close(&self) {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.queues.clear();
    }
}

impl Transport for GrpcTransport {
    fn send(&self, msg: RaftMessage) {
        if self.inner.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let store_id = msg.to_peer.as_ref().map_or(0, |p| p.store_id);
        if self.inner.partition.blocks(store_id) {
            raft_event("dropped_partition", 1);
            self.inner.report_if_snapshot(&msg, false);
            return;
        }
        let queue = self
            .inner
            .queues
            .entry(store_id)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(self.inner.cfg.queue_max);
                self.inner
                    .runtime
                    .spawn(run_store_worker(self.inner.clone(), store_id, rx));
                tx
            })
            .clone();
        if let Err(e) = queue.try_send(msg) {
            let msg = match e {
                mpsc::error::TrySendError::Full(m) => {
                    raft_event("dropped_full", 1);
                    m
                }
                mpsc::error::TrySendError::Closed(m) => {
                    self.inner.queues.remove(&store_id);
                    m
                }
            };
            self.inner.report_if_snapshot(&msg, false);
        }
    }
}

impl Inner {
    fn report_if_snapshot(&self, msg: &RaftMessage, delivered: bool) {
        if !is_snapshot_message(&msg.message) {
            return;
        }
        raft_event(
            if delivered {
                "snapshot_sent"
            } else {
                "snapshot_failed"
            },
            1,
        );
        if delivered {
            raft_event("snapshot_bytes_sent", msg.message.len() as u64);
        }
        if let Some(router) = self.router.get() {
            let to_peer = msg.to_peer.as_ref().map_or(0, |p| p.id);
            router.report_snapshot_status(msg.region_id, to_peer, delivered);
        }
    }

    async fn connect(&self, store_id: u64) -> Result<RaftTransportClient<Channel>, ServerError> {
        let addr = self.resolver.resolve(store_id).await?;
        let timeout = Duration::from_millis(self.cfg.connect_timeout_ms);
        let endpoint = self
            .security
            .endpoint(&addr)
            .map_err(|e| ServerError::Config(format!("bad address of store {store_id}: {e}")))?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        let channel = self.security.channel(endpoint).await?;
        Ok(RaftTransportClient::new(channel)
            .max_decoding_message_size(self.message_max_bytes)
            .max_encoding_message_size(self.message_max_bytes))
    }

    fn needs_snapshot_stream(&self, msg: &RaftMessage) -> bool {
        is_snapshot_message(&msg.message) || msg.encoded_len() > self.cfg.snapshot_threshold_bytes
    }
}

/// The task of one target store: connect, stream batches until the stream breaks, back off,
/// reconnect. Ends when the transport drops the queue.
async fn run_store_worker(inner: Arc<Inner>, store_id: u64, mut rx: mpsc::Receiver<RaftMessage>) {
    let backoff = Duration::from_millis(inner.cfg.reconnect_backoff_ms);
    while let Some(first) = rx.recv().await {
        match inner.connect(store_id).await {
            Ok(client) => {
                let open = stream_batches(&inner, client, &mut rx, first).await;
                if !open {
                    return;
                }
                tracing::info!(store_id, "raft stream to store broke; reconnecting");
            }
            Err(e) => {
                tracing::warn!(store_id, error = %e, "cannot reach store; dropping its queued raft messages");
                let mut dropped = vec![first];
                while let Ok(m) = rx.try_recv() {
                    dropped.push(m);
                }
                raft_event("dropped_unreachable", dropped.len() as u64);
                dropped
                    .iter()
                    .for_each(|m| inner.report_if_snapshot(m, false));
            }
        }
        inner.resolver.invalidate(store_id);
        tokio::time::sleep(backoff).await;
    }
}

/// Sends batches on one `Raft` stream. Returns `false` when the queue is closed (shutdown),
/// `true` when the stream broke.
async fn stream_batches(
    inner: &Arc<Inner>,
    client: RaftTransportClient<Channel>,
    rx: &mut mpsc::Receiver<RaftMessage>,
    first: RaftMessage,
) -> bool {
    let (tx, stream_rx) = mpsc::channel::<BatchRaftMessage>(8);
    let mut call_client = client.clone();
    let call = tokio::spawn(async move { call_client.raft(ReceiverStream::new(stream_rx)).await });
    let mut next = Some(first);
    let open = loop {
        let msg = match next.take() {
            Some(m) => m,
            None => match rx.recv().await {
                Some(m) => m,
                None => break false,
            },
        };
        let mut batch = Vec::new();
        let mut pending = Some(msg);
        while let Some(m) = pending.take() {
            if inner.needs_snapshot_stream(&m) {
                tokio::spawn(send_snapshot(inner.clone(), client.clone(), m));
            } else {
                batch.push(m);
            }
            if batch.len() < inner.cfg.batch_msgs_max {
                pending = rx.try_recv().ok();
            }
        }
        let n = batch.len() as u64;
        if n > 0 && tx.send(BatchRaftMessage { msgs: batch }).await.is_err() {
            raft_event("dropped_unreachable", n);
            break true;
        }
        raft_event("sent", n);
        if call.is_finished() {
            break true;
        }
    };
    drop(tx);
    if let Ok(Err(status)) = call.await {
        tracing::debug!(%status, "raft stream ended");
    }
    open
}

/// Sends one large message as chunks of its encoded `BatchRaftMessage` and reports whether it
/// arrived.
async fn send_snapshot(
    inner: Arc<Inner>,
    mut client: RaftTransportClient<Channel>,
    msg: RaftMessage,
) {
    let Ok(_permit) = inner.snapshot_permits.clone().acquire_owned().await else {
        return;
    };
    let data = BatchRaftMessage {
        msgs: vec![msg.clone()],
    }
    .encode_to_vec();
    let chunks = snapshot_chunks(&data, inner.cfg.snapshot_chunk_bytes);
    let result = client.snapshot(tokio_stream::iter(chunks)).await;
    if let Err(status) = &result {
        tracing::warn!(region_id = msg.region_id, %status, "sending snapshot failed");
    }
    inner.report_if_snapshot(&msg, result.is_ok());
}

/// Cuts `data` into chunks of at most `chunk_bytes`; the first carries the total length.
pub fn snapshot_chunks(data: &[u8], chunk_bytes: usize) -> Vec<SnapshotChunk> {
    assert!(chunk_bytes > 0, "snapshot chunk size must be positive");
    let total_bytes = data.len() as u64;
    if data.is_empty() {
        return vec![SnapshotChunk {
            total_bytes,
            data: vec![],
        }];
    }
    data.chunks(chunk_bytes)
        .enumerate()
        .map(|(i, c)| SnapshotChunk {
            total_bytes: if i == 0 { total_bytes } else { 0 },
            data: c.to_vec(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use protobuf::Message as _;
    use raft::eraftpb::{Message, MessageType};

    use super::*;

    #[test]
    fn recognizes_snapshot_messages() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.to = 2;
        m.mut_snapshot().set_data(vec![1, 2, 3].into());
        assert!(is_snapshot_message(&m.write_to_bytes().unwrap()));
        m.set_msg_type(MessageType::MsgAppend);
        assert!(!is_snapshot_message(&m.write_to_bytes().unwrap()));
    }

    #[test]
    fn chunks_carry_total_first() {
        let data: Vec<u8> = (0..10).collect();
        let chunks = snapshot_chunks(&data, 4);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].total_bytes, 10);
        assert!(chunks[1..].iter().all(|c| c.total_bytes == 0));
        assert_eq!(
            chunks
                .iter()
                .flat_map(|c| c.data.clone())
                .collect::<Vec<_>>(),
            data
        );
    }
}
