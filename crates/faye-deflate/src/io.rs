//! The thin async adapter: moves bytes between the upgraded connection and the
//! [`Inflater`], and from it to tungstenite. Writes pass through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::inflate::{Error, Inflater};

/// The upgraded connection as tungstenite should see it: the peer's compressed
/// messages arrive inflated (see [`Inflater`]). When the inflater fails, reads
/// fail with [`io::ErrorKind::InvalidData`] once what it handed out is read, and
/// tungstenite closes the socket as for any frame it refuses (a close frame
/// without a code); a message over the limit makes tungstenite fail with a
/// capacity error first, and the socket is closed with 1009.
#[derive(Debug)]
pub struct DeflateIo<S> {
    inner: S,
    inflater: Inflater,
    /// What tungstenite reads next, in order.
    ready: [Bytes; 2],
    /// Once the connection ended (`Ok`) or the inflater failed: what reads return
    /// once `ready` is read.
    end: Option<Result<(), Error>>,
}

impl<S> DeflateIo<S> {
    /// Wraps `inner` to read the peer's messages with `inflater`.
    pub fn new(inner: S, inflater: Inflater) -> Self {
        Self { inner, inflater, ready: [Bytes::new(), Bytes::new()], end: None }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for DeflateIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Some(part) = this.ready.iter_mut().find(|part| !part.is_empty()) {
                let n = buf.remaining().min(part.len());
                buf.put_slice(&part[..n]);
                part.advance(n);
                return Poll::Ready(Ok(()));
            }
            match this.end {
                Some(Ok(())) => return Poll::Ready(Ok(())),
                Some(Err(e)) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
                None => {}
            }
            match this.inflater.poll() {
                Ok(Some(output)) => {
                    this.ready = output.into_wire(this.inflater.limit(), this.inflater.role());
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    this.end = Some(Err(e));
                    continue;
                }
            }
            let mut chunk = [0u8; 4096];
            let mut chunk = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
            if chunk.filled().is_empty() {
                // The connection ended; what the inflater holds is a partial frame.
                this.end = Some(Ok(()));
                continue;
            }
            this.inflater.feed(chunk.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeflateIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
