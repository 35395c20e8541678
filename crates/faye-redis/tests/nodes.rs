//! Several engines ("nodes") on one Redis behave as one engine: what the engine
//! trait lets a server see across processes.

mod common;

use common::{ch, poll, start};

use std::sync::Arc;
use std::time::Duration;

use common::TestEngine;
use faye_engine::{EncodedMessage, Engine, EngineEvent};
use faye_redis::{RedisConfig, RedisEngine};
use faye_testkit::redis::RedisServer;

const TIMEOUT: Duration = Duration::from_secs(60);

fn msg(channel: &str, n: usize) -> EncodedMessage {
    EncodedMessage::from_json(format!(r#"{{"channel":"{channel}","data":{n}}}"#).as_bytes())
}

fn texts(messages: Vec<EncodedMessage>) -> Vec<String> {
    messages.into_iter().map(|m| String::from_utf8(m.json().to_vec()).unwrap()).collect()
}

/// Takes the client's queue on `engine` until it holds `n` messages (another
/// node's entries reach this node's reader a moment after the publish returns).
async fn take_n<E: Engine>(engine: &E, id: &faye_engine::ClientId, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..200 {
        got.extend(texts(engine.take_queue(id, Some(&poll())).await.unwrap()));
        if got.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_made_on_one_node_and_subscribed_on_another_receives_what_either_publishes() {
    let a = TestEngine::fresh().await;
    let b = TestEngine::on(a.server.clone()).await;
    let (rec_a, rec_b) = (start(&a, TIMEOUT), start(&b, TIMEOUT));

    let id = a.create_client().await.unwrap();
    assert!(b.client_exists(&id).await.unwrap(), "sessions are seen on every node");
    b.subscribe(&id, &ch("/chat/*")).await.unwrap();

    // Published on A right after B acknowledged the subscription: A, which holds
    // the client, has applied it first (the bus orders both).
    a.publish(&ch("/chat/room"), msg("/chat/room", 1)).await.unwrap();
    assert_eq!(
        texts(a.take_queue(&id, Some(&poll())).await.unwrap()),
        [r#"{"channel":"/chat/room","data":1}"#]
    );
    assert!(rec_a.mail().contains(&id), "the node holding the client is told it has mail");

    // The client's next connect lands on B: B takes it over and finds exactly
    // what A had not handed out yet.
    a.publish(&ch("/chat/room"), msg("/chat/room", 2)).await.unwrap();
    b.publish(&ch("/chat/other"), msg("/chat/other", 3)).await.unwrap();
    let got = take_n(&b, &id, 2).await;
    assert_eq!(
        got,
        [r#"{"channel":"/chat/room","data":2}"#, r#"{"channel":"/chat/other","data":3}"#]
    );

    // Destroyed on A while B holds it: B is told to close its connection.
    a.destroy_client(&id).await.unwrap();
    assert!(!b.client_exists(&id).await.unwrap());
    for _ in 0..200 {
        if rec_b.events().contains(&EngineEvent::Close(id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(rec_b.events().contains(&EngineEvent::Close(id)), "{:?}", rec_b.events());
    assert!(rec_a.events().ends_with(&[
        EngineEvent::Unsubscribe(id, "/chat/*".into()),
        EngineEvent::Disconnect(id),
        EngineEvent::Close(id)
    ]));
    assert!(a.take_queue(&id, Some(&poll())).await.unwrap().is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_every_poll_lands_on_another_node_loses_nothing_and_gets_nothing_twice() {
    polls_round_robin(4096).await;
}

/// With a ring of 8 entries, a node taking the client over reads what it missed
/// from Redis (`XRANGE` from the client's cursor) instead of from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_catches_a_moving_client_up_from_redis_when_its_ring_is_too_short() {
    polls_round_robin(8).await;
}

async fn polls_round_robin(ring: usize) {
    let server = Arc::new(RedisServer::start());
    let node = || TestEngine::configured(server.clone(), |c| c.ring_capacity(ring));
    let (a, b, c) = (node().await, node().await, node().await);
    let nodes = [&a, &b, &c];
    for node in nodes {
        start(node, TIMEOUT);
    }
    let id = a.create_client().await.unwrap();
    a.subscribe(&id, &ch("/feed")).await.unwrap();

    let total = 300;
    let mut got = Vec::new();
    for n in 0..total {
        // Publishers on every node; polls round-robin over the nodes.
        nodes[n % 3].publish(&ch("/feed"), msg("/feed", n)).await.unwrap();
        if n % 7 == 0 {
            got.extend(texts(nodes[(n / 7) % 3].take_queue(&id, Some(&poll())).await.unwrap()));
        }
    }
    let last = nodes[1].take_queue(&id, Some(&poll())).await.unwrap();
    got.extend(texts(last));
    let rest = take_n(nodes[2], &id, total - got.len()).await;
    got.extend(rest);
    let want: Vec<String> =
        (0..total).map(|n| format!(r#"{{"channel":"/feed","data":{n}}}"#)).collect();
    assert_eq!(got, want);
    let xranges = server.command_calls().into_iter().find(|(name, _)| name == "xrange");
    if ring < 16 {
        assert!(xranges.is_some_and(|(_, calls)| calls > 0), "the catch-up read from Redis ran");
    }
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_unread_history_expired_is_told_to_handshake_again() {
    let server = Arc::new(RedisServer::start());
    let connect = || async {
        let config = RedisConfig::new(server.url()).retention(Duration::from_millis(400));
        RedisEngine::connect(config).await.unwrap()
    };
    let (a, b) = (connect().await, connect().await);
    start(&a, TIMEOUT);
    let rec_b = start(&b, TIMEOUT);
    let id = a.create_client().await.unwrap();
    a.subscribe(&id, &ch("/x")).await.unwrap();
    a.publish(&ch("/x"), msg("/x", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The client never read on A; its next connect lands on B after the bus
    // dropped what it missed: its session ends rather than silently skipping.
    assert!(b.take_queue(&id, Some(&poll())).await.unwrap().is_empty());
    assert!(!a.client_exists(&id).await.unwrap());
    assert!(rec_b.events().contains(&EngineEvent::Disconnect(id)));
    a.shutdown().await;
    b.shutdown().await;
}

/// A client made while the bus is empty (or quiet) has a cursor whose entry is
/// old (`0-0` here); it read everything as of its creation, so its first move to
/// another node must not take it for one whose history expired. (Found by
/// interop/cluster.test.mjs run on its own: the moving client was destroyed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_made_on_a_quiet_bus_can_move_to_another_node() {
    let server = Arc::new(RedisServer::start());
    let (a, b) = (TestEngine::on(server.clone()).await, TestEngine::on(server.clone()).await);
    start(&a, TIMEOUT);
    let rec_b = start(&b, TIMEOUT);
    let id = a.create_client().await.unwrap();
    a.subscribe(&id, &ch("/x")).await.unwrap();
    assert!(b.take_queue(&id, Some(&poll())).await.unwrap().is_empty());
    assert!(b.client_exists(&id).await.unwrap(), "the move ended the session");
    assert!(!rec_b.events().contains(&EngineEvent::Disconnect(id)));
    a.publish(&ch("/x"), msg("/x", 1)).await.unwrap();
    assert_eq!(take_n(&b, &id, 1).await, [r#"{"channel":"/x","data":1}"#]);
}

/// A node still holding a client it has not yet seen move away (its bus reader
/// lags behind a takeover) must not hand out the queue it kept: the node the
/// client moved to delivered it already. Publishers flood the bus from two
/// nodes so that the readers lag, while the client polls each node in turn as
/// fast as it can; every message must come exactly once, in each publisher's
/// order. (Found by interop/cluster.test.mjs: a node's stale queue was handed
/// out again, and its cursor written back over a newer one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_missed_a_takeover_does_not_hand_out_its_stale_queue() {
    let server = Arc::new(RedisServer::start());
    let (a, b, c) = (
        TestEngine::on(server.clone()).await,
        TestEngine::on(server.clone()).await,
        TestEngine::on(server.clone()).await,
    );
    let nodes = [a.clone(), b.clone(), c.clone()];
    for node in &nodes {
        start(node, TIMEOUT);
    }
    a.publish(&ch("/warm-up"), msg("/warm-up", 0)).await.unwrap();
    let id = a.create_client().await.unwrap();
    a.subscribe(&id, &ch("/flood")).await.unwrap();

    const PER_PUBLISHER: usize = 4000;
    let publishers: Vec<_> = [b.clone(), c.clone()]
        .into_iter()
        .enumerate()
        .map(|(p, node)| {
            tokio::spawn(async move {
                for n in 0..PER_PUBLISHER {
                    let json = format!(r#"{{"channel":"/flood","data":[{p},{n}]}}"#);
                    let message = EncodedMessage::from_json(json.as_bytes());
                    node.publish(&ch("/flood"), message).await.unwrap();
                }
            })
        })
        .collect();

    let mut got: Vec<(usize, usize)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut turn = 0;
    while got.len() < 2 * PER_PUBLISHER && tokio::time::Instant::now() < deadline {
        got.extend(
            texts(nodes[turn % 3].take_queue(&id, Some(&poll())).await.unwrap())
                .iter()
                .map(|m| numbered(m)),
        );
        turn += 1;
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    // Anything still arriving is a duplicate.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for node in &nodes {
        got.extend(
            texts(node.take_queue(&id, Some(&poll())).await.unwrap()).iter().map(|m| numbered(m)),
        );
    }
    for p in 0..2 {
        let seen: Vec<usize> = got.iter().filter(|(q, _)| *q == p).map(|(_, n)| *n).collect();
        let wrong = seen.iter().enumerate().position(|(k, n)| *n != k);
        assert_eq!(
            wrong,
            None,
            "publisher {p}, {} polls: around the first wrong position: {:?}",
            turn,
            wrong.map(|w| &seen[w.saturating_sub(3)..(w + 5).min(seen.len())])
        );
        assert_eq!(seen.len(), PER_PUBLISHER, "publisher {p}'s messages, {turn} polls");
    }
    for node in &nodes {
        node.shutdown().await;
    }
}

/// `(publisher, n)` from `{"channel":"/flood","data":[publisher,n]}`.
fn numbered(json: &str) -> (usize, usize) {
    let data = json.split(r#""data":["#).nth(1).and_then(|rest| rest.split(']').next());
    let (p, n) = data.and_then(|d| d.split_once(',')).unwrap_or_else(|| panic!("{json}"));
    (p.parse().unwrap(), n.parse().unwrap())
}

/// A long-poll answer lost with the node that sent it (killed mid-response) is
/// handed out again by the node the client's retry reaches: Faye's client resends
/// a failed connect with the same id. A connect with a new id (the client got its
/// answer) is not given it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lost_with_its_node_is_handed_out_again_to_the_same_connect() {
    let a = TestEngine::fresh().await;
    let (b, c) = (TestEngine::on(a.server.clone()).await, TestEngine::on(a.server.clone()).await);
    for node in [&a, &b, &c] {
        start(node, TIMEOUT);
    }
    let id = a.create_client().await.unwrap();
    a.subscribe(&id, &ch("/x")).await.unwrap();
    a.publish(&ch("/x"), msg("/x", 1)).await.unwrap();
    a.publish(&ch("/x"), msg("/x", 2)).await.unwrap();
    assert_eq!(texts(a.take_queue(&id, Some("5")).await.unwrap()).len(), 2);
    // A dies before its answer to connect "5" reaches the client.
    drop(a);
    b.publish(&ch("/x"), msg("/x", 3)).await.unwrap();
    let want = |ns: &[usize]| -> Vec<String> {
        ns.iter().map(|n| format!(r#"{{"channel":"/x","data":{n}}}"#)).collect()
    };
    // The client resends connect "5"; it lands on B: 1 and 2 again, then 3.
    assert_eq!(texts(b.take_queue(&id, Some("5")).await.unwrap()), want(&[1, 2, 3]));
    // B's answer arrived: the next connect, "6", lands on C, which hands out only
    // what is new.
    c.publish(&ch("/x"), msg("/x", 4)).await.unwrap();
    assert_eq!(texts(c.take_queue(&id, Some("6")).await.unwrap()), want(&[4]));
    // And the same on one node: "7"'s answer lost on the way, "7" again gets it.
    c.publish(&ch("/x"), msg("/x", 5)).await.unwrap();
    assert_eq!(texts(c.take_queue(&id, Some("7")).await.unwrap()), want(&[5]));
    c.publish(&ch("/x"), msg("/x", 6)).await.unwrap();
    assert_eq!(texts(c.take_queue(&id, Some("7")).await.unwrap()), want(&[5, 6]));
    assert!(c.take_queue(&id, Some("8")).await.unwrap().is_empty());
    b.shutdown().await;
    c.shutdown().await;
}

/// Every node reports every client's monitoring events, whichever node did the
/// operation (each once), in the order they happened; expiry too, once per node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reports_every_clients_events() {
    let a = TestEngine::fresh().await;
    let b = TestEngine::on(a.server.clone()).await;
    let timeout = Duration::from_millis(300);
    let (rec_a, rec_b) = (start(&a, timeout), start(&b, timeout));
    let one = a.create_client().await.unwrap();
    a.subscribe(&one, &ch("/x")).await.unwrap();
    b.subscribe(&one, &ch("/y/*")).await.unwrap();
    a.unsubscribe(&one, &ch("/x")).await.unwrap();
    b.destroy_client(&one).await.unwrap();
    let want = [
        EngineEvent::Handshake(one),
        EngineEvent::Subscribe(one, "/x".into()),
        EngineEvent::Subscribe(one, "/y/*".into()),
        EngineEvent::Unsubscribe(one, "/x".into()),
        EngineEvent::Unsubscribe(one, "/y/*".into()),
        EngineEvent::Disconnect(one),
        EngineEvent::Close(one),
    ];
    // A client that expires (never pinged) is reported by the collector's node
    // and, through the bus, by the other.
    let two = b.create_client().await.unwrap();
    b.subscribe(&two, &ch("/z")).await.unwrap();
    let expired = [
        EngineEvent::Handshake(two),
        EngineEvent::Subscribe(two, "/z".into()),
        EngineEvent::Unsubscribe(two, "/z".into()),
        EngineEvent::Disconnect(two),
        EngineEvent::Close(two),
    ];
    let of = |rec: &faye_engine::testing::Recorder, id| -> Vec<EngineEvent> {
        rec.events().into_iter().filter(|e| event_client(e) == id).collect()
    };
    for _ in 0..300 {
        if [&rec_a, &rec_b].iter().all(|r| of(r, one).len() >= 7 && of(r, two).len() >= 5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (name, rec) in [("A", &rec_a), ("B", &rec_b)] {
        assert_eq!(of(rec, one), want, "node {name}");
        assert_eq!(of(rec, two), expired, "node {name}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

fn event_client(event: &EngineEvent) -> faye_engine::ClientId {
    match event {
        EngineEvent::Handshake(id)
        | EngineEvent::Subscribe(id, _)
        | EngineEvent::Unsubscribe(id, _)
        | EngineEvent::Disconnect(id)
        | EngineEvent::Close(id) => *id,
        _ => unreachable!("an event this test does not know: {event:?}"),
    }
}

/// What a node pushes down a client's socket is recorded in Redis within a
/// moment, in batches (not one write per push), so a client that then moves to
/// another node is not given it again; the commands are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_pushes_are_recorded_in_batches() {
    let a = TestEngine::fresh().await;
    let b = TestEngine::on(a.server.clone()).await;
    start(&a, TIMEOUT);
    start(&b, TIMEOUT);
    let clients: Vec<_> = subscribers(&a, 20).await;
    let before = a.server.command_calls();
    for n in 1..=5 {
        a.publish(&ch("/x"), msg("/x", n)).await.unwrap();
        for id in &clients {
            // Each client's socket takes each message as it arrives.
            assert_eq!(texts(a.take_queue(id, None).await.unwrap()).len(), 1);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = |name: &str, calls: &[(String, u64)]| {
        calls.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c)
    };
    let after = a.server.command_calls();
    let scripts = calls("evalsha", &after) - calls("evalsha", &before);
    assert!(scripts >= 20, "every client's cursor was recorded ({scripts} scripts)");
    assert!(scripts < 100, "not one write per push: {scripts} scripts for 100 pushes");
    // Each client's next connect lands on B: nothing again, and what is new.
    a.publish(&ch("/x"), msg("/x", 6)).await.unwrap();
    for id in &clients {
        assert_eq!(take_n(&b, id, 1).await, [r#"{"channel":"/x","data":6}"#]);
    }
    a.shutdown().await;
    b.shutdown().await;
}

async fn subscribers(engine: &TestEngine, n: usize) -> Vec<faye_engine::ClientId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = engine.create_client().await.unwrap();
        engine.subscribe(&id, &ch("/x")).await.unwrap();
        ids.push(id);
    }
    ids
}
