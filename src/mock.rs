//! An embedded OpenAI-compatible model server that needs no account and no network.
//!
//! Owns: deterministic answers, shaped like OpenAI's, for chat completions (plain, streamed,
//! tool calls, `n` choices, usage on request with `"usage": null` in every chunk as OpenAI
//! sends it), the Responses API (plain and streamed lifecycle events), embeddings (float and
//! base64) and legacy completions, in every endpoint shape (`/v1/...`, Azure deployments,
//! `/openai/v1/...`, `/models/...`), plus the model list. Ids derive from the request, so the
//! same request gets the same bytes, directly or through the proxy. A request for the model
//! `mock-rate-limited` gets the 429 a real endpoint would send. Used by `genai-tap demo`, the
//! tests and the benchmarks; replies are fixed text.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Either, Full};
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
const CREATED: i64 = 1_700_000_000;

#[derive(Debug, Clone, Default)]
pub struct MockConfig {
    /// Pause between streamed chunks.
    pub chunk_delay: Duration,
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
    let config = Arc::new(config);
    serve_with(listener, move |req| {
        let config = config.clone();
        async move { handle(&config, req).await }
    })
    .await;
}

/// Serves every connection on `listener` (HTTP/1.1 and h2c) with `handler`, until the runtime
/// stops: the mock's server, for benchmarks that answer in their own way.
pub async fn serve_with<H, F>(listener: TcpListener, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = MockResponse> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let answer = handler(req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// What the mock answers: a whole body, or one fed chunk by chunk.
pub type MockResponse = Response<Either<Full<Bytes>, ChannelBody>>;

fn json_response(status: StatusCode, body: &Value) -> MockResponse {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(body.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert("x-request-id", HeaderValue::from_static("req_mock"));
    r
}

fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> MockResponse {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

fn sse_response(config: &MockConfig, events: Vec<String>) -> MockResponse {
    let (tx, rx) = mpsc::channel(4);
    let delay = config.chunk_delay;
    tokio::spawn(async move {
        for event in events {
            if tx.send(Bytes::from(event)).await.is_err() {
                return;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    });
    let mut r = Response::new(Either::Right(ChannelBody(rx)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    r.headers_mut()
        .insert("x-request-id", HeaderValue::from_static("req_mock"));
    r
}

/// Whitespace-separated words: the mock's idea of tokens.
fn words(s: &str) -> i64 {
    s.split_whitespace().count() as i64
}

/// FNV-1a: a stable id from the request, so equal requests get equal bytes.
fn digest(v: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// All text in a content value: a string, or parts with `text`.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn deployment(path: &str) -> Option<&str> {
    let (_, rest) = path.split_once("/deployments/")?;
    rest.split('/').next()
}

async fn handle(config: &MockConfig, req: Request<Incoming>) -> MockResponse {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let method = req.method().clone();
    let Ok(body) = req.into_body().collect().await.map(|c| c.to_bytes()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "body",
            "unreadable body",
        );
    };
    if method == Method::GET && path.ends_with("/models") {
        return json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [
                {"id": "mock-model", "object": "model", "created": CREATED, "owned_by": "genai-tap"}
            ]}),
        );
    }
    if method != Method::POST {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_url",
            "Unknown request URL",
        );
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            "We could not parse the JSON body of your request.",
        );
    };
    let model = request["model"]
        .as_str()
        .or_else(|| deployment(&path))
        .unwrap_or("mock-model")
        .to_owned();
    if model == RATE_LIMITED_MODEL {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached for requests. Please try again in 20s.",
        );
    }
    if path.ends_with("/chat/completions") {
        chat(config, &request, &model)
    } else if path.ends_with("/completions") {
        completions(config, &request, &model)
    } else if path.ends_with("/embeddings") {
        embeddings(&request, &model)
    } else if path.ends_with("/responses") {
        responses(config, &request, &model)
    } else {
        error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_url",
            "Unknown request URL",
        )
    }
}

fn usage(prompt: i64, completion: i64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0}
    })
}

/// A stable subset of the request, for ids: what the model is asked, not how it is delivered.
fn identity(request: &Value) -> Value {
    json!([
        request["model"],
        request["messages"],
        request["prompt"],
        request["input"],
        request["n"]
    ])
}

fn chat(config: &MockConfig, request: &Value, model: &str) -> MockResponse {
    let n = request["n"].as_u64().unwrap_or(1).clamp(1, 16) as usize;
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let prompt_tokens: i64 = messages
        .iter()
        .map(|m| words(&text_of(&m["content"])))
        .sum();
    // With tools offered and no tool result yet, call the first tool.
    let tool = request["tools"]
        .as_array()
        .and_then(|t| t.first())
        .and_then(|t| t["function"]["name"].as_str())
        .filter(|_| !messages.iter().any(|m| m["role"] == "tool"))
        .map(str::to_owned);
    let id = format!("chatcmpl-{}", digest(&identity(request)));
    let call_id = format!("call_{}", &digest(&request["messages"])[..12]);
    let arguments = r#"{"city": "Paris"}"#;
    let (finish, completion_tokens) = match &tool {
        Some(_) => ("tool_calls", 5 * n as i64),
        None => ("stop", words(REPLY) * n as i64),
    };
    let usage = usage(prompt_tokens, completion_tokens);
    if request["stream"].as_bool() != Some(true) {
        let choices: Vec<Value> = (0..n)
            .map(|i| {
                let message = match &tool {
                    Some(name) => json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                        {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
                    ]}),
                    None => json!({"role": "assistant", "content": REPLY, "refusal": null}),
                };
                json!({"index": i, "message": message, "logprobs": null, "finish_reason": finish})
            })
            .collect();
        return json_response(
            StatusCode::OK,
            &json!({
                "id": id, "object": "chat.completion", "created": CREATED, "model": model,
                "choices": choices, "usage": usage, "system_fingerprint": "fp_mock"
            }),
        );
    }
    let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": CREATED,
            "model": model, "system_fingerprint": "fp_mock", "choices": choices
        });
        // As OpenAI does: with usage requested, every chunk carries the member.
        if include_usage {
            c["usage"] = usage.cloned().unwrap_or(Value::Null);
        }
        format!("data: {c}\n\n")
    };
    let mut events = Vec::new();
    for i in 0..n {
        events.push(chunk(
            json!([{"index": i, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}]),
            None,
        ));
    }
    match &tool {
        Some(name) => {
            for i in 0..n {
                events.push(chunk(
                    json!([{"index": i, "delta": {"tool_calls": [{"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}, "logprobs": null, "finish_reason": null}]),
                    None,
                ));
                let (a, b) = arguments.split_at(8);
                for piece in [a, b] {
                    events.push(chunk(
                        json!([{"index": i, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, "logprobs": null, "finish_reason": null}]),
                        None,
                    ));
                }
            }
        }
        None => {
            for word in REPLY.split_inclusive(' ') {
                for i in 0..n {
                    events.push(chunk(
                        json!([{"index": i, "delta": {"content": word}, "logprobs": null, "finish_reason": null}]),
                        None,
                    ));
                }
            }
        }
    }
    for i in 0..n {
        events.push(chunk(
            json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": finish}]),
            None,
        ));
    }
    if include_usage {
        events.push(chunk(json!([]), Some(&usage)));
    }
    events.push("data: [DONE]\n\n".to_owned());
    sse_response(config, events)
}

fn completions(config: &MockConfig, request: &Value, model: &str) -> MockResponse {
    let prompt = text_of(&request["prompt"]);
    let id = format!("cmpl-{}", digest(&identity(request)));
    let usage = json!({"prompt_tokens": words(&prompt), "completion_tokens": words(REPLY), "total_tokens": words(&prompt) + words(REPLY)});
    if request["stream"].as_bool() != Some(true) {
        return json_response(
            StatusCode::OK,
            &json!({
                "id": id, "object": "text_completion", "created": CREATED, "model": model,
                "choices": [{"text": REPLY, "index": 0, "logprobs": null, "finish_reason": "stop"}],
                "usage": usage
            }),
        );
    }
    let mut events: Vec<String> = REPLY
        .split_inclusive(' ')
        .map(|word| {
            let c = json!({"id": id, "object": "text_completion", "created": CREATED, "model": model,
                "choices": [{"text": word, "index": 0, "logprobs": null, "finish_reason": null}]});
            format!("data: {c}\n\n")
        })
        .collect();
    let last = json!({"id": id, "object": "text_completion", "created": CREATED, "model": model,
        "choices": [{"text": "", "index": 0, "logprobs": null, "finish_reason": "stop"}]});
    events.push(format!("data: {last}\n\n"));
    events.push("data: [DONE]\n\n".to_owned());
    sse_response(config, events)
}

fn embeddings(request: &Value, model: &str) -> MockResponse {
    let inputs: Vec<String> = match &request["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let dims = request["dimensions"].as_u64().unwrap_or(8).clamp(1, 4096) as usize;
    let base64 = request["encoding_format"] == "base64";
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let seed = u64::from_str_radix(&digest(&json!(text))[..8], 16).unwrap_or(7);
            let vector: Vec<f32> = (0..dims)
                .map(|d| ((seed.wrapping_mul(d as u64 + 1) % 2000) as f32 / 1000.0) - 1.0)
                .collect();
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64_encode(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: i64 = inputs.iter().map(|i| words(i)).sum();
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn responses(config: &MockConfig, request: &Value, model: &str) -> MockResponse {
    let input = &request["input"];
    let prompt_tokens = match input {
        Value::String(s) => words(s),
        Value::Array(items) => items.iter().map(|i| words(&text_of(&i["content"]))).sum(),
        _ => 0,
    };
    let answered = input
        .as_array()
        .is_some_and(|items| items.iter().any(|i| i["type"] == "function_call_output"));
    let tool = request["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["type"] == "function"))
        .and_then(|t| t["name"].as_str())
        .filter(|_| !answered);
    let id = format!("resp_{}", digest(&identity(request)));
    let output = match tool {
        Some(name) => {
            json!([{"type": "function_call", "id": format!("fc_{}", &id[5..17]), "call_id": format!("call_{}", &id[5..17]),
            "name": name, "arguments": r#"{"city": "Paris"}"#, "status": "completed"}])
        }
        None => {
            json!([{"type": "message", "id": format!("msg_{}", &id[5..17]), "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": REPLY, "annotations": []}]}])
        }
    };
    let output_tokens = if tool.is_some() { 5 } else { words(REPLY) };
    let mut response = json!({
        "id": id, "object": "response", "created_at": CREATED, "status": "completed",
        "error": null, "incomplete_details": null, "instructions": request["instructions"],
        "model": model, "output": output, "parallel_tool_calls": true,
        "previous_response_id": request["previous_response_id"], "service_tier": "default",
        "store": true, "temperature": 1.0, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
        "usage": {"input_tokens": prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + output_tokens},
        "metadata": {}
    });
    if let Some(conversation) = request.get("conversation").filter(|c| !c.is_null()) {
        let id = conversation.get("id").unwrap_or(conversation);
        response["conversation"] = json!({"id": id});
    }
    if request["stream"].as_bool() != Some(true) {
        return json_response(StatusCode::OK, &response);
    }
    let mut sequence = 0;
    let mut events = Vec::new();
    let mut event = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(sequence);
        sequence += 1;
        events.push(format!("event: {kind}\ndata: {data}\n\n"));
    };
    let mut in_progress = response.clone();
    in_progress["status"] = json!("in_progress");
    in_progress["output"] = json!([]);
    in_progress["usage"] = Value::Null;
    event("response.created", json!({"response": in_progress}));
    event("response.in_progress", json!({"response": in_progress}));
    let item = &response["output"][0];
    if tool.is_some() {
        let mut added = item.clone();
        added["arguments"] = json!("");
        added["status"] = json!("in_progress");
        event(
            "response.output_item.added",
            json!({"output_index": 0, "item": added}),
        );
        for piece in [r#"{"city":"#, r#" "Paris"}"#] {
            event(
                "response.function_call_arguments.delta",
                json!({"item_id": item["id"], "output_index": 0, "delta": piece}),
            );
        }
        event(
            "response.function_call_arguments.done",
            json!({"item_id": item["id"], "output_index": 0, "arguments": item["arguments"]}),
        );
    } else {
        event(
            "response.output_item.added",
            json!({"output_index": 0, "item": {"id": item["id"], "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
        );
        event(
            "response.content_part.added",
            json!({"item_id": item["id"], "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        );
        for word in REPLY.split_inclusive(' ') {
            event(
                "response.output_text.delta",
                json!({"item_id": item["id"], "output_index": 0, "content_index": 0, "delta": word}),
            );
        }
        event(
            "response.output_text.done",
            json!({"item_id": item["id"], "output_index": 0, "content_index": 0, "text": REPLY}),
        );
        event(
            "response.content_part.done",
            json!({"item_id": item["id"], "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": REPLY, "annotations": []}}),
        );
    }
    event(
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    );
    event("response.completed", json!({"response": response}));
    sse_response(config, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(&1.0f32.to_le_bytes()), "AACAPw==");
    }

    #[test]
    fn ids_depend_on_what_is_asked_not_on_stream_options() {
        let a =
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true});
        let mut b = a.clone();
        b["stream_options"] = json!({"include_usage": true});
        assert_eq!(digest(&identity(&a)), digest(&identity(&b)));
        assert_eq!(
            deployment("/openai/deployments/prod/chat/completions"),
            Some("prod")
        );
    }
}
