//! PD configuration. Every limit is named, documented and checked by [`PdConfig::validate`].

use std::path::PathBuf;

use serde::Deserialize;

use crate::{PdError, Result};

/// Largest number of timestamps one TSO request may ask for (the logical part has 18 bits).
pub const TSO_COUNT_MAX: u32 = (1 << 18) - 1;

/// Configuration of the placement driver.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct PdConfig {
    /// Directory of PD's embedded RocksDB; created if missing.
    pub data_dir: PathBuf,
    /// Address the single gRPC + HTTP listener binds; port 0 picks a free port.
    pub listen_addr: String,
    /// Address advertised to clients in GetMembers; empty means the bound address.
    pub advertise_addr: String,
    /// Number of voters every region should have.
    pub max_replicas: usize,
    /// Width of the persisted TSO window: PD persists `now + window` before handing out
    /// timestamps below it.
    pub tso_save_window_ms: u64,
    /// Ids allocated (and persisted) per batch by the id allocator.
    pub id_batch: u64,
    /// A store without a heartbeat for this long is considered down: balance-leader stops
    /// sending it leaders and its peers count as down. Its replicas stay where they are, since
    /// a store restarting (an upgrade, a reboot) is back well within
    /// [`PdConfig::max_store_down_time_secs`].
    pub store_down_after_secs: u64,
    /// A store without a heartbeat for this long is given up on, as PD's
    /// `max-store-down-time` (default 30 minutes): its replicas are rebuilt on other stores
    /// ([`crate::Cluster::store_down_long`]). At least `store_down_after_secs`.
    pub max_store_down_time_secs: u64,
    /// An operator that has not finished after this long is dropped.
    pub operator_timeout_secs: u64,
    /// Balance-leader keeps each up store's leader count within this distance of the mean.
    pub leader_balance_tolerance: u64,
    /// Interval between two balance-leader runs.
    pub balance_leader_interval_ms: u64,
    /// Largest number of operators balance-leader creates per run.
    pub balance_leader_operators_max: usize,
    /// Largest number of operators in flight across the cluster.
    pub operators_max: usize,
    /// Largest `split_count` accepted by AskBatchSplit.
    pub split_count_max: u32,
    /// Largest number of regions returned by one ScanRegions (also the limit when it asks 0).
    pub scan_regions_max: usize,
    /// Capacity of each heartbeat/TSO response stream's queue.
    pub stream_queue_max: usize,
    /// The PD members when PD is replicated (see [`PdMember`]); empty runs PD alone.
    pub initial_cluster: Vec<PdMember>,
    /// This member's id in `initial_cluster` (ignored when it is empty).
    pub member_id: u64,
    /// Raft tick of the PD group's raft.
    pub raft_tick_ms: u64,
    /// Ticks without a leader before a member campaigns (at least 5). The leader's lease,
    /// which bounds when it may hand out timestamps, is this minus two ticks.
    pub raft_election_ticks: usize,
    /// The raft log is compacted when it holds more applied entries than this; a member
    /// further behind catches up from a snapshot of the state.
    pub raft_log_max_entries: u64,
    /// Interval between two balance-region runs.
    pub balance_region_interval_ms: u64,
    /// Largest number of balance-region operators running at once (each moves one replica:
    /// a snapshot to the target store).
    pub balance_region_operators_max: usize,
    /// Every region weighs at least this much in a store's region score (its approximate size
    /// is added on top), so that stores of tiny or empty regions balance by region count.
    pub region_score_floor_bytes: u64,
    /// Below this fraction of free disk a store's region score is inflated by
    /// `ratio / free_fraction`, so a filling disk stops receiving regions (0 < ratio < 1).
    pub region_score_low_space_ratio: f64,
    /// balance-region moves a region only if, after the move, the source still scores at
    /// least this fraction of the region's weight above the target (no oscillation).
    pub region_balance_tolerance_ratio: f64,
    /// Store limit: peers PD may add to one store per minute (each one a snapshot the store
    /// receives). The default, 30, moves a 3 → 5 store scale-out of ~100 regions in about
    /// two minutes while keeping snapshot traffic to one every two seconds per store.
    pub store_limit_add_peer_per_min: u64,
    /// Store limit: peers PD may remove from one store per minute.
    pub store_limit_remove_peer_per_min: u64,
    /// The merge checker joins a region only if its approximate size is below this (and
    /// its key count below `max_merge_region_keys`); as PD's `max-merge-region-size`.
    pub max_merge_region_size_bytes: u64,
    /// The merge checker joins a region only if its approximate key count is below this.
    pub max_merge_region_keys: u64,
    /// Largest number of merges running at once; 0 turns the merge checker off (merges asked
    /// over HTTP still run). As PD's `merge-schedule-limit`.
    pub merge_schedule_limit: usize,
    /// A region PD first saw at its current version (split, merged or new) less than this
    /// long ago is not merged, nor merged into; PD's `split-merge-interval`.
    pub split_merge_interval_secs: u64,
    /// The stores' `raftstore.region_max_size_bytes`, when PD is told (0: unknown). A merge
    /// must leave the joined region below it (and below `region_max_keys`), or the store
    /// would split it again; unknown, both regions must be below the merge thresholds (which
    /// then must be at most half the stores' split thresholds, or merges and splits chase
    /// each other).
    pub region_max_size_bytes: u64,
    /// The stores' `raftstore.region_max_keys`, when PD is told (0: unknown).
    pub region_max_keys: u64,
    /// Whether the hot-region scheduler runs (with balance-region, every
    /// `balance_region_interval_ms`): it moves leaders, then peers, of the regions with the most
    /// traffic off the stores with the most, by write and by read bytes per second.
    pub hot_region_schedule: bool,
    /// A region is hot in writes or reads at this many bytes per second or more (its leader's
    /// last reported interval); colder regions are never moved for their traffic. The default,
    /// 512 KiB/s, leaves ordinary test workloads alone.
    pub hot_region_byte_rate_min_per_sec: u64,
    /// The hot-region scheduler moves load from one store to another only while the first
    /// carries more than this multiple of the second's (>= 1; as PD's
    /// `src-tolerance-ratio`), and never so that the target ends hotter than the source.
    pub hot_region_tolerance_ratio: f64,
    /// Largest number of hot-region operators running at once.
    pub hot_region_operators_max: usize,
    /// Mutual TLS of the client port (gRPC and HTTP), the peer port and the connections to
    /// other members (`[security]`); unset, all plaintext.
    pub security: security::SecurityConfig,
}

/// One member of a replicated PD: its raft id, the address clients use (gRPC and HTTP), and
/// the address its peers send raft messages to.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct PdMember {
    /// Raft id, unique and non-zero.
    pub id: u64,
    /// The client address (`host:port`).
    pub client_addr: String,
    /// The peer address (`host:port`).
    pub peer_addr: String,
}

impl PdMember {
    /// Parses `ID=CLIENT_ADDR+PEER_ADDR,...`, e.g.
    /// `1=127.0.0.1:2379+127.0.0.1:2380,2=127.0.0.1:2381+127.0.0.1:2382`.
    pub fn parse_list(s: &str) -> Result<Vec<PdMember>> {
        let bad = |part: &str| {
            PdError::InvalidConfig(format!(
                "initial cluster member {part:?}: expected ID=CLIENT_ADDR+PEER_ADDR"
            ))
        };
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|part| {
                let (id, addrs) = part.trim().split_once('=').ok_or_else(|| bad(part))?;
                let (client, peer) = addrs.split_once('+').ok_or_else(|| bad(part))?;
                let id = id.parse::<u64>().map_err(|_| bad(part))?;
                Ok(PdMember {
                    id,
                    client_addr: client.to_owned(),
                    peer_addr: peer.to_owned(),
                })
            })
            .collect()
    }

    /// The member list in the form [`PdMember::parse_list`] reads.
    pub fn format_list(members: &[PdMember]) -> String {
        members
            .iter()
            .map(|m| format!("{}={}+{}", m.id, m.client_addr, m.peer_addr))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Default for PdConfig {
    fn default() -> Self {
        PdConfig {
            data_dir: PathBuf::from("./data/pd"),
            listen_addr: "127.0.0.1:2379".to_owned(),
            advertise_addr: String::new(),
            max_replicas: 3,
            tso_save_window_ms: 3000,
            id_batch: 1000,
            store_down_after_secs: 30,
            max_store_down_time_secs: 30 * 60,
            operator_timeout_secs: 60,
            leader_balance_tolerance: 1,
            balance_leader_interval_ms: 1000,
            balance_leader_operators_max: 4,
            operators_max: 64,
            split_count_max: 256,
            scan_regions_max: 10240,
            stream_queue_max: 1024,
            initial_cluster: Vec::new(),
            member_id: 0,
            raft_tick_ms: 100,
            raft_election_ticks: 10,
            raft_log_max_entries: 10_000,
            balance_region_interval_ms: 1000,
            balance_region_operators_max: 4,
            region_score_floor_bytes: 1 << 20,
            region_score_low_space_ratio: 0.2,
            region_balance_tolerance_ratio: 0.2,
            store_limit_add_peer_per_min: 30,
            store_limit_remove_peer_per_min: 30,
            max_merge_region_size_bytes: 20 << 20,
            max_merge_region_keys: 200_000,
            merge_schedule_limit: 8,
            split_merge_interval_secs: 60,
            region_max_size_bytes: 0,
            region_max_keys: 0,
            hot_region_schedule: true,
            hot_region_byte_rate_min_per_sec: 512 << 10,
            hot_region_tolerance_ratio: 1.25,
            hot_region_operators_max: 2,
            security: security::SecurityConfig::default(),
        }
    }
}

impl PdConfig {
    /// Checks every limit; called at start-up.
    pub fn validate(&self) -> Result<()> {
        let checks: [(bool, &str); 10] = [
            (self.max_replicas >= 1, "max_replicas must be >= 1"),
            (
                self.tso_save_window_ms >= 1,
                "tso_save_window_ms must be >= 1",
            ),
            (self.id_batch >= 1, "id_batch must be >= 1"),
            (
                self.store_down_after_secs >= 1,
                "store_down_after_secs must be >= 1",
            ),
            (
                self.max_store_down_time_secs >= self.store_down_after_secs,
                "max_store_down_time_secs must be >= store_down_after_secs",
            ),
            (
                self.operator_timeout_secs >= 1,
                "operator_timeout_secs must be >= 1",
            ),
            (
                self.balance_leader_interval_ms >= 1,
                "balance_leader_interval_ms must be >= 1",
            ),
            (self.operators_max >= 1, "operators_max must be >= 1"),
            (self.split_count_max >= 1, "split_count_max must be >= 1"),
            (
                self.scan_regions_max >= 1 && self.stream_queue_max >= 1,
                "scan_regions_max and stream_queue_max must be >= 1",
            ),
        ];
        if let Some((_, msg)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(PdError::InvalidConfig((*msg).to_owned()));
        }
        self.validate_scheduling()?;
        self.security
            .validate()
            .map_err(|e| PdError::InvalidConfig(e.to_string()))?;
        self.validate_members()
    }

    /// Checks the limits of balance-region and the store limits.
    fn validate_scheduling(&self) -> Result<()> {
        let checks: [(bool, &str); 7] = [
            (
                self.hot_region_tolerance_ratio >= 1.0
                    && self.hot_region_tolerance_ratio.is_finite(),
                "hot_region_tolerance_ratio must be >= 1",
            ),
            (
                self.hot_region_byte_rate_min_per_sec >= 1 && self.hot_region_operators_max >= 1,
                "hot_region_byte_rate_min_per_sec and hot_region_operators_max must be >= 1",
            ),
            (
                self.balance_region_interval_ms >= 1,
                "balance_region_interval_ms must be >= 1",
            ),
            (
                self.region_score_floor_bytes >= 1,
                "region_score_floor_bytes must be >= 1",
            ),
            (
                self.region_score_low_space_ratio > 0.0 && self.region_score_low_space_ratio < 1.0,
                "region_score_low_space_ratio must be in (0, 1)",
            ),
            (
                self.region_balance_tolerance_ratio >= 0.0
                    && self.region_balance_tolerance_ratio.is_finite(),
                "region_balance_tolerance_ratio must be >= 0",
            ),
            (
                self.store_limit_add_peer_per_min >= 1 && self.store_limit_remove_peer_per_min >= 1,
                "store_limit_add_peer_per_min and store_limit_remove_peer_per_min must be >= 1",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err(PdError::InvalidConfig((*msg).to_owned())),
            None => Ok(()),
        }
    }

    /// Whether PD runs as one member of a replicated group.
    pub fn is_replicated(&self) -> bool {
        !self.initial_cluster.is_empty()
    }

    /// This member's entry in `initial_cluster`.
    pub fn this_member(&self) -> Option<&PdMember> {
        self.initial_cluster.iter().find(|m| m.id == self.member_id)
    }

    fn validate_members(&self) -> Result<()> {
        if !self.is_replicated() {
            return Ok(());
        }
        let bad = |msg: String| Err(PdError::InvalidConfig(msg));
        let mut ids: Vec<u64> = self.initial_cluster.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.initial_cluster.len() || ids.contains(&0) {
            return bad("initial cluster ids must be unique and non-zero".into());
        }
        if self.this_member().is_none() {
            return bad(format!(
                "member id {} is not in the initial cluster",
                self.member_id
            ));
        }
        if self.raft_tick_ms == 0 || self.raft_election_ticks < 5 {
            return bad("raft_tick_ms must be >= 1 and raft_election_ticks >= 5".into());
        }
        if self.raft_log_max_entries < 10 {
            return bad("raft_log_max_entries must be >= 10".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_list_round_trips_and_rejects_garbage() {
        let text = "1=127.0.0.1:1+127.0.0.1:2,2=127.0.0.1:3+127.0.0.1:4";
        let members = PdMember::parse_list(text).unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[1].peer_addr, "127.0.0.1:4");
        assert_eq!(PdMember::format_list(&members), text);
        for bad in ["1=127.0.0.1:1", "x=a+b", "1:a+b"] {
            assert!(PdMember::parse_list(bad).is_err(), "{bad}");
        }
        let mut cfg = PdConfig {
            initial_cluster: members,
            member_id: 3,
            ..Default::default()
        };
        assert!(cfg.validate().is_err(), "member 3 is not in the list");
        cfg.member_id = 2;
        cfg.validate().unwrap();
        cfg.initial_cluster[1].id = 1;
        assert!(cfg.validate().is_err(), "duplicate ids");
    }

    #[test]
    fn scheduling_limits_are_checked() {
        PdConfig::default().validate().unwrap();
        let bad = [
            PdConfig {
                store_limit_add_peer_per_min: 0,
                ..Default::default()
            },
            PdConfig {
                region_score_low_space_ratio: 1.0,
                ..Default::default()
            },
            PdConfig {
                region_balance_tolerance_ratio: -0.1,
                ..Default::default()
            },
            PdConfig {
                balance_region_interval_ms: 0,
                ..Default::default()
            },
            PdConfig {
                hot_region_tolerance_ratio: 0.9,
                ..Default::default()
            },
            PdConfig {
                hot_region_operators_max: 0,
                ..Default::default()
            },
        ];
        for cfg in bad {
            assert!(matches!(cfg.validate(), Err(PdError::InvalidConfig(_))));
        }
    }
}
