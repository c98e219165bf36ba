//! The systems a benchmark drives. Every target offers the same operations, so one load
//! generator measures them all and the client side costs the same.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use tikv_client::{CheckLevel, RawClient, TransactionClient, TransactionOptions};

/// Which kind of system `--target` names.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// A Flotilla cluster, through `tikv-client` (default keyspace), found via `--pd`.
    Flotilla,
    /// An etcd cluster, through its v3 gRPC API (`etcd-client`), at `--endpoints`.
    Etcd,
    /// No server: each put appends the value to a file under `--fsync-dir` and fdatasyncs it;
    /// the disk's own write latency, to hold the others against.
    Disk,
}

/// How a transaction of blind writes commits (Flotilla only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Two-phase commit.
    TwoPhase,
    /// Async commit: acknowledged once every prewrite succeeded.
    Async,
    /// One-phase commit when every key is in one region.
    OnePc,
}

/// A connected target; cheap to clone, one clone per client task.
#[derive(Clone)]
pub enum Target {
    Flotilla {
        raw: RawClient,
        txn: Arc<TransactionClient>,
    },
    Etcd {
        client: Box<etcd_client::Client>,
        serializable: bool,
    },
    Disk {
        file: Arc<std::sync::Mutex<std::fs::File>>,
    },
}

/// Request timeout of every target's client.
const TIMEOUT: Duration = Duration::from_secs(10);

impl Target {
    /// Connects to Flotilla through the PD at `pd`.
    pub async fn flotilla(pd: &str) -> Result<Target> {
        let cfg = crate::ctl::tikv_config()
            .with_default_keyspace()
            .with_timeout(TIMEOUT);
        let raw = RawClient::new_with_config(vec![pd.to_string()], cfg.clone())
            .await
            .with_context(|| format!("connecting to Flotilla at {pd}"))?;
        let txn = TransactionClient::new_with_config(vec![pd.to_string()], cfg)
            .await
            .with_context(|| format!("connecting to Flotilla at {pd}"))?;
        Ok(Target::Flotilla {
            raw,
            txn: Arc::new(txn),
        })
    }

    /// Opens `connections` clients to etcd at `endpoints` (each its own HTTP/2 connection); task
    /// `i` uses client `i % connections`.
    pub async fn etcd(
        endpoints: &[String],
        connections: usize,
        serializable: bool,
    ) -> Result<Vec<Target>> {
        let urls: Vec<String> = endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let mut out = vec![];
        for _ in 0..connections.max(1) {
            let opts = etcd_client::ConnectOptions::new()
                .with_timeout(TIMEOUT)
                .with_connect_timeout(TIMEOUT);
            let client = etcd_client::Client::connect(&urls, Some(opts))
                .await
                .with_context(|| format!("connecting to etcd at {}", urls.join(",")))?;
            out.push(Target::Etcd {
                client: Box::new(client),
                serializable,
            });
        }
        Ok(out)
    }

    /// A file under `dir` for the disk target.
    pub fn disk(dir: &std::path::Path) -> Result<Target> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("fsync-probe.dat");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Target::Disk {
            file: Arc::new(std::sync::Mutex::new(file)),
        })
    }

    /// Writes `value` under `key`.
    pub async fn put(&mut self, key: String, value: Vec<u8>) -> Result<()> {
        match self {
            Target::Flotilla { raw, .. } => Ok(raw.put(key, value).await?),
            Target::Etcd { client, .. } => {
                client.put(key, value, None).await?;
                Ok(())
            }
            Target::Disk { file } => {
                let file = file.clone();
                tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    let mut f = file.lock().expect("disk probe lock");
                    f.write_all(&value)?;
                    f.sync_data()
                })
                .await??;
                Ok(())
            }
        }
    }

    /// Reads `key` (linearizable on Flotilla; on etcd as `--etcd-serializable` says); whether
    /// it was found.
    pub async fn get(&mut self, key: String) -> Result<bool> {
        match self {
            Target::Flotilla { raw, .. } => Ok(raw.get(key).await?.is_some()),
            Target::Etcd {
                client,
                serializable,
            } => {
                let opts = serializable.then(|| GetOptions::new().with_serializable());
                Ok(!client.get(key, opts).await?.kvs().is_empty())
            }
            Target::Disk { .. } => bail!("the disk target only does raw-put"),
        }
    }

    /// Reads up to `limit` pairs from `start` on; how many came back.
    pub async fn scan(&mut self, start: String, limit: u32) -> Result<usize> {
        match self {
            Target::Flotilla { raw, .. } => Ok(raw.scan(start.., limit).await?.len()),
            Target::Etcd {
                client,
                serializable,
            } => {
                let mut opts = GetOptions::new()
                    .with_from_key()
                    .with_limit(i64::from(limit));
                if *serializable {
                    opts = opts.with_serializable();
                }
                Ok(client.get(start, Some(opts)).await?.kvs().len())
            }
            Target::Disk { .. } => bail!("the disk target only does raw-put"),
        }
    }

    /// Reads `keys` and writes `value` to each in one transaction that fails if another
    /// transaction wrote any of them in between (a conflict is an error).
    pub async fn read_modify_write(
        &mut self,
        keys: Vec<String>,
        value: Vec<u8>,
        commit: Commit,
    ) -> Result<()> {
        match self {
            Target::Flotilla { txn, .. } => {
                flotilla_txn(txn, commit_options(commit), keys, value, true).await
            }
            Target::Etcd { client, .. } => etcd_read_modify_write(client, keys, value).await,
            Target::Disk { .. } => bail!("the disk target only does raw-put"),
        }
    }

    /// Writes `value` to every key of `keys` in one transaction without reading (Flotilla only).
    pub async fn blind_txn(
        &mut self,
        keys: Vec<String>,
        value: Vec<u8>,
        commit: Commit,
    ) -> Result<()> {
        let Target::Flotilla { txn, .. } = self else {
            bail!("blind-write transactions (txn, txn-async, txn-1pc) are Flotilla's only");
        };
        flotilla_txn(txn, commit_options(commit), keys, value, false).await
    }
}

/// The client's options for a commit protocol: one-phase commit falls back to async commit
/// when the keys span regions.
fn commit_options(commit: Commit) -> TransactionOptions {
    match commit {
        Commit::TwoPhase => optimistic(),
        Commit::Async => optimistic().use_async_commit(),
        Commit::OnePc => optimistic().try_one_pc().use_async_commit(),
    }
}

/// Optimistic transactions that may be dropped uncommitted (a failed one is rolled back).
fn optimistic() -> TransactionOptions {
    TransactionOptions::new_optimistic().drop_check(CheckLevel::Warn)
}

/// One Flotilla transaction: reads `keys` first if `read_first`, writes `value` to each,
/// commits; rolled back on any failure.
async fn flotilla_txn(
    txn: &TransactionClient,
    opts: TransactionOptions,
    keys: Vec<String>,
    value: Vec<u8>,
    read_first: bool,
) -> Result<()> {
    let mut t = txn.begin_with_options(opts).await?;
    let result = async {
        if read_first {
            t.batch_get(keys.clone()).await?.for_each(drop);
        }
        for k in keys {
            t.put(k, value.clone()).await?;
        }
        t.commit().await
    }
    .await;
    if let Err(e) = result {
        let _ = t.rollback().await;
        return Err(e.into());
    }
    Ok(())
}

/// etcd's read-modify-write: read every key in one transaction, then write them all in a second
/// that only succeeds if none changed since (compare on mod_revision), as etcd's STM does.
async fn etcd_read_modify_write(
    client: &mut etcd_client::Client,
    keys: Vec<String>,
    value: Vec<u8>,
) -> Result<()> {
    let reads: Vec<TxnOp> = keys.iter().map(|k| TxnOp::get(k.clone(), None)).collect();
    let read = client.txn(Txn::new().and_then(reads)).await?;
    let revisions: Vec<i64> = read
        .op_responses()
        .into_iter()
        .map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map_or(0, |kv| kv.mod_revision()),
            _ => 0,
        })
        .collect();
    if revisions.len() != keys.len() {
        bail!(
            "etcd answered {} reads for {} keys",
            revisions.len(),
            keys.len()
        );
    }
    let compares: Vec<Compare> = keys
        .iter()
        .zip(&revisions)
        .map(|(k, rev)| Compare::mod_revision(k.clone(), CompareOp::Equal, *rev))
        .collect();
    let puts: Vec<TxnOp> = keys
        .iter()
        .map(|k| TxnOp::put(k.clone(), value.clone(), None))
        .collect();
    let write = client.txn(Txn::new().when(compares).and_then(puts)).await?;
    if !write.succeeded() {
        bail!("write conflict: a key changed between read and write");
    }
    Ok(())
}
