//! The thin async shell: drives a [`Server`] over any listener whose streams are
//! `AsyncRead + AsyncWrite` — real TCP here, turmoil's simulated TCP in `sim/`.
//!
//! One loop owns the server. Each connection gets a reader task (bytes in, as events) and a
//! writer task (bytes out); the loop hands a writer at most [`WRITE_WINDOW`] bytes it has not
//! yet confirmed, so the server's own byte-bounded queues, not an unbounded channel, decide what
//! a slow client gets. Time is tokio's clock (`tokio::time::Instant`), which turmoil
//! simulates: nothing here reads the wall clock directly.
//!
//! Must not: hold protocol logic; everything it knows about SPICE is the [`Server`] API.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::server::{ConnId, Server};

/// Bytes handed to a connection's writer and not yet written.
pub const WRITE_WINDOW: usize = 256 * 1024;
const READ_BUF: usize = 64 * 1024;

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
    Data(ConnId, Vec<u8>),
    Closed(ConnId),
    Written(ConnId, usize),
}

struct Writer {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    in_flight: usize,
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
    tokio::pin!(shutdown);
    loop {
        let deadline = server
            .poll_timeout()
            .map(|ms| start + std::time::Duration::from_millis(ms));
        // `biased`: branches are polled in this order. tokio's default picks a random branch
        // first (from a thread-local RNG), which would make simulated runs differ for the
        // same seed.
        tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(()),
            acc = listener.accept() => {
                let stream = match acc {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                };
                let id = server.connect(now());
                let (mut rd, mut wr) = tokio::io::split(stream);
                let tx = ev_tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; READ_BUF];
                    loop {
                        match rd.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tx.send(Event::Data(id, buf[..n].to_vec())).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = tx.send(Event::Closed(id));
                });
                let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
                let tx = ev_tx.clone();
                tokio::spawn(async move {
                    while let Some(b) = wrx.recv().await {
                        if wr.write_all(&b).await.is_err() {
                            let _ = tx.send(Event::Closed(id));
                            return;
                        }
                        let _ = tx.send(Event::Written(id, b.len()));
                    }
                    let _ = wr.shutdown().await;
                });
                writers.insert(id, Writer { tx: wtx, in_flight: 0 });
            }
            ev = ev_rx.recv() => {
                match ev {
                    Some(Event::Data(id, b)) => server.handle_bytes(id, &b, now()),
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
                    None => return Ok(()),
                }
            }
            _ = sleep_until(deadline) => server.handle_timeout(now()),
        }
        flush(server, &mut writers);
        after_step(server);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Move bytes from the server to the writers, within each writer's window; drop the writers of
/// connections the server is done with (their task then shuts the stream down).
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
