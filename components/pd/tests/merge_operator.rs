//! `POST /pd/api/v1/operators` with `{"name": "merge-region", "source_region_id": A,
//! "target_region_id": B}` on a real PD on 127.0.0.1:0: refusals are typed JSON errors, an
//! accepted merge reaches the source's leader on its heartbeat stream as `merge: {target}`, and
//! the target's report covering both removes the source from the region list.

use std::net::SocketAddr;
use std::time::Duration;

use pd::{PdConfig, PdHandle, PdServer};
use proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};
use proto::pdpb::pd_client::PdClient;
use proto::pdpb::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

async fn must_start(dir: &std::path::Path) -> PdHandle {
    let cfg = PdConfig {
        data_dir: dir.to_path_buf(),
        listen_addr: "127.0.0.1:0".into(),
        // No balance-leader or balance-region operator in the way of the merge.
        balance_leader_interval_ms: 3_600_000,
        balance_region_interval_ms: 3_600_000,
        ..Default::default()
    };
    PdServer::start(cfg).await.unwrap()
}

fn header(cluster_id: u64) -> Option<RequestHeader> {
    Some(RequestHeader {
        cluster_id,
        sender_id: 0,
    })
}

fn store(id: u64) -> Store {
    Store {
        id,
        address: format!("127.0.0.1:{}", 22000 + id),
        ..Default::default()
    }
}

/// Region `id` over `[start, end)` at `version`, one voter on each of stores 1 to 3.
fn region(id: u64, start: &[u8], end: &[u8], version: u64) -> Region {
    Region {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version,
        }),
        peers: (1..=3)
            .map(|s| Peer {
                id: id * 10 + s,
                store_id: s,
                role: PeerRole::Voter as i32,
                is_witness: false,
            })
            .collect(),
    }
}

/// `POST path` with a JSON body: the status code and the body as JSON.
async fn http_post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: pd\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn must_region_ids(addr: SocketAddr) -> Vec<u64> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = "GET /pd/api/v1/regions HTTP/1.1\r\nHost: pd\r\nConnection: close\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let body: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    let regions = body["regions"].as_array().unwrap();
    regions.iter().map(|r| r["id"].as_u64().unwrap()).collect()
}

fn merge_body(source: u64, target: u64) -> Value {
    json!({"name": "merge-region", "source_region_id": source, "target_region_id": target})
}

#[tokio::test]
async fn merge_region_is_refused_with_a_reason_or_sent_to_the_source_leader() {
    let dir = tempfile::tempdir().unwrap();
    let pd = must_start(dir.path()).await;
    let addr = pd.addr();
    let mut c = PdClient::connect(pd.endpoint()).await.unwrap();
    let members = c.get_members(GetMembersRequest::default()).await.unwrap();
    let cid = members.into_inner().header.unwrap().cluster_id;
    let boot = BootstrapRequest {
        header: header(cid),
        store: Some(store(1)),
        region: Some(region(2, b"", b"", 1)),
    };
    c.bootstrap(boot).await.unwrap();
    for id in 2..=3 {
        let req = PutStoreRequest {
            header: header(cid),
            store: Some(store(id)),
        };
        c.put_store(req).await.unwrap();
    }
    // Regions 10..=15 at PD's pre-split keys, raw keyspace 0 split in two (11 and 12).
    let mut bounds = vec![Vec::new()];
    bounds.extend(codec::keys::keyspace_presplit_keys());
    bounds.insert(2, codec::memcomparable::encode_bytes(b"r\0\0\0m"));
    bounds.push(Vec::new());
    let regions: Vec<Region> = bounds
        .windows(2)
        .zip(10..)
        .map(|(w, id)| region(id, &w[0], &w[1], 2))
        .collect();
    let (tx, rx) = mpsc::channel(16);
    let mut answers = c
        .region_heartbeat(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let heartbeat = |r: &Region| RegionHeartbeatRequest {
        header: header(cid),
        region: Some(r.clone()),
        leader: r.peers.first().copied(),
        term: 1,
        ..Default::default()
    };
    for r in &regions {
        tx.send(heartbeat(r)).await.unwrap();
    }
    // Every region is known once the list shows them all.
    let want: Vec<u64> = (10..=15).collect();
    for _ in 0..100 {
        if must_region_ids(addr).await == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(must_region_ids(addr).await, want);

    let path = "/pd/api/v1/operators";
    for (source, target, code, reason) in [
        (11, 13, 400, "not_adjacent"),
        (10, 11, 400, "different_keyspaces"),
        (11, 11, 400, "same_region"),
    ] {
        let (got, body) = http_post(addr, path, &merge_body(source, target)).await;
        assert_eq!(
            (got, body["reason"].as_str()),
            (code, Some(reason)),
            "{body}"
        );
    }
    let (got, body) = http_post(addr, path, &merge_body(11, 99)).await;
    assert_eq!(got, 404, "{body}");
    let (got, body) = http_post(addr, path, &merge_body(11, 12)).await;
    assert_eq!(got, 200, "{body}");
    let (got, body) = http_post(addr, path, &merge_body(12, 11)).await;
    assert_eq!(got, 409, "the regions are held by the merge: {body}");

    // The source's leader is told to merge into the target as PD knows it.
    tx.send(heartbeat(&regions[1])).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), answers.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(resp.region_id, 11);
    assert_eq!(resp.merge.unwrap().target.as_ref(), Some(&regions[2]));
    // The target's report covering both removes the source.
    let mut merged = regions[2].clone();
    merged.start_key = regions[1].start_key.clone();
    merged.region_epoch.as_mut().unwrap().version = 4;
    tx.send(heartbeat(&merged)).await.unwrap();
    let want = vec![10, 12, 13, 14, 15];
    for _ in 0..100 {
        if must_region_ids(addr).await == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(must_region_ids(addr).await, want);
}
