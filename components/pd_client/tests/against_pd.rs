//! The RPC client against a real PD from `components/pd`.

use std::time::Duration;

use pd::{PdConfig, PdHandle, PdServer};
use pd_client::{PdClient, PdClientConfig, PdError, RpcPdClient};
use proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};
use proto::pdpb::{ErrorType, RegionHeartbeatRequest, StoreStats};

fn cfg(dir: &std::path::Path, listen: &str) -> PdConfig {
    PdConfig {
        data_dir: dir.to_path_buf(),
        listen_addr: listen.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_flow_against_real_pd() {
    let dir = tempfile::tempdir().unwrap();
    let pd = PdServer::start(cfg(dir.path(), "127.0.0.1:0"))
        .await
        .unwrap();
    let addr = pd.addr();
    let client = RpcPdClient::connect(&[addr.to_string()]).await.unwrap();
    let dyn_client: &dyn PdClient = &client;
    assert_ne!(dyn_client.cluster_id(), 0);
    assert!(!client.is_bootstrapped().await.unwrap());
    let store_id = client.alloc_id().await.unwrap();
    let (region_id, peer_id) = (
        client.alloc_id().await.unwrap(),
        client.alloc_id().await.unwrap(),
    );
    assert!(region_id > store_id && peer_id > region_id);
    let store = Store {
        id: store_id,
        address: "127.0.0.1:20160".into(),
        ..Default::default()
    };
    let peer = Peer {
        id: peer_id,
        store_id,
        role: PeerRole::Voter as i32,
        is_witness: false,
    };
    let region = Region {
        id: region_id,
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![peer],
        ..Default::default()
    };
    client
        .bootstrap(store.clone(), region.clone())
        .await
        .unwrap();
    let again = client
        .bootstrap(store.clone(), region.clone())
        .await
        .unwrap_err();
    assert!(again.is_already_bootstrapped(), "{again}");
    client.put_store(store.clone()).await.unwrap();
    assert_eq!(
        client.get_store(store_id).await.unwrap().address,
        store.address
    );
    assert!(matches!(
        client.get_store(9999).await,
        Err(PdError::Pd { .. })
    ));
    assert_eq!(client.get_all_stores().await.unwrap().len(), 1);
    client
        .store_heartbeat(StoreStats {
            store_id,
            ..Default::default()
        })
        .await
        .unwrap();
    let got = client.get_region(b"k".to_vec()).await.unwrap().unwrap();
    assert_eq!(got.region.id, region_id);
    assert_eq!(
        client
            .get_region_by_id(region_id)
            .await
            .unwrap()
            .unwrap()
            .leader,
        Some(peer)
    );
    assert!(client.get_region_by_id(424242).await.unwrap().is_none());
    assert_eq!(client.get_gc_safe_point().await.unwrap(), 0);
    let ids = client.ask_batch_split(region.clone(), 2).await.unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0].new_peer_ids.len(), 1);
    let t1 = client.get_tso().await.unwrap();
    let t2 = client.get_tso().await.unwrap();
    assert!(t2 > t1);

    must_heartbeat_across_restart(pd, dir.path(), &client, region, peer, t2).await;
}

/// The heartbeat stream answers the split, and survives a PD restart on the same address.
async fn must_heartbeat_across_restart(
    pd: PdHandle,
    dir: &std::path::Path,
    client: &RpcPdClient,
    region: Region,
    peer: Peer,
    t2: u64,
) {
    let addr = pd.addr();
    let (tx, mut rx) = client.region_heartbeat_stream();
    let hb = RegionHeartbeatRequest {
        region: Some(region.clone()),
        leader: Some(peer),
        ..Default::default()
    };
    tx.send(hb.clone()).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(resp.split_region.is_some());

    pd.shutdown().await;
    let pd = PdServer::start(cfg(dir, &addr.to_string())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let resp = loop {
        tx.send(hb.clone()).await.unwrap();
        if let Ok(Some(resp)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            break resp;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "heartbeat stream did not come back"
        );
    };
    assert!(resp.split_region.is_some());
    assert!(client.get_tso().await.unwrap() > t2);
    pd.shutdown().await;
}

#[tokio::test]
async fn connect_fails_fast_without_pd() {
    let cfg = PdClientConfig {
        retry_max: 2,
        connect_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let err = RpcPdClient::connect_with_config(&["127.0.0.1:1".into()], cfg)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, PdError::Transport(_)), "{err}");
    let err = RpcPdClient::connect(&[]).await.err().unwrap();
    assert!(matches!(err, PdError::InvalidArgument(_)));
    let _ = ErrorType::Ok;
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Against a three-member PD group: the client follows GetMembers to the leader whatever
/// endpoint it is given first, and when the leader stops it finds the new one, for calls and
/// for the region heartbeat stream (which the new leader answers with the same split).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follows_the_leader_of_a_pd_group() {
    let dir = tempfile::tempdir().unwrap();
    let members: Vec<pd::PdMember> = (1..=3)
        .map(|id| pd::PdMember {
            id,
            client_addr: free_addr(),
            peer_addr: free_addr(),
        })
        .collect();
    let mut handles = Vec::new();
    for m in &members {
        let cfg = PdConfig {
            initial_cluster: members.clone(),
            member_id: m.id,
            ..cfg(&dir.path().join(format!("pd{}", m.id)), &m.client_addr)
        };
        handles.push(Some(PdServer::start(cfg).await.unwrap()));
    }
    let leader = async |handles: &[Option<PdHandle>]| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = handles
                .iter()
                .position(|h| h.as_ref().is_some_and(|h| h.is_leader()))
            {
                return i;
            }
            assert!(tokio::time::Instant::now() < deadline, "no PD leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let first = leader(&handles).await;
    // A follower first in the list.
    let mut endpoints: Vec<String> = members.iter().map(|m| m.client_addr.clone()).collect();
    endpoints.rotate_left((first + 1) % 3);
    let client = RpcPdClient::connect(&endpoints).await.unwrap();
    let store_id = client.alloc_id().await.unwrap();
    let peer = Peer {
        id: client.alloc_id().await.unwrap(),
        store_id,
        role: PeerRole::Voter as i32,
        is_witness: false,
    };
    let region = Region {
        id: client.alloc_id().await.unwrap(),
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![peer],
        ..Default::default()
    };
    let store = Store {
        id: store_id,
        address: "127.0.0.1:20160".into(),
        ..Default::default()
    };
    client.bootstrap(store, region.clone()).await.unwrap();
    let t1 = client.get_tso().await.unwrap();
    let (tx, mut rx) = client.region_heartbeat_stream();
    let hb = RegionHeartbeatRequest {
        region: Some(region.clone()),
        leader: Some(peer),
        ..Default::default()
    };
    let split_answer = async |rx: &mut pd_client::RegionHeartbeatReceiver| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            tx.send(hb.clone()).await.unwrap();
            if let Ok(Some(resp)) =
                tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
            {
                return resp;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no heartbeat answer"
            );
        }
    };
    assert!(split_answer(&mut rx).await.split_region.is_some());

    handles[first].take().unwrap().shutdown().await;
    let id = client.alloc_id().await.unwrap();
    assert!(id > region.id);
    assert!(client.get_tso().await.unwrap() > t1);
    assert!(client.is_bootstrapped().await.unwrap());
    assert!(split_answer(&mut rx).await.split_region.is_some());
    let second = leader(&handles).await;
    assert_ne!(second, first);
    drop(tx);
    for h in handles.into_iter().flatten() {
        h.shutdown().await;
    }
}
