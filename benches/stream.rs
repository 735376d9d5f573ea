//! Throughput of the observation path: SSE decoding, stream accumulation, and extraction from
//! complete bodies, and the per-exchange work of folding an exchange and building its span. Run with `cargo bench --bench stream`; criterion prints MB/s per case.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use genai_tap::genai::chat;
use genai_tap::genai::sse::SseDecoder;
use genai_tap::genai::{Api, ResponseSummary, Stream};
use std::hint::black_box;

/// A realistic streamed chat completion: role chunk, `words` content chunks, finish, usage.
fn stream(words: usize) -> Vec<u8> {
    let mut s = String::new();
    let head = r#""id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_eb9dce56a8""#;
    s.push_str(&format!(
        "data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"
    ));
    for i in 0..words {
        s.push_str(&format!(
            "data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    s.push_str(&format!(
        "data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n"
    ));
    s.push_str(&format!(
        "data: {{{head},\"choices\":[],\"usage\":{{\"prompt_tokens\":19,\"completion_tokens\":{words},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":0,\"audio_tokens\":0}},\"completion_tokens_details\":{{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}}}}\n\n",
        words + 19
    ));
    s.push_str("data: [DONE]\n\n");
    s.into_bytes()
}

/// Splits like a network would: frames of `size` bytes, boundaries anywhere.
fn frames(bytes: &[u8], size: usize) -> Vec<&[u8]> {
    bytes.chunks(size).collect()
}

fn sse(c: &mut Criterion) {
    let body = stream(500);
    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Bytes(body.len() as u64));
    for frame in [64usize, 1024, 16 * 1024] {
        let parts = frames(&body, frame);
        group.bench_with_input(
            BenchmarkId::new("decode_only", frame),
            &parts,
            |b, parts| {
                b.iter(|| {
                    let mut d = SseDecoder::new(1 << 20);
                    let mut n = 0usize;
                    for p in parts {
                        d.push(p, &mut |e| n += e.data.len());
                    }
                    black_box(n)
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("decode_and_accumulate", frame),
            &parts,
            |b, parts| b.iter(|| black_box(accumulate(Api::ChatCompletions, parts))),
        );
    }
    // As OpenAI sends it by default since 2025: usage requested, and every chunk padded with an
    // `obfuscation` string of its own.
    let padded = padded(&body);
    group.throughput(Throughput::Bytes(padded.len() as u64));
    let parts = frames(&padded, 1024);
    group.bench_with_input(
        BenchmarkId::new("decode_and_accumulate_padded", 1024),
        &parts,
        |b, parts| b.iter(|| black_box(accumulate(Api::ChatCompletions, parts))),
    );
    // The same text through the Responses API, as OpenAI streams it.
    let events = responses_stream(500);
    let read = accumulate(Api::Responses, &[&events]);
    assert!(
        read.done && read.issue.is_none(),
        "the bench's stream reads whole"
    );
    assert_eq!(read.facts.usage.output_tokens, Some(500));
    group.throughput(Throughput::Bytes(events.len() as u64));
    let parts = frames(&events, 1024);
    group.bench_with_input(
        BenchmarkId::new("decode_and_accumulate_responses", 1024),
        &parts,
        |b, parts| b.iter(|| black_box(accumulate(Api::Responses, parts))),
    );
    group.finish();
}

/// Decodes the frames and folds their events into a stream of `api` (content capture off).
fn accumulate(api: Api, parts: &[&[u8]]) -> ResponseSummary {
    let mut d = SseDecoder::new(1 << 20);
    let mut s = Stream::new(api, false);
    for p in parts {
        d.push(p, &mut |e| {
            s.push(e.data);
        });
    }
    s.finish()
}

/// `stream` with an `obfuscation` member of varying length closing every chunk.
fn padded(stream: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(stream);
    let mut out = String::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        match line.strip_suffix("}\n") {
            Some(l) if l.starts_with("data: {") => {
                let pad = &"Zt2hQ9kLx0"[..i % 10];
                out.push_str(&format!("{l},\"obfuscation\":\"{pad}\"}}\n"));
            }
            _ => out.push_str(line),
        }
    }
    out.into_bytes()
}

/// A Responses API stream of `words` text deltas, every event as OpenAI sends it: a sequence
/// number of its own, `obfuscation` padding on each delta, and the whole text again in the
/// closing events.
fn responses_stream(words: usize) -> Vec<u8> {
    let id = "resp_68ca950a4a0c81a0b2a6a8e0d1b7c3f40e1e9f6a2b3c4d5e";
    let item = "msg_68ca950c76008190a8a7c7fb81e042f00ecff94d4f220ceb";
    let model = "gpt-4.1-2025-04-14";
    let text: String = (0..words).map(|i| format!(" word{i}")).collect();
    let head = |status: &str, output: &str, usage: &str| {
        format!(
            r#"{{"id":"{id}","object":"response","created_at":1758108938,"status":"{status}","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"{model}","output":[{output}],"parallel_tool_calls":true,"previous_response_id":null,"service_tier":"default","store":true,"temperature":1.0,"text":{{"format":{{"type":"text"}},"verbosity":"medium"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{usage},"user":null,"metadata":{{}}}}"#
        )
    };
    let message = |status: &str, content: &str| {
        format!(
            r#"{{"id":"{item}","type":"message","status":"{status}","content":[{content}],"role":"assistant"}}"#
        )
    };
    let part =
        format!(r#"{{"type":"output_text","annotations":[],"logprobs":[],"text":"{text}"}}"#);
    let mut seq = 0;
    let mut events = Vec::new();
    let mut event = |kind: &str, rest: String| {
        events.push(format!(
            "event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":{seq}{rest}}}\n\n"
        ));
        seq += 1;
    };
    let pending = head("in_progress", "", "null");
    event("response.created", format!(r#","response":{pending}"#));
    event("response.in_progress", format!(r#","response":{pending}"#));
    event(
        "response.output_item.added",
        format!(r#","output_index":0,"item":{}"#, message("in_progress", "")),
    );
    event(
        "response.content_part.added",
        format!(
            r#","item_id":"{item}","output_index":0,"content_index":0,"part":{{"type":"output_text","annotations":[],"logprobs":[],"text":""}}"#
        ),
    );
    for i in 0..words {
        let pad = &"Zt2hQ9kLx0"[..i % 10];
        event(
            "response.output_text.delta",
            format!(
                r#","item_id":"{item}","output_index":0,"content_index":0,"delta":" word{i}","logprobs":[],"obfuscation":"{pad}""#
            ),
        );
    }
    event(
        "response.output_text.done",
        format!(
            r#","item_id":"{item}","output_index":0,"content_index":0,"text":"{text}","logprobs":[]"#
        ),
    );
    event(
        "response.content_part.done",
        format!(r#","item_id":"{item}","output_index":0,"content_index":0,"part":{part}"#),
    );
    let done = message("completed", &part);
    event(
        "response.output_item.done",
        format!(r#","output_index":0,"item":{done}"#),
    );
    let usage = format!(
        r#"{{"input_tokens":19,"input_tokens_details":{{"cached_tokens":0}},"output_tokens":{words},"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":{}}}"#,
        words + 19
    );
    event(
        "response.completed",
        format!(r#","response":{}"#, head("completed", &done, &usage)),
    );
    events.concat().into_bytes()
}

fn extraction(c: &mut Criterion) {
    let request = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/chat_request_full.json"
    ))
    .expect("fixture");
    let response = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/chat_response.json"
    ))
    .expect("fixture");
    let mut group = c.benchmark_group("extract");
    group.throughput(Throughput::Bytes(request.len() as u64));
    group.bench_function("chat_request", |b| {
        b.iter(|| black_box(chat::parse_request(black_box(&request))))
    });
    // A long conversation, as agents send it: the history's texts (multi-line, so full of
    // `\n` escapes) are most of the bytes, and without capture they are only walked past.
    let long = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/chat_request_long.json"
    ))
    .expect("fixture");
    group.throughput(Throughput::Bytes(long.len() as u64));
    group.bench_function("chat_request_long", |b| {
        b.iter(|| black_box(chat::parse_request(black_box(&long))))
    });
    group.throughput(Throughput::Bytes(response.len() as u64));
    group.bench_function("chat_response", |b| {
        b.iter(|| black_box(chat::parse_response(black_box(&response), false)))
    });
    group.finish();
}

/// What the observer does per exchange after the bytes are in: fold the tap's events into an
/// `Exchange` (request and response extraction included), then build its span.
fn exchange(c: &mut Criterion) {
    use bytes::Bytes;
    use genai_tap::exchange::{Target, TraceStart};
    use genai_tap::genai::Api;
    use genai_tap::observer::{Assembly, Limits, Privacy, Start};
    use genai_tap::tap::{Ending, RequestBody, ResponseHead, TapEvent};
    use genai_tap::telemetry::span;
    use opentelemetry::InstrumentationScope;
    use std::time::{Instant, SystemTime};

    let fixture = |name: &str| {
        Bytes::from(
            std::fs::read(format!(
                "{}/tests/fixtures/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .expect("fixture"),
        )
    };
    let request = fixture("chat_request_full.json");
    let response = fixture("chat_response.json");
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert("x-request-id", http::HeaderValue::from_static("req_8f3c2a"));
    let start = Start {
        api: Api::ChatCompletions,
        deployment: None,
        target: Target {
            provider: "openai".into(),
            host: "api.openai.com".into(),
            port: 443,
        },
        arrived: Instant::now(),
        wall: SystemTime::now(),
        headers: Vec::new(),
        trace: TraceStart::default(),
        baggage: Vec::new(),
        conversation_id: None,
    };
    let assemble = || {
        let mut a = Assembly::new(start.clone(), Limits::default(), Privacy::default());
        a.apply(TapEvent::Request {
            body: RequestBody::Complete(request.clone()),
            usage_injected: false,
        });
        a.apply(TapEvent::ResponseHead(ResponseHead::boxed(200, &headers)));
        a.apply(TapEvent::Data(response.clone(), Instant::now()));
        a.apply(TapEvent::End {
            ending: Ending::Complete,
            lost: false,
            at: Instant::now(),
        });
        a.finish()
    };
    let scope = InstrumentationScope::builder("genai-tap").build();
    let mut group = c.benchmark_group("exchange");
    group.bench_function("assemble_chat", |b| b.iter(|| black_box(assemble())));
    let ex = assemble();
    let build = |mut ex: genai_tap::exchange::Exchange| {
        let attributes = span::attributes(&mut ex);
        span::build(&ex, attributes, &scope, Default::default())
    };
    // The exchange is consumed (its texts move into the span): each iteration gets a copy,
    // made outside the timing.
    group.bench_function("span_build", |b| {
        b.iter_batched(
            || ex.clone(),
            |ex| black_box(build(black_box(ex))),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();

    // A full export batch of such spans, encoded as the OTLP/HTTP request body: our encoder
    // against the SDK's path (owned protobuf structs, then prost).
    use genai_tap::telemetry::wire;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use prost::Message;
    let resource = opentelemetry_sdk::Resource::builder().build();
    let batch: Vec<_> = (0..512).map(|_| build(ex.clone())).collect();
    let encoded = wire::EncodedResource::new(&resource);
    let scope = wire::EncodedScope::new(&batch[0].instrumentation_scope);
    let sdk_resource = ResourceAttributesWithSchema::from(&resource);
    let mut group = c.benchmark_group("otlp_batch_512");
    group.throughput(Throughput::Elements(512));
    // Both consume the batch, as the exporters do (its drop is part of the cost). Ours encodes
    // each span as it is recorded, then joins the batch: both steps are counted here.
    group.bench_function("wire", |b| {
        b.iter_batched(
            || batch.clone(),
            |spans| {
                let spans: Vec<wire::EncodedSpan> = spans
                    .into_iter()
                    .map(|span| wire::EncodedSpan::new(&span))
                    .collect();
                black_box(wire::export_trace_request(&encoded, &scope, &spans))
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.bench_function("sdk_transform_and_prost", |b| {
        b.iter_batched(
            || batch.clone(),
            |spans| {
                let request = ExportTraceServiceRequest {
                    resource_spans: group_spans_by_resource_and_scope(spans, &sdk_resource),
                };
                black_box(request.encode_to_vec())
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, sse, extraction, exchange);
criterion_main!(benches);
