//! Serving a [`FayeService`] on a TCP listener with hyper.

use std::future::Future;
use std::time::Duration;

use faye_engine::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::write_timeout::WriteTimeout;
use crate::{FayeService, RemoteAddr};

/// Adds the peer's address to each request of one connection.
struct WithPeer<E: Engine> {
    faye: FayeService<E>,
    peer: std::net::SocketAddr,
}

impl<E: Engine> Clone for WithPeer<E> {
    fn clone(&self) -> Self {
        Self { faye: self.faye.clone(), peer: self.peer }
    }
}

impl<E: Engine> tower_service::Service<http::Request<hyper::body::Incoming>> for WithPeer<E> {
    type Response =
        <FayeService<E> as tower_service::Service<http::Request<hyper::body::Incoming>>>::Response;
    type Error = std::convert::Infallible;
    type Future =
        <FayeService<E> as tower_service::Service<http::Request<hyper::body::Incoming>>>::Future;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<hyper::body::Incoming>) -> Self::Future {
        req.extensions_mut().insert(RemoteAddr(self.peer));
        self.faye.call(req)
    }
}

/// Serves `faye` on `listener` (HTTP/1.1, and h2c if [`FayeOptions::http2`](crate::FayeOptions::http2), with
/// WebSocket upgrades, a header timeout and a write timeout) until
/// `signal` completes, then shuts down: held connects are answered, sockets are
/// closed, and in-flight requests get up to five seconds to finish.
pub async fn serve<E: Engine>(
    listener: TcpListener,
    faye: FayeService<E>,
    signal: impl Future<Output = ()>,
) {
    let options = &faye.shared.options;
    let mut builder = Builder::new(TokioExecutor::new());
    // Without a timer hyper enforces no header timeout: a client sending one byte a
    // minute would hold its connection forever.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(options.header_timeout);
    if options.http2 {
        // HTTP/2 has no header timeout in hyper: pings find peers that went away.
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(options.header_timeout)
            .keep_alive_timeout(options.header_timeout);
    } else {
        // No sniffing for an HTTP/2 preface, which waits for the first bytes with no
        // timeout: HTTP/1.1 from the start, its header timeout included.
        builder = builder.http1_only();
    }
    let write_timeout = options.write_timeout;
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
        let service = TowerToHyperService::new(WithPeer { faye: faye.clone(), peer });
        let io = TokioIo::new(WriteTimeout::new(stream, write_timeout));
        let conn = builder.serve_connection_with_upgrades(io, service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = Duration::from_secs(5);
    faye.shutdown(grace).await;
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
}
