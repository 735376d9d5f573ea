//! A real OTLP trace receiver for tests: OTLP/HTTP protobuf (`POST /v1/traces`) and OTLP/gRPC
//! (`TraceService/Export` over h2c) on one port, decoding with the official protobuf
//! definitions (`opentelemetry-proto`). It records every request and its headers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

const GRPC_TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const GRPC_LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
const GRPC_METRICS: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

#[derive(Debug, Clone)]
pub struct Received {
    /// `grpc` or `http`.
    pub transport: &'static str,
    pub headers: HeaderMap,
    pub request: ExportTraceServiceRequest,
}

/// A span with the resource and scope it was exported under.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub resource: Vec<KeyValue>,
    pub scope_name: String,
    pub span: Span,
}

/// How the receiver answers exports: the faults a real collector shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Records the export and answers success.
    Accept,
    /// Answers this HTTP status (gRPC: `UNAVAILABLE`) without recording.
    Fail(u16),
    /// Reads the request and never answers.
    Hang,
    /// Waits this long, then records and answers success.
    Slow(std::time::Duration),
}

pub struct OtlpReceiver {
    pub addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    received: Arc<Mutex<Vec<Received>>>,
    logs: Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    raw: Arc<Mutex<Vec<Bytes>>>,
}

#[derive(Clone, Default)]
struct Records {
    traces: Arc<Mutex<Vec<Received>>>,
    logs: Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    /// Every request body as received, to search exported bytes for what must not be there.
    raw: Arc<Mutex<Vec<Bytes>>>,
}

/// A gRPC answer: one message, then `grpc-status` in trailers.
struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        OtlpReceiver::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// On a given address: a collector coming back where it was.
    pub async fn start_on(addr: SocketAddr) -> OtlpReceiver {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let records = Records::default();
        let record = records.clone();
        let behaviour = Arc::new(Mutex::new(Behaviour::Accept));
        let behave = behaviour.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let records = record.clone();
                let behave = behave.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let records = records.clone();
                        let now = *behave.lock().unwrap();
                        async move {
                            match now {
                                Behaviour::Accept => {}
                                Behaviour::Fail(status) => return Ok(failure(&req, status)),
                                Behaviour::Hang => std::future::pending::<()>().await,
                                Behaviour::Slow(d) => tokio::time::sleep(d).await,
                            }
                            Ok::<_, Infallible>(handle(req, &records).await)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        OtlpReceiver {
            addr,
            behaviour,
            received: records.traces,
            logs: records.logs,
            metrics: records.metrics,
            raw: records.raw,
        }
    }

    /// How exports are answered from now on.
    pub fn behave(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// The latest export of each metric, by name.
    pub fn metrics(&self) -> Vec<Metric> {
        let mut latest: Vec<Metric> = Vec::new();
        for request in self.metrics.lock().unwrap().iter() {
            for rm in &request.resource_metrics {
                for sm in &rm.scope_metrics {
                    for m in &sm.metrics {
                        latest.retain(|l| l.name != m.name);
                        latest.push(m.clone());
                    }
                }
            }
        }
        latest
    }

    /// Every byte every exporter sent, concatenated.
    pub fn raw_bytes(&self) -> Vec<u8> {
        self.raw.lock().unwrap().concat()
    }

    /// Every log record received, with its resource attributes.
    pub fn log_records(&self) -> Vec<LogRecord> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.resource_logs.iter())
            .flat_map(|rl| rl.scope_logs.iter())
            .flat_map(|sl| sl.log_records.iter().cloned())
            .collect()
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let mut out = Vec::new();
        for r in self.received() {
            for rs in r.request.resource_spans {
                let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
                for ss in rs.scope_spans {
                    let scope_name = ss.scope.map(|s| s.name).unwrap_or_default();
                    for span in ss.spans {
                        out.push(ReceivedSpan {
                            resource: resource.clone(),
                            scope_name: scope_name.clone(),
                            span,
                        });
                    }
                }
            }
        }
        out
    }
}

/// A refused export: the HTTP status, or for gRPC `UNAVAILABLE` in the trailers.
fn failure(req: &Request<Incoming>, status: u16) -> Response<GrpcBody> {
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("14"));
        let mut r = Response::new(GrpcBody {
            data: None,
            trailers: Some(trailers),
        });
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        return r;
    }
    let mut r = Response::new(GrpcBody {
        data: Some(Bytes::new()),
        trailers: None,
    });
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

fn grpc_answer(message: Vec<u8>) -> Response<GrpcBody> {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut r = Response::new(GrpcBody {
        data: Some(framed.freeze()),
        trailers: Some(trailers),
    });
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

async fn handle(req: Request<Incoming>, records: &Records) -> Response<GrpcBody> {
    let record = &records.traces;
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    records.raw.lock().unwrap().push(body.clone());
    let plain = |status: StatusCode, body: Bytes, content_type: &'static str| {
        let mut r = Response::new(GrpcBody {
            data: Some(body),
            trailers: None,
        });
        *r.status_mut() = status;
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static(content_type));
        r
    };
    match path.as_str() {
        "/v1/traces" => match ExportTraceServiceRequest::decode(body) {
            Ok(request) => {
                record.lock().unwrap().push(Received {
                    transport: "http",
                    headers,
                    request,
                });
                plain(
                    StatusCode::OK,
                    ExportTraceServiceResponse::default().encode_to_vec().into(),
                    "application/x-protobuf",
                )
            }
            Err(_) => plain(StatusCode::BAD_REQUEST, Bytes::new(), "text/plain"),
        },
        GRPC_TRACES if body.len() >= 5 => {
            let request = ExportTraceServiceRequest::decode(body.slice(5..)).unwrap();
            record.lock().unwrap().push(Received {
                transport: "grpc",
                headers,
                request,
            });
            grpc_answer(ExportTraceServiceResponse::default().encode_to_vec())
        }
        GRPC_METRICS if body.len() >= 5 => {
            let request = ExportMetricsServiceRequest::decode(body.slice(5..)).unwrap();
            records.metrics.lock().unwrap().push(request);
            grpc_answer(ExportMetricsServiceResponse::default().encode_to_vec())
        }
        "/v1/metrics" => match ExportMetricsServiceRequest::decode(body) {
            Ok(request) => {
                records.metrics.lock().unwrap().push(request);
                plain(
                    StatusCode::OK,
                    ExportMetricsServiceResponse::default()
                        .encode_to_vec()
                        .into(),
                    "application/x-protobuf",
                )
            }
            Err(_) => plain(StatusCode::BAD_REQUEST, Bytes::new(), "text/plain"),
        },
        GRPC_LOGS if body.len() >= 5 => {
            let request = ExportLogsServiceRequest::decode(body.slice(5..)).unwrap();
            records.logs.lock().unwrap().push(request);
            grpc_answer(ExportLogsServiceResponse::default().encode_to_vec())
        }
        "/v1/logs" => match ExportLogsServiceRequest::decode(body) {
            Ok(request) => {
                records.logs.lock().unwrap().push(request);
                plain(
                    StatusCode::OK,
                    ExportLogsServiceResponse::default().encode_to_vec().into(),
                    "application/x-protobuf",
                )
            }
            Err(_) => plain(StatusCode::BAD_REQUEST, Bytes::new(), "text/plain"),
        },
        _ => plain(StatusCode::NOT_FOUND, Bytes::new(), "text/plain"),
    }
}

/// A string, int, double or bool attribute's value, for assertions.
pub fn value(attrs: &[KeyValue], key: &str) -> Option<any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|v: AnyValue| v.value)
}

pub fn string(attrs: &[KeyValue], key: &str) -> Option<String> {
    match value(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s),
        other => panic!("{key} is not a string: {other:?}"),
    }
}

pub fn int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match value(attrs, key)? {
        any_value::Value::IntValue(i) => Some(i),
        other => panic!("{key} is not an int: {other:?}"),
    }
}
