//! From reassembled TCP connections to SPICE channels and sessions.
//!
//! A connection is a SPICE channel when the client's first bytes are a `SpiceLinkHeader`
//! ("REDQ"), whatever the port. The link stage is read with `spice_proto::link` (link message,
//! reply, auth mechanism when both sides have `PROTOCOL_AUTH_SELECTION`, the 128-byte ticket,
//! the 4-byte result); data messages follow with the mini header iff both sides have
//! `MINI_HEADER`, cut by `spice_proto::header::Framer` and decoded by `spice_proto::decode`.
//!
//! Channels are grouped into sessions by id: a main channel's session is the `session_id` of
//! its `init` message (its link's `connection_id` is 0); every other channel presents that id as
//! its link's `connection_id`.
//!
//! **Resynchronisation rule** (after a gap, or a header the framer refuses): the bytes after the
//! hole are scanned from their first byte; a position is accepted as a message boundary when the
//! chain of data headers starting there — each with a type known for this channel and direction
//! (any type in 1..=511 while spice-proto has no messages for the channel yet), a body of at most
//! 16 MiB, a `sub_list` inside the body, a body that decodes without error (when captured) and,
//! with the full header, serials increasing by one and above the last serial seen before the
//! hole — ends exactly where a captured TCP segment ends, after at least two messages (or one,
//! when it ends exactly at the end of the captured stream). Senders write whole messages, so segment ends are message ends
//! far more often than chance. The earliest such position wins; while the earliest candidate's
//! chain runs past the captured bytes, later candidates wait. If the stream ends first, the
//! bytes are reported as discarded. This module never panics on input.

use crate::tcp::{Connection, Origin, Piece};
use crate::transcript::*;
use spice_proto::caps::common;
use spice_proto::header::{DataHeader, Framer, HeaderKind};
use spice_proto::link::{
    decode_auth_mechanism, decode_link_result, AuthMechanism, EncryptedTicket, LinkError,
    LinkHeader, LinkMess, LinkReply, ENCRYPTED_TICKET_BYTES, SPICE_MAGIC,
};
use spice_proto::messages as m;
use spice_proto::messages::MainServer;
use spice_proto::{AnyMessage, ChannelType, Direction};
use std::collections::BTreeMap;

/// Messages a resynchronisation chain needs before a segment end proves it.
const RESYNC_MIN_CHAIN: u32 = 2;
/// Largest body a resynchronisation candidate may announce.
const RESYNC_MAX_SIZE: u32 = 16 * 1024 * 1024;
/// A chain of this many plausible, decodable messages proves a boundary even where no
/// segment ends (and bounds the walk from one candidate).
const RESYNC_MAX_HOPS: u32 = 16;
/// Work (header and body bytes examined) a resynchronisation may spend per byte it buffers,
/// plus [`RESYNC_WORK_BASE`]: past that the stream is given up until the next hole (a crafted
/// stream could otherwise make every candidate re-walk a long chain: quadratic).
const RESYNC_WORK_PER_BYTE: u64 = 64;
const RESYNC_WORK_BASE: u64 = 16 * 1024 * 1024;

/// The channel-specific and base message types of one channel and direction.
type TypeTable = &'static [(u16, &'static str)];

fn type_tables(channel: ChannelType, dir: Direction) -> (TypeTable, TypeTable) {
    use ChannelType as C;
    use Direction::*;
    let own: TypeTable = match (channel, dir) {
        (C::Main, ServerToClient) => m::MainServer::TYPES,
        (C::Main, ClientToServer) => m::MainClient::TYPES,
        (C::Display, ServerToClient) => m::DisplayServer::TYPES,
        (C::Display, ClientToServer) => m::DisplayClient::TYPES,
        (C::Inputs, ServerToClient) => m::InputsServer::TYPES,
        (C::Inputs, ClientToServer) => m::InputsClient::TYPES,
        (C::Cursor, ServerToClient) => m::CursorServer::TYPES,
        (C::Cursor, ClientToServer) => m::CursorClient::TYPES,
        (C::Playback, ServerToClient) => m::PlaybackServer::TYPES,
        (C::Playback, ClientToServer) => m::PlaybackClient::TYPES,
        (C::Record, ServerToClient) => m::RecordServer::TYPES,
        (C::Record, ClientToServer) => m::RecordClient::TYPES,
        (C::Smartcard, ServerToClient) => m::SmartcardServer::TYPES,
        (C::Smartcard, ClientToServer) => m::SmartcardClient::TYPES,
        (C::Usbredir, ServerToClient) => m::SpicevmcServer::TYPES,
        (C::Usbredir, ClientToServer) => m::SpicevmcClient::TYPES,
        (C::Port | C::Webdav, ServerToClient) => m::PortServer::TYPES,
        (C::Port | C::Webdav, ClientToServer) => m::PortClient::TYPES,
        _ => &[],
    };
    let base = match dir {
        ServerToClient => m::BaseServer::TYPES,
        ClientToServer => m::BaseClient::TYPES,
    };
    (own, base)
}

/// The spice.proto name of a message type on a channel, or "unknown".
pub fn message_name(channel: ChannelType, dir: Direction, msg_type: u16) -> &'static str {
    let (own, base) = type_tables(channel, dir);
    own.iter()
        .chain(base)
        .find(|(t, _)| *t == msg_type)
        .map_or("unknown", |(_, n)| n)
}

fn plausible_type(channel: ChannelType, dir: Direction, msg_type: u16) -> bool {
    let (own, base) = type_tables(channel, dir);
    if own.is_empty() {
        return (1..=511).contains(&msg_type);
    }
    own.iter().chain(base).any(|(t, _)| *t == msg_type)
}

/// Reads exact byte counts off a direction's pieces (for the link stage).
struct Cursor<'p> {
    pieces: &'p [Piece],
    idx: usize,
    /// Bytes of `pieces[idx]` already taken.
    within: usize,
}

enum Take {
    Bytes(Vec<u8>, Origin),
    Gap,
    End,
}

impl<'p> Cursor<'p> {
    fn new(pieces: &'p [Piece]) -> Self {
        Cursor {
            pieces,
            idx: 0,
            within: 0,
        }
    }

    fn peek(&self, n: usize) -> Vec<u8> {
        let mut out = vec![];
        let mut idx = self.idx;
        let mut within = self.within;
        while out.len() < n {
            match self.pieces.get(idx) {
                Some(Piece::Data { data, .. }) => {
                    let part = data.get(within..).unwrap_or(&[]);
                    let want = (n - out.len()).min(part.len());
                    out.extend_from_slice(&part[..want]);
                    idx += 1;
                    within = 0;
                }
                _ => break,
            }
        }
        out
    }

    fn take(&mut self, n: usize) -> Take {
        let mut out = Vec::with_capacity(n.min(1 << 16));
        let mut origin = Origin::default();
        while out.len() < n {
            match self.pieces.get(self.idx) {
                None => return Take::End,
                Some(Piece::Gap { .. }) => return Take::Gap,
                Some(Piece::Data {
                    data, origin: o, ..
                }) => {
                    let part = data.get(self.within..).unwrap_or(&[]);
                    let want = (n - out.len()).min(part.len());
                    out.extend_from_slice(&part[..want]);
                    origin = *o;
                    self.within += want;
                    if self.within >= data.len() {
                        self.idx += 1;
                        self.within = 0;
                    }
                }
            }
        }
        Take::Bytes(out, origin)
    }

    /// The pieces not taken yet, the first one cut at the cursor.
    fn rest(&self) -> Vec<Piece> {
        let mut out = vec![];
        for (i, p) in self.pieces.iter().enumerate().skip(self.idx) {
            match p {
                Piece::Data {
                    offset,
                    data,
                    origin,
                } if i == self.idx && self.within > 0 => out.push(Piece::Data {
                    offset: offset + self.within as u64,
                    data: data.get(self.within..).unwrap_or(&[]).to_vec(),
                    origin: *origin,
                }),
                p => out.push(p.clone()),
            }
        }
        out
    }
}

/// Read one link-stage message (header + body) off a cursor.
fn link_message(c: &mut Cursor<'_>) -> Result<Option<(LinkHeader, Vec<u8>, Origin)>, String> {
    let h = match c.take(LinkHeader::SIZE) {
        Take::Bytes(b, _) => LinkHeader::decode(&b).map_err(|e| e.to_string())?,
        Take::Gap => return Err("bytes missing in the link header".into()),
        Take::End => return Ok(None),
    };
    if h.magic != SPICE_MAGIC {
        return Err(format!("bad link magic {:#010x}", h.magic));
    }
    if h.size > spice_proto::link::MAX_LINK_MESSAGE_SIZE {
        return Err(format!("link message of {} bytes", h.size));
    }
    match c.take(h.size as usize) {
        Take::Bytes(b, o) => Ok(Some((h, b, o))),
        Take::Gap => Err("bytes missing in the link message".into()),
        Take::End => Ok(None),
    }
}

fn link_header_size(first: &[u8]) -> Option<u32> {
    let h = LinkHeader::decode(first).ok()?;
    (h.magic == SPICE_MAGIC).then_some(h.size)
}

/// What [`channel_of`] makes of one connection.
pub enum Classified {
    Channel(Box<Channel>),
    Other(OtherConnection),
}

/// Decode one TCP connection as a SPICE channel, or say why it is not one.
pub fn channel_of(mut conn: Connection) -> Classified {
    // Without a SYN the first sender may have been the server: the client's link message is
    // shorter than any link reply.
    if !conn.saw_syn {
        let c = link_header_size(&Cursor::new(&conn.c2s_pieces).peek(16));
        let s = link_header_size(&Cursor::new(&conn.s2c_pieces).peek(16));
        if let (Some(c), Some(s)) = (c, s) {
            if c as usize >= LinkReply::FIXED_SIZE && (s as usize) < LinkReply::FIXED_SIZE {
                conn.swap_sides();
            }
        }
    }
    let other = |conn: &Connection, reason| {
        Classified::Other(OtherConnection {
            client: conn.client,
            server: conn.server,
            first: conn.first,
            reason,
        })
    };
    let mut cc = Cursor::new(&conn.c2s_pieces);
    let first = cc.peek(4);
    if first.is_empty() {
        return other(&conn, NotSpice::Empty);
    }
    if first.len() < 4 || first[..] != SPICE_MAGIC.to_le_bytes() {
        let reason = if first.first() == Some(&0x16) && first.get(1) == Some(&3) {
            NotSpice::Tls
        } else if conn.c2s.midstream {
            NotSpice::Midstream
        } else {
            NotSpice::NoLinkHeader
        };
        return other(&conn, reason);
    }
    let (mess, mess_at) = match link_message(&mut cc) {
        Ok(Some((_, b, o))) => match LinkMess::decode(&b) {
            Ok(m) => (m, o),
            Err(e) => return other(&conn, NotSpice::BadLink(e)),
        },
        Ok(None) | Err(_) => return other(&conn, NotSpice::LinkGap),
    };
    let mut ch = Channel {
        channel_type: mess.channel_type,
        channel_id: mess.channel_id,
        client: conn.client,
        server: conn.server,
        first: conn.first,
        link: Link {
            mess,
            mess_at,
            reply: None,
            reply_at: None,
            auth: None,
            ticket: None,
            result: None,
            result_at: None,
        },
        header: HeaderKind::Full,
        messages: vec![],
        problems: vec![],
    };
    let c2s = Direction::ClientToServer;
    let s2c = Direction::ServerToClient;
    let mut sc = Cursor::new(&conn.s2c_pieces);
    match link_message(&mut sc) {
        Ok(Some((_, b, o))) => match LinkReply::decode(&b) {
            Ok(r) => {
                ch.link.reply = Some(r);
                ch.link.reply_at = Some(o);
            }
            Err(e) => ch.problems.push(Problem::Link {
                dir: s2c,
                what: format!("link reply: {e}"),
            }),
        },
        Ok(None) => {}
        Err(what) => ch.problems.push(Problem::Link { dir: s2c, what }),
    }
    let Some(reply) = ch.link.reply.clone() else {
        return Classified::Channel(Box::new(ch));
    };
    if reply.error != LinkError::Ok {
        return Classified::Channel(Box::new(ch));
    }
    let caps = &ch.link.mess.caps;
    if caps.both_common(&reply.caps, common::MINI_HEADER) {
        ch.header = HeaderKind::Mini;
    }
    if caps.both_common(&reply.caps, common::PROTOCOL_AUTH_SELECTION) {
        match cc.take(4) {
            Take::Bytes(b, _) => ch.link.auth = decode_auth_mechanism(&b).ok(),
            Take::Gap => {
                ch.problems.push(Problem::Link {
                    dir: c2s,
                    what: "bytes missing in the auth mechanism".into(),
                });
                return Classified::Channel(Box::new(ch));
            }
            Take::End => return Classified::Channel(Box::new(ch)),
        }
        if let Some(a) = ch.link.auth {
            if a != AuthMechanism::Spice {
                ch.problems.push(Problem::Sasl);
                return Classified::Channel(Box::new(ch));
            }
        }
    }
    match cc.take(ENCRYPTED_TICKET_BYTES) {
        Take::Bytes(b, _) => ch.link.ticket = EncryptedTicket::decode(&b).ok(),
        Take::Gap => {
            ch.problems.push(Problem::Link {
                dir: c2s,
                what: "bytes missing in the ticket".into(),
            });
            return Classified::Channel(Box::new(ch));
        }
        Take::End => return Classified::Channel(Box::new(ch)),
    }
    match sc.take(4) {
        Take::Bytes(b, o) => {
            ch.link.result = decode_link_result(&b).ok();
            ch.link.result_at = Some(o);
        }
        Take::Gap => {
            ch.problems.push(Problem::Link {
                dir: s2c,
                what: "bytes missing in the link result".into(),
            });
        }
        Take::End => {}
    }
    if ch.link.result != Some(LinkError::Ok) {
        return Classified::Channel(Box::new(ch));
    }
    let mut msgs = vec![];
    for (dir, rest) in [(c2s, cc.rest()), (s2c, sc.rest())] {
        let mut d = DirDecoder::new(ch.channel_type, dir, ch.header);
        for p in &rest {
            d.push(p);
        }
        d.finish();
        msgs.extend(d.messages);
        ch.problems.extend(d.problems);
    }
    // Both directions, by the frame that completed each message (stable: a direction keeps
    // its own order).
    msgs.sort_by_key(|m| m.at.frame);
    ch.messages = msgs;
    Classified::Channel(Box::new(ch))
}

/// Bytes after a hole, held until a message boundary is proven.
#[derive(Default)]
struct Resync {
    /// Stream offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
    /// The pieces in `buf`: (end position in `buf`, origin).
    ends: BTreeMap<usize, Origin>,
    /// First candidate position not yet rejected.
    cand: usize,
    /// Index in `problems` of the problem this resync resolves.
    problem: usize,
    /// Bytes examined so far by candidate walks.
    work: u64,
    /// The work budget ran out: the rest of the stream (until a hole) is discarded unread.
    abandoned: bool,
}

enum Verdict {
    Accept,
    Reject,
    Undecided,
}

/// Cuts and decodes one direction's data messages.
struct DirDecoder {
    channel: ChannelType,
    dir: Direction,
    kind: HeaderKind,
    framer: Framer,
    /// Stream offset of the next message's header.
    consumed: u64,
    /// Copy of the bytes the framer holds (to rescan them after a framing error).
    held: Vec<u8>,
    held_ends: BTreeMap<usize, Origin>,
    implicit_serial: u64,
    last_serial: Option<u64>,
    resync: Option<Resync>,
    messages: Vec<MessageRecord>,
    problems: Vec<Problem>,
}

impl DirDecoder {
    fn new(channel: ChannelType, dir: Direction, kind: HeaderKind) -> Self {
        DirDecoder {
            channel,
            dir,
            kind,
            framer: Framer::new(kind),
            consumed: 0,
            held: vec![],
            held_ends: BTreeMap::new(),
            implicit_serial: 0,
            last_serial: None,
            resync: None,
            messages: vec![],
            problems: vec![],
        }
    }

    fn push(&mut self, p: &Piece) {
        match p {
            Piece::Data {
                offset,
                data,
                origin,
            } => {
                if self.resync.is_some() {
                    self.push_resync(data, *origin);
                } else {
                    if self.held.is_empty() {
                        self.consumed = *offset;
                    }
                    self.push_synced(data, *origin);
                }
            }
            Piece::Gap {
                offset,
                len,
                origin,
            } => {
                let discarded = match self.resync.take() {
                    Some(r) => {
                        let d = r.buf.len() as u64;
                        self.close_problem(r.problem, d, None);
                        0
                    }
                    None => 0,
                };
                // The message in progress (bytes held) is lost with the hole.
                let held = self.held.len() as u64;
                self.held.clear();
                self.held_ends.clear();
                self.framer = Framer::new(self.kind);
                self.problems.push(Problem::Gap {
                    dir: self.dir,
                    offset: *offset,
                    len: *len,
                    at: *origin,
                    discarded: discarded + held,
                    resumed_at: None,
                });
                self.resync = Some(Resync {
                    start: offset + len,
                    problem: self.problems.len() - 1,
                    ..Resync::default()
                });
            }
        }
    }

    fn close_problem(&mut self, idx: usize, add_discarded: u64, at: Option<u64>) {
        if let Some(
            Problem::Gap {
                discarded,
                resumed_at,
                ..
            }
            | Problem::Framing {
                discarded,
                resumed_at,
                ..
            },
        ) = self.problems.get_mut(idx)
        {
            *discarded += add_discarded;
            *resumed_at = at;
        }
    }

    fn push_synced(&mut self, data: &[u8], origin: Origin) {
        self.framer.push(data);
        self.held.extend_from_slice(data);
        self.held_ends.insert(self.held.len(), origin);
        loop {
            match self.framer.next() {
                Ok(Some(raw)) => {
                    let total = self.kind.size() + raw.body.len();
                    self.record(raw.header, raw.body, origin);
                    self.held.drain(..total.min(self.held.len()));
                    self.held_ends = std::mem::take(&mut self.held_ends)
                        .into_iter()
                        .filter(|(e, _)| *e > total)
                        .map(|(e, o)| (e - total, o))
                        .collect();
                }
                Ok(None) => break,
                Err(error) => {
                    // Rescan everything after the refused header's first byte.
                    let buf: Vec<u8> = self.held.get(1..).unwrap_or(&[]).to_vec();
                    let ends = std::mem::take(&mut self.held_ends)
                        .into_iter()
                        .filter(|(e, _)| *e > 1)
                        .map(|(e, o)| (e - 1, o))
                        .collect();
                    self.problems.push(Problem::Framing {
                        dir: self.dir,
                        offset: self.consumed,
                        error,
                        discarded: 1,
                        resumed_at: None,
                    });
                    self.held.clear();
                    self.framer = Framer::new(self.kind);
                    self.resync = Some(Resync {
                        start: self.consumed + 1,
                        buf,
                        ends,
                        cand: 0,
                        problem: self.problems.len() - 1,
                        ..Resync::default()
                    });
                    self.try_resync(false);
                    break;
                }
            }
        }
    }

    fn record(&mut self, h: DataHeader, body: Vec<u8>, at: Origin) {
        self.implicit_serial += 1;
        let serial = match self.kind {
            HeaderKind::Full => h.serial,
            HeaderKind::Mini => self.implicit_serial,
        };
        self.last_serial = Some(serial);
        let decoded = spice_proto::decode(self.channel, self.dir, h.msg_type, &body);
        let name = match &decoded {
            Ok(m) => m.name(),
            Err(_) => message_name(self.channel, self.dir, h.msg_type),
        };
        self.messages.push(MessageRecord {
            dir: self.dir,
            at,
            offset: self.consumed,
            serial,
            msg_type: h.msg_type,
            name,
            size: h.size,
            body,
            decoded,
        });
        self.consumed += (self.kind.size() + h.size as usize) as u64;
    }

    fn push_resync(&mut self, data: &[u8], origin: Origin) {
        if let Some(r) = &mut self.resync {
            if r.abandoned {
                let (idx, n) = (r.problem, data.len() as u64);
                self.close_problem(idx, n, None);
                return;
            }
            r.buf.extend_from_slice(data);
            r.ends.insert(r.buf.len(), origin);
        }
        self.try_resync(false);
    }

    /// Whether a boundary is at `p`, and the bytes examined to decide.
    fn verdict(&self, r: &Resync, p: usize, at_end: bool) -> (Verdict, u64) {
        let hs = self.kind.size();
        let mut q = p;
        let mut hops = 0u32;
        let mut prev: Option<u64> = None;
        let mut work = 0u64;
        loop {
            let proven = hops >= RESYNC_MIN_CHAIN || (at_end && hops >= 1 && q == r.buf.len());
            if (proven && r.ends.contains_key(&q)) || hops >= RESYNC_MAX_HOPS {
                return (Verdict::Accept, work);
            }
            work += hs as u64;
            let Some(hb) = r.buf.get(q..q + hs) else {
                let v = if at_end {
                    Verdict::Reject
                } else {
                    Verdict::Undecided
                };
                return (v, work);
            };
            let Ok(h) = DataHeader::decode(self.kind, hb) else {
                return (Verdict::Reject, work);
            };
            if h.size > RESYNC_MAX_SIZE
                || !plausible_type(self.channel, self.dir, h.msg_type)
                || (h.sub_list != 0 && h.sub_list >= h.size)
            {
                return (Verdict::Reject, work);
            }
            if self.kind == HeaderKind::Full {
                let ok = match (prev, self.last_serial) {
                    (Some(s), _) => h.serial == s.wrapping_add(1),
                    (None, Some(last)) => h.serial > last,
                    (None, None) => h.serial > 0,
                };
                if !ok {
                    return (Verdict::Reject, work);
                }
                prev = Some(h.serial);
            }
            let body_at = q + hs;
            if let Some(body) = r.buf.get(body_at..body_at + h.size as usize) {
                work += body.len() as u64;
                if spice_proto::decode(self.channel, self.dir, h.msg_type, body).is_err() {
                    return (Verdict::Reject, work);
                }
            }
            q = body_at + h.size as usize;
            hops += 1;
        }
    }

    fn try_resync(&mut self, at_end: bool) {
        let Some(mut r) = self.resync.take() else {
            return;
        };
        if r.abandoned {
            // Its problem was closed when it was given up.
            if !at_end {
                self.resync = Some(r);
            }
            return;
        }
        while r.cand < r.buf.len() {
            let (verdict, work) = self.verdict(&r, r.cand, at_end);
            r.work += work;
            if r.work > RESYNC_WORK_BASE + RESYNC_WORK_PER_BYTE * r.buf.len() as u64 {
                let d = r.buf.len() as u64;
                self.close_problem(r.problem, d, None);
                r.abandoned = true;
                r.buf = Vec::new();
                r.ends.clear();
                if !at_end {
                    self.resync = Some(r);
                }
                return;
            }
            match verdict {
                Verdict::Accept => {
                    let p = r.cand;
                    self.close_problem(r.problem, p as u64, Some(r.start + p as u64));
                    self.consumed = r.start + p as u64;
                    self.framer = Framer::new(self.kind);
                    self.held.clear();
                    self.held_ends.clear();
                    // Replay the buffered pieces from the boundary on.
                    let mut from = 0usize;
                    for (end, origin) in r.ends.iter() {
                        let s = from.max(p);
                        if *end > s {
                            if let Some(chunk) = r.buf.get(s..*end) {
                                self.push_synced(chunk, *origin);
                            }
                        }
                        from = *end;
                        if self.resync.is_some() {
                            // A framing error during replay started a new resync over the
                            // rest; feed it the remaining pieces.
                            if let Some(rest) = r.buf.get(*end..) {
                                let mut at = *end;
                                for (e2, o2) in r.ends.range(end + 1..) {
                                    if let Some(c) = rest.get(at - end..e2 - end) {
                                        self.push_resync(c, *o2);
                                    }
                                    at = *e2;
                                }
                            }
                            return;
                        }
                    }
                    return;
                }
                Verdict::Reject => r.cand += 1,
                Verdict::Undecided => break,
            }
        }
        if at_end {
            let d = r.buf.len() as u64;
            self.close_problem(r.problem, d, None);
        } else {
            self.resync = Some(r);
        }
    }

    fn finish(&mut self) {
        if self.resync.is_some() {
            self.try_resync(true);
        }
        if self.resync.is_none() && !self.held.is_empty() {
            self.problems.push(Problem::Truncated {
                dir: self.dir,
                offset: self.consumed,
                buffered: self.held.len() as u64,
            });
        }
        // A resync that was still open after `try_resync(true)` was closed there.
        self.resync = None;
    }
}

/// Group decoded channels into sessions.
pub fn group(channels: Vec<Channel>) -> Vec<Session> {
    let mut sessions: Vec<Session> = vec![];
    for ch in channels {
        let id = if ch.channel_type == ChannelType::Main && ch.link.mess.connection_id == 0 {
            ch.messages.iter().find_map(|m| match &m.decoded {
                Ok(AnyMessage::MainServer(MainServer::Init(init))) => Some(init.session_id),
                _ => None,
            })
        } else {
            Some(ch.link.mess.connection_id)
        };
        match sessions.iter_mut().find(|s| s.id.is_some() && s.id == id) {
            Some(s) => s.channels.push(ch),
            None => sessions.push(Session {
                id,
                channels: vec![ch],
            }),
        }
    }
    for s in &mut sessions {
        s.channels.sort_by_key(|c| c.first.frame);
    }
    sessions.sort_by_key(|s| s.channels.first().map(|c| c.first.frame));
    sessions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::Piece;

    fn origin() -> Origin {
        Origin {
            frame: 1,
            ts: Default::default(),
        }
    }

    /// A mini-header client `ack` (type 2, empty body): plausible and decodable anywhere.
    const ACK: [u8; 6] = [2, 0, 0, 0, 0, 0];

    /// Security review 18: after a hole, every candidate position re-walked the chain of
    /// messages that follows it. A long chain of valid messages ending in garbage made that
    /// quadratic (100,000 acks: 5·10^9 header walks). A chain of RESYNC_MAX_HOPS proves the
    /// boundary now, and the walk's work is bounded per buffered byte.
    #[test]
    fn resync_after_a_hole_is_linear_on_a_long_chain_ending_in_garbage() {
        let mut d = DirDecoder::new(
            ChannelType::Inputs,
            Direction::ClientToServer,
            HeaderKind::Mini,
        );
        d.push(&Piece::Gap {
            offset: 0,
            len: 3,
            origin: origin(),
        });
        let mut data: Vec<u8> = (0..100_000).flat_map(|_| ACK).collect();
        data.extend_from_slice(&[0xff; 7]);
        let n = data.len() as u64;
        d.push(&Piece::Data {
            offset: 3,
            data,
            origin: origin(),
        });
        d.finish();
        // Resynchronised at once, on the first ack.
        assert!(
            matches!(
                d.problems.first(),
                Some(Problem::Gap {
                    resumed_at: Some(3),
                    discarded: 0,
                    ..
                })
            ),
            "{:?}",
            d.problems
        );
        assert!(d.messages.len() >= 99_000, "{}", d.messages.len());
        assert!(n > 0);
    }

    /// A stream crafted so that no candidate is ever proven (chains one hop short of proof,
    /// each ending in garbage) costs at most the work budget, then is given up: the problem
    /// says it never resumed, and no more bytes are buffered for it.
    #[test]
    fn a_resync_that_cannot_finish_is_given_up_within_its_work_budget() {
        let mut d = DirDecoder::new(
            ChannelType::Inputs,
            Direction::ClientToServer,
            HeaderKind::Mini,
        );
        d.push(&Piece::Gap {
            offset: 0,
            len: 3,
            origin: origin(),
        });
        // Fifteen acks then a byte that breaks the chain, over and over, in small pieces (so
        // every piece re-runs the pending candidates).
        let unit: Vec<u8> = (0..RESYNC_MAX_HOPS as usize - 1)
            .flat_map(|_| ACK)
            .chain([0xff])
            .collect();
        let mut total = 0u64;
        for _ in 0..20_000 {
            total += unit.len() as u64;
            d.push(&Piece::Data {
                offset: 3,
                data: unit.clone(),
                origin: origin(),
            });
            if let Some(r) = &d.resync {
                assert!(r.work <= RESYNC_WORK_BASE + RESYNC_WORK_PER_BYTE * total + (1 << 20));
            }
        }
        d.finish();
        assert!(d.resync.is_none());
        let Some(Problem::Gap { discarded, .. }) = d.problems.first() else {
            panic!("no gap problem: {:?}", d.problems);
        };
        assert!(*discarded > 0);
    }
}
