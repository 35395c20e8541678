//! What the client must do against any Faye server, written once and run
//! against faye-rs (`faye_rs.rs`) and Node Faye 1.4.3 (`node_faye.rs`), over
//! each transport. Each checks what the server received, not only what the
//! client says.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use faye_client::{BoxFuture, Client, ConnectionState, Error, Extension, TransportKind};
use faye_protocol::Message;
use futures_util::future::join_all;
use serde_json::{Value, json};

use super::{ConnectProxy, Forwarder, Seen, builder, next, only, seen_where, within};

/// A server under test.
pub trait Fixture {
    fn url(&self) -> String;
    fn seen(&self) -> &Seen;
    fn addr(&self) -> std::net::SocketAddr;
    async fn restart(&mut self);
}

impl Fixture for super::RustServer {
    fn url(&self) -> String {
        Self::url(self)
    }
    fn seen(&self) -> &Seen {
        &self.seen
    }
    fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
    async fn restart(&mut self) {
        Self::restart(self).await;
    }
}

impl Fixture for super::NodeServer {
    fn url(&self) -> String {
        Self::url(self)
    }
    fn seen(&self) -> &Seen {
        &self.seen
    }
    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }
    async fn restart(&mut self) {
        Self::restart(self).await;
    }
}

/// The `/meta/connect`s the server received from `client_id`, by connection type.
fn connects(seen: &Seen, client_id: &str, kind: TransportKind) -> usize {
    seen_where(seen, |v| {
        v["channel"] == "/meta/connect"
            && v["clientId"] == client_id
            && v["connectionType"] == kind.name()
    })
    .len()
}

pub async fn wait_state(client: &Client, what: &str, f: impl Fn(&ConnectionState) -> bool) {
    let mut states = client.state_changes();
    within(what, states.wait_for(|s| f(s))).await.expect("the client lives");
}

/// Subscribe, publish and wildcards, over `kind` only.
pub async fn pubsub_and_wildcards(f: &impl Fixture, kind: TransportKind) {
    let sub = only(&f.url(), kind).build().unwrap();
    let publisher = only(&f.url(), kind).build().unwrap();
    let mut one = sub.subscribe("/chat/*").await.unwrap();
    let mut all = sub.subscribe("/chat/**").await.unwrap();
    let mut room = sub.subscribe("/chat/room").await.unwrap();
    let reply = publisher.publish("/chat/room", &json!({"n": 1})).await.unwrap();
    assert_eq!(reply.successful, Some(true));
    for s in [&mut one, &mut all, &mut room] {
        let m = next(s).await;
        assert_eq!(m.channel, "/chat/room");
        assert_eq!(m.data_as::<Value>().unwrap(), json!({"n": 1}));
    }
    publisher.publish("/chat/room/deep", &2).await.unwrap();
    publisher.publish("/chat/room", &3).await.unwrap();
    assert_eq!(next(&mut all).await.data_as::<i32>().unwrap(), 2, "/** matches deeper channels");
    assert_eq!(next(&mut all).await.data_as::<i32>().unwrap(), 3);
    assert_eq!(
        next(&mut one).await.data_as::<i32>().unwrap(),
        3,
        "/* does not match /chat/room/deep"
    );
    assert_eq!(next(&mut room).await.data_as::<i32>().unwrap(), 3);

    // Faye's error, as the server wrote it.
    match publisher.publish("/*", &1).await {
        Err(Error::Rejected(e)) => assert_eq!(e, "405:/*:Invalid channel"),
        other => panic!("publishing to /* gave {other:?}"),
    }

    assert_eq!(sub.state(), ConnectionState::Connected { transport: kind });
    let id = sub.client_id().unwrap();
    assert!(connects(f.seen(), &id, kind) > 0, "the server saw connects over {kind}");
    let other = if kind == TransportKind::WebSocket {
        TransportKind::LongPolling
    } else {
        TransportKind::WebSocket
    };
    assert_eq!(connects(f.seen(), &id, other), 0);
    sub.disconnect().await.unwrap();
    assert!(one.recv().await.is_none(), "a disconnect ends subscriptions");
    assert!(matches!(sub.state(), ConnectionState::Disconnected(_)));
}

/// Several subscriptions to one channel share one `/meta/subscribe`; the last
/// one dropped unsubscribes.
pub async fn one_meta_subscribe_per_channel(f: &impl Fixture, kind: TransportKind) {
    let sub = only(&f.url(), kind).build().unwrap();
    let (a, b) = tokio::join!(sub.subscribe("/shared"), sub.subscribe("/shared"));
    let (a, b) = (a.unwrap(), b.unwrap());
    let c = sub.subscribe("/shared").await.unwrap();
    let id = sub.client_id().unwrap();
    let subscribes = |channel: &'static str| {
        let id = id.clone();
        move |v: &Value| v["channel"] == channel && v["clientId"] == id
    };
    assert_eq!(seen_where(f.seen(), subscribes("/meta/subscribe")).len(), 1);
    drop(a);
    drop(b);
    // The last one still gets messages.
    let publisher = only(&f.url(), kind).build().unwrap();
    publisher.publish("/shared", &"still").await.unwrap();
    let mut c = c;
    assert_eq!(next(&mut c).await.data_as::<String>().unwrap(), "still");
    assert!(seen_where(f.seen(), subscribes("/meta/unsubscribe")).is_empty());
    drop(c);
    within("the /meta/unsubscribe", async {
        while seen_where(f.seen(), subscribes("/meta/unsubscribe")).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Counts the deliveries an incoming extension sees, and signs publishes.
struct Sign(AtomicUsize);

impl Extension for Sign {
    fn outgoing<'a>(&'a self, mut message: Message) -> BoxFuture<'a, Option<Message>> {
        Box::pin(async move {
            tokio::task::yield_now().await; // really async
            if !message.channel.as_deref().unwrap_or("/meta/").starts_with("/meta/") {
                message.ext = Some(json!({"token": "s3cret"}));
            }
            Some(message)
        })
    }

    fn incoming<'a>(&'a self, mut message: Message) -> BoxFuture<'a, Option<Message>> {
        Box::pin(async move {
            if message.successful.is_none() && message.data.is_some() {
                self.0.fetch_add(1, Ordering::Relaxed);
                message.data =
                    Some(serde_json::value::to_raw_value(&"changed by an extension").unwrap());
            }
            Some(message)
        })
    }
}

/// Extensions change what goes out and what comes in; headers reach the server
/// on HTTP requests and on the WebSocket upgrade (seen by a forwarder between).
pub async fn extensions_and_headers(f: &impl Fixture, kind: TransportKind) {
    let forwarder = Forwarder::start(f.addr()).await;
    let url = f.url().replace(&f.addr().to_string(), &forwarder.addr.to_string());
    let sign = Arc::new(Sign(AtomicUsize::new(0)));
    let client = only(&url, kind)
        .header("X-Test", "first")
        .unwrap()
        .extension(sign.clone())
        .build()
        .unwrap();
    let mut sub = client.subscribe("/ext").await.unwrap();
    client.publish("/ext", &"original").await.unwrap();
    let m = next(&mut sub).await;
    assert_eq!(m.data_as::<String>().unwrap(), "changed by an extension");
    assert_eq!(sign.0.load(Ordering::Relaxed), 1);
    let publishes = seen_where(f.seen(), |v| v["channel"] == "/ext");
    assert_eq!(publishes.len(), 1);
    assert_eq!(
        publishes[0]["ext"],
        json!({"token": "s3cret"}),
        "the server saw the outgoing extension's ext"
    );
    assert_eq!(publishes[0]["header"], "first", "the server saw the header on the {kind} request");

    let head = match kind {
        TransportKind::WebSocket => "upgrade: websocket",
        _ => "POST /bayeux",
    };
    assert!(forwarder.heads_matching(head) > 0);
    let with_header = |value: &str| {
        forwarder
            .heads
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.to_ascii_lowercase().contains(&head.to_ascii_lowercase()))
            .filter(|h| h.to_ascii_lowercase().contains(&format!("x-test: {value}")))
            .count()
    };
    assert!(with_header("first") > 0, "the header went with the {kind} requests");
    client.set_header("X-Test", "second").unwrap();
    client.reconnect();
    wait_state(&client, "reconnected", |s| *s == ConnectionState::Connected { transport: kind })
        .await;
    client.publish("/ext", &"again").await.unwrap();
    next(&mut sub).await;
    assert!(with_header("second") > 0, "set_header applies to new requests");
}

/// The server restarts (forgetting every client) while a client is subscribed:
/// the client handshakes again, resubscribes, and after that loses nothing.
pub async fn restart_recovers(f: &mut impl Fixture, kind: TransportKind) {
    let sub = only(&f.url(), kind).build().unwrap();
    let publisher = only(&f.url(), kind).build().unwrap();
    let mut news = sub.subscribe("/news").await.unwrap();
    publisher.publish("/news", &-1).await.unwrap();
    assert_eq!(next(&mut news).await.data_as::<i64>().unwrap(), -1);
    let old = sub.client_id().unwrap();

    f.restart().await;
    wait_state(&sub, "the client to notice", |s| !matches!(s, ConnectionState::Connected { .. }))
        .await;
    wait_state(&sub, "the client to reconnect", |s| matches!(s, ConnectionState::Connected { .. }))
        .await;
    // Probes until one arrives: then the subscription is back.
    within("the resubscription", async {
        loop {
            publisher.publish("/news", &0).await.unwrap();
            tokio::select! {
                m = news.recv() => if m.expect("alive").data_as::<i64>().unwrap() == 0 { break },
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    })
    .await;
    assert_ne!(sub.client_id().unwrap(), old, "a new session");
    for n in 1..=200 {
        publisher.publish("/news", &n).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 200 {
        let n = next(&mut news).await.data_as::<i64>().unwrap();
        if n > 0 {
            got.push(n);
        }
    }
    assert_eq!(got, (1..=200).collect::<Vec<_>>(), "nothing lost after the resubscribe, in order");
}

/// A burst of publishes not awaited one by one still arrives in call order.
pub async fn burst_in_order(f: &impl Fixture, kind: TransportKind) {
    let sub = only(&f.url(), kind).build().unwrap();
    let publisher = only(&f.url(), kind).build().unwrap();
    let mut s = sub.subscribe("/burst").await.unwrap();
    publisher.connect().await.unwrap();
    let results = join_all((0..1000).map(|n| publisher.publish("/burst", &n))).await;
    assert!(results.iter().all(Result::is_ok));
    for n in 0..1000 {
        assert_eq!(next(&mut s).await.data_as::<i32>().unwrap(), n);
    }
}

/// A WebSocket that worked breaks (and new upgrades fail): the client carries
/// on over long-polling, same session, losing nothing.
pub async fn broken_websocket_falls_back(f: &impl Fixture) {
    let forwarder = Forwarder::start(f.addr()).await;
    let url = f.url().replace(&f.addr().to_string(), &forwarder.addr.to_string());
    let sub = builder(&url).build().unwrap();
    let publisher = builder(&f.url()).build().unwrap();
    let mut s = sub.subscribe("/fall").await.unwrap();
    publisher.publish("/fall", &0).await.unwrap();
    assert_eq!(next(&mut s).await.data_as::<i32>().unwrap(), 0);
    assert_eq!(sub.state(), ConnectionState::Connected { transport: TransportKind::WebSocket });
    let id = sub.client_id().unwrap();
    let posts_before = forwarder.heads_matching("POST /bayeux");

    forwarder.break_websockets();
    wait_state(&sub, "long-polling", |s| {
        *s == ConnectionState::Connected { transport: TransportKind::LongPolling }
    })
    .await;
    for n in 1..=50 {
        publisher.publish("/fall", &n).await.unwrap();
    }
    for n in 1..=50 {
        assert_eq!(next(&mut s).await.data_as::<i32>().unwrap(), n);
    }
    assert_eq!(sub.client_id().unwrap(), id, "the same session");
    assert!(
        forwarder.heads_matching("POST /bayeux") > posts_before,
        "long-polling went over the wire"
    );
    assert!(connects(f.seen(), &id, TransportKind::LongPolling) > 0);
    // Its own publishes go too.
    sub.publish("/fall", &51).await.unwrap();
    assert_eq!(next(&mut s).await.data_as::<i32>().unwrap(), 51);
}

/// Through an HTTP CONNECT proxy, over `kind`.
pub async fn through_proxy(f: &impl Fixture, kind: TransportKind) {
    let proxy = ConnectProxy::start().await;
    let client = only(&f.url(), kind)
        .proxy(&format!("http://user:pa%20ss@{}", proxy.addr))
        .unwrap()
        .build()
        .unwrap();
    let mut s = client.subscribe("/proxied").await.unwrap();
    client.publish("/proxied", &"hi").await.unwrap();
    assert_eq!(next(&mut s).await.data_as::<String>().unwrap(), "hi");
    let requests = proxy.requests.lock().unwrap().clone();
    assert!(!requests.is_empty());
    let port = f.addr().port();
    for r in &requests {
        assert!(r.contains(&format!(":{port} HTTP/1.1")), "{r}");
        assert!(r.contains("Proxy-Authorization: Basic dXNlcjpwYSBzcw=="), "{r}");
    }
    let id = client.client_id().unwrap();
    assert!(connects(f.seen(), &id, kind) > 0);
}

/// permessage-deflate negotiated on the WebSocket: a large, repetitive message
/// crosses the wire compressed (counted by a forwarder), and arrives intact. A
/// client that does not offer it gets it uncompressed.
pub async fn websocket_deflate(f: &impl Fixture) {
    let text = "all work and no play makes a dull message ".repeat(5000);
    for offer in [true, false] {
        let forwarder = Forwarder::start(f.addr()).await;
        let url = f.url().replace(&f.addr().to_string(), &forwarder.addr.to_string());
        let sub = only(&url, TransportKind::WebSocket).websocket_deflate(offer).build().unwrap();
        let publisher = builder(&f.url()).build().unwrap();
        let mut s = sub.subscribe("/big").await.unwrap();
        publisher.publish("/big", &text).await.unwrap();
        assert_eq!(next(&mut s).await.data_as::<String>().unwrap(), text);
        let response = forwarder.upgrade_responses.lock().unwrap()[0].to_ascii_lowercase();
        let down = forwarder.websocket_bytes_down.load(Ordering::Relaxed) as usize;
        if offer {
            assert!(
                response.contains("sec-websocket-extensions: permessage-deflate"),
                "{response}"
            );
            assert!(down < text.len() / 10, "{down} bytes for a {} byte message", text.len());
        } else {
            assert!(!response.contains("permessage-deflate"), "{response}");
            assert!(down > text.len(), "{down} bytes");
        }
    }
}

/// A subscribe cancelled mid-way (its future dropped) and made again, or
/// dropped and made again at once: the channel ends up subscribed on the server.
pub async fn cancel_and_subscribe_again(f: &impl Fixture, kind: TransportKind) {
    let sub = only(&f.url(), kind).build().unwrap();
    let publisher = only(&f.url(), kind).build().unwrap();
    sub.connect().await.unwrap();
    for n in 0..10 {
        {
            let cancelled = sub.subscribe("/flip");
            tokio::pin!(cancelled);
            // Polled once: the subscribe is on its way; then dropped.
            tokio::select! {
                biased;
                _ = &mut cancelled => {}
                () = tokio::task::yield_now() => {}
            }
        }
        if n % 2 == 0 {
            drop(sub.subscribe("/flip").await.unwrap());
        }
        let mut s = sub.subscribe("/flip").await.unwrap();
        publisher.publish("/flip", &n).await.unwrap();
        assert_eq!(next(&mut s).await.data_as::<i32>().unwrap(), n);
    }
    // Nothing withdrawn left a hole in the ids on the wire (faye-rs would wait
    // for the missing one).
    let id = sub.client_id().unwrap();
    let mut ids: Vec<u64> = seen_where(f.seen(), |v| v["clientId"] == id)
        .iter()
        .filter_map(|v| u64::from_str_radix(v["id"].as_str()?, 36).ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert!(ids.len() > 10);
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "ids in sequence: {ids:?}");
}
