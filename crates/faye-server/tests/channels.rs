//! Bounds on channel names: length and segments, on subscribe and on publish.

mod common;

use common::{handshake, send};

use faye_engine::MemoryEngine;
use faye_protocol::{decode_batch, encode_batch};
use faye_server::{Context, RequestInfo, Server, ServerOptions};
use serde_json::{Value, json};

/// `/a/a/.../a` with `n` segments.
fn deep(n: usize) -> String {
    "/a".repeat(n)
}

#[tokio::test]
async fn channels_past_the_segment_cap_are_invalid() {
    let server = Server::new(MemoryEngine::new(), ServerOptions::default().max_channel_segments(4));
    let id = handshake(&server).await;
    for (channel, ok) in
        [(deep(4), true), (deep(5), false), (deep(3) + "/**", true), (deep(4) + "/*", false)]
    {
        let reply = send(
            &server,
            json!({"channel": "/meta/subscribe", "clientId": id, "subscription": channel}),
        )
        .await;
        let want = if ok { Value::Null } else { json!(format!("405:{channel}:Invalid channel")) };
        assert_eq!(reply[0]["error"], want, "subscribe {channel}");
        assert_eq!(reply[0]["successful"], json!(ok));
    }
    for (channel, ok) in [(deep(4), true), (deep(5), false)] {
        let reply = send(&server, json!({"channel": channel, "clientId": id, "data": 1})).await;
        let want = if ok { Value::Null } else { json!(format!("405:{channel}:Invalid channel")) };
        assert_eq!(reply[0]["error"], want, "publish {channel}");
    }
}

#[tokio::test]
async fn the_default_caps_allow_64_segments_and_1024_bytes() {
    let server = Server::new(MemoryEngine::new(), ServerOptions::default());
    let id = handshake(&server).await;
    for (channel, ok) in [
        (deep(64), true),
        (deep(65), false),
        (format!("/{}", "x".repeat(1023)), true),
        (format!("/{}", "x".repeat(1024)), false),
    ] {
        let reply = send(&server, json!({"channel": channel, "clientId": id, "data": 1})).await;
        assert_eq!(reply[0]["successful"], json!(ok), "publish to {} bytes", channel.len());
        if !ok {
            assert_eq!(reply[0]["error"], json!(format!("405:{channel}:Invalid channel")));
        }
    }
}

/// Only a context asked for as trusted may subscribe to `/service/**`; a socket made
/// for a remote client is not trusted, whatever its request looks like.
#[tokio::test]
async fn trust_is_asked_for_by_name() {
    let server = Server::new(MemoryEngine::new(), ServerOptions::default());
    let subscribe = |id: &str| {
        let m = json!({"channel": "/meta/subscribe", "clientId": id, "subscription": "/service/x"});
        decode_batch(m.to_string().as_bytes()).unwrap()
    };
    let id = handshake(&server).await;
    let remote = server.socket(RequestInfo::default());
    assert!(!remote.is_trusted());
    let replies = server.process(subscribe(&id), &Context::on_socket(&remote)).await;
    let reply: Value = serde_json::from_slice(&encode_batch(&replies)).unwrap();
    assert_eq!(reply[0]["error"], json!("403:/service/x:Forbidden channel"));

    let trusted = server.trusted_socket();
    assert!(trusted.is_trusted());
    for ctx in [Context::on_socket(&trusted), Context::trusted()] {
        let replies = server.process(subscribe(&id), &ctx).await;
        let reply: Value = serde_json::from_slice(&encode_batch(&replies)).unwrap();
        assert_eq!(reply[0]["successful"], json!(true), "{ctx:?}");
    }
}
