//! The test client against a real faye-rs server: keep-alive, the form encoder
//! as the server decodes it, the upgrade to WebSocket and frames both ways.

use std::time::Duration;

use faye_engine::MemoryEngine;
use faye_http::{FayeOptions, FayeService};
use faye_server::{Server, ServerOptions};
use faye_testkit::http::{HttpConn, Request};
use faye_testkit::ws::{RawWs, frame};
use faye_testkit::{QUICK, form, within};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

fn faye() -> FayeService<MemoryEngine> {
    let server =
        Server::new(MemoryEngine::new(), ServerOptions::default().timeout(Duration::from_secs(1)));
    FayeService::new(server, FayeOptions::default())
}

const HANDSHAKE: &str = r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]"#;

#[tokio::test]
async fn several_requests_share_one_kept_alive_connection() {
    let addr = faye_testkit::server::serve(faye()).await;
    let mut conn = HttpConn::connect(addr).await.unwrap();
    let hs: Value = serde_json::from_str(HANDSHAKE).unwrap();
    let reply = within(QUICK, "a handshake", conn.call(&Request::post("/bayeux").json(&hs))).await;
    let reply = reply.unwrap().json();
    let id = reply[0]["clientId"].as_str().unwrap().to_owned();
    // A form body and a JSON-P query on the same connection.
    let subscribe = json!([{"channel":"/meta/subscribe","clientId":id,"subscription":"/a b"}]);
    let body = form(&[("message", &subscribe.to_string())]);
    let request = Request::post("/bayeux").header("Content-Type", "text/plain").body(body);
    let reply = conn.call(&request).await.unwrap();
    assert_eq!(reply.json()[0]["error"], "405:/a b:Invalid channel");
    let query = form(&[("message", HANDSHAKE), ("jsonp", "cb")]);
    let reply = conn.call(&Request::get(&format!("/bayeux?{query}"))).await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.text().starts_with("/**/cb(["), "{}", reply.text());
}

#[tokio::test]
async fn an_upgraded_connection_speaks_frames() {
    let addr = faye_testkit::server::serve(faye()).await;
    let (head, mut ws) = RawWs::connect(addr, "/bayeux", &[]).await.unwrap();
    assert_eq!(head.status, 101);
    assert_eq!(head.header("sec-websocket-accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    ws.send(frame(true, false, OpCode::Control(Control::Ping), &b"hi"[..])).await.unwrap();
    let pong = within(QUICK, "a pong", ws.read_frame()).await.unwrap();
    assert_eq!(pong.header().opcode, OpCode::Control(Control::Pong));
    assert_eq!(pong.payload(), b"hi");
    // A text message in two fragments.
    let (a, b) = HANDSHAKE.as_bytes().split_at(20);
    ws.send(frame(false, false, OpCode::Data(Data::Text), a.to_vec())).await.unwrap();
    ws.send(frame(true, false, OpCode::Data(Data::Continue), b.to_vec())).await.unwrap();
    let reply = within(QUICK, "a handshake reply", ws.read_frame()).await.unwrap();
    assert_eq!(reply.header().opcode, OpCode::Data(Data::Text));
    assert_eq!(reply.header().mask, None);
    let reply: Value = serde_json::from_slice(reply.payload()).unwrap();
    assert_eq!(reply[0]["successful"], true, "{reply}");
}
