//! A write deadline on a connection: a peer that stops reading is dropped.
//!
//! hyper and tungstenite write until the socket's buffers are full, then wait for
//! the peer forever. [`WriteTimeout`] fails a write (or flush) that makes no
//! progress for the timeout, which ends the connection and frees what it holds:
//! a held reply, an EventSource stream, a WebSocket and its queue. The timer exists
//! only while a write is stuck, so an idle connection pays nothing for it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `inner`, whose writes fail with [`io::ErrorKind::TimedOut`] after `timeout`
/// without progress.
#[derive(Debug)]
pub(crate) struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Set while a write is waiting for the peer.
    stuck: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout, stuck: None }
    }

    /// Passes a ready result on (progress: the deadline is off), or starts or
    /// checks the deadline while the write waits.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stuck = None;
            return poll;
        }
        let timeout = self.timeout;
        let deadline = self.stuck.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            self.stuck = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer read nothing within the write timeout",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_fails_the_write_after_the_timeout() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut conn = WriteTimeout::new(near, Duration::from_secs(30));
        let start = tokio::time::Instant::now();
        // 64 bytes fit in the pipe; the rest waits for a reader that never reads.
        let error = conn.write_all(&[0; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        // Had the peer read, the write would have gone on.
        let mut conn = WriteTimeout::new(conn.inner, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut far, &mut sink).await.map(|_| sink.len())
        });
        conn.write_all(&[0; 1024]).await.unwrap();
        drop(conn);
        assert_eq!(reader.await.unwrap().unwrap(), 64 + 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_restarts_the_deadline() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut conn = WriteTimeout::new(near, Duration::from_secs(30));
        // The reader takes 64 bytes every 20 s: slow, but never 30 s without progress.
        let reader = tokio::spawn(async move {
            let mut buf = [0; 64];
            let mut total = 0;
            while total < 256 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                total += tokio::io::AsyncReadExt::read(&mut far, &mut buf).await.unwrap();
            }
            total
        });
        conn.write_all(&[0; 256]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 256);
    }
}
