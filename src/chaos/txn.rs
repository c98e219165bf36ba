//! What the transactional workloads (bank, list-append) share: the official client's
//! configuration, the three transaction modes, how a commit's outcome is classified, and the
//! lock resolver that cleans up after clients that gave up.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use checker::Outcome;
use rand::Rng;
use tikv_client::transaction::ResolveLocksOptions;
use tikv_client::{
    CheckLevel, Config, Error, Timestamp, TimestampExt, Transaction, TransactionClient,
    TransactionOptions,
};
use tokio::time::{sleep, timeout, timeout_at, Instant};

use super::Ctx;

/// Per-request timeout of the workloads' clients.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A transaction's bound from begin to the end of commit.
pub const TXN_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound of a best-effort rollback after a failure.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the resolver cleans up abandoned locks.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(3);
/// Locks younger than this may belong to a running transaction; the resolver leaves them.
const RESOLVE_AGE: Duration = Duration::from_secs(15);

/// The workloads' client configuration: the default keyspace, short request timeouts.
pub fn client_config() -> Config {
    crate::ctl::tikv_config()
        .with_default_keyspace()
        .with_timeout(REQUEST_TIMEOUT)
}

/// Connects to PD, retrying for up to a minute (PD may be restarting).
pub async fn connect(pd: &str) -> Result<TransactionClient> {
    let mut last = None;
    for _ in 0..120 {
        match TransactionClient::new_with_config(crate::ctl::pd_endpoints(pd), client_config())
            .await
        {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
        sleep(Duration::from_millis(500)).await;
    }
    bail!("cannot connect to PD at {pd}: {last:?}")
}

/// How a transaction runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Optimistic two-phase commit.
    Optimistic,
    /// Optimistic with async commit.
    AsyncCommit,
    /// Pessimistic: reads that feed writes lock the key.
    Pessimistic,
}

impl Mode {
    /// One of the three, uniformly.
    pub fn random(rng: &mut impl Rng) -> Mode {
        match rng.gen_range(0..3) {
            0 => Mode::Optimistic,
            1 => Mode::AsyncCommit,
            _ => Mode::Pessimistic,
        }
    }

    /// The mode's name in history lines.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Optimistic => "optimistic",
            Mode::AsyncCommit => "async-commit",
            Mode::Pessimistic => "pessimistic",
        }
    }

    /// A history record (a JSON object) as a line, with a `"mode"` field naming this mode, so
    /// that a failing transaction can be traced to the commit protocol it ran.
    pub fn tag(self, mut record: serde_json::Value) -> String {
        record["mode"] = self.name().into();
        record.to_string()
    }

    /// The client's options for this mode.
    pub fn options(self) -> TransactionOptions {
        let opts = match self {
            Mode::Optimistic => TransactionOptions::new_optimistic(),
            Mode::AsyncCommit => TransactionOptions::new_optimistic().use_async_commit(),
            Mode::Pessimistic => TransactionOptions::new_pessimistic(),
        };
        // A transaction cut off by its timeout is dropped active; that is not a bug here.
        opts.drop_check(CheckLevel::Warn)
    }
}

/// Whether a commit error proves the transaction can never commit: a key's prewrite was
/// refused (write conflict, a lock that would not resolve, deadlock), so that key holds no
/// lock of this transaction: 2PC never commits the primary, and async commit's secondary
/// check finds the lock missing.
pub fn is_definite_refusal(e: &Error) -> bool {
    match e {
        Error::KeyError(k) => {
            k.conflict.is_some() || k.already_exist.is_some() || k.deadlock.is_some()
        }
        Error::ResolveLockError(_) => true,
        Error::ExtractedErrors(es) | Error::MultipleKeyErrors(es) => {
            es.iter().any(is_definite_refusal)
        }
        Error::PessimisticLockError { inner, .. } => is_definite_refusal(inner),
        _ => false,
    }
}

/// What a transaction body decided.
pub enum Body {
    /// Commit the buffered writes.
    Commit,
    /// Roll back (nothing to do, e.g. a transfer without funds).
    Rollback,
}

/// Runs one transaction within [`TXN_TIMEOUT`]: begin in `mode`, run `body`, commit. The
/// outcome is `Committed` only when commit returned Ok; `Aborted` when the body failed or was
/// declined (commit never sent) or the commit was refused definitely; `Unknown` otherwise,
/// including when the client library panicked (tikv-client 0.4 unwraps a missing
/// `min_commit_ts` in async commit; the transaction runs on its own task so that a panic costs
/// only its outcome).
pub async fn run_txn<F, Fut>(client: &TransactionClient, mode: Mode, body: F) -> Outcome
where
    F: FnOnce(Transaction) -> Fut + Send + 'static,
    Fut: Future<Output = (Transaction, tikv_client::Result<Body>)> + Send,
{
    let client = client.clone();
    match tokio::spawn(async move { run_txn_inner(&client, mode, body).await }).await {
        Ok(outcome) => outcome,
        Err(e) => {
            if e.is_panic() {
                CLIENT_PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Outcome::Unknown
        }
    }
}

/// Transactions whose client library panicked in this process (the verdict reports them: the
/// known one, a missing async-commit `min_commit_ts`, is the mark of a request the client
/// dropped when it could not look up a region).
pub static CLIENT_PANICS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn run_txn_inner<F, Fut>(client: &TransactionClient, mode: Mode, body: F) -> Outcome
where
    F: FnOnce(Transaction) -> Fut,
    Fut: Future<Output = (Transaction, tikv_client::Result<Body>)>,
{
    let deadline = Instant::now() + TXN_TIMEOUT;
    let Ok(Ok(txn)) = timeout_at(deadline, client.begin_with_options(mode.options())).await else {
        return Outcome::Aborted;
    };
    let (mut txn, decided) = match timeout_at(deadline, body(txn)).await {
        Ok(r) => r,
        // The body holds the transaction; dropping it unfinished sends nothing more.
        Err(_) => return Outcome::Aborted,
    };
    if !matches!(decided, Ok(Body::Commit)) {
        // Commit was never sent: whatever the rollback does, nothing is visible.
        let _ = timeout(ROLLBACK_TIMEOUT, txn.rollback()).await;
        return Outcome::Aborted;
    }
    match timeout_at(deadline, txn.commit()).await {
        Ok(Ok(_)) => Outcome::Committed,
        Ok(Err(e)) if is_definite_refusal(&e) => {
            let _ = timeout(ROLLBACK_TIMEOUT, txn.rollback()).await;
            Outcome::Aborted
        }
        // A timeout, a region or transport error, an undetermined commit: it may have landed.
        _ => Outcome::Unknown,
    }
}

/// Reads `keys` in one snapshot at a fresh timestamp: key to value, absent keys left out.
pub async fn snapshot_read(
    client: &TransactionClient,
    keys: impl IntoIterator<Item = String>,
) -> tikv_client::Result<HashMap<Vec<u8>, Vec<u8>>> {
    let ts = client.current_timestamp().await?;
    let mut snap = client.snapshot(ts, Mode::Optimistic.options().read_only());
    Ok(snap
        .batch_get(keys)
        .await?
        .map(|p| (Vec::<u8>::from(p.key().clone()), p.value().clone()))
        .collect())
}

/// How long the final phase's steps (clean-up, read) may take once the faults healed.
const FINAL_BOUND: Duration = Duration::from_secs(180);

/// Tries `attempt` (each try within `each`) a second apart until it succeeds or
/// [`FINAL_BOUND`] has passed, printing every failed try with the run clock (a final step
/// that does not finish is a liveness failure to diagnose); its call time, return time (run
/// clock) and result.
async fn retry_final<T, F, Fut>(
    ctx: &Ctx,
    what: &str,
    each: Duration,
    attempt: F,
) -> Result<(u64, u64, T)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = tikv_client::Result<T>>,
{
    let deadline = Instant::now() + FINAL_BOUND;
    let mut last = None;
    while Instant::now() < deadline {
        let call = ctx.clock.now_ns();
        let err = match timeout_at(deadline.min(Instant::now() + each), attempt()).await {
            Ok(Ok(v)) => return Ok((call, ctx.clock.now_ns(), v)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        println!("  {what} at {:.1}s failed: {err}", call as f64 / 1e9);
        last = Some(err);
        sleep(Duration::from_secs(1)).await;
    }
    bail!("the {what} did not succeed within {FINAL_BOUND:?} after the faults healed: {last:?}")
}

/// The read after the faults healed (see [`retry_final`]).
pub async fn final_read<T, F, Fut>(ctx: &Ctx, read: F) -> Result<(u64, u64, T)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = tikv_client::Result<T>>,
{
    retry_final(ctx, "final read", TXN_TIMEOUT, read).await
}

/// Workload keys per clean-up call. tikv-client 0.4 sends each region its ScanLock with the
/// end of the whole range, not the region's (`ScanLockRequest::apply_shard` sets only the
/// start), and after a region error retries the rest of the range from that region on, where
/// each region that errs does the same: over a range of many regions the retries multiply
/// (a two-minute list-append campaign's resolver sent ScanLocks at 2,000 a second for minutes
/// after the faults had healed). Over a few keys the rest is a region or two.
const RESOLVE_CHUNK_KEYS: u64 = 16;

/// Cleans up the locks of transactions started more than `age` ago (all of them, if `age` is
/// zero) on the workload's keys, a few keys at a time: committed if their primary (or, for
/// async commit, every secondary) says so, rolled back otherwise.
pub async fn resolve_old_locks(
    ctx: &Ctx,
    client: &TransactionClient,
    age: Duration,
) -> tikv_client::Result<()> {
    let now = client.current_timestamp().await?.version();
    let age_ts = (age.as_millis() as u64) << 18;
    let safe_point = Timestamp::from_version(now.saturating_sub(age_ts));
    for (lo, hi) in ctx.key_chunks(RESOLVE_CHUNK_KEYS) {
        client
            .cleanup_locks(lo..hi, &safe_point, ResolveLocksOptions::default())
            .await?;
    }
    Ok(())
}

/// The lock resolver, as TiDB's GC worker does it: the official client's readers cannot
/// resolve an async-commit lock whose client gave up, so every few seconds locks older than any
/// running transaction are resolved. Runs until `ctx.stop`; returns how many rounds failed.
pub async fn resolver_task(ctx: Arc<Ctx>) -> u32 {
    let Ok(client) = connect(&ctx.pd).await else {
        return 1;
    };
    let mut failures = 0;
    while !ctx.stop.load(Ordering::SeqCst) {
        sleep(RESOLVE_INTERVAL).await;
        let round = timeout(TXN_TIMEOUT, resolve_old_locks(&ctx, &client, RESOLVE_AGE)).await;
        if !matches!(round, Ok(Ok(()))) {
            failures += 1;
        }
    }
    failures
}

/// Resolves every lock left (all clients have stopped; see [`retry_final`]).
pub async fn resolve_all_locks(ctx: &Ctx, client: &TransactionClient) -> Result<()> {
    println!("clients stopped; resolving the locks they left");
    retry_final(ctx, "final lock clean-up", Duration::from_secs(20), || {
        resolve_old_locks(ctx, client, Duration::ZERO)
    })
    .await
    .map(|_| ())
}
