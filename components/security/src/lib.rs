//! Transport security of every Flotilla connection: mutual TLS, or plaintext when it is not
//! configured.
//!
//! Key types: [`SecurityConfig`] (the `[security]` table of `flotilla pd` and `flotilla server`:
//! `ca-path`, `cert-path`, `key-path`, `cert-allowed-cn`, as TiKV names them) and
//! [`SecurityManager`], built once from it and shared by every listener and connection of a
//! process. It is the one place that knows the URL scheme ([`SecurityManager::url`]), makes
//! gRPC channels ([`SecurityManager::channel`]), accepts connections ([`Incoming`]: the TLS
//! handshake, a client certificate signed by the CA, its name in `cert-allowed-cn`) and opens
//! raw connections for HTTP ([`SecurityManager::connect`]).
//!
//! Flow: the manager reads the three PEM files at start (a bad file is a start-up error) and
//! again when their modification times change, checked at most every
//! [`RELOAD_CHECK_INTERVAL`]: new connections use the new certificate, open ones keep theirs.
//! A gRPC channel's reconnections are new connections too: its TLS is done by a connector
//! that reads the current files at each call, not by tonic's configuration fixed at start.
//! [`pki`] makes certificates for the playground and the tests.
//!
//! Must not depend on any other Flotilla crate: the server, PD, PD client and the binary all
//! build on it.

mod config;
mod conn;
pub mod pki;
mod tls;

pub use config::SecurityConfig;
pub use conn::{Conn, Incoming};
pub use tls::{SecurityManager, RELOAD_CHECK_INTERVAL};

/// Errors of loading or using the security configuration.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// The configuration is incomplete or contradictory.
    #[error("security config: {0}")]
    Config(String),
    /// A certificate or key file cannot be read or parsed.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        msg: String,
    },
    /// rustls refused the certificates or key.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, SecurityError>;
