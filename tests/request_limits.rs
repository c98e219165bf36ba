//! Request limits end to end: real `flotilla` processes on 127.0.0.1 (PD + three stores with the
//! default region sizes, so the raw and the transactional keyspace each stay one region) and
//! the official client, `tikv-client` 0.4, unmodified.
//!
//! As in TiKV, neither the number of keys in a request nor a scan's `limit` is limited: bytes
//! are (a request by the gRPC message limit, a write by the raft entry limit, a read by
//! `storage.response_max_bytes`). Each test here failed while the store refused batches of
//! more than 10,000 keys and scan limits above 10,240.

mod common;

use std::time::Duration;

use common::{prewrite_retrying, target, txn_key, ProcCluster};
use proto::kvrpcpb;
use tikv_client::transaction::ResolveLocksOptions;
use tikv_client::{Config, TimestampExt, TransactionClient};

/// More keys than the store used to take in one request.
const MANY: usize = 20_000;

fn raw_key(k: &str) -> Vec<u8> {
    [b"r\0\0\0".as_slice(), k.as_bytes()].concat()
}

fn key(i: usize) -> String {
    format!("many{i:06}")
}

async fn start() -> ProcCluster {
    let c = ProcCluster::start(3, "");
    if !c.wait_regions(1, 3, Duration::from_secs(90)).await {
        c.dump_logs();
        panic!("the regions never got 3 voters and a leader each");
    }
    c
}

async fn pd(c: &ProcCluster) -> pd_client::RpcPdClient {
    pd_client::RpcPdClient::connect(std::slice::from_ref(&c.pd_addr))
        .await
        .unwrap()
}

/// `raw_large_batch_put` of tikv-client's own suite, smaller: one `batch_get` of 20,000 keys
/// goes to the one raw region as one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_batches_of_many_keys_to_one_region() {
    let c = start().await;
    let raw = c.raw_client().await;
    let pairs: Vec<(String, String)> = (0..MANY).map(|i| (key(i), format!("v{i}"))).collect();
    let keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    raw.batch_put(pairs.clone()).await.unwrap();
    let pd = pd(&c).await;
    let first = target(&pd, &raw_key(&key(0))).await;
    let last = target(&pd, &raw_key(&key(MANY - 1))).await;
    assert_eq!(
        first.region.id, last.region.id,
        "the keys must share one region for the batch to be one request"
    );

    let mut got: Vec<(String, String)> = raw
        .batch_get(keys.clone())
        .await
        .unwrap()
        .into_iter()
        .map(|p| {
            let k: Vec<u8> = p.key().clone().into();
            (
                String::from_utf8(k).unwrap(),
                String::from_utf8(p.value().clone()).unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, pairs);

    // A scan of the client's largest limit, and one of 65,536 straight to the store: the limit
    // caps what is returned.
    let scanned = raw.scan(key(0)..key(MANY), 10_240).await.unwrap();
    assert_eq!(scanned.len(), 10_240);
    let mut kv = first.kv.clone();
    let scan = |limit: u32| kvrpcpb::RawScanRequest {
        context: Some(first.ctx.clone()),
        start_key: raw_key(&key(0)),
        end_key: raw_key(&key(MANY)),
        limit,
        ..Default::default()
    };
    let resp = kv.raw_scan(scan(65_536)).await.unwrap().into_inner();
    assert!(resp.region_error.is_none(), "{:?}", resp.region_error);
    assert_eq!(resp.kvs.len(), MANY);
    assert!(resp.kvs.iter().all(|p| p.error.is_none()));
    let resp = kv.raw_scan(scan(100)).await.unwrap().into_inner();
    assert_eq!(resp.kvs.len(), 100);

    raw.batch_delete(keys.clone()).await.unwrap();
    assert!(raw.batch_get(keys).await.unwrap().is_empty());
}

/// A read whose answer would pass `storage.response_max_bytes` (10 MiB) is refused with a typed
/// error rather than cut short (the client would take a cut answer for the region's whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_bounded_by_response_bytes() {
    let c = start().await;
    let raw = c.raw_client().await;
    let big: Vec<String> = (0..6).map(|i| format!("big{i}")).collect();
    for k in &big {
        raw.put(k.clone(), vec![7u8; 2 << 20]).await.unwrap();
    }
    let err = raw.batch_get(big.clone()).await.unwrap_err();
    assert!(format!("{err:?}").contains("response_max_bytes"), "{err:?}");
    let pd = pd(&c).await;
    let mut t = target(&pd, &raw_key("big0")).await;
    let resp =
        t.kv.raw_scan(kvrpcpb::RawScanRequest {
            context: Some(t.ctx.clone()),
            start_key: raw_key("big"),
            end_key: raw_key("bih"),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let error = resp.kvs[0].error.as_ref().expect("a typed error");
    assert!(error.abort.contains("response_max_bytes"), "{error:?}");
    // Below the limit the same read is answered (four values of 2 MiB, which a client decodes
    // once its message limit is raised above tonic's and tikv-client's 4 MiB default).
    let mut kv = t.kv.clone().max_decoding_message_size(16 << 20);
    let resp = kv
        .raw_batch_get(kvrpcpb::RawBatchGetRequest {
            context: Some(t.ctx.clone()),
            keys: big[..4].iter().map(|k| raw_key(k)).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.pairs.len(), 4);
}

/// One prewrite of 12,000 keys (one region), left behind as by a client that died; the official
/// client's `scan_locks` with limit 65,536 (what tikv-client's failpoint tests use) finds them
/// all, and its `cleanup_locks` resolves them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_scans_of_any_limit() {
    const LOCKS: usize = 12_000;
    let c = start().await;
    let config = Config::default()
        .with_default_keyspace()
        .with_timeout(Duration::from_secs(20));
    let client = TransactionClient::new_with_config(vec![c.pd_addr.clone()], config)
        .await
        .unwrap();
    let pd = pd(&c).await;
    let keys: Vec<Vec<u8>> = (0..LOCKS).map(|i| txn_key(key(i))).collect();
    let start_ts = client.current_timestamp().await.unwrap().version();
    let prewrite = kvrpcpb::PrewriteRequest {
        mutations: keys
            .iter()
            .map(|k| kvrpcpb::Mutation {
                op: kvrpcpb::Op::Put as i32,
                key: k.clone(),
                value: b"orphan".to_vec(),
            })
            .collect(),
        primary_lock: keys[0].clone(),
        start_version: start_ts,
        lock_ttl: 1,
        txn_size: LOCKS as u64,
        ..Default::default()
    };
    prewrite_retrying(&pd, prewrite).await;

    let now = client.current_timestamp().await.unwrap();
    let locks = client.scan_locks(&now, .., 65_536).await.unwrap();
    assert_eq!(locks.len(), LOCKS);
    let mut t = target(&pd, &keys[0]).await;
    let resp =
        t.kv.kv_scan_lock(kvrpcpb::ScanLockRequest {
            context: Some(t.ctx.clone()),
            max_version: now.version(),
            start_key: keys[0].clone(),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.locks.len(), 100, "the limit caps the answer");

    let options = ResolveLocksOptions {
        async_commit_only: false,
        ..Default::default()
    };
    // It resolves the first batch it scans, whose `ResolveLock` without keys resolves the
    // transaction's other locks in the region too.
    client.cleanup_locks(.., &now, options).await.unwrap();
    let now = client.current_timestamp().await.unwrap();
    assert!(client
        .scan_locks(&now, .., 65_536)
        .await
        .unwrap()
        .is_empty());
}
