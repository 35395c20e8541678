//! Each HTTP transport over a real socket, compared with Faye 1.4.3's answers (§4).

use std::net::SocketAddr;
use std::time::Duration;

use faye_engine::MemoryEngine;
use faye_http::{FayeOptions, FayeService};
use faye_server::{Server, ServerOptions};
use faye_testkit::http::{HttpConn, Request, Response, fetch};
use faye_testkit::ws::Ws;
use faye_testkit::{QUICK, form_encode, within};
use serde_json::{Value, json};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

/// Starts a server; returns its address and the handle to shut it down.
async fn start(options: FayeOptions) -> (SocketAddr, FayeService<MemoryEngine>) {
    let server =
        Server::new(MemoryEngine::new(), ServerOptions::default().timeout(Duration::from_secs(2)));
    let faye = FayeService::new(server, options);
    (faye_testkit::server::serve(faye.clone()).await, faye)
}

/// One request (`head` is the method and the path) on a fresh connection.
async fn request(addr: SocketAddr, head: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let (method, path) = head.split_once(' ').unwrap();
    let request = Request::new(method, path).headers(headers).body(body);
    within(Duration::from_secs(10), "an HTTP response", fetch(addr, &request)).await.unwrap()
}

async fn post_json(addr: SocketAddr, message: Value) -> Value {
    let reply = request(
        addr,
        "POST /bayeux",
        &[("Content-Type", "application/json")],
        &message.to_string(),
    )
    .await;
    serde_json::from_str(reply.body_str()).unwrap()
}

async fn handshake(addr: SocketAddr) -> String {
    let reply = post_json(addr, json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]})).await;
    reply[0]["clientId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn preflight_answers_like_faye_with_origin_referrer_or_star() {
    let (addr, _faye) = start(FayeOptions::default()).await;
    let cases = [
        (vec![("Origin", "http://app.example")], "http://app.example"),
        (vec![("Referer", "http://ref.example/page")], "http://ref.example/page"),
        (vec![], "*"),
    ];
    for (headers, allowed) in cases {
        let reply = request(addr, "OPTIONS /bayeux", &headers, "").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body_str(), "");
        assert_eq!(reply.header("access-control-allow-origin"), Some(allowed));
        assert_eq!(reply.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(
            reply.header("access-control-allow-headers"),
            Some("Accept, Authorization, Content-Type, Pragma, X-Requested-With")
        );
        assert_eq!(reply.header("access-control-allow-methods"), Some("POST, GET"));
        assert_eq!(reply.header("access-control-max-age"), Some("86400"));
        assert_eq!(reply.header("vary"), Some("Origin"));
        assert_eq!(reply.header("content-type"), None);
    }
    // Faye also treats any request announcing a POST preflight as one.
    let reply =
        request(addr, "GET /bayeux", &[("Access-Control-Request-Method", "POST")], "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("access-control-max-age"), Some("86400"));
}

#[tokio::test]
async fn a_cross_origin_form_post_gets_credentials_for_its_origin() {
    let (addr, _faye) = start(FayeOptions::default()).await;
    let message = r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["cross-origin-long-polling"]}]"#;
    let body = format!("message={}", form_encode(message));
    let reply = request(
        addr,
        "POST /bayeux",
        &[("Origin", "http://other.example:9000"), ("Content-Type", "text/plain;charset=UTF-8")],
        &body,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("access-control-allow-origin"), Some("http://other.example:9000"));
    assert_eq!(reply.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(reply.header("content-type"), Some("application/json; charset=utf-8"));
    let json: Value = serde_json::from_str(reply.body_str()).unwrap();
    assert_eq!(json[0]["successful"], true);
}

#[tokio::test]
async fn an_origin_allow_list_refuses_other_origins() {
    let opts = FayeOptions::default().allowed_origins(Some(["http://good.example"]));
    let (addr, _faye) = start(opts).await;
    let good = request(addr, "OPTIONS /bayeux", &[("Origin", "http://good.example")], "").await;
    assert_eq!(good.header("access-control-allow-origin"), Some("http://good.example"));
    let bad = request(addr, "OPTIONS /bayeux", &[("Origin", "http://evil.example")], "").await;
    assert_eq!(bad.header("access-control-allow-origin"), None);
    assert_eq!(bad.header("access-control-allow-credentials"), None);
    let body = r#"{"channel":"/x","data":1}"#;
    let post = request(
        addr,
        "POST /bayeux",
        &[("Origin", "http://evil.example"), ("Content-Type", "application/json")],
        body,
    )
    .await;
    assert_eq!(post.status, 200, "the request is served; the browser withholds the reply");
    assert_eq!(post.header("access-control-allow-origin"), None);
    assert_eq!(post.header("vary"), Some("Origin"));
}

#[tokio::test]
async fn jsonp_wraps_the_reply_in_the_callback_with_faye_headers() {
    let (addr, _faye) = start(FayeOptions::default()).await;
    let message = form_encode(r#"[{"channel":"/meta/handshake"}]"#);
    let reply =
        request(addr, &format!("GET /bayeux?message={message}&jsonp=callback"), &[], "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(reply.header("content-disposition"), Some("attachment; filename=f.txt"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("cache-control"), Some("no-cache, no-store"));
    let inner = reply.body_str().strip_prefix("/**/callback(").unwrap().strip_suffix(");").unwrap();
    let json: Value = serde_json::from_str(inner).unwrap();
    // Both required fields are missing; as in Faye, the last check's error wins.
    assert_eq!(json[0]["error"], "402:supportedConnectionTypes:Missing required parameter");
    // The default callback name.
    let reply = request(addr, &format!("GET /bayeux?message={message}"), &[], "").await;
    assert!(reply.body_str().starts_with("/**/jsonpcallback(["), "{}", reply.body_str());
}

#[tokio::test]
async fn jsonp_escapes_line_separators_and_rejects_bad_callbacks() {
    let (addr, _faye) = start(FayeOptions::default()).await;
    let id = handshake(addr).await;
    post_json(addr, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/ls"})).await;
    post_json(addr, json!({"channel":"/ls","data":"a\u{2028}b"})).await;
    let connect = form_encode(
        &json!([{"channel":"/meta/connect","clientId":id,"connectionType":"callback-polling"}])
            .to_string(),
    );
    let reply = request(addr, &format!("GET /bayeux?message={connect}&jsonp=cb"), &[], "").await;
    assert!(reply.body_str().contains(r#""data":"a\u2028b""#), "{}", reply.body_str());
    assert!(!reply.body_str().contains('\u{2028}'));

    let message = form_encode(r#"[{"channel":"/meta/handshake"}]"#);
    for bad in ["42", "alert(1)", "a..b", "%3Cscript%3E"] {
        let reply =
            request(addr, &format!("GET /bayeux?message={message}&jsonp={bad}"), &[], "").await;
        assert_eq!((reply.status, reply.body_str()), (400, "Bad request"), "callback {bad}");
    }
    let reply = request(addr, "GET /bayeux?jsonp=cb", &[], "").await;
    assert_eq!((reply.status, reply.body_str()), (400, "Bad request"), "no message");
}

#[tokio::test]
async fn an_oversize_body_is_refused_with_413_and_the_server_keeps_serving() {
    let (addr, _faye) = start(FayeOptions::default().max_request_bytes(1024)).await;
    let big = format!(r#"{{"channel":"/x","data":"{}"}}"#, "x".repeat(2000));
    let reply = request(addr, "POST /bayeux", &[("Content-Type", "application/json")], &big).await;
    assert_eq!(reply.status, 413);
    assert!(reply.body_str().contains("1024"), "{}", reply.body_str());
    assert_eq!(reply.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(!handshake(addr).await.is_empty());
}

/// Opens an EventSource stream: the response head, and the connection to read
/// the stream from.
async fn event_stream(addr: SocketAddr, path: &str) -> (Response, HttpConn) {
    let mut conn = HttpConn::connect(addr).await.unwrap();
    let request =
        Request::get(path).header("Accept", "text/event-stream").header("Connection", "close");
    conn.send(&request).await.unwrap();
    let head = within(QUICK, "the stream's head", conn.read_head()).await.unwrap();
    (head, conn)
}

/// The next chunk of the stream.
async fn next_chunk(stream: &mut HttpConn) -> String {
    let chunk = within(Duration::from_secs(5), "a chunk", stream.read_chunk()).await.unwrap();
    String::from_utf8(chunk.expect("the stream goes on")).unwrap()
}

#[tokio::test]
async fn eventsource_streams_deliveries_and_keepalives_to_an_existing_client() {
    let (addr, _faye) = start(FayeOptions::default().ping(Some(Duration::from_millis(300)))).await;
    let id = handshake(addr).await;
    post_json(addr, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/es"})).await;
    let (head, mut stream) = event_stream(addr, &format!("/bayeux/{id}")).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"), "{head:?}");
    assert_eq!(head.header("cache-control"), Some("no-cache, no-store"), "{head:?}");
    assert_eq!(next_chunk(&mut stream).await, "retry: 5000\r\n\r\n");

    // A connect over eventsource returns at once with Faye's eventsource advice, and
    // does not take the stream's place.
    let connect = post_json(
        addr,
        json!({"channel":"/meta/connect","clientId":id,"connectionType":"eventsource"}),
    )
    .await;
    assert_eq!(connect[0]["advice"], json!({"reconnect":"retry","interval":2000,"timeout":0}));
    assert_eq!(connect.as_array().unwrap().len(), 1);
    post_json(addr, json!({"channel":"/es","data":{"n":1},"clientId":"anyone"})).await;
    assert_eq!(
        next_chunk(&mut stream).await,
        "data: [{\"channel\":\"/es\",\"data\":{\"n\":1}}]\r\n\r\n"
    );
    assert_eq!(next_chunk(&mut stream).await, ":\r\n\r\n");
}

#[tokio::test]
async fn eventsource_for_an_unknown_client_is_refused() {
    let (addr, _faye) = start(FayeOptions::default()).await;
    for path in
        ["/bayeux/0000000000000000000000000000000", "/bayeux/__proto__", "/bayeux/constructor"]
    {
        let (head, mut stream) = event_stream(addr, path).await;
        assert_eq!(head.status, 404, "{path}");
        let reply = within(QUICK, "the body", stream.read_body(head)).await.unwrap();
        assert!(reply.body_str().contains("Unknown client"), "{reply:?}");
    }
}

#[tokio::test]
async fn websocket_pings_at_the_configured_interval() {
    let (addr, _faye) = start(FayeOptions::default().ping(Some(Duration::from_millis(200)))).await;
    let mut ws = Ws::connect(&format!("ws://{addr}/bayeux")).await;
    let frame = ws.next_message(Duration::from_secs(2)).await.unwrap().unwrap();
    assert!(matches!(frame, Message::Ping(_)), "{frame:?}");
}

#[tokio::test]
async fn client_js_is_served_with_a_validator_or_refused_with_a_reason() {
    // By default, faye-rs's own client (the committed build of clients/js).
    let (addr, _faye) = start(FayeOptions::default()).await;
    for path in ["/bayeux/client.js", "/bayeux.js"] {
        let reply = request(addr, &format!("GET {path}"), &[], "").await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.body, faye_http::CLIENT_JS, "{path}");
        assert!(reply.body_str().starts_with("/* faye-rs browser client "));
        assert!(reply.body_str().contains("var Faye="));
        assert_eq!(reply.header("content-type"), Some("text/javascript; charset=utf-8"));
        assert_eq!(reply.header("cache-control"), Some("public, no-cache"));
        let etag = reply.header("etag").unwrap().to_owned();
        let again = request(addr, &format!("GET {path}"), &[("If-None-Match", &etag)], "").await;
        assert_eq!((again.status, again.body_str()), (304, ""), "{path}");
        assert_eq!(again.header("etag"), Some(etag.as_str()));
        let other = request(addr, &format!("GET {path}"), &[("If-None-Match", "\"x\"")], "").await;
        assert_eq!(other.status, 200, "{path}");
    }

    let (addr, _faye) = start(FayeOptions::default().without_client_script()).await;
    let reply = request(addr, "GET /bayeux/client.js", &[], "").await;
    assert_eq!(reply.status, 404);
    assert!(reply.body_str().contains("No browser client"), "{}", reply.body_str());

    let (addr, _faye) = start(FayeOptions::default().client_script("var Faye = 1;")).await;
    for path in ["/bayeux/client.js", "/bayeux.js", "/bayeux/faye-browser-min.js"] {
        let reply = request(addr, &format!("GET {path}"), &[], "").await;
        assert_eq!((reply.status, reply.body_str()), (200, "var Faye = 1;"), "{path}");
        assert_eq!(reply.header("content-type"), Some("text/javascript; charset=utf-8"));
        let etag = reply.header("etag").unwrap().to_owned();
        let again = request(addr, &format!("GET {path}"), &[("If-None-Match", &etag)], "").await;
        assert_eq!((again.status, again.body_str()), (304, ""));
    }
    assert_eq!(request(addr, "GET /bayeux/other.js", &[], "").await.status, 404);
}

#[tokio::test]
async fn shutdown_answers_held_connects_and_closes_websockets() {
    let (addr, faye) = start(FayeOptions::default()).await;
    let id = handshake(addr).await;
    let held = tokio::spawn(post_json(
        addr,
        json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"}),
    ));
    let mut ws = Ws::connect(&format!("ws://{addr}/bayeux")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    faye.shutdown(Duration::from_secs(1)).await;
    let reply = timeout(Duration::from_secs(1), held).await.unwrap().unwrap();
    assert_eq!(reply[0]["successful"], true);
    let closed = ws.next_message(Duration::from_secs(1)).await;
    assert!(matches!(closed, Some(Ok(Message::Close(_))) | None), "{closed:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_client_that_sends_its_headers_too_slowly_is_cut_off() {
    let opts = FayeOptions::default().header_timeout(Duration::from_millis(300));
    let (addr, _faye) = start(opts).await;
    let mut conn = HttpConn::connect(addr).await.unwrap();
    conn.write_raw(b"POST /bayeux HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let read = timeout(Duration::from_secs(3), conn.read_to_end()).await;
    assert!(read.is_ok(), "the server closed the connection");
    assert!(!handshake(addr).await.is_empty(), "and keeps serving others");
}

#[tokio::test]
async fn a_body_that_arrives_too_slowly_gets_408() {
    let (addr, _faye) =
        start(FayeOptions::default().body_timeout(Duration::from_millis(300))).await;
    let mut conn = HttpConn::connect(addr).await.unwrap();
    let head = "POST /bayeux HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[{";
    conn.write_raw(head.as_bytes()).await.unwrap();
    let reply = timeout(Duration::from_secs(3), conn.read_head()).await.unwrap().unwrap();
    assert_eq!(reply.status, 408, "{reply:?}");
}
