//! Configuration of one store process, with documented defaults. Every bound is checked by
//! [`ServerConfig::validate`] at start-up.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ServerError;

/// Everything a store needs to start.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Directory of the store's data: `db/` (RocksDB) and `raft/` (raft log). Created if missing.
    pub data_dir: PathBuf,
    /// gRPC listen address (client `Tikv` service and store-to-store raft traffic). Port 0
    /// picks a free port; [`crate::Node::addr`] reports the real one.
    pub addr: String,
    /// Address published to PD for clients and other stores; empty means the bound address.
    pub advertise_addr: String,
    /// Status HTTP listen address (`/metrics`, `/status`). Port 0 picks a free port.
    pub status_addr: String,
    /// Status address published to PD; empty means the bound address.
    pub advertise_status_addr: String,
    /// PD endpoints (`host:port` or `http://host:port`).
    pub pd_endpoints: Vec<String>,
    /// Largest gRPC message this store decodes or encodes: the bound on one request's bytes
    /// (a larger one is a transport error, `ResourceExhausted`). Default 64 MiB.
    pub grpc_message_max_bytes: usize,
    /// A client request waiting longer than this (for raft or a latch) is answered with a
    /// `ServerIsBusy` region error. Default 10 s.
    pub request_timeout_ms: u64,
    /// How long [`crate::Node::stop`] waits for in-flight RPCs. Default 2 s.
    pub shutdown_grace_ms: u64,
    /// Store-to-store transport bounds.
    pub transport: TransportConfig,
    /// PD worker settings.
    pub pd_worker: PdWorkerConfig,
    /// Raft machinery of the store.
    pub raftstore: raftstore::StoreConfig,
    /// Request and response limits, latches, disk reserve.
    pub storage: storage::StorageConfig,
    /// RocksDB options.
    pub rocksdb: engine::RocksConfig,
    /// Raft log options.
    pub raft_log: raft_log::RaftLogConfig,
    /// Load-based split (`[split]`): when a region hot by requests or bytes is split.
    pub split: crate::LoadSplitConfig,
    /// Accept fault-injection requests on the status port (`POST /debug/fault/partition`),
    /// for chaos testing (`flotilla chaos`). Default false: a production store refuses them.
    pub fault_injection: bool,
    /// Mutual TLS (`[security]`: `ca-path`, `cert-path`, `key-path`, `cert-allowed-cn`) of the
    /// gRPC and status ports and of the connections to PD and other stores; unset, plaintext.
    pub security: security::SecurityConfig,
}

/// Bounds of the gRPC raft transport.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct TransportConfig {
    /// Messages queued per target store; when full, new messages are dropped (raft
    /// retransmits). Default 4 096.
    pub queue_max: usize,
    /// Messages per `BatchRaftMessage`. Default 128.
    pub batch_msgs_max: usize,
    /// Messages whose encoding exceeds this go on the snapshot stream. Default 1 MiB.
    pub snapshot_threshold_bytes: usize,
    /// Size of each snapshot chunk. Default 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// Largest snapshot this store accepts. Default 1 GiB.
    pub snapshot_recv_max_bytes: u64,
    /// Snapshots sent at once by this store. Default 4.
    pub snapshot_send_concurrency_max: usize,
    /// Wait before reconnecting to a store that failed. Default 500 ms.
    pub reconnect_backoff_ms: u64,
    /// Connection timeout to another store. Default 3 s.
    pub connect_timeout_ms: u64,
}

/// Settings of the PD worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct PdWorkerConfig {
    /// Interval between store heartbeats. Default 10 s.
    pub store_heartbeat_interval_ms: u64,
    /// How often the GC worker asks PD for the GC safe point. Default 10 s.
    pub gc_safe_point_poll_ms: u64,
    /// Capacity of the raftstore → PD worker task queue. Default 4 096.
    pub task_queue_max: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("./data/store"),
            addr: "127.0.0.1:20160".to_owned(),
            advertise_addr: String::new(),
            status_addr: "127.0.0.1:20180".to_owned(),
            advertise_status_addr: String::new(),
            pd_endpoints: vec!["127.0.0.1:2379".to_owned()],
            grpc_message_max_bytes: 64 << 20,
            request_timeout_ms: 10_000,
            shutdown_grace_ms: 2_000,
            transport: TransportConfig::default(),
            pd_worker: PdWorkerConfig::default(),
            raftstore: raftstore::StoreConfig::default(),
            storage: storage::StorageConfig::default(),
            rocksdb: engine::RocksConfig::default(),
            raft_log: raft_log::RaftLogConfig::default(),
            split: crate::LoadSplitConfig::default(),
            fault_injection: false,
            security: security::SecurityConfig::default(),
        }
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            queue_max: 4_096,
            batch_msgs_max: 128,
            snapshot_threshold_bytes: 1 << 20,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_recv_max_bytes: 1 << 30,
            snapshot_send_concurrency_max: 4,
            reconnect_backoff_ms: 500,
            connect_timeout_ms: 3_000,
        }
    }
}

impl Default for PdWorkerConfig {
    fn default() -> Self {
        PdWorkerConfig {
            store_heartbeat_interval_ms: 10_000,
            gc_safe_point_poll_ms: 10_000,
            task_queue_max: 4_096,
        }
    }
}

impl ServerConfig {
    /// Rejects settings that cannot work.
    pub fn validate(&self) -> Result<(), ServerError> {
        let t = &self.transport;
        let checks: [(bool, &str); 10] = [
            (
                !self.pd_endpoints.is_empty(),
                "pd_endpoints must not be empty",
            ),
            (
                self.grpc_message_max_bytes >= 1 << 20,
                "grpc_message_max_bytes must be >= 1 MiB",
            ),
            (
                self.storage.response_max_bytes < self.grpc_message_max_bytes,
                "storage response_max_bytes must be below grpc_message_max_bytes",
            ),
            (
                self.request_timeout_ms > 0,
                "request_timeout_ms must be > 0",
            ),
            (
                t.queue_max > 0 && t.batch_msgs_max > 0,
                "transport queue_max and batch_msgs_max must be > 0",
            ),
            (
                t.snapshot_chunk_bytes > 0,
                "transport snapshot_chunk_bytes must be > 0",
            ),
            (
                t.snapshot_chunk_bytes < self.grpc_message_max_bytes,
                "transport snapshot_chunk_bytes must be below grpc_message_max_bytes",
            ),
            (
                t.snapshot_send_concurrency_max > 0,
                "transport snapshot_send_concurrency_max must be > 0",
            ),
            (
                self.pd_worker.task_queue_max > 0,
                "pd_worker task_queue_max must be > 0",
            ),
            (
                self.pd_worker.store_heartbeat_interval_ms > 0,
                "pd_worker store_heartbeat_interval_ms must be > 0",
            ),
        ];
        if let Some((_, msg)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(ServerError::Config((*msg).to_owned()));
        }
        self.raftstore.validate().map_err(ServerError::Config)?;
        self.storage.validate().map_err(ServerError::Config)?;
        self.split.check().map_err(ServerError::Config)?;
        self.raft_log
            .validate()
            .map_err(|e| ServerError::Config(e.to_string()))?;
        self.security
            .validate()
            .map_err(|e| ServerError::Config(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ServerConfig::default().validate().unwrap();
        let bad = ServerConfig {
            pd_endpoints: vec![],
            ..Default::default()
        };
        assert!(matches!(bad.validate(), Err(ServerError::Config(_))));
    }
}
