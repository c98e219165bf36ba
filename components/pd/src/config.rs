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
    /// A store without a heartbeat for this long is considered down.
    pub store_down_after_secs: u64,
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
            operator_timeout_secs: 60,
            leader_balance_tolerance: 1,
            balance_leader_interval_ms: 1000,
            balance_leader_operators_max: 4,
            operators_max: 64,
            split_count_max: 256,
            scan_regions_max: 10240,
            stream_queue_max: 1024,
        }
    }
}

impl PdConfig {
    /// Checks every limit; called at start-up.
    pub fn validate(&self) -> Result<()> {
        let checks: [(bool, &str); 9] = [
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
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err(PdError::InvalidConfig((*msg).to_owned())),
            None => Ok(()),
        }
    }
}
