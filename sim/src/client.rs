//! The simulated SPICE client: one TCP connection per channel, built on spice-proto.
//!
//! [`Conn`] links a channel (the client side of the link stage, with the ticket encrypted
//! under the server's key), then sends and receives framed messages. Base messages are
//! answered as spice-gtk answers them: `ping` with `pong`, `set_ack` with `ack_sync` and then
//! an `ack` every `window` messages. Every byte each way goes to the run's [`Recorder`] with
//! the simulated time, which is what the run's hash is made of.
//!
//! Must not: read the wall clock (time is tokio's, simulated by turmoil) or use randomness
//! other than the RNG it is given.

use std::cell::RefCell;
use std::rc::Rc;

use rand_chacha::ChaCha20Rng;
use spice_proto::caps::{self, Caps};
use spice_proto::header::{frame, Framer, HeaderKind, RawMessage};
use spice_proto::link::{LinkError, LinkHeader, LinkMess, LinkReply};
use spice_proto::messages::base::Pong;
use spice_proto::messages::{BaseClient, BaseServer, ChannelType, MainClient, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

use crate::flow::Flow;

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dir {
    ClientToServer,
    ServerToClient,
}

/// One chunk of bytes on one connection.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub t_us: u64,
    pub client: u32,
    /// The connection's number within its client (0 = the first main channel).
    pub conn: u32,
    pub channel: ChannelType,
    pub dir: Dir,
    pub bytes: Vec<u8>,
}

/// Every byte of a run, in the order the simulation saw it.
#[derive(Debug, Default)]
pub struct Recorder {
    pub chunks: Vec<Chunk>,
}

impl Recorder {
    /// FNV-1a over every chunk's time, endpoints, direction and bytes.
    pub fn hash(&self) -> u64 {
        let mut h = Fnv::new();
        for c in &self.chunks {
            h.write(&c.t_us.to_le_bytes());
            h.write(&c.client.to_le_bytes());
            h.write(&c.conn.to_le_bytes());
            h.write(&[c.channel.to_raw(), c.dir as u8]);
            h.write(&(c.bytes.len() as u64).to_le_bytes());
            h.write(&c.bytes);
        }
        h.0
    }

    pub fn total_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.bytes.len() as u64).sum()
    }
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Why a simulated connection stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("decode: {0}")]
    Decode(#[from] spice_proto::DecodeError),
    #[error("link refused: {0:?}")]
    Link(LinkError),
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Simulated time in microseconds since the run started (turmoil's clock, shared by all hosts).
pub fn now_us() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_micros() as u64
}

/// One linked channel connection.
pub struct Conn {
    stream: TcpStream,
    kind: HeaderKind,
    framer: Framer,
    serial: u64,
    /// (window, messages left until the next ack).
    ack: Option<(u32, u32)>,
    rec: Rc<RefCell<Recorder>>,
    pub client: u32,
    pub conn: u32,
    pub channel: ChannelType,
    /// The server's link reply (its caps).
    pub server_caps: Caps,
    /// The flow window this connection reads under, and its address (see [`crate::flow`]).
    flow: Option<(Flow, std::net::SocketAddr)>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some((f, addr)) = &self.flow {
            f.release(*addr);
        }
    }
}

/// What a client asks for when linking.
pub struct LinkParams<'a> {
    pub server: &'a str,
    pub port: u16,
    pub channel: ChannelType,
    pub channel_id: u8,
    pub connection_id: u32,
    pub password: &'a str,
    /// Channel capabilities to offer on top of the defaults (audio: `VOLUME`, `OPUS`, ...).
    pub extra_caps: &'a [u32],
    /// Make the server's writes to this connection wait for the client to read (TCP flow
    /// control, see [`crate::flow`]).
    pub flow: Option<Flow>,
}

impl Conn {
    /// Connect and run the link stage.
    pub async fn link(
        p: LinkParams<'_>,
        client: u32,
        conn: u32,
        rng: &mut ChaCha20Rng,
        rec: Rc<RefCell<Recorder>>,
    ) -> Result<Conn, ClientError> {
        let stream = TcpStream::connect((p.server, p.port)).await?;
        let flow = match (&p.flow, stream.local_addr()) {
            (Some(f), Ok(addr)) => {
                f.register(addr, crate::flow::WINDOW);
                Some((f.clone(), addr))
            }
            _ => None,
        };
        let mut c = Conn {
            stream,
            kind: HeaderKind::Full,
            framer: Framer::new(HeaderKind::Full),
            serial: 0,
            ack: None,
            rec,
            client,
            conn,
            channel: p.channel,
            server_caps: Caps::default(),
            flow,
        };
        let mut caps = Caps::default();
        caps.set_common(caps::common::PROTOCOL_AUTH_SELECTION);
        caps.set_common(caps::common::AUTH_SPICE);
        caps.set_common(caps::common::MINI_HEADER);
        match p.channel {
            ChannelType::Main => caps.set_channel(caps::main::NAME_AND_UUID),
            ChannelType::Display => {
                caps.set_channel(caps::display::SIZED_STREAM);
                caps.set_channel(caps::display::MONITORS_CONFIG);
                caps.set_channel(caps::display::COMPOSITE);
                caps.set_channel(caps::display::A8_SURFACE);
                caps.set_channel(caps::display::LZ4_COMPRESSION);
                caps.set_channel(caps::display::PREF_COMPRESSION);
            }
            _ => {}
        }
        for &c in p.extra_caps {
            caps.set_channel(c);
        }
        let mess = LinkMess {
            connection_id: p.connection_id,
            channel_type: p.channel,
            channel_id: p.channel_id,
            caps,
        };
        c.write_raw(&mess.to_bytes()).await?;
        let head = c.read_exact(LinkHeader::SIZE).await?;
        let header = LinkHeader::decode(&head)?;
        if header.size as usize > spice_proto::link::MAX_LINK_MESSAGE_SIZE as usize {
            return Err(ClientError::Protocol("oversized link reply".into()));
        }
        let body = c.read_exact(header.size as usize).await?;
        let reply = LinkReply::decode(&body)?;
        if reply.error != LinkError::Ok {
            return Err(ClientError::Link(reply.error));
        }
        if reply.caps.has_common(caps::common::PROTOCOL_AUTH_SELECTION) {
            c.write_raw(&1u32.to_le_bytes()).await?; // SPICE_COMMON_CAP_AUTH_SPICE
        }
        let ticket = spice_server::link::TicketKey::encrypt_for(&reply.pub_key, p.password, rng)
            .ok_or_else(|| ClientError::Protocol("cannot encrypt the ticket".into()))?;
        c.write_raw(&ticket).await?;
        let result = c.read_exact(4).await?;
        let result = spice_proto::link::decode_link_result(&result)?;
        if result != LinkError::Ok {
            return Err(ClientError::Link(result));
        }
        if reply.caps.has_common(caps::common::MINI_HEADER) {
            c.kind = HeaderKind::Mini;
            c.framer.set_kind(HeaderKind::Mini);
        }
        c.server_caps = reply.caps;
        Ok(c)
    }

    /// The client read `n` bytes: its flow window opens by that much.
    fn opened(&self, n: usize) {
        if let Some((f, addr)) = &self.flow {
            f.read(*addr, n);
        }
    }

    fn record(&self, dir: Dir, bytes: &[u8]) {
        self.rec.borrow_mut().chunks.push(Chunk {
            t_us: now_us(),
            client: self.client,
            conn: self.conn,
            channel: self.channel,
            dir,
            bytes: bytes.to_vec(),
        });
    }

    /// Write bytes as they are (link stage, hostile bytes).
    pub async fn write_raw(&mut self, b: &[u8]) -> Result<(), ClientError> {
        self.record(Dir::ClientToServer, b);
        self.stream.write_all(b).await?;
        Ok(())
    }

    async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, ClientError> {
        let mut b = vec![0u8; n];
        self.stream.read_exact(&mut b).await?;
        self.opened(n);
        self.record(Dir::ServerToClient, &b);
        Ok(b)
    }

    /// Send a message of this channel.
    pub async fn send<M: Message>(&mut self, m: &M) -> Result<(), ClientError> {
        self.serial += 1;
        let body = m.to_body();
        let mut out = Vec::with_capacity(body.len() + 18);
        frame(self.kind, self.serial, m.msg_type(), &body, &mut out);
        self.write_raw(&out).await
    }

    /// The next message that is not a base message the connection answers itself.
    pub async fn recv(&mut self) -> Result<RawMessage, ClientError> {
        loop {
            while let Some(m) = self.framer.next()? {
                if let Some((window, left)) = self.ack.as_mut() {
                    *left -= 1;
                    if *left == 0 {
                        *left = *window;
                        self.send(&MainClient::Base(BaseClient::Ack)).await?;
                    }
                }
                if m.header.msg_type >= spice_proto::messages::FIRST_CHANNEL_MESSAGE {
                    return Ok(m);
                }
                match BaseServer::try_decode(m.header.msg_type, &m.body) {
                    Some(Ok(BaseServer::Ping(p))) => {
                        self.send(&MainClient::Base(BaseClient::Pong(Pong {
                            id: p.id,
                            timestamp: p.timestamp,
                        })))
                        .await?;
                    }
                    Some(Ok(BaseServer::SetAck(s))) => {
                        self.send(&MainClient::Base(BaseClient::AckSync(s.generation)))
                            .await?;
                        let w = s.window.max(1);
                        self.ack = Some((w, w));
                    }
                    Some(Ok(_)) => return Ok(m),
                    Some(Err(e)) => return Err(e.into()),
                    None => return Ok(m),
                }
            }
            let mut buf = vec![0u8; 64 * 1024];
            let n = self.stream.read(&mut buf).await?;
            if n == 0 {
                return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            buf.truncate(n);
            self.opened(n);
            self.record(Dir::ServerToClient, &buf);
            self.framer.push(&buf);
        }
    }
}
