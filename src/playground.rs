//! `flotilla playground`: a PD group (three members by default) and three stores on 127.0.0.1,
//! each its own `flotilla` process, data under one directory (reused on the next start). A
//! process that dies is restarted; Ctrl-C or SIGTERM stops everything cleanly.
//!
//! A running playground grows and shrinks. It listens on a loopback control port, named in
//! `<data-dir>/playground.json` (see [`control`]), where `flotilla playground scale-out`,
//! `scale-in` and `display` (in [`scale`]) reach it:
//! - scale-out starts new stores (same store config, new data dirs `store<N>`, new ports) and
//!   supervises them like the others;
//! - scale-in asks PD to decommission a store (`DELETE /pd/api/v1/store/{id}`); the playground
//!   watches PD until the store is a Tombstone, then stops its process, stops supervising it and
//!   renames its data dir `store<N>.removed` (so the next start does not start it again).
//!
//! With `--store-cpu CORES` (and `--pd-cpu`) each process runs in its own CPU cgroup with that
//! quota, an emulated machine (see [`cgroup`]); the cgroups are removed when the processes stop.
//!
//! Layout of the data dir: `pd/` (with `--pd 1`) or `pd1/`..`pdN/`, `store<N>/`, one log per
//! process (`<name>.log`), `store.toml`, `pids` (the running pids, for `bench
//! --server-pids-file`), `playground.json` while it runs.

pub mod cgroup;
pub mod cluster;
pub mod control;
pub mod scale;
pub mod tls;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use cgroup::{CpuCgroups, CpuQuota};
use cluster::Playground;
pub(crate) use cluster::{free_port, path_arg, stop_all, Proc};
use control::PlaygroundInfo;

/// Most stores one playground runs (scale-out included).
pub const STORES_MAX: usize = 64;
/// Most PD members one playground runs.
pub const PD_MEMBERS_MAX: u64 = 7;
/// How often the supervisor looks for exited processes and decommissioned stores.
const SUPERVISE_TICK: Duration = Duration::from_millis(500);
/// Pause before a process that exited is started again.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// `flotilla playground`: run a cluster, or operate the one running on `--data-dir`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PlaygroundCli {
    #[command(subcommand)]
    pub command: Option<PlaygroundCommand>,
    #[command(flatten)]
    pub run: PlaygroundArgs,
}

/// What can be done to a running playground.
#[derive(Subcommand, Debug)]
pub enum PlaygroundCommand {
    /// Add stores to the running playground.
    ScaleOut(scale::ScaleOutArgs),
    /// Decommission a store of the running playground and stop it once PD has moved its
    /// regions away.
    ScaleIn(scale::ScaleInArgs),
    /// List the running playground's processes.
    Display(scale::DisplayArgs),
}

/// Options of `flotilla playground`.
#[derive(Args, Debug)]
pub struct PlaygroundArgs {
    /// Where the cluster keeps its data; reused on the next start.
    #[arg(long, default_value = "./data/playground")]
    pub data_dir: PathBuf,
    /// Number of stores (stores added by scale-out and kept in the data dir start too).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=STORES_MAX as u64))]
    pub stores: u64,
    /// Number of PD members: 3 is a replicated PD group, 1 runs PD alone (not safe with the
    /// official client: it cannot fail over).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=PD_MEMBERS_MAX))]
    pub pd: u64,
    /// Preferred client port of the first PD member (another free port is used if it is
    /// taken); the other members and the peer ports follow it; 0 leaves every PD port to the
    /// OS.
    #[arg(long, default_value_t = 2379)]
    pub pd_port: u16,
    /// Base of the stores' ports: store N prefers this + N for gRPC and this + 20 + N for
    /// status (another free port where one is taken); 0 leaves every store port to the OS.
    #[arg(long, default_value_t = 20160)]
    pub store_port: u16,
    /// TOML file with PD settings, passed to every PD member (default: the playground's own,
    /// `<data-dir>/pd.toml`, which tells PD the playground stores' split thresholds so that
    /// its merge checker keeps merged regions below them; none with --store-config or
    /// --single-region).
    #[arg(long)]
    pub pd_config: Option<PathBuf>,
    /// TOML file with store settings, passed to every store (default: playground's own, with
    /// small regions so the keyspace spreads over many of them).
    #[arg(long)]
    pub store_config: Option<PathBuf>,
    /// Keep the cluster at one data region: stores never split (`raftstore.split_enabled =
    /// false`); the single-Raft design measured on Flotilla's own code.
    #[arg(long, conflicts_with = "store_config")]
    pub single_region: bool,
    /// Run every store in its own CPU cgroup with this quota, in cores (e.g. 0.2): an emulated
    /// machine. Needs a writable cgroup file system (root).
    #[arg(long)]
    pub store_cpu: Option<f64>,
    /// Run every PD member in its own CPU cgroup with this quota, in cores.
    #[arg(long)]
    pub pd_cpu: Option<f64>,
    /// Mutual TLS on every port: a CA and certificates under `<data-dir>/tls/` (made on the
    /// first start, kept after), the client's as `ca.pem`, `client.pem`, `client-key.pem`.
    #[arg(long)]
    pub tls: bool,
}

/// Store settings of the playground: small regions, so that a modest data set spreads over
/// dozens of regions and the cluster shows what Multi-Raft does.
pub(crate) const PLAYGROUND_STORE_CONFIG: &str = r#"# Written by `flotilla playground`; edit freely, it is kept.
[raftstore]
region_max_size_bytes = 4194304
region_split_size_bytes = 3145728
region_max_keys = 3000
region_split_keys = 2000
"#;

/// PD settings of the playground: PD is told the stores' small split thresholds, so that the
/// merge checker joins only regions that stay well below them (a quarter of a region at most,
/// as TiKV's 20 MiB against 96 MiB), and does not undo the stores' splits.
pub(crate) const PLAYGROUND_PD_CONFIG: &str = r#"# Written by `flotilla playground`; edit freely, it is kept.
region_max_size_bytes = 4194304
region_max_keys = 3000
max_merge_region_size_bytes = 1048576
max_merge_region_keys = 750
"#;

/// Store settings of `--single-region`: no region ever splits. PD still splits the keyspace
/// boundaries once at bootstrap, so each keyspace's raw and transactional data live in one
/// region each.
const SINGLE_REGION_STORE_CONFIG: &str = r#"# Written by `flotilla playground --single-region`.
[raftstore]
split_enabled = false
"#;

/// Runs `flotilla playground` (a cluster until Ctrl-C) or one of its subcommands.
pub async fn main(cli: PlaygroundCli) -> Result<()> {
    match cli.command {
        None => run(cli.run).await,
        Some(PlaygroundCommand::ScaleOut(a)) => scale::scale_out(a).await,
        Some(PlaygroundCommand::ScaleIn(a)) => {
            use_tls_of(&a.data_dir)?;
            scale::scale_in(a).await
        }
        Some(PlaygroundCommand::Display(a)) => {
            use_tls_of(&a.data_dir)?;
            scale::display(a).await
        }
    }
}

/// Talks to the playground in `data_dir` with its client certificate, if it runs with TLS.
fn use_tls_of(data_dir: &Path) -> Result<()> {
    match tls::PlaygroundTls::existing(data_dir) {
        Some(t) => crate::ctl::set_client_security(&t.client()),
        None => Ok(()),
    }
}

/// The stores kept in `data_dir` (`store<N>` directories), and the next unused index (indexes
/// of removed stores, `store<N>.removed`, are not reused).
fn existing_stores(data_dir: &Path) -> Result<(Vec<usize>, usize)> {
    let mut kept = Vec::new();
    let mut next = 1;
    for entry in std::fs::read_dir(data_dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("store") else {
            continue;
        };
        let (num, removed) = match rest.strip_suffix(".removed") {
            Some(n) => (n, true),
            None => (rest, false),
        };
        if let Ok(i) = num.parse::<usize>() {
            next = next.max(i + 1);
            if !removed {
                kept.push(i);
            }
        }
    }
    kept.sort_unstable();
    Ok((kept, next))
}

/// Refuses a PD shape that does not match the data dir: a lone PD's data (`pd/`) cannot serve a
/// group, nor a group's (`pd1/`...) a lone PD; the stores would find another cluster.
fn check_pd_layout(data_dir: &Path, members: u64) -> Result<()> {
    let lone = data_dir.join("pd").is_dir();
    let group = (1..=PD_MEMBERS_MAX)
        .filter(|i| data_dir.join(format!("pd{i}")).is_dir())
        .count() as u64;
    if members == 1 && group > 0 {
        bail!(
            "{} holds a PD group of {group}: start it with --pd {group}, or use another --data-dir",
            data_dir.display()
        );
    }
    if members > 1 && lone {
        bail!(
            "{} holds a lone PD's data (pd/): start it with --pd 1, or use another --data-dir",
            data_dir.display()
        );
    }
    if members > 1 && group > 0 && group != members {
        bail!(
            "{} holds a PD group of {group}: start it with --pd {group}, or use another --data-dir",
            data_dir.display()
        );
    }
    Ok(())
}

/// The quota of `cores`, if given, and where cgroups are created when any quota is asked.
fn quotas(
    args: &PlaygroundArgs,
) -> Result<(Option<CpuQuota>, Option<CpuQuota>, Option<CpuCgroups>)> {
    let store = args.store_cpu.map(CpuQuota::from_cores).transpose()?;
    let pd = args.pd_cpu.map(CpuQuota::from_cores).transpose()?;
    let cgroups = if store.is_some() || pd.is_some() {
        let c = CpuCgroups::detect()?;
        println!(
            "CPU quotas through cgroup {:?} under {}",
            c.version,
            c.parent.display()
        );
        Some(c)
    } else {
        None
    };
    Ok((store, pd, cgroups))
}

/// Runs the playground until Ctrl-C or SIGTERM.
pub async fn run(args: PlaygroundArgs) -> Result<()> {
    let exe = std::env::current_exe()?;
    std::fs::create_dir_all(&args.data_dir)?;
    let data_dir = args.data_dir.canonicalize()?;
    control::refuse_if_running(&data_dir).await?;
    check_pd_layout(&data_dir, args.pd)?;
    let (store_quota, pd_quota, cgroups) = quotas(&args)?;
    let tls = match args.tls {
        true => Some(tls::PlaygroundTls::prepare(&data_dir)?),
        false => None,
    };
    if let Some(t) = &tls {
        crate::ctl::set_client_security(&t.client())?;
    }
    let store_config = match &args.store_config {
        Some(p) => p
            .canonicalize()
            .with_context(|| format!("{}", p.display()))?,
        None if args.single_region => {
            let p = data_dir.join("store-single-region.toml");
            std::fs::write(&p, SINGLE_REGION_STORE_CONFIG)?;
            p
        }
        None => {
            let p = data_dir.join("store.toml");
            if !p.exists() {
                std::fs::write(&p, PLAYGROUND_STORE_CONFIG)?;
            }
            p
        }
    };
    let pd_config = match &args.pd_config {
        Some(p) => Some(
            p.canonicalize()
                .with_context(|| format!("{}", p.display()))?,
        ),
        None if args.single_region || args.store_config.is_some() => None,
        None => {
            let p = data_dir.join("pd.toml");
            if !p.exists() {
                std::fs::write(&p, PLAYGROUND_PD_CONFIG)?;
            }
            Some(p)
        }
    };
    let (mut slots, next_store) = existing_stores(&data_dir)?;
    if slots.len() > args.stores as usize {
        println!(
            "{} stores kept in {} (more than --stores {}): starting them all",
            slots.len(),
            data_dir.display(),
            args.stores
        );
    }
    let mut next = next_store;
    while slots.len() < args.stores as usize {
        slots.push(next);
        next += 1;
    }
    let mut pg = Playground {
        exe,
        data_dir: data_dir.clone(),
        store_config,
        pd_endpoints: String::new(),
        store_quota,
        cgroups,
        members: Vec::new(),
        store_port: args.store_port,
        next_store: next,
        ports: HashSet::new(),
        tls: tls.clone(),
    };
    let started = start_members(&mut pg, &args, pd_config.as_deref(), pd_quota, &slots);
    if let Err(e) = started {
        pg.stop();
        return Err(e);
    }
    pg.write_pids();
    let pd_endpoints = pg.pd_endpoints.clone();
    let pd_first = pd_endpoints
        .split(',')
        .next()
        .unwrap_or_default()
        .to_owned();
    let pg = Arc::new(Mutex::new(pg));
    let server = match control::serve(pg.clone()).await {
        Ok(s) => s,
        Err(e) => {
            pg.lock().expect("playground lock").stop();
            return Err(e);
        }
    };
    let info = PlaygroundInfo {
        pid: std::process::id(),
        control_addr: server.addr.to_string(),
        pd: pd_endpoints.split(',').map(str::to_owned).collect(),
    };
    if let Err(e) = info.write(&data_dir) {
        pg.lock().expect("playground lock").stop();
        return Err(e);
    }
    println!("\nPD address: {pd_first}");
    println!("PD members: {pd_endpoints}");
    println!("data and logs: {}", data_dir.display());
    println!("control: {} (playground.json)", server.addr);
    let ctl_tls = match &tls {
        Some(t) => {
            println!("{}", t.client_settings());
            let c = t.client();
            format!(
                " --ca {} --cert {} --key {}",
                c.ca.unwrap_or_default(),
                c.cert.unwrap_or_default(),
                c.key.unwrap_or_default()
            )
        }
        None => String::new(),
    };
    println!(
        "try: flotilla ctl --pd {pd_endpoints}{ctl_tls} stores     (Ctrl-C stops the cluster)"
    );
    println!(
        "     flotilla playground scale-out --data-dir {}\n",
        data_dir.display()
    );
    supervise(&pg).await;
    server.task.abort();
    PlaygroundInfo::remove(&data_dir);
    pg.lock().expect("playground lock").stop();
    Ok(())
}

/// Adds and starts the PD members and the stores in `slots`.
fn start_members(
    pg: &mut Playground,
    args: &PlaygroundArgs,
    pd_config: Option<&Path>,
    pd_quota: Option<CpuQuota>,
    slots: &[usize],
) -> Result<()> {
    pg.push_pd_members(args.pd, args.pd_port, pd_config, pd_quota)?;
    for &i in slots {
        pg.push_store(i)?;
    }
    for m in 0..pg.members.len() {
        pg.start_member(m)?;
    }
    Ok(())
}

/// Restarts any process that exits and stops decommissioned stores once PD made them
/// Tombstones, until Ctrl-C or SIGTERM.
async fn supervise(pg: &Mutex<Playground>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = tokio::time::sleep(SUPERVISE_TICK) => {}
        }
        let (restart, leaving, pd) = {
            let mut g = pg.lock().expect("playground lock");
            let restart = g.supervise_round(Instant::now());
            (restart, g.leaving(), g.pd_endpoints.clone())
        };
        if !restart.is_empty() {
            tokio::time::sleep(RESTART_DELAY).await;
            let mut g = pg.lock().expect("playground lock");
            for m in restart {
                if let Err(e) = g.start_member(m) {
                    println!("cannot restart {}: {e:#}", g.members[m].proc.name);
                }
            }
            g.write_pids();
        }
        if leaving.is_empty() {
            continue;
        }
        let states = match scale::store_states(&pd).await {
            Ok(s) => s,
            Err(e) => {
                println!("cannot read the stores from PD: {e:#}");
                continue;
            }
        };
        let mut g = pg.lock().expect("playground lock");
        g.after_pd_check(&leaving, &states);
        g.write_pids();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_stores_start_again_and_removed_indexes_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "store1",
            "store3",
            "store2.removed",
            "store7.removed",
            "storex",
            "pd1",
        ] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        assert_eq!(existing_stores(dir.path()).unwrap(), (vec![1, 3], 8));
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(existing_stores(empty.path()).unwrap(), (vec![], 1));
    }

    #[test]
    fn a_data_dir_keeps_its_pd_shape() {
        let dir = tempfile::tempdir().unwrap();
        check_pd_layout(dir.path(), 3).unwrap();
        check_pd_layout(dir.path(), 1).unwrap();
        std::fs::create_dir(dir.path().join("pd")).unwrap();
        check_pd_layout(dir.path(), 1).unwrap();
        assert!(check_pd_layout(dir.path(), 3).is_err());
        let group = tempfile::tempdir().unwrap();
        for d in ["pd1", "pd2", "pd3"] {
            std::fs::create_dir(group.path().join(d)).unwrap();
        }
        check_pd_layout(group.path(), 3).unwrap();
        assert!(check_pd_layout(group.path(), 1).is_err());
        assert!(check_pd_layout(group.path(), 5).is_err());
    }
}
