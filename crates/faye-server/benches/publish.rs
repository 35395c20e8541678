//! Publishing to N subscribers: through the memory engine alone, and through the
//! whole server (decode, handler, engine, wakeups) with sockets draining and
//! framing what they were pushed.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use faye_engine::{
    ClientId, Engine, EngineContext, EngineEvent, EngineListener, Limits, MemoryEngine,
};
use faye_protocol::{Channel, EncodedMessage, decode_batch, encode_batch};
use faye_server::{Context, Push, RequestInfo, Server, ServerOptions};
use serde_json::json;

struct Nop;
impl EngineListener for Nop {
    fn mail(&self, _: &ClientId) {}
    fn event(&self, _: EngineEvent) {}
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn engine_publish(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("engine_publish");
    for n in [1usize, 100, 1000] {
        let engine = MemoryEngine::new();
        let limits =
            Limits { max_subscriptions: 10, max_queue: usize::MAX, max_queue_bytes: usize::MAX };
        let timeout = std::time::Duration::from_secs(3600);
        rt.block_on(async {
            engine.start(EngineContext { listener: Arc::new(Nop), timeout, limits });
        });
        let ids: Vec<ClientId> = rt.block_on(async {
            let mut ids = Vec::new();
            for _ in 0..n {
                let id = engine.create_client().await.unwrap();
                engine.subscribe(&id, &Channel::parse("/chat/*").unwrap()).await.unwrap();
                ids.push(id);
            }
            ids
        });
        let delivery =
            EncodedMessage::from_json(br#"{"channel":"/chat/room","data":{"text":"hello"}}"#);
        let room = Channel::parse("/chat/room").unwrap();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                rt.block_on(async {
                    engine.publish(black_box(&room), delivery.clone()).await.unwrap();
                    for id in &ids {
                        black_box(engine.take_queue(id, None).await.unwrap());
                    }
                })
            })
        });
    }
    g.finish();
}

fn server_publish(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("server_publish_to_sockets");
    for n in [1usize, 100, 1000] {
        let server = Server::new(MemoryEngine::new(), ServerOptions::default());
        // n subscribers, each bound to a socket as a WebSocket client would be.
        let sockets = rt.block_on(async {
            let mut sockets = Vec::new();
            for _ in 0..n {
                let reply = server
                    .process(
                        decode_batch(br#"{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}"#).unwrap(),
                        &Context::trusted(),
                    )
                    .await;
                let faye_server::Reply::Message(hs) = &reply[0] else { unreachable!() };
                let id = hs.client_id.clone().unwrap();
                let sub = json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/chat/*"});
                server.process(decode_batch(sub.to_string().as_bytes()).unwrap(), &Context::trusted()).await;
                let socket = server.socket(RequestInfo::default());
                assert!(socket.attach(&id).await);
                sockets.push(socket);
            }
            sockets
        });
        let publish = br#"[{"channel":"/chat/room","data":{"user":"alice","text":"hello, world!"},"id":"1"}]"#;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                rt.block_on(async {
                    let batch = decode_batch(black_box(publish)).unwrap();
                    black_box(server.process(batch, &Context::trusted()).await);
                    // Each socket frames what it was pushed, as the WebSocket
                    // transport does before writing it.
                    for socket in &sockets {
                        let Push::Messages(messages) = socket.next_push().await else {
                            unreachable!()
                        };
                        black_box(encode_batch(&messages));
                    }
                })
            })
        });
    }
    g.finish();
}

/// What per-client ordering costs: one remote client publishing with Faye's
/// numbered ids to 100 socket subscribers, with ordering on (the default) and off.
fn ordered_publish(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("remote_publish_100_subscribers");
    for (name, wait) in [("ordered", None), ("unordered", Some(std::time::Duration::ZERO))] {
        let options = match wait {
            Some(wait) => ServerOptions::default().order_wait(wait),
            None => ServerOptions::default(),
        };
        let server = Server::new(MemoryEngine::new(), options);
        let remote = || Context::remote(Arc::new(RequestInfo::default()));
        let handshake = br#"{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"],"id":"1"}"#;
        let (sockets, publisher) = rt.block_on(async {
            let mut sockets = Vec::new();
            for _ in 0..100 {
                let reply = server.process(decode_batch(handshake).unwrap(), &remote()).await;
                let faye_server::Reply::Message(hs) = &reply[0] else { unreachable!() };
                let id = hs.client_id.clone().unwrap();
                let sub =
                    json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/chat/*"});
                server.process(decode_batch(sub.to_string().as_bytes()).unwrap(), &remote()).await;
                let socket = server.socket(RequestInfo::default());
                assert!(socket.attach(&id).await);
                sockets.push(socket);
            }
            let reply = server.process(decode_batch(handshake).unwrap(), &remote()).await;
            let faye_server::Reply::Message(hs) = &reply[0] else { unreachable!() };
            (sockets, hs.client_id.clone().unwrap())
        });
        let mut next_id = 2u64;
        g.throughput(Throughput::Elements(100));
        g.bench_function(name, |b| {
            b.iter(|| {
                // Each publish carries the next id, as Faye's client numbers them.
                let publish = json!([{"channel":"/chat/room","data":{"text":"hello, world!"},
                                      "clientId": publisher, "id": next_id.to_string()}]);
                next_id += 1;
                rt.block_on(async {
                    let batch = decode_batch(publish.to_string().as_bytes()).unwrap();
                    black_box(server.process(batch, &remote()).await);
                    for socket in &sockets {
                        let Push::Messages(messages) = socket.next_push().await else {
                            unreachable!()
                        };
                        black_box(encode_batch(&messages));
                    }
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, engine_publish, server_publish, ordered_publish);
criterion_main!(benches);
