//! gRPC channels over TLS ([`SecurityManager::channel`]): a channel that reconnects after its
//! connection dropped handshakes with the certificates current then, not the ones it was
//! made with.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use security::pki::Authority;
use security::{Incoming, SecurityManager, RELOAD_CHECK_INTERVAL};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tower_service::Service;

const LOCAL: &[&str] = &["localhost", "127.0.0.1"];

/// An HTTP/2 server that answers `GET /ping`, and its connections, which the test can drop.
struct PingServer {
    addr: std::net::SocketAddr,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl PingServer {
    async fn start(security: &SecurityManager) -> PingServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut incoming = Incoming::new(listener, security);
        let addr = incoming.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let tracked = connections.clone();
        tokio::spawn(async move {
            let app = axum::Router::new().route("/ping", axum::routing::get(|| async { "pong" }));
            while let Some(Ok(conn)) = incoming.next().await {
                let service = TowerToHyperService::new(app.clone());
                tracked.lock().push(tokio::spawn(async move {
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(conn), service)
                        .await;
                }));
            }
        });
        PingServer { addr, connections }
    }

    /// Closes every connection accepted so far, as a restarting or overloaded server does.
    fn drop_connections(&self) {
        for c in self.connections.lock().drain(..) {
            c.abort();
        }
    }
}

/// Whether one `GET /ping` on `channel` is answered `pong`.
async fn ping(channel: &Channel) -> bool {
    let mut channel = channel.clone();
    let call = async {
        futures::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
        let req = http::Request::get("/ping")
            .body(tonic::body::Body::empty())
            .unwrap();
        let resp = channel.call(req).await?;
        Ok::<_, tonic::transport::Error>(resp.status() == http::StatusCode::OK)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), call).await,
        Ok(Ok(true))
    )
}

/// Writes a certificate named `cn` of `ca` as `<dir>/<cn>.pem` (and the CA as `ca.pem`);
/// the configuration that uses them.
fn write_identity(ca: &Authority, dir: &Path, cn: &str) -> security::SecurityConfig {
    let cert = ca.issue(cn, LOCAL).unwrap();
    ca.write(dir, cn, &cert).unwrap()
}

#[tokio::test]
async fn a_channel_reconnects_with_the_rotated_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Authority::new("old-ca").unwrap();
    let server_cfg = write_identity(&old_ca, &dir.path().join("s"), "server");
    let server = PingServer::start(&SecurityManager::new(&server_cfg).unwrap()).await;
    let client_cfg = write_identity(&old_ca, &dir.path().join("c"), "client");
    let client = SecurityManager::new(&client_cfg).unwrap();
    let endpoint = client
        .endpoint(&server.addr.to_string())
        .unwrap()
        .connect_timeout(Duration::from_secs(3));
    let channel = client.channel(endpoint).await.unwrap();
    assert!(
        ping(&channel).await,
        "the channel works before the rotation"
    );

    // The operator replaces the CA and both certificates in place: neither side trusts the old
    // CA any more, so a handshake with the files the channel was made with fails.
    let new_ca = Authority::new("new-ca").unwrap();
    write_identity(&new_ca, &dir.path().join("s"), "server");
    write_identity(&new_ca, &dir.path().join("c"), "client");
    tokio::time::sleep(RELOAD_CHECK_INTERVAL + Duration::from_millis(200)).await;
    assert!(ping(&channel).await, "the open connection keeps working");

    server.drop_connections();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ping(&channel).await {
        assert!(
            Instant::now() < deadline,
            "the channel did not reconnect with the new certificates"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_channel_is_refused_by_a_server_of_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("flotilla-ca").unwrap();
    let impostor_ca = Authority::new("impostor-ca").unwrap();
    let impostor = write_identity(&impostor_ca, &dir.path().join("i"), "server");
    let server = PingServer::start(&SecurityManager::new(&impostor).unwrap()).await;
    let client =
        SecurityManager::new(&write_identity(&ca, &dir.path().join("c"), "client")).unwrap();
    let endpoint = client
        .endpoint(&server.addr.to_string())
        .unwrap()
        .connect_timeout(Duration::from_secs(3));
    assert!(client.channel(endpoint).await.is_err());
}
