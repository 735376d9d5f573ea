//! OTLP span exporters (HTTP/protobuf and gRPC), configured from our resolved settings.
//!
//! Owns: building `opentelemetry_otlp::SpanExporter` with every setting passed explicitly (the
//! precedence of file, `GENAI_TAP_*` and `OTEL_*` is already resolved in `config`), and the
//! HTTP client it uses: ours, running on the Tokio runtime the export task runs on.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};

use super::TelemetryError;
use crate::client::{self, Connector};
use crate::config::{OtlpConfig, OtlpProtocol};

/// Answers larger than this from a collector are not read (they are never expected).
const MAX_RESPONSE: usize = 4 << 20;

/// The HTTP client of every HTTP exporter (OTLP/HTTP, Application Insights): ours, on the
/// Tokio runtime the export tasks run on, with the same TLS roots as the upstream client.
#[derive(Debug, Clone)]
pub struct HttpExportClient {
    client: Client<Connector, Full<Bytes>>,
}

impl HttpExportClient {
    pub fn new(
        ca_file: Option<&std::path::Path>,
        timeout: std::time::Duration,
    ) -> Result<Self, TelemetryError> {
        let connector = client::connector(ca_file, None, timeout)?;
        Ok(HttpExportClient {
            client: client::pooled(connector, std::time::Duration::from_secs(90)),
        })
    }
}

#[async_trait]
impl HttpClient for HttpExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let response = self
            .client
            .request(Request::from_parts(parts, Full::new(body)))
            .await?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}

/// The settings every OTLP/HTTP exporter shares, whatever the signal.
fn http_setup<B: WithExportConfig + WithHttpConfig>(
    builder: B,
    cfg: &OtlpConfig,
    url: String,
) -> Result<B, TelemetryError> {
    let headers: HashMap<String, String> = cfg
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(builder
        .with_http_client(HttpExportClient::new(
            cfg.ca_file.as_deref(),
            cfg.timeout.0,
        )?)
        .with_endpoint(url)
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(cfg.timeout.0)
        .with_headers(headers))
}

/// The settings every OTLP/gRPC exporter shares, whatever the signal.
fn grpc_setup<B: WithExportConfig + WithTonicConfig>(
    builder: B,
    cfg: &OtlpConfig,
    url: String,
) -> Result<B, TelemetryError> {
    let mut metadata = http::HeaderMap::new();
    for (k, v) in &cfg.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| TelemetryError::Exporter(format!("header {k:?}: {e}")))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|e| TelemetryError::Exporter(format!("header {k:?}: {e}")))?;
        metadata.insert(name, value);
    }
    let https = url.starts_with("https://");
    let mut builder = builder
        .with_endpoint(url)
        .with_protocol(Protocol::Grpc)
        .with_timeout(cfg.timeout.0)
        .with_metadata(tonic::metadata::MetadataMap::from_headers(metadata));
    if https {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|e| client::ClientError::CaFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        builder = builder.with_tls_config(tls);
    }
    Ok(builder)
}

fn built<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, TelemetryError> {
    result.map_err(|e| TelemetryError::Exporter(e.to_string()))
}

pub fn span_exporter(cfg: &OtlpConfig) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    match cfg.protocol {
        OtlpProtocol::HttpProtobuf => {
            built(http_setup(builder.with_http(), cfg, cfg.traces_url())?.build())
        }
        OtlpProtocol::Grpc => {
            built(grpc_setup(builder.with_tonic(), cfg, cfg.traces_url())?.build())
        }
    }
}

pub fn log_exporter(cfg: &OtlpConfig) -> Result<opentelemetry_otlp::LogExporter, TelemetryError> {
    let builder = opentelemetry_otlp::LogExporter::builder();
    match cfg.protocol {
        OtlpProtocol::HttpProtobuf => {
            built(http_setup(builder.with_http(), cfg, cfg.logs_url())?.build())
        }
        OtlpProtocol::Grpc => built(grpc_setup(builder.with_tonic(), cfg, cfg.logs_url())?.build()),
    }
}

pub fn metric_exporter(
    cfg: &OtlpConfig,
    temporality: opentelemetry_sdk::metrics::Temporality,
) -> Result<opentelemetry_otlp::MetricExporter, TelemetryError> {
    let builder = opentelemetry_otlp::MetricExporter::builder().with_temporality(temporality);
    match cfg.protocol {
        OtlpProtocol::HttpProtobuf => {
            built(http_setup(builder.with_http(), cfg, cfg.metrics_url())?.build())
        }
        OtlpProtocol::Grpc => {
            built(grpc_setup(builder.with_tonic(), cfg, cfg.metrics_url())?.build())
        }
    }
}
