//! `flotilla`: one binary for every role of a Flotilla cluster. This file parses the command
//! line and the optional TOML configuration and wires the crates together; the work happens in
//! `pd`, `server` and the modules beside this one.

mod bench;
mod chaos;
mod cpu_limit;
mod ctl;
mod pd_sim;
mod playground;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde::de::DeserializeOwned;

/// Flotilla: a Multi-Raft, sharded, transactional key-value store speaking TiKV's protocol.
#[derive(Parser, Debug)]
#[command(name = "flotilla", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the placement driver.
    Pd(PdArgs),
    /// Run one store.
    Server(ServerArgs),
    /// Run a PD group and three stores on 127.0.0.1 (data under ./data/playground); or scale
    /// out, scale in and display the one running.
    Playground(playground::PlaygroundCli),
    /// Drive load against a cluster and report throughput and latency.
    Bench(Box<bench::BenchArgs>),
    /// Turn `bench --json` results into markdown tables and PNG plots.
    BenchReport(report::ReportArgs),
    /// Grow and shrink a cluster of local processes under load, and measure it.
    BenchElastic(Box<bench::elastic::ElasticArgs>),
    /// Run a seeded fault campaign against a cluster of local processes and check the history.
    Chaos(Box<chaos::ChaosArgs>),
    /// Run a command in a CPU cgroup of its own with a quota (an emulated machine).
    CpuLimit(cpu_limit::CpuLimitArgs),
    /// Drive one PD with simulated stores and regions over its gRPC API, and measure it.
    PdSim(pd_sim::PdSimArgs),
    /// Check a history recorded by `flotilla chaos` (JSON lines).
    Check(chaos::CheckArgs),
    /// Region lookups through the official client, one JSON line per round (run by `chaos`).
    #[command(hide = true)]
    LookupProbe(chaos::lookup_probe::LookupProbeArgs),
    /// Look at and operate a running cluster.
    Ctl {
        /// PD address; comma-separated, the members of a PD group.
        #[arg(long, default_value = "127.0.0.1:2379")]
        pd: String,
        #[command(flatten)]
        tls: ctl::TlsArgs,
        #[command(subcommand)]
        cmd: ctl::CtlCommand,
    },
}

#[derive(clap::Args, Debug)]
struct PdArgs {
    /// TOML file with PD settings (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC and HTTP listen address.
    #[arg(long)]
    addr: Option<String>,
    /// Address advertised to clients (default: the listen address).
    #[arg(long)]
    advertise_addr: Option<String>,
    /// The members of a replicated PD, `ID=CLIENT_ADDR+PEER_ADDR,...` (e.g.
    /// `1=127.0.0.1:2379+127.0.0.1:2380,2=...`); omit to run PD alone. Every member gets the
    /// same list and its own --member-id; --addr defaults to the member's client address.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// This member's id in --initial-cluster.
    #[arg(long)]
    member_id: Option<u64>,
    #[command(flatten)]
    security: SecurityArgs,
}

/// The `[security]` settings as flags (they override the file's).
#[derive(clap::Args, Debug)]
struct SecurityArgs {
    /// CA certificate (PEM) that signs every member's and client's certificate; with
    /// --cert-path and --key-path, every port serves mutual TLS only.
    #[arg(long)]
    ca_path: Option<String>,
    /// This process's certificate (PEM).
    #[arg(long)]
    cert_path: Option<String>,
    /// This process's private key (PEM).
    #[arg(long)]
    key_path: Option<String>,
    /// Names a connecting certificate must carry (common name or DNS name), comma separated.
    #[arg(long, value_delimiter = ',')]
    cert_allowed_cn: Vec<String>,
}

impl SecurityArgs {
    fn apply(self, cfg: &mut security::SecurityConfig) {
        if let Some(p) = self.ca_path {
            cfg.ca_path = p;
        }
        if let Some(p) = self.cert_path {
            cfg.cert_path = p;
        }
        if let Some(p) = self.key_path {
            cfg.key_path = p;
        }
        if !self.cert_allowed_cn.is_empty() {
            cfg.cert_allowed_cn = self.cert_allowed_cn;
        }
    }
}

#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// TOML file with store settings (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC listen address (clients and other stores).
    #[arg(long)]
    addr: Option<String>,
    /// Address advertised to PD (default: the listen address).
    #[arg(long)]
    advertise_addr: Option<String>,
    /// HTTP status address (/metrics, /status).
    #[arg(long)]
    status_addr: Option<String>,
    /// PD endpoints, comma separated.
    #[arg(long, value_delimiter = ',')]
    pd: Vec<String>,
    #[command(flatten)]
    security: SecurityArgs,
}

fn load_config<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T> {
    match path {
        None => Ok(T::default()),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,raft_rs=warn,h2=warn,tower=warn,hyper=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

/// A panic on any thread of a PD or store process ends the process (fail-stop): a store whose
/// raft poller or apply thread died would otherwise keep its ports open and serve nothing, and
/// a supervisor could not tell it from a live one. The data on disk is what restart recovers.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        tracing::error!("a thread panicked: {info}; aborting the process");
        std::process::abort();
    }));
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run_pd(args: PdArgs) -> Result<()> {
    let mut cfg: pd::PdConfig = load_config(args.config.as_deref())?;
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    if let Some(a) = &args.addr {
        cfg.listen_addr = a.clone();
    }
    if let Some(a) = args.advertise_addr {
        cfg.advertise_addr = a;
    }
    if let Some(list) = args.initial_cluster {
        cfg.initial_cluster = pd::PdMember::parse_list(&list)?;
    }
    if let Some(id) = args.member_id {
        cfg.member_id = id;
    }
    args.security.apply(&mut cfg.security);
    if let (None, Some(me)) = (&args.addr, cfg.this_member()) {
        cfg.listen_addr = me.client_addr.clone();
    }
    let handle = pd::PdServer::start(cfg).await.context("starting PD")?;
    tracing::info!(addr = %handle.addr(), "PD is serving");
    stop_signal().await;
    tracing::info!("PD stopping");
    handle.shutdown().await;
    Ok(())
}

async fn run_server(args: ServerArgs) -> Result<()> {
    let mut cfg: server::ServerConfig = load_config(args.config.as_deref())?;
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    if let Some(a) = args.addr {
        cfg.addr = a;
    }
    if let Some(a) = args.advertise_addr {
        cfg.advertise_addr = a;
    }
    if let Some(a) = args.status_addr {
        cfg.status_addr = a;
    }
    if !args.pd.is_empty() {
        cfg.pd_endpoints = args.pd;
    }
    args.security.apply(&mut cfg.security);
    let node = server::Node::start(cfg)
        .await
        .context("starting the store")?;
    let store_id = node.store_id();
    tracing::info!(store_id, addr = %node.addr(), "store is serving");
    let removed = tokio::select! {
        _ = stop_signal() => false,
        _ = node.removed_from_cluster() => true,
    };
    tracing::info!("store stopping");
    node.stop().await;
    if removed {
        anyhow::bail!(
            "store {store_id} was removed from the cluster (Tombstone in PD): it stopped, and \
             its data dir cannot rejoin; start a new store on an empty data dir"
        );
    }
    Ok(())
}

/// The exit status of a check that ran: 1 if it failed (its findings already printed, last).
fn exit_code(end: chaos::RunEnd) -> ExitCode {
    match end {
        chaos::RunEnd::Passed => ExitCode::SUCCESS,
        chaos::RunEnd::Failed => ExitCode::FAILURE,
    }
}

/// An `Err` is an error of the tool (printed with its causes); a check that ran and failed is
/// not one: it prints its findings and exits with status 1.
fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let done = match cli.command {
        Command::Pd(a) => {
            init_logging();
            abort_on_panic();
            rt.block_on(run_pd(a))
        }
        Command::Server(a) => {
            init_logging();
            abort_on_panic();
            rt.block_on(run_server(a))
        }
        Command::Playground(a) => rt.block_on(playground::main(a)),
        Command::Bench(a) => {
            ctl::set_client_security(&a.tls)?;
            rt.block_on(bench::run(*a))
        }
        Command::BenchReport(a) => report::run(a),
        Command::BenchElastic(a) => rt.block_on(bench::elastic::run(*a)),
        Command::Chaos(a) => {
            let tls = match a.make_tls {
                true => playground::tls::PlaygroundTls::prepare(&a.dir)?.client(),
                false => a.tls.clone(),
            };
            ctl::set_client_security(&tls)?;
            return rt.block_on(chaos::run(*a)).map(exit_code);
        }
        Command::Check(a) => return chaos::check(a).map(exit_code),
        Command::CpuLimit(a) => return rt.block_on(cpu_limit::run(a)),
        Command::PdSim(a) => rt.block_on(pd_sim::run(a)),
        Command::LookupProbe(a) => {
            ctl::set_client_security(&ctl::TlsArgs {
                ca: a.tls_ca.clone(),
                cert: a.tls_cert.clone(),
                key: a.tls_key.clone(),
            })?;
            rt.block_on(chaos::lookup_probe::run(a))
        }
        Command::Ctl { pd, tls, cmd } => {
            ctl::set_client_security(&tls)?;
            rt.block_on(ctl::run(&pd, cmd))
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}
