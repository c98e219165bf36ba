//! [`SecurityManager`]: the loaded certificates, reloaded when their files change, and what
//! listeners and connections make of them.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::conn::Conn;
use crate::{Result, SecurityConfig, SecurityError};

/// How often, at most, the files' modification times are looked at (TiKV checks every few
/// seconds too). A change is picked up by the next connection after that.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(3);
/// A TLS handshake, either side, that takes longer than this fails.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The process's TLS state, or plaintext. Cheap to clone: clones share the loaded files.
#[derive(Clone, Default)]
pub struct SecurityManager {
    tls: Option<Arc<Tls>>,
}

impl std::fmt::Debug for SecurityManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tls {
            None => f.write_str("SecurityManager(plaintext)"),
            Some(t) => write!(f, "SecurityManager(tls, ca {})", t.cfg.ca_path),
        }
    }
}

struct Tls {
    cfg: SecurityConfig,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<Arc<Loaded>>,
    checked_at: Mutex<Instant>,
}

/// One reading of the three files and the rustls configurations made from it.
struct Loaded {
    stamps: [Option<SystemTime>; 3],
    server: Arc<ServerConfig>,
    /// For raw connections ([`SecurityManager::connect`]): offers ALPN `http/1.1`.
    client: Arc<ClientConfig>,
    /// For gRPC channels ([`SecurityManager::channel`]): offers ALPN `h2`.
    grpc_client: Arc<ClientConfig>,
}

impl SecurityManager {
    /// Plaintext: every URL `http://`, every listener and connection unencrypted.
    pub fn plaintext() -> SecurityManager {
        SecurityManager::default()
    }

    /// Validates `cfg` and, with TLS, reads and checks the files now.
    pub fn new(cfg: &SecurityConfig) -> Result<SecurityManager> {
        cfg.validate()?;
        if !cfg.is_enabled() {
            return Ok(SecurityManager::plaintext());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = Loaded::read(cfg, &provider)?;
        Ok(SecurityManager {
            tls: Some(Arc::new(Tls {
                cfg: cfg.clone(),
                provider,
                loaded: Mutex::new(Arc::new(loaded)),
                checked_at: Mutex::new(Instant::now()),
            })),
        })
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The URL of `addr` (`host:port`, with or without a scheme) in this process's scheme:
    /// `https://` with TLS, `http://` without.
    pub fn url(&self, addr: &str) -> String {
        let bare = strip_scheme(addr);
        if self.is_tls() {
            format!("https://{bare}")
        } else {
            format!("http://{bare}")
        }
    }

    /// A gRPC endpoint for `addr`, to be connected with [`SecurityManager::channel`], which
    /// adds TLS: the endpoint's own URI is always `http://` (tonic refuses `https://` to a
    /// connector of ours), so `Endpoint::connect` on it would speak plaintext.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint> {
        let url = format!("http://{}", strip_scheme(addr));
        Endpoint::from_shared(url.clone())
            .map_err(|e| SecurityError::Config(format!("bad address {url}: {e}")))
    }

    /// A gRPC channel to `endpoint` (made by [`SecurityManager::endpoint`]). With TLS it
    /// presents this process's certificate and verifies the server's against the CA and the
    /// address's host name, with the files current at each connection: when the channel
    /// reconnects after its connection dropped, it uses rotated certificates.
    pub async fn channel(
        &self,
        endpoint: Endpoint,
    ) -> std::result::Result<Channel, tonic::transport::Error> {
        if self.tls.is_none() {
            return endpoint.connect().await;
        }
        let connector = GrpcConnector {
            security: self.clone(),
            tcp_nodelay: endpoint.get_tcp_nodelay(),
        };
        endpoint.connect_with_connector(connector).await
    }

    /// A raw connection to `addr` (e.g. for HTTP/1.1): TCP, then with TLS the handshake as a
    /// client with this process's certificate.
    pub async fn connect(&self, addr: &str) -> std::io::Result<Conn> {
        self.open(addr, true, |l| l.client.clone()).await
    }

    /// TCP to `addr`, then with TLS the client handshake with the configuration `pick` takes
    /// from the files loaded now.
    async fn open(
        &self,
        addr: &str,
        tcp_nodelay: bool,
        pick: fn(&Loaded) -> Arc<ClientConfig>,
    ) -> std::io::Result<Conn> {
        let bare = strip_scheme(addr);
        let tcp = TcpStream::connect(bare).await?;
        let _ = tcp.set_nodelay(tcp_nodelay);
        let Some(tls) = &self.tls else {
            return Ok(Conn::Plain(tcp));
        };
        let host = bare.rsplit_once(':').map_or(bare, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let connector = tokio_rustls::TlsConnector::from(pick(&tls.current()));
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))??;
        Ok(Conn::TlsClient(Box::new(stream)))
    }

    /// The server side of a new connection: with TLS the handshake, which requires a client
    /// certificate signed by the CA, then the check of its name against `cert-allowed-cn`.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> std::io::Result<Conn> {
        let Some(tls) = &self.tls else {
            return Ok(Conn::Plain(tcp));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current().server.clone());
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))??;
        if !tls.cfg.cert_allowed_cn.is_empty() {
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first());
            let names = peer.map(|c| cert_names(c)).unwrap_or_default();
            if !names.iter().any(|n| tls.cfg.cert_allowed_cn.contains(n)) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("client certificate names {names:?} not in cert-allowed-cn"),
                ));
            }
        }
        Ok(Conn::TlsServer(Box::new(stream)))
    }
}

/// How a TLS channel connects, each time anew: tonic calls it for the first connection and
/// for every reconnection, so each handshake uses the files current then (tonic's own TLS
/// would keep the configuration the channel was made with).
#[derive(Clone)]
struct GrpcConnector {
    security: SecurityManager,
    tcp_nodelay: bool,
}

impl tower_service::Service<Uri> for GrpcConnector {
    type Response = TokioIo<Conn>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, std::io::Result<TokioIo<Conn>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let security = self.security.clone();
        let tcp_nodelay = self.tcp_nodelay;
        Box::pin(async move {
            let addr = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("no host:port in {uri}"),
                    )
                })?;
            let conn = security
                .open(&addr, tcp_nodelay, |l| l.grpc_client.clone())
                .await?;
            Ok(TokioIo::new(conn))
        })
    }
}

impl Tls {
    /// The loaded files, read again first if they changed since the last look (at most every
    /// [`RELOAD_CHECK_INTERVAL`]). A new version that does not load keeps the previous one.
    fn current(&self) -> Arc<Loaded> {
        let due = {
            let mut at = self.checked_at.lock();
            let due = at.elapsed() >= RELOAD_CHECK_INTERVAL;
            if due {
                *at = Instant::now();
            }
            due
        };
        if due {
            let stamps = stamps(&self.cfg);
            if stamps != self.loaded.lock().stamps {
                match Loaded::read(&self.cfg, &self.provider) {
                    Ok(l) => {
                        tracing::info!(cert = %self.cfg.cert_path, "TLS certificates reloaded");
                        *self.loaded.lock() = Arc::new(l);
                    }
                    Err(e) => tracing::warn!("TLS certificates changed but do not load: {e}"),
                }
            }
        }
        self.loaded.lock().clone()
    }
}

impl Loaded {
    fn read(cfg: &SecurityConfig, provider: &Arc<CryptoProvider>) -> Result<Loaded> {
        let stamps = stamps(cfg);
        let ca_pem = read_file(&cfg.ca_path)?;
        let cert_pem = read_file(&cfg.cert_path)?;
        let key_pem = read_file(&cfg.key_path)?;
        let bad = |path: &str, msg: String| SecurityError::File {
            path: path.to_owned(),
            msg,
        };
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&ca_pem) {
            let ca = ca.map_err(|e| bad(&cfg.ca_path, e.to_string()))?;
            roots
                .add(ca)
                .map_err(|e| bad(&cfg.ca_path, e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad(&cfg.ca_path, "no certificate".into()));
        }
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(&cfg.cert_path, e.to_string()))?;
        if chain.is_empty() {
            return Err(bad(&cfg.cert_path, "no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| bad(&cfg.key_path, e.to_string()))?;
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| SecurityError::Config(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        // gRPC needs h2; PD's and the status port's HTTP/1.1 clients ask for http/1.1.
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| SecurityError::Config(e.to_string()))?;
        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(server_verifier)
            .with_client_auth_cert(chain, key)?;
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut grpc_client = client.clone();
        grpc_client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Loaded {
            stamps,
            server: Arc::new(server),
            client: Arc::new(client),
            grpc_client: Arc::new(grpc_client),
        })
    }
}

fn read_file(path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| SecurityError::File {
        path: path.to_owned(),
        msg: e.to_string(),
    })
}

fn stamps(cfg: &SecurityConfig) -> [Option<SystemTime>; 3] {
    [&cfg.ca_path, &cfg.cert_path, &cfg.key_path]
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

/// `addr` without its `http://` or `https://`.
fn strip_scheme(addr: &str) -> &str {
    let addr = addr.trim();
    addr.strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr)
}

/// The names `cert-allowed-cn` is checked against: the subject's common names and the DNS
/// names among the alternative names.
fn cert_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push((*d).to_owned());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_mode() {
        let p = SecurityManager::plaintext();
        assert_eq!(p.url("127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(p.url("https://127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(p.url(" http://h:2"), "http://h:2");
    }

    #[test]
    fn names_of_a_certificate() {
        let ca = crate::pki::Authority::new("ca").unwrap();
        let leaf = ca.issue("store-1", &["localhost", "127.0.0.1"]).unwrap();
        let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        assert_eq!(cert_names(&der), vec!["store-1", "localhost"]);
    }
}
