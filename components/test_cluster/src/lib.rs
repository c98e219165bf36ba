//! An in-process Flotilla cluster for tests: a real PD and N real stores (`server::Node`) in one
//! process, their raft traffic on an in-process [`Network`] whose filters drop, delay, partition
//! and isolate messages. Stores stop and restart on their own data directories. Every random
//! choice follows one seed, printed at start (`FLOTILLA_SEED` replays it).
//!
//! Key types: [`Cluster`] (start, stop and restart stores; `must_put`/`must_get` helpers that
//! retry through leader changes), [`Network`] and [`Filter`]. A cluster started with
//! [`Cluster::start_with_faults`] puts each store's raft log on a `raft_log::FaultFileSystem`:
//! [`Cluster::faults`] injects I/O errors, [`Cluster::power_loss`] drops what was not synced.
//!
//! Test-only; nothing in the product depends on it.
#![deny(missing_docs)]

mod transport;

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::CF_DEFAULT;
use proto::{metapb, pdpb};
use raft_log::{FaultInjector, PowerLossReport, RaftEngineLog, RaftLogStore};
use raftstore::{DataModify, RaftRouter, RegionError, RegionInfo, RequestHeader};
use tokio::sync::oneshot;

pub use transport::{Filter, NetTransport, Network, Verdict};

/// The seed of this run: `FLOTILLA_SEED` if set, else from the clock. Printed either way.
pub fn seed_from_env() -> u64 {
    let seed = std::env::var("FLOTILLA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("test cluster seed: {seed} (replay with FLOTILLA_SEED={seed})");
    seed
}

/// Store settings for fast tests: short ticks, frequent heartbeats, frequent log GC.
pub fn fast_config() -> server::ServerConfig {
    let mut cfg = server::ServerConfig {
        addr: "127.0.0.1:0".into(),
        status_addr: "127.0.0.1:0".into(),
        request_timeout_ms: 5_000,
        shutdown_grace_ms: 200,
        ..Default::default()
    };
    cfg.pd_worker.store_heartbeat_interval_ms = 1_000;
    let rs = &mut cfg.raftstore;
    rs.raft_tick_interval_ms = 50;
    rs.raft_election_ticks = 10;
    rs.raft_heartbeat_ticks = 2;
    rs.pd_heartbeat_tick_interval_ticks = 10;
    rs.split_check_tick_interval_ticks = 10;
    rs.raft_log_gc_tick_interval_ticks = 10;
    // Hibernated leaders heartbeat PD every second, so that PD's operators (balance, merge)
    // reach idle regions as fast as the tests expect.
    rs.hibernated_pd_heartbeat_ticks = 20;
    cfg
}

struct Slot {
    dir: tempfile::TempDir,
    node: Option<server::Node>,
    store_id: u64,
    /// The store's raft log file system, in a cluster started with faults.
    faults: Option<Arc<FaultInjector>>,
}

/// A running in-process cluster.
pub struct Cluster {
    /// The seed every random choice follows.
    pub seed: u64,
    /// The stores' network; add filters to it.
    pub net: Arc<Network>,
    /// PD's address.
    pub pd_addr: String,
    rt: tokio::runtime::Runtime,
    pd: Option<pd::PdHandle>,
    _pd_dir: tempfile::TempDir,
    slots: Vec<Slot>,
    config: server::ServerConfig,
}

impl Cluster {
    /// Starts PD and `n` stores with `config` (addresses and data dirs are filled in).
    pub fn start(n: usize, seed: u64, config: server::ServerConfig) -> Cluster {
        Cluster::start_inner(n, seed, config, false)
    }

    /// Like [`Cluster::start`], with every store's raft log on a fault-injecting file system.
    pub fn start_with_faults(n: usize, seed: u64, config: server::ServerConfig) -> Cluster {
        Cluster::start_inner(n, seed, config, true)
    }

    fn start_inner(n: usize, seed: u64, config: server::ServerConfig, faults: bool) -> Cluster {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .try_init();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let pd_dir = tempfile::tempdir().expect("tempdir");
        let pd_cfg = pd::PdConfig {
            data_dir: pd_dir.path().to_path_buf(),
            listen_addr: "127.0.0.1:0".into(),
            balance_leader_interval_ms: 200,
            ..Default::default()
        };
        let pd = rt.block_on(pd::PdServer::start(pd_cfg)).expect("start PD");
        let pd_addr = pd.addr().to_string();
        let mut cluster = Cluster {
            seed,
            net: Network::new(seed),
            pd_addr,
            rt,
            pd: Some(pd),
            _pd_dir: pd_dir,
            slots: vec![],
            config,
        };
        for _ in 0..n {
            let dir = tempfile::tempdir().expect("tempdir");
            cluster.slots.push(Slot {
                dir,
                node: None,
                store_id: 0,
                faults: faults.then(FaultInjector::new),
            });
        }
        for i in 0..n {
            cluster.start_store(i);
        }
        cluster
    }

    /// Number of store slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the cluster has no stores.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// (Re)starts store `i` on its data directory.
    pub fn start_store(&mut self, i: usize) {
        assert!(self.slots[i].node.is_none(), "store {i} is running");
        let mut cfg = self.config.clone();
        cfg.data_dir = self.slots[i].dir.path().to_path_buf();
        cfg.pd_endpoints = vec![self.pd_addr.clone()];
        let transport = Arc::new(NetTransport {
            net: self.net.clone(),
        });
        let start = match &self.slots[i].faults {
            Some(faults) => {
                faults.power_on();
                let log: Arc<dyn RaftLogStore> = Arc::new(
                    RaftEngineLog::open_with_faults(
                        cfg.data_dir.join("raft"),
                        &cfg.raft_log,
                        faults.clone(),
                    )
                    .expect("open raft log"),
                );
                self.rt
                    .block_on(server::Node::start_with_raft_log(cfg, transport, log))
            }
            None => self
                .rt
                .block_on(server::Node::start_with_transport(cfg, transport)),
        };
        let node = start.expect("start store");
        let id = node.store_id();
        self.net.register(id, node.router());
        self.slots[i].store_id = id;
        self.slots[i].node = Some(node);
    }

    /// Stops store `i`; its data stays.
    pub fn stop_store(&mut self, i: usize) {
        if let Some(faults) = &self.slots[i].faults {
            // A stopping raft log syncs its files: a held sync would hang the stop.
            faults.release_syncs();
        }
        let node = self.slots[i].node.take().expect("store running");
        self.net.unregister(node.store_id());
        self.rt.block_on(node.stop());
    }

    /// Whether store `i` is running (it may have crashed inside: a panicked raftstore thread
    /// leaves the node up until [`Cluster::stop_store`]).
    pub fn is_running(&self, i: usize) -> bool {
        self.slots[i].node.is_some()
    }

    /// The fault control of store `i`'s raft log (cluster started with faults).
    pub fn faults(&self, i: usize) -> Arc<FaultInjector> {
        self.slots[i]
            .faults
            .clone()
            .expect("cluster started with faults")
    }

    /// Cuts store `i`'s power: its raft log loses what was not synced (syncs in progress fail,
    /// so nothing waiting on them is acknowledged), and the store is stopped. The KV engine
    /// keeps its data (RocksDB is not under the fault file system). Restart it with
    /// [`Cluster::start_store`].
    pub fn power_loss(&mut self, i: usize) -> PowerLossReport {
        let report = self.faults(i).power_loss().expect("power loss");
        self.stop_store(i);
        report
    }

    /// Store id of slot `i`.
    pub fn store_id(&self, i: usize) -> u64 {
        self.slots[i].store_id
    }

    /// Slot index of a store id.
    pub fn slot_of(&self, store_id: u64) -> usize {
        self.slots
            .iter()
            .position(|s| s.store_id == store_id)
            .expect("known store")
    }

    /// Router of running store `i`.
    pub fn router(&self, i: usize) -> RaftRouter {
        self.slots[i].node.as_ref().expect("store running").router()
    }

    /// The KV engine of running store `i`, to look at what it holds locally.
    pub fn kv(&self, i: usize) -> Arc<dyn engine::KvEngine> {
        self.slots[i]
            .node
            .as_ref()
            .expect("store running")
            .kv_engine()
    }

    /// The client address of running store `i`.
    pub fn store_addr(&self, i: usize) -> std::net::SocketAddr {
        self.slots[i].node.as_ref().expect("store running").addr()
    }

    fn running(&self) -> impl Iterator<Item = (usize, &server::Node)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.node.as_ref().map(|n| (i, n)))
    }

    /// How many stores are running.
    pub fn running_count(&self) -> usize {
        self.running().count()
    }

    /// Every running store's view of every region it holds.
    pub fn region_infos(&self) -> Vec<(usize, RegionInfo)> {
        self.running()
            .flat_map(|(i, n)| n.router().region_infos().into_iter().map(move |r| (i, r)))
            .collect()
    }

    /// The request context for the client key `key` (as [`raw_key`] makes it): its region,
    /// epoch and leader as the stores see them now.
    pub fn kv_context(&self, key: &[u8]) -> proto::kvrpcpb::Context {
        let region = self
            .region_of(&codec::memcomparable::encode_bytes(key))
            .unwrap_or_default();
        let peer = self
            .region_infos()
            .into_iter()
            .find(|(_, r)| r.region.id == region.id && r.is_leader)
            .map(|(_, r)| r.peer);
        proto::kvrpcpb::Context {
            region_id: region.id,
            region_epoch: region.region_epoch,
            peer,
            ..Default::default()
        }
    }

    /// The region holding encoded `key`, as the store with the newest epoch sees it.
    pub fn region_of(&self, key: &[u8]) -> Option<metapb::Region> {
        self.region_infos()
            .into_iter()
            .map(|(_, r)| r.region)
            .filter(|r| {
                !r.peers.is_empty()
                    && key >= r.start_key.as_slice()
                    && (r.end_key.is_empty() || key < r.end_key.as_slice())
            })
            .max_by_key(|r| r.region_epoch.map(|e| (e.version, e.conf_ver)))
    }

    /// PD's view of every store, with the stats of its last heartbeat.
    pub fn pd_stores(&self) -> Vec<pd::StoreStatus> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.pd
            .as_ref()
            .and_then(|pd| pd.cluster())
            .map(|c| c.stores_status(now_ms))
            .unwrap_or_default()
    }

    /// PD's view of every region (as its leaders last reported them), in key order.
    pub fn pd_regions(&self) -> Vec<pd::RegionInfo> {
        self.pd
            .as_ref()
            .and_then(|pd| pd.cluster())
            .map(|c| c.all_regions())
            .unwrap_or_default()
    }

    /// The slot whose peer leads `region_id`, if any running store's peer leads it.
    pub fn leader_of(&self, region_id: u64) -> Option<usize> {
        self.region_infos()
            .into_iter()
            .find(|(_, r)| r.region.id == region_id && r.is_leader)
            .map(|(i, _)| i)
    }

    /// Waits up to `timeout` for a store other than slot `old` to lead `region_id` (as that
    /// store sees it); its slot.
    pub fn wait_new_leader(&self, region_id: u64, old: usize, timeout: Duration) -> Option<usize> {
        let mut new = None;
        self.wait_until(timeout, |c| {
            new = (0..c.len()).find(|&s| {
                s != old
                    && c.is_running(s)
                    && c.router(s)
                        .region_info(region_id)
                        .is_some_and(|r| r.is_leader)
            });
            new.is_some()
        });
        new
    }

    /// Asks the region's leader to remove `peer` (as PD's answer to a heartbeat would), again
    /// every 200 ms, until a leader's region no longer has it or `timeout` passes.
    pub fn remove_peer(&self, region_id: u64, peer: metapb::Peer, timeout: Duration) -> bool {
        self.wait_until(timeout, |c| {
            let leader = c
                .region_infos()
                .into_iter()
                .find(|(_, r)| r.is_leader && r.region.id == region_id);
            let Some((slot, r)) = leader else {
                return false;
            };
            if !r.region.peers.iter().any(|p| p.id == peer.id) {
                return true;
            }
            c.router(slot)
                .on_heartbeat_response(pdpb::RegionHeartbeatResponse {
                    region_id,
                    region_epoch: r.region.region_epoch,
                    change_peer: Some(pdpb::ChangePeer {
                        peer: Some(peer),
                        change_type: proto::eraftpb::ConfChangeType::RemoveNode as i32,
                    }),
                    ..Default::default()
                });
            std::thread::sleep(Duration::from_millis(200));
            false
        })
    }

    /// Asks the region's leader to hand leadership to store `slot`'s peer (as PD's answer to a
    /// heartbeat would), again every 100 ms, until that peer leads or `timeout` passes.
    pub fn transfer_leader(&self, region_id: u64, slot: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |c| {
            let Some(l) = c.leader_of(region_id) else {
                return false;
            };
            if l == slot {
                return true;
            }
            let to = c.router(slot).region_info(region_id).map(|r| r.peer);
            c.router(l)
                .on_heartbeat_response(pdpb::RegionHeartbeatResponse {
                    region_id,
                    transfer_leader: Some(pdpb::TransferLeader {
                        peer: to,
                        peers: vec![],
                    }),
                    ..Default::default()
                });
            std::thread::sleep(Duration::from_millis(100));
            false
        })
    }

    /// Polls `cond` every 50 ms until it holds or `timeout` passes.
    pub fn wait_until(&self, timeout: Duration, mut cond: impl FnMut(&Cluster) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        cond(self)
    }

    /// The request header for the region holding encoded `ekey`, as the cluster sees it now.
    fn header_for(&self, ekey: &[u8]) -> Result<RequestHeader, RegionError> {
        let region = self
            .region_of(ekey)
            .ok_or(RegionError::Other("no region".into()))?;
        Ok(RequestHeader {
            region_id: region.id,
            region_epoch: region.region_epoch,
            peer: None,
            term: None,
        })
    }

    /// Waits up to 5 s for a raftstore callback's answer (a dropped callback is an error).
    pub fn wait_answer<T>(
        &self,
        rx: oneshot::Receiver<Result<T, RegionError>>,
    ) -> Result<T, RegionError> {
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), rx).await })
            .map_err(|_| RegionError::Other("timeout".into()))?
            .map_err(|_| RegionError::Other("dropped".into()))?
    }

    /// Writes `value` at raw `key` through the region's leader on slot `slot`.
    pub fn put_on(&self, slot: usize, key: &[u8], value: &[u8]) -> Result<(), RegionError> {
        let rx = self.put_async(slot, key, value)?;
        self.wait_answer(rx)
    }

    /// Proposes `value` at raw `key` through slot `slot` without waiting for the answer
    /// ([`Cluster::wait_answer`] waits).
    pub fn put_async(
        &self,
        slot: usize,
        key: &[u8],
        value: &[u8],
    ) -> Result<oneshot::Receiver<Result<(), RegionError>>, RegionError> {
        let ekey = encode(key);
        let header = self.header_for(&ekey)?;
        let (tx, rx) = oneshot::channel();
        let modify = DataModify::Put {
            cf: CF_DEFAULT,
            key: ekey,
            value: value.to_vec(),
        };
        self.router(slot).propose_write(
            header,
            vec![modify],
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        Ok(rx)
    }

    /// Reads raw `key` through the region's leader on slot `slot`.
    pub fn get_on(&self, slot: usize, key: &[u8]) -> Result<Option<Vec<u8>>, RegionError> {
        let ekey = encode(key);
        let header = self.header_for(&ekey)?;
        let (tx, rx) = oneshot::channel();
        self.router(slot).read(
            header,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let resp = self.wait_answer(rx)?;
        resp.snapshot
            .get_cf(CF_DEFAULT, &codec::keys::data_key(&ekey))
            .map_err(|e| RegionError::Other(e.to_string()))
    }

    /// Writes through whichever store leads the key's region, retrying through elections,
    /// splits and busy stores for up to 20 s. Panics if the write never succeeds.
    pub fn must_put(&self, key: &[u8], value: &[u8]) {
        self.retry(key, |c, slot| c.put_on(slot, key, value))
            .unwrap_or_else(|e| panic!("must_put {key:?}: {e}"))
    }

    /// Reads through the leader, retrying like [`Cluster::must_put`].
    pub fn must_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.retry(key, |c, slot| c.get_on(slot, key))
            .unwrap_or_else(|e| panic!("must_get {key:?}: {e}"))
    }

    fn retry<T>(
        &self,
        key: &[u8],
        mut f: impl FnMut(&Cluster, usize) -> Result<T, RegionError>,
    ) -> Result<T, RegionError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = RegionError::Other("no attempt".into());
        while Instant::now() < deadline {
            // The believed leader first, then every other running store.
            let mut slots: Vec<usize> = self.running().map(|(i, _)| i).collect();
            if let Some(leader) = self
                .region_of(&encode(key))
                .and_then(|r| self.leader_of(r.id))
            {
                slots.sort_by_key(|i| *i != leader);
            }
            for i in slots {
                match f(self, i) {
                    Ok(v) => return Ok(v),
                    Err(e) => last = e,
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last)
    }

    /// Waits until every region has `n` voters and a leader.
    pub fn wait_replicated(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |c| {
            let infos = c.region_infos();
            let leaders: Vec<_> = infos.iter().filter(|(_, r)| r.is_leader).collect();
            !leaders.is_empty()
                && leaders.iter().all(|(_, r)| {
                    r.region
                        .peers
                        .iter()
                        .filter(|p| p.role == metapb::PeerRole::Voter as i32)
                        .count()
                        == n
                })
        })
    }

    /// Isolates store slot `i` from every other store.
    pub fn isolate(&self, i: usize) {
        self.net.add_filter(Filter::Isolate(self.store_id(i)));
    }

    /// Removes every filter.
    pub fn heal(&self) {
        self.net.clear_filters();
    }

    /// Runs a future on the cluster's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].node.is_some() {
                self.stop_store(i);
            }
        }
        if let Some(pd) = self.pd.take() {
            self.rt.block_on(pd.shutdown());
        }
        self.net.shutdown();
    }
}

/// `key` as a raw client of the default keyspace sends it (API v2's raw prefix): what
/// [`encode`] encodes.
pub fn raw_key(key: &[u8]) -> Vec<u8> {
    [b"r\0\0\0".as_slice(), key].concat()
}

/// The encoded form of a raw key of the default keyspace (what region boundaries compare with).
pub fn encode(key: &[u8]) -> Vec<u8> {
    codec::memcomparable::encode_bytes(&raw_key(key))
}

impl Cluster {
    /// Adds a store slot with a fresh data directory and starts it (a scale-out); returns
    /// its slot. PD registers it on start and balance-region moves replicas onto it.
    pub fn add_store(&mut self) -> usize {
        self.slots.push(Slot {
            dir: tempfile::tempdir().expect("tempdir"),
            node: None,
            store_id: 0,
            faults: None,
        });
        let i = self.slots.len() - 1;
        self.start_store(i);
        i
    }
}
