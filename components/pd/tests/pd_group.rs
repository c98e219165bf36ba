//! A PD group of three members on loopback: one leads, the others name it and answer the stores'
//! calls with `Unavailable`; when the leader stops, another takes over with the same cluster id,
//! ids and timestamps above every one handed out, and the bootstrapped state; a member that was
//! down catches up, from a snapshot once the log was compacted past it. Every member answers a
//! client's lookups and relays its timestamps, also while the group has no leader. The peer
//! port refuses proposals and garbage without effect.

use std::path::Path;
use std::time::{Duration, Instant};

use pd::{PdConfig, PdHandle, PdMember, PdServer};
use proto::flotillapb::pd_peer_client::PdPeerClient;
use proto::flotillapb::PdRaftBatch;
use proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};
use proto::pdpb::pd_client::PdClient;
use proto::pdpb::{
    AllocIdRequest, GetMembersRequest, GetRegionRequest, GetStoreRequest, IsBootstrappedRequest,
    PutStoreRequest, RequestHeader, TsoRequest,
};
use raft::eraftpb::{Entry, Message as RaftMessage, MessageType};
use tempfile::TempDir;

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
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

fn config(dir: &Path, members: &[PdMember], id: u64) -> PdConfig {
    let me = members.iter().find(|m| m.id == id).unwrap();
    PdConfig {
        data_dir: dir.join(format!("pd{id}")),
        listen_addr: me.client_addr.clone(),
        initial_cluster: members.to_vec(),
        member_id: id,
        // Small enough that the writes below compact the log past a stopped member.
        raft_log_max_entries: 20,
        id_batch: 1,
        ..Default::default()
    }
}

async fn start(dir: &Path, members: &[PdMember], id: u64) -> PdHandle {
    PdServer::start(config(dir, members, id)).await.unwrap()
}

/// Waits until exactly one of `handles` leads; returns its index.
async fn leader_of(handles: &[Option<PdHandle>]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leaders: Vec<usize> = handles
            .iter()
            .enumerate()
            .filter(|(_, h)| h.as_ref().is_some_and(|h| h.is_leader()))
            .map(|(i, _)| i)
            .collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(Instant::now() < deadline, "no single leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn first_region(store_id: u64) -> Region {
    Region {
        id: 2,
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![Peer {
            id: 3,
            store_id,
            role: PeerRole::Voter as i32,
            is_witness: false,
        }],
        ..Default::default()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn ts_of(t: &proto::pdpb::Timestamp) -> u64 {
    pd::compose_ts(t.physical as u64, t.logical as u64)
}

/// Starts every member, waits for a leader and bootstraps through it (store 1, region 2);
/// returns the handles and the leader's index.
async fn start_bootstrapped(dir: &Path, members: &[PdMember]) -> (Vec<Option<PdHandle>>, usize) {
    let mut handles = Vec::new();
    for m in members {
        handles.push(Some(start(dir, members, m.id).await));
    }
    let first = leader_of(&handles).await;
    let store = Store {
        id: 1,
        address: "127.0.0.1:1".into(),
        ..Default::default()
    };
    let cluster = handles[first].as_ref().unwrap().cluster().unwrap();
    cluster.bootstrap(store, first_region(1), now_ms()).unwrap();
    (handles, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_takes_over_with_the_replicated_state() {
    let dir = TempDir::new().unwrap();
    let members = members(3);
    let (mut handles, first) = start_bootstrapped(dir.path(), &members).await;
    let cluster = handles[first].as_ref().unwrap().cluster().unwrap();
    let cluster_id = cluster.cluster_id();
    let mut last_id = 0;
    for _ in 0..5 {
        last_id = cluster.alloc_id().unwrap();
    }
    let last_ts = ts_of(&cluster.tso(now_ms(), 1).unwrap());
    drop(cluster);

    // Stop the leader: another member leads with the same state, ids and timestamps above.
    handles[first].take().unwrap().shutdown().await;
    let second = leader_of(&handles).await;
    assert_ne!(second, first);
    let cluster = handles[second].as_ref().unwrap().cluster().unwrap();
    assert_eq!(cluster.cluster_id(), cluster_id);
    assert!(cluster.is_bootstrapped());
    let id = cluster.alloc_id().unwrap();
    assert!(id > last_id, "id {id} after {last_id}");
    // Even with a wall clock that went far back.
    let ts = ts_of(&cluster.tso(1, 1).unwrap());
    assert!(ts > last_ts, "timestamp {ts} after {last_ts}");

    // Enough writes with the old leader down to compact the log past it.
    for _ in 0..60 {
        last_id = cluster.alloc_id().unwrap();
    }
    drop(cluster);
    handles[first] = Some(start(dir.path(), &members, members[first].id).await);
    // The restarted member must now be part of every quorum: stop the third one.
    let third = 3 - first - second;
    handles[third].take().unwrap().shutdown().await;
    let leader = leader_of(&handles).await;
    let cluster = handles[leader].as_ref().unwrap().cluster().unwrap();
    // Each batch of ids is a replicated write, which now needs the restarted member.
    for _ in 0..6 {
        let id = cluster.alloc_id().unwrap();
        assert!(id > last_id, "id {id} after {last_id}");
        last_id = id;
    }
    assert!(cluster.is_bootstrapped());
    drop(cluster);
    for h in handles.into_iter().flatten() {
        h.shutdown().await;
    }
}

/// One timestamp through member `url`'s TSO stream (relayed when it does not lead).
async fn tso_via(url: &str, cluster_id: u64) -> Result<u64, tonic::Status> {
    let mut client = PdClient::connect(url.to_owned())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let req = TsoRequest {
        header: Some(RequestHeader {
            cluster_id,
            ..Default::default()
        }),
        count: 1,
        ..Default::default()
    };
    let mut answers = client
        .tso(futures::stream::iter(vec![req]))
        .await?
        .into_inner();
    let resp = answers
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unavailable("TSO stream ended"))?;
    Ok(ts_of(&resp.timestamp.expect("a timestamp")))
}

/// The region holding `key` as member `url` answers it.
async fn region_via(url: &str, cluster_id: u64, key: &[u8]) -> Result<u64, tonic::Status> {
    let mut client = PdClient::connect(url.to_owned())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let resp = client
        .get_region(GetRegionRequest {
            header: Some(RequestHeader {
                cluster_id,
                ..Default::default()
            }),
            region_key: key.to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(resp.header.unwrap().error.is_none());
    Ok(resp.region.map_or(0, |r| r.id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_member_answers_lookups_and_relays_timestamps_through_a_leader_change() {
    let dir = TempDir::new().unwrap();
    let members = members(3);
    let (mut handles, first) = start_bootstrapped(dir.path(), &members).await;
    let cluster = handles[first].as_ref().unwrap().cluster().unwrap();
    let cluster_id = cluster.cluster_id();
    let last_ts = ts_of(&cluster.tso(now_ms(), 1).unwrap());
    drop(cluster);

    // A follower: names the leader (to clients and as the raft leader), answers lookups from
    // its replica view, relays a TSO stream to the leader; the stores' calls stay the leader's.
    let follower = (first + 1) % 3;
    let url = handles[follower].as_ref().unwrap().endpoint();
    let mut client = PdClient::connect(url.clone()).await.unwrap();
    let resp = client
        .get_members(GetMembersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.leader.unwrap().member_id, members[first].id);
    assert_eq!(resp.etcd_leader.unwrap().member_id, members[first].id);
    assert_eq!(region_via(&url, cluster_id, b"any key").await.unwrap(), 2);
    let store = client
        .get_store(GetStoreRequest {
            store_id: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(store.store.unwrap().address, "127.0.0.1:1");
    let ts = tso_via(&url, cluster_id).await.unwrap();
    assert!(ts > last_ts, "relayed timestamp {ts} after {last_ts}");
    let err = client
        .is_bootstrapped(IsBootstrappedRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");

    // The leader stops. Before any election ends, the survivors still answer lookups; a TSO
    // stream opened now waits for the new leader instead of failing; and once the old leader
    // has been silent for a few heartbeats, no survivor names it to clients any more.
    handles[first].take().unwrap().shutdown().await;
    let stopped = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != first).collect();
    for i in &survivors {
        let url = handles[*i].as_ref().unwrap().endpoint();
        assert_eq!(region_via(&url, cluster_id, b"k").await.unwrap(), 2);
    }
    let relayed = tokio::spawn({
        let url = handles[survivors[0]].as_ref().unwrap().endpoint();
        async move { tso_via(&url, cluster_id).await }
    });
    let deadline = stopped + Duration::from_secs(10);
    loop {
        let mut named_dead = false;
        for i in &survivors {
            let url = handles[*i].as_ref().unwrap().endpoint();
            let mut c = PdClient::connect(url).await.unwrap();
            let resp = c
                .get_members(GetMembersRequest::default())
                .await
                .unwrap()
                .into_inner();
            named_dead |= resp.leader.unwrap().member_id == members[first].id;
        }
        if !named_dead {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a survivor still names the stopped leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ts = relayed
        .await
        .unwrap()
        .expect("a TSO stream waits out the election");
    assert!(ts > last_ts, "timestamp {ts} after {last_ts}");
    let second = leader_of(&handles).await;
    assert_ne!(second, first);
    for h in handles.into_iter().flatten() {
        h.shutdown().await;
    }
}

/// A MsgPropose of `data` from `from` to `to`, encoded as the peer port receives it.
fn proposal(from: u64, to: u64, data: &[u8]) -> Vec<u8> {
    let mut m = RaftMessage::default();
    m.set_msg_type(MessageType::MsgPropose);
    m.from = from;
    m.to = to;
    m.mut_entries().push(Entry {
        data: data.to_vec().into(),
        ..Default::default()
    });
    protobuf::Message::write_to_bytes(&m).unwrap()
}

/// A heartbeat from `from` to `to` in a far newer term that commits past any log: raft-rs
/// would panic stepping it.
fn heartbeat_past_the_log(from: u64, to: u64) -> Vec<u8> {
    let mut m = RaftMessage::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = from;
    m.to = to;
    m.term = 1_000;
    m.commit = u64::MAX;
    protobuf::Message::write_to_bytes(&m).unwrap()
}

/// Store `store_id`'s address as member `url` answers it, if it knows the store.
async fn store_via(url: &str, store_id: u64) -> Option<String> {
    let mut client = PdClient::connect(url.to_owned()).await.ok()?;
    let resp = client
        .get_store(GetStoreRequest {
            store_id,
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    resp.store.map(|s| s.address)
}

/// PD's peer port takes raft messages from the group's members only, and never a proposal:
/// one carrying bytes that PD's apply cannot decode, sent to every member from a stranger and
/// from a member, is refused, as are bytes that are no raft message; a heartbeat that commits
/// past the log is dropped. None has an effect: the group still commits writes, which every
/// member applies, and serves timestamps and lookups.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_peer_port_refuses_proposals_and_garbage() {
    let dir = TempDir::new().unwrap();
    let members = members(3);
    let (handles, first) = start_bootstrapped(dir.path(), &members).await;
    let cluster_id = handles[first]
        .as_ref()
        .unwrap()
        .cluster()
        .unwrap()
        .cluster_id();
    // A length prefix far past the end: `decode_pairs` refuses it.
    let garbage = [0xFF; 12];
    let mut answers = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let mut client = PdPeerClient::connect(format!("http://{}", m.peer_addr))
            .await
            .expect("a member's peer port answers (raft did not stop)");
        let member = members[(i + 1) % 3].id;
        let batches = [
            ("stranger's proposal", proposal(99, m.id, &garbage)),
            ("member's proposal", proposal(member, m.id, &garbage)),
            ("garbage", garbage.to_vec()),
            (
                "heartbeat past the log",
                heartbeat_past_the_log(member, m.id),
            ),
        ];
        for (what, bytes) in batches {
            let batch = PdRaftBatch {
                messages: vec![bytes],
            };
            answers.push((m.id, what, client.raft(batch).await));
        }
    }
    // A proposal a follower forwarded would reach the leader in this time.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Replicated writes through PD's client API still commit, and every member applies them.
    let mut client = PdClient::connect(handles[first].as_ref().unwrap().endpoint())
        .await
        .unwrap();
    let header = Some(RequestHeader {
        cluster_id,
        ..Default::default()
    });
    let store = Store {
        id: 2,
        address: "127.0.0.1:2".into(),
        ..Default::default()
    };
    let resp = client
        .put_store(PutStoreRequest {
            header,
            store: Some(store),
        })
        .await
        .expect("the group still commits writes")
        .into_inner();
    assert!(resp.header.unwrap().error.is_none());
    let id = client
        .alloc_id(AllocIdRequest { header })
        .await
        .expect("the group still commits writes")
        .into_inner();
    assert!(id.header.unwrap().error.is_none());
    assert!(id.id > 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    for h in handles.iter().flatten() {
        let url = h.endpoint();
        while store_via(&url, 2).await.as_deref() != Some("127.0.0.1:2") {
            assert!(Instant::now() < deadline, "{url} did not apply the write");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(region_via(&url, cluster_id, b"k").await.unwrap(), 2);
        tso_via(&url, cluster_id).await.unwrap();
    }
    assert_eq!(leader_of(&handles).await, first);

    for (member, what, answer) in answers {
        let code = match what {
            // Well formed: the port takes it, the raft thread drops it against its log.
            "heartbeat past the log" => {
                assert!(answer.is_ok(), "member {member}, {what}: {answer:?}");
                continue;
            }
            "stranger's proposal" => tonic::Code::PermissionDenied,
            _ => tonic::Code::InvalidArgument,
        };
        match answer {
            Ok(_) => panic!("member {member} accepted a {what}"),
            Err(status) => assert_eq!(status.code(), code, "member {member}, {what}: {status}"),
        }
    }
    for h in handles.into_iter().flatten() {
        h.shutdown().await;
    }
}
