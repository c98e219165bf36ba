//! The `[security]` configuration table.

use serde::{Deserialize, Serialize};

use crate::{Result, SecurityError};

/// Paths of the PEM files and the names allowed to connect. All three paths empty (the
/// default) means plaintext everywhere; all three set means mutual TLS on every listener and
/// connection. Keys as TiKV's (`ca-path`...); the snake_case spelling is accepted too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct SecurityConfig {
    /// The CA certificate(s) that sign every member's and client's certificate.
    #[serde(alias = "ca_path")]
    pub ca_path: String,
    /// This process's certificate chain, presented to peers and clients.
    #[serde(alias = "cert_path")]
    pub cert_path: String,
    /// The private key of `cert_path`.
    #[serde(alias = "key_path")]
    pub key_path: String,
    /// When not empty, a connecting certificate must carry one of these names (its subject
    /// common name, or a DNS name among its alternative names).
    #[serde(alias = "cert_allowed_cn")]
    pub cert_allowed_cn: Vec<String>,
}

impl SecurityConfig {
    /// Mutual TLS from three PEM files.
    pub fn from_paths(
        ca: impl Into<String>,
        cert: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        SecurityConfig {
            ca_path: ca.into(),
            cert_path: cert.into(),
            key_path: key.into(),
            cert_allowed_cn: Vec::new(),
        }
    }

    /// Whether TLS is configured.
    pub fn is_enabled(&self) -> bool {
        !self.ca_path.is_empty()
    }

    /// Either all three paths or none; names only with TLS.
    pub fn validate(&self) -> Result<()> {
        let set = [&self.ca_path, &self.cert_path, &self.key_path]
            .iter()
            .filter(|p| !p.is_empty())
            .count();
        match set {
            0 if !self.cert_allowed_cn.is_empty() => Err(SecurityError::Config(
                "cert-allowed-cn needs ca-path, cert-path and key-path".into(),
            )),
            0 | 3 => Ok(()),
            _ => Err(SecurityError::Config(
                "ca-path, cert-path and key-path are set together or not at all".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_come_together() {
        SecurityConfig::default().validate().unwrap();
        SecurityConfig::from_paths("ca", "c", "k")
            .validate()
            .unwrap();
        let partial = SecurityConfig {
            ca_path: "ca".into(),
            ..Default::default()
        };
        assert!(partial.validate().is_err());
        let names_alone = SecurityConfig {
            cert_allowed_cn: vec!["pd".into()],
            ..Default::default()
        };
        assert!(names_alone.validate().is_err());
    }

    #[test]
    fn tikv_key_names() {
        #[derive(Deserialize)]
        struct File {
            security: SecurityConfig,
        }
        let kebab = "[security]\nca-path = \"a\"\ncert-path = \"b\"\nkey-path = \"c\"\ncert-allowed-cn = [\"n\"]\n";
        let f: File = toml::from_str(kebab).unwrap();
        assert_eq!(
            f.security,
            SecurityConfig {
                cert_allowed_cn: vec!["n".into()],
                ..SecurityConfig::from_paths("a", "b", "c")
            }
        );
        let snake = kebab.replace('-', "_");
        let g: File = toml::from_str(&snake).unwrap();
        assert_eq!(g.security, f.security);
    }
}
