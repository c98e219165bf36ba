//! `flotilla playground`: PD and three stores on 127.0.0.1, each its own `flotilla` process,
//! data under one directory (reused on the next start). A store or PD that dies is restarted;
//! Ctrl-C stops everything cleanly.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

/// Options of `flotilla playground`.
#[derive(Args, Debug)]
pub struct PlaygroundArgs {
    /// Where the cluster keeps its data; reused on the next start.
    #[arg(long, default_value = "./data/playground")]
    pub data_dir: PathBuf,
    /// Number of stores.
    #[arg(long, default_value_t = 3)]
    pub stores: usize,
    /// Preferred PD port (another free port is used if it is taken).
    #[arg(long, default_value_t = 2379)]
    pub pd_port: u16,
    /// TOML file with store settings, passed to every store (default: playground's own, with
    /// small regions so the keyspace spreads over many of them).
    #[arg(long)]
    pub store_config: Option<PathBuf>,
    /// Keep the cluster at one data region: stores never split (`raftstore.split_enabled =
    /// false`); the single-Raft design measured on Flotilla's own code.
    #[arg(long, conflicts_with = "store_config")]
    pub single_region: bool,
}

/// Store settings of the playground: small regions, so that a modest data set spreads over
/// dozens of regions and the cluster shows what Multi-Raft does.
const PLAYGROUND_STORE_CONFIG: &str = r#"# Written by `flotilla playground`; edit freely, it is kept.
[raftstore]
region_max_size_bytes = 4194304
region_split_size_bytes = 3145728
region_max_keys = 3000
region_split_keys = 2000
"#;

/// Store settings of `--single-region`: no region ever splits. PD still splits the keyspace
/// boundaries once at bootstrap, so each keyspace's raw and transactional data live in one
/// region each.
const SINGLE_REGION_STORE_CONFIG: &str = r#"# Written by `flotilla playground --single-region`.
[raftstore]
split_enabled = false
"#;

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
}

/// Picks `preferred` if it is free on 127.0.0.1, or a port the OS hands out.
pub(crate) fn free_port(preferred: u16) -> Result<u16> {
    if let Ok(l) = TcpListener::bind(("127.0.0.1", preferred)) {
        return Ok(l.local_addr()?.port());
    }
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Runs the playground until Ctrl-C.
pub async fn run(args: PlaygroundArgs) -> Result<()> {
    let exe = std::env::current_exe()?;
    std::fs::create_dir_all(&args.data_dir)?;
    let data_dir = args.data_dir.canonicalize()?;
    let store_config = match args.store_config {
        Some(p) => p,
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
    let pd_addr = format!("127.0.0.1:{}", free_port(args.pd_port)?);
    let mut procs = vec![Proc {
        name: "pd".into(),
        args: vec![
            "pd".into(),
            "--data-dir".into(),
            path_arg(&data_dir.join("pd")),
            "--addr".into(),
            pd_addr.clone(),
        ],
        child: None,
        log: data_dir.join("pd.log"),
    }];
    for i in 1..=args.stores {
        let addr = format!("127.0.0.1:{}", free_port(20160 + i as u16)?);
        let status = format!("127.0.0.1:{}", free_port(20180 + i as u16)?);
        procs.push(Proc {
            name: format!("store{i}"),
            args: vec![
                "server".into(),
                "--data-dir".into(),
                path_arg(&data_dir.join(format!("store{i}"))),
                "--addr".into(),
                addr,
                "--status-addr".into(),
                status,
                "--pd".into(),
                pd_addr.clone(),
                "--config".into(),
                path_arg(&store_config),
            ],
            child: None,
            log: data_dir.join(format!("store{i}.log")),
        });
    }
    for p in procs.iter_mut() {
        p.start(&exe)?;
    }
    let pids_file = data_dir.join("pids");
    write_pids(&pids_file, &procs)?;
    println!("\nPD address: {pd_addr}");
    println!("data and logs: {}", data_dir.display());
    println!("try: flotilla ctl --pd {pd_addr} regions     (Ctrl-C stops the cluster)\n");
    supervise(&exe, &mut procs, &pids_file).await;
    stop_all(&mut procs);
    Ok(())
}

pub(crate) fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Writes the pids of the running processes, one per line (what `flotilla bench
/// --server-pids-file` reads to count the servers' CPU time).
fn write_pids(file: &Path, procs: &[Proc]) -> Result<()> {
    let pids: String = procs
        .iter()
        .filter_map(|p| p.child.as_ref().map(|c| format!("{}\n", c.id())))
        .collect();
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, pids)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// Restarts any process that exits until Ctrl-C or SIGTERM.
async fn supervise(exe: &Path, procs: &mut [Proc], pids_file: &Path) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let mut restarted = false;
        for p in procs.iter_mut() {
            let exited = match p.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(status),
                _ => None,
            };
            if let Some(status) = exited {
                println!("{} exited ({status}); restarting", p.name);
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(e) = p.start(exe) {
                    println!("cannot restart {}: {e:#}", p.name);
                }
                restarted = true;
            }
        }
        if restarted {
            if let Err(e) = write_pids(pids_file, procs) {
                println!("cannot write {}: {e:#}", pids_file.display());
            }
        }
    }
}

/// Asks every process to stop (SIGTERM), then kills those still running after 15 seconds.
/// Stores first, PD last.
pub(crate) fn stop_all(procs: &mut [Proc]) {
    println!("stopping...");
    for p in procs.iter().rev() {
        p.signal(libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for p in procs.iter_mut().rev() {
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
