//! Who a TLS listener lets in: every refusal the security configuration promises, and the
//! reload of rotated files, over loopback.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use security::pki::Authority;
use security::{Incoming, SecurityConfig, SecurityManager, RELOAD_CHECK_INTERVAL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const LOCAL: &[&str] = &["localhost", "127.0.0.1"];

/// A listener that answers `pong` to every `ping` line of every client it accepts.
async fn echo_server(security: &SecurityManager) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut incoming = Incoming::new(listener, security);
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(Ok(mut conn)) = incoming.next().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 5];
                while conn.read_exact(&mut buf).await.is_ok() {
                    if conn.write_all(b"pong\n").await.is_err() || conn.flush().await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Whether `client` gets an answer from `addr`.
async fn answered(client: &SecurityManager, addr: std::net::SocketAddr) -> bool {
    let talk = async {
        let mut conn = client.connect(&addr.to_string()).await?;
        std::io::Result::Ok(ping(&mut conn).await)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), talk).await,
        Ok(Ok(true))
    )
}

/// One exchange on an open connection; whether it was answered.
async fn ping(conn: &mut security::Conn) -> bool {
    let talk = async {
        conn.write_all(b"ping\n").await?;
        conn.flush().await?;
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).await?;
        std::io::Result::Ok(&buf == b"pong\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), talk).await,
        Ok(Ok(true))
    )
}

fn manager(dir: &Path, ca: &Authority, stem: &str, cn: &str, allowed: &[&str]) -> SecurityManager {
    let cert = ca.issue(cn, LOCAL).unwrap();
    let mut cfg = ca.write(dir, stem, &cert).unwrap();
    cfg.cert_allowed_cn = allowed.iter().map(|s| (*s).to_owned()).collect();
    SecurityManager::new(&cfg).unwrap()
}

#[tokio::test]
async fn a_tls_listener_admits_only_certificates_of_its_ca_and_allowed_names() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("flotilla-ca").unwrap();
    let server = manager(
        &dir.path().join("s"),
        &ca,
        "server",
        "server",
        &["server", "client"],
    );
    let addr = echo_server(&server).await;

    let client = manager(&dir.path().join("c"), &ca, "client", "client", &[]);
    assert!(
        answered(&client, addr).await,
        "a client of the CA is admitted"
    );

    let other_ca = Authority::new("other-ca").unwrap();
    // Trusts the server's CA, but presents a certificate of another CA.
    let stranger_cert = other_ca.issue("client", LOCAL).unwrap();
    let stranger_cfg = other_ca
        .write(&dir.path().join("o"), "client", &stranger_cert)
        .unwrap();
    std::fs::write(&stranger_cfg.ca_path, &ca.cert_pem).unwrap();
    let stranger = SecurityManager::new(&stranger_cfg).unwrap();
    assert!(
        !answered(&stranger, addr).await,
        "another CA's certificate is refused"
    );

    let expired_cert = ca.issue_expired("client", LOCAL).unwrap();
    let expired = SecurityManager::new(
        &ca.write(&dir.path().join("e"), "client", &expired_cert)
            .unwrap(),
    )
    .unwrap();
    assert!(
        !answered(&expired, addr).await,
        "an expired certificate is refused"
    );

    let intruder = manager(&dir.path().join("n"), &ca, "client", "intruder", &[]);
    assert!(
        !answered(&intruder, addr).await,
        "a name outside cert-allowed-cn is refused"
    );

    assert!(
        !answered(&SecurityManager::plaintext(), addr).await,
        "plaintext is refused"
    );
    assert!(
        !no_certificate_answered(&ca, addr).await,
        "no certificate is refused"
    );
}

/// A TLS client that trusts the CA and presents no certificate.
async fn no_certificate_answered(ca: &Authority, addr: std::net::SocketAddr) -> bool {
    let talk = async {
        let mut tls =
            security::pki::connect_without_certificate(&ca.cert_pem, &addr.to_string()).await?;
        tls.write_all(b"ping\n").await?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await?;
        std::io::Result::Ok(true)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), talk).await,
        Ok(Ok(true))
    )
}

#[tokio::test]
async fn a_server_that_is_not_of_the_ca_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("flotilla-ca").unwrap();
    let impostor_ca = Authority::new("impostor-ca").unwrap();
    let impostor = manager(&dir.path().join("i"), &impostor_ca, "server", "server", &[]);
    let addr = echo_server(&impostor).await;
    let client = manager(&dir.path().join("c"), &ca, "client", "client", &[]);
    assert!(!answered(&client, addr).await);
}

#[tokio::test]
async fn rotated_files_serve_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Authority::new("old-ca").unwrap();
    let server = manager(dir.path(), &old_ca, "server", "server", &[]);
    let addr = echo_server(&server).await;
    let old_client = manager(&dir.path().join("c1"), &old_ca, "client", "client", &[]);
    assert!(answered(&old_client, addr).await);
    let mut open = old_client.connect(&addr.to_string()).await.unwrap();
    assert!(ping(&mut open).await);

    // The operator replaces the CA and the server's certificate in place.
    let new_ca = Authority::new("new-ca").unwrap();
    let cert = new_ca.issue("server", LOCAL).unwrap();
    new_ca.write(dir.path(), "server", &cert).unwrap();
    let new_client = manager(&dir.path().join("c2"), &new_ca, "client", "client", &[]);
    tokio::time::sleep(RELOAD_CHECK_INTERVAL + Duration::from_millis(200)).await;
    assert!(
        answered(&new_client, addr).await,
        "the new CA's clients are admitted"
    );
    assert!(!answered(&old_client, addr).await, "the old CA's are not");
    assert!(
        ping(&mut open).await,
        "a connection made before keeps working"
    );
}

#[test]
fn a_missing_file_is_a_start_up_error() {
    let cfg = SecurityConfig::from_paths("/nonexistent/ca.pem", "/x/c.pem", "/x/k.pem");
    let e = SecurityManager::new(&cfg).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}

#[tokio::test]
async fn a_ca_read_back_from_its_files_certifies_new_members() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("flotilla-ca").unwrap();
    let server = manager(&dir.path().join("s"), &ca, "server", "server", &["client"]);
    let addr = echo_server(&server).await;
    let again = Authority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
    let client = manager(&dir.path().join("c"), &again, "client", "client", &[]);
    assert!(answered(&client, addr).await);
}
