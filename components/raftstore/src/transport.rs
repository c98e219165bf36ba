//! How raft messages leave a store. The server implements it over gRPC; tests implement it over
//! channels with filters.

use proto::flotillapb;

/// Sends raft messages to other stores. Must not block: queue, batch, or drop (raft
/// retransmits what is lost).
pub trait Transport: Send + Sync + 'static {
    /// Sends `msg` to the store of `msg.to_peer`.
    fn send(&self, msg: flotillapb::RaftMessage);
    /// Pushes out whatever `send` has queued. Called once per poller round.
    fn flush(&self) {}
}
