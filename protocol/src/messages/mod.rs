//! Every channel's messages, both directions.
//!
//! Each channel has one enum of server → client messages and one of client → server messages
//! (`MainServer`, `MainClient`, `DisplayServer`, ...), defined with [`channel_messages!`]. Each
//! enum has a `Base` arm for the messages every channel shares (`set_ack`, `ping`, ...; types
//! below 101) and an `Unknown { msg_type, bytes }` arm: an unknown type is data, not an error.
//! A known type whose body does not parse is an error.
//!
//! [`decode`] picks the enum from the channel type and direction. This module owns message
//! numbering; the structures inside messages live next to their channel (or in
//! [`crate::display`] for drawing).

use crate::error::Result;
use crate::wire::{Bytes, Writer};
use crate::wire_enum;

pub mod base;
pub mod cursor;
pub mod display;
pub mod inputs;
pub mod main;
pub mod playback;
pub mod record;
pub mod smartcard;
pub mod spicevmc;

pub use base::{BaseClient, BaseServer};
pub use cursor::{CursorClient, CursorServer};
pub use display::{DisplayClient, DisplayServer};
pub use inputs::{InputsClient, InputsServer};
pub use main::{MainClient, MainServer};
pub use playback::{PlaybackClient, PlaybackServer};
pub use record::{RecordClient, RecordServer};
pub use smartcard::{SmartcardClient, SmartcardServer};
pub use spicevmc::{PortClient, PortServer, SpicevmcClient, SpicevmcServer};

wire_enum! {
    /// `SPICE_CHANNEL_*`: the kind of a channel connection.
    pub enum ChannelType: u8 {
        Main = 1 => "main",
        Display = 2 => "display",
        Inputs = 3 => "inputs",
        Cursor = 4 => "cursor",
        Playback = 5 => "playback",
        Record = 6 => "record",
        Tunnel = 7 => "tunnel",
        Smartcard = 8 => "smartcard",
        Usbredir = 9 => "usbredir",
        Port = 10 => "port",
        Webdav = 11 => "webdav",
    }
}

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, arbitrary::Arbitrary)]
pub enum Direction {
    /// Server to client ("s2c"): `SPICE_MSG_*`.
    ServerToClient,
    /// Client to server ("c2s"): `SPICE_MSGC_*`.
    ClientToServer,
}

impl Direction {
    /// "s2c" or "c2s".
    pub const fn short(self) -> &'static str {
        match self {
            Direction::ServerToClient => "s2c",
            Direction::ClientToServer => "c2s",
        }
    }
    pub const fn reverse(self) -> Direction {
        match self {
            Direction::ServerToClient => Direction::ClientToServer,
            Direction::ClientToServer => Direction::ServerToClient,
        }
    }
}

/// The first channel-specific message type; lower ones belong to the base channel.
pub const FIRST_CHANNEL_MESSAGE: u16 = 101;

/// One channel's messages in one direction.
pub trait Message: Sized + std::fmt::Debug + Clone + PartialEq {
    /// The message type number on the wire.
    fn msg_type(&self) -> u16;
    /// The spice.proto name (`"draw_copy"`, `"set_ack"`), or `"unknown"`.
    fn name(&self) -> &'static str;
    /// Write the body (pointer targets are laid out by the writer's `finish`).
    fn encode_body<'a>(&'a self, w: &mut Writer<'a>);
    /// Decode a body of message type `msg_type`.
    fn decode(msg_type: u16, body: &[u8]) -> Result<Self>;

    /// The body as bytes.
    fn to_body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_body(&mut w);
        w.finish()
    }
}

/// Unknown message types that arbitrary generates: never a known number on any channel.
pub fn arb_unknown_type(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<u16> {
    Ok(9000 + <u16 as arbitrary::Arbitrary>::arbitrary(u)? % 1000)
}

/// Used by [`channel_messages!`]: a pattern binding (or matching) a variant's payload.
#[doc(hidden)]
#[macro_export]
macro_rules! __payload_ident {
    ($i:ident, $t:ty) => {
        $i
    };
}

/// Define one channel's messages in one direction.
///
/// ```ignore
/// channel_messages! {
///     /// Server → client messages of the inputs channel.
///     pub enum InputsServer(BaseServer) {
///         101 => Init(InputsInit) = "init",
///         111 => MouseMotionAck = "mouse_motion_ack",
///     }
/// }
/// ```
/// A variant without a payload is an empty message. A payload type implements `Encode` and
/// `Decode`; a body may carry more bytes than the payload reads (the reference allows that).
#[macro_export]
macro_rules! channel_messages {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($base:ty) {
            $( $(#[$vmeta:meta])* $ty:literal => $variant:ident $( ( $payload:ty ) )? = $vname:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, arbitrary::Arbitrary)]
        pub enum $name {
            /// A message every channel shares (type below 101).
            Base($base),
            $( $(#[$vmeta])* $variant $( ($payload) )?, )*
            /// A message type this crate does not know, kept as its body bytes.
            Unknown {
                #[arbitrary(with = $crate::messages::arb_unknown_type)]
                msg_type: u16,
                bytes: $crate::wire::Bytes,
            },
        }

        impl $name {
            /// Every channel-specific message type of this enum and its spice.proto name.
            pub const TYPES: &'static [(u16, &'static str)] = &[ $( ($ty, $vname), )* ];
        }

        impl $crate::messages::Message for $name {
            fn msg_type(&self) -> u16 {
                match self {
                    Self::Base(b) => b.msg_type(),
                    $( Self::$variant $( ($crate::__payload_ident!(_m, $payload)) )? => $ty, )*
                    Self::Unknown { msg_type, .. } => *msg_type,
                }
            }

            fn name(&self) -> &'static str {
                match self {
                    Self::Base(b) => b.name(),
                    $( Self::$variant $( ($crate::__payload_ident!(_m, $payload)) )? => $vname, )*
                    Self::Unknown { .. } => "unknown",
                }
            }

            #[allow(unused_variables)]
            fn encode_body<'a>(&'a self, w: &mut $crate::wire::Writer<'a>) {
                match self {
                    Self::Base(b) => b.encode_body(w),
                    $( Self::$variant $( ($crate::__payload_ident!(m, $payload)) )? => {
                        $( $crate::wire::Encode::encode($crate::__payload_ident!(m, $payload), w); )?
                    } )*
                    Self::Unknown { bytes, .. } => w.bytes(bytes),
                }
            }

            #[allow(unused_variables, unused_mut)]
            fn decode(msg_type: u16, body: &[u8]) -> $crate::error::Result<Self> {
                let mut r = $crate::wire::Reader::new(body);
                match msg_type {
                    $( $ty => Ok(Self::$variant $( (<$payload as $crate::wire::Decode>::decode(&mut r)?) )?), )*
                    _ => match <$base>::try_decode(msg_type, body) {
                        Some(res) => res.map(Self::Base),
                        None => Ok(Self::Unknown { msg_type, bytes: body.into() }),
                    },
                }
            }
        }
    };
}

macro_rules! any_message {
    ($( $variant:ident($ty:ty) ),* $(,)?) => {
        /// A message of any channel and direction.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum AnyMessage {
            $( $variant($ty), )*
            /// A message of a channel type this crate has no messages for (tunnel, newer).
            Other {
                channel: ChannelType,
                dir: Direction,
                msg_type: u16,
                bytes: Bytes,
            },
        }

        impl AnyMessage {
            pub fn msg_type(&self) -> u16 {
                match self {
                    $( AnyMessage::$variant(m) => m.msg_type(), )*
                    AnyMessage::Other { msg_type, .. } => *msg_type,
                }
            }
            pub fn name(&self) -> &'static str {
                match self {
                    $( AnyMessage::$variant(m) => m.name(), )*
                    AnyMessage::Other { .. } => "unknown",
                }
            }
            /// The message body as the reference marshaller lays it out.
            pub fn to_body(&self) -> Vec<u8> {
                match self {
                    $( AnyMessage::$variant(m) => m.to_body(), )*
                    AnyMessage::Other { bytes, .. } => bytes.0.clone(),
                }
            }
        }
    };
}

any_message! {
    MainServer(MainServer),
    MainClient(MainClient),
    DisplayServer(DisplayServer),
    DisplayClient(DisplayClient),
    InputsServer(InputsServer),
    InputsClient(InputsClient),
    CursorServer(CursorServer),
    CursorClient(CursorClient),
    PlaybackServer(PlaybackServer),
    PlaybackClient(PlaybackClient),
    RecordServer(RecordServer),
    RecordClient(RecordClient),
    SmartcardServer(SmartcardServer),
    SmartcardClient(SmartcardClient),
    SpicevmcServer(SpicevmcServer),
    SpicevmcClient(SpicevmcClient),
    PortServer(PortServer),
    PortClient(PortClient),
}

impl AnyMessage {
    /// Whether this is an `Unknown` (or `Other`) message: a type this crate does not know.
    pub fn is_unknown(&self) -> bool {
        self.name() == "unknown"
    }
}

/// Decode one message body of `msg_type` sent on a `channel` in direction `dir`.
pub fn decode(
    channel: ChannelType,
    dir: Direction,
    msg_type: u16,
    body: &[u8],
) -> Result<AnyMessage> {
    use ChannelType as C;
    use Direction::*;
    Ok(match (channel, dir) {
        (C::Main, ServerToClient) => AnyMessage::MainServer(Message::decode(msg_type, body)?),
        (C::Main, ClientToServer) => AnyMessage::MainClient(Message::decode(msg_type, body)?),
        (C::Display, ServerToClient) => AnyMessage::DisplayServer(Message::decode(msg_type, body)?),
        (C::Display, ClientToServer) => AnyMessage::DisplayClient(Message::decode(msg_type, body)?),
        (C::Inputs, ServerToClient) => AnyMessage::InputsServer(Message::decode(msg_type, body)?),
        (C::Inputs, ClientToServer) => AnyMessage::InputsClient(Message::decode(msg_type, body)?),
        (C::Cursor, ServerToClient) => AnyMessage::CursorServer(Message::decode(msg_type, body)?),
        (C::Cursor, ClientToServer) => AnyMessage::CursorClient(Message::decode(msg_type, body)?),
        (C::Playback, ServerToClient) => {
            AnyMessage::PlaybackServer(Message::decode(msg_type, body)?)
        }
        (C::Playback, ClientToServer) => {
            AnyMessage::PlaybackClient(Message::decode(msg_type, body)?)
        }
        (C::Record, ServerToClient) => AnyMessage::RecordServer(Message::decode(msg_type, body)?),
        (C::Record, ClientToServer) => AnyMessage::RecordClient(Message::decode(msg_type, body)?),
        (C::Smartcard, ServerToClient) => {
            AnyMessage::SmartcardServer(Message::decode(msg_type, body)?)
        }
        (C::Smartcard, ClientToServer) => {
            AnyMessage::SmartcardClient(Message::decode(msg_type, body)?)
        }
        (C::Usbredir, ServerToClient) => {
            AnyMessage::SpicevmcServer(Message::decode(msg_type, body)?)
        }
        (C::Usbredir, ClientToServer) => {
            AnyMessage::SpicevmcClient(Message::decode(msg_type, body)?)
        }
        (C::Port | C::Webdav, ServerToClient) => {
            AnyMessage::PortServer(Message::decode(msg_type, body)?)
        }
        (C::Port | C::Webdav, ClientToServer) => {
            AnyMessage::PortClient(Message::decode(msg_type, body)?)
        }
        (channel @ (C::Tunnel | C::Unknown(_)), dir) => AnyMessage::Other {
            channel,
            dir,
            msg_type,
            bytes: body.into(),
        },
    })
}
