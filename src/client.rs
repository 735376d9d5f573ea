//! Outbound connections: one connector recipe for the upstream and the OTLP/HTTP exporter.
//!
//! Owns: TLS roots (Mozilla's, via webpki-roots, plus an optional PEM bundle), the ring crypto
//! provider (chosen explicitly, so no process-wide default is needed), ALPN for HTTP/2, and TCP
//! options. Does not: decide what is sent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::tls::CertFiles;

pub type Connector = HttpsConnector<HttpConnector>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read CA bundle {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Reads every certificate of a PEM bundle; an empty bundle is an error (a wrong file, surely).
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let fail = |message: String| ClientError::CaFile {
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificates in it".to_owned()));
    }
    Ok(certs)
}

/// An https-or-http connector offering HTTP/2 and HTTP/1.1 by ALPN, presenting
/// `client_cert` to servers that ask for one.
pub fn connector(
    ca_file: Option<&Path>,
    client_cert: Option<CertFiles>,
    connect_timeout: Duration,
) -> Result<Connector, ClientError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            roots.add(cert).map_err(|e| ClientError::CaFile {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let tls = match client_cert {
        Some(certs) => tls.with_client_cert_resolver(Arc::new(certs)),
        None => tls.with_no_client_auth(),
    };

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));

    Ok(HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http))
}

/// A pooled client over `connector`.
pub fn pooled<B>(connector: Connector, idle_timeout: Duration) -> Client<Connector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(idle_timeout)
        .build(connector)
}
