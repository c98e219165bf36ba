//! The bank workload: accounts `bank/000`.. start with 100 each in one transaction; clients of
//! the official `TransactionClient` move random amounts between two accounts in transactions
//! (optimistic, async commit or pessimistic) and read every account in one snapshot. The
//! checker requires every committed read to add up to the initial total with no negative
//! balance, and to be explained by the transfers acknowledged before it began plus some of
//! those running concurrently (a stale read or a lost transfer is not).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use checker::jsonl::{bank_init_line, bank_read_line, bank_transfer_record};
use checker::{check_bank_with, BankOptions, BankRead, BankTransfer, Outcome};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tikv_client::{Transaction, TransactionClient};
use tokio::sync::Notify;
use tokio::time::{sleep, timeout};

use super::txn::{self, Body, Mode};
use super::{Checked, Ctx};

/// Every account's opening balance.
const INITIAL_BALANCE: i64 = 100;
/// Largest amount one transfer moves.
const AMOUNT_MAX: i64 = 5;

/// Account `a`'s key.
pub fn key(a: u64) -> String {
    format!("bank/{a:03}")
}

/// The first and last key of the workload (transactional keyspace).
pub fn key_range(accounts: u64) -> (String, String) {
    (key(0), key(accounts))
}

/// An account's balance as stored; an error (as the client reports one) if it is missing or
/// not a number.
fn balance(a: u64, v: Option<Vec<u8>>) -> Result<i64, Box<tikv_client::Error>> {
    let parsed = v.and_then(|bytes| String::from_utf8_lossy(&bytes).parse().ok());
    parsed.ok_or_else(|| {
        Box::new(tikv_client::Error::StringError(format!(
            "{} is missing or not a number",
            key(a)
        )))
    })
}

/// Reads every account in one snapshot at a fresh timestamp.
async fn read_all(
    client: &TransactionClient,
    accounts: u64,
) -> tikv_client::Result<BTreeMap<u64, i64>> {
    let mut got = txn::snapshot_read(client, (0..accounts).map(key)).await?;
    let mut balances = BTreeMap::new();
    for a in 0..accounts {
        let b = balance(a, got.remove(key(a).as_bytes())).map_err(|e| *e)?;
        balances.insert(a, b);
    }
    Ok(balances)
}

/// Records a committed full read: a history line and the checker's record.
fn record_read(
    ctx: &Ctx,
    records: &Mutex<Records>,
    process: u64,
    (txn_id, start, end): (u64, u64, u64),
    balances: BTreeMap<u64, i64>,
) {
    let read = BankRead {
        txn_id,
        balances,
        start: Some(start),
        end: Some(end),
    };
    ctx.history.push(&bank_read_line(&read, process));
    records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .reads
        .push(read);
}

/// Reads `a` (locking it in a pessimistic transaction).
async fn get(txn: &mut Transaction, mode: Mode, a: u64) -> tikv_client::Result<i64> {
    let v = if mode == Mode::Pessimistic {
        txn.get_for_update(key(a)).await?
    } else {
        txn.get(key(a)).await?
    };
    balance(a, v).map_err(|e| *e)
}

async fn transfer_body(
    mut txn: Transaction,
    mode: Mode,
    (from, to, amount): (u64, u64, i64),
) -> (Transaction, tikv_client::Result<Body>) {
    let r = async {
        let (f, t) = (
            get(&mut txn, mode, from).await?,
            get(&mut txn, mode, to).await?,
        );
        if f < amount {
            return Ok(Body::Rollback);
        }
        txn.put(key(from), (f - amount).to_string()).await?;
        txn.put(key(to), (t + amount).to_string()).await?;
        Ok(Body::Commit)
    }
    .await;
    (txn, r)
}

/// What the clients recorded.
#[derive(Default)]
struct Records {
    reads: Vec<BankRead>,
    transfers: Vec<BankTransfer>,
}

async fn client_task(ctx: Arc<Ctx>, index: u64, records: Arc<Mutex<Records>>) -> Result<()> {
    let client = txn::connect(&ctx.pd).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ (index + 1).wrapping_mul(0x9E37_79B9));
    let process = ctx.new_process();
    while !ctx.stop.load(Ordering::SeqCst) {
        let id = ctx.new_txn_id();
        let call = ctx.clock.now_ns();
        if rng.gen_range(0..5) == 0 {
            let r = timeout(txn::TXN_TIMEOUT, read_all(&client, ctx.keys)).await;
            if let Ok(Ok(balances)) = r {
                let times = (id, call, ctx.clock.now_ns());
                record_read(&ctx, &records, process, times, balances);
            } else {
                sleep(Duration::from_millis(50)).await;
            }
            continue;
        }
        let from = rng.gen_range(0..ctx.keys);
        let to = (from + rng.gen_range(1..ctx.keys)) % ctx.keys;
        let amount = rng.gen_range(1..=AMOUNT_MAX);
        let mode = Mode::random(&mut rng);
        let outcome = txn::run_txn(&client, mode, move |t| {
            transfer_body(t, mode, (from, to, amount))
        })
        .await;
        let t = BankTransfer {
            txn_id: id,
            from,
            to,
            amount,
            outcome,
            start: Some(call),
            end: (outcome != Outcome::Unknown).then(|| ctx.clock.now_ns()),
        };
        ctx.history
            .push(&mode.tag(bank_transfer_record(&t, process)));
        records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .transfers
            .push(t);
        if outcome != Outcome::Committed {
            sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Opens the accounts (before any fault), returning the initial balances.
async fn open_accounts(ctx: &Ctx, client: &TransactionClient) -> Result<BTreeMap<u64, i64>> {
    let initial: BTreeMap<u64, i64> = (0..ctx.keys).map(|a| (a, INITIAL_BALANCE)).collect();
    for _ in 0..30 {
        let call = ctx.clock.now_ns();
        let balances = initial.clone();
        let outcome = txn::run_txn(client, Mode::Optimistic, move |mut t| async move {
            let r = async {
                for (a, b) in &balances {
                    t.put(key(*a), b.to_string()).await?;
                }
                Ok(Body::Commit)
            }
            .await;
            (t, r)
        })
        .await;
        // An unknown outcome is retried: the same puts again change nothing.
        if outcome == Outcome::Committed {
            let id = ctx.new_txn_id();
            ctx.history.push(&bank_init_line(
                id,
                ctx.new_process(),
                &initial,
                call,
                ctx.clock.now_ns(),
            ));
            return Ok(initial);
        }
        sleep(Duration::from_secs(1)).await;
    }
    bail!("the accounts could not be opened")
}

/// Opens the accounts, runs the workload until `ctx.stop`, waits for `healed`, resolves
/// every lock left, reads every account once more and checks the history.
pub async fn campaign(ctx: Arc<Ctx>, healed: Arc<Notify>) -> Result<Checked> {
    if ctx.keys < 2 {
        bail!("the bank needs at least 2 accounts");
    }
    let admin = txn::connect(&ctx.pd).await?;
    let initial = open_accounts(&ctx, &admin).await?;
    ctx.ready.notify_one();
    let records = Arc::new(Mutex::new(Records::default()));
    let resolver = tokio::spawn(txn::resolver_task(ctx.clone()));
    let tasks: Vec<_> = (0..ctx.clients)
        .map(|i| tokio::spawn(client_task(ctx.clone(), i, records.clone())))
        .collect();
    for t in tasks {
        t.await??;
    }
    resolver.await?;
    healed.notified().await;
    txn::resolve_all_locks(&ctx, &admin).await?;
    let process = ctx.new_process();
    let (call, ret, balances) = txn::final_read(&ctx, || read_all(&admin, ctx.keys)).await?;
    record_read(
        &ctx,
        &records,
        process,
        (ctx.new_txn_id(), call, ret),
        balances,
    );
    let records = std::mem::take(&mut *records.lock().unwrap_or_else(|e| e.into_inner()));
    let total = initial.values().sum();
    let options = BankOptions {
        initial,
        transfers: records.transfers,
        ..BankOptions::default()
    };
    check(total, &records.reads, &options).context("checking the bank")
}

/// Checks a bank history (also what `flotilla check --workload bank` runs).
pub fn check(total: i64, reads: &[BankRead], options: &BankOptions) -> Result<Checked> {
    let count = |o: Outcome| options.transfers.iter().filter(|t| t.outcome == o).count();
    let (committed, aborted, unknown) = (
        count(Outcome::Committed),
        count(Outcome::Aborted),
        count(Outcome::Unknown),
    );
    let verdict = check_bank_with(total, reads, options);
    let mut summary = format!(
        "{} reads, {} transfers ({committed} committed, {aborted} aborted, {unknown} unknown), total {total}: ",
        reads.len(),
        options.transfers.len(),
    );
    match &verdict {
        Ok(s) => summary.push_str(&format!(
            "every read adds up; {} reads checked against real time, {} undecided (too many concurrent transfers)",
            s.realtime_checked, s.realtime_undecided
        )),
        Err(v) => summary.push_str(&format!("VIOLATION: {v}")),
    }
    Ok(Checked {
        ops: reads.len() + options.transfers.len(),
        ok_ops: reads.len() + committed + aborted,
        unknown_ops: unknown,
        passed: verdict.is_ok() && !reads.is_empty(),
        summary,
        write_acks_ns: options
            .transfers
            .iter()
            .filter(|t| t.outcome == Outcome::Committed)
            .filter_map(|t| t.end)
            .collect(),
    })
}
