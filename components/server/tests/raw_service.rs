//! One store and an in-process PD on loopback: the raw `Tikv` service end to end through the
//! tonic client, its error answers, the status server, and a restart on the same data.

use std::time::{Duration, Instant};

use codec::memcomparable::{decode_bytes, encode_bytes};
use proto::kvrpcpb::{self, Context};
use proto::metapb;
use proto::tikvpb::tikv_client::TikvClient;
use server::{Node, ServerConfig};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

fn key(k: &str) -> Vec<u8> {
    let mut key = b"r\0\0\0".to_vec();
    key.extend_from_slice(k.as_bytes());
    key
}

fn node_config(data_dir: &std::path::Path, pd: &str) -> ServerConfig {
    let mut cfg = ServerConfig {
        data_dir: data_dir.to_owned(),
        addr: "127.0.0.1:0".into(),
        status_addr: "127.0.0.1:0".into(),
        pd_endpoints: vec![pd.to_owned()],
        request_timeout_ms: 5_000,
        ..Default::default()
    };
    cfg.raftstore.raft_tick_interval_ms = 20;
    cfg.raftstore.pd_heartbeat_tick_interval_ticks = 5;
    cfg.pd_worker.store_heartbeat_interval_ms = 500;
    cfg
}

/// The leader region holding `key` on `node`, once there is one.
async fn must_leader_region(node: &Node, key: &[u8]) -> (metapb::Region, metapb::Peer) {
    let encoded = encode_bytes(key);
    let deadline = Instant::now() + WAIT;
    loop {
        let found = node.router().region_infos().into_iter().find(|r| {
            r.is_leader
                && r.region.start_key.as_slice() <= encoded.as_slice()
                && (r.region.end_key.is_empty() || encoded.as_slice() < r.region.end_key.as_slice())
        });
        if let Some(info) = found {
            return (info.region, info.peer);
        }
        assert!(Instant::now() < deadline, "no leader for key {key:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ctx(node: &Node, key: &[u8]) -> Context {
    let (region, peer) = must_leader_region(node, key).await;
    Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer: Some(peer),
        ..Default::default()
    }
}

/// Retries `op` while the region answers with a region error (it may be splitting).
macro_rules! must_ok {
    ($node:expr, $key:expr, |$ctx:ident| $call:expr) => {{
        let deadline = Instant::now() + WAIT;
        loop {
            let $ctx = Some(ctx($node, $key).await);
            let resp = $call.await.expect("rpc").into_inner();
            match &resp.region_error {
                None => break resp,
                Some(e) => {
                    assert!(Instant::now() < deadline, "region error persists: {e:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }};
}

async fn must_put(node: &Node, c: &mut TikvClient<Channel>, k: &[u8], v: &[u8], ttl: u64) {
    let resp = must_ok!(node, k, |context| c.raw_put(kvrpcpb::RawPutRequest {
        context,
        key: k.to_vec(),
        value: v.to_vec(),
        ttl,
        ..Default::default()
    }));
    assert_eq!(resp.error, "");
}

async fn must_get(node: &Node, c: &mut TikvClient<Channel>, k: &[u8]) -> Option<Vec<u8>> {
    let resp = must_ok!(node, k, |context| c.raw_get(kvrpcpb::RawGetRequest {
        context,
        key: k.to_vec(),
        ..Default::default()
    }));
    assert_eq!(resp.error, "");
    (!resp.not_found).then_some(resp.value)
}

async fn must_scan(
    node: &Node,
    c: &mut TikvClient<Channel>,
    start: &[u8],
    end: &[u8],
    limit: u32,
    reverse: bool,
) -> Vec<Vec<u8>> {
    let region_key = if reverse { end } else { start };
    let resp = must_ok!(node, region_key, |context| c.raw_scan(
        kvrpcpb::RawScanRequest {
            context,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            limit,
            reverse,
            ..Default::default()
        }
    ));
    resp.kvs.into_iter().map(|p| p.key).collect()
}

/// An HTTP/1.0 GET's status code, headers (lower-cased) and body.
async fn http_request(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    (code, head.to_lowercase(), body.to_owned())
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    http_request(addr, path).await.2
}

async fn check_reads_and_writes(node: &Node, c: &mut TikvClient<Channel>) {
    must_put(node, c, &key("a"), b"1", 0).await;
    assert_eq!(must_get(node, c, &key("a")).await, Some(b"1".to_vec()));
    assert_eq!(must_get(node, c, &key("missing")).await, None);

    let pairs = ["b", "c", "d", "e"]
        .iter()
        .map(|k| kvrpcpb::KvPair {
            key: key(k),
            value: k.as_bytes().to_vec(),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let resp = must_ok!(node, &key("b"), |context| c.raw_batch_put(
        kvrpcpb::RawBatchPutRequest {
            context,
            pairs: pairs.clone(),
            ..Default::default()
        }
    ));
    assert_eq!(resp.error, "");
    let resp = must_ok!(node, &key("b"), |context| c.raw_batch_get(
        kvrpcpb::RawBatchGetRequest {
            context,
            keys: vec![key("b"), key("zz"), key("e")],
            ..Default::default()
        }
    ));
    assert_eq!(
        resp.pairs.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
        vec![key("b"), key("e")]
    );

    assert_eq!(
        must_scan(node, c, &key("b"), &key("e"), 10, false).await,
        vec![key("b"), key("c"), key("d")]
    );
    assert_eq!(
        must_scan(node, c, &key("a"), &key("z"), 2, false).await,
        vec![key("a"), key("b")]
    );
    // Reverse: start_key is the exclusive upper bound, end_key the inclusive lower bound.
    assert_eq!(
        must_scan(node, c, &key("e"), &key("b"), 10, true).await,
        vec![key("d"), key("c"), key("b")]
    );

    let resp = must_ok!(node, &key("b"), |context| c.raw_delete(
        kvrpcpb::RawDeleteRequest {
            context,
            key: key("b"),
            ..Default::default()
        }
    ));
    assert_eq!(resp.error, "");
    let resp = must_ok!(node, &key("c"), |context| c.raw_batch_delete(
        kvrpcpb::RawBatchDeleteRequest {
            context,
            keys: vec![key("c")],
            ..Default::default()
        }
    ));
    assert_eq!(resp.error, "");
    assert_eq!(
        must_scan(node, c, &key("a"), &key("z"), 10, false).await,
        vec![key("a"), key("d"), key("e")]
    );
    let resp = must_ok!(node, &key("d"), |context| c.raw_delete_range(
        kvrpcpb::RawDeleteRangeRequest {
            context,
            start_key: key("d"),
            end_key: key("z"),
            ..Default::default()
        }
    ));
    assert_eq!(resp.error, "");
    assert_eq!(
        must_scan(node, c, &key("a"), &key("z"), 10, false).await,
        vec![key("a")]
    );
}

async fn check_ttl_and_cas(node: &Node, c: &mut TikvClient<Channel>) {
    must_put(node, c, &key("ttl"), b"v", 100).await;
    let resp = must_ok!(node, &key("ttl"), |context| c.raw_get_key_ttl(
        kvrpcpb::RawGetKeyTtlRequest {
            context,
            key: key("ttl"),
            ..Default::default()
        }
    ));
    assert!(
        !resp.not_found && resp.ttl > 90 && resp.ttl <= 100,
        "{resp:?}"
    );
    must_put(node, c, &key("short"), b"v", 1).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(must_get(node, c, &key("short")).await, None);

    let cas = |prev: Option<&[u8]>, value: &[u8]| kvrpcpb::RawCasRequest {
        key: key("cas"),
        value: value.to_vec(),
        previous_not_exist: prev.is_none(),
        previous_value: prev.unwrap_or_default().to_vec(),
        ..Default::default()
    };
    let resp = must_ok!(node, &key("cas"), |context| c.raw_compare_and_swap(
        kvrpcpb::RawCasRequest {
            context,
            ..cas(None, b"1")
        }
    ));
    assert!(resp.succeed && resp.previous_not_exist);
    let resp = must_ok!(node, &key("cas"), |context| c.raw_compare_and_swap(
        kvrpcpb::RawCasRequest {
            context,
            ..cas(None, b"2")
        }
    ));
    assert!(!resp.succeed && resp.previous_value == b"1");
    let resp = must_ok!(node, &key("cas"), |context| c.raw_compare_and_swap(
        kvrpcpb::RawCasRequest {
            context,
            ..cas(Some(b"1"), b"2")
        }
    ));
    assert!(resp.succeed);
    assert_eq!(must_get(node, c, &key("cas")).await, Some(b"2".to_vec()));
}

async fn check_bad_requests(node: &Node, c: &mut TikvClient<Channel>) {
    let big = key(&"k".repeat(8 * 1024 + 1));
    let resp = c
        .raw_put(kvrpcpb::RawPutRequest {
            context: Some(ctx(node, &key("a")).await),
            key: big.clone(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.error.contains("key"), "{resp:?}");
    let data_key = codec::keys::data_key(&encode_bytes(&big));
    assert_eq!(
        node.kv_engine()
            .get_cf(engine::CF_DEFAULT, &data_key)
            .unwrap(),
        None
    );

    let mut stale = ctx(node, &key("a")).await;
    stale.region_epoch.as_mut().unwrap().version += 100;
    let req = kvrpcpb::RawGetRequest {
        context: Some(stale),
        key: key("a"),
        ..Default::default()
    };
    let resp = c.raw_get(req).await.unwrap().into_inner();
    assert!(resp.region_error.unwrap().epoch_not_match.is_some());

    let mut unknown = ctx(node, &key("a")).await;
    unknown.region_id = 999_999;
    let req = kvrpcpb::RawGetRequest {
        context: Some(unknown),
        key: key("a"),
        ..Default::default()
    };
    let resp = c.raw_get(req).await.unwrap().into_inner();
    assert!(resp.region_error.unwrap().region_not_found.is_some());

    let (region, _) = must_leader_region(node, &key("a")).await;
    let outside = if !region.end_key.is_empty() {
        decode_bytes(&region.end_key).unwrap().0
    } else if !region.start_key.is_empty() {
        b"\0".to_vec()
    } else {
        return; // One region holds every key: nothing lies outside it.
    };
    let req = kvrpcpb::RawGetRequest {
        context: Some(ctx(node, &key("a")).await),
        key: outside.clone(),
        ..Default::default()
    };
    let resp = c.raw_get(req).await.unwrap().into_inner();
    assert!(resp.region_error.unwrap().key_not_in_region.is_some());
    let req = kvrpcpb::RawPutRequest {
        context: Some(ctx(node, &key("a")).await),
        key: outside,
        value: b"v".to_vec(),
        ..Default::default()
    };
    let resp = c.raw_put(req).await.unwrap().into_inner();
    assert!(resp.region_error.unwrap().key_not_in_region.is_some());
}

async fn check_status(node: &Node) {
    let status: serde_json::Value =
        serde_json::from_str(&http_get(node.status_addr(), "/status").await).unwrap();
    assert_eq!(status["store_id"], node.store_id());
    assert!(status["leader_count"].as_u64().unwrap() >= 1);
    let metrics = http_get(node.status_addr(), "/metrics").await;
    assert!(
        metrics.contains("flotilla_server_requests_total"),
        "{metrics}"
    );
}

/// A one-replica PD on loopback, data under `dir/pd`.
async fn must_start_pd(dir: &std::path::Path) -> pd::PdHandle {
    let pd_cfg = pd::PdConfig {
        data_dir: dir.join("pd"),
        listen_addr: "127.0.0.1:0".into(),
        max_replicas: 1,
        ..Default::default()
    };
    pd::PdServer::start(pd_cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_requests_against_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let pd = must_start_pd(dir.path()).await;
    let cfg = node_config(&dir.path().join("store"), &pd.endpoint());
    let node = Node::start(cfg.clone()).await.unwrap();
    let mut client = TikvClient::connect(format!("http://{}", node.addr()))
        .await
        .unwrap();

    check_reads_and_writes(&node, &mut client).await;
    check_ttl_and_cas(&node, &mut client).await;
    check_bad_requests(&node, &mut client).await;
    check_status(&node).await;

    // A restart on the same data keeps the store id and the data.
    let store_id = node.store_id();
    node.stop().await;
    let node = Node::start(cfg).await.unwrap();
    assert_eq!(node.store_id(), store_id);
    let mut client = TikvClient::connect(format!("http://{}", node.addr()))
        .await
        .unwrap();
    assert_eq!(
        must_get(&node, &mut client, &key("a")).await,
        Some(b"1".to_vec())
    );
    node.stop().await;
    pd.shutdown().await;
}

/// Keeps one core busy for `duration` in a frame the flamegraph can name.
#[inline(never)]
fn burn_cpu(duration: Duration) -> u64 {
    let deadline = Instant::now() + duration;
    let mut x = 1u64;
    while Instant::now() < deadline {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_server_serves_cpu_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let pd = must_start_pd(dir.path()).await;
    let node = Node::start(node_config(&dir.path().join("store"), &pd.endpoint()))
        .await
        .unwrap();
    let addr = node.status_addr();
    let path = "/debug/pprof/profile";

    // Durations outside 1..=120 s are refused at once.
    for bad in ["0", "121", "soon"] {
        let (code, _, body) = http_request(addr, &format!("{path}?seconds={bad}")).await;
        assert_eq!(code, 400, "seconds={bad}: {body}");
        assert!(body.contains("1..=120"), "{body}");
    }

    // Two overlapping profiles: one runs, the other is refused without waiting for it.
    let burner = tokio::task::spawn_blocking(|| burn_cpu(Duration::from_millis(1_500)));
    let first = tokio::spawn(async move { http_request(addr, &format!("{path}?seconds=2")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    let second = http_request(addr, &format!("{path}?seconds=1")).await;
    if second.0 == 409 {
        assert!(
            sent.elapsed() < Duration::from_millis(900),
            "the refusal waited"
        );
    }
    // Sampling runs off the runtime's workers: other requests are answered meanwhile.
    let sent = Instant::now();
    let status = http_get(addr, "/status").await;
    assert!(status.contains("store_id"), "{status}");
    assert!(sent.elapsed() < Duration::from_millis(900), "status waited");
    let first = first.await.unwrap();
    burner.await.unwrap();
    let (done, refused) = if first.0 == 200 {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(refused.0, 409, "{}", refused.2);
    let (code, head, svg) = done;
    assert_eq!(code, 200, "{svg}");
    assert!(head.contains("content-type: image/svg+xml"), "{head}");
    assert!(
        svg.starts_with("<?xml") && svg.contains("<svg"),
        "{svg:.200}"
    );
    assert!(svg.contains("burn_cpu"), "the busy frame is missing");

    // The slot is free again once a profile ends.
    let (code, _, _) = http_request(addr, &format!("{path}?seconds=1")).await;
    assert_eq!(code, 200);

    node.stop().await;
    pd.shutdown().await;
}
