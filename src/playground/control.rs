//! The control channel of a running playground. The playground listens on a loopback port
//! (chosen by the OS) and names it in `<data-dir>/playground.json` ([`PlaygroundInfo`], with its
//! pid and the PD members' addresses); the file goes when the playground stops.
//!
//! Protocol: one connection per request; the client writes one JSON line ([`Request`]), the
//! playground answers one JSON line ([`Response`]) and closes. Requests are bounded in size and
//! time. Scale-in is answered once PD has accepted the decommission; the playground then stops
//! the store by itself once PD reports it a Tombstone (the client may watch or go away).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::Playground;

/// The file a running playground writes in its data dir.
pub const INFO_FILE: &str = "playground.json";
/// Longest request or answer line, in bytes.
const LINE_BYTES_MAX: u64 = 1 << 20;
/// How long one control exchange may take (a scale-in waits for PD's answer).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// What `playground.json` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaygroundInfo {
    /// The playground's pid.
    pub pid: u32,
    /// Its control address (`127.0.0.1:PORT`).
    pub control_addr: String,
    /// The PD members' client addresses.
    pub pd: Vec<String>,
}

impl PlaygroundInfo {
    /// Writes `playground.json` in `data_dir` (atomically: readers never see half a file).
    pub fn write(&self, data_dir: &Path) -> Result<()> {
        let path = data_dir.join(INFO_FILE);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads `playground.json` from `data_dir`.
    pub fn read(data_dir: &Path) -> Result<PlaygroundInfo> {
        let path = data_dir.join(INFO_FILE);
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "no playground runs on {} (no {INFO_FILE})",
                data_dir.display()
            )
        })?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Removes `playground.json` from `data_dir` (a playground that stops).
    pub fn remove(data_dir: &Path) {
        let _ = std::fs::remove_file(data_dir.join(INFO_FILE));
    }

    /// The PD members' addresses, comma separated.
    pub fn pd_endpoints(&self) -> String {
        self.pd.join(",")
    }
}

/// A request to the running playground.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Every process, with its state.
    Display,
    /// Start `count` new stores.
    ScaleOut { count: usize },
    /// Decommission the store PD knows as `store_id`.
    ScaleIn { store_id: u64 },
}

/// One process of the playground as `display` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    /// `pd`, `pd2`, `store4`...
    pub name: String,
    /// `pd` or `store`.
    pub kind: String,
    /// The pid while it runs.
    pub pid: Option<u32>,
    /// Client (PD) or gRPC (store) address.
    pub addr: String,
    /// A store's status HTTP address.
    pub status_addr: Option<String>,
    /// Its data directory.
    pub data_dir: String,
    /// Its log file.
    pub log: String,
    /// `running`, `leaving` (decommissioning), `stopping` or `removed`.
    pub state: String,
    /// The store id, once the playground has learned it (from a scale-in).
    pub store_id: Option<u64>,
    /// Its CPU quota in cores, if it runs in a cgroup.
    pub cpu_cores: Option<f64>,
}

/// The playground's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Why the request was refused; `None` when it was done.
    pub error: Option<String>,
    /// Display: every process; scale-out: the new stores; scale-in: the leaving store.
    pub members: Vec<MemberView>,
}

/// The control server's address and task (aborted when the playground stops).
pub struct ControlServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The accept loop.
    pub task: tokio::task::JoinHandle<()>,
}

/// Listens on a loopback port for requests to `pg`.
pub async fn serve(pg: Arc<Mutex<Playground>>) -> Result<ControlServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let pg = pg.clone();
            tokio::spawn(async move {
                let served = tokio::time::timeout(EXCHANGE_TIMEOUT, serve_one(conn, &pg)).await;
                if let Ok(Err(e)) = served {
                    println!("control request failed: {e:#}");
                }
            });
        }
    });
    Ok(ControlServer { addr, task })
}

async fn serve_one(conn: TcpStream, pg: &Mutex<Playground>) -> Result<()> {
    let (read, mut write) = conn.into_split();
    let mut line = String::new();
    BufReader::new(read.take(LINE_BYTES_MAX))
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(req) => match handle(req, pg).await {
            Ok(members) => Response {
                error: None,
                members,
            },
            Err(e) => Response {
                error: Some(format!("{e:#}")),
                members: Vec::new(),
            },
        },
        Err(e) => Response {
            error: Some(format!("bad request: {e}")),
            members: Vec::new(),
        },
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

async fn handle(req: Request, pg: &Mutex<Playground>) -> Result<Vec<MemberView>> {
    let lock = || pg.lock().expect("playground lock");
    match req {
        Request::Display => Ok(lock().views()),
        Request::ScaleOut { count } => {
            let mut g = lock();
            let added = g.scale_out(count)?;
            Ok(added.into_iter().map(|m| g.view(m)).collect())
        }
        Request::ScaleIn { store_id } => {
            let pd = lock().pd_endpoints().to_owned();
            let states = super::scale::store_states(&pd).await?;
            let Some(store) = states.get(&store_id) else {
                bail!("PD does not know store {store_id}");
            };
            let Some(m) = lock().store_at(&store.address) else {
                bail!(
                    "store {store_id} ({}) is not a store of this playground",
                    store.address
                );
            };
            if store.state == "Up" {
                let path = format!("/pd/api/v1/store/{store_id}");
                crate::ctl::http_delete_json(&pd, &path)
                    .await
                    .with_context(|| format!("PD refused to decommission store {store_id}"))?;
            }
            let mut g = lock();
            g.mark_leaving(m, store_id);
            println!(
                "store {store_id} ({}) is decommissioning",
                g.members[m].proc.name
            );
            Ok(vec![g.view(m)])
        }
    }
}

/// Sends `req` to the playground running on `data_dir`; its answer, or an error if it refused.
pub async fn call(data_dir: &Path, req: &Request) -> Result<(PlaygroundInfo, Vec<MemberView>)> {
    let info = PlaygroundInfo::read(data_dir)?;
    let resp = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(&info.control_addr, req))
        .await
        .context("the playground did not answer in time")?
        .with_context(|| {
            format!(
                "no playground answers at {} (pid {} in {}): is it running?",
                info.control_addr,
                info.pid,
                data_dir.join(INFO_FILE).display()
            )
        })?;
    match resp.error {
        Some(e) => bail!("the playground refused: {e}"),
        None => Ok((info, resp.members)),
    }
}

async fn exchange(addr: &str, req: &Request) -> Result<Response> {
    let conn = TcpStream::connect(addr).await?;
    let (read, mut write) = conn.into_split();
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(read.take(LINE_BYTES_MAX))
        .read_line(&mut answer)
        .await?;
    serde_json::from_str(&answer).context("bad answer from the playground")
}

/// Fails if a playground already runs on `data_dir` (its control port answers).
pub async fn refuse_if_running(data_dir: &Path) -> Result<()> {
    let Ok(info) = PlaygroundInfo::read(data_dir) else {
        return Ok(());
    };
    let probe = tokio::time::timeout(
        Duration::from_secs(2),
        exchange(&info.control_addr, &Request::Display),
    )
    .await;
    if matches!(probe, Ok(Ok(_))) {
        bail!(
            "a playground (pid {}) already runs on {}",
            info.pid,
            data_dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_line_each() {
        let cases = [
            (Request::Display, r#"{"op":"display"}"#),
            (
                Request::ScaleOut { count: 2 },
                r#"{"op":"scale-out","count":2}"#,
            ),
            (
                Request::ScaleIn { store_id: 7 },
                r#"{"op":"scale-in","store_id":7}"#,
            ),
        ];
        for (req, text) in cases {
            assert_eq!(serde_json::to_string(&req).unwrap(), text);
            assert_eq!(serde_json::from_str::<Request>(text).unwrap(), req);
        }
        assert!(serde_json::from_str::<Request>(r#"{"op":"scale-sideways"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"scale-in"}"#).is_err());
    }

    #[test]
    fn the_info_file_round_trips_and_a_missing_one_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = PlaygroundInfo::read(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("no playground runs"), "{err:#}");
        let info = PlaygroundInfo {
            pid: 42,
            control_addr: "127.0.0.1:1".into(),
            pd: vec!["127.0.0.1:2".into(), "127.0.0.1:3".into()],
        };
        info.write(dir.path()).unwrap();
        assert_eq!(PlaygroundInfo::read(dir.path()).unwrap(), info);
        assert_eq!(info.pd_endpoints(), "127.0.0.1:2,127.0.0.1:3");
        PlaygroundInfo::remove(dir.path());
        assert!(PlaygroundInfo::read(dir.path()).is_err());
    }

    #[tokio::test]
    async fn a_call_to_a_playground_that_is_gone_names_it() {
        let dir = tempfile::tempdir().unwrap();
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let info = PlaygroundInfo {
            pid: 42,
            control_addr: format!("127.0.0.1:{port}"),
            pd: vec![],
        };
        info.write(dir.path()).unwrap();
        let err = call(dir.path(), &Request::Display).await.unwrap_err();
        assert!(format!("{err:#}").contains("is it running"), "{err:#}");
        refuse_if_running(dir.path()).await.unwrap();
    }
}
