//! OTLP span exporters (HTTP/protobuf and gRPC), configured from our resolved settings.
//!
//! Owns: building the exporters with every setting passed explicitly (the precedence of file,
//! `GENAI_TAP_*` and `OTEL_*` is already resolved in `config`): for spans over HTTP our own
//! exporter (encoded by [`wire`]), otherwise the SDK's; and the HTTP client every HTTP exporter
//! uses: ours, running on the Tokio runtime the export task runs on.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use opentelemetry::InstrumentationScope;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};

use super::pipeline::{Counters, Destination, SPAN_COUNTERS};
use super::{TelemetryError, wire};
use crate::client::{self, Connector};
use crate::config::{OtlpConfig, OtlpProtocol};
use crate::stats::LogLimiter;

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
    let metadata = header_map(&cfg.headers)?;
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

/// OTLP/gRPC span export: the SDK's exporter.
pub fn grpc_span_exporter(
    cfg: &OtlpConfig,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    built(grpc_setup(builder, cfg, cfg.traces_url())?.build())
}

/// OTLP/HTTP protobuf span export of spans encoded as they were recorded
/// ([`wire::EncodedSpan`]): a batch is their bytes behind the resource and scope, not the
/// SDK's owned protobuf structs. Sends, times out and reads partial success as the SDK's HTTP
/// exporter does (no retries: a failed batch is counted and logged by the pipeline).
#[derive(Debug)]
pub struct HttpSpanExporter {
    client: HttpExportClient,
    endpoint: http::Uri,
    headers: http::HeaderMap,
    timeout: Duration,
    resource: wire::EncodedResource,
    scope: wire::EncodedScope,
    rejections: LogLimiter,
}

impl HttpSpanExporter {
    pub fn new(
        cfg: &OtlpConfig,
        resource: &Resource,
        scope: &InstrumentationScope,
    ) -> Result<Self, TelemetryError> {
        let url = cfg.traces_url();
        let endpoint = url
            .parse()
            .map_err(|e| TelemetryError::Exporter(format!("OTLP traces endpoint {url:?}: {e}")))?;
        Ok(HttpSpanExporter {
            client: HttpExportClient::new(cfg.ca_file.as_deref(), cfg.timeout.0)?,
            endpoint,
            headers: header_map(&cfg.headers)?,
            timeout: cfg.timeout.0,
            resource: wire::EncodedResource::new(resource),
            scope: wire::EncodedScope::new(scope),
            rejections: LogLimiter::new(Duration::from_secs(30)),
        })
    }

    /// Logs what an OTLP partial-success answer says was rejected (rate-limited).
    fn partial_success(&self, body: &[u8]) {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
        use prost::Message;
        let Ok(response) = ExportTraceServiceResponse::decode(body) else {
            return;
        };
        let Some(partial) = response.partial_success else {
            return;
        };
        if (partial.rejected_spans > 0 || !partial.error_message.is_empty())
            && let Some(suppressed) = self.rejections.check()
        {
            tracing::warn!(
                exporter = "otlp",
                rejected_spans = partial.rejected_spans,
                error_message = %partial.error_message.chars().take(200).collect::<String>(),
                suppressed,
                "the collector rejected part of a batch"
            );
        }
    }
}

impl Destination for HttpSpanExporter {
    type Item = wire::EncodedSpan;
    const COUNTERS: Counters = SPAN_COUNTERS;
    async fn export(&self, batch: Vec<wire::EncodedSpan>) -> OTelSdkResult {
        let body = wire::export_trace_request(&self.resource, &self.scope, &batch);
        drop(batch);
        let mut request = Request::new(Bytes::from(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.endpoint.clone();
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        for (name, value) in &self.headers {
            headers.insert(name, value.clone());
        }
        let response = tokio::time::timeout(self.timeout, self.client.send_bytes(request))
            .await
            .map_err(|_| OTelSdkError::Timeout(self.timeout))?
            .map_err(|e| OTelSdkError::InternalFailure(format!("OTLP/HTTP export: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(OTelSdkError::InternalFailure(format!(
                "OTLP/HTTP export: the collector answered {status}"
            )));
        }
        self.partial_success(response.body());
        Ok(())
    }
    fn shutdown(&self) -> OTelSdkResult {
        Ok(())
    }
}

/// `OTEL_EXPORTER_OTLP_HEADERS` as HTTP headers; a name or value HTTP cannot carry is an error.
fn header_map(headers: &BTreeMap<String, String>) -> Result<http::HeaderMap, TelemetryError> {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| TelemetryError::Exporter(format!("header {k:?}: {e}")))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|e| TelemetryError::Exporter(format!("header {k:?}: {e}")))?;
        map.insert(name, value);
    }
    Ok(map)
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
