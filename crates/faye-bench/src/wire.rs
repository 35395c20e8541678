//! The Bayeux wire: the target URL, TCP/WebSocket connections from chosen source
//! addresses, HTTP/1.1 (hyper's client) for long-polling, message encoding, and a
//! fast scan of received frames for benchmark deliveries.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use memchr::memmem;
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A WebSocket to the server.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// How long any single protocol exchange during setup may take.
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the server is: a loopback address only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    /// `host:port` as sent in `Host`.
    pub(crate) authority: String,
    /// The mount path, e.g. `/bayeux`.
    pub(crate) path: String,
}

impl Target {
    /// Parses `http://HOST:PORT/PATH` (or `ws://`). The host must be a loopback
    /// address (127.0.0.0/8, ::1) or `localhost`: this tool only loads servers on
    /// this machine.
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("ws://"))
            .with_context(|| format!("{url}: only http:// (or ws://) URLs are supported"))?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, p) = h.split_once(']').context("unterminated [ in host")?;
            (h, p.strip_prefix(':').unwrap_or(""))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, p),
                None => (hostport, ""),
            }
        };
        let port: u16 = if port.is_empty() { 80 } else { port.parse().context("bad port")? };
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse().with_context(|| format!("{host}: give an IP address or localhost"))?
        };
        ensure!(
            ip.is_loopback(),
            "{ip} is not a loopback address: faye-bench only loads servers on this machine"
        );
        let path = path.split(['?', '#']).next().unwrap_or("/").to_owned();
        Ok(Self { addr: SocketAddr::new(ip, port), authority: hostport.to_owned(), path })
    }
}

/// The `n`th source address to spread connections over: 127.0.0.1, 127.0.0.2, …
/// (`None` for IPv6 targets, which have one loopback address).
pub(crate) fn source_addr(target: &Target, spread: usize, n: usize) -> Option<IpAddr> {
    if spread <= 1 || !target.addr.is_ipv4() {
        return None;
    }
    let x = (n % spread) as u32 + 1;
    Some(IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + x)))
}

/// A TCP connection to the target, from `source` if given.
pub(crate) async fn tcp_connect(
    target: &Target,
    source: Option<IpAddr>,
) -> anyhow::Result<TcpStream> {
    let socket = if target.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).with_context(|| format!("cannot bind {ip}"))?;
    }
    let stream =
        socket.connect(target.addr).await.with_context(|| format!("connect {}", target.addr))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A WebSocket to the target's mount, with small buffers (8 KiB read, writes
/// flushed at once) so that tens of thousands fit in memory.
pub(crate) async fn ws_connect(target: &Target, source: Option<IpAddr>) -> anyhow::Result<Ws> {
    let stream = tcp_connect(target, source).await?;
    let url = format!("ws://{}{}", target.authority, target.path);
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024).write_buffer_size(0);
    let (ws, _) = tokio::time::timeout(
        SETUP_TIMEOUT,
        tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config)),
    )
    .await
    .context("WebSocket upgrade timed out")?
    .context("WebSocket upgrade")?;
    Ok(ws)
}

/// Sends one text frame.
pub(crate) async fn ws_send(ws: &mut Ws, text: String) -> anyhow::Result<()> {
    ws.send(WsMessage::text(text)).await.context("WebSocket send")
}

/// The next text frame's bytes; `None` when the socket closed.
pub(crate) async fn ws_recv(
    ws: &mut Ws,
) -> anyhow::Result<Option<tokio_tungstenite::tungstenite::Bytes>> {
    loop {
        match ws.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(e).context("WebSocket receive"),
            Some(Ok(WsMessage::Text(t))) => return Ok(Some(t.into())),
            Some(Ok(WsMessage::Binary(b))) => return Ok(Some(b)),
            Some(Ok(WsMessage::Close(_))) => return Ok(None),
            Some(Ok(_)) => {}
        }
    }
}

/// A kept-alive HTTP/1.1 connection (hyper's client) for POSTing Bayeux
/// batches. One connection per session, opened from its chosen source address,
/// so hyper's connection-level client rather than a pool.
#[derive(Debug)]
pub(crate) struct HttpConn {
    sender: SendRequest<Full<Bytes>>,
    /// Drives the connection; aborted on drop so that the socket closes at once,
    /// even with a held connect in flight (as a server sees a client go away).
    conn: JoinHandle<()>,
    uri: Uri,
    host: HeaderValue,
}

impl HttpConn {
    /// Connects to `target`, from `source` if given.
    pub(crate) async fn connect(target: &Target, source: Option<IpAddr>) -> anyhow::Result<Self> {
        let stream = tcp_connect(target, source).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        let conn = tokio::spawn(async move {
            // Its end (or failure) surfaces as the next request's error.
            let _ = conn.await;
        });
        let uri = target.path.parse().with_context(|| format!("bad path {:?}", target.path))?;
        let host = HeaderValue::from_str(&target.authority).context("bad host")?;
        Ok(Self { sender, conn, uri, host })
    }

    /// POSTs `body` and returns the response body (status 200 required).
    pub(crate) async fn post(&mut self, body: &str) -> anyhow::Result<Bytes> {
        let mut request = Request::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(header::HOST, self.host.clone());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.sender.ready().await.context("HTTP connection")?;
        let response = self.sender.send_request(request).await.context("HTTP request")?;
        let status = response.status();
        let body = response.into_body().collect().await.context("HTTP read")?.to_bytes();
        if status != StatusCode::OK {
            bail!("HTTP {}: {}", status.as_u16(), String::from_utf8_lossy(&body));
        }
        Ok(body)
    }
}

impl HttpConn {
    /// GETs `path` with `Accept: text/event-stream` and returns the body as it
    /// streams (status 200 required): an EventSource.
    pub(crate) async fn event_stream(&mut self, path: &str) -> anyhow::Result<EventStream> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = path.parse().with_context(|| format!("bad path {path:?}"))?;
        let headers = request.headers_mut();
        headers.insert(header::HOST, self.host.clone());
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        self.sender.ready().await.context("HTTP connection")?;
        let response = self.sender.send_request(request).await.context("HTTP request")?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.into_body().collect().await.context("HTTP read")?.to_bytes();
            bail!("EventSource: HTTP {}: {}", status.as_u16(), String::from_utf8_lossy(&body));
        }
        Ok(EventStream { body: response.into_body(), pending: Vec::new() })
    }
}

/// An EventSource response body, handed out in whole lines.
#[derive(Debug)]
pub(crate) struct EventStream {
    body: hyper::body::Incoming,
    /// The start of a line not yet complete.
    pending: Vec<u8>,
}

impl EventStream {
    /// The next run of complete lines (`data: [...]` events, comments, blank
    /// lines), so that a delivery split over two chunks is read whole; `None`
    /// when the stream ended.
    pub(crate) async fn next_lines(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        loop {
            let Some(frame) = self.body.frame().await else { return Ok(None) };
            let Ok(data) = frame.context("EventSource read")?.into_data() else { continue };
            if let Some(lines) = take_lines(&mut self.pending, &data) {
                return Ok(Some(lines));
            }
        }
    }
}

/// Appends `chunk` to `pending` and takes everything up to its last newline
/// (`None` while no line is complete). JSON has no raw newlines, so an event's
/// `data:` line is complete at its newline.
fn take_lines(pending: &mut Vec<u8>, chunk: &[u8]) -> Option<Vec<u8>> {
    pending.extend_from_slice(chunk);
    let end = memchr::memrchr(b'\n', pending)? + 1;
    let rest = pending.split_off(end);
    Some(std::mem::replace(pending, rest))
}

impl Drop for HttpConn {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// One benchmark message as received: the `"_fb":"ID:P:ROOM:T"` marker inside
/// `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marker {
    /// Unique in the run; a publisher's ids increase in its send order.
    pub(crate) id: u64,
    /// Index of the publisher connection that sent it.
    pub(crate) publisher: u32,
    /// Index of the channel it was published to.
    pub(crate) room: u32,
    /// Send time, ns since the process epoch.
    pub(crate) t_ns: u64,
}

const MARKER: &[u8] = b"\"_fb\"";

/// The `data` of a benchmark message: the marker, then `pad` bytes of text.
pub(crate) fn data_json(d: Marker, pad: &str) -> String {
    format!("{{\"_fb\":\"{}:{}:{}:{}\",\"chat\":\"{pad}\"}}", d.id, d.publisher, d.room, d.t_ns)
}

fn parse_marker(rest: &[u8]) -> Option<Marker> {
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while rest.get(*i).is_some_and(|b| b.is_ascii_whitespace()) {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if rest.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    skip_ws(&mut i);
    if rest.get(i) != Some(&b'"') {
        return None;
    }
    i += 1;
    let mut fields = [0u64; 4];
    for (k, field) in fields.iter_mut().enumerate() {
        let start = i;
        while let Some(b) = rest.get(i).filter(|b| b.is_ascii_digit()) {
            *field = field.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            i += 1;
        }
        if i == start {
            return None;
        }
        let sep = if k == 3 { b'"' } else { b':' };
        if rest.get(i) != Some(&sep) {
            return None;
        }
        i += 1;
    }
    Some(Marker {
        id: fields[0],
        publisher: u32::try_from(fields[1]).ok()?,
        room: u32::try_from(fields[2]).ok()?,
        t_ns: fields[3],
    })
}

/// Calls `f` for every benchmark delivery in a frame or response body (a JSON
/// array of any number of messages); returns how many markers were malformed.
/// This scans bytes instead of parsing JSON: the generator shares the CPU with
/// the server, and a full parse of every delivery would cost more than the
/// server's work.
pub(crate) fn scan_deliveries(frame: &[u8], mut f: impl FnMut(Marker)) -> u64 {
    let mut malformed = 0;
    for at in memmem::find_iter(frame, MARKER) {
        match parse_marker(&frame[at + MARKER.len()..]) {
            Some(d) => f(d),
            None => malformed += 1,
        }
    }
    malformed
}

/// Whether a frame holds a `/meta/connect` reply (which must be renewed).
pub(crate) fn has_connect_reply(frame: &[u8]) -> bool {
    memmem::find(frame, b"\"/meta/connect\"").is_some()
}

/// How many `"successful":true` and `"successful":false` a reply frame holds.
pub(crate) fn count_replies(frame: &[u8]) -> (u64, u64) {
    let ok = memmem::find_iter(frame, b"\"successful\":true").count() as u64;
    let failed = memmem::find_iter(frame, b"\"successful\":false").count() as u64;
    (ok, failed)
}

/// A JSON string literal.
pub(crate) fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// The handshake request.
/// The id of every handshake (`h`, 17 in base 36); a publisher's messages
/// follow it: `i`, `j`, ….
pub(crate) const HANDSHAKE_ID: u64 = 17;

/// Appends `n` in base 36 (Faye's message ids).
pub(crate) fn push_base36(out: &mut String, n: u64) {
    let mut digits = [0u8; 13];
    let (mut n, mut i) = (n, digits.len());
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[i..]).expect("ascii"));
}

pub(crate) fn handshake_json(connection_type: &str) -> String {
    format!(
        "[{{\"channel\":\"/meta/handshake\",\"version\":\"1.0\",\"supportedConnectionTypes\":[{}],\"id\":\"h\"}}]",
        json_str(connection_type)
    )
}

/// Subscriptions to `channels`, one message each, in one batch.
pub(crate) fn subscribe_json(client_id: &str, channels: &[&str]) -> String {
    let cid = json_str(client_id);
    let msgs: Vec<String> = channels
        .iter()
        .enumerate()
        .map(|(i, ch)| {
            format!(
                "{{\"channel\":\"/meta/subscribe\",\"clientId\":{cid},\"subscription\":{},\"id\":\"s{i}\"}}",
                json_str(ch)
            )
        })
        .collect();
    format!("[{}]", msgs.join(","))
}

/// A `/meta/connect`.
pub(crate) fn connect_json(client_id: &str, connection_type: &str, n: u64) -> String {
    format!(
        "[{{\"channel\":\"/meta/connect\",\"clientId\":{},\"connectionType\":{},\"id\":\"c{n}\"}}]",
        json_str(client_id),
        json_str(connection_type)
    )
}

/// A `/meta/disconnect`.
pub(crate) fn disconnect_json(client_id: &str) -> String {
    format!(
        "[{{\"channel\":\"/meta/disconnect\",\"clientId\":{},\"id\":\"d\"}}]",
        json_str(client_id)
    )
}

#[derive(Deserialize)]
struct Reply {
    channel: Option<String>,
    successful: Option<bool>,
    #[serde(rename = "clientId")]
    client_id: Option<String>,
    error: Option<String>,
}

/// The clientId from a handshake reply.
pub(crate) fn parse_handshake(body: &[u8]) -> anyhow::Result<String> {
    let replies: Vec<Reply> =
        serde_json::from_slice(body).context("handshake reply is not a JSON array")?;
    let reply = replies
        .into_iter()
        .find(|r| r.channel.as_deref() == Some("/meta/handshake"))
        .context("no handshake reply")?;
    match (reply.successful, reply.client_id) {
        (Some(true), Some(id)) => Ok(id),
        _ => bail!("handshake failed: {}", reply.error.unwrap_or_default()),
    }
}

/// Checks that a subscribe batch succeeded: `expected` successful replies.
pub(crate) fn check_subscribed(body: &[u8], expected: usize) -> anyhow::Result<()> {
    let replies: Vec<Reply> =
        serde_json::from_slice(body).context("subscribe reply is not a JSON array")?;
    let mut ok = 0;
    for r in replies.iter().filter(|r| r.channel.as_deref() == Some("/meta/subscribe")) {
        match r.successful {
            Some(true) => ok += 1,
            _ => bail!("subscribe failed: {}", r.error.clone().unwrap_or_default()),
        }
    }
    ensure!(ok == expected, "{ok} of {expected} subscriptions answered");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_base_36_after_the_handshake() {
        let mut s = String::new();
        for n in [HANDSHAKE_ID, HANDSHAKE_ID + 1, 35, 36, 36 * 36 + 1] {
            push_base36(&mut s, n);
            s.push(' ');
        }
        assert_eq!(s, "h i z 10 101 ");
        assert!(handshake_json("websocket").contains("\"id\":\"h\""));
    }

    #[test]
    fn targets_must_be_loopback() {
        let t = Target::parse("http://127.0.0.1:8000/bayeux").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(t.authority, "127.0.0.1:8000");
        assert_eq!(t.path, "/bayeux");
        assert_eq!(Target::parse("http://localhost:9/x?y").unwrap().path, "/x");
        assert_eq!(Target::parse("ws://[::1]:80/b").unwrap().addr, "[::1]:80".parse().unwrap());
        assert_eq!(Target::parse("http://127.1.2.3").unwrap().addr.port(), 80);
        assert!(Target::parse("http://10.0.0.1:8000/bayeux").is_err());
        assert!(Target::parse("http://192.168.1.1/bayeux").is_err());
        assert!(Target::parse("http://example.com/bayeux").is_err());
        assert!(Target::parse("https://127.0.0.1/bayeux").is_err());
    }

    #[test]
    fn source_addresses_cycle_over_127_0_0_x() {
        let t = Target::parse("http://127.0.0.1:1/b").unwrap();
        let ip = |n| source_addr(&t, 4, n).unwrap().to_string();
        assert_eq!(ip(0), "127.0.0.1");
        assert_eq!(ip(3), "127.0.0.4");
        assert_eq!(ip(4), "127.0.0.1");
        assert_eq!(source_addr(&t, 1, 7), None);
    }

    #[test]
    fn deliveries_are_found_in_batched_frames() {
        let a = Marker { id: 7, publisher: 1, room: 42, t_ns: 123_456_789 };
        let b = Marker { id: 8, publisher: 0, room: 3, t_ns: 5 };
        let frame = format!(
            "[{{\"channel\":\"/meta/connect\",\"successful\":true}},{{\"channel\":\"/b/r42\",\"data\":{},\"id\":\"x\"}},{{\"data\":{{\"chat\":\"x\", \"_fb\" : \"8:0:3:5\"}},\"channel\":\"/b/r3\"}},{{\"data\":{{\"_fb\":\"1:2\"}}}}]",
            data_json(a, "xxxx")
        );
        let mut got = Vec::new();
        let malformed = scan_deliveries(frame.as_bytes(), |d| got.push(d));
        assert_eq!(got, vec![a, b]);
        assert_eq!(malformed, 1);
        assert!(has_connect_reply(frame.as_bytes()));
        assert!(!has_connect_reply(b"[{\"channel\":\"/meta/connectx\"}]"));
    }

    #[test]
    fn event_stream_lines_are_taken_whole() {
        let mut pending = Vec::new();
        assert_eq!(
            take_lines(&mut pending, b"retry: 5000\r\n\r\ndata: [{\"_fb\":\"1:0"),
            Some(b"retry: 5000\r\n\r\n".to_vec())
        );
        assert_eq!(take_lines(&mut pending, b":0:5\"}]"), None);
        let lines = take_lines(&mut pending, b"\r\n\r\n").unwrap();
        assert!(pending.is_empty());
        let mut got = Vec::new();
        assert_eq!(scan_deliveries(&lines, |d| got.push(d)), 0);
        assert_eq!(got, vec![Marker { id: 1, publisher: 0, room: 0, t_ns: 5 }]);
    }

    #[test]
    fn generated_requests_are_valid_json() {
        for s in [
            handshake_json("websocket"),
            subscribe_json("abc\"d", &["/a", "/b/c"]),
            connect_json("abc", "long-polling", 3),
            disconnect_json("abc"),
        ] {
            let v: serde_json::Value = serde_json::from_str(&s).unwrap();
            assert!(v.is_array(), "{s}");
        }
    }

    #[test]
    fn handshake_and_subscribe_replies_are_checked() {
        let ok = br#"[{"id":"h","channel":"/meta/handshake","successful":true,"version":"1.0","clientId":"abc","advice":{}}]"#;
        assert_eq!(parse_handshake(ok).unwrap(), "abc");
        let bad = br#"[{"channel":"/meta/handshake","successful":false,"error":"301::x"}]"#;
        assert!(parse_handshake(bad).is_err());
        let subs = br#"[{"channel":"/meta/subscribe","successful":true},{"channel":"/meta/subscribe","successful":true}]"#;
        assert!(check_subscribed(subs, 2).is_ok());
        assert!(check_subscribed(subs, 3).is_err());
        assert_eq!(count_replies(subs), (2, 0));
    }
}
