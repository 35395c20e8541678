//! The two network transports. Each reports what comes back as [`Event`]s on its
//! own channel, so the driver hears nothing from a transport it has dropped.
//!
//! - WebSocket: one socket; frames leave in the order they are sent.
//! - Long-polling: HTTP POSTs on kept-alive connections. The driver sends at
//!   most one request per [`Lane`] at a time, so a client's messages cannot
//!   overtake one another on the way to the server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use faye_deflate::DeflateIo;
use faye_deflate::inflate::Inflater;
use faye_protocol::{Message, decode_batch};
use futures_util::{SinkExt as _, StreamExt as _};
use http::header::{
    CONTENT_TYPE, COOKIE, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SET_COOKIE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as Frame};

use crate::net::{Net, Target};
use crate::{Error, TransportKind};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the transports of one client share: where the server is, how to reach
/// it, and the headers and cookies every request carries.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) url: Uri,
    pub(crate) net: Net,
    pub(crate) headers: Mutex<HeaderMap>,
    /// Cookies the server set, by name; sent back on every request. One jar per
    /// client, and a client talks to one server.
    cookies: Mutex<BTreeMap<String, String>>,
    pub(crate) connect_timeout: Duration,
}

impl Endpoint {
    pub(crate) fn new(url: Uri, net: Net, headers: HeaderMap, connect_timeout: Duration) -> Self {
        Self { url, net, headers: Mutex::new(headers), cookies: Mutex::default(), connect_timeout }
    }

    /// The user's headers, and the cookies, onto a request.
    fn decorate(&self, headers: &mut HeaderMap) {
        for (name, value) in lock(&self.headers).iter() {
            headers.insert(name, value.clone());
        }
        let cookies = lock(&self.cookies);
        if !cookies.is_empty() {
            let line: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if let Ok(value) = HeaderValue::from_str(&line.join("; ")) {
                headers.insert(COOKIE, value);
            }
        }
    }

    /// Keeps the cookies a response sets (`Max-Age=0` or an empty value removes
    /// one). Attributes other than that are not kept: see docs/client.md.
    fn keep_cookies(&self, headers: &HeaderMap) {
        let mut cookies = lock(&self.cookies);
        for value in headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            let mut parts = value.split(';');
            let Some((name, val)) = parts.next().and_then(|p| p.split_once('=')) else { continue };
            let (name, val) = (name.trim(), val.trim());
            let expired =
                parts.any(|a| a.trim().eq_ignore_ascii_case("max-age=0")) || val.is_empty();
            if expired {
                cookies.remove(name);
            } else if !name.is_empty() {
                cookies.insert(name.to_owned(), val.to_owned());
            }
        }
    }

    async fn connect(&self, target: &Target) -> Result<crate::net::Stream, Error> {
        tokio::time::timeout(self.connect_timeout, self.net.connect(target))
            .await
            .map_err(|_| Error::Io(format!("connecting to {} timed out", target.authority())))?
    }
}

/// Which of a long-polling client's two request slots a batch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The held `/meta/connect`.
    Connect,
    /// Everything else, one request at a time.
    Other,
}

/// What a transport reports.
#[derive(Debug)]
pub(crate) enum Event {
    /// Messages from the server: replies and deliveries.
    Messages(Lane, Vec<Message>),
    /// A request failed: the messages it carried got no reply.
    Failed(String),
    /// The WebSocket closed or broke.
    Closed(String),
}

/// An open transport and the channel its events arrive on.
#[derive(Debug)]
pub(crate) struct Transport {
    pub(crate) kind: TransportKind,
    link: Link,
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
}

#[derive(Debug)]
enum Link {
    Ws {
        frames: mpsc::UnboundedSender<String>,
        _tasks: JoinSet<()>,
    },
    #[cfg(feature = "in-process")]
    Local {
        batches: mpsc::UnboundedSender<(Lane, Vec<Message>)>,
        _tasks: JoinSet<()>,
    },
    Lp {
        endpoint: Arc<Endpoint>,
        pool: Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>>,
        events: mpsc::UnboundedSender<Event>,
        tasks: JoinSet<()>,
    },
}

impl Transport {
    /// Opens a WebSocket to the endpoint (with the user's headers and the cookies
    /// on the upgrade request), offering permessage-deflate if `deflate`.
    pub(crate) async fn websocket(endpoint: Arc<Endpoint>, deflate: bool) -> Result<Self, Error> {
        let url = ws_url(&endpoint.url)?;
        let target = Target::of(&url)?;
        let upgrade = async {
            let mut stream = endpoint.connect(&target).await?;
            let agreed = upgrade(&endpoint, &url, &target, &mut stream, deflate).await?;
            Ok::<_, Error>((stream, agreed))
        };
        let (stream, agreed) = tokio::time::timeout(endpoint.connect_timeout, upgrade)
            .await
            .map_err(|_| Error::Io("the WebSocket upgrade timed out".into()))??;
        // tungstenite's default buffers are 128 KiB each; Bayeux frames are small.
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0)
            .max_message_size(Some(MAX_MESSAGE));
        let (events_tx, events) = mpsc::unbounded_channel();
        let (frames, frames_rx) = mpsc::unbounded_channel::<String>();
        let tasks = match agreed {
            Some(no_context_takeover) => {
                let inflater = Inflater::client(no_context_takeover, MAX_MESSAGE);
                let io = DeflateIo::new(stream, inflater);
                let ws = WebSocketStream::from_raw_socket(io, Role::Client, Some(config)).await;
                run_socket(ws, frames_rx, events_tx)
            }
            None => {
                let ws = WebSocketStream::from_raw_socket(stream, Role::Client, Some(config)).await;
                run_socket(ws, frames_rx, events_tx)
            }
        };
        let link = Link::Ws { frames, _tasks: tasks };
        Ok(Self { kind: TransportKind::WebSocket, link, events })
    }

    /// An in-process transport to `server`.
    #[cfg(feature = "in-process")]
    pub(crate) fn in_process(server: &dyn crate::in_process::Local) -> Self {
        let crate::in_process::Opened { batches, tasks, events } = server.open();
        Self {
            kind: TransportKind::InProcess,
            link: Link::Local { batches, _tasks: tasks },
            events,
        }
    }

    /// Long-polling on the endpoint. Nothing is opened until the first send.
    pub(crate) fn long_polling(endpoint: Arc<Endpoint>) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let link = Link::Lp { endpoint, pool: Arc::default(), events: tx, tasks: JoinSet::new() };
        Self { kind: TransportKind::LongPolling, link, events }
    }

    /// Sends a batch. Its replies, or its failure, come back as an [`Event`].
    /// `timeout` bounds a long-polling request (a WebSocket has one deadline per
    /// message, kept by the driver).
    pub(crate) fn send(&mut self, lane: Lane, batch: &[Message], timeout: Duration) {
        #[cfg(feature = "in-process")]
        if let Link::Local { batches, .. } = &self.link {
            let _ = batches.send((lane, batch.to_vec()));
            return;
        }
        let body = serde_json::to_string(batch).unwrap_or_else(|_| "[]".to_owned());
        match &mut self.link {
            Link::Ws { frames, .. } => {
                // A closed writer has reported Closed already.
                let _ = frames.send(body);
            }
            #[cfg(feature = "in-process")]
            Link::Local { .. } => {}
            Link::Lp { endpoint, pool, events, tasks } => {
                while tasks.try_join_next().is_some() {}
                let (endpoint, pool, tx) = (endpoint.clone(), pool.clone(), events.clone());
                tasks.spawn(async move {
                    let result = tokio::time::timeout(timeout, post(&endpoint, &pool, body)).await;
                    let event = match result {
                        Ok(Ok(messages)) => Event::Messages(lane, messages),
                        Ok(Err(e)) => Event::Failed(e.to_string()),
                        Err(_) => Event::Failed(format!("no answer within {timeout:?}")),
                    };
                    let _ = tx.send(event);
                });
            }
        }
    }
}

/// The largest message the client reads (inflated, if compressed).
const MAX_MESSAGE: usize = 64 << 20;

/// The largest upgrade response head read.
const MAX_HEAD: usize = 16 * 1024;

/// Sends the upgrade request on `stream` and reads the answer, leaving the stream
/// at the first byte after it. Returns whether permessage-deflate was agreed, and
/// if so whether the server compresses each message on its own.
async fn upgrade(
    endpoint: &Endpoint,
    url: &Uri,
    target: &Target,
    stream: &mut crate::net::Stream,
    deflate: bool,
) -> Result<Option<bool>, Error> {
    let key = tungstenite::handshake::client::generate_key();
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        target.authority()
    )
    .into_bytes();
    if deflate {
        head.extend_from_slice(
            b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        );
    }
    let mut headers = HeaderMap::new();
    endpoint.decorate(&mut headers);
    for (name, value) in &headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    stream.write_all(&head).await?;

    // Byte by byte up to the blank line: what follows is the server's frames.
    let mut reader = BufReader::with_capacity(1, stream);
    let mut status = String::new();
    reader.read_line(&mut status).await?;
    let code = status.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let mut response = HeaderMap::new();
    let mut read = status.len();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await?;
        read += n;
        if n == 0 || read > MAX_HEAD {
            return Err(Error::Http("the WebSocket upgrade response ended early".into()));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name.trim()), HeaderValue::try_from(value.trim()))
        {
            response.append(name, value);
        }
    }
    endpoint.keep_cookies(&response);
    if code != "101" {
        return Err(Error::Http(format!("upgrade refused: {}", status.trim_end())));
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    if response.get(SEC_WEBSOCKET_ACCEPT).and_then(|v| v.to_str().ok()) != Some(accept.as_str()) {
        return Err(Error::Http("the WebSocket upgrade has a wrong Sec-WebSocket-Accept".into()));
    }
    let extensions: Vec<&str> = response
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    match extensions.as_slice() {
        [] => Ok(None),
        [one] if deflate => {
            let mut params = one.split(';').map(str::trim);
            if params.next() != Some("permessage-deflate") {
                return Err(Error::Http(format!(
                    "the server chose an extension not offered: {one}"
                )));
            }
            // client_max_window_bits and server_max_window_bits need nothing: the
            // client sends uncompressed, and inflates with the largest window.
            Ok(Some(params.any(|p| p == "server_no_context_takeover")))
        }
        _ => Err(Error::Http(format!("the server chose extensions not offered: {extensions:?}"))),
    }
}

/// Runs a socket: one task writes queued frames (each batch of them flushed
/// once), one reads. Both report the end as [`Event::Closed`].
fn run_socket<S>(
    socket: WebSocketStream<S>,
    mut frames_rx: mpsc::UnboundedReceiver<String>,
    events_tx: mpsc::UnboundedSender<Event>,
) -> JoinSet<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = socket.split();
    let mut tasks = JoinSet::new();
    let tx = events_tx.clone();
    tasks.spawn(async move {
        while let Some(text) = frames_rx.recv().await {
            // Everything queued goes out before one flush.
            let mut result = sink.feed(Frame::text(text)).await;
            while result.is_ok()
                && let Ok(text) = frames_rx.try_recv()
            {
                result = sink.feed(Frame::text(text)).await;
            }
            if let Err(e) = result.and(sink.flush().await) {
                let _ = tx.send(Event::Closed(format!("WebSocket write: {e}")));
                return;
            }
        }
        let _ = sink.close().await;
    });
    tasks.spawn(async move {
        let why = loop {
            match stream.next().await {
                Some(Ok(Frame::Text(text))) => match decode_batch(text.as_bytes()) {
                    Ok(messages) => {
                        let _ = events_tx.send(Event::Messages(Lane::Other, messages));
                    }
                    Err(e) => break format!("the server sent a malformed frame: {e}"),
                },
                Some(Ok(Frame::Close(_))) | None => break "the WebSocket closed".to_owned(),
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("WebSocket read: {e}"),
            }
        };
        let _ = events_tx.send(Event::Closed(why));
    });
    tasks
}

/// The WebSocket URL of an HTTP endpoint: same host, port and path.
fn ws_url(url: &Uri) -> Result<Uri, Error> {
    let scheme = match url.scheme_str() {
        Some("http" | "ws") => "ws",
        Some("https" | "wss") => "wss",
        _ => return Err(Error::Url(format!("{url}: not an http(s) URL"))),
    };
    let authority = url.authority().ok_or_else(|| Error::Url(format!("{url}: no host")))?;
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{authority}{path}").parse().map_err(|e| Error::Url(format!("{url}: {e}")))
}

/// Idle connections kept per client for long-polling: one for the held connect,
/// one for everything else, and a spare.
const POOL: usize = 3;

/// POSTs `body` to the endpoint and returns the messages of the answer.
async fn post(
    endpoint: &Endpoint,
    pool: &Mutex<Vec<SendRequest<Full<Bytes>>>>,
    body: String,
) -> Result<Vec<Message>, Error> {
    let target = Target::of(&endpoint.url)?;
    let idle = {
        let mut pool = lock(pool);
        pool.retain(|s| !s.is_closed());
        pool.pop()
    };
    let mut sender = match idle {
        Some(s) => s,
        None => {
            let stream = endpoint.connect(&target).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| Error::Http(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            sender
        }
    };
    let path = endpoint.url.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::post(path)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Error::Url(e.to_string()))?;
    let headers = request.headers_mut();
    headers.insert(
        HOST,
        HeaderValue::from_str(&target.authority()).map_err(|e| Error::Url(e.to_string()))?,
    );
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    endpoint.decorate(headers);
    sender.ready().await.map_err(|e| Error::Io(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(|e| Error::Io(e.to_string()))?;
    endpoint.keep_cookies(response.headers());
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| Error::Io(e.to_string()))?;
    {
        let mut pool = lock(pool);
        if pool.len() < POOL && !sender.is_closed() {
            pool.push(sender);
        }
    }
    if !status.is_success() {
        return Err(Error::Http(format!("{status} from {}", endpoint.url)));
    }
    decode_batch(&body.to_bytes()).map_err(|e| Error::Http(format!("not a Bayeux answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ProxyRule;

    #[test]
    fn cookies_set_by_the_server_go_back_on_every_request() {
        let url: Uri = "http://127.0.0.1:1/bayeux".parse().unwrap();
        let endpoint = Endpoint::new(
            url,
            Net::new(&[], ProxyRule::Direct),
            HeaderMap::new(),
            Duration::from_secs(1),
        );
        let mut set = HeaderMap::new();
        set.append(SET_COOKIE, HeaderValue::from_static("session=abc; Path=/; HttpOnly"));
        set.append(SET_COOKIE, HeaderValue::from_static("lb=node2"));
        endpoint.keep_cookies(&set);
        let mut request = HeaderMap::new();
        endpoint.decorate(&mut request);
        assert_eq!(request[COOKIE], "lb=node2; session=abc");

        let mut expire = HeaderMap::new();
        expire.append(SET_COOKIE, HeaderValue::from_static("lb=x; Max-Age=0"));
        endpoint.keep_cookies(&expire);
        let mut request = HeaderMap::new();
        endpoint.decorate(&mut request);
        assert_eq!(request[COOKIE], "session=abc");
    }

    #[test]
    fn websocket_urls_keep_host_port_and_path() {
        let ws = |u: &str| ws_url(&u.parse().unwrap()).unwrap().to_string();
        assert_eq!(ws("http://h:8000/bayeux"), "ws://h:8000/bayeux");
        assert_eq!(ws("https://h/faye?x=1"), "wss://h/faye?x=1");
    }
}
