//! The typed transcript of a capture: sessions → channels → ordered messages.
//!
//! This is what a conformance harness consumes. A [`Transcript`] holds every SPICE client
//! session found ([`Session`], grouped by session id), each session's channel connections
//! ([`Channel`]: type, id, link stage, negotiated header), each channel's data messages in
//! capture order across both directions ([`MessageRecord`]: direction, frame, timestamp, serial,
//! type, name, size, body and the decoded [`AnyMessage`] or the [`DecodeError`]), and what could
//! not be followed ([`Problem`]s per channel, [`OtherConnection`]s that were not SPICE or not
//! decodable, such as TLS). It owns no parsing: [`crate::session`] builds it.

use crate::pcap::ReadSummary;
use crate::tcp::Origin;
use spice_proto::header::HeaderKind;
use spice_proto::link::{AuthMechanism, EncryptedTicket, LinkError, LinkMess, LinkReply};
use spice_proto::{AnyMessage, ChannelType, DecodeError, Direction};
use std::net::SocketAddr;

/// Everything decoded from one capture file.
#[derive(Debug, Clone)]
pub struct Transcript {
    /// Frames, format and reader warnings.
    pub capture: ReadSummary,
    /// Client sessions in the order their first channel appears.
    pub sessions: Vec<Session>,
    /// TCP connections that carried no decodable SPICE link stage.
    pub other_connections: Vec<OtherConnection>,
    /// Frames that were not TCP segments for a reason worth telling (fragments, unsupported
    /// link types, malformed headers): (frame, reason).
    pub skipped_frames: Vec<(u64, String)>,
}

/// One client session: the channels linked with one session id.
#[derive(Debug, Clone)]
pub struct Session {
    /// The main channel's `init.session_id`, or the `connection_id` the other channels present;
    /// `None` for a main channel whose init was not captured.
    pub id: Option<u32>,
    /// Channels in the order their connection starts.
    pub channels: Vec<Channel>,
}

/// One channel connection.
#[derive(Debug, Clone)]
pub struct Channel {
    pub channel_type: ChannelType,
    pub channel_id: u8,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// The frame that opened the connection.
    pub first: Origin,
    pub link: Link,
    /// The data header both directions use (mini iff both sides have `MINI_HEADER`).
    pub header: HeaderKind,
    /// Data messages of both directions, ordered by the frame that completed them.
    pub messages: Vec<MessageRecord>,
    pub problems: Vec<Problem>,
}

impl Channel {
    /// The type name as spice.proto spells it ("main", "display", ...).
    pub fn type_name(&self) -> &'static str {
        self.channel_type.name()
    }
}

/// The link stage of a channel as captured; later parts are `None` when the capture (or the
/// connection) ends before them.
#[derive(Debug, Clone)]
pub struct Link {
    pub mess: LinkMess,
    pub mess_at: Origin,
    pub reply: Option<LinkReply>,
    pub reply_at: Option<Origin>,
    /// Sent only when both sides have `PROTOCOL_AUTH_SELECTION`.
    pub auth: Option<AuthMechanism>,
    pub ticket: Option<EncryptedTicket>,
    pub result: Option<LinkError>,
    pub result_at: Option<Origin>,
}

/// One data message.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub dir: Direction,
    /// The frame whose segment completed the message.
    pub at: Origin,
    /// Stream offset (in its direction, from the first link-stage byte) of the data header.
    pub offset: u64,
    /// The header's serial; with the mini header, the implicit serial both ends count
    /// (1 for the first message of a direction; messages lost in a gap are not counted).
    pub serial: u64,
    pub msg_type: u16,
    /// The spice.proto name, "unknown" for a type spice-proto does not know.
    pub name: &'static str,
    /// Body size from the header.
    pub size: u32,
    pub body: Vec<u8>,
    pub decoded: Result<AnyMessage, DecodeError>,
}

impl MessageRecord {
    /// A known type whose body did not decode.
    pub fn failed(&self) -> bool {
        self.decoded.is_err()
    }
    /// A type spice-proto does not know (reported, not a failure).
    pub fn unknown(&self) -> bool {
        matches!(&self.decoded, Ok(m) if m.is_unknown())
    }
}

/// Something in a channel's streams that could not be followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Bytes never captured. The message in progress is lost, `discarded` bytes after the hole
    /// were skipped to find the next provable message boundary at `resumed_at` (stream offset),
    /// or the stream never resynchronised (`None`).
    Gap {
        dir: Direction,
        offset: u64,
        len: u64,
        at: Origin,
        discarded: u64,
        resumed_at: Option<u64>,
    },
    /// A data header the framer refused (body over the size limit); resynchronised like a gap.
    Framing {
        dir: Direction,
        offset: u64,
        error: DecodeError,
        discarded: u64,
        resumed_at: Option<u64>,
    },
    /// The stream ended inside a message (`buffered` bytes of it captured).
    Truncated {
        dir: Direction,
        offset: u64,
        buffered: u64,
    },
    /// The link stage could not be read to its end; no data messages follow.
    Link { dir: Direction, what: String },
    /// The channel authenticated with SASL: its data is not decoded.
    Sasl,
}

/// A TCP connection that is not a (decodable) SPICE channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherConnection {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub first: Origin,
    pub reason: NotSpice,
}

/// Why a connection is in [`Transcript::other_connections`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSpice {
    /// The client's first bytes are a TLS handshake record.
    Tls,
    /// The client sent no bytes.
    Empty,
    /// The client's first bytes are not a SPICE link header.
    NoLinkHeader,
    /// The capture started after the link stage.
    Midstream,
    /// A link header whose link message does not decode.
    BadLink(DecodeError),
    /// A hole in the client's link stage.
    LinkGap,
}

impl std::fmt::Display for NotSpice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotSpice::Tls => write!(f, "TLS (not decoded)"),
            NotSpice::Empty => write!(f, "no client data"),
            NotSpice::NoLinkHeader => write!(f, "not SPICE (no REDQ link header)"),
            NotSpice::Midstream => write!(f, "capture started after the link stage"),
            NotSpice::BadLink(e) => write!(f, "bad link message: {e}"),
            NotSpice::LinkGap => write!(f, "bytes missing in the link stage"),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resumed = |r: &Option<u64>| match r {
            Some(o) => format!("resumed at offset {o}"),
            None => "never resynchronised".to_string(),
        };
        match self {
            Problem::Gap {
                dir,
                offset,
                len,
                at,
                discarded,
                resumed_at,
            } => write!(
                f,
                "{} gap: {len} bytes missing at offset {offset} (before frame {}), {discarded} bytes skipped, {}",
                dir.short(),
                at.frame,
                resumed(resumed_at)
            ),
            Problem::Framing {
                dir,
                offset,
                error,
                discarded,
                resumed_at,
            } => write!(
                f,
                "{} framing error at offset {offset}: {error}; {discarded} bytes skipped, {}",
                dir.short(),
                resumed(resumed_at)
            ),
            Problem::Truncated {
                dir,
                offset,
                buffered,
            } => write!(
                f,
                "{} stream ends inside a message at offset {offset} ({buffered} bytes captured)",
                dir.short()
            ),
            Problem::Link { dir, what } => write!(f, "{} link stage: {what}", dir.short()),
            Problem::Sasl => write!(f, "SASL authentication: data not decoded"),
        }
    }
}

impl Transcript {
    /// Every channel with its session id.
    pub fn channels(&self) -> impl Iterator<Item = (Option<u32>, &Channel)> {
        self.sessions
            .iter()
            .flat_map(|s| s.channels.iter().map(move |c| (s.id, c)))
    }

    /// Every message that failed to decode, with its session and channel.
    pub fn failures(&self) -> impl Iterator<Item = (Option<u32>, &Channel, &MessageRecord)> {
        self.channels().flat_map(|(s, c)| {
            c.messages
                .iter()
                .filter(|m| m.failed())
                .map(move |m| (s, c, m))
        })
    }

    /// The number of data messages.
    pub fn message_count(&self) -> usize {
        self.channels().map(|(_, c)| c.messages.len()).sum()
    }
}
