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

async fn http_get(addr: std::net::SocketAddr, path: &str) -> Value {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: pd\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap()
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

    async fn must_answer(
        &mut self,
        region: &Region,
        leader: &Peer,
        pending: Vec<Peer>,
    ) -> RegionHeartbeatResponse {
        let req = RegionHeartbeatRequest {
            header: header(self.cluster_id),
            region: Some(region.clone()),
            leader: Some(*leader),
            pending_peers: pending,
            ..Default::default()
        };
        self.tx.send(req).await.unwrap();
        let fut = self.rx.next();
        tokio::time::timeout(std::time::Duration::from_secs(5), fut)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_end_to_end_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pd = must_start(dir.path()).await;
    let mut c = PdClient::connect(pd.endpoint()).await.unwrap();
    let members = c
        .get_members(GetMembersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let cid = members.header.as_ref().unwrap().cluster_id;
    assert_ne!(cid, 0);
    assert_eq!(members.leader.unwrap().client_urls, vec![pd.endpoint()]);

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

    let r = c
        .get_region(GetRegionRequest {
            header: header(cid),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        err_type(&r.into_inner().header),
        Some(ErrorType::NotBootstrapped as i32)
    );

    let id = || {
        let mut c = c.clone();
        async move {
            c.alloc_id(AllocIdRequest {
                header: header(cid),
            })
            .await
            .unwrap()
            .into_inner()
            .id
        }
    };
    let (s1, s2, s3, r1, p1) = (id().await, id().await, id().await, id().await, id().await);
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
        let resp = c
            .put_store(PutStoreRequest {
                header: header(cid),
                store: Some(store(s)),
            })
            .await
            .unwrap();
        assert_eq!(err_type(&resp.into_inner().header), None);
    }

    // The region spanning everything is asked to split at the keyspace boundaries.
    let mut hb = Heartbeats::open(&mut c, cid).await;
    let resp = hb.must_answer(&first, &voter(p1, s1), vec![]).await;
    let keys = resp.split_region.unwrap().keys;
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
            let (rid, pid) = if i == 0 {
                (r1, p1)
            } else {
                (ids[i - 1].new_region_id, ids[i - 1].new_peer_ids[0])
            };
            Region {
                id: rid,
                start_key: w[0].clone(),
                end_key: w[1].clone(),
                region_epoch: Some(RegionEpoch {
                    conf_ver: 1,
                    version: 5,
                }),
                peers: vec![voter(pid, s1)],
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
        assert_eq!(got.leader.unwrap().store_id, s1);
    }

    // A single-peer region with three stores up gets a learner, then its promotion.
    let mut last = regions[4].clone();
    let leader = last.peers[0];
    let resp = hb.must_answer(&last, &leader, vec![]).await;
    let cp = resp.change_peer.unwrap();
    assert_eq!(cp.change_type, ConfChangeType::AddLearnerNode as i32);
    let learner = cp.peer.unwrap();
    assert_eq!(learner.role, PeerRole::Learner as i32);
    assert_ne!(learner.store_id, s1);
    last.peers.push(learner);
    last.region_epoch.as_mut().unwrap().conf_ver += 1;
    let resp = hb.must_answer(&last, &leader, vec![]).await;
    let cp = resp.change_peer.unwrap();
    assert_eq!(cp.change_type, ConfChangeType::AddNode as i32);
    assert_eq!(cp.peer.unwrap().id, learner.id);

    // HTTP on the same port.
    let regions_json = http_get(pd.addr(), "/pd/api/v1/regions").await;
    assert_eq!(regions_json["count"], 5);
    assert!(regions_json["regions"][0]["epoch"]["version"].is_u64());
    let stores_json = http_get(pd.addr(), "/pd/api/v1/stores").await;
    assert_eq!(stores_json["count"], 3);
    assert_eq!(stores_json["stores"][0]["status"]["is_up"], true);

    // TSO before the restart.
    let tso = |mut c: PdClient<Channel>| async move {
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
    };
    let before = tso(c.clone()).await;
    drop(hb);
    pd.shutdown().await;

    let pd = must_start(dir.path()).await;
    let mut c = PdClient::connect(pd.endpoint()).await.unwrap();
    let members = c
        .get_members(GetMembersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(members.header.unwrap().cluster_id, cid);
    let stores = c
        .get_all_stores(GetAllStoresRequest {
            header: header(cid),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stores.into_inner().stores.len(), 3);
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
    assert!(tso(c.clone()).await > before);
    let sp = c
        .update_gc_safe_point(UpdateGcSafePointRequest {
            header: header(cid),
            safe_point: 7,
        })
        .await
        .unwrap();
    assert_eq!(sp.into_inner().new_safe_point, 7);
    pd.shutdown().await;
}
