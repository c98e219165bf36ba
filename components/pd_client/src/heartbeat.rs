//! The region heartbeat stream: one background task owns the gRPC bidirectional stream and
//! re-opens it (with backoff and reconnection) whenever it breaks. Requests queued while the
//! stream is down are sent once it is back; a request in flight when it broke is lost, which
//! is fine because leaders heartbeat periodically.

use futures::StreamExt;
use proto::pdpb::{RegionHeartbeatRequest, RegionHeartbeatResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::rpc::RpcPdClient;
use crate::{RegionHeartbeatReceiver, RegionHeartbeatSender};

/// Why one stream session ended.
enum SessionEnd {
    /// The user dropped the sender or the receiver: stop for good.
    Closed,
    /// The gRPC stream broke: open a new one.
    Broken,
}

/// Spawns the task and returns the user's halves.
pub(crate) fn spawn(client: RpcPdClient) -> (RegionHeartbeatSender, RegionHeartbeatReceiver) {
    let queue_max = client.inner.cfg.heartbeat_queue_max;
    let (req_tx, mut req_rx) = mpsc::channel(queue_max);
    let (resp_tx, resp_rx) = mpsc::channel(queue_max);
    tokio::spawn(async move {
        let mut backoff = client.inner.cfg.backoff_min;
        loop {
            match session(&client, &mut req_rx, &resp_tx).await {
                SessionEnd::Closed => break,
                SessionEnd::Broken => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(client.inner.cfg.backoff_max);
                    if let Err(e) = client.reconnect().await {
                        tracing::debug!("PD reconnect for region heartbeat failed: {e}");
                    }
                }
            }
        }
    });
    (req_tx, resp_rx)
}

/// Runs one gRPC stream until it breaks or the user goes away.
async fn session(
    client: &RpcPdClient,
    req_rx: &mut mpsc::Receiver<RegionHeartbeatRequest>,
    resp_tx: &mpsc::Sender<RegionHeartbeatResponse>,
) -> SessionEnd {
    let (grpc_tx, grpc_rx) = mpsc::channel(client.inner.cfg.heartbeat_queue_max);
    let mut grpc = client.grpc();
    let opened = tokio::time::timeout(
        client.inner.cfg.rpc_timeout,
        grpc.region_heartbeat(ReceiverStream::new(grpc_rx)),
    )
    .await;
    let mut responses = match opened {
        Ok(Ok(resp)) => resp.into_inner(),
        Ok(Err(e)) => {
            tracing::debug!("region heartbeat stream failed to open: {e}");
            return SessionEnd::Broken;
        }
        Err(_) => return SessionEnd::Broken,
    };
    let header = client.header();
    loop {
        tokio::select! {
            req = req_rx.recv() => {
                let Some(mut req) = req else { return SessionEnd::Closed };
                req.header = header;
                if grpc_tx.send(req).await.is_err() {
                    return SessionEnd::Broken;
                }
            }
            resp = responses.next() => match resp {
                Some(Ok(resp)) => {
                    if resp_tx.send(resp).await.is_err() {
                        return SessionEnd::Closed;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!("region heartbeat stream broke: {e}");
                    return SessionEnd::Broken;
                }
                None => return SessionEnd::Broken,
            },
        }
    }
}
