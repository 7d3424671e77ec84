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
    let conn = server.connect(now_ms);
    let mut c = Caps::default();
    c.set_common(caps::common::PROTOCOL_AUTH_SELECTION);
    c.set_common(caps::common::AUTH_SPICE);
    c.set_common(caps::common::MINI_HEADER);
    let mess = LinkMess {
        connection_id,
        channel_type: channel,
        channel_id: 0,
        caps: c,
    };
    server.handle_bytes(conn, &mess.to_bytes(), now_ms);
    let out = drain(server, conn);
    let h = LinkHeader::decode(&out).map_err(|e| e.to_string())?;
    let body = out
        .get(LinkHeader::SIZE..LinkHeader::SIZE + h.size as usize)
        .ok_or("short link reply")?;
    let reply = LinkReply::decode(body).map_err(|e| e.to_string())?;
    if reply.error != LinkError::Ok {
        return Err(format!("link refused: {:?}", reply.error));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(connection_id) ^ 0x7e57);
    let ticket =
        TicketKey::encrypt_for(&reply.pub_key, password, &mut rng).ok_or("cannot encrypt")?;
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
    Ok((Linked { conn, header }, session))
}
