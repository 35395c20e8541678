//! Faye's HTTP surface as a tower [`Service`](tower_service::Service): POST and
//! JSON-P long-polling and WebSocket, answering as Faye 1.4.3's Node adapter does.
//!
//! [`FayeService`] handles requests whose path is under its mount (default
//! `/bayeux`, Faye's default) and answers 404 elsewhere. Its error type is
//! `Infallible`: every failure is an HTTP response (400 `Bad request` as in Faye, or
//! 413 past a size limit).
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use faye_engine::MemoryEngine;
//! use faye_http::{FayeOptions, FayeService};
//! use faye_server::{Server, ServerOptions};
//!
//! let server = Server::new(MemoryEngine::new(), ServerOptions::default());
//! let faye = FayeService::new(server, FayeOptions::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! faye_http::serve(listener, faye.clone(), std::future::pending()).await;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use faye_engine::Engine;
use faye_server::{RequestInfo, Server};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use tokio_util::task::TaskTracker;

mod assets;
mod cors;
pub mod counted;
// Public (and hidden) only for the fuzz target: see the module's docs.
#[doc(hidden)]
pub mod deflate;
mod event_source;
mod layer;
mod long_poll;
mod serve;
mod status;
mod websocket;
mod write_timeout;

pub use assets::CLIENT_JS;
pub use layer::{Attached, FayeLayer};
pub use serve::{ServeOptions, health, serve, serve_with};
pub use status::{STATUS_CHANNEL, TICK as STATUS_TICK};

/// The peer's address. [`serve`] adds it to each request's extensions; an app
/// serving [`FayeService`] itself may add it too, and extensions then see it in
/// [`RequestInfo::remote_addr`](faye_server::RequestInfo).
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub std::net::SocketAddr);

/// What extensions get to know about a request.
fn request_info(parts: http::request::Parts, transport: &'static str) -> Arc<RequestInfo> {
    request_info_from(parts, transport, None)
}

/// As [`request_info`], with the peer given by [`serve`] instead of found in the
/// request's extensions (inserting it there costs two allocations per request).
fn request_info_from(
    parts: http::request::Parts,
    transport: &'static str,
    peer: Option<RemoteAddr>,
) -> Arc<RequestInfo> {
    let peer = peer.or_else(|| parts.extensions.get::<RemoteAddr>().copied());
    Arc::new(RequestInfo {
        transport,
        remote_addr: peer.map(|a| a.0),
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
    })
}

/// The body of every response this crate writes.
pub type FayeBody = BoxBody<Bytes, Infallible>;

/// Transport settings.
#[derive(Debug, Clone)]
pub struct FayeOptions {
    mount: String,
    max_request_bytes: usize,
    max_batch: usize,
    ping: Option<Duration>,
    header_timeout: Duration,
    body_timeout: Duration,
    write_timeout: Duration,
    http2: bool,
    allowed_origins: Option<Vec<String>>,
    client_script: Option<assets::ClientScript>,
    websocket_deflate: bool,
}

impl Default for FayeOptions {
    fn default() -> Self {
        Self {
            mount: "/bayeux".into(),
            max_request_bytes: 1 << 20,
            max_batch: 1000,
            ping: None,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            http2: false,
            allowed_origins: None,
            client_script: Some(assets::ClientScript::embedded()),
            websocket_deflate: false,
        }
    }
}

impl FayeOptions {
    /// The path Faye answers under (Faye's `mount`, default `/bayeux`). A trailing
    /// `/` is ignored; `/` answers every path.
    pub fn mount(mut self, mount: impl Into<String>) -> Self {
        let mount: String = mount.into();
        let trimmed = mount.trim_end_matches('/');
        self.mount = if trimmed.is_empty() { "/".into() } else { trimmed.to_owned() };
        self
    }

    /// The largest request body, and the largest WebSocket message, in bytes
    /// (default 1 MiB; Faye has no limit). Larger requests get 413, larger WebSocket
    /// messages close the socket with code 1009.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// The most messages in one request batch (default 1000; Faye has no limit).
    pub fn max_batch(mut self, messages: usize) -> Self {
        self.max_batch = messages;
        self
    }

    /// How long [`serve`] waits for a request's headers (default 10 s; Faye has no
    /// limit). Slower connections are closed.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// How long a request body may take to arrive (default 30 s; Faye has no
    /// limit). Slower requests get 408.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// How long [`serve`] lets a write wait for a peer that reads nothing (default
    /// 30 s; Faye has no limit). Past it the connection is closed: a WebSocket, an
    /// EventSource stream or a held reply whose client stopped reading frees what
    /// it holds, and nothing else waits for it.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Whether [`serve`] also speaks cleartext HTTP/2 (h2c) (default off: Faye's
    /// clients and browsers use HTTP/1.1 on a cleartext port). Off, every
    /// connection is HTTP/1.1 from its first byte, so the header timeout applies
    /// from the start; on, HTTP/2 connections are kept alive by pings (every
    /// header timeout, dropped when unanswered for as long) and have the same
    /// write timeout.
    pub fn http2(mut self, on: bool) -> Self {
        self.http2 = on;
        self
    }

    /// Sends a WebSocket ping at this interval (Faye's `ping`; default none).
    pub fn ping(mut self, every: Option<Duration>) -> Self {
        self.ping = every.filter(|d| !d.is_zero());
        self
    }

    /// Origins whose pages may use the server (with credentials). By default, as in
    /// Faye, any origin is allowed. With a list, other origins get no CORS headers
    /// (the browser then refuses the reply), and their WebSocket upgrades,
    /// EventSource streams and JSON-P requests (judged by `Referer`) are answered
    /// 403; requests that name no origin, as non-browser clients' do, are allowed.
    /// Origins are compared exactly, e.g. `https://app.example.com`; list the
    /// server's own origin too, since browsers send it on same-origin WebSockets.
    pub fn allowed_origins<I, S>(mut self, origins: Option<I>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_origins = origins.map(|o| o.into_iter().map(Into::into).collect());
        self
    }

    /// Another browser client to serve at `<mount>/client.js` and `<mount>.js`
    /// (for example npm `faye`'s `client/faye-browser-min.js`) instead of
    /// faye-rs's own, [`CLIENT_JS`], served by default. Either is served with an
    /// `ETag` and `Cache-Control: public, no-cache` (caches revalidate, and get a
    /// `304` while it is unchanged).
    pub fn client_script(mut self, script: impl Into<Bytes>) -> Self {
        self.client_script = Some(assets::ClientScript::new(script.into()));
        self
    }

    /// Serves no browser client: `<mount>/client.js` and `<mount>.js` answer 404.
    pub fn without_client_script(mut self) -> Self {
        self.client_script = None;
        self
    }

    /// Negotiates WebSocket `permessage-deflate` (RFC 7692) with clients that offer
    /// it (default off; Faye's `websocketExtensions: [deflate]`). Compressed client
    /// messages are inflated, the size limit applying to the inflated size; server
    /// text messages of 128 bytes or more are sent compressed when that makes them
    /// shorter. Each server message is compressed on its own
    /// (`server_no_context_takeover`). Compressor and inflater are per thread, not
    /// per socket; a socket whose client compresses with context takeover
    /// (browsers do) keeps that client's window: the last 32 KiB it sent, or less
    /// while it has sent less. Offers asking for a `server_max_window_bits` of 9 to
    /// 15 are honoured; 8 is declined.
    pub fn websocket_deflate(mut self, on: bool) -> Self {
        self.websocket_deflate = on;
        self
    }

    /// The configured mount.
    pub fn get_mount(&self) -> &str {
        &self.mount
    }

    /// Whether `path` is one Faye answers: Faye's `^<mount>(/[^/]*)*(\.[^.]+)?$`,
    /// i.e. the mount itself, anything below it, or `<mount>.<ext>`.
    fn matches(&self, path: &str) -> bool {
        if self.mount == "/" {
            return true;
        }
        match path.strip_prefix(self.mount.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('.'),
            None => false,
        }
    }
}

/// Faye's HTTP and WebSocket endpoint over a [`Server`]. Cheap to clone.
pub struct FayeService<E: Engine> {
    shared: Arc<Shared<E>>,
}

struct Shared<E: Engine> {
    server: Server<E>,
    options: FayeOptions,
    /// WebSocket tasks, so that shutdown can wait for their close frames.
    sockets: TaskTracker,
}

impl<E: Engine> std::fmt::Debug for FayeService<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FayeService")
            .field("server", &self.shared.server)
            .field("options", &self.shared.options)
            .field("sockets", &self.shared.sockets.len())
            .finish()
    }
}

impl<E: Engine> Clone for FayeService<E> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

impl<E: Engine> FayeService<E> {
    /// Serves `server` with `options`.
    pub fn new(server: Server<E>, options: FayeOptions) -> Self {
        Self { shared: Arc::new(Shared { server, options, sockets: TaskTracker::new() }) }
    }

    /// The Bayeux server behind the endpoint.
    pub fn server(&self) -> &Server<E> {
        &self.shared.server
    }

    /// Shuts down: answers held connects, closes every WebSocket (waiting up to
    /// `grace` for them to finish) and stops the engine.
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.server.shutdown().await;
        self.shared.sockets.close();
        let _ = tokio::time::timeout(grace, self.shared.sockets.wait()).await;
    }

    /// Answers `req`; `peer` is the peer's address when [`serve`] passes it
    /// directly: it is added to the request's extensions only on the paths
    /// that read it from there (a long-poll POST takes it as it is).
    async fn handle<B>(self, req: Request<B>, peer: Option<RemoteAddr>) -> Response<FayeBody>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let opts = &self.shared.options;
        if !opts.matches(req.uri().path()) {
            let hint = format!("Sure you're not looking for {} ?", opts.mount);
            return text(StatusCode::NOT_FOUND, hint);
        }
        if assets::is_asset(req.uri().path()) {
            return assets::serve(opts, req.uri().path(), req.headers());
        }
        if cors::is_preflight(req.method(), req.headers()) {
            return cors::preflight(opts, req.headers());
        }
        let with_peer = |mut req: Request<B>| {
            if let Some(peer) = peer {
                req.extensions_mut().insert(peer);
            }
            req
        };
        if websocket::is_upgrade(&req) {
            return websocket::upgrade(self, with_peer(req));
        }
        if event_source::is_event_source(&req) {
            return event_source::open(&self, with_peer(req)).await;
        }
        match *req.method() {
            Method::POST => long_poll::post(&self, req, peer).await,
            Method::GET => long_poll::get(&self, with_peer(req)).await,
            _ => bad_request(),
        }
    }
}

impl<E, B> tower_service::Service<Request<B>> for FayeService<E>
where
    E: Engine,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<FayeBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req, None).await) })
    }
}

fn full(body: impl Into<Bytes>) -> FayeBody {
    Full::new(body.into()).boxed()
}

/// A `text/plain` response.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<FayeBody> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Faye's answer to anything it cannot parse.
fn bad_request() -> Response<FayeBody> {
    text(StatusCode::BAD_REQUEST, "Bad request")
}
