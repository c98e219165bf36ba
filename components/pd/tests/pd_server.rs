//! Drives a real PD on 127.0.0.1:0 with the tonic client and plain HTTP/1.

use std::path::Path;

use pd::{PdConfig, PdHandle, PdServer};
use proto::eraftpb::ConfChangeType;
use proto::keyspacepb::keyspace_client::KeyspaceClient;
use proto::keyspacepb::LoadKeyspaceRequest;
use proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};
use proto::pdpb::pd_client::PdClient;
use proto::pdpb::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

async fn must_start(dir: &Path) -> PdHandle {
    let cfg = PdConfig {
        data_dir: dir.to_path_buf(),
        listen_addr: "127.0.0.1:0".into(),
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

fn voter(id: u64, store_id: u64) -> Peer {
    Peer {
        id,
        store_id,
        role: PeerRole::Voter as i32,
        is_witness: false,
    }
}

/// The body of `GET path` over a plain HTTP/1.1 connection.
async fn http_get_text(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: pd\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n").unwrap().1.to_owned()
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> Value {
    serde_json::from_str(&http_get_text(addr, path).await).unwrap()
}

struct Heartbeats {
    tx: mpsc::Sender<RegionHeartbeatRequest>,
    rx: tonic::Streaming<RegionHeartbeatResponse>,
    cluster_id: u64,
}

impl Heartbeats {
    async fn open(c: &mut PdClient<Channel>, cluster_id: u64) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let rx = c
            .region_heartbeat(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Heartbeats { tx, rx, cluster_id }
    }

    async fn send(&mut self, region: &Region, leader: &Peer, pending: Vec<Peer>) {
        let req = RegionHeartbeatRequest {
            header: header(self.cluster_id),
            region: Some(region.clone()),
            leader: Some(*leader),
            pending_peers: pending,
            ..Default::default()
        };
        self.tx.send(req).await.unwrap();
    }

    async fn must_not_answer(&mut self, region: &Region, leader: &Peer, pending: Vec<Peer>) {
        self.send(region, leader, pending).await;
        let fut = self.rx.next();
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(300), fut)
                .await
                .is_err()
        );
    }

    async fn must_answer(
        &mut self,
        region: &Region,
        leader: &Peer,
        pending: Vec<Peer>,
    ) -> RegionHeartbeatResponse {
        self.send(region, leader, pending).await;
        let fut = self.rx.next();
        tokio::time::timeout(std::time::Duration::from_secs(5), fut)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }
}

async fn must_cluster_id(c: &mut PdClient<Channel>, endpoint: &str) -> u64 {
    let members = c
        .get_members(GetMembersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let cid = members.header.as_ref().unwrap().cluster_id;
    assert_ne!(cid, 0);
    assert_eq!(
        members.leader.unwrap().client_urls,
        vec![endpoint.to_owned()]
    );
    cid
}

async fn must_serve_keyspace_and_refuse_unbootstrapped(
    pd: &PdHandle,
    c: &mut PdClient<Channel>,
    cid: u64,
) {
    let mut ks = KeyspaceClient::connect(pd.endpoint()).await.unwrap();
    let req = |name: &str| LoadKeyspaceRequest {
        header: header(cid),
        name: name.into(),
    };
    let default = ks.load_keyspace(req("DEFAULT")).await.unwrap().into_inner();
    assert_eq!(default.keyspace.unwrap().id, 0);
    let missing = ks.load_keyspace(req("nope")).await.unwrap().into_inner();
    assert_eq!(
        err_type(&missing.header),
        Some(ErrorType::EntryNotFound as i32)
    );
    let req = GetRegionRequest {
        header: header(cid),
        ..Default::default()
    };
    let r = c.get_region(req).await.unwrap().into_inner();
    assert_eq!(err_type(&r.header), Some(ErrorType::NotBootstrapped as i32));
}

/// Bootstraps store s1 with a region spanning everything, and puts two more stores.
async fn must_bootstrap(c: &mut PdClient<Channel>, cid: u64) -> Region {
    let mut ids = Vec::new();
    for _ in 0..5 {
        let req = AllocIdRequest {
            header: header(cid),
        };
        ids.push(c.alloc_id(req).await.unwrap().into_inner().id);
    }
    let (s1, s2, s3, r1, p1) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let store = |id: u64| Store {
        id,
        address: format!("127.0.0.1:{}", 20000 + id),
        ..Default::default()
    };
    let first = Region {
        id: r1,
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![voter(p1, s1)],
        ..Default::default()
    };
    let boot = BootstrapRequest {
        header: header(cid),
        store: Some(store(s1)),
        region: Some(first.clone()),
    };
    assert_eq!(
        err_type(&c.bootstrap(boot.clone()).await.unwrap().into_inner().header),
        None
    );
    let again = c.bootstrap(boot).await.unwrap().into_inner();
    assert_eq!(
        err_type(&again.header),
        Some(ErrorType::AlreadyBootstrapped as i32)
    );
    for s in [s2, s3] {
        let req = PutStoreRequest {
            header: header(cid),
            store: Some(store(s)),
        };
        assert_eq!(
            err_type(&c.put_store(req).await.unwrap().into_inner().header),
            None
        );
    }
    first
}

/// The region spanning everything is asked to split at the keyspace boundaries; the split is
/// reported and GetRegion routes to the new regions.
async fn must_presplit(
    c: &mut PdClient<Channel>,
    hb: &mut Heartbeats,
    cid: u64,
    first: &Region,
) -> Vec<Region> {
    let leader = first.peers[0];
    let keys = hb
        .must_answer(first, &leader, vec![])
        .await
        .split_region
        .unwrap()
        .keys;
    assert_eq!(keys, codec::keys::keyspace_presplit_keys());
    let ask = AskBatchSplitRequest {
        header: header(cid),
        region: Some(first.clone()),
        split_count: 4,
    };
    let ids = c.ask_batch_split(ask).await.unwrap().into_inner().ids;
    assert_eq!(ids.len(), 4);
    let mut bounds = vec![Vec::new()];
    bounds.extend(keys.iter().cloned());
    bounds.push(Vec::new());
    let regions: Vec<Region> = bounds
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let (id, peer_id) = if i == 0 {
                (first.id, leader.id)
            } else {
                (ids[i - 1].new_region_id, ids[i - 1].new_peer_ids[0])
            };
            Region {
                id,
                start_key: w[0].clone(),
                end_key: w[1].clone(),
                region_epoch: Some(RegionEpoch {
                    conf_ver: 1,
                    version: 5,
                }),
                peers: vec![voter(peer_id, leader.store_id)],
            }
        })
        .collect();
    let report = ReportBatchSplitRequest {
        header: header(cid),
        regions: regions.clone(),
    };
    assert_eq!(
        err_type(
            &c.report_batch_split(report)
                .await
                .unwrap()
                .into_inner()
                .header
        ),
        None
    );
    for (i, k) in keys.iter().enumerate() {
        let req = GetRegionRequest {
            header: header(cid),
            region_key: k.clone(),
            need_buckets: false,
        };
        let got = c.get_region(req).await.unwrap().into_inner();
        assert_eq!(got.region.unwrap().id, regions[i + 1].id);
        assert_eq!(got.leader.unwrap().store_id, leader.store_id);
    }
    regions
}

/// A single-peer region with three stores up gets a learner, then its promotion.
async fn must_add_replica(hb: &mut Heartbeats, mut region: Region) {
    let leader = region.peers[0];
    let cp = hb
        .must_answer(&region, &leader, vec![])
        .await
        .change_peer
        .unwrap();
    assert_eq!(cp.change_type, ConfChangeType::AddLearnerNode as i32);
    let learner = cp.peer.unwrap();
    assert_eq!(learner.role, PeerRole::Learner as i32);
    assert_ne!(learner.store_id, leader.store_id);
    region.peers.push(learner);
    region.region_epoch.as_mut().unwrap().conf_ver += 1;
    // While the learner catches up, PD waits.
    hb.must_not_answer(&region, &leader, vec![learner]).await;
    let cp = hb
        .must_answer(&region, &leader, vec![])
        .await
        .change_peer
        .unwrap();
    assert_eq!(cp.change_type, ConfChangeType::AddNode as i32);
    assert_eq!(cp.peer.unwrap().id, learner.id);
}

async fn must_tso(c: &mut PdClient<Channel>, cid: u64) -> u64 {
    let req = TsoRequest {
        header: header(cid),
        count: 10,
        dc_location: String::new(),
    };
    let mut s = c
        .tso(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let ts = s.next().await.unwrap().unwrap().timestamp.unwrap();
    assert!(ts.logical >= 10);
    ((ts.physical as u64) << 18) | ts.logical as u64
}

/// After a restart on the same dir: same cluster id, stores, regions; TSO above `before`.
async fn must_survive_restart(dir: &Path, cid: u64, before: u64) {
    let pd = must_start(dir).await;
    let mut c = PdClient::connect(pd.endpoint()).await.unwrap();
    assert_eq!(must_cluster_id(&mut c, &pd.endpoint()).await, cid);
    let req = GetAllStoresRequest {
        header: header(cid),
        ..Default::default()
    };
    assert_eq!(
        c.get_all_stores(req)
            .await
            .unwrap()
            .into_inner()
            .stores
            .len(),
        3
    );
    let scan = ScanRegionsRequest {
        header: header(cid),
        ..Default::default()
    };
    assert_eq!(
        c.scan_regions(scan)
            .await
            .unwrap()
            .into_inner()
            .regions
            .len(),
        5
    );
    assert!(must_tso(&mut c, cid).await > before);
    let req = UpdateGcSafePointRequest {
        header: header(cid),
        safe_point: 7,
    };
    assert_eq!(
        c.update_gc_safe_point(req)
            .await
            .unwrap()
            .into_inner()
            .new_safe_point,
        7
    );
    pd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_end_to_end_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pd = must_start(dir.path()).await;
    let mut c = PdClient::connect(pd.endpoint()).await.unwrap();
    let cid = must_cluster_id(&mut c, &pd.endpoint()).await;
    must_serve_keyspace_and_refuse_unbootstrapped(&pd, &mut c, cid).await;
    let first = must_bootstrap(&mut c, cid).await;
    let mut hb = Heartbeats::open(&mut c, cid).await;
    let regions = must_presplit(&mut c, &mut hb, cid, &first).await;
    must_add_replica(&mut hb, regions[4].clone()).await;

    // HTTP on the same port.
    let regions_json = http_get(pd.addr(), "/pd/api/v1/regions").await;
    assert_eq!(regions_json["count"], 5);
    assert!(regions_json["regions"][0]["epoch"]["version"].is_u64());
    let stores_json = http_get(pd.addr(), "/pd/api/v1/stores").await;
    assert_eq!(stores_json["count"], 3);
    assert_eq!(stores_json["stores"][0]["status"]["is_up"], true);
    let metrics = http_get_text(pd.addr(), "/metrics").await;
    assert!(metrics.contains("pd_region_heartbeats_total"), "{metrics}");

    let before = must_tso(&mut c, cid).await;
    drop(hb);
    pd.shutdown().await;
    must_survive_restart(dir.path(), cid, before).await;
}
