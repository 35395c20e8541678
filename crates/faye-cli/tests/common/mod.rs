//! Shared helpers for the black-box wire tests: spawn the real `faye` binary,
//! talk raw HTTP/1.1 to it over a `TcpStream`, and speak WebSocket with
//! `tokio-tungstenite`. Assertions are made on the bytes the server sends.

#![allow(dead_code, unreachable_pub)]

use std::io;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Faye's `CONNECTION_TYPES`, in Faye's order (spec §1.1).
pub const CONNECTION_TYPES: [&str; 6] = [
    "long-polling",
    "cross-origin-long-polling",
    "callback-polling",
    "websocket",
    "eventsource",
    "in-process",
];

/// Upper bound for any single HTTP exchange or WebSocket wait that is not
/// expected to be held by the server.
pub const QUICK: Duration = Duration::from_secs(5);

/// `supportedConnectionTypes` as it appears in every handshake reply.
pub fn connection_types() -> Value {
    json!(CONNECTION_TYPES)
}

/// The advice a successful long-poll handshake or connect carries (spec §1.9)
/// on a server started with `--timeout secs`.
pub fn retry_advice(timeout_secs: u64) -> Value {
    json!({"reconnect": "retry", "interval": 0, "timeout": timeout_secs * 1000})
}

/// The advice attached to a failed handshake or connect (spec §1.9).
pub fn handshake_advice() -> Value {
    json!({"reconnect": "handshake"})
}

/// Replace the value of every `clientId` key (at any depth) with `"[clientId]"`.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    if k == "clientId" && v.is_string() {
                        (k.clone(), Value::String("[clientId]".into()))
                    } else {
                        (k.clone(), redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// Replace every string equal to `"$CID"` (and every `"$CID"` inside a string)
/// with the given client id. Used to write golden tables with a placeholder.
pub fn with_cid(value: &Value, cid: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace("$CID", cid)),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), with_cid(v, cid))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| with_cid(v, cid)).collect()),
        other => other.clone(),
    }
}

/// True for a Faye client id: 31 characters of `[0-9a-z]` (spec §1.1).
pub fn is_faye_client_id(id: &str) -> bool {
    id.len() == 31 && id.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// Percent-encode a string as an `application/x-www-form-urlencoded` value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Await `fut`, failing the test if it takes longer than `limit`.
pub async fn within<F: std::future::Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// A running `faye serve` child process, killed when dropped.
pub struct Server {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    /// The port the server printed.
    pub port: u16,
    /// The `--timeout` it was started with, in seconds.
    pub timeout: u64,
}

impl Server {
    /// `faye serve --host 127.0.0.1 --port 0 --mount /bayeux --timeout SECS`.
    pub async fn start(timeout_secs: u64) -> Self {
        Self::start_with(timeout_secs, &[]).await
    }

    /// As [`Server::start`] with extra command-line arguments.
    pub async fn start_with(timeout_secs: u64, extra: &[&str]) -> Self {
        let timeout_arg = timeout_secs.to_string();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faye"));
        cmd.args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--mount",
            "/bayeux",
            "--timeout",
            &timeout_arg,
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("FAYE_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn the faye binary");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        within(Duration::from_secs(20), "the listening line", async {
            stdout.read_line(&mut line).await.expect("read stdout");
        })
        .await;
        let line = line.trim_end();
        let rest = line
            .strip_prefix("faye-rs listening on http://127.0.0.1:")
            .unwrap_or_else(|| panic!("unexpected first stdout line: {line:?}"));
        let port: u16 = rest
            .strip_suffix("/bayeux")
            .unwrap_or_else(|| panic!("unexpected first stdout line: {line:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("no port in {line:?}"));
        Self { child, _stdout: stdout, port, timeout: timeout_secs }
    }

    /// `ws://127.0.0.1:PORT/bayeux`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/bayeux", self.port)
    }

    /// A raw HTTP request to this server (see [`http_request`]).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        let limit = Duration::from_secs(self.timeout + 15);
        within(limit, "an HTTP response", http_request(self.port, method, path, headers, body))
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// POST a body with the given content type to `/bayeux`.
    pub async fn post_raw(&self, content_type: &str, body: &[u8]) -> HttpResponse {
        self.request("POST", "/bayeux", &[("Content-Type", content_type)], body).await
    }

    /// POST `message` as `application/json` to `/bayeux`.
    pub async fn post_json(&self, message: &Value) -> HttpResponse {
        self.post_raw("application/json", message.to_string().as_bytes()).await
    }

    /// POST `message` as JSON, check the HTTP envelope (200, JSON content type)
    /// and return the reply array.
    pub async fn bayeux(&self, message: &Value) -> Value {
        let res = self.post_json(message).await;
        assert_eq!(res.status, 200, "POST {message} answered {} {:?}", res.status, res.text());
        assert_eq!(
            res.header("content-type"),
            Some("application/json; charset=utf-8"),
            "content type of the reply to {message}"
        );
        let value = res.json();
        assert!(value.is_array(), "reply to {message} is not an array: {value}");
        value
    }

    /// A successful long-polling handshake; returns the new client id.
    pub async fn handshake(&self) -> String {
        let reply = self
            .bayeux(&json!({
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling", "websocket"],
            }))
            .await;
        let cid = reply[0]["clientId"]
            .as_str()
            .unwrap_or_else(|| panic!("handshake failed: {reply}"))
            .to_owned();
        assert_eq!(reply[0]["successful"], json!(true), "handshake: {reply}");
        cid
    }

    /// Subscribe `cid` to `subscription` (a string or an array) and check the
    /// exact success reply (spec §1.7).
    pub async fn subscribe(&self, cid: &str, subscription: Value) {
        let reply = self
            .bayeux(&json!({
                "channel": "/meta/subscribe",
                "clientId": cid,
                "subscription": subscription,
            }))
            .await;
        assert_eq!(
            reply,
            json!([{
                "clientId": cid,
                "channel": "/meta/subscribe",
                "successful": true,
                "subscription": subscription,
            }])
        );
    }

    /// Publish `message` (a full message object) and check the success reply.
    pub async fn publish_message(&self, message: Value) {
        let reply = self.bayeux(&message).await;
        assert_eq!(reply.as_array().map(Vec::len), Some(1), "{reply}");
        assert_eq!(reply[0]["successful"], json!(true), "publish {message}: {reply}");
        assert_eq!(reply[0]["channel"], message["channel"], "{reply}");
    }

    /// Publish `data` on `channel` without any client id.
    pub async fn publish(&self, channel: &str, data: Value) {
        self.publish_message(json!({"channel": channel, "data": data})).await;
    }

    /// A long-polling `/meta/connect`, with `extra` fields merged into the
    /// message. Returns the reply array and how long the server took.
    pub async fn connect_with(&self, cid: &str, extra: Value) -> (Value, Duration) {
        let mut msg = json!({
            "channel": "/meta/connect",
            "clientId": cid,
            "connectionType": "long-polling",
        });
        if let (Some(m), Some(e)) = (msg.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        let started = Instant::now();
        let limit = Duration::from_secs(self.timeout + 10);
        let reply = within(limit, "a /meta/connect reply", self.bayeux(&msg)).await;
        (reply, started.elapsed())
    }

    /// A `/meta/connect` with `advice: {timeout: 0}`: returns at once.
    pub async fn connect_now(&self, cid: &str) -> Value {
        self.connect_with(cid, json!({"advice": {"timeout": 0}})).await.0
    }

    /// The exact successful connect reply for `cid` (spec §1.7, §1.9).
    pub fn connect_ok(&self, cid: &str) -> Value {
        json!({
            "clientId": cid,
            "channel": "/meta/connect",
            "successful": true,
            "advice": retry_advice(self.timeout),
        })
    }

    /// Open a WebSocket to the mount.
    pub async fn ws(&self) -> Ws {
        Ws::connect(&self.ws_url()).await
    }

    /// Kill the child now (it is also killed on drop).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers in wire order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it was chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every header with this name (case-insensitive).
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// Send one HTTP/1.1 request with `Connection: close` and read the response
/// to EOF. The body is written concurrently with reading, so a server that
/// answers (for example 413) before reading the whole body is handled.
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let writer = tokio::spawn(async move {
        // The server may stop reading early (413); a failed write is fine then.
        let _ = wr.write_all(&bytes).await;
        let _ = wr.flush().await;
        // Keep the write half open until the reader is done (no half-close:
        // some servers treat a FIN as an aborted request).
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(wr);
    });
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if let Some(done) = complete_response_len(&raw) {
                    raw.truncate(done);
                    break;
                }
            }
            // A reset after the server wrote its answer (it closed with
            // unread request bytes): keep what arrived.
            Err(e) if !raw.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => {
                writer.abort();
                return Err(e);
            }
        }
    }
    writer.abort();
    parse_response(&raw)
}

/// If `raw` holds a complete response whose length is known from its headers
/// (Content-Length or a finished chunked body), its length.
fn complete_response_len(raw: &[u8]) -> Option<usize> {
    let head_end = find(raw, b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&raw[..head_end]).ok()?;
    let mut content_length = None;
    let mut chunked = false;
    for line in head.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse::<usize>().ok();
            }
            if k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
        }
    }
    if chunked {
        return dechunk(&raw[head_end..]).map(|(_, used)| head_end + used);
    }
    let len = content_length?;
    (raw.len() >= head_end + len).then_some(head_end + len)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decode a complete chunked body; returns the body and the bytes consumed.
fn dechunk(mut data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = data.len();
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_str = std::str::from_utf8(&data[..line_end]).ok()?;
        let size_str = size_str.split(';').next()?.trim();
        let size = usize::from_str_radix(size_str, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            let end = find(data, b"\r\n")?;
            data = &data[end + 2..];
            return Some((body, total - data.len()));
        }
        if data.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what}: {:?}", String::from_utf8_lossy(raw)),
        )
    };
    let head_end = find(raw, b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| bad("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not HTTP/1.x"));
    }
    let status = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad status"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line.split_once(':').ok_or_else(|| bad("bad header line"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let rest = &raw[head_end + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(rest).ok_or_else(|| bad("truncated chunked body"))?.0
    } else if let Some((_, len)) =
        headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        if rest.len() < len {
            return Err(bad("truncated body"));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse { status, headers, body })
}

// ---------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the server sent next on a WebSocket.
#[derive(Debug)]
pub enum WsEvent {
    /// A text frame that parsed as JSON.
    Json(Value),
    /// A text frame that is not JSON.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A close frame.
    Close(Option<CloseFrame>),
    /// The stream ended (or failed) without a close frame.
    End(Option<String>),
}

/// A client WebSocket.
pub struct Ws {
    stream: WsStream,
}

impl Ws {
    /// Connect, failing the test on error.
    pub async fn connect(url: &str) -> Self {
        let (stream, _) = within(QUICK, "the WebSocket upgrade", async {
            tokio_tungstenite::connect_async(url)
                .await
                .unwrap_or_else(|e| panic!("WebSocket connect to {url}: {e}"))
        })
        .await;
        Self { stream }
    }

    /// Send a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        let text: String = text.into();
        within(QUICK, "a WebSocket send", self.stream.send(Message::text(text)))
            .await
            .expect("WebSocket send");
    }

    /// Send a JSON value as a text frame.
    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(value.to_string()).await;
    }

    /// The next data/close event, or `None` if nothing arrived within `limit`.
    /// Pings and pongs are skipped.
    pub async fn next_event(&mut self, limit: Duration) -> Option<WsEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next()).await;
            let Ok(item) = next else { return None };
            return Some(match item {
                None => WsEvent::End(None),
                Some(Err(e)) => WsEvent::End(Some(e.to_string())),
                Some(Ok(Message::Text(t))) => match serde_json::from_str(t.as_str()) {
                    Ok(v) => WsEvent::Json(v),
                    Err(_) => WsEvent::Text(t.as_str().to_owned()),
                },
                Some(Ok(Message::Binary(b))) => WsEvent::Binary(b.to_vec()),
                Some(Ok(Message::Close(frame))) => WsEvent::Close(frame),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            });
        }
    }

    /// The next frame, which must be a JSON array, within `limit`.
    pub async fn recv_json(&mut self, limit: Duration) -> Value {
        match self.next_event(limit).await {
            Some(WsEvent::Json(v)) => {
                assert!(v.is_array(), "server frame is not a JSON array: {v}");
                v
            }
            Some(other) => panic!("expected a JSON frame, got {other:?}"),
            None => panic!("no frame within {limit:?}"),
        }
    }

    /// Send `value` and return the next frame.
    pub async fn call(&mut self, value: &Value) -> Value {
        self.send_json(value).await;
        self.recv_json(QUICK).await
    }

    /// Close politely (errors ignored).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.close(None)).await;
    }
}
