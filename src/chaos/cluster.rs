//! The cluster a campaign runs against: a PD group of M members and N stores, each its own
//! `flotilla` process on 127.0.0.1 with OS-chosen ports, data and logs under the run's
//! directory. The nemesis
//! drives it through the methods here: kill -9 and restart, SIGSTOP/SIGCONT, and a raft
//! partition set through each store's fault-injection endpoint.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::ctl::{http_delete_json, http_get_json, http_post_json};
use crate::playground::{free_port, path_arg, stop_all, Proc};

/// Store settings of a campaign: small regions (a split every few dozen keys), quick split
/// checks and heartbeats, and the fault-injection endpoint on.
pub const CHAOS_STORE_CONFIG: &str = r#"# Written by `flotilla chaos`.
fault_injection = true

[raftstore]
region_max_keys = 40
region_split_keys = 30
region_max_size_bytes = 1048576
region_split_size_bytes = 786432
split_check_tick_interval_ticks = 5
pd_heartbeat_tick_interval_ticks = 10
"#;

/// A process of the cluster a fault can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// PD member `i` (0-based; raft id `i + 1`).
    Pd(usize),
    /// Store process `i` (0-based, in start order).
    Store(usize),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Pd(i) => write!(f, "pd{i}"),
            Target::Store(i) => write!(f, "store{i}"),
        }
    }
}

/// The running cluster. Dropping it kills every process it started (by pid).
pub struct ChaosCluster {
    exe: PathBuf,
    /// The run's directory (stores added later live here too).
    dir: PathBuf,
    /// The PD members' client addresses, comma separated (as clients and `ctl` take them).
    pub pd_addr: String,
    /// Number of PD members.
    pd_members: usize,
    /// `procs[i]` is PD member `i` for `i < pd_members`, then the stores in order.
    procs: Vec<Proc>,
    status_addrs: Vec<String>,
    /// Store ids, by store process, learned from each store's `/status`.
    store_ids: Vec<Option<u64>>,
    /// Processes stopped with SIGSTOP (they answer nothing until continued).
    paused: Vec<Target>,
}

/// How `flotilla pd` and `flotilla server` take the TLS files.
const SERVER_TLS_FLAGS: [&str; 3] = ["--ca-path", "--cert-path", "--key-path"];

impl ChaosCluster {
    /// Starts a PD group of `pd_members` members (one runs PD alone) and `stores` stores
    /// under `dir`.
    pub fn start(dir: &Path, pd_members: usize, stores: usize) -> Result<ChaosCluster> {
        Self::start_with_config(dir, pd_members, stores, CHAOS_STORE_CONFIG)
    }

    /// [`Self::start`] with `store_config` (TOML) as every store's settings.
    pub fn start_with_config(
        dir: &Path,
        pd_members: usize,
        stores: usize,
        store_config: &str,
    ) -> Result<ChaosCluster> {
        let exe = std::env::current_exe()?;
        std::fs::create_dir_all(dir)?;
        let cfg = dir.join("store.toml");
        std::fs::write(&cfg, store_config)?;
        let mut members = Vec::new();
        for id in 1..=pd_members as u64 {
            members.push(pd::PdMember {
                id,
                client_addr: format!("127.0.0.1:{}", free_port(0)?),
                peer_addr: format!("127.0.0.1:{}", free_port(0)?),
            });
        }
        let pd_addr = members
            .iter()
            .map(|m| m.client_addr.clone())
            .collect::<Vec<_>>()
            .join(",");
        let list = pd::PdMember::format_list(&members);
        let procs: Vec<Proc> = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut args = vec![
                    "pd".into(),
                    "--data-dir".into(),
                    path_arg(&dir.join(format!("pd{i}"))),
                    "--addr".into(),
                    m.client_addr.clone(),
                ];
                if let Some(t) = crate::ctl::client_tls() {
                    args.extend(t.args(SERVER_TLS_FLAGS));
                }
                if pd_members > 1 {
                    args.extend([
                        "--initial-cluster".into(),
                        list.clone(),
                        "--member-id".into(),
                        m.id.to_string(),
                    ]);
                }
                Proc {
                    name: format!("pd{i}"),
                    args,
                    child: None,
                    log: dir.join(format!("pd{i}.log")),
                }
            })
            .collect();
        let mut c = ChaosCluster {
            exe,
            dir: dir.to_path_buf(),
            pd_addr,
            pd_members,
            procs,
            status_addrs: Vec::new(),
            store_ids: Vec::new(),
            paused: Vec::new(),
        };
        for _ in 0..stores {
            c.push_store()?;
        }
        for i in 0..c.procs.len() {
            c.spawn(i)?;
        }
        Ok(c)
    }

    /// Adds store process `i` (the next index) to the list, not started.
    fn push_store(&mut self) -> Result<usize> {
        let i = self.stores();
        let status = format!("127.0.0.1:{}", free_port(0)?);
        self.status_addrs.push(status.clone());
        self.store_ids.push(None);
        let mut args: Vec<String> = vec![
            "server".into(),
            "--data-dir".into(),
            path_arg(&self.dir.join(format!("store{i}"))),
            "--addr".into(),
            format!("127.0.0.1:{}", free_port(0)?),
            "--status-addr".into(),
            status,
            "--pd".into(),
            self.pd_addr.clone(),
            "--config".into(),
            path_arg(&self.dir.join("store.toml")),
        ];
        if let Some(t) = crate::ctl::client_tls() {
            args.extend(t.args(SERVER_TLS_FLAGS));
        }
        self.procs.push(Proc {
            name: format!("store{i}"),
            args,
            child: None,
            log: self.dir.join(format!("store{i}.log")),
        });
        Ok(i)
    }

    /// Starts a new, empty store (a machine joining the cluster); its index.
    pub fn add_store(&mut self) -> Result<usize> {
        let i = self.push_store()?;
        self.spawn(self.pd_members + i)?;
        Ok(i)
    }

    /// Asks PD to decommission the store with id `store_id` (`DELETE /pd/api/v1/store/{id}`):
    /// PD marks it Offline and moves its replicas away.
    pub async fn delete_store(&self, store_id: u64) -> Result<()> {
        http_delete_json(
            &self.pd_http_addrs(),
            &format!("/pd/api/v1/store/{store_id}"),
        )
        .await
        .map(|_| ())
    }

    /// PD's state of the store with id `store_id` ("Up", "Offline", "Tombstone") and the
    /// region peers it still holds.
    pub async fn store_state(&self, store_id: u64) -> Result<(String, u64)> {
        let v = http_get_json(&self.pd_http_addrs(), "/pd/api/v1/stores").await?;
        let s = v["stores"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["store"]["id"].as_u64() == Some(store_id))
            .with_context(|| format!("PD does not list store {store_id}"))?;
        let state = s["store"]["state"]
            .as_str()
            .unwrap_or("Unknown")
            .to_string();
        Ok((state, s["status"]["region_count"].as_u64().unwrap_or(0)))
    }

    /// Stops store `i` for good (SIGKILL): after PD made it a tombstone, it holds nothing.
    pub fn retire(&mut self, i: usize) {
        let t = Target::Store(i);
        self.pause(t, false);
        self.kill(t);
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let exe = self.exe.clone();
        let p = &mut self.procs[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)?;
        use std::io::Write as _;
        writeln!(&log, "==== flotilla chaos: starting {}", p.name)?;
        p.start(&exe).map(|_| ())
    }

    fn index(&self, t: Target) -> usize {
        match t {
            Target::Pd(i) => i,
            Target::Store(i) => self.pd_members + i,
        }
    }

    /// Number of stores.
    pub fn stores(&self) -> usize {
        self.procs.len() - self.pd_members
    }

    /// Number of PD members.
    pub fn pd_members(&self) -> usize {
        self.pd_members
    }

    /// Every target: each PD member and each store.
    pub fn targets(&self) -> Vec<Target> {
        (0..self.pd_members)
            .map(Target::Pd)
            .chain((0..self.stores()).map(Target::Store))
            .collect()
    }

    /// The PD member that leads now, asked of every running, unpaused member's `/status`.
    pub async fn pd_leader(&self) -> Option<usize> {
        let members = self.pd_addr.split(',').enumerate();
        for (i, addr) in members {
            if !self.answers(Target::Pd(i)) {
                continue;
            }
            let status = http_get_json(addr, "/status").await;
            if status.is_ok_and(|v| v["is_leader"].as_bool() == Some(true)) {
                return Some(i);
            }
        }
        None
    }

    /// The pids of the running processes (for `--server-pids` style tooling and logs).
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.procs
            .iter()
            .filter_map(|p| p.pid().map(|pid| (p.name.clone(), pid)))
            .collect()
    }

    /// SIGKILL.
    pub fn kill(&mut self, t: Target) {
        let i = self.index(t);
        let p = &mut self.procs[i];
        // A stopped process dies on SIGKILL too; nothing to continue first.
        p.kill9();
    }

    /// Starts a killed process again on its data directory and addresses.
    pub fn restart(&mut self, t: Target) -> Result<()> {
        let i = self.index(t);
        if self.procs[i].child.is_some() {
            return Ok(());
        }
        self.spawn(i)
    }

    /// SIGSTOP (true) or SIGCONT (false).
    pub fn pause(&mut self, t: Target, stop: bool) {
        let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        let i = self.index(t);
        self.procs[i].signal(sig);
        self.paused.retain(|p| *p != t);
        if stop {
            self.paused.push(t);
        }
    }

    /// Whether the process runs and is not paused: it answers its ports.
    fn answers(&self, t: Target) -> bool {
        self.procs[self.index(t)].child.is_some() && !self.paused.contains(&t)
    }

    /// Whether the process has exited on its own (a crash the nemesis did not cause).
    pub fn exited(&mut self, t: Target) -> Option<std::process::ExitStatus> {
        let i = self.index(t);
        let p = &mut self.procs[i];
        p.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Store `i`'s id if it has been learned.
    pub fn known_store_id(&self, i: usize) -> Option<u64> {
        self.store_ids.get(i).copied().flatten()
    }

    /// Store `i`'s status address while it runs.
    pub fn live_status_addr(&self, i: usize) -> Option<String> {
        self.answers(Target::Store(i))
            .then(|| self.status_addrs[i].clone())
    }

    /// Store `i`'s id, asked of its status port (remembered; asked before any fault).
    pub async fn store_id(&mut self, i: usize) -> Result<u64> {
        if let Some(id) = self.store_ids[i] {
            return Ok(id);
        }
        let v = http_get_json(&self.status_addrs[i], "/status").await?;
        let id = v["store_id"]
            .as_u64()
            .with_context(|| format!("store{i} /status has no store_id"))?;
        self.store_ids[i] = Some(id);
        Ok(id)
    }

    /// Cuts store `i`'s raft traffic from every other store (both directions, on both sides).
    pub async fn partition(&mut self, i: usize) -> Result<()> {
        let mut ids = Vec::new();
        for j in 0..self.stores() {
            ids.push(self.store_id(j).await?);
        }
        // A store that is down starts unpartitioned, and a paused one sends nothing; the faults
        // of a round heal together.
        for j in (0..self.stores()).filter(|j| self.answers(Target::Store(*j))) {
            let blocked: Vec<u64> = if j == i {
                ids.iter().copied().filter(|id| *id != ids[i]).collect()
            } else {
                vec![ids[i]]
            };
            self.set_partition(j, blocked).await?;
        }
        Ok(())
    }

    /// Heals every partition (stores that are down are healed when they restart: the
    /// partition lives in memory).
    pub async fn heal_partitions(&mut self) -> Result<()> {
        for j in 0..self.stores() {
            if self.answers(Target::Store(j)) {
                self.set_partition(j, vec![]).await?;
            }
        }
        Ok(())
    }

    /// Sets store `i`'s lease clock offset (`/debug/fault/clock`); 0 heals.
    pub async fn set_clock_offset(&self, i: usize, offset_ms: i64) -> Result<()> {
        let body = json!({ "offset_ms": offset_ms });
        http_post_json(&self.status_addrs[i], "/debug/fault/clock", &body)
            .await
            .with_context(|| format!("setting the clock offset of store{i}"))?;
        Ok(())
    }

    async fn set_partition(&self, i: usize, blocked: Vec<u64>) -> Result<()> {
        let body = json!({ "blocked_stores": blocked });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match http_post_json(&self.status_addrs[i], "/debug/fault/partition", &body).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("setting the partition of store{i}")))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The PD members' addresses for an HTTP call: the running, unpaused ones first (a paused
    /// member answers nothing until its timeout).
    pub fn pd_http_addrs(&self) -> String {
        let (mut up, down): (Vec<_>, Vec<_>) = self
            .pd_addr
            .split(',')
            .enumerate()
            .partition(|(i, _)| self.answers(Target::Pd(*i)));
        up.extend(down);
        up.into_iter().map(|(_, a)| a).collect::<Vec<_>>().join(",")
    }

    /// PD's region list (`/pd/api/v1/regions`).
    pub async fn regions(&self) -> Result<Value> {
        http_get_json(&self.pd_http_addrs(), "/pd/api/v1/regions").await
    }

    /// Posts an operator to PD; Ok(false) if PD declined it (busy region, stale key).
    pub async fn add_operator(&self, body: &Value) -> Result<bool> {
        match http_post_json(&self.pd_http_addrs(), "/pd/api/v1/operators", body).await {
            Ok(_) => Ok(true),
            Err(e) if e.to_string().contains("HTTP/1.1 4") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until PD knows at least `min_regions` regions, each with a leader and as many
    /// voters as there are stores (up to 3).
    pub async fn wait_ready(&mut self, min_regions: usize, timeout: Duration) -> Result<()> {
        self.wait(min_regions, timeout, false).await
    }

    /// [`Self::wait_ready`] for a cluster just started: a process that exits before the
    /// cluster is ready (say, another program took its port between the OS handing it out and
    /// the process binding it) is started again, up to three times, and named if it keeps
    /// exiting.
    pub async fn wait_started(&mut self, min_regions: usize, timeout: Duration) -> Result<()> {
        self.wait(min_regions, timeout, true).await
    }

    async fn wait(&mut self, min_regions: usize, timeout: Duration, restart: bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("PD not reachable");
        let mut restarts = vec![0u32; self.procs.len()];
        while Instant::now() < deadline {
            if restart {
                self.restart_exited(&mut restarts)?;
            }
            match self.ready(min_regions).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        bail!("the cluster was not ready after {timeout:?}: {last}")
    }

    /// Starts again every process that exited, counting in `restarts`; fails naming a process
    /// that exited more than three times.
    fn restart_exited(&mut self, restarts: &mut [u32]) -> Result<()> {
        for t in self.targets() {
            let i = self.index(t);
            let Some(status) = self.exited(t) else {
                continue;
            };
            self.procs[i].child = None;
            restarts[i] += 1;
            if restarts[i] > 3 {
                bail!(
                    "{t} exited during start-up ({status}) {} times; see {}",
                    restarts[i],
                    self.procs[i].log.display()
                );
            }
            println!("{t} exited during start-up ({status}); starting it again");
            self.spawn(i)?;
        }
        Ok(())
    }

    /// Ok if PD knows `min_regions` regions, all with a leader and enough voters; else what
    /// it knows.
    async fn ready(&self, min_regions: usize) -> Result<(), String> {
        let voters = self.stores().min(3);
        let v = self.regions().await.map_err(|e| format!("{e:#}"))?;
        let regions = v["regions"].as_array().cloned().unwrap_or_default();
        let ready = regions
            .iter()
            .filter(|r| {
                let n = r["peers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["role"] == "Voter")
                    .count();
                n >= voters && !r["leader"].is_null()
            })
            .count();
        if regions.len() >= min_regions && ready == regions.len() {
            return Ok(());
        }
        Err(format!("{} regions, {ready} ready", regions.len()))
    }

    /// Stops every process (SIGCONT first, then SIGTERM, SIGKILL after 15 s).
    pub fn stop(&mut self) {
        for p in &self.procs {
            p.signal(libc::SIGCONT);
        }
        stop_all(&mut self.procs);
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        for p in self.procs.iter_mut() {
            p.signal(libc::SIGCONT);
            p.kill9();
        }
    }
}
