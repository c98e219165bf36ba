//! The playground's process table: every `flotilla` child it runs (PD members and stores),
//! how each is started (in its CPU cgroup, if any), restarted when it exits, and retired after
//! a decommission. [`Playground`] holds the table; the supervisor loop and the control server
//! share it behind a mutex and never hold it across an await.
//!
//! A member's life: `Running` (restarted when it exits) → `Leaving` (Offline at PD; restarted
//! only while PD still says Offline) → `Stopping` (a Tombstone, SIGTERM sent) → `Removed` (its
//! cgroup removed, its data dir renamed `store<N>.removed`).

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cgroup::{CpuCgroup, CpuCgroups, CpuQuota};
use super::control::MemberView;
use super::scale;
use super::STORES_MAX;

/// How long a stopping process has after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// One `flotilla` child process: how to start it again, and its log file (appended to).
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) args: Vec<String>,
    pub(crate) child: Option<Child>,
    pub(crate) log: PathBuf,
}

impl Proc {
    /// Starts the process (again) with its arguments, output appended to its log.
    pub(crate) fn start(&mut self, exe: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(exe)
            .args(&self.args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        println!(
            "started {:<8} pid {:<7} {} {}",
            self.name,
            child.id(),
            exe.display(),
            self.args.join(" ")
        );
        self.child = Some(child);
        Ok(())
    }

    /// The pid of the running process.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` to the process, if this handle started it and it runs.
    pub(crate) fn signal(&self, signal: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on the pid of a child this process started and has not reaped.
            unsafe { libc::kill(c.id() as i32, signal) };
        }
    }

    /// SIGKILL, as a crash would; waits for the process to be gone.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The exit status, if the process has exited (and is now reaped).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }
}

/// Picks `preferred` if it is free on 127.0.0.1, or a port the OS hands out; never a port it
/// picked before in this process. The port is only probed, not held: a process started a
/// moment earlier may not have bound the port it was given yet, and the OS would hand the same
/// port out again (a chaos run once gave a PD member's peer port to a store).
pub(crate) fn free_port(preferred: u16) -> Result<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    if preferred != 0 && !given.contains(&preferred) {
        if let Ok(l) = TcpListener::bind(("127.0.0.1", preferred)) {
            let port = l.local_addr()?.port();
            given.insert(port);
            return Ok(port);
        }
    }
    for _ in 0..1000 {
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        if given.insert(port) {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1 that was not handed out before")
}

pub(crate) fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Whether a member is a PD member or a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Pd,
    Store,
}

/// Where a member is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemberState {
    /// Supervised: restarted when it exits.
    Running,
    /// Offline at PD (decommissioning); still supervised until PD makes it a Tombstone.
    Leaving { store_id: u64 },
    /// A Tombstone, asked to stop (SIGTERM); killed if it outlives the deadline.
    Stopping { store_id: u64, deadline: Instant },
    /// Stopped for good; no longer supervised.
    Removed { store_id: u64 },
}

/// One process of the playground.
pub(crate) struct Member {
    pub(crate) proc: Proc,
    pub(crate) kind: Kind,
    /// Client address (PD) or gRPC address (store), as PD lists it.
    pub(crate) addr: String,
    pub(crate) status_addr: Option<String>,
    pub(crate) data_dir: PathBuf,
    pub(crate) cgroup: Option<CpuCgroup>,
    pub(crate) state: MemberState,
}

/// The running playground: its processes and what it needs to add more.
pub(crate) struct Playground {
    pub(crate) exe: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) store_config: PathBuf,
    /// The PD members' client addresses, comma separated (as stores and `ctl` take them).
    pub(crate) pd_endpoints: String,
    pub(crate) store_quota: Option<CpuQuota>,
    pub(crate) cgroups: Option<CpuCgroups>,
    pub(crate) members: Vec<Member>,
    /// Preferred ports of the stores: see [`store_ports`].
    pub(crate) store_port: u16,
    /// Index of the next new store (`store<N>`); never reused.
    pub(crate) next_store: usize,
    /// Ports handed out, so no two processes are given the same.
    pub(crate) ports: HashSet<u16>,
    /// The certificates of `--tls` (every process then serves mutual TLS only).
    pub(crate) tls: Option<super::tls::PlaygroundTls>,
}

impl Playground {
    /// A port free now that no other process of this playground was given: `preferred` if it
    /// is, else one the OS hands out (0 asks the OS straight away).
    pub(crate) fn port(&mut self, preferred: u16) -> Result<u16> {
        let mut wanted = preferred;
        for _ in 0..16 {
            let p = free_port(wanted)?;
            if self.ports.insert(p) {
                return Ok(p);
            }
            wanted = 0;
        }
        bail!("no free port found on 127.0.0.1")
    }

    /// The name of a member's cgroup: unique to this playground process.
    pub(crate) fn cgroup_name(&self, name: &str) -> String {
        format!("flotilla-playground-{}-{name}", std::process::id())
    }

    pub(crate) fn new_cgroup(
        &self,
        name: &str,
        quota: Option<CpuQuota>,
    ) -> Result<Option<CpuCgroup>> {
        match (quota, &self.cgroups) {
            (Some(q), Some(c)) => Ok(Some(c.create(&self.cgroup_name(name), q)?)),
            _ => Ok(None),
        }
    }

    /// Adds the PD members (not started).
    pub(crate) fn push_pd_members(
        &mut self,
        count: u64,
        pd_port: u16,
        config: Option<&Path>,
        quota: Option<CpuQuota>,
    ) -> Result<()> {
        let mut members = Vec::new();
        for id in 1..=count {
            let (client, peer) = pd_ports(pd_port, id);
            members.push(pd::PdMember {
                id,
                client_addr: format!("127.0.0.1:{}", self.port(client)?),
                peer_addr: format!("127.0.0.1:{}", self.port(peer)?),
            });
        }
        let list = pd::PdMember::format_list(&members);
        self.pd_endpoints = members
            .iter()
            .map(|m| m.client_addr.clone())
            .collect::<Vec<_>>()
            .join(",");
        for m in &members {
            let name = if count == 1 {
                "pd".to_owned()
            } else {
                format!("pd{}", m.id)
            };
            let data_dir = self.data_dir.join(&name);
            let mut args = vec![
                "pd".into(),
                "--data-dir".into(),
                path_arg(&data_dir),
                "--addr".into(),
                m.client_addr.clone(),
            ];
            if count > 1 {
                args.extend(["--initial-cluster".into(), list.clone()]);
                args.extend(["--member-id".into(), m.id.to_string()]);
            }
            if let Some(c) = config {
                args.extend(["--config".into(), path_arg(c)]);
            }
            if let Some(t) = &self.tls {
                args.extend(t.process_args(&name, "pd")?);
            }
            let cgroup = self.new_cgroup(&name, quota)?;
            self.members.push(Member {
                proc: Proc {
                    log: self.data_dir.join(format!("{name}.log")),
                    name,
                    args,
                    child: None,
                },
                kind: Kind::Pd,
                addr: m.client_addr.clone(),
                status_addr: None,
                data_dir,
                cgroup,
                state: MemberState::Running,
            });
        }
        Ok(())
    }

    /// Adds store `store<i>` (not started); its index in `members`.
    pub(crate) fn push_store(&mut self, i: usize) -> Result<usize> {
        let (addr_port, status_port) = store_ports(self.store_port, i);
        let addr = format!("127.0.0.1:{}", self.port(addr_port)?);
        let status = format!("127.0.0.1:{}", self.port(status_port)?);
        let name = format!("store{i}");
        let data_dir = self.data_dir.join(&name);
        let mut args = vec![
            "server".into(),
            "--data-dir".into(),
            path_arg(&data_dir),
            "--addr".into(),
            addr.clone(),
            "--status-addr".into(),
            status.clone(),
            "--pd".into(),
            self.pd_endpoints.clone(),
            "--config".into(),
            path_arg(&self.store_config),
        ];
        if let Some(t) = &self.tls {
            args.extend(t.process_args(&name, "store")?);
        }
        let cgroup = self.new_cgroup(&name, self.store_quota)?;
        self.members.push(Member {
            proc: Proc {
                log: self.data_dir.join(format!("{name}.log")),
                name,
                args,
                child: None,
            },
            kind: Kind::Store,
            addr,
            status_addr: Some(status),
            data_dir,
            cgroup,
            state: MemberState::Running,
        });
        self.next_store = self.next_store.max(i + 1);
        Ok(self.members.len() - 1)
    }

    /// Starts member `m` and moves it into its cgroup; a process that cannot be confined is
    /// killed rather than left running without its quota.
    pub(crate) fn start_member(&mut self, m: usize) -> Result<()> {
        let member = &mut self.members[m];
        member.proc.start(&self.exe)?;
        if let (Some(cg), Some(pid)) = (&member.cgroup, member.proc.pid()) {
            if let Err(e) = cg.add(pid) {
                member.proc.kill9();
                return Err(e).context(format!("confining {}", member.proc.name));
            }
        }
        Ok(())
    }

    /// Starts `count` new stores; their indexes in `members`.
    pub(crate) fn scale_out(&mut self, count: usize) -> Result<Vec<usize>> {
        let live = self.members_of(Kind::Store).count();
        if count == 0 || live + count > STORES_MAX {
            bail!("cannot add {count} stores to {live}: 1 to {STORES_MAX} stores in all");
        }
        let mut added = Vec::new();
        for _ in 0..count {
            let m = self.push_store(self.next_store)?;
            self.start_member(m)?;
            added.push(m);
        }
        self.write_pids();
        Ok(added)
    }

    /// The members of `kind` that have not been removed.
    pub(crate) fn members_of(&self, kind: Kind) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .filter(move |m| m.kind == kind && !matches!(m.state, MemberState::Removed { .. }))
    }

    /// The running store listening on `addr`, as PD lists it.
    pub(crate) fn store_at(&self, addr: &str) -> Option<usize> {
        self.members.iter().position(|m| {
            m.kind == Kind::Store
                && m.addr == addr
                && !matches!(m.state, MemberState::Removed { .. })
        })
    }

    /// Marks store member `m` as decommissioning (PD has accepted the delete).
    pub(crate) fn mark_leaving(&mut self, m: usize, store_id: u64) {
        if self.members[m].state == MemberState::Running {
            self.members[m].state = MemberState::Leaving { store_id };
        }
    }

    /// The decommissioning stores: (member, store id).
    pub(crate) fn leaving(&self) -> Vec<(usize, u64)> {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| match m.state {
                MemberState::Leaving { store_id } => Some((i, store_id)),
                _ => None,
            })
            .collect()
    }

    /// PD made store member `m` a Tombstone: ask it to stop.
    pub(crate) fn on_tombstone(&mut self, m: usize) {
        let member = &mut self.members[m];
        if let MemberState::Leaving { store_id } = member.state {
            println!(
                "{} (store {store_id}) is a Tombstone; stopping it",
                member.proc.name
            );
            member.proc.signal(libc::SIGTERM);
            member.state = MemberState::Stopping {
                store_id,
                deadline: Instant::now() + STOP_GRACE,
            };
        }
    }

    /// One round of supervision: the members that exited and are to be started again (after
    /// [`RESTART_DELAY`]); stopping stores that ended are retired. A decommissioning store
    /// that exits is not restarted here: it may have stopped because PD made it a Tombstone,
    /// which the caller asks PD about first ([`Playground::after_pd_check`]).
    pub(crate) fn supervise_round(&mut self, now: Instant) -> Vec<usize> {
        let mut restart = Vec::new();
        for (i, m) in self.members.iter_mut().enumerate() {
            match m.state {
                MemberState::Running | MemberState::Leaving { .. } => {
                    if let Some(status) = m.proc.exited() {
                        m.proc.child = None;
                        if m.state == MemberState::Running {
                            println!("{} exited ({status}); restarting", m.proc.name);
                            restart.push(i);
                        } else {
                            println!("{} exited ({status}) while decommissioning", m.proc.name);
                        }
                    }
                }
                MemberState::Stopping { store_id, deadline } => {
                    if now >= deadline {
                        m.proc.signal(libc::SIGKILL);
                    }
                    if m.proc.child.is_none() || m.proc.exited().is_some() {
                        m.proc.child = None;
                        m.state = MemberState::Removed { store_id };
                        retire(m);
                    }
                }
                MemberState::Removed { .. } => {}
            }
        }
        restart
    }

    /// What PD says of the decommissioning stores `leaving` (as [`Playground::leaving`] listed
    /// them before PD was asked, so the answer is never older than their decommission): a
    /// Tombstone is stopped and never started again; one that is still Offline and whose
    /// process exited is started again (it must hand its replicas over); one that is Up again
    /// (`flotilla ctl store up` cancelled the decommission) is supervised as before.
    pub(crate) fn after_pd_check(
        &mut self,
        leaving: &[(usize, u64)],
        states: &HashMap<u64, scale::StoreState>,
    ) {
        for &(m, store_id) in leaving {
            if self.members[m].state != (MemberState::Leaving { store_id }) {
                continue;
            }
            let name = &self.members[m].proc.name;
            match states.get(&store_id).map(|s| s.state.as_str()) {
                Some("Tombstone") => self.on_tombstone(m),
                Some("Up") => {
                    println!("{name} (store {store_id}) is Up again: decommission cancelled");
                    self.members[m].state = MemberState::Running;
                }
                _ if self.members[m].proc.child.is_none() => {
                    println!("{name} (store {store_id}) is still decommissioning; restarting it");
                    if let Err(e) = self.start_member(m) {
                        println!("cannot restart {}: {e:#}", self.members[m].proc.name);
                    }
                }
                _ => {}
            }
        }
    }

    /// A view of every member, for `display`.
    pub(crate) fn views(&self) -> Vec<MemberView> {
        (0..self.members.len()).map(|i| self.view(i)).collect()
    }

    /// A view of member `i`.
    pub(crate) fn view(&self, i: usize) -> MemberView {
        let m = &self.members[i];
        let (state, store_id) = match m.state {
            MemberState::Running => ("running", None),
            MemberState::Leaving { store_id } => ("leaving", Some(store_id)),
            MemberState::Stopping { store_id, .. } => ("stopping", Some(store_id)),
            MemberState::Removed { store_id } => ("removed", Some(store_id)),
        };
        MemberView {
            name: m.proc.name.clone(),
            kind: match m.kind {
                Kind::Pd => "pd".into(),
                Kind::Store => "store".into(),
            },
            pid: m.proc.pid(),
            addr: m.addr.clone(),
            status_addr: m.status_addr.clone(),
            data_dir: path_arg(&m.data_dir),
            log: path_arg(&m.proc.log),
            state: state.into(),
            store_id,
            cpu_cores: m.cgroup.as_ref().map(|c| c.quota().cores()),
        }
    }

    /// The PD members' client addresses, comma separated.
    pub(crate) fn pd_endpoints(&self) -> &str {
        &self.pd_endpoints
    }

    /// Writes the pids of the running processes, one per line (what `flotilla bench
    /// --server-pids-file` reads to count the servers' CPU time).
    pub(crate) fn write_pids(&self) {
        let file = self.data_dir.join("pids");
        let pids: String = self
            .members
            .iter()
            .filter_map(|m| m.proc.pid().map(|p| format!("{p}\n")))
            .collect();
        let tmp = file.with_extension("tmp");
        let written = std::fs::write(&tmp, pids).and_then(|()| std::fs::rename(&tmp, &file));
        if let Err(e) = written {
            println!("cannot write {}: {e}", file.display());
        }
    }

    /// Stops every process (stores first, PD last) and removes the cgroups.
    pub(crate) fn stop(&mut self) {
        stop_all(self.members.iter_mut().map(|m| &mut m.proc));
        for m in &mut self.members {
            if let Some(cg) = m.cgroup.take() {
                if let Err(e) = cg.remove() {
                    println!("cannot remove the cgroup of {}: {e}", m.proc.name);
                }
            }
        }
    }
}

/// The preferred client and peer ports of PD member `id` (from 1): `base + 2 (id - 1)` and the
/// one after it; `base` 0 leaves both to the OS.
pub(crate) fn pd_ports(base: u16, id: u64) -> (u16, u16) {
    if base == 0 {
        return (0, 0);
    }
    let client = base.wrapping_add(2 * (u16::try_from(id).unwrap_or(1) - 1));
    (client, client.wrapping_add(1))
}

/// The preferred gRPC and status ports of `store<i>`: `base + i` and `base + 20 + i` (store1
/// on 20161 and 20181 by default; past 19 stores they meet, and [`Playground::port`] hands out
/// another); `base` 0 leaves both to the OS.
pub(crate) fn store_ports(base: u16, i: usize) -> (u16, u16) {
    if base == 0 {
        return (0, 0);
    }
    let addr = base.wrapping_add(u16::try_from(i).unwrap_or(0));
    (addr, addr.wrapping_add(20))
}

/// A store stopped for good: its cgroup goes, and its data dir is renamed so the next start
/// of the playground leaves it alone (PD would refuse a Tombstone anyway).
fn retire(m: &mut Member) {
    if let Some(cg) = m.cgroup.take() {
        if let Err(e) = cg.remove() {
            println!("cannot remove the cgroup of {}: {e}", m.proc.name);
        }
    }
    let removed = m.data_dir.with_extension("removed");
    match std::fs::rename(&m.data_dir, &removed) {
        Ok(()) => m.data_dir = removed,
        Err(e) => println!("cannot rename {}: {e}", m.data_dir.display()),
    }
    println!("{} stopped and removed from the playground", m.proc.name);
}

/// Asks every process to stop (SIGTERM), then kills those still running after
/// [`STOP_GRACE`]. In reverse order: the stores first, PD last.
pub(crate) fn stop_all<'a>(procs: impl IntoIterator<Item = &'a mut Proc>) {
    let mut procs: Vec<&mut Proc> = procs.into_iter().collect();
    procs.reverse();
    println!("stopping...");
    for p in procs.iter() {
        p.signal(libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    for p in procs.iter_mut() {
        if let Some(c) = p.child.as_mut() {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
            println!("stopped {}", p.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A playground whose one "store" is `sh -c 'sleep 30'`, decommissioning as store 7.
    fn leaving_sleeper(dir: &Path) -> Playground {
        leaving_store(dir, "sleep 30")
    }

    /// A playground whose one "store" is `sh -c SCRIPT`, decommissioning as store 7.
    fn leaving_store(dir: &Path, script: &str) -> Playground {
        let data_dir = dir.join("store1");
        std::fs::create_dir(&data_dir).unwrap();
        let mut pg = Playground {
            exe: PathBuf::from("/bin/sh"),
            data_dir: dir.to_owned(),
            store_config: dir.join("store.toml"),
            pd_endpoints: String::new(),
            store_quota: None,
            cgroups: None,
            members: vec![Member {
                proc: Proc {
                    name: "store1".into(),
                    args: vec!["-c".into(), script.into()],
                    child: None,
                    log: dir.join("store1.log"),
                },
                kind: Kind::Store,
                addr: "127.0.0.1:1".into(),
                status_addr: None,
                data_dir,
                cgroup: None,
                state: MemberState::Running,
            }],
            store_port: 0,
            next_store: 2,
            ports: HashSet::new(),
            tls: None,
        };
        pg.start_member(0).unwrap();
        assert_eq!(pg.store_at("127.0.0.1:1"), Some(0));
        pg.mark_leaving(0, 7);
        pg
    }

    fn pd_says(state: &str) -> HashMap<u64, scale::StoreState> {
        let s = scale::StoreState {
            address: "127.0.0.1:1".into(),
            state: state.into(),
            is_up: true,
            region_count: 0,
        };
        HashMap::from([(7, s)])
    }

    /// Waits (bounded) until member 0's process has exited and the round has seen it.
    fn round_until_exited(pg: &mut Playground) -> Vec<usize> {
        for _ in 0..100 {
            let restart = pg.supervise_round(Instant::now());
            if pg.members[0].proc.child.is_none() {
                return restart;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the process did not exit");
    }

    #[test]
    fn a_decommissioning_store_restarts_while_offline_and_retires_once_a_tombstone() {
        let dir = tempfile::tempdir().unwrap();
        let mut pg = leaving_sleeper(dir.path());
        // Exited while Offline: not restarted by the round, but once PD says it is Offline.
        pg.members[0].proc.signal(libc::SIGKILL);
        assert!(round_until_exited(&mut pg).is_empty());
        pg.after_pd_check(&[(0, 7)], &pd_says("Offline"));
        let pid = pg.members[0].proc.pid().expect("restarted");
        assert_eq!(pg.view(0).state, "leaving");

        // A Tombstone is stopped (SIGTERM ends `sh`), retired and its data dir renamed.
        pg.after_pd_check(&pg.leaving(), &pd_says("Tombstone"));
        assert_eq!(pg.view(0).state, "stopping");
        assert!(round_until_exited(&mut pg).is_empty());
        let v = pg.view(0);
        assert_eq!(
            (v.state.as_str(), v.store_id, v.pid),
            ("removed", Some(7), None)
        );
        assert!(dir.path().join("store1.removed").is_dir());
        assert!(!dir.path().join("store1").exists());
        assert_eq!(pg.store_at("127.0.0.1:1"), None);
        // SAFETY: signal 0 only checks whether the pid exists.
        assert_ne!(
            unsafe { libc::kill(pid as i32, 0) },
            0,
            "pid {pid} still runs"
        );
        // Gone for good: later rounds and PD answers start nothing.
        assert!(pg.leaving().is_empty());
        pg.after_pd_check(&[(0, 7)], &pd_says("Tombstone"));
        pg.after_pd_check(&[(0, 7)], &pd_says("Offline"));
        assert!(pg.supervise_round(Instant::now()).is_empty());
        assert_eq!(pg.view(0).pid, None);
    }

    #[test]
    fn a_store_that_exits_as_a_tombstone_is_retired_not_restarted() {
        let dir = tempfile::tempdir().unwrap();
        // What a store does when PD answers STORE_TOMBSTONE: it exits with code 1.
        let mut pg = leaving_store(dir.path(), "exit 1");
        assert!(round_until_exited(&mut pg).is_empty());
        pg.after_pd_check(&pg.leaving(), &pd_says("Tombstone"));
        assert_eq!(pg.view(0).pid, None, "a Tombstone is not started again");
        assert!(pg.supervise_round(Instant::now()).is_empty());
        assert_eq!(pg.view(0).state, "removed");
        assert!(dir.path().join("store1.removed").is_dir());
    }

    #[test]
    fn a_cancelled_decommission_is_supervised_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut pg = leaving_sleeper(dir.path());
        pg.after_pd_check(&pg.leaving(), &pd_says("Up"));
        assert_eq!(pg.view(0).state, "running");
        assert!(pg.leaving().is_empty());
        pg.members[0].proc.signal(libc::SIGKILL);
        assert_eq!(round_until_exited(&mut pg), vec![0]);
    }

    #[test]
    fn pd_ports_follow_the_base_and_zero_leaves_them_to_the_os() {
        assert_eq!(pd_ports(2379, 1), (2379, 2380));
        assert_eq!(pd_ports(2379, 3), (2383, 2384));
        assert_eq!(pd_ports(0, 2), (0, 0));
    }

    #[test]
    fn store_ports_follow_the_base_and_are_never_given_twice() {
        assert_eq!(store_ports(20160, 1), (20161, 20181));
        assert_eq!(store_ports(20160, 3), (20163, 20183));
        assert_eq!(store_ports(0, 3), (0, 0));
        let dir = tempfile::tempdir().unwrap();
        let mut pg = leaving_sleeper(dir.path());
        pg.members[0].proc.kill9();
        // A port already given is not given twice, even when it is still free.
        let a = pg.port(0).unwrap();
        assert_ne!(pg.port(a).unwrap(), a);
    }

    #[test]
    fn a_running_member_that_exits_is_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let mut pg = leaving_sleeper(dir.path());
        pg.members[0].state = MemberState::Running;
        pg.members[0].proc.signal(libc::SIGKILL);
        assert_eq!(round_until_exited(&mut pg), vec![0]);
        pg.members[0].proc.kill9();
    }
}

#[cfg(test)]
mod port_tests {
    use super::free_port;

    #[test]
    fn a_port_is_never_handed_out_twice() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            assert!(seen.insert(free_port(0).unwrap()), "a port came back twice");
        }
        // A preferred port already handed out is not given again.
        let first = *seen.iter().next().unwrap();
        assert_ne!(free_port(first).unwrap(), first);
    }
}
