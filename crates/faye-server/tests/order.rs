//! One client's messages are applied in the order of their ids, whatever order
//! its concurrent requests arrive in.

use std::sync::Arc;
use std::time::Duration;

use faye_engine::{
    Channel, ClientId, EncodedMessage, Engine, EngineContext, EngineError, MemoryEngine, Subscribed,
};
use faye_protocol::{decode_batch, encode_batch};
use faye_server::{Context, RequestInfo, Server, ServerOptions};
use serde_json::{Value, json};

fn remote() -> Context<'static, MemoryEngine> {
    Context::remote(Arc::new(RequestInfo { transport: "long-polling", ..Default::default() }))
}

async fn send(server: &Server<MemoryEngine>, request: Value) -> Value {
    let batch = decode_batch(request.to_string().as_bytes()).unwrap();
    serde_json::from_slice(&encode_batch(&server.process(batch, &remote()).await)).unwrap()
}

/// A client handshaken with message id "1", as Faye's client does.
async fn handshake(server: &Server<MemoryEngine>) -> String {
    let hs = json!({"channel": "/meta/handshake", "version": "1.0", "id": "1",
                    "supportedConnectionTypes": ["long-polling"]});
    send(server, hs).await[0]["clientId"].as_str().unwrap().to_owned()
}

/// Publishes of `client` to `/feed` with Faye's base-36 ids, `from..to`.
fn publishes(client: &str, ids: std::ops::Range<u32>) -> Value {
    let batch: Vec<Value> = ids
        .map(|n| json!({"channel": "/feed", "clientId": client, "data": n, "id": base36(n)}))
        .collect();
    json!(batch)
}

fn base36(mut n: u32) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit(n % 36, 36).unwrap());
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

/// What the subscriber `id` has been sent, as `data` values.
async fn received(server: &Server<MemoryEngine>, id: &str) -> Vec<u64> {
    let connect = json!({"channel": "/meta/connect", "clientId": id,
                         "connectionType": "long-polling", "advice": {"timeout": 0}});
    let reply = send(server, connect).await;
    reply.as_array().unwrap().iter().filter_map(|m| m["data"].as_u64()).collect()
}

async fn subscriber(server: &Server<MemoryEngine>) -> String {
    let id = handshake(server).await;
    let sub = json!({"channel": "/meta/subscribe", "clientId": id, "subscription": "/feed"});
    assert_eq!(send(server, sub).await[0]["successful"], true);
    id
}

/// The second of two concurrent requests arrives first: it waits for the first.
#[tokio::test(start_paused = true)]
async fn a_later_request_that_arrives_first_waits_for_the_earlier_one() {
    let server = Server::new(MemoryEngine::new(), ServerOptions::default());
    let sub = subscriber(&server).await;
    let publisher = handshake(&server).await;
    let second = tokio::spawn({
        let (server, batch) = (server.clone(), publishes(&publisher, 40..80));
        async move { send(&server, batch).await }
    });
    tokio::task::yield_now().await;
    assert!(!second.is_finished(), "ids 40.. wait for 2..40");
    send(&server, publishes(&publisher, 2..40)).await;
    let replies = second.await.unwrap();
    assert!(replies.as_array().unwrap().iter().all(|r| r["successful"] == true), "{replies}");
    assert_eq!(received(&server, &sub).await, (2..80).collect::<Vec<_>>());
}

/// A predecessor that never comes holds its successors up for `order_wait`, once.
#[tokio::test(start_paused = true)]
async fn a_gap_that_never_fills_is_given_up_after_the_wait() {
    let wait = Duration::from_millis(500);
    let server = Server::new(MemoryEngine::new(), ServerOptions::default().order_wait(wait));
    let sub = subscriber(&server).await;
    let publisher = handshake(&server).await;
    let start = tokio::time::Instant::now();
    send(&server, publishes(&publisher, 10..20)).await;
    assert_eq!(start.elapsed(), wait, "waited for ids 2..10, which never came");
    send(&server, publishes(&publisher, 20..30)).await;
    assert_eq!(start.elapsed(), wait, "the gap was given up on: no second wait");
    // A late message is applied at once.
    send(&server, publishes(&publisher, 5..6)).await;
    assert_eq!(start.elapsed(), wait);
    let want: Vec<u64> = (10..30).chain(5..6).collect();
    assert_eq!(received(&server, &sub).await, want);
}

/// A held connect does not hold up the messages sent after it.
#[tokio::test(start_paused = true)]
async fn a_held_connect_counts_as_applied_once_it_holds() {
    let server = Server::new(MemoryEngine::new(), ServerOptions::default());
    let sub = subscriber(&server).await;
    let publisher = handshake(&server).await;
    let connect = json!([{"channel": "/meta/connect", "clientId": publisher,
                          "connectionType": "long-polling", "id": "2"}]);
    let held = tokio::spawn({
        let server = server.clone();
        async move { send(&server, connect).await }
    });
    let start = tokio::time::Instant::now();
    send(&server, publishes(&publisher, 3..6)).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(!held.is_finished());
    assert_eq!(received(&server, &sub).await, vec![3, 4, 5]);
}

/// With ordering off, the same arrival order is applied as it arrives.
#[tokio::test(start_paused = true)]
async fn ordering_can_be_turned_off() {
    let options = ServerOptions::default().order_wait(Duration::ZERO);
    let server = Server::new(MemoryEngine::new(), options);
    let sub = subscriber(&server).await;
    let publisher = handshake(&server).await;
    send(&server, publishes(&publisher, 5..8)).await;
    send(&server, publishes(&publisher, 2..5)).await;
    assert_eq!(received(&server, &sub).await, vec![5, 6, 7, 2, 3, 4]);
}

/// A connect sent after messages still in flight does not wait for them, and
/// does not make them late: they are still applied in order when they come.
#[tokio::test(start_paused = true)]
async fn a_connect_after_a_gap_neither_waits_nor_closes_it() {
    let server = Server::new(MemoryEngine::new(), ServerOptions::default());
    let sub = subscriber(&server).await;
    let publisher = handshake(&server).await;
    let connect = json!([{"channel": "/meta/connect", "clientId": publisher,
                          "connectionType": "long-polling", "advice": {"timeout": 0}, "id": "a"}]);
    let start = tokio::time::Instant::now();
    send(&server, connect).await;
    assert_eq!(start.elapsed(), Duration::ZERO, "the connect did not wait for 2..10");
    let second = tokio::spawn({
        let (server, batch) = (server.clone(), publishes(&publisher, 6..10));
        async move { send(&server, batch).await }
    });
    tokio::task::yield_now().await;
    assert!(!second.is_finished(), "6.. still waits for 2..6");
    send(&server, publishes(&publisher, 2..6)).await;
    second.await.unwrap();
    assert_eq!(received(&server, &sub).await, (2..10).collect::<Vec<_>>());
    // And the id after the connect follows on from it.
    let start = tokio::time::Instant::now();
    send(&server, publishes(&publisher, 11..12)).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
}

/// A message behind a chain that keeps moving waits for all of it, however long
/// the chain takes: the wait is given up only when the client's messages stop
/// making progress (here each predecessor comes 100 ms after the last, so the
/// whole chain takes twice the order wait).
#[tokio::test(start_paused = true)]
async fn a_message_behind_a_moving_chain_waits_past_the_order_wait() {
    let wait = Duration::from_millis(500);
    let server = Server::new(MemoryEngine::new(), ServerOptions::default().order_wait(wait));
    let sub = subscriber(&server).await;
    let publisher = handshake(&server).await;
    let last = tokio::spawn({
        let (server, batch) = (server.clone(), publishes(&publisher, 12..13));
        async move { send(&server, batch).await }
    });
    for n in 2..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(&server, publishes(&publisher, n..n + 1)).await;
    }
    last.await.unwrap();
    assert_eq!(received(&server, &sub).await, (2..13).collect::<Vec<_>>());
}

/// A connect is answered within its hold of the batch's arrival, even when
/// messages before it in the batch took part of that time.
#[tokio::test(start_paused = true)]
async fn a_connect_holds_from_its_batchs_arrival() {
    let wait = Duration::from_millis(500);
    let server = Server::new(MemoryEngine::new(), ServerOptions::default().order_wait(wait));
    let publisher = handshake(&server).await;
    // Id 9 waits out the gap 2..9 (500 ms), then the connect holds.
    let batch = json!([
        {"channel": "/feed", "clientId": publisher, "data": 1, "id": "9"},
        {"channel": "/meta/connect", "clientId": publisher, "connectionType": "long-polling",
         "id": "a", "advice": {"timeout": 2000}},
    ]);
    let start = tokio::time::Instant::now();
    let replies = send(&server, batch).await;
    assert_eq!(start.elapsed(), Duration::from_millis(2000), "{replies}");
    assert!(replies.as_array().unwrap().iter().all(|r| r["successful"] == true), "{replies}");
}

/// The memory engine, with every publish taking 100 ms to complete after its
/// effect (as a publish to a remote engine waits for its answer).
#[derive(Debug, Clone)]
struct Slow(MemoryEngine);

const SLOW: Duration = Duration::from_millis(100);

impl Engine for Slow {
    fn start(&self, ctx: EngineContext) {
        self.0.start(ctx);
    }
    async fn create_client(&self) -> Result<ClientId, EngineError> {
        self.0.create_client().await
    }
    async fn client_exists(&self, client: &ClientId) -> Result<bool, EngineError> {
        self.0.client_exists(client).await
    }
    async fn destroy_client(&self, client: &ClientId) -> Result<(), EngineError> {
        self.0.destroy_client(client).await
    }
    async fn ping(&self, client: &ClientId) -> Result<(), EngineError> {
        self.0.ping(client).await
    }
    async fn subscribe(&self, client: &ClientId, ch: &Channel) -> Result<Subscribed, EngineError> {
        self.0.subscribe(client, ch).await
    }
    async fn unsubscribe(&self, client: &ClientId, ch: &Channel) -> Result<bool, EngineError> {
        self.0.unsubscribe(client, ch).await
    }
    async fn publish(&self, channel: &Channel, message: EncodedMessage) -> Result<(), EngineError> {
        let published = self.0.publish(channel, message).await;
        tokio::time::sleep(SLOW).await;
        published
    }
    async fn take_queue(
        &self,
        client: &ClientId,
        request: Option<&str>,
    ) -> Result<Vec<EncodedMessage>, EngineError> {
        self.0.take_queue(client, request).await
    }
    async fn shutdown(&self) {
        self.0.shutdown().await;
    }
}

/// A client's next publish goes as soon as the engine has the previous one in
/// line, not when it completes: a burst of 20 concurrent requests to an engine
/// whose publishes take 100 ms each is through in 100 ms, in order.
#[tokio::test(start_paused = true)]
async fn a_publish_waits_for_its_predecessors_place_not_its_completion() {
    let server = Server::new(Slow(MemoryEngine::new()), ServerOptions::default());
    let send = |request: Value| {
        let server = server.clone();
        async move {
            let batch = decode_batch(request.to_string().as_bytes()).unwrap();
            let ctx = Context::remote(Arc::new(RequestInfo {
                transport: "long-polling",
                ..Default::default()
            }));
            let replies = encode_batch(&server.process(batch, &ctx).await);
            serde_json::from_slice::<Value>(&replies).unwrap()
        }
    };
    let hs = json!({"channel": "/meta/handshake", "version": "1.0", "id": "1",
                    "supportedConnectionTypes": ["long-polling"]});
    let sub = send(hs.clone()).await[0]["clientId"].as_str().unwrap().to_owned();
    let subscribe = json!({"channel": "/meta/subscribe", "clientId": sub, "subscription": "/feed"});
    assert_eq!(send(subscribe).await[0]["successful"], true);
    let publisher = send(hs).await[0]["clientId"].as_str().unwrap().to_owned();
    let start = tokio::time::Instant::now();
    // Sent together, arriving in reverse order.
    let requests: Vec<_> =
        (2..22u32).rev().map(|n| send(publishes(&publisher, n..n + 1))).collect();
    for replies in futures_util::future::join_all(requests).await {
        assert_eq!(replies[0]["successful"], true, "{replies}");
    }
    assert_eq!(start.elapsed(), SLOW);
    let connect = json!({"channel": "/meta/connect", "clientId": sub,
                         "connectionType": "long-polling", "advice": {"timeout": 0}});
    let got: Vec<u64> =
        send(connect).await.as_array().unwrap().iter().filter_map(|m| m["data"].as_u64()).collect();
    assert_eq!(got, (2..22).collect::<Vec<_>>());
}

/// Within a batch too: the next message starts once a publish is in line, so a
/// batch of 20 publishes (no ids needed) is through in one publish's time, and
/// applied in the batch's order.
#[tokio::test(start_paused = true)]
async fn a_batch_of_publishes_is_applied_in_order_without_waiting_for_each() {
    let server = Server::new(Slow(MemoryEngine::new()), ServerOptions::default());
    let ctx = || {
        Context::remote(Arc::new(RequestInfo { transport: "long-polling", ..Default::default() }))
    };
    let send = |request: Value| {
        let server = server.clone();
        async move {
            let batch = decode_batch(request.to_string().as_bytes()).unwrap();
            let replies = encode_batch(&server.process(batch, &ctx()).await);
            serde_json::from_slice::<Value>(&replies).unwrap()
        }
    };
    let hs = json!({"channel": "/meta/handshake", "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"]});
    let sub = send(hs.clone()).await[0]["clientId"].as_str().unwrap().to_owned();
    let subscribe = json!({"channel": "/meta/subscribe", "clientId": sub, "subscription": "/feed"});
    assert_eq!(send(subscribe).await[0]["successful"], true);
    let batch: Vec<Value> = (0..20).map(|n| json!({"channel": "/feed", "data": n})).collect();
    let start = tokio::time::Instant::now();
    let replies = send(json!(batch)).await;
    assert_eq!(start.elapsed(), SLOW);
    assert_eq!(replies.as_array().unwrap().len(), 20);
    assert!(replies.as_array().unwrap().iter().all(|r| r["successful"] == true), "{replies}");
    let connect = json!({"channel": "/meta/connect", "clientId": sub,
                         "connectionType": "long-polling", "advice": {"timeout": 0}});
    let got: Vec<u64> =
        send(connect).await.as_array().unwrap().iter().filter_map(|m| m["data"].as_u64()).collect();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
}
