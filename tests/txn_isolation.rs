//! End to end isolation test: eight clients of the official `TransactionClient` run a seeded
//! list-append workload (optimistic, optimistic with async commit, and pessimistic
//! transactions) against real `flotilla` processes while a nemesis moves region leaders
//! through PD's `transfer-leader` operator and restarts one store (SIGKILL, same data). A
//! final read of every key in one snapshot exposes lost appends.
//!
//! The client's read path cannot resolve the lock of an async-commit transaction whose client
//! gave up (it never checks the secondaries), so a resolver does what TiDB's GC worker does:
//! every few seconds it cleans up the workload's locks older than any running transaction,
//! deciding async-commit transactions from their secondaries. The `checker` crate then
//! looks for anomalies beyond snapshot isolation, and for stale reads in real time.
//!
//! Replay a run with `FLOTILLA_SEED=<seed>` (printed at the start). On failure the history
//! and the cluster's logs are kept in a directory the test prints.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checker::{
    check_list_append_with, decode_list, encode_list, history_to_json, CheckOptions, ListAppendGen,
    Op, Outcome, Txn,
};
use common::{http_post_json, ProcCluster, SMALL_REGIONS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use tikv_client::transaction::ResolveLocksOptions;
use tikv_client::{
    CheckLevel, Config, Error, Timestamp, TimestampExt, Transaction, TransactionClient,
    TransactionOptions,
};
use tokio::time::{sleep, timeout, timeout_at, Instant};

/// Client tasks running transactions, one at a time each.
const CLIENTS: u64 = 8;
/// How long the clients run transactions.
const WORKLOAD: Duration = Duration::from_secs(45);
/// Keys the generator keeps active at a time.
const ACTIVE_KEYS: u64 = 40;
/// Most ops in one transaction.
const OPS_PER_TXN_MAX: usize = 4;
/// Appends a key takes before the generator retires it: lists (and values) stay short.
const APPENDS_PER_KEY_MAX: u64 = 12;
/// A transaction's bound from begin to the end of commit.
const TXN_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound of a best-effort rollback after a failure.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the resolver cleans up abandoned locks.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(3);
/// Locks younger than this may belong to a running transaction; the resolver leaves them.
const RESOLVE_AGE: Duration = Duration::from_secs(15);
/// Committed transactions below which the run proves too little.
const COMMITTED_MIN: usize = 200;

/// Small regions so that the active keys span several: a split every 30 write records.
fn store_config() -> String {
    SMALL_REGIONS
        .replace("region_max_keys = 150", "region_max_keys = 40")
        .replace("region_split_keys = 100", "region_split_keys = 30")
}

fn config() -> Config {
    Config::default()
        .with_default_keyspace()
        .with_timeout(Duration::from_secs(3))
}

fn key_name(key: u64) -> String {
    format!("la{key:04}")
}

fn seed() -> u64 {
    let seed = std::env::var("FLOTILLA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("FLOTILLA_SEED={seed}");
    seed
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Optimistic,
    AsyncCommit,
    Pessimistic,
}

impl Mode {
    fn options(self) -> TransactionOptions {
        let opts = match self {
            Mode::Optimistic => TransactionOptions::new_optimistic(),
            Mode::AsyncCommit => TransactionOptions::new_optimistic().use_async_commit(),
            Mode::Pessimistic => TransactionOptions::new_pessimistic(),
        };
        // A transaction cut off by its timeout is dropped active; that is not a bug here.
        opts.drop_check(CheckLevel::Warn)
    }
}

/// What the client tasks share: the generator, the real-time clock and the id source.
struct Shared {
    gen: Mutex<ListAppendGen>,
    clock: AtomicU64,
    ids: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }
}

/// One recorded transaction and, for explaining anomalies, how it ran.
struct Record {
    txn: Txn,
    mode: Mode,
    commit_ts: Option<u64>,
}

async fn must_connect(pd_addr: &str) -> TransactionClient {
    for _ in 0..60 {
        if let Ok(c) = TransactionClient::new_with_config(vec![pd_addr.to_owned()], config()).await
        {
            return c;
        }
        sleep(Duration::from_millis(500)).await;
    }
    panic!("client never connected to PD at {pd_addr}");
}

fn decode_value(key: u64, value: Option<Vec<u8>>) -> Vec<u64> {
    let bytes = value.unwrap_or_default();
    decode_list(&bytes).unwrap_or_else(|e| panic!("key {} holds a torn list: {e}", key_name(key)))
}

/// Reads `key`'s list. Pessimistic transactions read with a lock at a fresh timestamp (a plain
/// get would read at start_ts and the append would lose updates committed since); the locked
/// value cannot change under the lock, and get_for_update bypasses the transaction's buffer,
/// so it is remembered in `locked` with the transaction's own appends.
async fn read_list(
    txn: &mut Transaction,
    mode: Mode,
    key: u64,
    locked: &mut HashMap<u64, Vec<u64>>,
) -> tikv_client::Result<Vec<u64>> {
    if mode != Mode::Pessimistic {
        return Ok(decode_value(key, txn.get(key_name(key)).await?));
    }
    if let Some(list) = locked.get(&key) {
        return Ok(list.clone());
    }
    let list = decode_value(key, txn.get_for_update(key_name(key)).await?);
    locked.insert(key, list.clone());
    Ok(list)
}

/// Runs the ops, filling in each read that returned; appends are read-modify-write.
async fn run_ops(txn: &mut Transaction, mode: Mode, ops: &mut [Op]) -> tikv_client::Result<()> {
    let mut locked = HashMap::new();
    for op in ops.iter_mut() {
        match op {
            Op::Read { key, values } => {
                *values = Some(read_list(txn, mode, *key, &mut locked).await?);
            }
            Op::Append { key, value } => {
                let mut list = read_list(txn, mode, *key, &mut locked).await?;
                list.push(*value);
                txn.put(key_name(*key), encode_list(&list)).await?;
                if mode == Mode::Pessimistic {
                    locked.insert(*key, list);
                }
            }
        }
    }
    Ok(())
}

/// Whether a commit error proves the transaction can never commit: a key's prewrite was
/// refused (write conflict, a lock that would not resolve, deadlock), so that key holds no
/// lock of this transaction: 2PC never commits the primary, and async commit's secondary
/// check finds the lock missing.
fn is_definite_refusal(e: &Error) -> bool {
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

/// Runs one transaction of `ops` within [`TXN_TIMEOUT`]; its outcome and commit timestamp.
async fn run_txn(client: &TransactionClient, mode: Mode, ops: &mut [Op]) -> (Outcome, Option<u64>) {
    let deadline = Instant::now() + TXN_TIMEOUT;
    let Ok(Ok(mut txn)) = timeout_at(deadline, client.begin_with_options(mode.options())).await
    else {
        return (Outcome::Aborted, None);
    };
    if !matches!(
        timeout_at(deadline, run_ops(&mut txn, mode, ops)).await,
        Ok(Ok(()))
    ) {
        // Commit was never sent: whatever the rollback does, nothing is visible.
        let _ = timeout(ROLLBACK_TIMEOUT, txn.rollback()).await;
        return (Outcome::Aborted, None);
    }
    match timeout_at(deadline, txn.commit()).await {
        Ok(Ok(ts)) => (Outcome::Committed, ts.map(|t| t.version())),
        Ok(Err(e)) if is_definite_refusal(&e) => {
            let _ = timeout(ROLLBACK_TIMEOUT, txn.rollback()).await;
            (Outcome::Aborted, None)
        }
        // A timeout, a region or transport error, an undetermined commit: it may have landed.
        _ => (Outcome::Unknown, None),
    }
}

/// One client task: transactions from the shared generator until told to stop.
async fn client_task(pd_addr: String, shared: Arc<Shared>, process: u64, seed: u64) -> Vec<Record> {
    let client = must_connect(&pd_addr).await;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (process + 1).wrapping_mul(0x9E37_79B9));
    let mut records = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let mut ops = shared.gen.lock().unwrap().next_ops();
        let mode = match rng.gen_range(0..3) {
            0 => Mode::Optimistic,
            1 => Mode::AsyncCommit,
            _ => Mode::Pessimistic,
        };
        let id = shared.ids.fetch_add(1, Ordering::SeqCst);
        let start = shared.tick();
        let (outcome, commit_ts) = run_txn(&client, mode, &mut ops).await;
        let end = shared.tick();
        records.push(Record {
            txn: Txn::new(id, process, ops, outcome).with_times(start, end),
            mode,
            commit_ts,
        });
    }
    records
}

/// Cleans up the workload's locks from transactions started more than `age` ago (all of them,
/// if `age` is zero): committed if their primary (or, for async commit, every secondary) says
/// so, rolled back otherwise.
async fn resolve_old_locks(client: &TransactionClient, age: Duration) -> tikv_client::Result<()> {
    let now = client.current_timestamp().await?.version();
    let age_ts = (age.as_millis() as u64) << 18;
    let safe_point = Timestamp::from_version(now.saturating_sub(age_ts));
    client
        .cleanup_locks(
            "la".to_owned().."lb".to_owned(),
            &safe_point,
            ResolveLocksOptions::default(),
        )
        .await?;
    Ok(())
}

/// The lock resolver: every [`RESOLVE_INTERVAL`] until the clients stop.
async fn resolver_task(pd_addr: String, shared: Arc<Shared>) -> u32 {
    let client = must_connect(&pd_addr).await;
    let mut failures = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        sleep(RESOLVE_INTERVAL).await;
        if let Err(e) = resolve_old_locks(&client, RESOLVE_AGE).await {
            eprintln!("resolver: {e}");
            failures += 1;
        }
    }
    failures
}

/// What the nemesis did.
#[derive(Debug, Default)]
struct NemesisLog {
    transfers_asked: u32,
    transfers_queued: u32,
    restarted_store: Option<usize>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("PD shows keys in hex"))
        .collect()
}

/// Regions overlapping the workload's keys (`x\0\0\0la..` to `x\0\0\0lb`, encoded).
fn workload_regions(regions: &Value) -> Vec<Value> {
    let enc = |k: &[u8]| codec::memcomparable::encode_bytes(&[b"x\0\0\0".as_slice(), k].concat());
    let (lo, hi) = (enc(b"la"), enc(b"lb"));
    let all = regions["regions"].as_array().cloned().unwrap_or_default();
    all.into_iter()
        .filter(|r| {
            let start = unhex(r["start_key"].as_str().unwrap_or(""));
            let end = unhex(r["end_key"].as_str().unwrap_or(""));
            start < hi && (end.is_empty() || end > lo)
        })
        .collect()
}

/// Asks PD to move the leader of a random workload region to another of its voters.
async fn transfer_random_leader(c: &ProcCluster, rng: &mut ChaCha8Rng, log: &mut NemesisLog) {
    let Some(regions) = c.regions().await else {
        return;
    };
    let candidates = workload_regions(&regions);
    if candidates.is_empty() {
        return;
    }
    let r = &candidates[rng.gen_range(0..candidates.len())];
    let leader_store = r["leader"]["store_id"].as_u64();
    let targets: Vec<u64> = r["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["role"] == "Voter")
        .filter_map(|p| p["store_id"].as_u64())
        .filter(|s| Some(*s) != leader_store)
        .collect();
    if targets.is_empty() {
        return;
    }
    let body = json!({
        "name": "transfer-leader",
        "region_id": r["id"],
        "to_store_id": targets[rng.gen_range(0..targets.len())],
    });
    log.transfers_asked += 1;
    match http_post_json(&c.pd_addr, "/pd/api/v1/operators", &body).await {
        Some((200, _)) => log.transfers_queued += 1,
        // Busy (the region already has an operator) or the region just split: try another.
        other => eprintln!("nemesis: transfer {body} not queued: {other:?}"),
    }
}

/// Transfers leaders every 1-3 s until `end`, and once, near the middle, restarts a store.
async fn nemesis(c: &mut ProcCluster, seed: u64, end: Instant) -> NemesisLog {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(0xD00D));
    let mut log = NemesisLog::default();
    let restart_at = end - WORKLOAD / 2;
    while Instant::now() < end {
        sleep(Duration::from_millis(rng.gen_range(1_000..3_000))).await;
        if log.restarted_store.is_none() && Instant::now() >= restart_at {
            let i = rng.gen_range(0..c.stores.len());
            eprintln!("nemesis: restarting store {i}");
            c.restart_store(i);
            log.restarted_store = Some(i);
            continue;
        }
        transfer_random_leader(c, &mut rng, &mut log).await;
    }
    log
}

/// Reads every key in `0..keys` in one snapshot, retried until it succeeds, and records it as
/// a committed read-only transaction.
async fn final_read(c: &mut ProcCluster, shared: &Shared, keys: u64) -> Txn {
    let client = must_connect(&c.pd_addr).await;
    let opts = Mode::Optimistic.options().read_only();
    for _ in 0..30 {
        // Every client has stopped: whatever lock is left, its owner is gone.
        if let Err(e) = resolve_old_locks(&client, Duration::ZERO).await {
            eprintln!("final lock cleanup failed, retrying: {e}");
            sleep(Duration::from_secs(1)).await;
            continue;
        }
        let start = shared.tick();
        let read = async {
            let ts = client.current_timestamp().await?;
            let mut snap = client.snapshot(ts, opts.clone());
            let pairs = snap.batch_get((0..keys).map(key_name)).await?;
            let mut lists: HashMap<Vec<u8>, Vec<u8>> = pairs
                .map(|p| (Vec::<u8>::from(p.key().clone()), p.value().clone()))
                .collect();
            Ok::<_, Error>(
                (0..keys)
                    .map(|k| {
                        let v = lists.remove(key_name(k).as_bytes());
                        Op::read_of(k, &decode_value(k, v))
                    })
                    .collect::<Vec<_>>(),
            )
        };
        match timeout(Duration::from_secs(10), read).await {
            Ok(Ok(ops)) => {
                let id = shared.ids.fetch_add(1, Ordering::SeqCst);
                let end = shared.tick();
                return Txn::new(id, CLIENTS, ops, Outcome::Committed).with_times(start, end);
            }
            other => eprintln!("final read failed, retrying: {other:?}"),
        }
        sleep(Duration::from_secs(1)).await;
    }
    c.dump_logs();
    let dir = std::mem::replace(&mut c.dir, tempfile::tempdir().unwrap()).keep();
    panic!("the final read never succeeded; logs in {}", dir.display());
}

/// Checks the history; on a violation keeps the history and logs and panics with the report.
fn must_hold_snapshot_isolation(c: &mut ProcCluster, records: &[Record], seed: u64) {
    let history: Vec<Txn> = records.iter().map(|r| r.txn.clone()).collect();
    let report = check_list_append_with(&history, &CheckOptions { realtime: true });
    eprintln!("{report}");
    if report.is_valid_snapshot_isolation() {
        return;
    }
    let dir = std::mem::replace(&mut c.dir, tempfile::tempdir().unwrap()).keep();
    let path = dir.join("history.json");
    std::fs::write(&path, history_to_json(&history)).unwrap();
    let by_id: HashMap<u64, &Record> = records.iter().map(|r| (r.txn.id, r)).collect();
    for id in report.involved.keys() {
        if let Some(r) = by_id.get(id) {
            eprintln!("T{id}: {:?}, commit_ts {:?}", r.mode, r.commit_ts);
        }
    }
    c.dump_logs();
    panic!(
        "FLOTILLA_SEED={seed}: snapshot isolation violated ({:?}); history in {}, logs in {}",
        report.kinds(),
        path.display(),
        dir.display()
    );
}

/// Committed, aborted and unknown transactions, in all and per mode.
fn print_counts(records: &[Record], keys: u64) {
    let count = |mode: Option<Mode>, o: Outcome| {
        records
            .iter()
            .filter(|r| r.txn.outcome == o && mode.is_none_or(|m| m == r.mode))
            .count()
    };
    eprintln!("{} client txns over {keys} keys", records.len());
    for mode in [
        None,
        Some(Mode::Optimistic),
        Some(Mode::AsyncCommit),
        Some(Mode::Pessimistic),
    ] {
        eprintln!(
            "  {}: {} committed, {} aborted, {} unknown",
            mode.map_or("all".to_owned(), |m| format!("{m:?}")),
            count(mode, Outcome::Committed),
            count(mode, Outcome::Aborted),
            count(mode, Outcome::Unknown)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_append_under_leader_transfers_and_a_restart_is_snapshot_isolated() {
    let seed = seed();
    let mut c = ProcCluster::start(3, &store_config());
    if !c.wait_regions(5, 3, Duration::from_secs(90)).await {
        c.dump_logs();
        panic!("the cluster never reached 5 regions with 3 voters each");
    }
    let gen = ListAppendGen::new(seed, ACTIVE_KEYS, OPS_PER_TXN_MAX)
        .with_appends_per_key_max(APPENDS_PER_KEY_MAX);
    let shared = Arc::new(Shared {
        gen: Mutex::new(gen),
        clock: AtomicU64::new(0),
        ids: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|p| tokio::spawn(client_task(c.pd_addr.clone(), shared.clone(), p, seed)))
        .collect();
    let resolver = tokio::spawn(resolver_task(c.pd_addr.clone(), shared.clone()));
    let log = nemesis(&mut c, seed, Instant::now() + WORKLOAD).await;
    shared.stop.store(true, Ordering::SeqCst);
    let resolver_failures = resolver.await.expect("the resolver panicked");
    let mut records = Vec::new();
    for task in clients {
        records.extend(task.await.expect("a client task panicked"));
    }
    eprintln!("nemesis: {log:?}; lock resolver failed {resolver_failures} times");

    // Let the restarted store catch up and every region elect a leader before the final read.
    if !c.wait_regions(5, 3, Duration::from_secs(30)).await {
        eprintln!("regions still settling; reading anyway");
    }
    let keys = records
        .iter()
        .flat_map(|r| r.txn.ops.iter().map(Op::key))
        .max()
        .map_or(0, |k| k + 1);
    print_counts(&records, keys);
    let committed = records
        .iter()
        .filter(|r| r.txn.outcome == Outcome::Committed)
        .count();
    let last = final_read(&mut c, &shared, keys).await;
    records.push(Record {
        txn: last,
        mode: Mode::Optimistic,
        commit_ts: None,
    });
    must_hold_snapshot_isolation(&mut c, &records, seed);
    assert!(
        committed >= COMMITTED_MIN,
        "FLOTILLA_SEED={seed}: only {committed} transactions committed; the run proves little"
    );
    assert!(
        log.transfers_queued > 0 && log.restarted_store.is_some(),
        "the nemesis did nothing: {log:?}"
    );
}
