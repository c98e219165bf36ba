//! [`Conn`], a connection with or without TLS, and [`Incoming`], the accepted connections of
//! a listener, handshakes done, for tonic (a `Stream`) and axum (a `Listener`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::SecurityManager;

/// Handshakes in progress on one listener; beyond it, accepting waits.
pub const HANDSHAKES_MAX: usize = 256;

/// One connection: plaintext TCP, or TLS as the server or the client side.
pub enum Conn {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS, accepted by a listener.
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS, opened by [`SecurityManager::connect`] or a channel of [`SecurityManager::channel`].
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    /// The TCP stream underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::TlsServer(s) => s.get_ref().0,
            Conn::TlsClient(s) => s.get_ref().0,
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Plain($s) => $e,
            Conn::TlsServer($s) => $e,
            Conn::TlsClient($s) => $e,
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::TlsServer(s) => s.is_write_vectored(),
            Conn::TlsClient(s) => s.is_write_vectored(),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp().connect_info()
    }
}

/// The connections a listener accepts, with TCP_NODELAY and, with TLS, after a successful
/// handshake and name check (a failed one is logged and closed). Dropping it closes the
/// listener.
pub struct Incoming {
    listener: TcpListener,
    security: SecurityManager,
    handshakes: FuturesUnordered<BoxFuture<'static, Option<Conn>>>,
}

impl Incoming {
    /// Accepts on `listener` as `security` says.
    pub fn new(listener: TcpListener, security: &SecurityManager) -> Incoming {
        Incoming {
            listener,
            security: security.clone(),
            handshakes: FuturesUnordered::new(),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.handshakes.len() < HANDSHAKES_MAX {
                if let Poll::Ready(accepted) = this.listener.poll_accept(cx) {
                    let (tcp, peer) = accepted?;
                    let _ = tcp.set_nodelay(true);
                    if !this.security.is_tls() {
                        return Poll::Ready(Some(Ok(Conn::Plain(tcp))));
                    }
                    let security = this.security.clone();
                    this.handshakes.push(Box::pin(async move {
                        match security.accept(tcp).await {
                            Ok(conn) => Some(conn),
                            Err(e) => {
                                tracing::debug!(%peer, "TLS connection refused: {e}");
                                None
                            }
                        }
                    }));
                    continue;
                }
            }
            match this.handshakes.poll_next_unpin(cx) {
                Poll::Ready(Some(Some(conn))) => return Poll::Ready(Some(Ok(conn))),
                Poll::Ready(Some(None)) => continue,
                // No handshake in progress: the listener's waker is registered.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            match self.next().await {
                Some(Ok(conn)) => {
                    let peer = conn
                        .tcp()
                        .peer_addr()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    return (conn, peer);
                }
                Some(Err(e)) => {
                    // EMFILE and the like: wait for a descriptor to be freed.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}
