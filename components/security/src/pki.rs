//! A small certificate authority for the playground and the tests: a CA, and certificates it
//! signs for servers and clients (both usages, since every member is both). Production
//! clusters bring their own (see the README's security section).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::{Result, SecurityConfig, SecurityError};

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct CertifiedKey {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// A CA that signs certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, PEM-encoded.
    pub cert_pem: String,
    /// Its private key (PKCS#8), PEM-encoded: what certifies more processes later.
    pub key_pem: String,
}

fn rcgen_err(e: rcgen::Error) -> SecurityError {
    SecurityError::Config(format!("certificate generation: {e}"))
}

impl Authority {
    /// A new self-signed CA named `common_name`, valid for ten years.
    pub fn new(common_name: &str) -> Result<Authority> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err)?;
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let key = KeyPair::generate().map_err(rcgen_err)?;
        let cert = params.self_signed(&key).map_err(rcgen_err)?;
        Ok(Authority {
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// The CA of `cert_pem` and its private key `key_pem`, made before by [`Authority::new`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority> {
        let key = KeyPair::from_pem(key_pem).map_err(rcgen_err)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(rcgen_err)?;
        Ok(Authority {
            issuer,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// A certificate for `common_name` with `alt_names` (DNS names or IP addresses), valid
    /// from 2020 to 2045.
    pub fn issue(&self, common_name: &str, alt_names: &[&str]) -> Result<CertifiedKey> {
        self.issue_valid(common_name, alt_names, 2020, 2045)
    }

    /// A certificate that expired on 2021-01-01 (for tests that must see it refused).
    pub fn issue_expired(&self, common_name: &str, alt_names: &[&str]) -> Result<CertifiedKey> {
        self.issue_valid(common_name, alt_names, 2020, 2021)
    }

    fn issue_valid(
        &self,
        common_name: &str,
        alt_names: &[&str],
        from_year: i32,
        until_year: i32,
    ) -> Result<CertifiedKey> {
        let sans: Vec<String> = alt_names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).map_err(rcgen_err)?;
        params.distinguished_name = name(common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(from_year, 1, 1);
        params.not_after = rcgen::date_time_ymd(until_year, 1, 1);
        let key = KeyPair::generate().map_err(rcgen_err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_err)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.pem`, `<stem>.pem` and `<stem>-key.pem` (the key readable by its owner
    /// only) under `dir`, and returns the configuration that uses them.
    pub fn write(&self, dir: &Path, stem: &str, cert: &CertifiedKey) -> Result<SecurityConfig> {
        let ca = dir.join("ca.pem");
        let (crt, key) = cert.write(dir, stem)?;
        std::fs::write(&ca, &self.cert_pem).map_err(|e| io_error(&ca, e))?;
        Ok(SecurityConfig::from_paths(
            ca.display().to_string(),
            crt.display().to_string(),
            key.display().to_string(),
        ))
    }
}

impl CertifiedKey {
    /// Writes `<stem>.pem` and `<stem>-key.pem` (the key readable by its owner only) under
    /// `dir`; their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let crt = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        std::fs::write(&crt, &self.cert_pem).map_err(|e| io_error(&crt, e))?;
        write_private(&key, &self.key_pem).map_err(|e| io_error(&key, e))?;
        Ok((crt, key))
    }
}

fn io_error(path: &Path, e: std::io::Error) -> SecurityError {
    SecurityError::File {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    std::fs::rename(tmp, path)
}

/// A TLS connection to `addr` that trusts the CA of `ca_pem` and presents no certificate:
/// what a stranger who knows the cluster's CA tries (the tests check it is refused).
pub async fn connect_without_certificate(
    ca_pem: &str,
    addr: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls_pki_types::pem::PemObject;
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| invalid(format!("CA certificate: {e}")))?;
    roots.add(ca).map_err(|e| invalid(e.to_string()))?;
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_owned();
    let name = rustls_pki_types::ServerName::try_from(host).map_err(|e| invalid(e.to_string()))?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
}
