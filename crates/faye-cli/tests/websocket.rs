//! Black-box WebSocket tests against the real `faye` binary. Golden replies
//! are hand-written from `docs/protocol.md` (§1.7, §1.10, §4.5) and the
//! documented faye-rs deviations (batched pushes, no binding of unknown
//! clientIds, close 1009 past the size limit).

mod common;

use std::time::{Duration, Instant};

use common::{Server, connection_types, redact, retry_advice};
use faye_testkit::QUICK;
use faye_testkit::ws::WsEvent;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn ws_connect(cid: &str, id: &str) -> Value {
    json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "websocket", "id": id}])
}

fn ws_connect_ok(srv: &Server, cid: &str, id: &str) -> Value {
    json!({
        "id": id,
        "clientId": cid,
        "channel": "/meta/connect",
        "successful": true,
        "advice": retry_advice(srv.timeout),
    })
}

fn is_connect_reply(msg: &Value) -> bool {
    msg["channel"] == json!("/meta/connect") && msg.get("successful").is_some()
}

#[tokio::test]
async fn deliveries_are_pushed_over_the_socket_before_the_held_connect_reply() {
    let srv = Server::start(2).await;
    let cid = srv.handshake().await;
    let mut ws = srv.ws().await;
    assert_eq!(
        ws.call(&json!([{"channel": "/meta/subscribe", "clientId": cid,
                         "subscription": "/ws/*", "id": "s"}]))
            .await,
        json!([{"id": "s", "clientId": cid, "channel": "/meta/subscribe", "successful": true,
                "subscription": "/ws/*"}])
    );
    // Queued before the socket is bound: pushed when the connect arrives.
    srv.publish_message(json!({"channel": "/ws/early", "data": "queued", "id": "e"})).await;

    let started = Instant::now();
    ws.send_json(&ws_connect(&cid, "c1")).await;

    // Publishers: another HTTP client (with a clientId to be stripped) and
    // another WebSocket without any handshake.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = srv.handshake().await;
    srv.publish_message(json!({"channel": "/ws/a", "data": {"k": "v", "u": "\u{e9}\u{1F600}"},
                               "clientId": other, "id": "p1", "ext": {"e": 1}}))
        .await;
    let mut publisher = srv.ws().await;
    assert_eq!(
        publisher.call(&json!([{"channel": "/ws/b", "data": [1, 2], "id": "p2"}])).await,
        json!([{"id": "p2", "channel": "/ws/b", "successful": true}])
    );
    publisher.close().await;

    // Collect frames until the connect reply.
    let mut pushed = Vec::new();
    let mut first_push_at = None;
    let connect_reply = loop {
        let frame = ws.recv_json(Duration::from_secs(srv.timeout + 3)).await;
        let msgs = frame.as_array().expect("array").clone();
        assert!(!msgs.is_empty(), "empty frame");
        if msgs.iter().any(is_connect_reply) {
            break (frame, started.elapsed());
        }
        first_push_at.get_or_insert(started.elapsed());
        pushed.extend(msgs);
    };
    assert_eq!(
        pushed,
        vec![
            json!({"channel": "/ws/early", "data": "queued", "id": "e"}),
            json!({"channel": "/ws/a", "data": {"k": "v", "u": "\u{e9}\u{1F600}"}, "id": "p1",
                   "ext": {"e": 1}}),
            json!({"channel": "/ws/b", "data": [1, 2], "id": "p2"}),
        ],
        "pushed deliveries (clientId must be stripped)"
    );
    let first_push_at = first_push_at.expect("a push");
    assert!(first_push_at < Duration::from_millis(1000), "first push at {first_push_at:?}");
    let (frame, reply_at) = connect_reply;
    assert_eq!(frame, json!([ws_connect_ok(&srv, &cid, "c1")]));
    // §4.5: the reply is held for the timeout (2 s) as a heartbeat.
    assert!(
        reply_at >= Duration::from_millis(1700) && reply_at < Duration::from_millis(4000),
        "connect reply at {reply_at:?} with a 2 s timeout"
    );

    // The socket stays bound: the next connect keeps receiving pushes.
    ws.send_json(&ws_connect(&cid, "c2")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    srv.publish("/ws/late", json!("again")).await;
    assert_eq!(ws.recv_json(QUICK).await, json!([{"channel": "/ws/late", "data": "again"}]));
    assert_eq!(
        ws.recv_json(Duration::from_secs(srv.timeout + 3)).await,
        json!([ws_connect_ok(&srv, &cid, "c2")])
    );
}

#[tokio::test]
async fn a_connect_frame_for_an_unknown_client_gets_401_and_no_deliveries() {
    // A socket that binds no client is closed after the timeout: this one must still
    // be open for the handshake at the end.
    let srv = Server::start(3).await;
    // A client that existed, was subscribed, and is now gone.
    let gone = srv.handshake().await;
    srv.subscribe(&gone, json!("/secret")).await;
    let bye = srv.bayeux(&json!({"channel": "/meta/disconnect", "clientId": gone})).await;
    assert_eq!(bye[0]["successful"], json!(true), "{bye}");

    let mut ws = srv.ws().await;
    for cid in ["fakeclientid", gone.as_str()] {
        let started = Instant::now();
        let reply = ws.call(&ws_connect(cid, "x")).await;
        // §1.7 connect failure: no clientId, handshake advice, not held.
        assert_eq!(
            reply,
            json!([{"id": "x", "channel": "/meta/connect", "successful": false,
                    "error": format!("401:{cid}:Unknown client"),
                    "advice": {"reconnect": "handshake"}}])
        );
        assert!(started.elapsed() < Duration::from_millis(800));
    }
    // Deviation: the socket was not bound, so nothing is pushed.
    srv.publish("/secret", json!("nope")).await;
    if let Some(event) = ws.next_event(Duration::from_millis(1000)).await {
        panic!("the unbound socket received {event:?}");
    }
    // The socket still works: a handshake over it succeeds.
    let reply = ws
        .call(&json!([{"channel": "/meta/handshake", "version": "1.0",
                       "supportedConnectionTypes": ["websocket"]}]))
        .await;
    assert_eq!(reply[0]["successful"], json!(true), "{reply}");
}

#[tokio::test]
async fn an_oversize_websocket_message_closes_the_socket_with_1009() {
    let srv = Server::start_with(1, &["--max-request-bytes", "1024"]).await;
    let mut ws = srv.ws().await;
    // Under the limit, and exactly at it: fine.
    assert_eq!(
        ws.call(&json!([{"channel": "/small", "data": "x".repeat(100)}])).await,
        json!([{"channel": "/small", "successful": true}])
    );
    let base = json!([{"channel": "/small", "data": ""}]).to_string().len();
    let exact = json!([{"channel": "/small", "data": "x".repeat(1024 - base)}]);
    assert_eq!(exact.to_string().len(), 1024);
    assert_eq!(ws.call(&exact).await, json!([{"channel": "/small", "successful": true}]));
    let big = json!([{"channel": "/big", "data": "x".repeat(4096)}]);
    ws.send_json(&big).await;
    match ws.next_event(QUICK).await {
        Some(WsEvent::Close(Some(frame))) => {
            assert_eq!(frame.code, CloseCode::Size, "close frame {frame:?}");
            assert_eq!(u16::from(frame.code), 1009);
        }
        other => panic!("expected a close frame with code 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn a_non_json_frame_does_not_kill_the_socket() {
    let srv = Server::start(1).await;
    let mut ws = srv.ws().await;
    // §4.5: Faye logs and ignores unparseable frames; ours may reply or ignore.
    for junk in ["this is not json", "{", "42", "\"a string\""] {
        ws.send_text(junk).await;
    }
    ws.send_json(&json!([{"channel": "/meta/handshake", "version": "1.0",
                          "supportedConnectionTypes": ["websocket"], "id": "after"}]))
        .await;
    let deadline = Instant::now() + QUICK;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.next_event(left).await {
            Some(WsEvent::Json(v)) if v[0]["id"] == json!("after") => {
                assert_eq!(
                    redact(&v),
                    json!([{"id": "after", "channel": "/meta/handshake", "successful": true,
                            "version": "1.0", "supportedConnectionTypes": connection_types(),
                            "clientId": "[clientId]", "advice": retry_advice(1)}])
                );
                break;
            }
            Some(WsEvent::Json(_) | WsEvent::Text(_) | WsEvent::Binary(_)) => {}
            Some(other) => panic!("the socket died after a non-JSON frame: {other:?}"),
            None => panic!("no handshake reply after the non-JSON frames"),
        }
    }
}

#[tokio::test]
async fn a_batch_in_a_binary_frame_is_read_as_text_is() {
    let srv = Server::start(1).await;
    let mut ws = srv.ws().await;
    let handshake = json!([{"channel": "/meta/handshake", "version": "1.0",
                            "supportedConnectionTypes": ["websocket"], "id": "bin"}]);
    ws.send_binary(handshake.to_string().into_bytes()).await;
    match ws.next_event(QUICK).await {
        // The reply is a text frame, as to any frame.
        Some(WsEvent::Json(v)) => assert_eq!(
            redact(&v),
            json!([{"id": "bin", "channel": "/meta/handshake", "successful": true,
                    "version": "1.0", "supportedConnectionTypes": connection_types(),
                    "clientId": "[clientId]", "advice": retry_advice(1)}])
        ),
        other => panic!("no text reply to a binary handshake: {other:?}"),
    }
}

#[tokio::test]
async fn each_frame_gets_all_its_replies_in_one_array() {
    let srv = Server::start(1).await;
    let mut ws = srv.ws().await;
    // §4.5: `[]` is answered with `[]`; a single object is accepted.
    assert_eq!(ws.call(&json!([])).await, json!([]));
    let reply = ws
        .call(&json!({"channel": "/meta/handshake", "version": "1.0",
                      "supportedConnectionTypes": ["websocket"], "id": 1}))
        .await;
    assert_eq!(
        redact(&reply),
        json!([{"id": 1, "channel": "/meta/handshake", "successful": true, "version": "1.0",
                "supportedConnectionTypes": connection_types(), "clientId": "[clientId]",
                "advice": retry_advice(1)}])
    );
    let cid = reply[0]["clientId"].as_str().expect("clientId").to_owned();
    assert_eq!(
        ws.call(&json!([
            {"channel": "/meta/subscribe", "clientId": cid, "subscription": ["/f/1", "/f/2"]},
            {"channel": "/f/1", "data": 1},
            {"channel": "/meta/bogus"},
            {"channel": "/meta/subscribe", "clientId": cid, "subscription": "foo"},
        ]))
        .await,
        json!([
            {"clientId": cid, "channel": "/meta/subscribe", "successful": true,
             "subscription": ["/f/1", "/f/2"]},
            {"channel": "/f/1", "successful": true},
            {"channel": "/meta/bogus", "successful": false,
             "error": "403:/meta/bogus:Forbidden channel"},
            {"clientId": cid, "channel": "/meta/subscribe", "successful": false,
             "error": "405:foo:Invalid channel", "subscription": "foo"},
        ])
    );
}

#[tokio::test]
async fn a_disconnect_over_websocket_releases_the_held_connect_and_closes_the_socket() {
    let srv = Server::start(3).await;
    let cid = srv.handshake().await;
    let mut ws = srv.ws().await;
    ws.send_json(&ws_connect(&cid, "held")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    ws.send_json(&json!([{"channel": "/meta/disconnect", "clientId": cid, "id": "bye"}])).await;
    // §1.7 disconnect, observed over WebSocket: the disconnect reply, the
    // pending connect reply, then the server closes the socket.
    let mut replies = Vec::new();
    let closed = loop {
        match ws.next_event(Duration::from_secs(2)).await {
            Some(WsEvent::Json(Value::Array(msgs))) => replies.extend(msgs),
            Some(WsEvent::Close(_) | WsEvent::End(_)) => break true,
            Some(other) => panic!("unexpected {other:?}"),
            None => break false,
        }
    };
    let disconnect_reply =
        json!({"id": "bye", "clientId": cid, "channel": "/meta/disconnect", "successful": true});
    let connect_reply = ws_connect_ok(&srv, &cid, "held");
    assert!(replies.contains(&disconnect_reply), "no disconnect reply; got {replies:?}");
    assert!(replies.contains(&connect_reply), "the held connect was not released; got {replies:?}");
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(closed, "the server did not close the socket of the destroyed session within 2 s");
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
async fn a_frame_with_subscribe_and_connect_is_answered_in_one_frame_after_the_hold() {
    // §1.4 observed: both replies together after the timeout; the subscription
    // takes effect at once (deliveries are pushed meanwhile).
    let srv = Server::start(2).await;
    let cid = srv.handshake().await;
    let mut ws = srv.ws().await;
    let started = Instant::now();
    ws.send_json(&json!([
        {"channel": "/meta/subscribe", "clientId": cid, "subscription": "/sc", "id": "s"},
        {"channel": "/meta/connect", "clientId": cid, "connectionType": "websocket", "id": "c"},
    ]))
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.publish("/sc", json!("pushed")).await;
    assert_eq!(ws.recv_json(QUICK).await, json!([{"channel": "/sc", "data": "pushed"}]));
    let frame = ws.recv_json(Duration::from_secs(srv.timeout + 3)).await;
    let took = started.elapsed();
    assert_eq!(
        frame,
        json!([
            {"id": "s", "clientId": cid, "channel": "/meta/subscribe", "successful": true,
             "subscription": "/sc"},
            ws_connect_ok(&srv, &cid, "c"),
        ])
    );
    assert!(
        took >= Duration::from_millis(1700) && took < Duration::from_millis(4000),
        "answered after {took:?} with a 2 s timeout"
    );
}

#[tokio::test]
async fn messages_published_after_the_socket_closes_wait_for_the_next_connect() {
    // §4.5: closing the socket ends the connection, not the session.
    let srv = Server::start(2).await;
    let cid = srv.handshake().await;
    srv.subscribe(&cid, json!("/gone")).await;
    let mut ws = srv.ws().await;
    ws.send_json(&ws_connect(&cid, "c")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.publish("/gone", json!("later")).await;
    assert_eq!(
        srv.connect_now(&cid).await,
        json!([srv.connect_ok(&cid), {"channel": "/gone", "data": "later"}])
    );
}

#[tokio::test]
async fn a_websocket_connect_takes_over_from_a_held_long_poll_connect() {
    // The Faye client's upgrade path: long-poll first, then WebSocket. The held
    // long-poll connect is answered at once (deviation: not orphaned) and later
    // deliveries go down the socket.
    let srv = Server::start(3).await;
    let cid = srv.handshake().await;
    srv.subscribe(&cid, json!("/up")).await;
    let mut ws = srv.ws().await;
    let ((poll, poll_took), ()) =
        tokio::join!(srv.connect_with(&cid, json!({"id": "lp"})), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            ws.send_json(&ws_connect(&cid, "ws")).await;
        });
    assert!(
        poll_took < Duration::from_millis(1500),
        "the held long-poll connect was answered only after {poll_took:?}"
    );
    let replies = poll.as_array().expect("array");
    assert_eq!(replies.len(), 1, "{poll}");
    assert_eq!(replies[0]["id"], json!("lp"), "{poll}");
    assert_eq!(replies[0]["successful"], json!(true), "{poll}");
    srv.publish("/up", json!("via socket")).await;
    assert_eq!(ws.recv_json(QUICK).await, json!([{"channel": "/up", "data": "via socket"}]));
}

#[tokio::test]
async fn a_newer_connect_on_the_socket_answers_the_held_one_at_once_and_holds_itself() {
    // A held connect is kept on the socket as data (not as a future): a second
    // connect releases the first's reply at once, then is held for its own hold,
    // and deliveries reach the socket meanwhile.
    let srv = Server::start(2).await;
    let cid = srv.handshake().await;
    let mut ws = srv.ws().await;
    ws.call(&json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/n",
                     "id": "s"}]))
        .await;
    ws.send_json(&ws_connect(&cid, "first")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    ws.send_json(&ws_connect(&cid, "second")).await;
    assert_eq!(ws.recv_json(QUICK).await, json!([ws_connect_ok(&srv, &cid, "first")]));
    assert!(started.elapsed() < Duration::from_millis(1000), "took {:?}", started.elapsed());
    srv.publish("/n", json!("while held")).await;
    assert_eq!(ws.recv_json(QUICK).await, json!([{"channel": "/n", "data": "while held"}]));
    let second = ws.recv_json(Duration::from_secs(srv.timeout + 3)).await;
    let took = started.elapsed();
    assert_eq!(second, json!([ws_connect_ok(&srv, &cid, "second")]));
    assert!(
        took >= Duration::from_secs(srv.timeout) - Duration::from_millis(100),
        "the second connect was answered after {took:?}, not held for the timeout"
    );
    // Nothing else was sent: no empty frame for the parked connects.
    assert!(ws.next_event(Duration::from_millis(300)).await.is_none());
}
