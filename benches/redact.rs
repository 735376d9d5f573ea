//! Redaction throughput with every preset on: 1 KiB and 64 KiB texts, with no match (the common
//! case: one prefilter scan, no allocation) and with dense matches. `cargo bench --bench redact`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use genai_tap::config::{RedactionConfig, RuleConfig};
use genai_tap::redact::Redactor;
use std::hint::black_box;

fn text(len: usize, dense: bool) -> String {
    let clean = "The quarterly report shows steady growth across all regions, and the team \
                 recommends continuing the current plan with minor adjustments to the schedule. ";
    let dirty = "Contact jane.doe@example.com or +1 415 555 2671, card 4111 1111 1111 1111, \
                 key sk-proj-abcdefghijklmnopqrstuvwxyz012345, host 10.1.2.3. ";
    let unit = if dense { dirty } else { clean };
    let mut s = String::with_capacity(len + unit.len());
    while s.len() < len {
        s.push_str(unit);
    }
    s.truncate(len);
    s
}

fn redact(c: &mut Criterion) {
    let redactor = Redactor::from_config(&RedactionConfig {
        rules: vec![RuleConfig {
            preset: Some("all".into()),
            ..RuleConfig::default()
        }],
        ..RedactionConfig::default()
    })
    .expect("presets build");
    let mut group = c.benchmark_group("redact");
    for len in [1 << 10, 64 << 10] {
        for dense in [false, true] {
            let input = text(len, dense);
            let label = if dense { "dense" } else { "no_match" };
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_with_input(BenchmarkId::new(label, len), &input, |b, input| {
                b.iter(|| black_box(redactor.text(black_box(input))))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, redact);
criterion_main!(benches);
