//! Adversarial request bodies: the cost of decoding each grows linearly with its
//! size. Throughput is in bytes, so linear shows as the same MiB/s at every size.
//! Sizes reach the default 1 MiB request limit.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use faye_protocol::{Channel, DecodeError, decode_batch, decode_batch_limited};

/// The HTTP and WebSocket transports' default batch limit.
const MAX_BATCH: usize = 1000;

fn object_with_keys(keys: usize, distinct: usize) -> String {
    let mut body = String::from(r#"{"channel":"/a""#);
    for i in 0..keys {
        body.push_str(&format!(r#","k{}":{i}"#, i % distinct));
    }
    body.push('}');
    body
}

fn unknown_keys(c: &mut Criterion) {
    let mut g = c.benchmark_group("unknown keys");
    for keys in [20_000, 40_000, 80_000] {
        // All distinct, then every key 80 times (kept once, at its last place).
        for (name, distinct) in [("distinct", keys), ("repeated", keys / 80)] {
            let body = object_with_keys(keys, distinct);
            g.throughput(Throughput::Bytes(body.len() as u64));
            g.bench_with_input(BenchmarkId::new(name, keys), body.as_bytes(), |b, body| {
                b.iter(|| decode_batch(black_box(body)).unwrap())
            });
        }
    }
    g.finish();
}

fn deep_channel_names(c: &mut Criterion) {
    let mut g = c.benchmark_group("deep channel names");
    for segments in [50_000, 100_000, 200_000] {
        let body = format!(r#"{{"channel":"{}","data":1}}"#, "/ab".repeat(segments));
        g.throughput(Throughput::Bytes(body.len() as u64));
        // Decoding, then the one parse the server does.
        g.bench_with_input(BenchmarkId::from_parameter(segments), body.as_bytes(), |b, body| {
            b.iter(|| {
                let batch = decode_batch(black_box(body)).unwrap();
                Channel::parse(batch[0].channel.as_deref().unwrap()).unwrap()
            })
        });
    }
    g.finish();
}

fn batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("1000-message batches");
    for text in [100, 400, 1000] {
        let message = format!(
            r#"{{"channel":"/chat/room","clientId":"o1g8hitpprnpnmtwamrjzu11hwh7all","id":"1f","data":{{"text":"{}"}}}}"#,
            "x".repeat(text)
        );
        let batch = |n: usize| format!("[{}]", vec![message.as_str(); n].join(","));
        let body = batch(MAX_BATCH);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::new("accepted", text), body.as_bytes(), |b, body| {
            b.iter(|| decode_batch_limited(black_box(body), MAX_BATCH).unwrap())
        });
        // Ten times the limit: refused at message 1001, so it costs what 1000 do.
        let body = batch(10 * MAX_BATCH);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("10x over the limit", text),
            body.as_bytes(),
            |b, body| {
                b.iter(|| {
                    let refused = decode_batch_limited(black_box(body), MAX_BATCH);
                    assert!(matches!(refused, Err(DecodeError::TooMany { .. })));
                })
            },
        );
    }
    g.finish();
}

fn nested_data(c: &mut Criterion) {
    let mut g = c.benchmark_group("nested data");
    for depth in [125_000, 250_000, 500_000] {
        let arrays =
            format!(r#"{{"channel":"/a","data":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
        let objects = format!(
            r#"{{"channel":"/a","data":{}1{}}}"#,
            r#"{"a":"#.repeat(depth / 3),
            "}".repeat(depth / 3)
        );
        for (name, body) in [("arrays", arrays), ("objects", objects)] {
            g.throughput(Throughput::Bytes(body.len() as u64));
            g.bench_with_input(BenchmarkId::new(name, depth), body.as_bytes(), |b, body| {
                b.iter(|| decode_batch(black_box(body)).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = unknown_keys, deep_channel_names, batches, nested_data
}
criterion_main!(benches);
