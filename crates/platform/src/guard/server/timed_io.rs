//! A connection's two clocks. hyper's own header timeout also runs while a keep-alive connection
//! waits for its next request, so it closes idle connections that a proxy in front (Code Engine's
//! queue-proxy, an ingress) keeps and reuses, and the proxy's next request on one becomes a 502.
//! [`TimedIo`] tells the two waits apart at the socket:
//! - a request's head (a new connection's first, or the next one after a response) must arrive
//!   within the header timeout, counted from its first byte (from the connect for a new
//!   connection), up to the blank line that ends it;
//! - while the request is served no clock runs (hyper reads on to notice a client that leaves);
//! - after a response, the connection may stay idle for the keep-alive time.
//!
//! A deadline that passes fails the next read, and hyper closes the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request's head is arriving (or the first one is awaited): bounded by the header
    /// timeout. `matched` counts the bytes of the closing `\r\n\r\n` seen so far.
    Head { matched: u8 },
    /// The head has arrived; the request is being served: no deadline.
    Serving,
    /// A response went out; waiting for the next request: bounded by the keep-alive time.
    Idle,
}

impl Phase {
    /// The phase after `bytes` were read.
    fn after_reading(self, bytes: &[u8]) -> Self {
        let mut matched = match self {
            Phase::Head { matched } => matched,
            Phase::Idle => 0,
            Phase::Serving => return Phase::Serving,
        };
        for &byte in bytes {
            matched = match (matched, byte) {
                (0 | 2, b'\r') => matched + 1,
                (1 | 3, b'\n') => matched + 1,
                (_, b'\r') => 1,
                _ => 0,
            };
            if matched == 4 {
                return Phase::Serving;
            }
        }
        Phase::Head { matched }
    }
}

/// A socket whose reads fail with [`io::ErrorKind::TimedOut`] once the current deadline passes.
#[derive(Debug)]
pub struct TimedIo<S> {
    inner: S,
    header_timeout: Duration,
    keep_alive: Duration,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
}

impl<S> TimedIo<S> {
    /// Wraps a freshly accepted `inner`: each request's head must arrive within
    /// `header_timeout` of its first byte (the first one: of the connect); after each response
    /// the connection may idle for `keep_alive`.
    pub fn new(inner: S, header_timeout: Duration, keep_alive: Duration) -> Self {
        Self {
            inner,
            header_timeout,
            keep_alive,
            phase: Phase::Head { matched: 0 },
            deadline: Box::pin(tokio::time::sleep(header_timeout)),
        }
    }

    fn enter(&mut self, phase: Phase) {
        let started = match (self.phase, phase) {
            (Phase::Idle, Phase::Head { .. }) => Some(self.header_timeout),
            (_, Phase::Idle) => Some(self.keep_alive),
            _ => None,
        };
        if let Some(wait) = started {
            self.deadline.as_mut().reset(Instant::now() + wait);
        }
        self.phase = phase;
    }

    /// After a write: a response went out, so the keep-alive clock starts. The deadline is
    /// polled here, with the connection's task, because hyper reads next only when woken: its
    /// last read (while the request was served, when no clock ran) left no timer behind.
    fn wrote(&mut self, written: &Poll<io::Result<usize>>, cx: &mut Context<'_>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.enter(Phase::Idle);
            if self.deadline.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let expired = this.phase != Phase::Serving && this.deadline.as_mut().poll(cx).is_ready();
        if expired {
            let what = match this.phase {
                Phase::Idle => "the keep-alive connection was idle too long",
                _ => "the request's head did not arrive in time",
            };
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let next = this.phase.after_reading(&buf.filled()[before..]);
            this.enter(next);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(&written, cx);
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(&written, cx);
        written
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_its_blank_line_even_split_across_reads() {
        let start = Phase::Head { matched: 0 };
        assert_eq!(
            start.after_reading(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Phase::Serving
        );
        let split = start.after_reading(b"GET / HTTP/1.1\r\nHost: x\r\n\r");
        assert_eq!(split, Phase::Head { matched: 3 });
        assert_eq!(split.after_reading(b"\n"), Phase::Serving);
        assert_eq!(start.after_reading(b"GET / HT"), Phase::Head { matched: 0 });
        assert_eq!(
            start.after_reading(b"a\r\nb\r\r\n"),
            Phase::Head { matched: 2 }
        );
        assert_eq!(Phase::Idle.after_reading(b"G"), Phase::Head { matched: 0 });
        assert_eq!(Phase::Serving.after_reading(b"\r\n\r\n"), Phase::Serving);
    }
}
