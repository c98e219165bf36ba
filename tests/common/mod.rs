//! A cluster of real `flotilla` processes on 127.0.0.1 for end-to-end tests: PD and three
//! stores, each its own process, stopped (by the pids this harness started) when dropped.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pd_client::PdClient;
use proto::tikvpb::tikv_client::TikvClient;
use proto::{kvrpcpb, metapb};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// A free port on 127.0.0.1, as the OS hands it out, never one handed out before in this
/// process (the port is only probed: a process started a moment earlier may not have bound its
/// port yet, and the OS would hand it out again).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

pub struct Proc {
    pub args: Vec<String>,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(&self.args)
            .env("RUST_LOG", "info,raft=warn")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn flotilla");
        self.child = Some(child);
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct ProcCluster {
    pub dir: tempfile::TempDir,
    pub pd_addr: String,
    pub pd: Proc,
    pub stores: Vec<Proc>,
}

/// Store settings for end-to-end tests: small regions so that a few thousand keys span many.
pub const SMALL_REGIONS: &str = r#"
[raftstore]
region_max_keys = 150
region_split_keys = 100
region_max_size_bytes = 1048576
region_split_size_bytes = 786432
split_check_tick_interval_ticks = 5
pd_heartbeat_tick_interval_ticks = 10
"#;

impl ProcCluster {
    pub fn start(stores: usize, store_config: &str) -> ProcCluster {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("store.toml");
        std::fs::write(&cfg_path, store_config).unwrap();
        let pd_addr = format!("127.0.0.1:{}", free_port());
        let mut pd = Proc {
            args: vec![
                "pd".into(),
                "--data-dir".into(),
                p(&dir.path().join("pd")),
                "--addr".into(),
                pd_addr.clone(),
            ],
            child: None,
            log: dir.path().join("pd.log"),
        };
        pd.spawn();
        let mut procs = vec![];
        for i in 0..stores {
            let mut s = Proc {
                args: vec![
                    "server".into(),
                    "--data-dir".into(),
                    p(&dir.path().join(format!("store{i}"))),
                    "--addr".into(),
                    format!("127.0.0.1:{}", free_port()),
                    "--status-addr".into(),
                    format!("127.0.0.1:{}", free_port()),
                    "--pd".into(),
                    pd_addr.clone(),
                    "--config".into(),
                    p(&cfg_path),
                ],
                child: None,
                log: dir.path().join(format!("store{i}.log")),
            };
            s.spawn();
            procs.push(s);
        }
        let mut c = ProcCluster {
            dir,
            pd_addr,
            pd,
            stores: procs,
        };
        c.wait_serving(Duration::from_secs(60));
        c
    }

    /// Waits until every store logs that it serves. A store that exits first (another
    /// process took one of its ports between `free_port` and its bind, say) is shown and
    /// started again on new ports, up to three times.
    fn wait_serving(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut restarts = vec![0; self.stores.len()];
        loop {
            let mut serving = 0;
            for (i, s) in self.stores.iter_mut().enumerate() {
                let log = std::fs::read_to_string(&s.log).unwrap_or_default();
                if log.contains("store is serving") {
                    serving += 1;
                    continue;
                }
                let Some(status) = s.child.as_mut().and_then(|c| c.try_wait().unwrap()) else {
                    continue;
                };
                restarts[i] += 1;
                eprintln!("store{i} exited during start-up ({status}):\n{log}");
                assert!(
                    restarts[i] <= 3,
                    "store{i} failed to start {} times",
                    restarts[i]
                );
                for flag in ["--addr", "--status-addr"] {
                    let at = s.args.iter().position(|a| a == flag).unwrap() + 1;
                    s.args[at] = format!("127.0.0.1:{}", free_port());
                }
                s.child = None;
                s.spawn();
            }
            if serving == self.stores.len() {
                return;
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("the stores did not all start within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Restarts store `i` on its data directory and address.
    pub fn restart_store(&mut self, i: usize) {
        self.stores[i].kill9();
        self.stores[i].spawn();
    }

    pub fn kill_store(&mut self, i: usize) {
        self.stores[i].kill9();
    }

    pub fn start_store(&mut self, i: usize) {
        assert!(self.stores[i].child.is_none());
        self.stores[i].spawn();
    }

    /// PD's view of the regions.
    pub async fn regions(&self) -> Option<Value> {
        http_get_json(&self.pd_addr, "/pd/api/v1/regions").await
    }

    /// Waits until PD reports at least `min_regions` regions, each with `voters` voters and a
    /// leader.
    pub async fn wait_regions(&self, min_regions: usize, voters: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(v) = self.regions().await {
                let regions = v["regions"].as_array().cloned().unwrap_or_default();
                let ok = regions.len() >= min_regions
                    && regions.iter().all(|r| {
                        let n = r["peers"]
                            .as_array()
                            .map(|ps| {
                                ps.iter()
                                    .filter(|p| p["role"] == "Voter" || p["role"] == 0)
                                    .count()
                            })
                            .unwrap_or(0);
                        n == voters && !r["leader"].is_null()
                    });
                if ok {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        false
    }

    /// Waits until every running store accepts connections on its gRPC port.
    pub async fn wait_stores_listening(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        for s in self.stores.iter().filter(|s| s.child.is_some()) {
            let addr = s.args[s.args.iter().position(|a| a == "--addr").unwrap() + 1].clone();
            while tokio::net::TcpStream::connect(&addr).await.is_err() {
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        true
    }

    /// Store `i`'s data directory.
    pub fn store_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("store{i}"))
    }

    /// Store `i`'s status HTTP address.
    pub fn store_status_addr(&self, i: usize) -> String {
        let args = &self.stores[i].args;
        args[args.iter().position(|a| a == "--status-addr").unwrap() + 1].clone()
    }

    /// The official `RawClient` on this cluster (default keyspace, 20 s requests), retrying
    /// the connection for 30 s while PD starts.
    pub async fn raw_client(&self) -> tikv_client::RawClient {
        let config = tikv_client::Config::default()
            .with_default_keyspace()
            .with_timeout(Duration::from_secs(20));
        for _ in 0..60 {
            let pd = vec![self.pd_addr.clone()];
            if let Ok(cl) = tikv_client::RawClient::new_with_config(pd, config.clone()).await {
                return cl;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.dump_logs();
        panic!("client never connected");
    }

    pub fn dump_logs(&self) {
        for f in ["pd.log", "store0.log", "store1.log", "store2.log"] {
            if let Ok(s) = std::fs::read_to_string(self.dir.path().join(f)) {
                // A panic's or an error's message comes before its backtrace, which fills
                // the tail.
                if let Some(at) = s.find("panicked at").or_else(|| s.find("Error: ")) {
                    let start = s[..at].rfind('\n').map_or(0, |i| i + 1);
                    eprintln!("==== {f} (the failure)");
                    for l in s[start..].lines().take(6) {
                        eprintln!("{l}");
                    }
                }
                let tail: Vec<&str> = s.lines().rev().take(40).collect();
                eprintln!("==== {f} (last lines)");
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for s in self.stores.iter_mut() {
            s.kill9();
        }
        self.pd.kill9();
    }
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

pub async fn http_get_json(addr: &str, path: &str) -> Option<Value> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    match http_request(addr, &req).await? {
        (200, body) if !body.is_null() => Some(body),
        _ => None,
    }
}

/// POSTs `body` as JSON; the status code and the JSON answer (Null if it is not JSON).
pub async fn http_post_json(addr: &str, path: &str, body: &Value) -> Option<(u16, Value)> {
    let body = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_request(addr, &req).await
}

/// GETs `path`: the status code and the body as text (e.g. `/metrics`).
pub async fn http_get_text(addr: &str, path: &str) -> Option<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http_request_text(addr, &req).await
}

async fn http_request(addr: &str, req: &str) -> Option<(u16, Value)> {
    let (code, body) = http_request_text(addr, req).await?;
    Some((code, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

async fn http_request_text(addr: &str, req: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_string()
    };
    Some((code, body))
}

/// A transactional key as the official client stores it in the default keyspace.
pub fn txn_key(key: impl AsRef<[u8]>) -> Vec<u8> {
    [b"x\0\0\0".as_slice(), key.as_ref()].concat()
}

/// Where requests for one key go: the leader's store and a context naming its region.
pub struct Target {
    pub region: metapb::Region,
    pub leader: metapb::Peer,
    pub addr: String,
    pub ctx: kvrpcpb::Context,
    pub kv: TikvClient<Channel>,
}

/// Sends `req` to the leader of its primary's region, again while a region error (an election,
/// a split) refuses it, as a client would before it dies with its locks left behind; panics on a
/// key error.
pub async fn prewrite_retrying(
    pd: &pd_client::RpcPdClient,
    mut req: kvrpcpb::PrewriteRequest,
) -> kvrpcpb::PrewriteResponse {
    // Just after an election PD may name a peer that is not (yet) the leader.
    for _ in 0..50 {
        let Target { mut kv, ctx, .. } = target(pd, &req.primary_lock).await;
        req.context = Some(ctx);
        let resp = kv.kv_prewrite(req.clone()).await.unwrap().into_inner();
        if resp.region_error.is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert!(resp.errors.is_empty(), "{:?}", resp.errors);
        return resp;
    }
    panic!("the prewrite met region errors 50 times");
}

/// Asks PD (again while a split or an election leaves it unknown) for the leader of the region
/// holding `key` (a full key, as stored).
pub async fn target(pd: &pd_client::RpcPdClient, key: &[u8]) -> Target {
    for _ in 0..100 {
        let found = pd
            .get_region(codec::memcomparable::encode_bytes(key))
            .await
            .ok()
            .flatten();
        if let Some(r) = found {
            if let Some(leader) = r.leader {
                let addr = pd.get_store(leader.store_id).await.unwrap().address;
                let kv = TikvClient::connect(format!("http://{addr}")).await.unwrap();
                let ctx = kvrpcpb::Context {
                    region_id: r.region.id,
                    region_epoch: r.region.region_epoch,
                    peer: Some(leader),
                    ..Default::default()
                };
                return Target {
                    region: r.region,
                    leader,
                    addr,
                    ctx,
                    kv,
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no leader for {key:?}");
}
