//! TCP flow control for the simulated network, where a connection needs it.
//!
//! turmoil's TCP has none: a write always succeeds at once and the bytes wait in the network
//! or in the reader's socket, so a server can never see a client that does not read. Real TCP
//! stops the writer once the reader's receive window is full. [`Flow`] gives that back to the
//! connections that ask for it (the playback channels, so a stalled or held playback reader
//! makes the server's audio queue fill and its cap work): the client registers its end with
//! a window size, counts what it reads ([`Flow::read`]), and the server's end of that
//! connection ([`FlowStream`]) accepts a write only while fewer than `window` bytes are
//! written and not yet read; otherwise the write waits until the client reads.
//!
//! Must not: read the clock or draw randomness (it only counts bytes and wakes writers).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The receive window a flow-controlled connection gets (a small TCP socket's buffers).
pub const WINDOW: u64 = 64 * 1024;

#[derive(Debug, Default)]
struct Window {
    written: u64,
    read: u64,
    /// `None` once the client's end is gone: writes are no longer held back.
    limit: Option<u64>,
    waker: Option<Waker>,
}

/// The windows of the flow-controlled connections, by the client's address.
#[derive(Debug, Default, Clone)]
pub struct Flow(Arc<Mutex<BTreeMap<SocketAddr, Window>>>);

impl Flow {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<SocketAddr, Window>) -> R) -> R {
        // A poisoned lock only means a panic elsewhere (recorded by the run): keep counting.
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// The client at `client` wants its connection flow-controlled with this window.
    pub fn register(&self, client: SocketAddr, window: u64) {
        self.with(|m| {
            m.insert(
                client,
                Window {
                    limit: Some(window),
                    ..Window::default()
                },
            );
        });
    }

    /// The client at `client` read `n` bytes: the window opens by that much.
    pub fn read(&self, client: SocketAddr, n: usize) {
        let waker = self.with(|m| {
            let w = m.get_mut(&client)?;
            w.read += n as u64;
            w.waker.take()
        });
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The client's end is gone (closed or crashed): its writer is no longer held back.
    pub fn release(&self, client: SocketAddr) {
        let waker = self.with(|m| {
            let w = m.get_mut(&client)?;
            w.limit = None;
            w.waker.take()
        });
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// How many bytes the server's end may write now (`usize::MAX` if not flow-controlled).
    fn room(&self, client: SocketAddr, cx: &mut Context<'_>) -> usize {
        self.with(|m| {
            let Some(w) = m.get_mut(&client) else {
                return usize::MAX;
            };
            let Some(limit) = w.limit else {
                return usize::MAX;
            };
            let room = limit.saturating_sub(w.written - w.read.min(w.written));
            if room == 0 {
                w.waker = Some(cx.waker().clone());
            }
            usize::try_from(room).unwrap_or(usize::MAX)
        })
    }

    fn wrote(&self, client: SocketAddr, n: usize) {
        self.with(|m| {
            if let Some(w) = m.get_mut(&client) {
                w.written += n as u64;
            }
        });
    }
}

/// The server's end of a simulated connection, held back by the client's window if it has
/// one.
pub struct FlowStream {
    inner: turmoil::net::TcpStream,
    peer: Option<SocketAddr>,
    flow: Flow,
}

impl FlowStream {
    pub fn new(inner: turmoil::net::TcpStream, flow: Flow) -> FlowStream {
        let peer = inner.peer_addr().ok();
        FlowStream { inner, peer, flow }
    }
}

impl AsyncRead for FlowStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FlowStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let room = match self.peer {
            Some(p) => self.flow.room(p, cx),
            None => usize::MAX,
        };
        if room == 0 {
            return Poll::Pending;
        }
        let n = buf.len().min(room);
        let r = Pin::new(&mut self.inner).poll_write(cx, &buf[..n]);
        if let (Poll::Ready(Ok(n)), Some(p)) = (&r, self.peer) {
            self.flow.wrote(p, *n);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
