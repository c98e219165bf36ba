//! `flotilla playground --tls`: a CA and a certificate for every process under
//! `<data-dir>/tls/`, kept with the data: `ca.pem`, and its key `ca-key.pem` that certifies
//! the stores added later; `<process>.pem`/`<process>-key.pem` for each PD member and store
//! (`pd.pem` or `pd1.pem`..., `store1.pem`..., made when the process is first added), each
//! with its own key; `client.pem`/`client-key.pem` for clients (the playground itself, `ctl`,
//! the official client). Every certificate names `localhost` and `127.0.0.1`, and has its
//! role as common name: the processes admit the names `pd`, `store` and `client`, so a store
//! added later is admitted by the processes started before it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use security::pki::{Authority, CertifiedKey};

/// The names the playground's processes admit (`cert-allowed-cn`).
const ALLOWED: &[&str] = &["pd", "store", "client"];
/// What every certificate is valid for: the playground runs on loopback.
const LOCAL: &[&str] = &["localhost", "127.0.0.1"];
/// The files of the CA and the client, made together.
const SHARED_FILES: &[&str] = &["ca.pem", "ca-key.pem", "client.pem", "client-key.pem"];

/// The playground's certificates.
#[derive(Clone, Debug)]
pub(crate) struct PlaygroundTls {
    dir: PathBuf,
}

impl PlaygroundTls {
    /// The certificates under `data_dir/tls`, made now unless a previous run made them. A
    /// directory without the CA's key (an older layout, or files removed) is made anew, so
    /// that no certificate of another CA stays in it.
    pub(crate) fn prepare(data_dir: &Path) -> Result<PlaygroundTls> {
        let tls = PlaygroundTls {
            dir: data_dir.join("tls"),
        };
        if tls.present() {
            return Ok(tls);
        }
        if tls.dir.exists() {
            std::fs::remove_dir_all(&tls.dir)
                .with_context(|| format!("removing {}", tls.dir.display()))?;
        }
        let ca = Authority::new("flotilla-playground-ca")?;
        let ca_files = CertifiedKey {
            cert_pem: ca.cert_pem.clone(),
            key_pem: ca.key_pem.clone(),
        };
        ca_files
            .write(&tls.dir, "ca")
            .context("writing the CA certificate")?;
        ca.issue("client", LOCAL)?
            .write(&tls.dir, "client")
            .context("writing the client certificate")?;
        Ok(tls)
    }

    /// The certificates of a playground started with `--tls` in `data_dir`, if any.
    pub(crate) fn existing(data_dir: &Path) -> Option<PlaygroundTls> {
        let tls = PlaygroundTls {
            dir: data_dir.join("tls"),
        };
        tls.present().then_some(tls)
    }

    fn present(&self) -> bool {
        SHARED_FILES.iter().all(|f| self.dir.join(f).is_file())
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// The flags of the `flotilla pd` or `flotilla server` process `name` of `role` (`pd`,
    /// `store`): its own certificate, made by the CA now if it has none yet.
    pub(crate) fn process_args(&self, name: &str, role: &str) -> Result<Vec<String>> {
        let cert = format!("{name}.pem");
        let key = format!("{name}-key.pem");
        if !self.dir.join(&cert).is_file() || !self.dir.join(&key).is_file() {
            let read = |f: &str| {
                std::fs::read_to_string(self.dir.join(f))
                    .with_context(|| format!("reading {}", self.path(f)))
            };
            let ca = Authority::from_pem(&read("ca.pem")?, &read("ca-key.pem")?)?;
            ca.issue(role, LOCAL)?
                .write(&self.dir, name)
                .with_context(|| format!("writing the certificate of {name}"))?;
        }
        Ok(vec![
            "--ca-path".into(),
            self.path("ca.pem"),
            "--cert-path".into(),
            self.path(&cert),
            "--key-path".into(),
            self.path(&key),
            "--cert-allowed-cn".into(),
            ALLOWED.join(","),
        ])
    }

    /// The client's identity, as `ctl`'s `--ca --cert --key`.
    pub(crate) fn client(&self) -> crate::ctl::TlsArgs {
        crate::ctl::TlsArgs {
            ca: Some(self.path("ca.pem")),
            cert: Some(self.path("client.pem")),
            key: Some(self.path("client-key.pem")),
        }
    }

    /// The lines that tell a user how to connect.
    pub(crate) fn client_settings(&self) -> String {
        let c = self.client();
        let (ca, cert, key) = (c.ca.unwrap(), c.cert.unwrap(), c.key.unwrap());
        format!(
            "TLS: on (every port requires a certificate of the CA)\n\
             client CA: {ca}\nclient certificate: {cert}\nclient key: {key}\n\
             tikv-client: Config::default().with_security(\"{ca}\", \"{cert}\", \"{key}\")\n\
             ctl flags: --ca {ca} --cert {cert} --key {key}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use security::{Incoming, SecurityConfig, SecurityManager};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The configuration that `process_args` hands a process.
    fn config_of(args: &[String]) -> SecurityConfig {
        let mut cfg = SecurityConfig::from_paths(&args[1], &args[3], &args[5]);
        cfg.cert_allowed_cn = args[7].split(',').map(str::to_owned).collect();
        cfg
    }

    #[test]
    fn certificates_are_made_once_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let first = PlaygroundTls::prepare(dir.path()).unwrap();
        let ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
        PlaygroundTls::prepare(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("tls/ca.pem")).unwrap(),
            ca,
            "kept"
        );
        SecurityManager::new(&first.client().config()).unwrap();
        let args = first.process_args("store0", "store").unwrap();
        assert!(args[3].ends_with("tls/store0.pem"), "{args:?}");
        let cert = std::fs::read(&args[3]).unwrap();
        first.process_args("store0", "store").unwrap();
        assert_eq!(std::fs::read(&args[3]).unwrap(), cert, "kept");
        assert!(PlaygroundTls::existing(dir.path()).is_some());
    }

    #[tokio::test]
    async fn every_process_has_its_own_certificate_and_they_admit_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let tls = PlaygroundTls::prepare(dir.path()).unwrap();
        let store0 = tls.process_args("store0", "store").unwrap();
        // A store added later, by a playground run that reads the CA back from its files.
        let later = PlaygroundTls::existing(dir.path()).unwrap();
        let store1 = later.process_args("store1", "store").unwrap();
        let pd = tls.process_args("pd1", "pd").unwrap();
        let read = |path: &str| std::fs::read(path).unwrap();
        for (a, b) in [(&store0, &store1), (&store0, &pd), (&store1, &pd)] {
            assert_ne!(read(&a[3]), read(&b[3]), "certificates");
            assert_ne!(read(&a[5]), read(&b[5]), "keys");
        }

        let server = SecurityManager::new(&config_of(&store0)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut incoming = Incoming::new(listener, &server);
        let addr = incoming.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Some(Ok(mut conn)) = incoming.next().await {
                let _ = conn.write_all(b"ok").await;
                let _ = conn.flush().await;
            }
        });
        for client in [&store1, &pd] {
            let client = SecurityManager::new(&config_of(client)).unwrap();
            let mut conn = client.connect(&addr).await.unwrap();
            let mut buf = [0u8; 2];
            conn.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ok");
        }
    }
}
