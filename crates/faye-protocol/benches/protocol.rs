//! Hot paths of the protocol: decoding request batches, encoding a delivery, expand.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use faye_protocol::{Channel, EncodedMessage, decode_batch};

fn decode(c: &mut Criterion) {
    let publish = br#"[{"channel":"/chat/room42","data":{"user":"alice","text":"hello, world! this is fifty bytes"},"clientId":"o1g8hitpprnpnmtwamrjzu11hwh7all","id":"1f"}]"#;
    let connect = br#"[{"channel":"/meta/connect","clientId":"o1g8hitpprnpnmtwamrjzu11hwh7all","connectionType":"websocket","id":"2a"}]"#;
    let mut batch = String::from("[");
    for i in 0..50 {
        if i > 0 {
            batch.push(',');
        }
        batch.push_str(&format!(
            r#"{{"channel":"/chat/room{i}","data":{{"seq":{i},"text":"hello"}},"id":"{i}"}}"#
        ));
    }
    batch.push(']');
    let mut g = c.benchmark_group("decode_batch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("publish", |b| b.iter(|| decode_batch(black_box(publish)).unwrap()));
    g.bench_function("connect", |b| b.iter(|| decode_batch(black_box(connect)).unwrap()));
    g.throughput(Throughput::Elements(50));
    g.bench_function("50 publishes", |b| {
        b.iter(|| decode_batch(black_box(batch.as_bytes())).unwrap())
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let msg = decode_batch(br#"{"channel":"/chat/room42","data":{"user":"alice","text":"hello, world!"},"clientId":"o1g8hitpprnpnmtwamrjzu11hwh7all","id":"1f"}"#).unwrap().remove(0);
    c.bench_function("encode_delivery", |b| b.iter(|| EncodedMessage::delivery(black_box(&msg))));
}

fn expand(c: &mut Criterion) {
    let mut g = c.benchmark_group("expand");
    for name in ["/chat", "/chat/room42", "/a/b/c/d/e"] {
        let channel = Channel::parse(name).unwrap();
        g.bench_function(name, |b| b.iter(|| black_box(&channel).expand()));
    }
    g.finish();
}

criterion_group!(benches, decode, encode, expand);
criterion_main!(benches);
