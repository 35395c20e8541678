//! Serving a [`FayeService`] on a TCP listener with hyper.

use std::future::Future;
use std::time::Duration;

use faye_engine::Engine;
use http::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::counted::Counted;
use crate::write_timeout::WriteTimeout;
use crate::{FayeBody, FayeService, RemoteAddr, text};

/// How [`serve_with`] serves, besides the [`FayeOptions`](crate::FayeOptions).
#[derive(Clone)]
pub struct ServeOptions {
    drain_timeout: Duration,
    health: bool,
    landing_page: bool,
    status_page: bool,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("ServeOptions");
        d.field("drain_timeout", &self.drain_timeout)
            .field("health", &self.health)
            .field("landing_page", &self.landing_page)
            .field("status_page", &self.status_page);
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls.is_some());
        d.finish()
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(10),
            health: false,
            landing_page: false,
            status_page: false,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ServeOptions {
    /// The longest a graceful stop takes (default 10 s): from the signal, held
    /// connects are answered at once (their clients reconnect, to another
    /// server once this one stops accepting), WebSockets are closed, and requests
    /// in flight get what is left of this bound; then [`serve_with`] returns.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Also answers `/healthz` (200 while the process runs) and `/readyz` (200
    /// when the engine answers and the server is not stopping, 503 with the
    /// reason otherwise), outside the Bayeux mount; see [`health`]. Off by default.
    pub fn health(mut self, on: bool) -> Self {
        self.health = on;
        self
    }

    /// Answers `/` (outside a mount other than `/`) with a short HTML page naming
    /// the endpoint, the browser client, the health checks and, when on, the
    /// status page. Off by default.
    pub fn landing_page(mut self, on: bool) -> Self {
        self.landing_page = on;
        self
    }

    /// Serves a live status page at `/status`: clients by connection type,
    /// channels and their subscriber counts, and messages in and out per second
    /// as a chart, updated twice a second. The page runs faye-rs's browser client
    /// (so the server must serve it, as it does by default); the server publishes
    /// its numbers on [`STATUS_CHANNEL`](crate::STATUS_CHANNEL) while someone is
    /// subscribed, and anyone who can reach the server can subscribe (see
    /// `docs/security.md`). It installs a server extension, so deliveries leave
    /// the no-extension fast path. Off by default.
    pub fn status_page(mut self, on: bool) -> Self {
        self.status_page = on;
        self
    }

    /// Terminates TLS with `acceptor` (HTTP/1.1, and HTTP/2 when the client asks
    /// for `h2` by ALPN: list `h2` and `http/1.1` in the rustls config's
    /// `alpn_protocols`). The handshake must finish within the header timeout.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }
}

/// How long `/readyz` waits for the engine.
const READY_WITHIN: Duration = Duration::from_secs(2);

/// The answer to a health check, if `req` is one: `/healthz` (200, the process
/// is alive) or `/readyz` (200 when [`Server::ready`](faye_server::Server::ready),
/// else 503 with the reason); `None` for any other path. For an app's own
/// listeners ([`serve_with`] answers them itself with
/// [`ServeOptions::health`]).
pub async fn health<E: Engine, B>(
    faye: &FayeService<E>,
    req: &Request<B>,
) -> Option<Response<FayeBody>> {
    match req.uri().path() {
        "/healthz" => Some(text(StatusCode::OK, "ok\n")),
        "/readyz" => Some(match faye.server().ready(READY_WITHIN).await {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
        }),
        _ => None,
    }
}

/// Adds the peer's address to each request of one connection.
struct WithPeer<E: Engine> {
    faye: FayeService<E>,
    peer: std::net::SocketAddr,
    health: bool,
    landing: bool,
    status: bool,
}

impl<E: Engine> Clone for WithPeer<E> {
    fn clone(&self) -> Self {
        Self {
            faye: self.faye.clone(),
            peer: self.peer,
            health: self.health,
            landing: self.landing,
            status: self.status,
        }
    }
}

impl<E: Engine> tower_service::Service<Request<hyper::body::Incoming>> for WithPeer<E> {
    type Response = Response<FayeBody>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Response<FayeBody>, std::convert::Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<hyper::body::Incoming>) -> Self::Future {
        let peer = RemoteAddr(self.peer);
        let faye = self.faye.clone();
        let (health, landing, status) = (self.health, self.landing, self.status);
        Box::pin(async move {
            if health && let Some(res) = self::health(&faye, &req).await {
                return Ok(res);
            }
            let mount = faye.shared.options.get_mount();
            let path = req.uri().path();
            let page = req.method() == http::Method::GET || req.method() == http::Method::HEAD;
            if page && status && path == "/status" {
                return Ok(crate::status::status_page(mount));
            }
            if page && landing && mount != "/" && path == "/" {
                return Ok(crate::status::landing_page(mount, status));
            }

            Ok(faye.handle(req, Some(peer)).await)
        })
    }
}

/// Serves `faye` on `listener` (HTTP/1.1, and h2c if [`FayeOptions::http2`](crate::FayeOptions::http2), with
/// WebSocket upgrades, a header timeout and a write timeout) until
/// `signal` completes, then shuts down: held connects are answered, sockets are
/// closed, and in-flight requests get up to ten seconds to finish. The same as
/// [`serve_with`] with the default [`ServeOptions`].
pub async fn serve<E: Engine>(
    listener: TcpListener,
    faye: FayeService<E>,
    signal: impl Future<Output = ()>,
) {
    serve_with(listener, faye, signal, ServeOptions::default()).await;
}

/// As [`serve`], with `options`: health checks, TLS, the drain bound.
///
/// When `signal` completes the server drains: it stops accepting connections,
/// [`Server::ready`](faye_server::Server::ready) turns false (so `/readyz`
/// answers 503), keep-alive is turned off on every HTTP connection, held
/// connects are answered at once with `reconnect: retry` advice (their clients
/// come back on a new connection, which a load balancer sends to another
/// server), WebSockets are closed, and requests in flight may finish. It
/// returns when all is done or [`ServeOptions::drain_timeout`] after the signal,
/// whichever is first.
pub async fn serve_with<E: Engine>(
    listener: TcpListener,
    faye: FayeService<E>,
    signal: impl Future<Output = ()>,
    serve_options: ServeOptions,
) {
    let options = &faye.shared.options;
    let header_timeout = options.header_timeout;
    let mut builder = Builder::new(TokioExecutor::new());
    // Without a timer hyper enforces no header timeout: a client sending one byte a
    // minute would hold its connection forever.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    // HTTP/2 has no header timeout in hyper: pings find peers that went away.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_timeout)
        .keep_alive_timeout(header_timeout);
    // Cleartext HTTP/2 is sniffed from the first bytes, which waits with no
    // timeout: unless asked for, HTTP/1.1 from the start, header timeout included.
    // Over TLS, ALPN says which one it is.
    let cleartext = if options.http2 { builder.clone() } else { builder.clone().http1_only() };
    #[cfg(feature = "tls")]
    let (h1, h2) = (builder.clone().http1_only(), builder.clone().http2_only());
    let write_timeout = options.write_timeout;
    let health = serve_options.health;
    let (landing, status) = (serve_options.landing_page, serve_options.status_page);
    if status {
        crate::status::start(faye.server());
    }
    let graceful = GracefulShutdown::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(WithPeer {
            faye: faye.clone(),
            peer,
            health,
            landing,
            status,
        });
        let io = WriteTimeout::new(Counted::new(stream), write_timeout);
        #[cfg(feature = "tls")]
        if let Some(acceptor) = &serve_options.tls {
            let acceptor = acceptor.clone();
            let watcher = graceful.watcher();
            let (h1, h2) = (h1.clone(), h2.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(header_timeout, acceptor.accept(io)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                };
                let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let builder = if is_h2 { h2 } else { h1 };
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
            continue;
        }
        let conn = cleartext.serve_connection_with_upgrades(TokioIo::new(io), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let bound = serve_options.drain_timeout;
    tracing::info!(?bound, "draining");
    let drained = async {
        // Keep-alive off first, so that the answers to held connects close their
        // connections and the clients come back on new ones (to another server).
        tokio::join!(graceful.shutdown(), faye.shutdown(bound));
    };
    if tokio::time::timeout(bound, drained).await.is_err() {
        tracing::warn!(?bound, "drain timeout: closing what is left");
    }
}
