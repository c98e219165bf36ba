//! A store's lifecycle through a real PD on 127.0.0.1:0: `DELETE /pd/api/v1/store/{id}` makes
//! it Offline, PD makes it Tombstone once it holds no region, and then its PutStore and
//! StoreHeartbeat are refused with `STORE_TOMBSTONE` over gRPC. Also: unknown routes answer a
//! JSON 404, known routes with the wrong method a JSON 405, and gRPC still works beside them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pd::{PdConfig, PdHandle, PdServer};
use proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store, StoreState};
use proto::pdpb::pd_client::PdClient;
use proto::pdpb::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

async fn must_start(dir: &std::path::Path) -> PdHandle {
    let cfg = PdConfig {
        data_dir: dir.to_path_buf(),
        listen_addr: "127.0.0.1:0".into(),
        // The loop that also makes empty Offline stores Tombstone.
        balance_leader_interval_ms: 20,
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

fn err_type(h: &Option<ResponseHeader>) -> Option<i32> {
    h.as_ref().and_then(|h| h.error.as_ref()).map(|e| e.r#type)
}

fn store(id: u64) -> Store {
    Store {
        id,
        address: format!("127.0.0.1:{}", 21000 + id),
        ..Default::default()
    }
}

/// One HTTP/1.1 exchange: the status code, the response head and the body as JSON (Null if
/// it is not JSON).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
) -> (u16, String, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let ct = content_type.map_or(String::new(), |c| format!("Content-Type: {c}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: pd\r\nConnection: close\r\n{ct}Content-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (code, head.to_ascii_lowercase(), json)
}

/// Asserts a JSON error answer with `code` whose message contains `needle`.
async fn must_fail(addr: SocketAddr, method: &str, path: &str, code: u16, needle: &str) {
    let (got, _, body) = http(addr, method, path, None).await;
    assert_eq!(got, code, "{method} {path}: {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains(needle), "{method} {path}: {body}");
}

/// Bootstraps store 1 with one region, puts stores 2 to 4; returns the cluster id.
async fn must_bootstrap(c: &mut PdClient<Channel>) -> u64 {
    let members = c.get_members(GetMembersRequest::default()).await.unwrap();
    let cid = members.into_inner().header.unwrap().cluster_id;
    let region = Region {
        id: 100,
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![Peer {
            id: 101,
            store_id: 1,
            role: PeerRole::Voter as i32,
            is_witness: false,
        }],
        ..Default::default()
    };
    let boot = BootstrapRequest {
        header: header(cid),
        store: Some(store(1)),
        region: Some(region),
    };
    let resp = c.bootstrap(boot).await.unwrap().into_inner();
    assert_eq!(err_type(&resp.header), None);
    for id in 2..=4 {
        assert_eq!(err_type(&put_store(c, cid, id).await), None);
    }
    cid
}

async fn put_store(c: &mut PdClient<Channel>, cid: u64, id: u64) -> Option<ResponseHeader> {
    let req = PutStoreRequest {
        header: header(cid),
        store: Some(store(id)),
    };
    c.put_store(req).await.unwrap().into_inner().header
}

async fn store_state(addr: SocketAddr, id: u64) -> Value {
    let (code, _, body) = http(addr, "GET", &format!("/pd/api/v1/store/{id}"), None).await;
    assert_eq!(code, 200, "{body}");
    body
}

#[tokio::test]
async fn unknown_routes_answer_404_and_wrong_methods_405_in_json_beside_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let pd = must_start(dir.path()).await;
    let addr = pd.addr();
    must_fail(addr, "GET", "/nope", 404, "no route GET /nope").await;
    must_fail(addr, "GET", "/pd/api/v1/storez", 404, "no route").await;
    must_fail(addr, "DELETE", "/pd/api/v1/stores", 405, "not allowed").await;
    must_fail(addr, "POST", "/pd/api/v1/regions", 405, "not allowed").await;
    must_fail(addr, "PUT", "/pd/api/v1/store/1", 405, "not allowed").await;
    must_fail(addr, "GET", "/pd/api/v1/store/1/state", 405, "not allowed").await;
    // A gRPC call to a method nobody serves still gets gRPC's UNIMPLEMENTED (12).
    let (code, head, _) = http(addr, "POST", "/nope.Svc/Call", Some("application/grpc")).await;
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("grpc-status: 12"), "{head}");
    // gRPC and the known routes work beside the fallbacks.
    let mut c = PdClient::connect(pd.endpoint()).await.unwrap();
    let cid = must_bootstrap(&mut c).await;
    assert_ne!(cid, 0);
    let (code, _, body) = http(addr, "GET", "/pd/api/v1/stores", None).await;
    assert_eq!((code, body["count"].as_u64()), (200, Some(4)), "{body}");
    pd.shutdown().await;
}

#[tokio::test]
async fn a_deleted_store_goes_offline_then_tombstone_and_is_refused_when_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let pd = must_start(dir.path()).await;
    let addr = pd.addr();
    let mut c = PdClient::connect(pd.endpoint()).await.unwrap();
    let cid = must_bootstrap(&mut c).await;

    must_fail(
        addr,
        "GET",
        "/pd/api/v1/store/99",
        404,
        "store 99 not found",
    )
    .await;
    must_fail(
        addr,
        "DELETE",
        "/pd/api/v1/store/99",
        404,
        "store 99 not found",
    )
    .await;
    must_fail(addr, "DELETE", "/pd/api/v1/store/abc", 400, "bad store id").await;
    must_fail(
        addr,
        "DELETE",
        "/pd/api/v1/store/4?force=maybe",
        400,
        "force",
    )
    .await;
    let bad_state = "/pd/api/v1/store/4/state?state=Tombstone";
    must_fail(addr, "POST", bad_state, 400, "Up or Offline").await;
    assert_eq!(store_state(addr, 4).await["store"]["state"], "Up");

    // Store 1 holds the region: Offline, and stays so while it holds it.
    let (code, _, body) = http(addr, "DELETE", "/pd/api/v1/store/1", None).await;
    assert_eq!((code, body), (200, serde_json::json!({"ok": true})));
    let s1 = store_state(addr, 1).await;
    assert_eq!(s1["store"]["state"], "Offline", "{s1}");
    assert_eq!(s1["status"]["regions_left"], 1, "{s1}");
    // Cancel it: Up again, without regions_left.
    let (code, _, body) = http(addr, "POST", "/pd/api/v1/store/1/state?state=Up", None).await;
    assert_eq!(code, 200, "{body}");
    let s1 = store_state(addr, 1).await;
    assert_eq!(s1["store"]["state"], "Up", "{s1}");
    assert!(s1["status"]["regions_left"].is_null(), "{s1}");

    // Store 4 holds nothing: Offline, then Tombstone on PD's next round.
    let (code, _, _) = http(addr, "DELETE", "/pd/api/v1/store/4", None).await;
    assert_eq!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s4 = store_state(addr, 4).await;
        if s4["store"]["state"] == "Tombstone" {
            break;
        }
        assert_eq!(s4["store"]["state"], "Offline", "{s4}");
        assert!(Instant::now() < deadline, "store 4 never became Tombstone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    must_fail(addr, "DELETE", "/pd/api/v1/store/4", 409, "tombstone").await;
    must_fail(
        addr,
        "POST",
        "/pd/api/v1/store/4/state?state=Up",
        409,
        "tombstone",
    )
    .await;
    // Stores 1, 2, 3 are the last Up ones: removing one would leave 2 < max_replicas 3.
    must_fail(addr, "DELETE", "/pd/api/v1/store/3", 409, "max_replicas").await;
    assert_eq!(store_state(addr, 3).await["store"]["state"], "Up");

    // The tombstone comes back: refused as PD refuses it.
    let tombstone = Some(ErrorType::StoreTombstone as i32);
    assert_eq!(err_type(&put_store(&mut c, cid, 4).await), tombstone);
    let hb = StoreHeartbeatRequest {
        header: header(cid),
        stats: Some(StoreStats {
            store_id: 4,
            ..Default::default()
        }),
    };
    let resp = c.store_heartbeat(hb).await.unwrap().into_inner();
    assert_eq!(err_type(&resp.header), tombstone);
    // Clients still find it, as a tombstone, and may leave it out of the list.
    let req = GetStoreRequest {
        header: header(cid),
        store_id: 4,
    };
    let got = c.get_store(req).await.unwrap().into_inner();
    assert_eq!(err_type(&got.header), None);
    assert_eq!(got.store.unwrap().state, StoreState::Tombstone as i32);
    for (exclude, want) in [(true, vec![1, 2, 3]), (false, vec![1, 2, 3, 4])] {
        let req = GetAllStoresRequest {
            header: header(cid),
            exclude_tombstone_stores: exclude,
        };
        let all = c.get_all_stores(req).await.unwrap().into_inner();
        let ids: Vec<u64> = all.stores.iter().map(|s| s.id).collect();
        assert_eq!(ids, want, "exclude_tombstone_stores {exclude}");
    }

    // Forced, the check on the Up stores left is skipped (store 1 keeps its region: Offline).
    let (code, _, body) = http(addr, "DELETE", "/pd/api/v1/store/1?force=true", None).await;
    assert_eq!(code, 200, "{body}");
    pd.shutdown().await;

    // Every state survives a restart.
    let pd = must_start(dir.path()).await;
    let states: Vec<Value> = {
        let mut v = Vec::new();
        for id in 1..=4 {
            v.push(store_state(pd.addr(), id).await["store"]["state"].clone());
        }
        v
    };
    assert_eq!(states, ["Offline", "Up", "Up", "Tombstone"]);
    pd.shutdown().await;
}
