//! One HTTP request through `FayeService`: it never panics or hangs, answers with
//! a status the crate can produce, and the body matches the content type (a JSON
//! array for POST long-polling, `/**/cb([...]);` for JSON-P).
//!
//! Requests are built from a grammar (method, path, query, headers, a body of
//! Bayeux messages or raw bytes). Before the request a live client may be set up
//! in-process (handshake, subscriptions, queued messages) so that `clientId`s and
//! EventSource paths can name a real session. Half the inputs go to a server with
//! a `TokenAuth` extension, which also checks that an unauthorised publish to a
//! protected channel is never delivered.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::Bytes;
use faye_engine::MemoryEngine;
use faye_http::{FayeOptions, FayeService, RemoteAddr};
use faye_protocol::decode_batch;
use faye_server::{Context, Reply, Server, ServerOptions, TokenAuth};
use faye_testkit::form_encode;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tower_service::Service;

/// The only token of the `TokenAuth` server.
const TOKEN: &str = "fuzz-token";
/// Channels the `TokenAuth` server protects (subscribe and publish).
const PROTECTED: &str = "/p/**";
const SCRIPT: &str = "/* the browser client */";
/// Longest request body (and JSON-P message) the services accept.
const MAX_BYTES: usize = 2048;
/// Most messages in one request.
const MAX_BATCH: usize = 16;

const NAMES: &[&str] =
    &["/a", "/a/b", "/p/x", "/p", "/o/x", "/meta/x", "/service/x", "/a/*", "/**"];
const CALLBACKS: &[&str] = &["cb", "jsonpcallback", "a.b", "$_1", "__jsonp3__"];

struct Fixture {
    rt: tokio::runtime::Runtime,
    plain: FayeService<MemoryEngine>,
    auth: FayeService<MemoryEngine>,
    etag: HeaderValue,
}

fn service(auth: bool) -> FayeService<MemoryEngine> {
    // Held connects last 20 ms, so a connect in the input costs little.
    let options = ServerOptions::default()
        .timeout(Duration::from_millis(20))
        .max_subscriptions_per_client(8)
        .max_queue_per_client(8)
        .max_channel_length(64);
    let server = Server::new(MemoryEngine::new(), options);
    if auth {
        server.add_extension(Arc::new(
            TokenAuth::new().subscribe(PROTECTED, [TOKEN]).publish(PROTECTED, [TOKEN]),
        ));
    }
    let options = FayeOptions::default()
        .max_request_bytes(MAX_BYTES)
        .max_batch(MAX_BATCH)
        .client_script(SCRIPT)
        .allowed_origins(auth.then_some(["https://ok.example"]));
    FayeService::new(server, options)
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let plain = service(false);
    let auth = service(true);
    let req = Request::get("/bayeux/client.js").body(Full::new(Bytes::new())).unwrap();
    let res = rt.block_on(plain.clone().call(req)).unwrap();
    let etag = res.headers().get(header::ETAG).expect("the client script has an ETag").clone();
    Fixture { rt, plain, auth, etag }
});

#[derive(Arbitrary, Debug)]
enum Meth {
    Get,
    Post,
    Options,
    Put,
}

#[derive(Arbitrary, Debug)]
enum PathKind {
    Mount,
    MountSlash,
    /// `/bayeux/<live clientId>` (EventSource).
    LiveClient,
    Below(String),
    ClientJs,
    MountJs,
    Asset(String),
    Other(String),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Callback {
    Valid(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Query {
    message: Option<Payload>,
    jsonp: Option<Callback>,
    extra: Option<String>,
}

#[derive(Arbitrary, Debug)]
enum ContentType {
    Json,
    JsonCharset,
    Text,
    Form,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Accept {
    EventStream,
    List,
    Json,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Origin {
    Allowed,
    Other,
    Null,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Upgrade {
    Complete,
    NoKey,
    BadVersion,
    NoConnection,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum ETag {
    Right,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Setup {
    /// Also subscribe to `/**`, so that every publish reaches the client.
    everything: bool,
    subscribe: Vec<u8>,
    publish: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Body {
    Empty,
    Raw(Vec<u8>),
    Payload(Payload),
    Form { message: Option<Payload>, jsonp: Option<Callback>, extra: Option<String> },
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Batch(Vec<Msg>),
    One(Box<Msg>),
    Value(Json),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Chan {
    Handshake,
    Connect,
    Disconnect,
    Subscribe,
    Unsubscribe,
    Name(u8),
    Raw(String),
    Value(Json),
}

#[derive(Arbitrary, Debug)]
enum Cid {
    Live,
    /// Well-formed but unknown.
    Unknown,
    Value(Json),
}

#[derive(Arbitrary, Debug)]
enum ConnType {
    LongPolling,
    EventSource,
    WebSocket,
    Value(Json),
}

#[derive(Arbitrary, Debug)]
enum Sub {
    One(u8),
    Many(Vec<u8>),
    Value(Json),
}

#[derive(Arbitrary, Debug)]
enum Token {
    Right,
    Wrong,
    Value(Json),
}

/// Any small JSON value.
#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => json!(b),
            Self::Int(i) => json!(i),
            Self::Float(f) => json!(f),
            Self::Str(s) => json!(s),
            Self::Array(items) => Value::Array(items.iter().map(Self::value).collect()),
            Self::Object(fields) => {
                Value::Object(fields.iter().map(|(k, v)| (k.clone(), v.value())).collect())
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Msg {
    channel: Option<Chan>,
    client_id: Option<Cid>,
    id: Option<Json>,
    version: bool,
    connection_types: Option<Option<Json>>,
    connection_type: Option<ConnType>,
    subscription: Option<Sub>,
    data: Option<Json>,
    advice_timeout: Option<Json>,
    token: Option<Token>,
    extra: Option<(String, Json)>,
}

fn pick(items: &[&'static str], i: u8) -> &'static str {
    items[usize::from(i) % items.len()]
}

impl Msg {
    fn value(&self, live: &str) -> Value {
        let mut m = serde_json::Map::new();
        if let Some(channel) = &self.channel {
            let v = match channel {
                Chan::Handshake => json!("/meta/handshake"),
                Chan::Connect => json!("/meta/connect"),
                Chan::Disconnect => json!("/meta/disconnect"),
                Chan::Subscribe => json!("/meta/subscribe"),
                Chan::Unsubscribe => json!("/meta/unsubscribe"),
                Chan::Name(i) => json!(pick(NAMES, *i)),
                Chan::Raw(s) => json!(s),
                Chan::Value(v) => v.value(),
            };
            m.insert("channel".into(), v);
        }
        if let Some(cid) = &self.client_id {
            let v = match cid {
                Cid::Live => json!(live),
                Cid::Unknown => json!("0123456789abcdefghijklmnopqrstu"),
                Cid::Value(v) => v.value(),
            };
            m.insert("clientId".into(), v);
        }
        if let Some(id) = &self.id {
            m.insert("id".into(), id.value());
        }
        if self.version {
            m.insert("version".into(), json!("1.0"));
        }
        match &self.connection_types {
            Some(None) => {
                m.insert("supportedConnectionTypes".into(), json!(["long-polling", "websocket"]));
            }
            Some(Some(v)) => {
                m.insert("supportedConnectionTypes".into(), v.value());
            }
            None => {}
        }
        if let Some(t) = &self.connection_type {
            let v = match t {
                ConnType::LongPolling => json!("long-polling"),
                ConnType::EventSource => json!("eventsource"),
                ConnType::WebSocket => json!("websocket"),
                ConnType::Value(v) => v.value(),
            };
            m.insert("connectionType".into(), v);
        }
        if let Some(sub) = &self.subscription {
            let v = match sub {
                Sub::One(i) => json!(pick(NAMES, *i)),
                Sub::Many(list) => json!(list.iter().map(|i| pick(NAMES, *i)).collect::<Vec<_>>()),
                Sub::Value(v) => v.value(),
            };
            m.insert("subscription".into(), v);
        }
        if let Some(data) = &self.data {
            m.insert("data".into(), data.value());
        }
        if let Some(timeout) = &self.advice_timeout {
            m.insert("advice".into(), json!({ "timeout": timeout.value() }));
        }
        if let Some(token) = &self.token {
            let v = match token {
                Token::Right => json!(TOKEN),
                Token::Wrong => json!("wrong"),
                Token::Value(v) => v.value(),
            };
            m.insert("ext".into(), json!({ "authToken": v }));
        }
        if let Some((k, v)) = &self.extra {
            m.entry(k.clone()).or_insert_with(|| v.value());
        }
        Value::Object(m)
    }
}

impl Payload {
    fn text(&self, live: &str) -> String {
        match self {
            Self::Batch(msgs) => {
                Value::Array(msgs.iter().map(|m| m.value(live)).collect()).to_string()
            }
            Self::One(m) => m.value(live).to_string(),
            Self::Value(v) => v.value().to_string(),
            Self::Raw(s) => s.clone(),
        }
    }
}

impl Callback {
    fn text(&self) -> String {
        match self {
            Self::Valid(i) => pick(CALLBACKS, *i).to_owned(),
            Self::Raw(s) => s.clone(),
        }
    }
}

fn form(
    message: Option<&Payload>,
    jsonp: Option<&Callback>,
    extra: Option<&str>,
    live: &str,
) -> String {
    let mut out = String::new();
    if let Some(extra) = extra {
        out.push_str(extra);
        out.push('&');
    }
    if let Some(m) = message {
        out.push_str(&format!("message={}&", form_encode(&m.text(live))));
    }
    if let Some(cb) = jsonp {
        out.push_str(&format!("jsonp={}&", form_encode(&cb.text())));
    }
    out
}

#[derive(Arbitrary, Debug)]
struct Input {
    auth: bool,
    method: Meth,
    path: PathKind,
    query: Option<Query>,
    raw_query: Option<String>,
    content_type: Option<ContentType>,
    accept: Option<Accept>,
    origin: Option<Origin>,
    referer: bool,
    upgrade: Option<Upgrade>,
    preflight_header: bool,
    if_none_match: Option<ETag>,
    remote_addr: bool,
    setup: Option<Setup>,
    body: Body,
}

/// Handshakes a client in-process, subscribes it and queues messages for it.
async fn set_up(server: &Server<MemoryEngine>, setup: &Setup, auth: bool) -> String {
    let local = Context::trusted();
    let hs = decode_batch(
        br#"{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}"#,
    )
    .unwrap();
    let replies = server.process(hs, &local).await;
    let Some(Reply::Message(reply)) = replies.first() else { panic!("no handshake reply") };
    let id = reply.client_id.clone().expect("in-process handshake succeeds");
    let mut subs: Vec<&str> = setup.subscribe.iter().take(4).map(|i| pick(NAMES, *i)).collect();
    if setup.everything {
        subs.push("/**");
    }
    if auth {
        // The app itself (trusted) subscribes the client to the protected channels.
        subs.push(PROTECTED);
    }
    let sub = json!({"channel": "/meta/subscribe", "clientId": id, "subscription": subs});
    server.process(decode_batch(sub.to_string().as_bytes()).unwrap(), &local).await;
    for (n, i) in setup.publish.iter().take(4).enumerate() {
        let name = pick(NAMES, *i);
        if name.starts_with("/p") {
            continue; // only the fuzzed request may publish there
        }
        let publish = json!({"channel": name, "data": {"n": n}});
        server.process(decode_batch(publish.to_string().as_bytes()).unwrap(), &local).await;
    }
    id
}

fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// Deliveries (objects without `successful`) on protected channels in a reply array.
fn check_replies(replies: &Value, request_has_token: bool, auth: bool, body: &str) {
    let Value::Array(items) = replies else {
        panic!("reply is not a JSON array: {body}");
    };
    for item in items {
        let Value::Object(fields) = item else { panic!("reply element is not an object: {body}") };
        let delivery = !fields.contains_key("successful");
        if delivery {
            assert!(!fields.contains_key("clientId"), "a delivery leaks clientId: {body}");
        } else {
            assert!(fields["successful"].is_boolean(), "successful is not a boolean: {body}");
        }
        let channel = fields.get("channel").and_then(Value::as_str).unwrap_or("");
        if auth
            && delivery
            && !request_has_token
            && faye_protocol::channel::matches(PROTECTED, channel)
        {
            panic!("a publish to {channel} without the token was delivered: {body}");
        }
    }
}

async fn run(input: Input, fx: &Fixture) {
    let svc = if input.auth { &fx.auth } else { &fx.plain };
    let live = match &input.setup {
        Some(setup) => set_up(svc.server(), setup, input.auth).await,
        None => String::new(),
    };

    let mut path = match &input.path {
        PathKind::Mount => "/bayeux".to_owned(),
        PathKind::MountSlash => "/bayeux/".to_owned(),
        PathKind::LiveClient => format!("/bayeux/{live}"),
        PathKind::Below(s) => format!("/bayeux/{}", form_encode(s)),
        PathKind::ClientJs => "/bayeux/client.js".to_owned(),
        PathKind::MountJs => "/bayeux.js".to_owned(),
        PathKind::Asset(s) => format!("/bayeux/{}.map", form_encode(s)),
        PathKind::Other(s) => format!("/{}", form_encode(s)),
        PathKind::Raw(s) => s.clone(),
    };
    let mut query = String::new();
    if let Some(q) = &input.query {
        query = form(q.message.as_ref(), q.jsonp.as_ref(), q.extra.as_deref(), &live);
    }
    if let Some(raw) = &input.raw_query {
        query.push_str(raw);
    }
    if input.query.is_some() || input.raw_query.is_some() {
        path = format!("{path}?{query}");
    }
    let method = match input.method {
        Meth::Get => Method::GET,
        Meth::Post => Method::POST,
        Meth::Options => Method::OPTIONS,
        Meth::Put => Method::PUT,
    };
    let body: Vec<u8> = match &input.body {
        Body::Empty => Vec::new(),
        Body::Raw(bytes) => bytes.clone(),
        Body::Payload(p) => p.text(&live).into_bytes(),
        Body::Form { message, jsonp, extra } => {
            form(message.as_ref(), jsonp.as_ref(), extra.as_deref(), &live).into_bytes()
        }
    };
    let request_has_token = carries_token(&path, &body);

    let Ok(mut req) = Request::builder()
        .method(method.clone())
        .uri(path.as_str())
        .body(Full::new(Bytes::from(body)))
    else {
        return; // not a URI http would ever hand us
    };
    let h = req.headers_mut();
    let mut insert = |name: HeaderName, value: Option<HeaderValue>| {
        if let Some(value) = value {
            h.append(name, value);
        }
    };
    if let Some(ct) = &input.content_type {
        let v = match ct {
            ContentType::Json => header_value("application/json"),
            ContentType::JsonCharset => header_value("Application/JSON; charset=utf-8"),
            ContentType::Text => header_value("text/plain;charset=UTF-8"),
            ContentType::Form => header_value("application/x-www-form-urlencoded"),
            ContentType::Raw(s) => header_value(s),
        };
        insert(header::CONTENT_TYPE, v);
    }
    let event_stream_accept = matches!(input.accept, Some(Accept::EventStream | Accept::List));
    if let Some(accept) = &input.accept {
        let v = match accept {
            Accept::EventStream => header_value("text/event-stream"),
            Accept::List => header_value("text/html, text/event-stream;q=0.9, */*"),
            Accept::Json => header_value("application/json"),
            Accept::Raw(s) => header_value(s),
        };
        insert(header::ACCEPT, v);
    }
    if let Some(origin) = &input.origin {
        let v = match origin {
            Origin::Allowed => header_value("https://ok.example"),
            Origin::Other => header_value("https://evil.example"),
            Origin::Null => header_value("null"),
            Origin::Raw(s) => header_value(s),
        };
        insert(header::ORIGIN, v);
    }
    if input.referer {
        insert(header::REFERER, header_value("https://ok.example/page"));
    }
    if let Some(upgrade) = &input.upgrade {
        let (up, conn, key, version) = match upgrade {
            Upgrade::Complete => ("websocket", "keep-alive, Upgrade", true, "13"),
            Upgrade::NoKey => ("WebSocket", "Upgrade", false, "13"),
            Upgrade::BadVersion => ("websocket", "Upgrade", true, "8"),
            Upgrade::NoConnection => ("websocket", "keep-alive", true, "13"),
            Upgrade::Raw(s) => (s.as_str(), "Upgrade", true, "13"),
        };
        insert(header::UPGRADE, header_value(up));
        insert(header::CONNECTION, header_value(conn));
        if key {
            insert(header::SEC_WEBSOCKET_KEY, header_value("dGhlIHNhbXBsZSBub25jZQ=="));
        }
        insert(header::SEC_WEBSOCKET_VERSION, header_value(version));
    }
    if input.preflight_header {
        insert(header::ACCESS_CONTROL_REQUEST_METHOD, header_value("POST"));
    }
    if let Some(etag) = &input.if_none_match {
        let v = match etag {
            ETag::Right => Some(fx.etag.clone()),
            ETag::Raw(s) => header_value(s),
        };
        insert(header::IF_NONE_MATCH, v);
    }
    if input.remote_addr {
        req.extensions_mut().insert(RemoteAddr(([127, 0, 0, 1], 4242).into()));
    }

    let call = svc.clone().call(req);
    let res = match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(Ok(res)) => res,
        Ok(Err(never)) => match never {},
        Err(_) => panic!("the request took over 5 s (connects are held 20 ms)"),
    };
    let status = res.status();
    if status == StatusCode::FORBIDDEN {
        // Only the allow-list refuses, and only an origin not on it.
        let foreign = !matches!(input.origin, None | Some(Origin::Allowed));
        assert!(input.auth && foreign, "403 without a foreign origin: {:?}", input.origin);
        return;
    }
    let allowed = [
        StatusCode::SWITCHING_PROTOCOLS,
        StatusCode::OK,
        StatusCode::NOT_MODIFIED,
        StatusCode::BAD_REQUEST,
        StatusCode::NOT_FOUND,
        StatusCode::PAYLOAD_TOO_LARGE,
    ];
    assert!(allowed.contains(&status), "unexpected status {status}");
    if status == StatusCode::SWITCHING_PROTOCOLS {
        assert_eq!(method, Method::GET);
        assert!(res.headers().contains_key(header::SEC_WEBSOCKET_ACCEPT));
        return;
    }
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type == "text/event-stream" {
        // An open stream: never read it to the end, dropping it ends the pump task.
        assert_eq!(status, StatusCode::OK);
        assert!(event_stream_accept && method == Method::GET, "an EventSource stream for {method}");
        assert!(!live.is_empty(), "an EventSource stream without a live client");
        return;
    }
    let Ok(Ok(collected)) =
        tokio::time::timeout(Duration::from_secs(5), res.into_body().collect()).await
    else {
        panic!("a {status} {content_type} body did not finish in 5 s");
    };
    let body = collected.to_bytes();
    let text = String::from_utf8_lossy(&body);
    match content_type.as_str() {
        "application/json; charset=utf-8" => {
            assert_eq!(status, StatusCode::OK);
            assert_eq!(method, Method::POST, "JSON long-polling answer to {method}");
            let replies: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("a POST reply is not JSON ({e}): {text}"));
            check_replies(&replies, request_has_token, input.auth, &text);
        }
        "text/javascript; charset=utf-8" if status == StatusCode::OK && body == SCRIPT => {
            let path = path.split('?').next().unwrap_or("");
            assert!(path.ends_with(".js"), "the client script at {path}");
        }
        "text/javascript; charset=utf-8" if status == StatusCode::OK && method == Method::GET => {
            let inner = text
                .strip_prefix("/**/")
                .and_then(|t| t.strip_suffix(");"))
                .unwrap_or_else(|| panic!("not a JSON-P body: {text}"));
            let (callback, json) = inner.split_once('(').expect("a callback call");
            assert!(!callback.is_empty(), "empty callback: {text}");
            assert!(!json.contains(['\u{2028}', '\u{2029}']), "raw U+2028/U+2029 in JSON-P");
            let replies: Value = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("a JSON-P reply is not JSON ({e}): {text}"));
            check_replies(&replies, request_has_token, input.auth, &text);
        }
        "text/javascript; charset=utf-8" => {
            panic!("a {status} JavaScript answer to {method}: {text}");
        }
        _ => {
            if status == StatusCode::OK {
                // A CORS preflight: empty.
                assert!(body.is_empty(), "a 200 {content_type:?} with a body: {text}");
            }
        }
    }
}

/// Whether any message the server could decode from this request (the body, or a
/// `message` parameter of the query or of a form body) has the token in its `ext`.
fn carries_token(uri: &str, body: &[u8]) -> bool {
    let query = uri.split_once('?').map_or("", |(_, q)| q).as_bytes();
    let params = |bytes: &[u8]| -> Vec<Vec<u8>> {
        form_urlencoded::parse(bytes)
            .filter(|(k, _)| k == "message")
            .map(|(_, v)| v.into_owned().into_bytes())
            .collect()
    };
    let mut candidates = vec![body.to_vec()];
    candidates.extend(params(query));
    candidates.extend(params(body));
    candidates.iter().any(|text| {
        decode_batch(text).is_ok_and(|batch| {
            batch.iter().any(|m| {
                m.ext.as_ref().and_then(|e| e.get("authToken")).and_then(Value::as_str)
                    == Some(TOKEN)
            })
        })
    })
}

fuzz_target!(|input: Input| {
    let fx = &*FIXTURE;
    fx.rt.block_on(async {
        run(input, fx).await;
        // Let the runtime run what the request spawned (EventSource pumps, WebSocket
        // tasks) and fire due timers (expired clients): a current-thread `block_on`
        // whose future never waits does neither, and they would pile up.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    });
});
