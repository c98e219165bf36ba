//! The register workload: clients read, write and compare-and-swap a few keys through the
//! raw API (atomic mode, so that puts and compare-and-swap order through the same path), with
//! values unique per run; every operation is one history line. The clients are
//! [`StrictRaw`], which never re-sends a write that may have applied (see its module for why
//! the official client cannot be used here). After the faults heal,
//! one final read per key joins the history, and the linearizability checker searches each
//! key's operations for a legal order.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use checker::{check_register, RegisterOp, RegisterValue, RegisterVerdict};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::Notify;
use tokio::time::{sleep, Instant};

use super::raw::{StrictRaw, Written};
use super::{Checked, Ctx};

/// An operation that has not returned after this long is recorded with an unknown outcome.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// The workload's keys are `reg/000`, `reg/001`, ...
pub fn key(k: u64) -> String {
    format!("reg/{k:03}")
}

/// The first and last key of the workload (raw keyspace), for splits and leader moves.
pub fn key_range(keys: u64) -> (String, String) {
    (key(0), key(keys))
}

/// A stored value as the history shows it: the decimal integer the workload wrote, or (if the
/// bytes are something no client wrote) the bytes as a string, which no write explains.
fn decode(v: Option<Vec<u8>>) -> Option<RegisterValue> {
    let bytes = v?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Some(match text.parse::<i64>() {
        Ok(i) => RegisterValue::Int(i),
        Err(_) => RegisterValue::Str(text),
    })
}

fn encode(v: &RegisterValue) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// One client: operations until the run stops. A client whose operation's outcome is unknown
/// continues as a new client id, as Jepsen does: the old one may still take effect.
async fn client_task(ctx: Arc<Ctx>, index: u64, ops: Arc<Mutex<Vec<RegisterOp>>>) -> Result<()> {
    let client = StrictRaw::connect(&ctx.pd).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ (index + 1).wrapping_mul(0x9E37_79B9));
    let mut process = ctx.new_process();
    let mut seen: HashMap<u64, Option<RegisterValue>> = HashMap::new();
    let mut counter: i64 = 0;
    while !ctx.stop.load(Ordering::SeqCst) {
        let k = rng.gen_range(0..ctx.keys);
        let name = key(k);
        counter += 1;
        let unique = RegisterValue::Int(((index as i64 + 1) << 40) | counter);
        let call = ctx.clock.now_ns();
        let deadline = Instant::now() + OP_TIMEOUT;
        let op = match rng.gen_range(0..4) {
            0 | 1 => client.get(&name, deadline).await.map(|v| {
                let out = decode(v);
                seen.insert(k, out.clone());
                RegisterOp::read(process, &name, out, call, ctx.clock.now_ns())
            }),
            2 => match client.put(&name, encode(&unique), deadline).await {
                Written::Done(()) => Some(RegisterOp::write(
                    process,
                    &name,
                    unique,
                    call,
                    Some(ctx.clock.now_ns()),
                )),
                // Surely not applied: nothing to record.
                Written::Failed => None,
                Written::Unknown => Some(RegisterOp::write(process, &name, unique, call, None)),
            },
            _ => {
                let expected = seen.get(&k).cloned().flatten();
                let w = client
                    .cas(
                        &name,
                        expected.as_ref().map(encode),
                        encode(&unique),
                        deadline,
                    )
                    .await;
                let (out, ret) = match w {
                    Written::Done(swapped) => {
                        if swapped {
                            seen.insert(k, Some(unique.clone()));
                        } else {
                            seen.remove(&k);
                        }
                        (Some(swapped), Some(ctx.clock.now_ns()))
                    }
                    Written::Failed => (Some(false), None),
                    Written::Unknown => (None, None),
                };
                match (out, ret) {
                    (Some(false), None) => None,
                    (out, ret) => Some(RegisterOp::cas(
                        process,
                        &name,
                        (expected, unique),
                        out,
                        call,
                        ret,
                    )),
                }
            }
        };
        let Some(op) = op else {
            sleep(Duration::from_millis(50)).await;
            continue;
        };
        let unknown = op.ret_ns.is_none();
        ctx.history.push(&serde_json::to_string(&op)?);
        ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
        if unknown {
            process = ctx.new_process();
            sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Runs the workload until `ctx.stop`, waits for `healed`, reads every key once more and
/// checks the history.
pub async fn campaign(ctx: Arc<Ctx>, healed: Arc<Notify>) -> Result<Checked> {
    ctx.ready.notify_one();
    let ops = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..ctx.clients)
        .map(|i| tokio::spawn(client_task(ctx.clone(), i, ops.clone())))
        .collect();
    for t in tasks {
        t.await??;
    }
    healed.notified().await;
    let client = StrictRaw::connect(&ctx.pd).await?;
    let process = ctx.new_process();
    for k in 0..ctx.keys {
        let name = key(k);
        let call = ctx.clock.now_ns();
        let read = client
            .get(&name, Instant::now() + Duration::from_secs(60))
            .await
            .map(|v| RegisterOp::read(process, &name, decode(v), call, ctx.clock.now_ns()));
        let Some(op) = read else {
            bail!("the final read of {name} never succeeded after the faults healed");
        };
        ctx.history.push(&serde_json::to_string(&op)?);
        ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }
    let ops = std::mem::take(&mut *ops.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(check(&ops))
}

/// Checks a register history (also what `flotilla check --workload register` runs).
pub fn check(ops: &[RegisterOp]) -> Checked {
    let report = check_register(ops);
    let unknown = ops.iter().filter(|o| o.ret_ns.is_none()).count();
    let mut summary = format!(
        "{} ops on {} keys ({} with unknown outcome): ",
        ops.len(),
        report.keys.len(),
        unknown
    );
    let violations: Vec<String> = report
        .violations()
        .map(|(k, v)| format!("  {k}: NOT linearizable: {v}"))
        .collect();
    let undecided: Vec<&str> = report.undecided().collect();
    if report.is_linearizable() {
        summary.push_str("every key linearizable");
    } else {
        summary.push_str(&format!(
            "{} keys not linearizable, {} undecided (search bound reached: {:?})\n{}",
            violations.len(),
            undecided.len(),
            undecided,
            violations.join("\n")
        ));
    }
    let states: u64 = report.keys.iter().map(|k| k.states_explored).sum();
    summary.push_str(&format!("; {states} search states"));
    Checked {
        ops: ops.len(),
        ok_ops: ops.len() - unknown,
        unknown_ops: unknown,
        passed: report
            .keys
            .iter()
            .all(|k| k.verdict == RegisterVerdict::Linearizable),
        summary,
        write_acks_ns: ops
            .iter()
            .filter(|o| !matches!(o.kind, checker::RegisterOpKind::Read { .. }))
            .filter_map(|o| o.ret_ns)
            .collect(),
    }
}
