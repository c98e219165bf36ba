//! Leader leases and the local reader: a leader whose lease is valid answers reads from its own
//! engine snapshot on the caller's thread, without a raft round and without the poller.
//!
//! Why a lease is safe (the argument in full is in `docs/architecture.md`, "Leader leases"):
//! a follower that took an append or heartbeat from the leader at time `r` refuses votes
//! (check-quorum's in-lease rule) until its election timer has run `election_ticks` ticks, and
//! ticks are never closer than the tick interval, so until `r + (election_ticks - 1) * tick`.
//! A leader that sent something at time `t` and then heard a quorum acknowledge it (an entry of
//! its term committed, or a ReadIndex confirmed) knows that no other leader can be elected
//! before `t + (election_ticks - 1) * tick` by its own clock, less the drift bound between
//! clocks. That is the lease. Exceptions, each handled where it happens:
//! - a leader transfer makes the transferee campaign at once, ignoring the in-lease rule: the
//!   lease is revoked before the transfer starts and not renewed while it lasts;
//! - a restarted store's peers have forgotten whom they heard from: for one lease after start
//!   the store drops every vote request it receives;
//! - a conf change, split or merge changes which peers form a quorum or which range the region
//!   holds: the lease is revoked when the command is proposed and not renewed until it is
//!   applied;
//! - a new leader may not have applied what its predecessor acknowledged: it reads locally
//!   only once it has applied an entry of its own term.
//!
//! A hibernated leader (`poller/hibernate.rs`) renews nothing, so its lease lapses; a read then
//! goes to the poller, wakes the region and renews the lease by a ReadIndex round. Its
//! followers stop ticking, which only lengthens their refusal of votes.
//!
//! The clock is monotonic (`Instant`) and may carry an offset set by fault injection (the
//! chaos clock-skew nemesis), to show what happens to leases when a clock jumps.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use engine::KvEngine;
use proto::metapb;

use crate::msg::{ReadResponse, RegionId, RequestHeader};

/// The process's lease clock: nanoseconds since an arbitrary start, monotonic, plus the offset
/// fault injection set (zero in production).
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    let real = start.elapsed().as_nanos() as i64;
    // Starts a little above zero so that a lease of 0 means "none".
    (real + CLOCK_OFFSET_NS.load(Ordering::Relaxed) + 1_000_000_000).max(1) as u64
}

static CLOCK_OFFSET_NS: AtomicI64 = AtomicI64::new(0);

/// Shifts this process's lease clock by `offset_ns` from real monotonic time (fault injection:
/// a clock that jumps). Returns the previous offset.
pub fn set_clock_offset_ns(offset_ns: i64) -> i64 {
    CLOCK_OFFSET_NS.swap(offset_ns, Ordering::Relaxed)
}

/// The lease clock's current offset (see [`set_clock_offset_ns`]).
pub fn clock_offset_ns() -> i64 {
    CLOCK_OFFSET_NS.load(Ordering::Relaxed)
}

/// A leader's lease: the lease clock's instant until which no other leader can exist.
/// Shared between the peer (which renews and revokes it on the poller) and its read delegate.
#[derive(Debug, Default)]
pub struct Lease {
    until_ns: AtomicU64,
}

impl Lease {
    /// Extends the lease to `until_ns` if that is later than what it holds.
    pub fn extend_to(&self, until_ns: u64) {
        self.until_ns.fetch_max(until_ns, Ordering::AcqRel);
    }

    /// Ends the lease now.
    pub fn revoke(&self) {
        self.until_ns.store(0, Ordering::Release);
    }

    /// Whether the lease holds at lease-clock instant `now_ns`.
    pub fn valid_at(&self, now_ns: u64) -> bool {
        now_ns < self.until_ns.load(Ordering::Acquire)
    }
}

/// The length of a lease, from the raft timing: `(election_ticks - 1)` ticks (the least time
/// a follower refuses votes after hearing from the leader) less the drift bound. `None` when
/// that leaves nothing (leases off).
pub fn lease_duration(tick_ms: u64, election_ticks: usize, max_drift_ms: u64) -> Option<Duration> {
    let safe = tick_ms.saturating_mul(election_ticks.saturating_sub(1) as u64);
    let ms = safe.checked_sub(max_drift_ms)?;
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// What a gRPC thread needs to serve a leader's read: published by the poller while the peer
/// leads, has applied an entry of its term, and is not merging.
#[derive(Clone, Debug)]
pub struct ReadDelegate {
    /// The region as the leader knows it.
    pub region: metapb::Region,
    /// The leader's peer (this store's).
    pub peer_id: u64,
    /// The leader's term.
    pub term: u64,
    /// The leader's lease.
    pub lease: Arc<Lease>,
}

impl ReadDelegate {
    /// Whether `header` addresses this leader as it is (peer, term, epoch version); anything
    /// else goes to the poller, which answers the precise error.
    fn matches(&self, header: &RequestHeader) -> bool {
        if header
            .peer
            .is_some_and(|p| p.id != 0 && p.id != self.peer_id)
            || header.term.is_some_and(|t| t != self.term)
        {
            return false;
        }
        header
            .region_epoch
            .as_ref()
            .is_none_or(|req| req.version == self.region.region_epoch.unwrap_or_default().version)
    }
}

/// The read delegates of a store's leaders, by region.
pub type ReadDelegates = Arc<DashMap<RegionId, ReadDelegate>>;

/// Serves `header`'s read locally if the region's leader here holds a valid lease; `None`
/// sends the read the poller's way (which answers every error and renews the lease).
///
/// The engine snapshot is taken first and the lease checked after: the read then happens at an
/// instant inside the lease, even if the thread stalls between the two.
pub fn local_read(
    delegates: &DashMap<RegionId, ReadDelegate>,
    kv: &Arc<dyn KvEngine>,
    header: &RequestHeader,
) -> Option<ReadResponse> {
    let d = delegates.get(&header.region_id)?.clone();
    if !d.lease.valid_at(now_ns()) || !d.matches(header) {
        return None;
    }
    let snapshot = kv.snapshot();
    if !d.lease.valid_at(now_ns()) {
        return None;
    }
    Some(ReadResponse {
        snapshot,
        region: d.region,
        term: d.term,
    })
}

/// A view to compute a write from (see `Peer::write_view`), served on the caller's thread
/// when this store's leader has applied an entry of its term; no lease is needed, as the write
/// is proposed with the view's term and refused if the term has moved on.
pub fn local_write_view(
    delegates: &DashMap<RegionId, ReadDelegate>,
    kv: &Arc<dyn KvEngine>,
    header: &RequestHeader,
) -> Option<ReadResponse> {
    let d = delegates.get(&header.region_id)?.clone();
    if !d.matches(header) {
        return None;
    }
    Some(ReadResponse {
        snapshot: kv.snapshot(),
        region: d.region,
        term: d.term,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_length_follows_the_raft_timing() {
        assert_eq!(
            lease_duration(100, 10, 100),
            Some(Duration::from_millis(800))
        );
        assert_eq!(lease_duration(50, 10, 50), Some(Duration::from_millis(400)));
        // A drift bound as long as the vote-refusal window leaves no lease.
        assert_eq!(lease_duration(100, 10, 900), None);
        assert_eq!(lease_duration(100, 1, 0), None);
    }

    #[test]
    fn a_lease_extends_forward_only_and_revokes() {
        let l = Lease::default();
        assert!(!l.valid_at(now_ns()));
        let now = now_ns();
        l.extend_to(now + 1_000_000_000);
        l.extend_to(now + 1); // an older renewal does not shorten it
        assert!(l.valid_at(now + 500_000_000));
        assert!(!l.valid_at(now + 1_000_000_000));
        l.revoke();
        assert!(!l.valid_at(now));
    }
}
