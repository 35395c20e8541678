//! Faults: Redis stalled for a moment, Redis restarted (empty: the test server
//! keeps nothing on disk), and a node gone mid-stream. The engine must keep
//! answering (with errors while Redis is away), reconnect by itself, and either
//! lose nothing or tell the client to handshake again.

mod common;

use common::{ch, numbers, poll, start};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use faye_engine::testing::Recorder;
use faye_engine::{ClientId, EncodedMessage, Engine, EngineError, EngineEvent};
use faye_protocol::{decode_batch, encode_batch};
use faye_redis::{RedisConfig, RedisEngine};
use faye_server::{Context, RequestInfo, Server, ServerOptions};
use faye_testkit::redis::RedisServer;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);
/// Short, so that a command sent to a stalled Redis fails quickly.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound on any one wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

async fn node(server: &RedisServer) -> RedisEngine {
    let config = RedisConfig::new(server.url()).response_timeout(RESPONSE_TIMEOUT);
    RedisEngine::connect(config).await.expect("connect to the test redis-server")
}

fn msg(n: usize) -> EncodedMessage {
    EncodedMessage::from_json(format!(r#"{{"channel":"/feed","data":{n}}}"#).as_bytes())
}

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Retries `f` until it succeeds (Redis coming back, the connection being
/// re-established), within [`WAIT`].
async fn until_ok<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, EngineError>>,
{
    bounded(what, async {
        loop {
            match f().await {
                Ok(v) => return v,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
}

/// Takes the client's queue on `engine` until `done` says enough arrived.
async fn take_until<E: Engine>(
    engine: &E,
    id: &ClientId,
    done: impl Fn(&[usize]) -> bool,
) -> Vec<usize> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, async {
        while !done(&got) {
            if let Ok(messages) = engine.take_queue(id, Some(&poll())).await {
                got.extend(numbers(messages));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    got
}

async fn wait_event(rec: &Recorder, event: EngineEvent) {
    let _ = tokio::time::timeout(WAIT, async {
        while !rec.events().contains(&event) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(rec.events().contains(&event), "no {event:?} in {:?}", rec.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stalled_for_a_moment_refuses_meanwhile_and_loses_nothing_it_accepted() {
    let server = Arc::new(RedisServer::start());
    let (a, b) = (node(&server).await, node(&server).await);
    start(&a, TIMEOUT);
    start(&b, TIMEOUT);
    let id = a.create_client().await.unwrap();
    a.subscribe(&id, &ch("/feed")).await.unwrap();

    let mut accepted = Vec::new();
    for n in 0..5 {
        b.publish(&ch("/feed"), msg(n)).await.unwrap();
        accepted.push(n);
    }
    // Longer than the readers' XREAD timeout (block + response timeout), so both
    // readers fail and must resume from their last entry.
    server.pause();
    let mut refused = Vec::new();
    let stalled = tokio::time::Instant::now();
    let mut n = 5;
    while stalled.elapsed() < Duration::from_secs(3) {
        match bounded("a publish to a stalled Redis", b.publish(&ch("/feed"), msg(n))).await {
            Ok(()) => accepted.push(n),
            Err(EngineError::Backend(_)) => refused.push(n),
            Err(e) => panic!("unexpected error: {e}"),
        }
        n += 1;
    }
    assert!(!refused.is_empty(), "publishes to a stalled Redis fail rather than hang");
    let unknown =
        bounded("client_exists on a stalled Redis", a.client_exists(&id)).await.unwrap_err();
    assert!(matches!(unknown, EngineError::Backend(_)), "{unknown:?}");
    server.resume();

    let first_after = n;
    let feed = ch("/feed");
    until_ok("a publish after Redis came back", || b.publish(&feed, msg(first_after))).await;
    accepted.push(first_after);
    for n in first_after + 1..first_after + 10 {
        b.publish(&ch("/feed"), msg(n)).await.unwrap();
        accepted.push(n);
    }
    assert!(a.client_exists(&id).await.unwrap(), "the session outlives the stall");

    let last = *accepted.last().unwrap();
    let got = take_until(&a, &id, |got| got.contains(&last)).await;
    // A refused publish may still have reached Redis (its XADD was sent, only the
    // reply came too late), so it may be delivered; an accepted one must be.
    for n in &accepted {
        assert!(got.contains(n), "accepted publish {n} lost: got {got:?}");
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order, once each: {got:?}");
    assert!(got.iter().all(|n| accepted.contains(n) || refused.contains(n)));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_empty_the_engine_reconnects_and_lets_go_of_lost_sessions() {
    let server = Arc::new(RedisServer::start());
    let a = node(&server).await;
    let rec = start(&a, TIMEOUT);
    let id = a.create_client().await.unwrap();
    a.subscribe(&id, &ch("/feed")).await.unwrap();
    a.publish(&ch("/feed"), msg(0)).await.unwrap();
    assert_eq!(numbers(a.take_queue(&id, Some(&poll())).await.unwrap()), [0]);

    server.restart();
    // The session was in Redis: it is gone, and the node holding its connection
    // is told to close it (so the client's next connect learns it must handshake).
    wait_event(&rec, EngineEvent::Close(id)).await;
    assert!(!until_ok("client_exists after the restart", || a.client_exists(&id)).await);
    assert!(a.take_queue(&id, Some(&poll())).await.unwrap().is_empty());

    // A new session works as before: scripts reloaded, bus read again.
    let fresh = until_ok("a handshake after the restart", || a.create_client()).await;
    a.subscribe(&fresh, &ch("/feed")).await.unwrap();
    for n in 1..=3 {
        a.publish(&ch("/feed"), msg(n)).await.unwrap();
    }
    assert_eq!(numbers(a.take_queue(&fresh, Some(&poll())).await.unwrap()), [1, 2, 3]);
    a.shutdown().await;
}

/// Down long enough for the connection manager to exhaust a round of reconnect
/// attempts: requests keep failing fast meanwhile, and the engine still comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_seconds_fails_requests_fast_and_the_engine_comes_back() {
    let server = Arc::new(RedisServer::start());
    let a = node(&server).await;
    let rec = start(&a, TIMEOUT);
    let id = a.create_client().await.unwrap();
    server.kill();
    let down = tokio::time::Instant::now();
    let mut failed = 0;
    while down.elapsed() < Duration::from_secs(8) {
        let published =
            bounded("a publish while Redis is down", a.publish(&ch("/feed"), msg(0))).await;
        assert!(matches!(published, Err(EngineError::Backend(_))), "{published:?}");
        failed += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // With the redis crate's default reconnect policy each request here waited ~6 s.
    assert!(failed >= 4, "requests hung while Redis was down: {failed} in 8 s");
    server.restart();
    wait_event(&rec, EngineEvent::Close(id)).await;
    let fresh = until_ok("a handshake after Redis came back", || a.create_client()).await;
    a.subscribe(&fresh, &ch("/feed")).await.unwrap();
    a.publish(&ch("/feed"), msg(1)).await.unwrap();
    assert_eq!(numbers(a.take_queue(&fresh, Some(&poll())).await.unwrap()), [1]);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_taken_over_after_its_node_dies_gets_everything_after_its_last_take() {
    let server = Arc::new(RedisServer::start());
    let (a, b) = (node(&server).await, node(&server).await);
    start(&a, TIMEOUT);
    start(&b, TIMEOUT);
    let id = a.create_client().await.unwrap();
    a.subscribe(&id, &ch("/feed")).await.unwrap();
    for n in 0..10 {
        b.publish(&ch("/feed"), msg(n)).await.unwrap();
    }
    let taken = take_until(&a, &id, |got| got.len() >= 10).await;
    assert_eq!(taken, (0..10).collect::<Vec<_>>());
    // Published while A holds the client, so routed into A's queue, but never
    // taken: A dies with them (dropped without a shutdown, as in a crash).
    for n in 10..20 {
        b.publish(&ch("/feed"), msg(n)).await.unwrap();
    }
    drop(a);
    for n in 20..30 {
        b.publish(&ch("/feed"), msg(n)).await.unwrap();
    }
    let got = take_until(&b, &id, |got| got.len() >= 20).await;
    assert_eq!(got, (10..30).collect::<Vec<_>>());
    b.shutdown().await;
}

// --- What a Faye client sees, through the server ---

async fn send(server: &Server<RedisEngine>, request: Value) -> Value {
    let batch = decode_batch(request.to_string().as_bytes()).unwrap();
    let info = RequestInfo { transport: "long-polling", ..Default::default() };
    let replies =
        bounded("a request to the server", server.process(batch, &Context::remote(Arc::new(info))))
            .await;
    serde_json::from_slice(&encode_batch(&replies)).unwrap()
}

async fn handshake(server: &Server<RedisEngine>) -> Value {
    let hs = json!({"channel": "/meta/handshake", "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"]});
    send(server, hs).await
}

fn connect(id: &str) -> Value {
    json!({"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling",
           "advice": {"timeout": 0}})
}

fn publish(id: &str, n: usize) -> Value {
    json!({"channel": "/feed", "clientId": id, "data": n})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_server_a_stalled_redis_gives_500_and_a_restarted_one_gives_401_handshake() {
    let redis = Arc::new(RedisServer::start());
    let options = ServerOptions::default().timeout(Duration::from_secs(10));
    let server = Server::new(node(&redis).await, options);
    let id = handshake(&server).await[0]["clientId"].as_str().unwrap().to_owned();
    let sub = json!({"channel": "/meta/subscribe", "clientId": id, "subscription": "/feed"});
    assert_eq!(send(&server, sub).await[0]["successful"], true);

    redis.pause();
    let refused = send(&server, publish(&id, 1)).await;
    // A connect meanwhile is told to retry, not to start a new session.
    let later = send(&server, connect(&id)).await;
    redis.resume();
    assert_eq!(later[0]["error"], "500::Internal server error", "{later}");
    assert_eq!(later[0]["advice"]["reconnect"], "retry", "{later}");
    assert_eq!(later[0]["advice"]["interval"], 1000, "{later}");
    assert_eq!(refused[0]["successful"], false, "{refused}");
    assert_eq!(refused[0]["error"], "500::Internal server error", "{refused}");

    // Back: the same session publishes and receives again, nothing to redo.
    bounded("a publish accepted again", async {
        while send(&server, publish(&id, 2)).await[0]["successful"] != true {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let polled = send(&server, connect(&id)).await;
    assert_eq!(polled[0]["successful"], true, "{polled}");
    assert!(polled.as_array().unwrap().iter().any(|m| m["data"] == 2), "{polled}");

    redis.restart();
    // Until the engine has reconnected a connect may get 500; then the session,
    // lost with Redis's data, gets 401 and the advice to handshake again.
    let reply = bounded("a connect answered after the restart", async {
        loop {
            let reply = send(&server, connect(&id)).await;
            if !reply[0]["error"].as_str().is_some_and(|e| e.starts_with("500:")) {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(reply[0]["successful"], false, "{reply}");
    assert!(reply[0]["error"].as_str().unwrap().starts_with("401:"), "{reply}");
    assert_eq!(reply[0]["advice"]["reconnect"], "handshake", "{reply}");

    let again = handshake(&server).await;
    assert_eq!(again[0]["successful"], true, "{again}");
    server.shutdown().await;
}
