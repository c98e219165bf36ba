//! `flotilla ctl`: look at a running cluster through PD's HTTP API, and do quick raw reads and
//! writes through the official client.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use codec::hex::{from_hex as unhex, to_hex as hex};
use serde_json::Value;
use tikv_client::{Config, RawClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What `flotilla ctl` can do.
#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// List the stores PD knows: state (Up, Offline, Tombstone), liveness, region and leader
    /// counts, and for an Offline store the regions it still holds (left to move away).
    Stores,
    /// Look at or decommission one store.
    Store {
        /// What to do with the store.
        #[command(subcommand)]
        cmd: StoreCommand,
    },
    /// List regions: id, key range, leader, peers, size and keys.
    Regions,
    /// Show the region that holds KEY (a raw key of the default keyspace).
    Region {
        /// The key, as text.
        key: String,
    },
    /// Read one key.
    Get {
        /// The key.
        key: String,
    },
    /// Write one key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Time to live in seconds (0: forever).
        #[arg(long, default_value_t = 0)]
        ttl: u64,
    },
    /// Remove one key.
    Delete {
        /// The key.
        key: String,
    },
    /// Remove every key in [START, END) (one raw delete-range).
    DeleteRange {
        /// First key (inclusive).
        start: String,
        /// Last key (exclusive); empty for the end.
        #[arg(default_value = "")]
        end: String,
    },
    /// Ask PD to merge region SOURCE into the adjacent region TARGET (PD first moves SOURCE's
    /// replicas onto TARGET's stores).
    Merge {
        /// The region that goes away.
        source: u64,
        /// The region that takes its range over.
        target: u64,
    },
    /// Split the keys `flotilla bench` writes (`bench000000000000` on, raw keys of the default
    /// keyspace) into REGIONS regions of equal key ranges through PD's split operators, and
    /// wait until they all exist. PD merges small regions again after its
    /// `split_merge_interval_secs` unless its `merge_schedule_limit` is 0.
    Presplit {
        /// Regions to have over the bench keys.
        #[arg(long)]
        regions: u64,
        /// The bench's key count (`flotilla bench --keys`).
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// List keys in [START, END).
    Scan {
        /// First key (inclusive); empty for the beginning.
        #[arg(default_value = "")]
        start: String,
        /// Last key (exclusive); empty for the end.
        #[arg(default_value = "")]
        end: String,
        /// Most pairs to show.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Scan from the end backwards.
        #[arg(long)]
        reverse: bool,
    },
}

/// `flotilla ctl store ...`.
#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Show one store as PD knows it.
    Show {
        /// The store id.
        id: u64,
    },
    /// Decommission a store: PD marks it Offline, moves its replicas away, then makes it a
    /// Tombstone. Refused if fewer Up stores than `max_replicas` would be left, unless `--force`.
    Delete {
        /// The store id.
        id: u64,
        /// Skip the check on the number of Up stores left.
        #[arg(long)]
        force: bool,
    },
    /// Cancel a decommission: bring an Offline store back Up (a Tombstone cannot come back).
    Up {
        /// The store id.
        id: u64,
    },
}

/// Runs one ctl command against the PD at `pd` (comma-separated: the members of a PD group).
pub async fn run(pd: &str, cmd: CtlCommand) -> Result<()> {
    match cmd {
        CtlCommand::Stores => print_stores(pd).await,
        CtlCommand::Store { cmd } => store_command(pd, cmd).await,
        CtlCommand::Regions => print_regions(pd).await,
        CtlCommand::Presplit {
            regions,
            keys,
            timeout_secs,
        } => presplit(pd, regions, keys, Duration::from_secs(timeout_secs)).await,
        CtlCommand::Region { key } => {
            let encoded = region_key(key.as_bytes());
            let regions = http_get_json(pd, "/pd/api/v1/regions").await?;
            for r in regions["regions"].as_array().into_iter().flatten() {
                let start = r["start_key"].as_str().unwrap_or("");
                let end = r["end_key"].as_str().unwrap_or("");
                if start <= encoded.as_str() && (end.is_empty() || encoded.as_str() < end) {
                    println!("{}", serde_json::to_string_pretty(r)?);
                    return Ok(());
                }
            }
            bail!("no region holds key {key:?}")
        }
        CtlCommand::Get { key } => {
            let c = client(pd).await?;
            match c.get(key.into_bytes()).await? {
                Some(v) => println!("{}", String::from_utf8_lossy(&v)),
                None => println!("(not found)"),
            }
            Ok(())
        }
        CtlCommand::Put { key, value, ttl } => {
            let c = client(pd).await?;
            if ttl > 0 {
                c.put_with_ttl(key.into_bytes(), value.into_bytes(), ttl)
                    .await?;
            } else {
                c.put(key.into_bytes(), value.into_bytes()).await?;
            }
            println!("ok");
            Ok(())
        }
        CtlCommand::Delete { key } => {
            client(pd).await?.delete(key.into_bytes()).await?;
            println!("ok");
            Ok(())
        }
        CtlCommand::DeleteRange { start, end } => {
            client(pd)
                .await?
                .delete_range(scan_range(start, end))
                .await?;
            println!("ok");
            Ok(())
        }
        CtlCommand::Merge { source, target } => {
            let body = serde_json::json!({
                "name": "merge-region",
                "source_region_id": source,
                "target_region_id": target,
            });
            http_post_json(pd, "/pd/api/v1/operators", &body).await?;
            println!("merge of region {source} into region {target} scheduled");
            Ok(())
        }
        CtlCommand::Scan {
            start,
            end,
            limit,
            reverse,
        } => {
            let c = client(pd).await?;
            let range = scan_range(start, end);
            let pairs = if reverse {
                c.scan_reverse(range, limit).await?
            } else {
                c.scan(range, limit).await?
            };
            for p in pairs {
                let k: Vec<u8> = p.key().clone().into();
                println!(
                    "{}\t{}",
                    String::from_utf8_lossy(&k),
                    String::from_utf8_lossy(p.value())
                );
            }
            Ok(())
        }
    }
}

/// A raw key of the default keyspace as region boundaries hold it (hex).
fn region_key(raw: &[u8]) -> String {
    let mut full = vec![b'r', 0, 0, 0];
    full.extend_from_slice(raw);
    hex(&codec::memcomparable::encode_bytes(&full))
}

/// Split keys per operator: below PD's `split_count_max` (256 by default).
const PRESPLIT_BATCH: usize = 128;

/// `flotilla ctl presplit`: asks PD, round after round, to split every region that holds
/// wanted boundaries strictly inside it (at most [`PRESPLIT_BATCH`] per operator, one operator
/// per region at a time), until every wanted boundary is one.
async fn presplit(pd: &str, regions: u64, keys: u64, timeout: Duration) -> Result<()> {
    if regions < 2 || regions > keys {
        bail!("--regions must be at least 2 and at most --keys ({keys})");
    }
    // Increasing: bench key names are zero-padded.
    let wanted: Vec<String> = (1..regions)
        .map(|i| region_key(crate::bench::key_name(i * keys / regions).as_bytes()))
        .collect();
    let started = std::time::Instant::now();
    loop {
        // A PD that is busy carrying out the last round's splits may not answer in time; that
        // round is skipped (the whole is bounded by `timeout`).
        let v = match http_get_json(pd, "/pd/api/v1/regions").await {
            Ok(v) => v,
            Err(e) if started.elapsed() < timeout => {
                eprintln!("listing regions: {e:#}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.context("listing regions")),
        };
        let (mut asked, mut refused, mut failed) = (0, None, 0);
        let listed = v["regions"].as_array().cloned().unwrap_or_default();
        // A boundary is in place when a region PD knows starts there: a split's new regions
        // reach PD with their first heartbeats, and until then PD's directory has a gap.
        let starts: std::collections::HashSet<&str> = listed
            .iter()
            .filter_map(|r| r["start_key"].as_str())
            .collect();
        let left = wanted
            .iter()
            .filter(|k| !starts.contains(k.as_str()))
            .count();
        for r in &listed {
            let start = r["start_key"].as_str().unwrap_or("");
            let end = r["end_key"].as_str().unwrap_or("");
            let from = wanted.partition_point(|k| k.as_str() <= start);
            let to = if end.is_empty() {
                wanted.len()
            } else {
                wanted.partition_point(|k| k.as_str() < end)
            };
            if from >= to {
                continue;
            }
            let batch = spread(&wanted[from..to], PRESPLIT_BATCH);
            let body = serde_json::json!({
                "name": "split-region",
                "region_id": r["id"],
                "policy": "usekey",
                "keys": batch,
            });
            match http_post_json(pd, "/pd/api/v1/operators", &body).await {
                Ok(_) => asked += 1,
                // Busy with an operator (perhaps the last round's split), or split or merged
                // since the listing: the next round sees the regions as they are then.
                Err(e)
                    if [" 409", " 404", " 400"]
                        .iter()
                        .any(|c| e.to_string().contains(c)) =>
                {
                    refused = Some(format!("region {}: {e:#}", r["id"]));
                }
                // No answer in time, or PD failed: asked again next round, while time is left.
                Err(e) => {
                    failed += 1;
                    refused = Some(format!("region {}: {e:#}", r["id"]));
                }
            }
        }
        if left == 0 {
            println!(
                "{} boundaries in place after {:.1} s",
                wanted.len(),
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        eprintln!(
            "{left} boundaries to go; {asked} split operators asked this round, {failed} failed"
        );
        if started.elapsed() > timeout {
            bail!(
                "{left} of {} boundaries still missing after {timeout:?} (last refusal: {})",
                wanted.len(),
                refused.unwrap_or_else(|| "none".into())
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// At most `n` of `keys`, evenly spaced: a region that holds many wanted boundaries is split
/// into pieces that hold about as many each, so a presplit takes a few rounds (each waits for
/// the regions' heartbeats) rather than one round per batch.
fn spread(keys: &[String], n: usize) -> Vec<&String> {
    if keys.len() <= n {
        return keys.iter().collect();
    }
    (1..=n).map(|i| &keys[i * keys.len() / (n + 1)]).collect()
}

fn scan_range(start: String, end: String) -> tikv_client::BoundRange {
    let start = start.into_bytes();
    if end.is_empty() {
        (start..).into()
    } else {
        (start..end.into_bytes()).into()
    }
}

async fn client(pd: &str) -> Result<RawClient> {
    let cfg = tikv_config()
        .with_default_keyspace()
        .with_timeout(Duration::from_secs(10));
    RawClient::new_with_config(pd_endpoints(pd), cfg)
        .await
        .context("connecting to the cluster")
}

async fn print_stores(pd: &str) -> Result<()> {
    let v = http_get_json(pd, "/pd/api/v1/stores").await?;
    print!("{}", stores_table(&v));
    Ok(())
}

/// The table `flotilla ctl stores` prints for PD's `/pd/api/v1/stores` answer.
fn stores_table(v: &Value) -> String {
    let mut out = format!(
        "{:<6} {:<22} {:<10} {:<5} {:>8} {:>8} {:>12}\n",
        "id", "address", "state", "live", "regions", "leaders", "regions left"
    );
    for s in v["stores"].as_array().into_iter().flatten() {
        let state = s["store"]["state"].as_str().unwrap_or("Unknown");
        let live = if s["status"]["is_up"].as_bool().unwrap_or(false) {
            "up"
        } else {
            "down"
        };
        // Progress of a decommission: the peers PD still has to move off the store.
        let left = match state {
            "Offline" => s["status"]["region_count"].to_string(),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "{:<6} {:<22} {:<10} {:<5} {:>8} {:>8} {:>12}\n",
            // A JSON value ignores widths: strings are padded.
            s["store"]["id"].to_string(),
            s["store"]["address"].as_str().unwrap_or(""),
            state,
            live,
            s["status"]["region_count"].to_string(),
            s["status"]["leader_count"].to_string(),
            left,
        ));
    }
    out
}

async fn store_command(pd: &str, cmd: StoreCommand) -> Result<()> {
    match cmd {
        StoreCommand::Show { id } => {
            let v = http_get_json(pd, &format!("/pd/api/v1/store/{id}")).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        StoreCommand::Delete { id, force } => {
            let query = if force { "?force=true" } else { "" };
            http_delete_json(pd, &format!("/pd/api/v1/store/{id}{query}")).await?;
            println!("store {id} is Offline: PD moves its regions away, then makes it Tombstone");
        }
        StoreCommand::Up { id } => {
            let path = format!("/pd/api/v1/store/{id}/state?state=Up");
            http_call(pd, "POST", &path, None).await?;
            println!("store {id} is Up");
        }
    }
    Ok(())
}

async fn print_regions(pd: &str) -> Result<()> {
    let v = http_get_json(pd, "/pd/api/v1/regions").await?;
    println!("{} regions", v["count"]);
    println!(
        "{:<6} {:<28} {:<28} {:<8} {:<24} {:>10} {:>8}",
        "id", "start", "end", "leader", "peers (id@store)", "size", "keys"
    );
    for r in v["regions"].as_array().into_iter().flatten() {
        let peers: Vec<String> = r["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}@{}", p["id"], p["store_id"]))
            .collect();
        println!(
            "{:<6} {:<28} {:<28} {:<8} {:<24} {:>10} {:>8}",
            r["id"].to_string(),
            show_key(r["start_key"].as_str().unwrap_or(""), "-inf"),
            show_key(r["end_key"].as_str().unwrap_or(""), "+inf"),
            r["leader"]["store_id"].to_string(),
            peers.join(","),
            r["approximate_size"].to_string(),
            r["approximate_keys"].to_string(),
        );
    }
    Ok(())
}

/// Shows an encoded region boundary (hex) as the raw key it stands for, printable if possible.
fn show_key(hex_key: &str, empty: &str) -> String {
    if hex_key.is_empty() {
        return empty.into();
    }
    let Some(bytes) = unhex(hex_key) else {
        return hex_key.to_string();
    };
    match codec::memcomparable::decode_bytes(&bytes) {
        Ok((raw, _)) => raw
            .iter()
            .map(|b| {
                if b.is_ascii_graphic() {
                    (*b as char).to_string()
                } else {
                    format!("\\x{b:02x}")
                }
            })
            .collect(),
        Err(_) => hex_key.to_string(),
    }
}

/// The TLS identity of a tool (`ctl`, `bench`, `chaos`): `--ca --cert --key`, as a cluster
/// with `[security]` set requires of every client. All three or none.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// CA certificate (PEM) of a cluster that runs with TLS.
    #[arg(long, requires_all = ["cert", "key"])]
    pub ca: Option<String>,
    /// This client's certificate (PEM), signed by --ca.
    #[arg(long, requires_all = ["ca", "key"])]
    pub cert: Option<String>,
    /// This client's private key (PEM).
    #[arg(long, requires_all = ["ca", "cert"])]
    pub key: Option<String>,
}

impl TlsArgs {
    /// The configuration these flags make (empty: plaintext).
    pub fn config(&self) -> security::SecurityConfig {
        let path = |p: &Option<String>| p.clone().unwrap_or_default();
        security::SecurityConfig::from_paths(path(&self.ca), path(&self.cert), path(&self.key))
    }
}

/// The process's client identity: a tool talks to one cluster, with one certificate, from every
/// task, so it is set once at start-up rather than passed through every call.
static CLIENT_SECURITY: std::sync::OnceLock<(security::SecurityManager, TlsArgs)> =
    std::sync::OnceLock::new();

/// Sets the process's client identity from `args` (checks the files now). A second call keeps
/// the first identity.
pub fn set_client_security(args: &TlsArgs) -> Result<()> {
    let manager = security::SecurityManager::new(&args.config())?;
    let _ = CLIENT_SECURITY.set((manager, args.clone()));
    Ok(())
}

/// The process's client identity (plaintext unless set).
pub fn client_security() -> security::SecurityManager {
    CLIENT_SECURITY
        .get()
        .map(|(m, _)| m.clone())
        .unwrap_or_default()
}

/// The process's `--ca --cert --key`, when it has an identity (a tool that starts processes
/// of its own, `chaos`, hands them the same files).
pub fn client_tls() -> Option<TlsArgs> {
    CLIENT_SECURITY
        .get()
        .filter(|(m, _)| m.is_tls())
        .map(|(_, a)| a.clone())
}

/// The official client's configuration: `with_security` when the process has an identity.
pub fn tikv_config() -> Config {
    let cfg = Config::default();
    match client_tls() {
        Some(t) => {
            let c = t.config();
            cfg.with_security(c.ca_path, c.cert_path, c.key_path)
        }
        None => cfg,
    }
}

impl TlsArgs {
    /// These flags again, for a process this one starts, under the names it takes (e.g.
    /// `["--ca-path", "--cert-path", "--key-path"]` for `flotilla pd` and `flotilla server`).
    pub fn args(&self, names: [&str; 3]) -> Vec<String> {
        let c = self.config();
        names
            .iter()
            .zip([c.ca_path, c.cert_path, c.key_path])
            .flat_map(|(n, v)| [(*n).to_owned(), v])
            .collect()
    }
}

/// A GET over HTTP/1.1 (over TLS when the process has an identity); PD's API is small enough
/// not to need a client crate.
pub async fn http_get_json(addr: &str, path: &str) -> Result<Value> {
    let body = http_get(addr, path).await?;
    serde_json::from_slice(&body).with_context(|| format!("{path}: bad JSON"))
}

/// The body of `GET path` at `addr` (plain HTTP/1.1); an error unless the status is 200.
pub async fn http_get(addr: &str, path: &str) -> Result<Vec<u8>> {
    http_call(addr, "GET", path, None).await
}

/// POSTs `body` as JSON; the JSON answer, or an error unless the status is 200 (its text
/// starts with the status line, e.g. `HTTP/1.1 409`).
pub async fn http_post_json(addr: &str, path: &str, body: &Value) -> Result<Value> {
    let answer = http_call(addr, "POST", path, Some(body.to_string())).await?;
    Ok(serde_json::from_slice(&answer).unwrap_or(Value::Null))
}

/// DELETEs `path`; the JSON answer, or an error unless the status is 2xx (see
/// [`http_post_json`]).
pub async fn http_delete_json(addr: &str, path: &str) -> Result<Value> {
    let answer = http_call(addr, "DELETE", path, None).await?;
    Ok(serde_json::from_slice(&answer).unwrap_or(Value::Null))
}

/// How long one HTTP exchange may take (a paused or partitioned process never answers).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The addresses of a comma-separated list (the members of a PD group).
pub fn pd_endpoints(pd: &str) -> Vec<String> {
    pd.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// How long one member of a PD group may take before the next is tried.
const PD_MEMBER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a call to a PD group keeps trying while no member leads (an election).
const PD_ELECTION_WAIT: Duration = Duration::from_secs(6);

/// One exchange with `addr`; with a comma-separated list (the members of a PD group), with each
/// in turn until one answers other than `503` (what a member that does not lead answers), for
/// up to [`PD_ELECTION_WAIT`].
async fn http_call(addr: &str, method: &str, path: &str, body: Option<String>) -> Result<Vec<u8>> {
    let members = pd_endpoints(addr);
    if members.len() <= 1 {
        let answer = http_call_within(HTTP_TIMEOUT, addr, method, path, body.clone()).await;
        // One member of a PD group named alone (the playground's first): a follower answers
        // 503 with the leader's URL, which is asked once in its place.
        return match answer.as_ref().err().and_then(leader_hint) {
            Some(leader) => http_call_within(HTTP_TIMEOUT, &leader, method, path, body).await,
            None => answer,
        };
    }
    let deadline = tokio::time::Instant::now() + PD_ELECTION_WAIT;
    loop {
        let mut errors = Vec::new();
        for member in &members {
            match http_call_within(PD_MEMBER_TIMEOUT, member, method, path, body.clone()).await {
                Ok(answer) => return Ok(answer),
                // Another status is the leader's own answer.
                Err(e) if is_other_answer(&e) => return Err(e),
                Err(e) => errors.push(format!("{member}: {e:#}")),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no PD member leads: {}", errors.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An HTTP answer whose status is not 2xx. Its text keeps the status line (`HTTP/1.1 409
/// Conflict`), which callers match on.
#[derive(Debug)]
pub struct HttpStatusError {
    /// The request path.
    pub path: String,
    /// The status code.
    pub code: u16,
    /// The status line.
    pub status_line: String,
    /// The body, as text.
    pub body: String,
}

impl std::fmt::Display for HttpStatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} {}", self.path, self.status_line, self.body)
    }
}

impl std::error::Error for HttpStatusError {}

/// The leader a PD follower names in its `503` answer (`{"leader": "http://HOST:PORT"}`).
fn leader_hint(e: &anyhow::Error) -> Option<String> {
    let s = e.downcast_ref::<HttpStatusError>()?;
    if s.code != 503 {
        return None;
    }
    let body: Value = serde_json::from_str(&s.body).ok()?;
    let leader = body["leader"].as_str()?;
    let leader = leader
        .strip_prefix("https://")
        .or_else(|| leader.strip_prefix("http://"))
        .unwrap_or(leader);
    (!leader.is_empty()).then(|| leader.to_owned())
}

/// Whether `e` is an HTTP answer other than `503`.
fn is_other_answer(e: &anyhow::Error) -> bool {
    e.downcast_ref::<HttpStatusError>()
        .is_some_and(|s| s.code != 503)
}

async fn http_call_within(
    bound: Duration,
    addr: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<Vec<u8>> {
    tokio::time::timeout(bound, http_exchange(addr, method, path, body))
        .await
        .with_context(|| format!("{method} {path} at {addr}: no answer within {bound:?}"))?
}

async fn http_exchange(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<Vec<u8>> {
    let host = addr
        .strip_prefix("https://")
        .or_else(|| addr.strip_prefix("http://"))
        .unwrap_or(addr);
    let mut s = client_security()
        .connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(b) = &body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.as_deref().unwrap_or(""));
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf).await {
        // A TLS peer that closes without close_notify after the whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        r => {
            r?;
        }
    }
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let body = &buf[split + 4..];
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_vec()
    };
    let status_line = head.lines().next().unwrap_or("").to_owned();
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{path}: malformed status line {status_line:?}"))?;
    if !(200..300).contains(&code) {
        return Err(HttpStatusError {
            path: path.to_owned(),
            code,
            status_line,
            body: String::from_utf8_lossy(&body).trim().to_owned(),
        }
        .into());
    }
    Ok(body)
}

fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..eol]);
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let after = &rest[eol + 2..];
        if n == 0 || after.len() < n {
            break;
        }
        out.extend_from_slice(&after[..n]);
        rest = after[n..].strip_prefix(b"\r\n").unwrap_or(&after[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presplit_batches_spread_over_the_region_so_the_pieces_hold_equal_shares() {
        let keys: Vec<String> = (0..1000).map(|i| format!("k{i:04}")).collect();
        let batch = spread(&keys, 9);
        let at: Vec<usize> = batch.iter().map(|k| k[1..].parse().unwrap()).collect();
        assert_eq!(at, vec![100, 200, 300, 400, 500, 600, 700, 800, 900]);
        // Few enough: all of them.
        assert_eq!(spread(&keys[..5], 9).len(), 5);
        // One more than a batch: every key but the first, none twice.
        let batch = spread(&keys[..10], 9);
        assert_eq!(batch.first().map(|k| k.as_str()), Some("k0001"));
        assert_eq!(batch.len(), 9);
    }

    fn status(code: u16, line: &str) -> anyhow::Error {
        HttpStatusError {
            path: "/p".into(),
            code,
            status_line: line.into(),
            body: String::new(),
        }
        .into()
    }

    #[test]
    fn only_a_503_moves_on_to_the_next_pd_member() {
        assert!(!is_other_answer(&status(
            503,
            "HTTP/1.1 503 Service Unavailable"
        )));
        assert!(!is_other_answer(&anyhow::anyhow!(
            "connecting to 127.0.0.1:1"
        )));
        let conflict = status(409, "HTTP/1.1 409 Conflict");
        assert!(is_other_answer(&conflict));
        // Callers match on the status line in the text.
        assert!(conflict.to_string().contains("HTTP/1.1 4"), "{conflict}");
    }

    #[test]
    fn a_follower_503_names_the_leader_to_ask_instead() {
        let follower = |body: &str| -> anyhow::Error {
            HttpStatusError {
                path: "/p".into(),
                code: 503,
                status_line: "HTTP/1.1 503 Service Unavailable".into(),
                body: body.into(),
            }
            .into()
        };
        let e = follower(r#"{"error":"not leader","leader":"http://127.0.0.1:2383"}"#);
        assert_eq!(leader_hint(&e).as_deref(), Some("127.0.0.1:2383"));
        assert_eq!(leader_hint(&follower(r#"{"error":"no leader"}"#)), None);
        assert_eq!(leader_hint(&follower("")), None);
        assert_eq!(leader_hint(&status(409, "HTTP/1.1 409 Conflict")), None);
    }

    #[test]
    fn the_stores_table_shows_state_and_regions_left_of_an_offline_store() {
        let v = serde_json::json!({"stores": [
            {"store": {"id": 1, "address": "a:1", "state": "Up"},
             "status": {"region_count": 5, "leader_count": 2, "is_up": true}},
            {"store": {"id": 2, "address": "a:2", "state": "Offline"},
             "status": {"region_count": 3, "leader_count": 0, "is_up": true}},
            {"store": {"id": 3, "address": "a:3", "state": "Tombstone"},
             "status": {"region_count": 0, "leader_count": 0, "is_up": false}},
        ]});
        let table = stores_table(&v);
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[1], ["1", "a:1", "Up", "up", "5", "2", "-"]);
        assert_eq!(lines[2], ["2", "a:2", "Offline", "up", "3", "0", "3"]);
        assert_eq!(lines[3], ["3", "a:3", "Tombstone", "down", "0", "0", "-"]);
        // Columns line up under their headings.
        let at = |l: &str, word: &str| l.find(word).unwrap();
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(at(rows[0], "address"), at(rows[1], "a:1"), "{table}");
        assert_eq!(rows[0].len(), rows[1].len(), "{table}");
    }

    /// A server answering every request with a fixed status line and body.
    async fn answering(status: &'static str, body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_delete_reads_the_status_code() {
        let ok = answering("200 OK", "{\"ok\":true}").await;
        let v = http_delete_json(&ok, "/pd/api/v1/store/1").await.unwrap();
        assert_eq!(v["ok"], true);
        let missing = answering("404 Not Found", "{\"error\":\"store 9 not found\"}").await;
        let e = http_delete_json(&missing, "/pd/api/v1/store/9")
            .await
            .unwrap_err();
        let status = e.downcast_ref::<HttpStatusError>().expect("typed status");
        assert_eq!(status.code, 404);
        assert!(status.body.contains("store 9 not found"), "{e:#}");
    }

    /// A process that accepts connections but never answers (SIGSTOPped, as the nemesis
    /// leaves one) must not hang its caller: list-append seed 3 hung on a paused PD.
    #[tokio::test]
    async fn an_http_call_to_a_silent_server_gives_up() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let _silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let bound = Duration::from_millis(300);
        let call = http_call_within(bound, &addr, "GET", "/status", None);
        let e = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the call hung past its bound")
            .unwrap_err();
        assert!(e.to_string().contains("no answer within"), "{e:#}");
    }
}
