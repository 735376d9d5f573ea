//! Certificates from PEM files: the listener's (when the proxy serves TLS as a shared gateway)
//! and the client certificate it presents to an upstream that asks for one (mutual TLS). Both
//! are reloaded when their files change, so cert-manager or a rotated Secret needs no restart.
//!
//! Owns: reading a certificate chain and its private key, checking that they belong together,
//! and handing rustls whichever pair is current. Does not: accept connections (`server`) or
//! dial upstreams (`client`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::reload::Watched;
use crate::stats::Stats;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain (leaf first) and its PEM private key, and checks they match.
pub fn load_pair(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no PEM certificates in it",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{}: no usable PEM private key: {e}", key_file.display()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        format!(
            "{} and {} do not make a certificate and its key: {e}",
            cert_file.display(),
            key_file.display()
        )
    })
}

/// A certificate and key pair kept current from their files.
#[derive(Debug, Clone)]
pub struct CertFiles(Arc<Watched<Arc<CertifiedKey>>>);

impl CertFiles {
    pub fn load(what: &'static str, cert_file: PathBuf, key_file: PathBuf) -> Result<Self, String> {
        let paths = vec![cert_file.clone(), key_file.clone()];
        Watched::new(what, paths, move || {
            load_pair(&cert_file, &key_file).map(Arc::new)
        })
        .map(CertFiles)
    }

    pub fn spawn_reloader(&self, interval: Duration, stats: Arc<Stats>) {
        self.0.spawn_reloader(interval, stats);
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        (*self.0.get()).clone()
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for CertFiles {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The listener's TLS settings: the current certificate, HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(certs: CertFiles) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(certs));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    #[test]
    fn a_matching_pair_loads() {
        let key = load_pair(&fixture("server.pem"), &fixture("server.key")).unwrap();
        assert_eq!(key.cert.len(), 1);
    }

    #[test]
    fn a_key_from_another_certificate_is_refused_naming_both_files() {
        let err = load_pair(&fixture("server.pem"), &fixture("server2.key")).unwrap_err();
        assert!(err.contains("server.pem and"), "{err}");
        assert!(err.contains("server2.key"), "{err}");
    }

    #[test]
    fn files_without_pem_content_are_refused_naming_the_file() {
        let err = load_pair(&fixture("README.md"), &fixture("server.key")).unwrap_err();
        assert!(err.contains("README.md: no PEM certificates"), "{err}");
        let err = load_pair(&fixture("server.pem"), &fixture("server.pem")).unwrap_err();
        assert!(err.contains("no usable PEM private key"), "{err}");
        let err = load_pair(&fixture("nope.pem"), &fixture("server.key")).unwrap_err();
        assert!(err.contains("nope.pem"), "{err}");
    }
}
