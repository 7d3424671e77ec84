//! The thin async shell: drives a [`Server`] over any listener whose streams are
//! `AsyncRead + AsyncWrite` — real TCP here, turmoil's simulated TCP in `sim/`.
//!
//! One loop owns the server. Each connection gets a reader task (bytes in, as events) and a
//! writer task (bytes out); the loop hands a writer at most [`WRITE_WINDOW`] bytes it has not
//! yet confirmed, so the server's own byte-bounded queues, not an unbounded channel, decide what
//! a slow client gets. Time is tokio's clock (`tokio::time::Instant`), which turmoil
//! simulates: nothing here reads the wall clock directly.
//!
//! Owns each connection's socket until it is closed: when the server is done with a
//! connection (or its writer fails), the writer writes what is left (for at most
//! [`CLOSE_LINGER`]) and then ends the reader task too, so both halves of the stream are
//! dropped and its file descriptor is freed whatever the peer does. Accept errors (out of file
//! descriptors, say) pause accepting with a growing back-off ([`ACCEPT_BACKOFF_MIN`] up to
//! [`ACCEPT_BACKOFF_MAX`]) while events and timers keep running; the loop does not accept while
//! the server holds its `max_connections` budget. Link keys are made on tokio's blocking pool
//! (`spawn_blocking`) when the server asks for them ([`Server::poll_key_request`]), never on
//! the loop.
//!
//! Must not: hold protocol logic; everything it knows about SPICE is the [`Server`] API.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::link::{KeyError, TicketKey};
use crate::server::{ConnId, Server};

/// Bytes handed to a connection's writer and not yet written.
pub const WRITE_WINDOW: usize = 256 * 1024;
/// The read buffer a connection starts with (it grows to the `read_buffer` budget while the
/// peer fills it).
const FIRST_READ_BUF: usize = 4 * 1024;
/// Reads of one connection handed to the loop and not yet handled: a peer that sends faster
/// than the server handles waits in its own TCP window, not in our memory (at most this many
/// read buffers per connection).
pub const READ_AHEAD: usize = 4;
/// How long a closed connection's last bytes may take to be written before the socket is
/// dropped anyway (a peer that does not read must not keep it).
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// The first pause after an accept error; it doubles on each further error.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest pause after an accept error.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Something that accepts connections.
pub trait Listener {
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Stream>>;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&mut self) -> io::Result<tokio::net::TcpStream> {
        let (s, peer) = tokio::net::TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        tracing::info!(%peer, "client connected");
        Ok(s)
    }
}

enum Event {
    /// Bytes read, with the read-ahead permit they hold until the loop has handled them.
    Data(ConnId, Vec<u8>, tokio::sync::OwnedSemaphorePermit),
    Closed(ConnId),
    Written(ConnId, usize),
    Key(Box<Result<TicketKey, KeyError>>),
}

/// The loop's handle on one connection. Dropping it closes the connection: the writer task
/// sees its channel end, writes what is queued (within [`CLOSE_LINGER`]) and ends the reader.
struct Writer {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    in_flight: usize,
    /// Dropped with the writer: starts the close linger.
    _closing: oneshot::Sender<()>,
}

/// Serve `server` on `listener` until `shutdown` completes. `after_step` runs after every
/// event the loop handles (the simulator checks invariants there; pass `|_| {}` otherwise).
pub async fn serve<L: Listener>(
    server: &mut Server,
    mut listener: L,
    shutdown: impl Future<Output = ()>,
    mut after_step: impl FnMut(&mut Server),
) -> io::Result<()> {
    let start = Instant::now();
    let now = move || start.elapsed().as_millis() as u64;
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
    let mut writers: BTreeMap<ConnId, Writer> = BTreeMap::new();
    let max_connections = server.config().budgets.max_connections;
    let read_buffer = server.config().budgets.read_buffer.max(FIRST_READ_BUF);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut accept_paused_until: Option<Instant> = None;
    tokio::pin!(shutdown);
    request_keys(server, &ev_tx);
    loop {
        let deadline = server
            .poll_timeout()
            .map(|ms| start + Duration::from_millis(ms));
        let accepting = accept_paused_until.is_none() && writers.len() < max_connections;
        // `biased`: branches are polled in this order. tokio's default picks a random branch
        // first (from a thread-local RNG), which would make simulated runs differ for the
        // same seed.
        tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(()),
            acc = listener.accept(), if accepting => {
                let stream = match acc {
                    Ok(s) => {
                        backoff = ACCEPT_BACKOFF_MIN;
                        s
                    }
                    Err(e) => {
                        tracing::warn!(
                            "accept failed: {e}; not accepting for {} ms",
                            backoff.as_millis()
                        );
                        accept_paused_until = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                        continue;
                    }
                };
                let id = server.connect(now());
                writers.insert(id, spawn_conn(id, stream, &ev_tx, read_buffer));
            }
            ev = ev_rx.recv() => {
                match ev {
                    // The permit drops after the bytes are handled: the reader may read more.
                    Some(Event::Data(id, b, _permit)) => server.handle_bytes(id, &b, now()),
                    Some(Event::Closed(id)) => {
                        if writers.remove(&id).is_some() {
                            server.handle_closed(id, now());
                        }
                    }
                    Some(Event::Written(id, n)) => {
                        if let Some(w) = writers.get_mut(&id) {
                            w.in_flight = w.in_flight.saturating_sub(n);
                        }
                    }
                    Some(Event::Key(k)) => server.add_link_key(*k),
                    None => return Ok(()),
                }
            }
            _ = sleep_until(accept_paused_until), if accept_paused_until.is_some() => {
                accept_paused_until = None;
            }
            _ = sleep_until(deadline) => server.handle_timeout(now()),
        }
        flush(server, &mut writers);
        request_keys(server, &ev_tx);
        after_step(server);
    }
}

/// Start the reader and writer tasks of a new connection.
fn spawn_conn<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(
    id: ConnId,
    stream: S,
    ev_tx: &mpsc::UnboundedSender<Event>,
    read_buffer: usize,
) -> Writer {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let tx = ev_tx.clone();
    let read_ahead = std::sync::Arc::new(tokio::sync::Semaphore::new(READ_AHEAD));
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; FIRST_READ_BUF];
        loop {
            let Ok(permit) = read_ahead.clone().acquire_owned().await else {
                break;
            };
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Event::Data(id, buf[..n].to_vec(), permit)).is_err() {
                        break;
                    }
                    if n == buf.len() && buf.len() < read_buffer {
                        buf.resize(read_buffer, 0);
                    }
                }
            }
        }
        let _ = tx.send(Event::Closed(id));
    });
    let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (closing_tx, closing_rx) = oneshot::channel::<()>();
    let tx = ev_tx.clone();
    tokio::spawn(async move {
        let work = async {
            while let Some(b) = wrx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    let _ = tx.send(Event::Closed(id));
                    return;
                }
                let _ = tx.send(Event::Written(id, b.len()));
            }
            // The loop dropped this connection: its last bytes are written.
            let _ = wr.shutdown().await;
        };
        let linger = async {
            // Resolves when the loop drops the connection (the sender is never used).
            let _ = closing_rx.await;
            tokio::time::sleep(CLOSE_LINGER).await;
        };
        tokio::select! {
            biased;
            _ = work => {}
            _ = linger => {}
        }
        // Both halves must go for the socket to close: end the reader, which holds the other.
        reader.abort();
        let _ = reader.await;
        drop(wr);
    });
    Writer {
        tx: wtx,
        in_flight: 0,
        _closing: closing_tx,
    }
}

/// Hand the server's key requests to the blocking pool; each result comes back as an event.
fn request_keys(server: &mut Server, ev_tx: &mpsc::UnboundedSender<Event>) {
    while let Some(req) = server.poll_key_request() {
        let tx = ev_tx.clone();
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(Event::Key(Box::new(req.generate())));
        });
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Move bytes from the server to the writers, within each writer's window; drop the writers of
/// connections the server is done with (their task then closes the stream).
fn flush(server: &mut Server, writers: &mut BTreeMap<ConnId, Writer>) {
    let mut done = Vec::new();
    for (&id, w) in writers.iter_mut() {
        while w.in_flight < WRITE_WINDOW {
            let Some(b) = server.poll_transmit(id) else {
                break;
            };
            w.in_flight += b.len();
            if w.tx.send(b).is_err() {
                break;
            }
        }
        if server.is_finished(id) {
            done.push(id);
        }
    }
    for id in done {
        writers.remove(&id);
        server.handle_closed(id, 0);
    }
}
