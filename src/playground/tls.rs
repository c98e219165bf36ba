//! `flotilla playground --tls`: a CA and a certificate for each kind of process under
//! `<data-dir>/tls/`, made once and kept with the data: `ca.pem`; `pd.pem`/`pd-key.pem` for
//! every PD member, `store.pem`/`store-key.pem` for every store, `client.pem`/`client-key.pem`
//! for clients (the playground itself, `ctl`, the official client). Every certificate names
//! `localhost` and `127.0.0.1`; the processes admit only the names `pd`, `store` and `client`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use security::pki::Authority;

/// The names the playground's processes admit (`cert-allowed-cn`).
const ALLOWED: &[&str] = &["pd", "store", "client"];
/// What every certificate is valid for: the playground runs on loopback.
const LOCAL: &[&str] = &["localhost", "127.0.0.1"];

/// The playground's certificates.
#[derive(Clone, Debug)]
pub(crate) struct PlaygroundTls {
    dir: PathBuf,
}

impl PlaygroundTls {
    /// The certificates under `data_dir/tls`, made now unless a previous run made them.
    pub(crate) fn prepare(data_dir: &Path) -> Result<PlaygroundTls> {
        let tls = PlaygroundTls {
            dir: data_dir.join("tls"),
        };
        if tls.present() {
            return Ok(tls);
        }
        let ca = Authority::new("flotilla-playground-ca")?;
        for role in ALLOWED {
            let cert = ca.issue(role, LOCAL)?;
            ca.write(&tls.dir, role, &cert)
                .with_context(|| format!("writing the {role} certificate"))?;
        }
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
        ["ca.pem", "client.pem", "client-key.pem"]
            .iter()
            .chain(["pd.pem", "pd-key.pem", "store.pem", "store-key.pem"].iter())
            .all(|f| self.dir.join(f).is_file())
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// The flags of a `flotilla pd` or `flotilla server` process of `role` (`pd`, `store`).
    pub(crate) fn process_args(&self, role: &str) -> Vec<String> {
        vec![
            "--ca-path".into(),
            self.path("ca.pem"),
            "--cert-path".into(),
            self.path(&format!("{role}.pem")),
            "--key-path".into(),
            self.path(&format!("{role}-key.pem")),
            "--cert-allowed-cn".into(),
            ALLOWED.join(","),
        ]
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
        security::SecurityManager::new(&first.client().config()).unwrap();
        let args = first.process_args("store");
        assert!(args[3].ends_with("tls/store.pem"), "{args:?}");
        assert!(PlaygroundTls::existing(dir.path()).is_some());
    }
}
