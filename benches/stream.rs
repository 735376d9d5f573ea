//! Throughput of the observation path: SSE decoding, stream accumulation, and extraction from
//! complete bodies. Run with `cargo bench --bench stream`; criterion prints MB/s per case.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use genai_tap::genai::chat::{self, ChatStream};
use genai_tap::genai::sse::SseDecoder;
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
            |b, parts| {
                b.iter(|| {
                    let mut d = SseDecoder::new(1 << 20);
                    let mut s = ChatStream::new(false);
                    for p in parts {
                        d.push(p, &mut |e| {
                            s.push(e.data);
                        });
                    }
                    black_box(s.finish())
                })
            },
        );
    }
    group.finish();
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
    group.throughput(Throughput::Bytes(response.len() as u64));
    group.bench_function("chat_response", |b| {
        b.iter(|| black_box(chat::parse_response(black_box(&response), false)))
    });
    group.finish();
}

criterion_group!(benches, sse, extraction);
criterion_main!(benches);
