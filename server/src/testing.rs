//! Helpers for tests, property tests and fuzz targets: a minimal sans-IO client that links
//! channels to a [`Server`] in memory, as spice-gtk would (auth selection, ticket encrypted with
//! the server's key, mini header), so hostile bytes can be aimed at a linked channel.
//!
//! Not for production use; nothing in the server depends on it.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use spice_proto::caps::{self, Caps};
use spice_proto::header::{Framer, HeaderKind};
use spice_proto::link::{LinkError, LinkHeader, LinkMess, LinkReply};
use spice_proto::messages::{ChannelType, MainServer, Message};

use crate::link::TicketKey;
use crate::server::{ConnId, Server};

/// A fixed RSA key, generated once per process from a fixed seed: for tests, fuzzing, the
/// simulator and replays, where a fresh key per run would only cost time.
pub fn fixed_key() -> TicketKey {
    static KEY: std::sync::OnceLock<TicketKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        TicketKey::generate(&mut ChaCha20Rng::seed_from_u64(0x5eed))
            .expect("RSA key generation from a seeded RNG")
    })
    .clone()
}

/// Make every link key the server asks for, here and now (what the async shell does on its
/// blocking pool): for sans-IO tests of servers with `fresh_key_per_link`.
pub fn make_keys(server: &mut Server) {
    while let Some(req) = server.poll_key_request() {
        server.add_link_key(req.generate());
    }
}

/// Everything the server has queued for `conn`, concatenated.
pub fn drain(server: &mut Server, conn: ConnId) -> Vec<u8> {
    let mut v = Vec::new();
    while let Some(b) = server.poll_transmit(conn) {
        v.extend_from_slice(&b);
    }
    v
}

/// A linked channel: its connection and the header kind in use.
#[derive(Debug, Clone, Copy)]
pub struct Linked {
    pub conn: ConnId,
    pub header: HeaderKind,
}

/// Link `channel` (id 0) of session `connection_id` (0 for a new main channel) with
/// `password`; returns the connection and, for main, the session id from `init`.
pub fn link(
    server: &mut Server,
    channel: ChannelType,
    connection_id: u32,
    password: &str,
    now_ms: u64,
) -> Result<(Linked, Option<u32>), String> {
    link_with_rest(server, channel, connection_id, password, now_ms).map(|(l, s, _)| (l, s))
}

/// [`link`], also returning the bytes the server sent after the link result (the channel's
/// first messages: `set_ack`, `init`, ...).
pub fn link_with_rest(
    server: &mut Server,
    channel: ChannelType,
    connection_id: u32,
    password: &str,
    now_ms: u64,
) -> Result<(Linked, Option<u32>, Vec<u8>), String> {
    link_with_caps(server, channel, connection_id, password, now_ms, &[])
}

/// [`link_with_rest`] for a client with the channel capabilities `channel_caps` (bit
/// numbers, e.g. `caps::playback::OPUS`).
pub fn link_with_caps(
    server: &mut Server,
    channel: ChannelType,
    connection_id: u32,
    password: &str,
    now_ms: u64,
    channel_caps: &[u32],
) -> Result<(Linked, Option<u32>, Vec<u8>), String> {
    let conn = server.connect(now_ms);
    let mut c = Caps::default();
    c.set_common(caps::common::PROTOCOL_AUTH_SELECTION);
    c.set_common(caps::common::AUTH_SPICE);
    c.set_common(caps::common::MINI_HEADER);
    for &bit in channel_caps {
        c.set_channel(bit);
    }
    let mess = LinkMess {
        connection_id,
        channel_type: channel,
        channel_id: 0,
        caps: c,
    };
    server.handle_bytes(conn, &mess.to_bytes(), now_ms);
    make_keys(server);
    let out = drain(server, conn);
    let h = LinkHeader::decode(&out).map_err(|e| e.to_string())?;
    let body = out
        .get(LinkHeader::SIZE..LinkHeader::SIZE + h.size as usize)
        .ok_or("short link reply")?;
    let reply = LinkReply::decode(body).map_err(|e| e.to_string())?;
    if reply.error != LinkError::Ok {
        return Err(format!("link refused: {:?}", reply.error));
    }
    let ticket = ticket_for(&reply.pub_key, password, connection_id).ok_or("cannot encrypt")?;
    let mut msg = 1u32.to_le_bytes().to_vec();
    msg.extend_from_slice(&ticket);
    server.handle_bytes(conn, &msg, now_ms);
    let out = drain(server, conn);
    let result = spice_proto::link::decode_link_result(&out).map_err(|e| e.to_string())?;
    if result != LinkError::Ok {
        return Err(format!("link result {result:?}"));
    }
    let header = HeaderKind::Mini;
    let mut session = None;
    if channel == ChannelType::Main {
        let mut f = Framer::new(header);
        f.push(out.get(4..).unwrap_or_default());
        if let Ok(Some(m)) = f.next() {
            if let Ok(MainServer::Init(i)) = MainServer::decode(m.header.msg_type, &m.body) {
                session = Some(i.session_id);
            }
        }
    }
    let rest = out.get(4..).unwrap_or_default().to_vec();
    Ok((Linked { conn, header }, session, rest))
}

/// The ticket a client sends for `password` to the server key `pub_key`, encrypted once per
/// key, password and session and then remembered (tests and fuzz targets link the same way
/// thousands of times; RSA each time would dominate them).
fn ticket_for(pub_key: &[u8], password: &str, connection_id: u32) -> Option<Vec<u8>> {
    type Tickets = std::collections::BTreeMap<(Vec<u8>, String, u32), Vec<u8>>;
    static TICKETS: std::sync::Mutex<Tickets> = std::sync::Mutex::new(Tickets::new());
    let key = (pub_key.to_vec(), password.to_owned(), connection_id);
    if let Some(t) = TICKETS.lock().ok()?.get(&key) {
        return Some(t.clone());
    }
    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(connection_id) ^ 0x7e57);
    let t = TicketKey::encrypt_for(pub_key, password, &mut rng)?.to_vec();
    if let Ok(mut m) = TICKETS.lock() {
        if m.len() < 256 {
            m.insert(key, t.clone());
        }
    }
    Some(t)
}

/// Guest RAM for QXL tests and fake devices: one flat byte array at device addresses
/// `base..base + len`, with a bump allocator (8-byte aligned) and writers.
#[derive(Debug, Clone)]
pub struct Ram {
    pub base: u64,
    pub bytes: Vec<u8>,
    next: u64,
}

impl Ram {
    pub fn new(base: u64, len: usize) -> Ram {
        Ram {
            base,
            bytes: vec![0; len],
            next: base,
        }
    }

    /// Reserve `len` bytes; `None` when full.
    pub fn alloc(&mut self, len: usize) -> Option<u64> {
        let at = self.next;
        let end = at.checked_add(len as u64)?;
        if end > self.base + self.bytes.len() as u64 {
            return None;
        }
        self.next = (end + 7) & !7;
        Some(at)
    }

    /// Reserve and fill.
    pub fn put(&mut self, data: &[u8]) -> Option<u64> {
        let at = self.alloc(data.len())?;
        self.write(at, data);
        Some(at)
    }

    /// Overwrite bytes at `addr` (must be inside).
    pub fn write(&mut self, addr: u64, data: &[u8]) {
        let o = (addr - self.base) as usize;
        self.bytes[o..o + data.len()].copy_from_slice(data);
    }

    /// Forget every allocation.
    pub fn reset(&mut self) {
        self.next = self.base;
    }

    /// The slot covering all of this RAM (group 0, generation `generation`).
    pub fn slot(&self, slot_id: u32, generation: u8) -> crate::vdi::MemSlot {
        crate::vdi::MemSlot {
            group_id: 0,
            slot_id,
            generation,
            start: self.base,
            end: self.base + self.bytes.len() as u64,
            delta: 0,
        }
    }
}

impl crate::vdi::GuestMemory for Ram {
    fn read(&self, addr: u64, out: &mut [u8]) -> bool {
        let Some(o) = addr.checked_sub(self.base) else {
            return false;
        };
        match usize::try_from(o)
            .ok()
            .and_then(|o| self.bytes.get(o..o.checked_add(out.len())?))
        {
            Some(src) => {
                out.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}
