//! Bad input, end to end: real `flotilla` processes on 127.0.0.1 (PD + three stores) receive
//! malformed, oversize, misaddressed and out-of-mode requests straight from the generated tonic
//! clients, raw gRPC frames of garbage, and garbage on the store-to-store raft service. Every
//! request must be answered with a typed error (a region error, the response's error, or a
//! gRPC status for undecodable frames), nothing may change, and every store keeps serving.

mod common;

use std::time::Duration;

use bytes::{Buf, BufMut};
use common::{target, txn_key, ProcCluster, Target};
use pd_client::PdClient;
use proto::flotillapb::raft_transport_client::RaftTransportClient;
use proto::flotillapb::{self, BatchRaftMessage, SnapshotChunk};
use proto::tikvpb::tikv_client::TikvClient;
use proto::{errorpb, kvrpcpb, metapb, Message as _};
use raft::eraftpb::{Entry, Message as RaftMsg, MessageType};
use tikv_client::{Config, RawClient, TimestampExt, TransactionClient};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

const KEYS: [&str; 3] = ["k1", "k2", "k3"];

fn raw_key(k: &str) -> Vec<u8> {
    [b"r\0\0\0".as_slice(), k.as_bytes()].concat()
}

fn config() -> Config {
    Config::default()
        .with_default_keyspace()
        .with_timeout(Duration::from_secs(20))
}

/// Sends and receives message bytes as they are: a frame of garbage, or a message of one type
/// to a method that expects another.
#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let out = src.chunk().to_vec();
        src.advance(out.len());
        Ok(Some(out))
    }
}

/// One unary call of `path` with `body` as the request message's bytes.
async fn raw_call(addr: &str, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body),
        PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

/// Everything the test wrote, read back through the official clients.
async fn state(raw: &RawClient, txn: &TransactionClient) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = raw
        .scan(Vec::<u8>::new().., 100)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (Vec::<u8>::from(p.key().clone()), p.value().clone()))
        .collect();
    let ts = txn.current_timestamp().await.unwrap();
    let mut snap = txn.snapshot(ts, tikv_client::TransactionOptions::new_optimistic());
    for p in snap.scan(Vec::<u8>::new().., 100).await.unwrap() {
        let mut k: Vec<u8> = b"txn:".to_vec();
        k.extend_from_slice(Vec::<u8>::from(p.key().clone()).as_slice());
        out.push((k, p.value().clone()));
    }
    out
}

/// Every store process runs, the leader of `r`'s region still serves it, and a write through
/// the official client goes through.
async fn must_serve(c: &mut ProcCluster, r: &mut Target, raw: &RawClient, after: &str) {
    for s in c.stores.iter_mut() {
        let exited = s.child.as_mut().unwrap().try_wait().unwrap();
        assert!(
            exited.is_none(),
            "after {after}: a store exited: {exited:?}"
        );
    }
    let mut served = false;
    for _ in 0..50 {
        let get = kvrpcpb::RawGetRequest {
            context: Some(r.ctx.clone()),
            key: raw_key("k1"),
            ..Default::default()
        };
        let resp = r.kv.raw_get(get).await.unwrap().into_inner();
        if let Some(e) = &resp.region_error {
            assert!(
                e.region_not_found.is_none(),
                "after {after}: the leader lost its region: {e:?}"
            );
        } else {
            assert_eq!(resp.value, b"raw-k1");
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        served,
        "after {after}: the leader store stopped serving its region"
    );
    raw.put("k1".to_owned(), "raw-k1".to_owned())
        .await
        .unwrap_or_else(|e| panic!("after {after}: a write failed: {e}"));
}

fn region_error(e: Option<errorpb::Error>) -> errorpb::Error {
    e.expect("a region error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_typed_errors_and_change_nothing() {
    let mut c = ProcCluster::start(3, "");
    if !c.wait_regions(5, 3, Duration::from_secs(90)).await {
        c.dump_logs();
        panic!("the cluster never reached 5 regions with 3 voters each");
    }
    let raw = RawClient::new_with_config(vec![c.pd_addr.clone()], config())
        .await
        .unwrap();
    let txn = TransactionClient::new_with_config(vec![c.pd_addr.clone()], config())
        .await
        .unwrap();
    for k in KEYS {
        raw.put(k.to_owned(), format!("raw-{k}")).await.unwrap();
    }
    let mut t = txn.begin_optimistic().await.unwrap();
    for k in KEYS {
        t.put(k.to_owned(), format!("txn-{k}")).await.unwrap();
    }
    t.commit().await.unwrap();
    let before = state(&raw, &txn).await;
    assert_eq!(before.len(), 6, "{before:?}");

    let pd = pd_client::RpcPdClient::connect(std::slice::from_ref(&c.pd_addr))
        .await
        .unwrap();
    let mut r = target(&pd, &raw_key("k1")).await;
    let put = |ctx: Option<kvrpcpb::Context>, key: Vec<u8>| kvrpcpb::RawPutRequest {
        context: ctx,
        key,
        value: b"bad".to_vec(),
        ..Default::default()
    };

    // Misaddressed requests: region errors as data.
    let resp =
        r.kv.raw_put(put(None, raw_key("k1")))
            .await
            .unwrap()
            .into_inner();
    assert!(region_error(resp.region_error).region_not_found.is_some());
    let mut unknown = r.ctx.clone();
    unknown.region_id = 987_654_321;
    let resp =
        r.kv.raw_put(put(Some(unknown), raw_key("k1")))
            .await
            .unwrap()
            .into_inner();
    assert!(region_error(resp.region_error).region_not_found.is_some());
    let mut stale = r.ctx.clone();
    let epoch = stale.region_epoch.as_mut().unwrap();
    assert!(epoch.version > 0 && epoch.conf_ver > 0, "{epoch:?}");
    epoch.version -= 1;
    epoch.conf_ver -= 1;
    let resp =
        r.kv.raw_put(put(Some(stale), raw_key("k1")))
            .await
            .unwrap()
            .into_inner();
    let e = region_error(resp.region_error);
    assert!(e.epoch_not_match.is_some(), "{e:?}");
    let mut wrong_peer = r.ctx.clone();
    wrong_peer.peer.as_mut().unwrap().id += 1_000_000;
    let resp =
        r.kv.raw_put(put(Some(wrong_peer), raw_key("k1")))
            .await
            .unwrap()
            .into_inner();
    assert!(region_error(resp.region_error).mismatch_peer_id.is_some());
    // A follower answers NotLeader with the leader.
    let follower = r
        .region
        .peers
        .iter()
        .find(|p| p.store_id != r.leader.store_id)
        .copied()
        .unwrap();
    let follower_addr = pd.get_store(follower.store_id).await.unwrap().address;
    let mut fkv = TikvClient::connect(format!("http://{follower_addr}"))
        .await
        .unwrap();
    let fctx = kvrpcpb::Context {
        peer: Some(follower),
        ..r.ctx.clone()
    };
    let resp = fkv
        .raw_put(put(Some(fctx), raw_key("k1")))
        .await
        .unwrap()
        .into_inner();
    assert!(region_error(resp.region_error).not_leader.is_some());
    // Keys of another keyspace lie in another region.
    let other_keyspace = [b"r\0\0\x01".as_slice(), b"k1"].concat();
    let resp =
        r.kv.raw_put(put(Some(r.ctx.clone()), other_keyspace.clone()))
            .await
            .unwrap()
            .into_inner();
    assert!(region_error(resp.region_error).key_not_in_region.is_some());
    let get = kvrpcpb::RawGetRequest {
        context: Some(r.ctx.clone()),
        key: other_keyspace,
        ..Default::default()
    };
    let resp = r.kv.raw_get(get).await.unwrap().into_inner();
    assert!(region_error(resp.region_error).key_not_in_region.is_some());

    // A transactional key on the raw API, sent to the region that holds it: refused, or raw
    // bytes would land among the transaction's records.
    let x = target(&pd, &txn_key("k1")).await;
    let mut xkv = x.kv.clone();
    for cf in ["", "write", "lock"] {
        let req = kvrpcpb::RawPutRequest {
            cf: cf.into(),
            ..put(Some(x.ctx.clone()), txn_key("k1"))
        };
        let resp = xkv.raw_put(req).await.unwrap().into_inner();
        assert!(
            resp.error.contains("invalid key mode"),
            "cf {cf:?}: {resp:?}"
        );
    }
    let req = kvrpcpb::RawDeleteRangeRequest {
        context: Some(x.ctx.clone()),
        start_key: txn_key(""),
        end_key: b"x\0\0\x01".to_vec(),
        ..Default::default()
    };
    let resp = xkv.raw_delete_range(req).await.unwrap().into_inner();
    assert!(resp.error.contains("invalid key mode"), "{resp:?}");
    // And a raw key on the transactional API.
    let req = kvrpcpb::GetRequest {
        context: Some(r.ctx.clone()),
        key: raw_key("k1"),
        version: u64::MAX >> 2,
    };
    let resp = r.kv.kv_get(req).await.unwrap().into_inner();
    assert!(resp.error.unwrap().abort.contains("invalid key mode"));

    // Empty and oversize keys, oversize values and batches.
    for key in [vec![], b"r".to_vec(), raw_key(&"k".repeat(8 * 1024 + 1))] {
        let resp =
            r.kv.raw_put(put(Some(r.ctx.clone()), key.clone()))
                .await
                .unwrap()
                .into_inner();
        assert!(
            !resp.error.is_empty() && resp.region_error.is_none(),
            "{key:?}: {resp:?}"
        );
    }
    let req = kvrpcpb::RawPutRequest {
        value: vec![7; 8 * 1024 * 1024 + 1],
        ..put(Some(r.ctx.clone()), raw_key("k1"))
    };
    let resp = r.kv.raw_put(req).await.unwrap().into_inner();
    assert!(resp.error.contains("value of"), "{}", resp.error);
    // The number of pairs is not limited, their bytes are: 10,001 pairs of 1 KiB make a raft
    // entry above `raft_entry_max_bytes` (8 MiB), answered with the region error the client
    // knows, and nothing is written.
    let req = kvrpcpb::RawBatchPutRequest {
        context: Some(r.ctx.clone()),
        pairs: (0..10_001)
            .map(|i| kvrpcpb::KvPair {
                key: raw_key(&format!("k1-{i}")),
                value: vec![b'v'; 1024],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let resp = r.kv.raw_batch_put(req).await.unwrap().into_inner();
    assert!(
        region_error(resp.region_error)
            .raft_entry_too_large
            .is_some(),
        "{}",
        resp.error
    );
    // A batch get of 20,000 keys is answered (the three that exist).
    let req = kvrpcpb::RawBatchGetRequest {
        context: Some(r.ctx.clone()),
        keys: (0..20_000).map(|i| raw_key(KEYS[i % KEYS.len()])).collect(),
        ..Default::default()
    };
    let resp = r.kv.raw_batch_get(req).await.unwrap().into_inner();
    assert_eq!(resp.pairs.len(), 20_000, "{:?}", resp.region_error);
    // Above the gRPC message limit (64 MiB): a transport error, not a crash.
    let req = kvrpcpb::RawPutRequest {
        value: vec![7; 65 << 20],
        ..put(Some(r.ctx.clone()), raw_key("k1"))
    };
    let status = r.kv.raw_put(req).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange | tonic::Code::Internal
        ),
        "{status:?}"
    );

    // Scans: a range out of order, limits of zero and u32::MAX.
    let scan = |start: &str, end: &str, limit: u32| kvrpcpb::RawScanRequest {
        context: Some(r.ctx.clone()),
        start_key: raw_key(start),
        end_key: raw_key(end),
        limit,
        ..Default::default()
    };
    let resp =
        r.kv.raw_scan(scan("k3", "k1", 10))
            .await
            .unwrap()
            .into_inner();
    assert!(
        resp.kvs.len() == 1 && resp.kvs[0].error.is_some(),
        "{resp:?}"
    );
    let resp =
        r.kv.raw_scan(scan("k1", "k9", 0))
            .await
            .unwrap()
            .into_inner();
    assert!(
        resp.kvs.is_empty() && resp.region_error.is_none(),
        "{resp:?}"
    );
    // Any limit is served: it caps the answer, the response limit bounds its bytes.
    let resp =
        r.kv.raw_scan(scan("k1", "k9", u32::MAX))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(resp.kvs.len(), 3, "{resp:?}");
    let resp =
        r.kv.raw_scan(scan("k1", "k9", 10))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(resp.kvs.len(), 3, "a good scan still works: {resp:?}");

    // Compare-and-swap on a missing key: fails, and the key stays missing.
    let req = kvrpcpb::RawCasRequest {
        context: Some(r.ctx.clone()),
        key: raw_key("missing"),
        value: b"new".to_vec(),
        previous_value: b"old".to_vec(),
        ..Default::default()
    };
    let resp = r.kv.raw_compare_and_swap(req).await.unwrap().into_inner();
    assert!(!resp.succeed && resp.previous_not_exist, "{resp:?}");

    // Transactions: empty prewrite, commit below start, zero timestamps, unknown operations.
    let start_ts = txn.current_timestamp().await.unwrap().version();
    let mutation = |op: i32| kvrpcpb::Mutation {
        op,
        key: txn_key("k1"),
        value: b"bad".to_vec(),
    };
    let prewrite =
        |mutations: Vec<kvrpcpb::Mutation>, start_version: u64| kvrpcpb::PrewriteRequest {
            context: Some(x.ctx.clone()),
            mutations,
            primary_lock: txn_key("k1"),
            start_version,
            lock_ttl: 3_000,
            ..Default::default()
        };
    let resp = xkv
        .kv_prewrite(prewrite(vec![], start_ts))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.region_error.is_none(), "{resp:?}");
    let resp = xkv
        .kv_prewrite(prewrite(vec![mutation(0)], 0))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.errors[0].abort.contains("zero"), "{resp:?}");
    for op in [kvrpcpb::Op::Rollback as i32, 99] {
        let resp = xkv
            .kv_prewrite(prewrite(vec![mutation(op)], start_ts))
            .await
            .unwrap()
            .into_inner();
        assert!(resp.errors[0].abort.contains("not a prewrite"), "{resp:?}");
    }
    let commit = kvrpcpb::CommitRequest {
        context: Some(x.ctx.clone()),
        start_version: start_ts,
        keys: vec![txn_key("k1")],
        commit_version: start_ts - 1,
    };
    let resp = xkv.kv_commit(commit).await.unwrap().into_inner();
    assert!(resp.error.unwrap().abort.contains("greater"));
    let req = kvrpcpb::ScanRequest {
        context: Some(x.ctx.clone()),
        start_key: txn_key("k3"),
        end_key: txn_key("k1"),
        limit: 10,
        version: start_ts,
        ..Default::default()
    };
    let resp = xkv.kv_scan(req).await.unwrap().into_inner();
    assert!(resp.error.unwrap().abort.contains("invalid range"));

    // Undecodable frames, and one request type's bytes sent to another method.
    for (path, body) in [
        ("/tikvpb.Tikv/RawPut", vec![0xFF; 16]),
        (
            "/tikvpb.Tikv/KvPrewrite",
            vec![0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F],
        ),
    ] {
        let status = raw_call(&r.addr, path, body).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal, "{path}: {status:?}");
    }
    let batch = kvrpcpb::RawBatchPutRequest {
        context: Some(r.ctx.clone()),
        pairs: vec![kvrpcpb::KvPair {
            key: raw_key("k1"),
            value: b"bad".to_vec(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let bytes = raw_call(&r.addr, "/tikvpb.Tikv/RawPut", batch.encode_to_vec())
        .await
        .unwrap();
    let resp = kvrpcpb::RawPutResponse::decode(bytes.as_slice()).unwrap();
    assert!(
        !resp.error.is_empty() || resp.region_error.is_some(),
        "{resp:?}"
    );

    assert_eq!(
        state(&raw, &txn).await,
        before,
        "a bad request changed data"
    );

    // Garbage on the store-to-store raft service of the leader of `r`'s region.
    let leader_store = r.leader.store_id;
    let envelope = |message: Vec<u8>, to_id: u64| flotillapb::RaftMessage {
        region_id: r.region.id,
        from_peer: Some(follower),
        to_peer: Some(metapb::Peer {
            id: to_id,
            store_id: leader_store,
            ..Default::default()
        }),
        region_epoch: r.region.region_epoch,
        message,
        start_key: r.region.start_key.clone(),
        end_key: r.region.end_key.clone(),
        ..Default::default()
    };
    let mut propose = RaftMsg::default();
    propose.set_msg_type(MessageType::MsgPropose);
    propose.from = follower.id;
    propose.to = r.leader.id;
    propose.mut_entries().push(Entry {
        data: vec![0xFF; 32].into(),
        ..Default::default()
    });
    let mut snapshot = RaftMsg::default();
    snapshot.set_msg_type(MessageType::MsgSnapshot);
    snapshot.from = follower.id;
    snapshot.to = r.leader.id;
    snapshot.term = u64::MAX >> 1;
    snapshot.mut_snapshot().mut_metadata().index = u64::MAX >> 1;
    snapshot.mut_snapshot().mut_metadata().term = u64::MAX >> 1;
    // A region state without an apply state: once passed the store's check and failed the
    // apply thread, which panicked.
    snapshot.mut_snapshot().data = flotillapb::SnapshotData {
        region_state: Some(flotillapb::RegionLocalState {
            state: 0,
            region: Some(r.region.clone()),
            merge_state: None,
        }),
        apply_state: None,
        cfs: vec![],
    }
    .encode_to_vec()
    .into();
    let garbage = [
        ("undecodable", envelope(vec![0xFF; 8], r.leader.id)),
        ("empty", flotillapb::RaftMessage::default()),
        // A forged proposal of an undecodable command: once killed the apply thread of every
        // replica.
        (
            "forged proposal",
            envelope(
                protobuf::Message::write_to_bytes(&propose).unwrap(),
                r.leader.id,
            ),
        ),
        // A snapshot from a far future term that the apply thread cannot install.
        (
            "bad snapshot",
            envelope(
                protobuf::Message::write_to_bytes(&snapshot).unwrap(),
                r.leader.id,
            ),
        ),
        // Undecodable, to a newer incarnation of the leader's peer: once destroyed the peer.
        (
            "newer peer id",
            envelope(vec![0xFF; 8], r.leader.id + 1_000),
        ),
    ];
    let mut rt = RaftTransportClient::connect(format!("http://{}", r.addr))
        .await
        .unwrap();
    for (what, msg) in garbage {
        rt.raft(futures::stream::iter(vec![BatchRaftMessage {
            msgs: vec![msg],
        }]))
        .await
        .unwrap();
        must_serve(&mut c, &mut r, &raw, what).await;
    }
    let chunks = vec![SnapshotChunk {
        total_bytes: 4,
        data: vec![0xFF; 4],
    }];
    let status = rt
        .snapshot(futures::stream::iter(chunks))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let huge = vec![SnapshotChunk {
        total_bytes: u64::MAX,
        data: vec![],
    }];
    let status = rt.snapshot(futures::stream::iter(huge)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let status = raw_call(&r.addr, "/flotillapb.RaftTransport/Raft", vec![0xFF; 64])
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");

    // Every store still runs, the leader still serves its region, and nothing changed.
    must_serve(&mut c, &mut r, &raw, "raw garbage").await;
    assert_eq!(
        state(&raw, &txn).await,
        before,
        "garbage raft messages changed data"
    );
}
