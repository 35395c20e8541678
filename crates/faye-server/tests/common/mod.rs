//! What the server's tests do over and over: send a batch as a remote
//! long-polling client would, and handshake.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use faye_engine::MemoryEngine;
use faye_protocol::{decode_batch, encode_batch};
use faye_server::{Context, RequestInfo, Server};
use serde_json::{Value, json};

/// The replies to `request` (a message or a batch) from a remote long-polling
/// client, as the JSON the client would read.
pub async fn send(server: &Server<MemoryEngine>, request: Value) -> Value {
    let batch = decode_batch(request.to_string().as_bytes()).unwrap();
    let info = RequestInfo { transport: "long-polling", ..Default::default() };
    let replies = server.process(batch, &Context::remote(Arc::new(info))).await;
    serde_json::from_slice(&encode_batch(&replies)).unwrap()
}

/// A new long-polling client's id.
pub async fn handshake(server: &Server<MemoryEngine>) -> String {
    let hs = json!({"channel": "/meta/handshake", "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"]});
    send(server, hs).await[0]["clientId"].as_str().unwrap().to_owned()
}
