//! Bytes and connections, recorded through the [`metrics`] facade for every
//! connection [`serve_with`](crate::serve_with) accepts: `faye_http_connections`
//! (open now, gauge), `faye_http_bytes_received_total` and
//! `faye_http_bytes_sent_total` (counters; TCP payload, so TLS records and
//! WebSocket frames included). Handles are looked up once per connection, so
//! each read or write costs one atomic add (nothing without a recorder).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use metrics::{Counter, Gauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Open connections (gauge).
pub const CONNECTIONS: &str = "faye_http_connections";
/// Bytes read from clients (counter).
pub const BYTES_RECEIVED: &str = "faye_http_bytes_received_total";
/// Bytes written to clients (counter).
pub const BYTES_SENT: &str = "faye_http_bytes_sent_total";

/// Describes these metrics to the installed recorder and registers them at zero.
pub fn describe() {
    metrics::describe_gauge!(CONNECTIONS, "HTTP connections open now (WebSockets included)");
    metrics::describe_counter!(BYTES_RECEIVED, metrics::Unit::Bytes, "Bytes read from clients");
    metrics::describe_counter!(BYTES_SENT, metrics::Unit::Bytes, "Bytes written to clients");
    metrics::gauge!(CONNECTIONS).increment(0.0);
    metrics::counter!(BYTES_RECEIVED).increment(0);
    metrics::counter!(BYTES_SENT).increment(0);
}

/// `inner`, counted.
pub(crate) struct Counted<S> {
    inner: S,
    open: Gauge,
    received: Counter,
    sent: Counter,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S) -> Self {
        let open = metrics::gauge!(CONNECTIONS);
        open.increment(1.0);
        Self {
            inner,
            open,
            received: metrics::counter!(BYTES_RECEIVED),
            sent: metrics::counter!(BYTES_SENT),
        }
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.received.increment(read as u64);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.sent.increment(n as u64);
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            self.sent.increment(n as u64);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
