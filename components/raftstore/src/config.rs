//! Limits and intervals of a store's raft machinery, with documented defaults.

use serde::{Deserialize, Serialize};

/// Every limit and interval of the raftstore. Checked once at start-up by [`StoreConfig::validate`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// One raft tick. Elections and heartbeats are counted in ticks.
    pub raft_tick_interval_ms: u64,
    /// Ticks without a leader's message before a follower campaigns.
    pub raft_election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub raft_heartbeat_ticks: usize,
    /// Whether a leader with a valid lease serves reads from its own engine snapshot, without
    /// a raft round (see `lease.rs`). Off: every read takes a ReadIndex round.
    pub local_reads_enabled: bool,
    /// The bound assumed on how far two stores' clocks may drift apart over one lease: the
    /// lease is `(raft_election_ticks - 1) * raft_tick_interval_ms` less this.
    pub raft_lease_max_drift_ms: u64,
    /// Largest append message, in bytes of entries.
    pub raft_max_size_per_msg_bytes: u64,
    /// Append messages in flight per follower.
    pub raft_max_inflight_msgs: usize,
    /// Largest entry a proposal may produce; bigger proposals get `RaftEntryTooLarge`.
    pub raft_entry_max_bytes: u64,
    /// Applied entries kept in the log before a compaction is proposed.
    pub raft_log_gc_threshold_entries: u64,
    /// Ticks between raft log GC checks.
    pub raft_log_gc_tick_interval_ticks: u64,
    /// A region whose data passes this many bytes is split.
    pub region_max_size_bytes: u64,
    /// Target size of each part when a region is split by size.
    pub region_split_size_bytes: u64,
    /// A region holding more than this many keys is split.
    pub region_max_keys: u64,
    /// Target key count of each part when a region is split by keys.
    pub region_split_keys: u64,
    /// Ticks between split checks of a leader's regions that were written to.
    pub split_check_tick_interval_ticks: u64,
    /// Ticks between periodic region heartbeats to PD.
    pub pd_heartbeat_tick_interval_ticks: u64,
    /// Capacity of the raft poller's mailbox; a full mailbox is `ServerIsBusy`.
    pub mailbox_capacity_max: usize,
    /// Capacity of the apply worker's queue.
    pub apply_queue_capacity_max: usize,
    /// Messages handled by the raft poller per loop round before it writes.
    pub raft_poll_batch_max: usize,
    /// Proposals in flight per region; more is `ServerIsBusy`.
    pub region_pending_proposals_max: usize,
    /// Pending read-index requests per region; more is `ServerIsBusy`.
    pub region_pending_reads_max: usize,
    /// Largest snapshot a peer will generate, in bytes of data; larger regions wait for a split.
    pub snapshot_max_bytes: u64,
    /// Whether a region may split at all (a benchmark keeps one region with `false`).
    pub split_enabled: bool,
    /// Ticks after which a split that has not come back (ids from PD, or the split applied) is
    /// given up, so that a later check may try again.
    pub split_timeout_ticks: u64,
    /// Ticks a follower may sit in snapshot state before the leader reports the snapshot
    /// failed and sends a new one.
    pub snapshot_send_timeout_ticks: u64,
    /// Ticks a peer may go without hearing from a leader before it asks PD whether it is still
    /// a member of its region (and destroys itself if PD's newer region lacks it). Also the
    /// interval between two such questions.
    pub stale_peer_check_ticks: u64,
    /// Whether idle regions hibernate: a leader with nothing in flight and every follower in
    /// step stops ticking and tells its followers, which stop too; any message, request or
    /// operator wakes them (see "Hibernating regions" in `docs/architecture.md`). Default on.
    /// Off: every peer ticks every tick.
    pub hibernate_regions: bool,
    /// Consecutive idle ticks after which a leader hibernates.
    pub hibernate_idle_ticks: u64,
    /// Ticks between two store keepalives to every store this one knows (hibernated regions
    /// send no raft heartbeats, so stores vouch for each other instead), and between two checks
    /// for silent stores.
    pub store_keepalive_ticks: u64,
    /// A store not heard from (raft message or keepalive) for this many ticks is taken for
    /// gone: every hibernated peer of a region with a peer on it wakes, so that a dead leader
    /// is replaced by an election and a dead follower is reported down.
    pub hibernate_wake_silent_ticks: u64,
    /// Ticks between two region heartbeats to PD from a hibernated leader (an awake one sends
    /// one every `pd_heartbeat_tick_interval_ticks`; the longer of the two applies).
    pub hibernated_pd_heartbeat_ticks: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            raft_tick_interval_ms: 100,
            raft_election_ticks: 10,
            raft_heartbeat_ticks: 2,
            local_reads_enabled: true,
            raft_lease_max_drift_ms: 100,
            raft_max_size_per_msg_bytes: 1 << 20,
            raft_max_inflight_msgs: 256,
            raft_entry_max_bytes: 8 << 20,
            raft_log_gc_threshold_entries: 1024,
            raft_log_gc_tick_interval_ticks: 30,
            region_max_size_bytes: 64 << 20,
            region_split_size_bytes: 48 << 20,
            region_max_keys: 640_000,
            region_split_keys: 480_000,
            split_check_tick_interval_ticks: 20,
            pd_heartbeat_tick_interval_ticks: 50,
            mailbox_capacity_max: 65_536,
            apply_queue_capacity_max: 4_096,
            raft_poll_batch_max: 4_096,
            region_pending_proposals_max: 4_096,
            region_pending_reads_max: 4_096,
            snapshot_max_bytes: 512 << 20,
            split_enabled: true,
            split_timeout_ticks: 100,
            snapshot_send_timeout_ticks: 300,
            stale_peer_check_ticks: 50,
            hibernate_regions: true,
            hibernate_idle_ticks: 20,
            store_keepalive_ticks: 10,
            hibernate_wake_silent_ticks: 30,
            hibernated_pd_heartbeat_ticks: 600,
        }
    }
}

impl StoreConfig {
    /// The leader lease (`None`: local reads are off or the timing leaves no lease).
    pub fn lease(&self) -> Option<std::time::Duration> {
        if !self.local_reads_enabled {
            return None;
        }
        crate::lease::lease_duration(
            self.raft_tick_interval_ms,
            self.raft_election_ticks,
            self.raft_lease_max_drift_ms,
        )
    }

    /// Ticks between two PD heartbeats of a hibernated leader.
    pub fn hibernated_heartbeat_ticks(&self) -> u64 {
        self.hibernated_pd_heartbeat_ticks
            .max(self.pd_heartbeat_tick_interval_ticks)
    }

    /// Rejects settings that cannot work together.
    pub fn validate(&self) -> Result<(), String> {
        if self.raft_tick_interval_ms == 0 {
            return Err("raft_tick_interval_ms must be > 0".into());
        }
        if self.raft_heartbeat_ticks == 0 || self.raft_election_ticks <= self.raft_heartbeat_ticks {
            return Err("raft_election_ticks must exceed raft_heartbeat_ticks > 0".into());
        }
        if self.local_reads_enabled && self.lease().is_none() {
            return Err(format!(
                "raft_lease_max_drift_ms {} leaves no leader lease with {} election ticks of {} ms; \
                 lower it, or set local_reads_enabled = false",
                self.raft_lease_max_drift_ms, self.raft_election_ticks, self.raft_tick_interval_ms
            ));
        }
        if self.region_split_size_bytes == 0
            || self.region_split_size_bytes > self.region_max_size_bytes
        {
            return Err("region_split_size_bytes must be in 1..=region_max_size_bytes".into());
        }
        if self.region_split_keys == 0 || self.region_split_keys > self.region_max_keys {
            return Err("region_split_keys must be in 1..=region_max_keys".into());
        }
        if self.mailbox_capacity_max == 0 || self.apply_queue_capacity_max == 0 {
            return Err("queue capacities must be > 0".into());
        }
        if self.raft_log_gc_threshold_entries == 0 {
            return Err("raft_log_gc_threshold_entries must be > 0".into());
        }
        if self.split_timeout_ticks == 0 || self.snapshot_send_timeout_ticks == 0 {
            return Err("split and snapshot timeouts must be > 0 ticks".into());
        }
        // A follower hears a heartbeat every few ticks; asking PD sooner than an election
        // timeout would ask for every peer that merely waits for an election.
        if self.stale_peer_check_ticks <= self.raft_election_ticks as u64 {
            return Err("stale_peer_check_ticks must exceed raft_election_ticks".into());
        }
        self.validate_hibernation()
    }

    fn validate_hibernation(&self) -> Result<(), String> {
        // A leader must have heard from every follower within an election timeout of
        // hibernating, which takes a few heartbeats; fewer idle ticks could hibernate a region
        // whose followers' answers to the last write are still on their way.
        if self.hibernate_idle_ticks < self.raft_election_ticks as u64 {
            return Err("hibernate_idle_ticks must be >= raft_election_ticks".into());
        }
        if self.store_keepalive_ticks == 0 {
            return Err("store_keepalive_ticks must be > 0".into());
        }
        // Two keepalives may be lost (or late) before a live store is taken for silent.
        if self.hibernate_wake_silent_ticks <= 2 * self.store_keepalive_ticks {
            return Err("hibernate_wake_silent_ticks must exceed 2 * store_keepalive_ticks".into());
        }
        if self.hibernated_pd_heartbeat_ticks == 0 {
            return Err("hibernated_pd_heartbeat_ticks must be > 0".into());
        }
        Ok(())
    }
}
