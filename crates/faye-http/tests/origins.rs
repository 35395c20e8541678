//! The origin allow-list on the transports a browser reaches without CORS
//! guarding the reply: the WebSocket upgrade and EventSource (by `Origin`) and
//! JSON-P (by `Origin`, else `Referer`). CORS itself is in `transports.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use faye_engine::MemoryEngine;
use faye_http::{FayeOptions, FayeService};
use faye_server::{Server, ServerOptions};
use faye_testkit::http::{HttpConn, Request, Response, fetch};
use faye_testkit::ws::{RawWs, frame};
use faye_testkit::{QUICK, form, within};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const GOOD: &str = "https://good.example";
const EVIL: &str = "https://evil.example";

async fn start(options: FayeOptions) -> SocketAddr {
    let server =
        Server::new(MemoryEngine::new(), ServerOptions::default().timeout(Duration::from_secs(2)));
    faye_testkit::server::serve(FayeService::new(server, options)).await
}

/// A server allowing only [`GOOD`] (and a second origin, so that the list is
/// searched rather than compared with one entry).
async fn restricted() -> SocketAddr {
    start(FayeOptions::default().allowed_origins(Some(["http://localhost:3000", GOOD]))).await
}

/// Asserts Faye-rs's refusal: 403, `text/plain`, and a reason naming `what`.
fn assert_refused(reply: &Response, what: &str) {
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("text/plain; charset=utf-8"), "{reply:?}");
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "{reply:?}");
    let body = reply.body_str();
    assert!(body.starts_with("Forbidden: ") && body.contains(what), "{body:?}");
}

// --- WebSocket ---

/// Asks to upgrade `/bayeux` with `headers` added: the socket, or the refusal.
async fn open_socket(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<RawWs, Response> {
    let mut conn = HttpConn::connect(addr).await.unwrap();
    let request = Request::get("/bayeux")
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Version", "13")
        .headers(headers);
    conn.send(&request).await.unwrap();
    let head = within(QUICK, "the upgrade's answer", conn.read_head()).await.unwrap();
    if head.status != 101 {
        return Err(within(QUICK, "the refusal's body", conn.read_body(head)).await.unwrap());
    }
    Ok(conn.into_websocket())
}

/// Sends `messages` in one text frame and returns the next frame's JSON.
async fn call(ws: &mut RawWs, messages: Value) -> Value {
    ws.send(frame(true, false, OpCode::Data(Data::Text), messages.to_string())).await.unwrap();
    next_json(ws).await
}

async fn next_json(ws: &mut RawWs) -> Value {
    let frame = within(QUICK, "a frame", ws.read_frame()).await.unwrap();
    serde_json::from_slice(frame.payload()).unwrap()
}

fn ws_handshake() -> Value {
    json!([{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}])
}

/// [`open_socket`], and shows an accepted socket works: a handshake over it
/// succeeds.
async fn upgrade(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<(), Response> {
    let mut ws = open_socket(addr, headers).await?;
    let reply = call(&mut ws, ws_handshake()).await;
    assert_eq!(reply[0]["successful"], true, "{reply}");
    Ok(())
}

#[tokio::test]
async fn a_websocket_from_an_allowed_origin_opens() {
    let addr = restricted().await;
    upgrade(addr, &[("Origin", GOOD)]).await.unwrap();
    upgrade(addr, &[("Origin", "http://localhost:3000")]).await.unwrap();
}

#[tokio::test]
async fn a_websocket_from_a_foreign_origin_is_refused_with_a_reason() {
    let addr = restricted().await;
    let refused = upgrade(addr, &[("Origin", EVIL)]).await.unwrap_err();
    assert_refused(&refused, "origin https://evil.example is not in the allowed origins");
    assert_eq!(refused.header("upgrade"), None);
    // Origins are compared exactly, as browsers write them.
    for near in ["https://good.example:8443", "http://good.example", "https://good.example.evil"] {
        let refused = upgrade(addr, &[("Origin", near)]).await.unwrap_err();
        assert_refused(&refused, near);
    }
}

#[tokio::test]
async fn a_websocket_from_an_opaque_origin_is_refused_even_if_listed() {
    let addr = start(FayeOptions::default().allowed_origins(Some([GOOD, "null"]))).await;
    let refused = upgrade(addr, &[("Origin", "null")]).await.unwrap_err();
    assert_refused(&refused, "origin null (a sandboxed or local page) is never allowed here");
    // CORS decides by the same rule.
    let request = Request::new("OPTIONS", "/bayeux").header("Origin", "null");
    let preflight = fetch(addr, &request).await.unwrap();
    assert_eq!(preflight.status, 200);
    assert_eq!(preflight.header("access-control-allow-origin"), None, "{preflight:?}");
    upgrade(addr, &[("Origin", GOOD)]).await.unwrap();
}

#[tokio::test]
async fn a_websocket_without_an_origin_opens() {
    // Node's faye client sends no Origin.
    upgrade(restricted().await, &[]).await.unwrap();
}

#[tokio::test]
async fn without_an_allow_list_a_websocket_from_any_origin_opens() {
    let addr = start(FayeOptions::default()).await;
    for origin in [EVIL, "null"] {
        upgrade(addr, &[("Origin", origin)]).await.unwrap();
    }
}

// --- JSON-P ---

/// A callback-polling GET of `message` with `headers`.
async fn jsonp(addr: SocketAddr, message: &Value, headers: &[(&str, &str)]) -> Response {
    let query = form(&[("message", &message.to_string()), ("jsonp", "cb")]);
    let request = Request::get(&format!("/bayeux?{query}")).headers(headers);
    within(QUICK, "the JSON-P reply", fetch(addr, &request)).await.unwrap()
}

fn jsonp_handshake() -> Value {
    json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["callback-polling"]})
}

/// Asserts a served JSON-P reply to a successful handshake.
fn assert_served(reply: &Response) {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("text/javascript; charset=utf-8"));
    let body = reply.body_str();
    assert!(body.starts_with("/**/cb([") && body.contains(r#""successful":true"#), "{body}");
}

#[tokio::test]
async fn jsonp_from_an_allowed_page_is_served() {
    let addr = restricted().await;
    // A full page URL, and what the default policy (strict-origin-when-cross-origin)
    // sends cross-origin: the origin and `/`.
    for referer in ["https://good.example/app/page.html?x=1", "https://GOOD.example:443/"] {
        assert_served(&jsonp(addr, &jsonp_handshake(), &[("Referer", referer)]).await);
    }
    assert_served(&jsonp(addr, &jsonp_handshake(), &[("Origin", GOOD)]).await);
}

#[tokio::test]
async fn jsonp_from_a_foreign_page_is_refused_with_a_reason_and_not_run() {
    let addr = restricted().await;
    // A subscriber (no Origin: a Node client) on /news, to see that nothing the
    // refused requests carry is published.
    let mut sub = open_socket(addr, &[]).await.unwrap();
    let id = call(&mut sub, ws_handshake()).await[0]["clientId"].as_str().unwrap().to_owned();
    let subscribe = json!([{"channel":"/meta/subscribe","clientId":id,"subscription":"/news"}]);
    assert_eq!(call(&mut sub, subscribe).await[0]["successful"], true);
    // Binds the socket; its reply is held, so deliveries come first.
    let connect = json!([{"channel":"/meta/connect","clientId":id,"connectionType":"websocket"}]);
    sub.send(frame(true, false, OpCode::Data(Data::Text), connect.to_string())).await.unwrap();

    let publish = |n: u32| json!({"channel":"/news","data":{"n":n}});
    let refused =
        jsonp(addr, &publish(1), &[("Referer", "https://evil.example/attack.html")]).await;
    assert_refused(&refused, "the referrer's origin https://evil.example is not in the allowed");
    let refused = jsonp(addr, &publish(2), &[("Referer", "file:///home/me/page.html")]).await;
    assert_refused(&refused, "the referrer names no origin");
    // A `<script crossorigin>` sends Origin; it decides over Referer.
    let both = [("Origin", EVIL), ("Referer", "https://good.example/")];
    assert_refused(&jsonp(addr, &publish(3), &both).await, "origin https://evil.example");
    assert_refused(&jsonp(addr, &publish(4), &[("Origin", "null")]).await, "origin null");

    let served = jsonp(addr, &publish(5), &[("Referer", "https://good.example/")]).await;
    assert_eq!(served.status, 200, "{served:?}");
    assert_eq!(next_json(&mut sub).await, json!([{"channel":"/news","data":{"n":5}}]));
}

#[tokio::test]
async fn jsonp_without_a_referrer_is_served() {
    // Browsers omit Referer under `no-referrer`, or from HTTPS to HTTP.
    assert_served(&jsonp(restricted().await, &jsonp_handshake(), &[]).await);
}

#[tokio::test]
async fn without_an_allow_list_jsonp_from_any_page_is_served() {
    let addr = start(FayeOptions::default()).await;
    for headers in [[("Referer", "https://evil.example/attack.html")], [("Origin", "null")]] {
        assert_served(&jsonp(addr, &jsonp_handshake(), &headers).await);
    }
}

// --- EventSource ---

/// A client id, from a handshake POSTed with no Origin.
async fn client_id(addr: SocketAddr) -> String {
    let handshake = json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["eventsource"]});
    let reply = fetch(addr, &Request::post("/bayeux").json(&handshake)).await.unwrap();
    reply.json()[0]["clientId"].as_str().unwrap().to_owned()
}

/// Opens `<mount>/<client>` as an EventSource with `headers`: `Ok` once the
/// stream has started, else the refusal.
async fn event_source(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<(), Response> {
    let id = client_id(addr).await;
    let mut conn = HttpConn::connect(addr).await.unwrap();
    let request = Request::get(&format!("/bayeux/{id}"))
        .header("Accept", "text/event-stream")
        .header("Connection", "close")
        .headers(headers);
    conn.send(&request).await.unwrap();
    let head = within(QUICK, "the stream's head", conn.read_head()).await.unwrap();
    if head.status != 200 {
        return Err(within(QUICK, "the refusal's body", conn.read_body(head)).await.unwrap());
    }
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    let first = within(QUICK, "the first chunk", conn.read_chunk()).await.unwrap();
    assert_eq!(first.as_deref(), Some(&b"retry: 5000\r\n\r\n"[..]));
    Ok(())
}

#[tokio::test]
async fn an_event_source_from_an_allowed_origin_streams() {
    event_source(restricted().await, &[("Origin", GOOD)]).await.unwrap();
}

#[tokio::test]
async fn an_event_source_from_a_foreign_origin_is_refused_with_a_reason() {
    let addr = restricted().await;
    let refused = event_source(addr, &[("Origin", EVIL)]).await.unwrap_err();
    assert_refused(&refused, "origin https://evil.example is not in the allowed origins");
    let refused = event_source(addr, &[("Origin", "null")]).await.unwrap_err();
    assert_refused(&refused, "origin null");
}

#[tokio::test]
async fn an_event_source_without_an_origin_streams() {
    // Same-origin EventSource requests carry no Origin.
    event_source(restricted().await, &[]).await.unwrap();
}

#[tokio::test]
async fn without_an_allow_list_an_event_source_from_any_origin_streams() {
    event_source(start(FayeOptions::default()).await, &[("Origin", EVIL)]).await.unwrap();
}
