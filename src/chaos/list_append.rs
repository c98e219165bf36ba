//! The list-append workload: clients of the official `TransactionClient` run transactions from
//! the checker's seeded generator (appends of unique values to keys' lists, and reads of whole
//! lists) in the three modes; after the faults heal, one snapshot read of every key joins the
//! history. The isolation checker looks for anomalies beyond snapshot isolation (G0, G1a,
//! G1b, G1c, G-single, lost updates, internal inconsistency) and, in real time, for reads that
//! miss a commit acknowledged before their transaction began.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use checker::jsonl::{list_append_line, list_append_record};
use checker::{
    check_list_append_with, decode_list, encode_list, CheckOptions, ListAppendGen, Op, Outcome, Txn,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tikv_client::{Error, Transaction, TransactionClient};
use tokio::sync::Notify;
use tokio::time::sleep;

use super::txn::{self, Body, Mode};
use super::{Checked, Ctx};

/// Most ops in one transaction.
const OPS_PER_TXN_MAX: usize = 4;
/// Appends a key takes before the generator retires it: lists (and values) stay short.
const APPENDS_PER_KEY_MAX: u64 = 12;

/// Key `k`'s name.
pub fn key(k: u64) -> String {
    format!("la/{k:06}")
}

/// The workload's key range (transactional keyspace); the generator retires keys, so the
/// range is open-ended above.
pub fn key_range() -> (String, String) {
    ("la/".into(), "la0".into())
}

fn decode_value(k: u64, value: Option<Vec<u8>>) -> Result<Vec<u64>, Box<Error>> {
    decode_list(&value.unwrap_or_default()).map_err(|e| {
        Box::new(Error::StringError(format!(
            "{} holds a torn list: {e}",
            key(k)
        )))
    })
}

/// Reads `k`'s list. Pessimistic transactions read with a lock at a fresh timestamp (a plain
/// get would read at start_ts and the append would lose updates committed since); the locked
/// value cannot change under the lock, and get_for_update bypasses the transaction's buffer,
/// so it is remembered in `locked` with the transaction's own appends.
async fn read_list(
    txn: &mut Transaction,
    mode: Mode,
    k: u64,
    locked: &mut HashMap<u64, Vec<u64>>,
) -> tikv_client::Result<Vec<u64>> {
    if mode != Mode::Pessimistic {
        return decode_value(k, txn.get(key(k)).await?).map_err(|e| *e);
    }
    if let Some(list) = locked.get(&k) {
        return Ok(list.clone());
    }
    let list = decode_value(k, txn.get_for_update(key(k)).await?).map_err(|e| *e)?;
    locked.insert(k, list.clone());
    Ok(list)
}

/// Runs the ops, filling in each read that returned; appends are read-modify-write.
async fn run_ops(txn: &mut Transaction, mode: Mode, ops: &mut [Op]) -> tikv_client::Result<()> {
    let mut locked = HashMap::new();
    for op in ops.iter_mut() {
        match op {
            Op::Read { key: k, values } => {
                *values = Some(read_list(txn, mode, *k, &mut locked).await?);
            }
            Op::Append { key: k, value } => {
                let mut list = read_list(txn, mode, *k, &mut locked).await?;
                list.push(*value);
                txn.put(key(*k), encode_list(&list)).await?;
                if mode == Mode::Pessimistic {
                    locked.insert(*k, list);
                }
            }
        }
    }
    Ok(())
}

async fn client_task(
    ctx: Arc<Ctx>,
    index: u64,
    gen: Arc<Mutex<ListAppendGen>>,
    txns: Arc<Mutex<Vec<Txn>>>,
) -> Result<()> {
    let client = txn::connect(&ctx.pd).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ (index + 1).wrapping_mul(0x9E37_79B9));
    let process = ctx.new_process();
    while !ctx.stop.load(Ordering::SeqCst) {
        let ops = gen.lock().unwrap_or_else(|e| e.into_inner()).next_ops();
        if let Some(high) = ops.iter().map(Op::key).max() {
            ctx.key_high.fetch_max(high + 1, Ordering::Relaxed);
        }
        let mode = Mode::random(&mut rng);
        let id = ctx.new_txn_id();
        let call = ctx.clock.now_ns();
        let filled = Arc::new(Mutex::new(ops.clone()));
        let body_ops = filled.clone();
        let outcome = txn::run_txn(&client, mode, move |mut t| async move {
            let mut ops = body_ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let r = run_ops(&mut t, mode, &mut ops).await;
            *body_ops.lock().unwrap_or_else(|e| e.into_inner()) = ops;
            (t, r.map(|()| Body::Commit))
        })
        .await;
        let ops = std::mem::take(&mut *filled.lock().unwrap_or_else(|e| e.into_inner()));
        let mut t = Txn::new(id, process, ops, outcome);
        t.start = Some(call);
        t.end = (outcome != Outcome::Unknown).then(|| ctx.clock.now_ns());
        ctx.history.push(&mode.tag(list_append_record(&t)));
        txns.lock().unwrap_or_else(|e| e.into_inner()).push(t);
        if outcome != Outcome::Committed {
            sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Reads every key in `0..keys` in one snapshot.
async fn read_all(client: &TransactionClient, keys: u64) -> tikv_client::Result<Vec<Op>> {
    let mut lists = txn::snapshot_read(client, (0..keys).map(key)).await?;
    let mut ops = Vec::new();
    for k in 0..keys {
        let list = decode_value(k, lists.remove(key(k).as_bytes())).map_err(|e| *e)?;
        ops.push(Op::read_of(k, &list));
    }
    Ok(ops)
}

/// Runs the workload until `ctx.stop`, waits for `healed`, resolves every lock left, reads
/// every key once more and checks the history.
pub async fn campaign(ctx: Arc<Ctx>, healed: Arc<Notify>) -> Result<Checked> {
    ctx.ready.notify_one();
    let gen = ListAppendGen::new(ctx.seed, ctx.keys, OPS_PER_TXN_MAX)
        .with_appends_per_key_max(APPENDS_PER_KEY_MAX);
    let gen = Arc::new(Mutex::new(gen));
    let txns = Arc::new(Mutex::new(Vec::new()));
    let resolver = tokio::spawn(txn::resolver_task(ctx.clone()));
    let tasks: Vec<_> = (0..ctx.clients)
        .map(|i| tokio::spawn(client_task(ctx.clone(), i, gen.clone(), txns.clone())))
        .collect();
    for t in tasks {
        t.await??;
    }
    resolver.await?;
    healed.notified().await;
    let mut txns = std::mem::take(&mut *txns.lock().unwrap_or_else(|e| e.into_inner()));
    let keys = txns
        .iter()
        .flat_map(|t| t.ops.iter().map(Op::key))
        .max()
        .map_or(0, |k| k + 1);
    let admin = txn::connect(&ctx.pd).await?;
    txn::resolve_all_locks(&ctx, &admin).await?;
    let process = ctx.new_process();
    let (call, ret, ops) = txn::final_read(&ctx, || read_all(&admin, keys)).await?;
    let t = Txn::new(ctx.new_txn_id(), process, ops, Outcome::Committed).with_times(call, ret);
    ctx.history.push(&list_append_line(&t));
    txns.push(t);
    Ok(check(&txns))
}

/// Checks a list-append history (also what `flotilla check --workload list-append` runs).
pub fn check(txns: &[Txn]) -> Checked {
    let report = check_list_append_with(txns, &CheckOptions { realtime: true });
    let count = |o: Outcome| txns.iter().filter(|t| t.outcome == o).count();
    let (committed, aborted, unknown) = (
        count(Outcome::Committed),
        count(Outcome::Aborted),
        count(Outcome::Unknown),
    );
    let mut summary = format!(
        "{} txns ({committed} committed, {aborted} aborted, {unknown} unknown), {} in the dependency graph: ",
        txns.len(),
        report.graph_txns
    );
    if report.is_clean() {
        summary.push_str("no anomaly");
    } else {
        let kinds: Vec<&str> = report.kinds().iter().map(|k| k.name()).collect();
        summary.push_str(&format!(
            "found {} ({})\n{report}",
            kinds.join(", "),
            if report.is_valid_snapshot_isolation() {
                "allowed by snapshot isolation"
            } else {
                "FORBIDDEN by snapshot isolation"
            }
        ));
    }
    Checked {
        ops: txns.len(),
        ok_ops: committed + aborted,
        unknown_ops: unknown,
        passed: report.is_valid_snapshot_isolation() && committed > 0,
        summary,
        write_acks_ns: txns
            .iter()
            .filter(|t| t.outcome == Outcome::Committed)
            .filter(|t| t.ops.iter().any(|o| matches!(o, Op::Append { .. })))
            .filter_map(|t| t.end)
            .collect(),
    }
}
