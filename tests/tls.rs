//! Mutual TLS end to end, in process: a PD group of three and three stores with `[security]`
//! set. Every port (store gRPC, store status HTTP, PD gRPC, PD HTTP, PD peer) admits a
//! certificate of the cluster's CA and refuses no certificate, another CA's, an expired one, a
//! name outside `cert-allowed-cn`, and plaintext. The official client, given the CA and a
//! client certificate (`Config::with_security`), runs raw and transactional puts and gets.

use std::path::Path;
use std::time::{Duration, Instant};

use pd::{PdConfig, PdHandle, PdMember, PdServer};
use proto::flotillapb::pd_peer_client::PdPeerClient;
use proto::flotillapb::PdRaftBatch;
use proto::kvrpcpb::RawGetRequest;
use proto::pdpb::pd_client::PdClient;
use proto::pdpb::GetMembersRequest;
use proto::tikvpb::tikv_client::TikvClient;
use security::pki::Authority;
use security::{SecurityConfig, SecurityManager};
use server::{Node, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const LOCAL: &[&str] = &["localhost", "127.0.0.1"];
const ALLOWED: &[&str] = &["pd", "store", "client"];

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The CA of the cluster and the configuration of one process named `cn` in `dir`.
fn member_security(ca: &Authority, dir: &Path, cn: &str) -> SecurityConfig {
    let cert = ca.issue(cn, LOCAL).unwrap();
    let mut cfg = ca.write(dir, cn, &cert).unwrap();
    cfg.cert_allowed_cn = ALLOWED.iter().map(|s| (*s).to_owned()).collect();
    cfg
}

/// Who knocks on a port.
enum Who {
    /// A client with this certificate (and trusting the cluster's CA).
    Cert(SecurityManager),
    /// A TLS client that trusts the cluster's CA and presents no certificate.
    NoCert(String),
    /// Plaintext.
    Plain,
}

impl Who {
    /// A gRPC channel to `addr`, as this client makes it.
    async fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let limits = |e: Endpoint| {
            e.connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(3))
        };
        match self {
            Who::Cert(m) => m.channel(limits(m.endpoint(addr).unwrap())).await,
            Who::NoCert(ca) => {
                let endpoint = Endpoint::from_shared(format!("https://{addr}"))
                    .unwrap()
                    .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
                    .unwrap();
                limits(endpoint).connect().await
            }
            Who::Plain => {
                let plain = SecurityManager::plaintext();
                plain.channel(limits(plain.endpoint(addr).unwrap())).await
            }
        }
    }

    /// Whether `GET path` over HTTP/1.1 at `addr` is answered 200.
    async fn http_ok(&self, addr: &str, path: &str) -> bool {
        let attempt = async {
            match self {
                Who::Cert(m) => http_exchange(m.connect(addr).await?, path).await,
                Who::NoCert(ca) => {
                    let tls = security::pki::connect_without_certificate(ca, addr).await?;
                    http_exchange(tls, path).await
                }
                Who::Plain => {
                    http_exchange(tokio::net::TcpStream::connect(addr).await?, path).await
                }
            }
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(5), attempt).await,
            Ok(Ok(true))
        )
    }
}

/// One request; whether the status line says 200.
async fn http_exchange(
    mut conn: impl AsyncRead + AsyncWrite + Unpin,
    path: &str,
) -> std::io::Result<bool> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: flotilla\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await?;
    conn.flush().await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while head.len() < 12 {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head.starts_with(b"HTTP/1.1 200"))
}

/// What one client gets from each port: `(port, admitted)`.
async fn knock(who: &Who, ports: &Ports) -> Vec<(&'static str, bool)> {
    let store_grpc = match who.channel(&ports.store_grpc).await {
        Ok(ch) => TikvClient::new(ch)
            .raw_get(RawGetRequest::default())
            .await
            .is_ok(),
        Err(_) => false,
    };
    let pd_grpc = match who.channel(&ports.pd_grpc).await {
        Ok(ch) => PdClient::new(ch)
            .get_members(GetMembersRequest::default())
            .await
            .is_ok(),
        Err(_) => false,
    };
    let pd_peer = match who.channel(&ports.pd_peer).await {
        // An empty batch: nothing to step, answered `Done`.
        Ok(ch) => PdPeerClient::new(ch)
            .raft(PdRaftBatch::default())
            .await
            .is_ok(),
        Err(_) => false,
    };
    vec![
        ("store gRPC", store_grpc),
        (
            "store status /metrics",
            who.http_ok(&ports.store_status, "/metrics").await,
        ),
        ("PD gRPC", pd_grpc),
        (
            "PD HTTP",
            who.http_ok(&ports.pd_grpc, "/pd/api/v1/stores").await,
        ),
        ("PD /metrics", who.http_ok(&ports.pd_grpc, "/metrics").await),
        ("PD peer", pd_peer),
    ]
}

struct Ports {
    store_grpc: String,
    store_status: String,
    pd_grpc: String,
    pd_peer: String,
}

async fn leader_of(pds: &[PdHandle]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(i) = pds.iter().position(|p| p.is_leader()) {
            return i;
        }
        assert!(Instant::now() < deadline, "no PD leader over TLS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_port_admits_the_cluster_ca_only_and_the_official_client_works() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let ca = Authority::new("flotilla-ca").unwrap();

    let members: Vec<PdMember> = (1..=3)
        .map(|id| PdMember {
            id,
            client_addr: free_addr(),
            peer_addr: free_addr(),
        })
        .collect();
    let pd_security = member_security(&ca, &tls.join("pd"), "pd");
    let mut pds = Vec::new();
    for m in &members {
        let cfg = PdConfig {
            data_dir: dir.path().join(format!("pd{}", m.id)),
            listen_addr: m.client_addr.clone(),
            initial_cluster: members.clone(),
            member_id: m.id,
            security: pd_security.clone(),
            ..Default::default()
        };
        pds.push(PdServer::start(cfg).await.unwrap());
    }
    let leader = leader_of(&pds).await;
    assert!(pds[leader].endpoint().starts_with("https://"));

    let store_security = member_security(&ca, &tls.join("store"), "store");
    let pd_endpoints: Vec<String> = members.iter().map(|m| m.client_addr.clone()).collect();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..3 {
        let mut cfg = ServerConfig {
            data_dir: dir.path().join(format!("store{i}")),
            addr: "127.0.0.1:0".into(),
            status_addr: "127.0.0.1:0".into(),
            pd_endpoints: pd_endpoints.clone(),
            security: store_security.clone(),
            ..Default::default()
        };
        cfg.raftstore.raft_tick_interval_ms = 20;
        cfg.pd_worker.store_heartbeat_interval_ms = 500;
        nodes.push(Node::start(cfg).await.unwrap());
    }

    let client_cfg = member_security(&ca, &tls.join("client"), "client");
    let ports = Ports {
        store_grpc: nodes[0].addr().to_string(),
        store_status: nodes[0].status_addr().to_string(),
        pd_grpc: members[leader].client_addr.clone(),
        pd_peer: members[leader].peer_addr.clone(),
    };
    let admitted = knock(
        &Who::Cert(SecurityManager::new(&client_cfg).unwrap()),
        &ports,
    )
    .await;
    assert!(admitted.iter().all(|(_, ok)| *ok), "{admitted:?}");

    let other_ca = Authority::new("other-ca").unwrap();
    let mut strangers: Vec<(&str, Who)> = Vec::new();
    let mut foreign = member_security(&other_ca, &tls.join("other"), "client");
    foreign.ca_path = client_cfg.ca_path.clone();
    strangers.push((
        "another CA",
        Who::Cert(SecurityManager::new(&foreign).unwrap()),
    ));
    let expired = ca.issue_expired("client", LOCAL).unwrap();
    let expired = ca.write(&tls.join("expired"), "client", &expired).unwrap();
    strangers.push((
        "expired",
        Who::Cert(SecurityManager::new(&expired).unwrap()),
    ));
    let intruder = member_security(&ca, &tls.join("intruder"), "intruder");
    strangers.push((
        "name not allowed",
        Who::Cert(SecurityManager::new(&intruder).unwrap()),
    ));
    strangers.push(("no certificate", Who::NoCert(ca.cert_pem.clone())));
    strangers.push(("plaintext", Who::Plain));
    for (what, who) in &strangers {
        let got = knock(who, &ports).await;
        assert!(got.iter().all(|(_, ok)| !*ok), "{what}: {got:?}");
    }

    // The official client, unmodified.
    let config = tikv_client::Config::default()
        .with_default_keyspace()
        .with_timeout(Duration::from_secs(10))
        .with_security(
            client_cfg.ca_path.clone(),
            client_cfg.cert_path.clone(),
            client_cfg.key_path.clone(),
        );
    let raw = tikv_client::RawClient::new_with_config(pd_endpoints.clone(), config.clone())
        .await
        .unwrap();
    retry(|| raw.put("tls-raw".to_owned(), "v1".to_owned())).await;
    assert_eq!(
        retry(|| raw.get("tls-raw".to_owned())).await,
        Some(b"v1".to_vec())
    );
    let txn_client = tikv_client::TransactionClient::new_with_config(pd_endpoints, config)
        .await
        .unwrap();
    let mut txn = txn_client.begin_optimistic().await.unwrap();
    txn.put("tls-txn".to_owned(), "v2".to_owned())
        .await
        .unwrap();
    txn.commit().await.unwrap();
    let mut read = txn_client.begin_optimistic().await.unwrap();
    assert_eq!(
        read.get("tls-txn".to_owned()).await.unwrap(),
        Some(b"v2".to_vec())
    );
    read.rollback().await.unwrap();

    for n in nodes {
        n.stop().await;
    }
    for p in pds {
        p.shutdown().await;
    }
}

/// Retries for up to 30 s while leaders are elected.
async fn retry<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = tikv_client::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("gave up: {e}"),
        }
    }
}
