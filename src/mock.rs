//! An embedded OpenAI-compatible model server that needs no account and no network.
//!
//! Owns: deterministic answers to chat completions (plain and streamed, usage on request,
//! `n` choices) and the model list, for `genai-tap demo`, the tests and the benchmarks.
//! A request for the model `mock-rate-limited` gets the 429 a real endpoint would send.
//! Does not: pretend to think; replies are fixed text.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The model name that makes the mock answer 429.
pub const RATE_LIMITED_MODEL: &str = "mock-rate-limited";
const REPLY: &str = "Hello! This is a mock reply from the genai-tap demo upstream.";

#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Pause between streamed chunks.
    pub chunk_delay: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            chunk_delay: Duration::ZERO,
        }
    }
}

/// A response body fed by a channel, one frame per message.
#[derive(Debug)]
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// Starts the mock on `127.0.0.1:0`; it runs until the runtime stops.
pub async fn spawn(config: MockConfig) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, config));
    Ok(addr)
}

pub async fn serve(listener: TcpListener, config: MockConfig) {
    let state = Arc::new(State {
        config,
        counter: AtomicU64::new(0),
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(state.handle(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

struct State {
    config: MockConfig,
    counter: AtomicU64,
}

type MockResponse = Response<http_body_util::Either<http_body_util::Full<Bytes>, ChannelBody>>;

fn json_response(status: StatusCode, body: &Value) -> MockResponse {
    let mut r = Response::new(http_body_util::Either::Left(http_body_util::Full::new(
        Bytes::from(body.to_string()),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> MockResponse {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

/// Whitespace-separated words: the mock's idea of tokens.
fn words(s: &str) -> i64 {
    s.split_whitespace().count() as i64
}

impl State {
    async fn handle(&self, req: Request<Incoming>) -> MockResponse {
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let method = req.method().clone();
        let Ok(body) = req.into_body().collect().await else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "body",
                "unreadable body",
            );
        };
        let body = body.to_bytes();
        match (method, path.as_str()) {
            (Method::POST, p) if p.ends_with("/chat/completions") => self.chat(&body).await,
            (Method::GET, p) if p.ends_with("/models") => json_response(
                StatusCode::OK,
                &json!({"object": "list", "data": [
                    {"id": "mock-model", "object": "model", "created": 1_700_000_000, "owned_by": "genai-tap"}
                ]}),
            ),
            _ => error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "unknown_url",
                "Unknown request URL",
            ),
        }
    }

    async fn chat(&self, body: &[u8]) -> MockResponse {
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_json",
                "We could not parse the JSON body of your request.",
            );
        };
        let model = request["model"].as_str().unwrap_or("mock-model").to_owned();
        if model == RATE_LIMITED_MODEL {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached for requests. Please try again in 20s.",
            );
        }
        let n = request["n"].as_u64().unwrap_or(1).clamp(1, 16) as usize;
        let prompt_tokens: i64 = request["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["content"].as_str())
                    .map(words)
                    .sum()
            })
            .unwrap_or(0);
        let completion_tokens = words(REPLY) * n as i64;
        let id = format!(
            "chatcmpl-mock{}",
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let usage = json!({
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}
        });
        if request["stream"].as_bool() != Some(true) {
            let choices: Vec<Value> = (0..n)
                .map(|i| {
                    json!({
                        "index": i,
                        "message": {"role": "assistant", "content": REPLY, "refusal": null},
                        "logprobs": null,
                        "finish_reason": "stop"
                    })
                })
                .collect();
            return json_response(
                StatusCode::OK,
                &json!({
                    "id": id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
                    "choices": choices, "usage": usage, "system_fingerprint": "fp_mock"
                }),
            );
        }
        let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
        let chunk = |choices: Value, usage: Option<&Value>| {
            let mut c = json!({
                "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": model, "system_fingerprint": "fp_mock", "choices": choices
            });
            if include_usage {
                c["usage"] = usage.cloned().unwrap_or(Value::Null);
            }
            Bytes::from(format!("data: {c}\n\n"))
        };
        let mut events = Vec::new();
        for i in 0..n {
            events.push(chunk(
                json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
                None,
            ));
        }
        for word in REPLY.split_inclusive(' ') {
            for i in 0..n {
                events.push(chunk(
                    json!([{"index": i, "delta": {"content": word}, "logprobs": null, "finish_reason": null}]),
                    None,
                ));
            }
        }
        for i in 0..n {
            events.push(chunk(
                json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
                None,
            ));
        }
        if include_usage {
            events.push(chunk(json!([]), Some(&usage)));
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));

        let (tx, rx) = mpsc::channel(4);
        let delay = self.config.chunk_delay;
        tokio::spawn(async move {
            for event in events {
                if tx.send(event).await.is_err() {
                    return;
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
        });
        let mut r = Response::new(http_body_util::Either::Right(ChannelBody(rx)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        r
    }
}
