//! Optional publish rate limits: per client, and one allowance for publishes that
//! name no client of this server.

mod common;

use common::{handshake, send};

use std::time::Duration;

use faye_engine::MemoryEngine;
use faye_server::{Server, ServerOptions};
use serde_json::{Value, json};

/// Publishes `n` messages (one request each) as `client`; the errors, in order.
async fn burst(server: &Server<MemoryEngine>, client: Option<&str>, n: usize) -> Vec<Value> {
    let mut errors = Vec::new();
    for i in 0..n {
        let mut publish = json!({"channel": "/chat", "data": i});
        if let Some(client) = client {
            publish["clientId"] = json!(client);
        }
        errors.push(send(server, publish).await[0]["error"].clone());
    }
    errors
}

fn refused(errors: &[Value]) -> usize {
    errors.iter().filter(|e| **e == json!("429:/chat:Too many publishes")).count()
}

#[tokio::test(start_paused = true)]
async fn each_client_has_its_own_allowance() {
    let options = ServerOptions::default().max_publishes_per_second(Some(5));
    let server = Server::new(MemoryEngine::new(), options);
    let (a, b) = (handshake(&server).await, handshake(&server).await);
    let errors = burst(&server, Some(&a), 8).await;
    assert!(errors[..5].iter().all(Value::is_null), "the first five pass: {errors:?}");
    assert_eq!(refused(&errors), 3);
    assert_eq!(refused(&burst(&server, Some(&b), 5).await), 0, "b is not a's neighbour");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(refused(&burst(&server, Some(&a), 5).await), 0, "refilled");
}

#[tokio::test(start_paused = true)]
async fn publishes_naming_no_client_share_one_allowance() {
    let options = ServerOptions::default().max_publishes_per_second(Some(5));
    let server = Server::new(MemoryEngine::new(), options);
    assert_eq!(refused(&burst(&server, None, 3).await), 0);
    let made_up = "1234567890abcdefghijklmnopqrstuv";
    assert_eq!(refused(&burst(&server, Some(made_up), 4).await), 2);
    let client = handshake(&server).await;
    assert_eq!(refused(&burst(&server, Some(&client), 5).await), 0);
}

#[tokio::test(start_paused = true)]
async fn bytes_per_second_too() {
    let options = ServerOptions::default().max_publish_bytes_per_second(Some(100));
    let server = Server::new(MemoryEngine::new(), options);
    let client = handshake(&server).await;
    // Each delivery is about 30 bytes of JSON: three fit in 100.
    assert_eq!(refused(&burst(&server, Some(&client), 5).await), 2);
}

#[tokio::test]
async fn no_limit_by_default() {
    let server = Server::new(MemoryEngine::new(), ServerOptions::default());
    let client = handshake(&server).await;
    assert_eq!(refused(&burst(&server, Some(&client), 1000).await), 0);
}
