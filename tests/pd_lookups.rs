//! Region lookups of the official client (tikv-client 0.4) through PD faults. The client drops a
//! request whose region lookup fails and still acknowledges the transaction it belonged to, so
//! a lookup PD fails to answer is a lost write. Two windows that used to fail a lookup:
//!
//! - a member that does not lead (the leader died, an election runs) answered `Unavailable`,
//!   and followers named a dead leader; every live member now answers lookups from its replica
//!   view and names itself to clients while it hears no leader;
//! - a split reported to PD as the shrunk region before the new region (a heartbeat racing the
//!   split report, or a report lost while PD changed leaders) left a range with no region; PD
//!   now answers it with the region that covered it until a newer one does.
//!
//! PD runs in this process; the "store" is a gRPC server that answers every call with
//! `Unimplemented`, so a client error with that code proves the lookup succeeded and the
//! request reached the store.

use std::path::Path;
use std::time::{Duration, Instant};

use pd::{PdConfig, PdHandle, PdMember, PdServer};
use proto::flotillapb::pd_peer_server::{PdPeer, PdPeerServer};
use proto::flotillapb::{Done, PdRaftBatch};
use proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};
use proto::pdpb::RegionHeartbeatRequest;
use tempfile::TempDir;
use tikv_client::{Backoff, Config, RawClient};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A gRPC server that knows no tikvpb method: every store call is answered `Unimplemented`.
struct NoStore;

#[tonic::async_trait]
impl PdPeer for NoStore {
    async fn raft(
        &self,
        _req: tonic::Request<PdRaftBatch>,
    ) -> Result<tonic::Response<Done>, tonic::Status> {
        Err(tonic::Status::unimplemented("not a store"))
    }
}

async fn start_no_store() -> String {
    let addr = free_addr();
    let bind = addr.parse().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PdPeerServer::new(NoStore))
            .serve(bind),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(Instant::now() < deadline, "fake store did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    addr
}

fn peer(store_id: u64) -> Peer {
    Peer {
        id: 3,
        store_id,
        role: PeerRole::Voter as i32,
        is_witness: false,
    }
}

fn region(start: &[u8], end: &[u8], version: u64) -> Region {
    Region {
        id: 2,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version,
        }),
        peers: vec![peer(1)],
    }
}

/// Bootstraps the cluster `handle` leads with one store at `store_addr` and one region.
fn bootstrap(handle: &PdHandle, store_addr: &str) {
    let cluster = handle.cluster().expect("the leader serves");
    let store = Store {
        id: 1,
        address: store_addr.to_owned(),
        ..Default::default()
    };
    cluster
        .bootstrap(store, region(b"", b"", 1), now_ms())
        .unwrap();
}

fn client_config() -> Config {
    Config::default()
        .with_default_keyspace()
        .with_timeout(Duration::from_secs(2))
}

/// One raw get, no retries: `Ok(())` when the request reached the store (the lookup worked),
/// else the client's error.
async fn lookup(client: &RawClient, key: &str) -> Result<(), String> {
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        client
            .with_backoff(Backoff::no_backoff())
            .get(key.to_owned()),
    )
    .await
    .map_err(|_| "no answer in 20 s".to_owned())?;
    match got {
        // The client's tonic is another version than ours: compare the codes' numbers.
        Err(tikv_client::Error::GrpcAPI(status))
            if status.code() as i32 == tonic::Code::Unimplemented as i32 =>
        {
            Ok(())
        }
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_reported_shrunk_region_first_leaves_no_range_without_a_region() {
    let dir = TempDir::new().unwrap();
    let store_addr = start_no_store().await;
    let pd = PdServer::start(PdConfig {
        data_dir: dir.path().join("pd"),
        listen_addr: free_addr(),
        ..Default::default()
    })
    .await
    .unwrap();
    bootstrap(&pd, &store_addr);
    // Region 2 split at "r": its heartbeat as [.., "r") arrives, the new region's report not
    // yet. Every raw key of the default keyspace (encoded "r\0\0\0...") lies beyond "r".
    let cluster = pd.cluster().unwrap();
    let heartbeat = RegionHeartbeatRequest {
        region: Some(region(b"", b"r", 2)),
        leader: Some(peer(1)),
        term: 1,
        ..Default::default()
    };
    cluster.region_heartbeat(heartbeat, now_ms()).unwrap();
    drop(cluster);
    let client = RawClient::new_with_config(vec![pd.addr().to_string()], client_config())
        .await
        .unwrap();
    lookup(&client, "beyond the shrunk region")
        .await
        .expect("the range the split left uncovered is answered with the region that held it");
    pd.shutdown().await;
}

fn members(n: u64) -> Vec<PdMember> {
    (1..=n)
        .map(|id| PdMember {
            id,
            client_addr: free_addr(),
            peer_addr: free_addr(),
        })
        .collect()
}

async fn start_member(dir: &Path, members: &[PdMember], id: u64) -> PdHandle {
    let me = members.iter().find(|m| m.id == id).unwrap();
    PdServer::start(PdConfig {
        data_dir: dir.join(format!("pd{id}")),
        listen_addr: me.client_addr.clone(),
        initial_cluster: members.to_vec(),
        member_id: id,
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn leader_of(handles: &[Option<PdHandle>]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leaders: Vec<usize> = (0..handles.len())
            .filter(|i| handles[*i].as_ref().is_some_and(|h| h.is_leader()))
            .collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(Instant::now() < deadline, "no single leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_live_member_answers_the_official_clients_lookups() {
    let dir = TempDir::new().unwrap();
    let store_addr = start_no_store().await;
    let members = members(3);
    let mut handles = Vec::new();
    for m in &members {
        handles.push(Some(start_member(dir.path(), &members, m.id).await));
    }
    let leader = leader_of(&handles).await;
    bootstrap(handles[leader].as_ref().unwrap(), &store_addr);
    let endpoints: Vec<String> = members.iter().map(|m| m.client_addr.clone()).collect();
    let client = RawClient::new_with_config(endpoints.clone(), client_config())
        .await
        .unwrap();
    lookup(&client, "before").await.unwrap();
    // Past the client's reconnect throttle (1 s), as a long-lived client is.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // The leader and one follower stop: the survivor can never elect a leader, yet both the
    // existing client and a new one look regions up through it.
    let survivor = (leader + 1) % 3;
    for i in [leader, (leader + 2) % 3] {
        handles[i].take().unwrap().shutdown().await;
    }
    let stopped = Instant::now();
    lookup(&client, "after")
        .await
        .expect("the existing client's lookup");
    let fresh = RawClient::new_with_config(endpoints, client_config())
        .await
        .expect("a new client connects to the survivor");
    lookup(&fresh, "fresh")
        .await
        .expect("the new client's lookup");
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "lookups took {:?}",
        stopped.elapsed()
    );
    assert!(!handles[survivor].as_ref().unwrap().is_leader());
    for h in handles.into_iter().flatten() {
        h.shutdown().await;
    }
}
