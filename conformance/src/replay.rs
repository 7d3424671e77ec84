//! Replay one captured client session against our server.
//!
//! The server is the real [`spice_server::Server`] state machine, driven directly with the
//! capture's clock (milliseconds since the capture's first frame), the way the simulator drives
//! it: no sockets, no wall clock, so a replay is a function of the capture and the options.
//!
//! For each captured channel, in the captured order and at the captured times, the replay
//! client connects, sends the captured `SpiceLinkMess` (same channel, caps and auth choice) and
//! then the captured client messages. It adapts only what a session makes different:
//! - the connection id (our main channel's session id instead of the reference's);
//! - the ticket (the password, from the manifest or `--password`, encrypted with our key);
//! - serials (re-framed with our own) and the header kind (as our link negotiated);
//! - flow control: captured `ack_sync`/`ack`/`pong` are not replayed; the replay client
//!   answers our server's own `set_ack` and pings as spice-gtk does.
//!
//! What cannot be replayed (a channel whose link was not captured, a channel of a session whose
//! main channel is missing) is reported in [`ChannelReplay::notes`], not fatal.

use std::collections::BTreeMap;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use spice_captures::transcript::{Channel, Session};
use spice_fake_devices::input::{EventLog, FakeKeyboard, FakeMouse, FakeTablet, Record};
use spice_proto::caps::{self, Caps};
use spice_proto::header::{frame, Framer, HeaderKind};
use spice_proto::link::{LinkError, LinkHeader, LinkMess, LinkReply};
use spice_proto::messages::base::Pong;
use spice_proto::messages::{
    self, AnyMessage, BaseClient, BaseServer, ChannelType, Direction, MainClient, MainServer,
    Message,
};
use spice_server::link::{TicketKey, Ticketing};
use spice_server::server::Breakage;
use spice_server::{Config, ConnId, ImageCompression, Server};

/// How to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// The ticket the captured client used (the manifest's, or `--password`).
    pub password: Option<String>,
    pub image_compression: ImageCompression,
    /// Test-only: a deliberately broken server.
    pub breakage: Option<Breakage>,
    /// The reference's screen size: our fake display is made the same size (default 1024x768).
    pub screen: Option<(u32, u32)>,
}

/// One message our server sent, as the replay client read it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub at_ms: u64,
    pub msg_type: u16,
    pub name: &'static str,
    pub decoded: Result<AnyMessage, String>,
}

/// What happened to one captured channel when replayed.
#[derive(Debug, Clone)]
pub struct ChannelReplay {
    pub channel_type: ChannelType,
    pub channel_id: u8,
    /// Our link reply (error code and caps), if we got that far.
    pub reply: Option<LinkReply>,
    /// Our link result.
    pub result: Option<LinkError>,
    /// Our server's data messages, in order.
    pub replies: Vec<Reply>,
    /// Captured client messages sent to our server.
    pub sent: usize,
    /// The server closed the connection (and when).
    pub closed_at_ms: Option<u64>,
    /// What could not be replayed, or was adapted in a notable way.
    pub notes: Vec<String>,
}

/// A replayed session.
#[derive(Debug, Clone)]
pub struct SessionReplay {
    pub channels: Vec<ChannelReplay>,
    /// Every event our fake input devices received.
    pub events: Vec<Record>,
    /// Simulated milliseconds the replay covered.
    pub duration_ms: u64,
    /// The frames our record device received (None: no record channel was captured).
    pub recorded: Option<Vec<u32>>,
}

enum Phase {
    /// Not connected yet.
    Waiting,
    /// Link message sent; waiting for the reply.
    Reply,
    /// Ticket sent; waiting for the 4-byte result.
    Result,
    Data,
    Done,
}

struct Replayer<'a> {
    captured: &'a Channel,
    phase: Phase,
    conn: Option<ConnId>,
    inbox: Vec<u8>,
    framer: Framer,
    kind: HeaderKind,
    serial: u64,
    ack: Option<(u32, u32)>,
    key: Option<LinkReply>,
    /// Captured client messages still to send: (time, type, body).
    pending: std::collections::VecDeque<(u64, u16, Vec<u8>)>,
    out: ChannelReplay,
}

fn ms_since(t0: f64, t: f64) -> u64 {
    ((t - t0).max(0.0) * 1000.0).round() as u64
}

/// Replay `session` (whose capture started at `t0`, seconds) against a fresh server.
pub fn replay_session(session: &Session, t0: f64, opts: &ReplayOptions) -> SessionReplay {
    let log = EventLog::new();
    // Server settings the capture shows the reference had: its VM name and UUID (QEMU sets
    // them, Xspice does not).
    let captured_main = session
        .channels
        .iter()
        .find(|c| c.channel_type == ChannelType::Main);
    let mut name = None;
    let mut uuid = None;
    for m in captured_main.iter().flat_map(|c| c.messages.iter()) {
        match &m.decoded {
            Ok(AnyMessage::MainServer(MainServer::Name(n))) => {
                let s = String::from_utf8_lossy(&n.name);
                name = Some(s.trim_end_matches('\0').to_string());
            }
            Ok(AnyMessage::MainServer(MainServer::Uuid(u))) => uuid = Some(*u),
            _ => {}
        }
    }
    let captured_of = |t: ChannelType| {
        session
            .channels
            .iter()
            .filter(|c| c.channel_type == t)
            .min_by_key(|c| c.channel_id)
    };
    let captured_playback = captured_of(ChannelType::Playback);
    let captured_record = captured_of(ChannelType::Record);
    let cfg = Config {
        // The reference's playback compression, as its mode choice shows.
        playback_compression: !captured_playback
            .is_some_and(crate::audio::reference_compression_off),
        ticketing: match &opts.password {
            Some(p) => Ticketing::Password {
                password: p.clone(),
                expires_at_ms: None,
            },
            None => Ticketing::Disabled,
        },
        name,
        uuid,
        image_compression: opts.image_compression,
        seed: Some(1),
        fresh_key_per_link: false,
        breakage: opts.breakage,
        ..Config::default()
    };
    let mut server = Server::new(cfg);
    server.set_link_key(spice_server::testing::fixed_key());
    // The display: a framebuffer showing what the reference showed (its display messages
    // drawn by the reference canvas at their capture times), so both final screens must be
    // the same; without a captured display channel, a fake screen the size of the reference's.
    let reference_screen = session
        .channels
        .iter()
        .filter(|c| c.channel_type == ChannelType::Display)
        .min_by_key(|c| c.channel_id)
        .and_then(|c| crate::screen::ReferenceScreen::new(c, |ts| ms_since(t0, ts)));
    match reference_screen {
        Some(screen) => server.display().set_framebuffer(Box::new(screen)),
        None => {
            let (w, h) = opts.screen.unwrap_or((1024, 768));
            if let Some(screen) = spice_fake_devices::screen::FakeScreen::new("desktop", w, h) {
                server.display().set_framebuffer(Box::new(screen));
            }
        }
    }
    server.set_keyboard(Box::new(FakeKeyboard::new(log.clone())));
    server.set_mouse(Box::new(FakeMouse::new(log.clone())));
    server.set_tablet(Box::new(FakeTablet::new(log.clone())));
    // The sound card: only when the reference served the channel (a VMM without a sound
    // card offers neither), playing what the reference's guest played.
    if let Some(c) = captured_playback {
        server.set_playback_device(Box::new(crate::audio::ReplayPlayback::from_capture(
            c,
            |ts| ms_since(t0, ts),
        )));
    }
    let record = captured_record
        .map(|c| crate::audio::ReplayRecord::from_capture(Some(c), |ts| ms_since(t0, ts)));
    if let Some(r) = &record {
        server.set_record_device(Box::new(r.clone()));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(2);

    let mut rs: Vec<Replayer> = session
        .channels
        .iter()
        .map(|c| {
            let pending = c
                .messages
                .iter()
                .filter(|m| m.dir == Direction::ClientToServer)
                .filter(|m| !matches!(m.msg_type, 1..=3)) // ack_sync, ack, pong: ours
                .map(|m| (ms_since(t0, m.at.ts.as_f64()), m.msg_type, m.body.clone()))
                .collect();
            Replayer {
                captured: c,
                phase: Phase::Waiting,
                conn: None,
                inbox: Vec::new(),
                framer: Framer::new(HeaderKind::Full),
                kind: HeaderKind::Full,
                serial: 0,
                ack: None,
                key: None,
                pending,
                out: ChannelReplay {
                    channel_type: c.channel_type,
                    channel_id: c.channel_id,
                    reply: None,
                    result: None,
                    replies: Vec::new(),
                    sent: 0,
                    closed_at_ms: None,
                    notes: Vec::new(),
                },
            }
        })
        .collect();
    let main_idx = rs
        .iter()
        .position(|r| r.captured.channel_type == ChannelType::Main);
    if main_idx.is_none() {
        for r in &mut rs {
            r.out
                .notes
                .push("no main channel in this session: cannot get a session id".into());
            r.phase = Phase::Done;
        }
    }
    let mut session_id: Option<u32> = None;

    // The times things happen: channel starts and client messages.
    let last_ms = session
        .channels
        .iter()
        .flat_map(|c| c.messages.iter().map(|m| ms_since(t0, m.at.ts.as_f64())))
        .max()
        .unwrap_or(0);
    let end_ms = last_ms + 2_000;
    let mut now = 0u64;
    loop {
        // Start channels and send what is due.
        let mut progressed = true;
        while progressed {
            progressed = false;
            for (i, r) in rs.iter_mut().enumerate() {
                let start = ms_since(t0, r.captured.link.mess_at.ts.as_f64());
                if let Phase::Waiting = r.phase {
                    let is_main = Some(i) == main_idx;
                    if start <= now && (is_main || session_id.is_some()) {
                        let mut mess: LinkMess = r.captured.link.mess.clone();
                        mess.connection_id = if is_main { 0 } else { session_id.unwrap_or(0) };
                        let id = server.connect(now);
                        r.conn = Some(id);
                        server.handle_bytes(id, &mess.to_bytes(), now);
                        r.phase = Phase::Reply;
                        progressed = true;
                    }
                }
                if let (Phase::Data, Some(id)) = (&r.phase, r.conn) {
                    while r.pending.front().is_some_and(|(t, _, _)| *t <= now) {
                        let Some((_, ty, body)) = r.pending.pop_front() else {
                            break;
                        };
                        r.serial += 1;
                        let mut b = Vec::new();
                        frame(r.kind, r.serial, ty, &body, &mut b);
                        server.handle_bytes(id, &b, now);
                        r.out.sent += 1;
                        progressed = true;
                    }
                }
            }
            if drain(
                &mut server,
                &mut rs,
                &mut session_id,
                main_idx,
                opts,
                &mut rng,
                now,
            ) {
                progressed = true;
            }
        }
        // Next moment something happens.
        let mut next = end_ms;
        for r in &rs {
            match r.phase {
                Phase::Waiting => {
                    next = next.min(ms_since(t0, r.captured.link.mess_at.ts.as_f64()).max(now + 1))
                }
                Phase::Data => {
                    if let Some((t, _, _)) = r.pending.front() {
                        next = next.min((*t).max(now + 1));
                    }
                }
                _ => {}
            }
        }
        if let Some(t) = server.poll_timeout() {
            if t <= next {
                let t = t.max(now);
                now = t;
                log.set_now(now);
                server.handle_timeout(now);
                drain(
                    &mut server,
                    &mut rs,
                    &mut session_id,
                    main_idx,
                    opts,
                    &mut rng,
                    now,
                );
                if now >= end_ms {
                    break;
                }
                continue;
            }
        }
        if next >= end_ms && now >= end_ms {
            break;
        }
        now = next.max(now);
        log.set_now(now);
        if now >= end_ms {
            server.handle_timeout(now);
            drain(
                &mut server,
                &mut rs,
                &mut session_id,
                main_idx,
                opts,
                &mut rng,
                now,
            );
            break;
        }
    }
    for r in &mut rs {
        if let Phase::Waiting = r.phase {
            if r.out.notes.is_empty() {
                r.out
                    .notes
                    .push("not replayed: the main channel never linked".into());
            }
        }
        if !r.pending.is_empty() {
            r.out.notes.push(format!(
                "{} captured client messages not sent (the channel was closed or never linked)",
                r.pending.len()
            ));
        }
    }
    SessionReplay {
        channels: rs.into_iter().map(|r| r.out).collect(),
        events: log.records(),
        duration_ms: now,
        recorded: record.map(|r| r.received()),
    }
}

/// Move everything the server has written to the replay clients and let them react; true if
/// anything happened.
fn drain(
    server: &mut Server,
    rs: &mut [Replayer],
    session_id: &mut Option<u32>,
    main_idx: Option<usize>,
    opts: &ReplayOptions,
    rng: &mut ChaCha20Rng,
    now: u64,
) -> bool {
    let mut any = false;
    loop {
        let mut progressed = false;
        for (i, r) in rs.iter_mut().enumerate() {
            let Some(id) = r.conn else { continue };
            while let Some(b) = server.poll_transmit(id) {
                r.inbox.extend_from_slice(&b);
                progressed = true;
            }
            let mut replies: Vec<Vec<u8>> = Vec::new();
            step(
                r,
                opts,
                rng,
                now,
                &mut replies,
                Some(i) == main_idx,
                session_id,
            );
            for b in replies {
                server.handle_bytes(id, &b, now);
                progressed = true;
            }
            if server.is_finished(id) && !matches!(r.phase, Phase::Done) {
                r.phase = Phase::Done;
                r.out.closed_at_ms = Some(now);
                server.handle_closed(id, now);
                progressed = true;
            }
        }
        if !progressed {
            return any;
        }
        any = true;
    }
}

/// Advance one replay client on the bytes it has received; bytes to send go to `send`.
fn step(
    r: &mut Replayer,
    opts: &ReplayOptions,
    rng: &mut ChaCha20Rng,
    now: u64,
    send: &mut Vec<Vec<u8>>,
    is_main: bool,
    session_id: &mut Option<u32>,
) {
    loop {
        match r.phase {
            Phase::Reply => {
                if r.inbox.len() < LinkHeader::SIZE {
                    return;
                }
                let Ok(h) = LinkHeader::decode(&r.inbox) else {
                    return;
                };
                let need = LinkHeader::SIZE + h.size as usize;
                if r.inbox.len() < need {
                    return;
                }
                let body: Vec<u8> = r.inbox.drain(..need).skip(LinkHeader::SIZE).collect();
                let reply = match LinkReply::decode(&body) {
                    Ok(rep) => rep,
                    Err(e) => {
                        r.out
                            .notes
                            .push(format!("our link reply does not decode: {e}"));
                        r.phase = Phase::Done;
                        return;
                    }
                };
                r.out.reply = Some(reply.clone());
                if reply.error != LinkError::Ok {
                    r.out.result = Some(reply.error);
                    r.phase = Phase::Done;
                    return;
                }
                let client_caps: &Caps = &r.captured.link.mess.caps;
                if client_caps.has_common(caps::common::PROTOCOL_AUTH_SELECTION)
                    && reply.caps.has_common(caps::common::PROTOCOL_AUTH_SELECTION)
                {
                    send.push(1u32.to_le_bytes().to_vec());
                }
                let pw = opts.password.as_deref().unwrap_or("");
                match TicketKey::encrypt_for(&reply.pub_key, pw, rng) {
                    Some(t) => send.push(t.to_vec()),
                    None => {
                        r.out
                            .notes
                            .push("cannot encrypt a ticket for our key".into());
                        r.phase = Phase::Done;
                        return;
                    }
                }
                if client_caps.has_common(caps::common::MINI_HEADER)
                    && reply.caps.has_common(caps::common::MINI_HEADER)
                {
                    r.kind = HeaderKind::Mini;
                    r.framer.set_kind(HeaderKind::Mini);
                }
                r.key = Some(reply);
                r.phase = Phase::Result;
            }
            Phase::Result => {
                if r.inbox.len() < 4 {
                    return;
                }
                let b: Vec<u8> = r.inbox.drain(..4).collect();
                let res = spice_proto::link::decode_link_result(&b).unwrap_or(LinkError::Error);
                r.out.result = Some(res);
                if res != LinkError::Ok {
                    r.phase = Phase::Done;
                    return;
                }
                r.phase = Phase::Data;
            }
            Phase::Data => {
                let rest = std::mem::take(&mut r.inbox);
                r.framer.push(&rest);
                loop {
                    let m = match r.framer.next() {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(e) => {
                            r.out
                                .notes
                                .push(format!("our server's bytes do not frame: {e}"));
                            r.phase = Phase::Done;
                            return;
                        }
                    };
                    if let Some((window, left)) = r.ack.as_mut() {
                        *left -= 1;
                        if *left == 0 {
                            *left = *window;
                            send.push(framed(r, &MainClient::Base(BaseClient::Ack)));
                        }
                    }
                    let decoded = messages::decode(
                        r.captured.channel_type,
                        Direction::ServerToClient,
                        m.header.msg_type,
                        &m.body,
                    );
                    if m.header.msg_type < spice_proto::messages::FIRST_CHANNEL_MESSAGE {
                        match BaseServer::try_decode(m.header.msg_type, &m.body) {
                            Some(Ok(BaseServer::Ping(p))) => {
                                let pong = MainClient::Base(BaseClient::Pong(Pong {
                                    id: p.id,
                                    timestamp: p.timestamp,
                                }));
                                send.push(framed(r, &pong));
                            }
                            Some(Ok(BaseServer::SetAck(s))) => {
                                send.push(framed(
                                    r,
                                    &MainClient::Base(BaseClient::AckSync(s.generation)),
                                ));
                                let w = s.window.max(1);
                                r.ack = Some((w, w));
                            }
                            _ => {}
                        }
                    }
                    if is_main {
                        if let Ok(AnyMessage::MainServer(MainServer::Init(init))) = &decoded {
                            *session_id = Some(init.session_id);
                        }
                    }
                    let name = decoded.as_ref().map_or("undecodable", |d| d.name());
                    r.out.replies.push(Reply {
                        at_ms: now,
                        msg_type: m.header.msg_type,
                        name,
                        decoded: decoded.map_err(|e| e.to_string()),
                    });
                }
                return;
            }
            Phase::Waiting | Phase::Done => return,
        }
    }
}

fn framed<M: Message>(r: &mut Replayer, m: &M) -> Vec<u8> {
    r.serial += 1;
    let mut b = Vec::new();
    frame(r.kind, r.serial, m.msg_type(), &m.to_body(), &mut b);
    b
}

/// Index channels by (type, id) for reports.
pub fn by_channel(s: &SessionReplay) -> BTreeMap<(u8, u8), &ChannelReplay> {
    s.channels
        .iter()
        .map(|c| ((c.channel_type.to_raw(), c.channel_id), c))
        .collect()
}
