//! spice-proto: the SPICE wire format, with no IO and no async.
//!
//! - [`wire`]: the `Reader`/`Writer` cursor and the `Encode`/`Decode` traits every structure
//!   implements; pointer (offset) layout in one place.
//! - [`link`]: the link stage (`SpiceLinkHeader`, `SpiceLinkMess`, the reply, auth).
//! - [`header`]: full and mini data headers, and a sans-IO [`header::Framer`] that cuts a byte
//!   stream into messages with a size limit.
//! - [`caps`]: capability bits and a typed capability set.
//! - [`types`]: shared geometry and small structures (`Point`, `Rect`, ...).
//! - [`messages`]: one enum of server messages and one of client messages per channel, and
//!   [`messages::decode`] to decode any of them.
//! - [`display`]: image descriptors and draw structures carried by display messages.
//! - [`codec`]: the image codecs (QUIC, LZ, GLZ, LZ4, JPEG).
//! - [`canvas`]: a reference canvas rendering display messages into surfaces as spice-gtk does.
//! - [`qxl`]: the QXL device ABI (structures in guest memory).
//! - [`agent`]: vdagent message envelopes carried in main-channel agent data.
//!
//! Architecture invariant: decoding never panics, never reads past the input, and never
//! allocates by a count it has not checked against the bytes left.

pub mod agent;
pub mod canvas;
pub mod caps;
pub mod codec;
pub mod display;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod header;
pub mod link;
pub mod messages;
pub mod qxl;
pub mod types;
pub mod wire;

pub use error::{DecodeError, Result};
pub use messages::{decode, AnyMessage, ChannelType, Direction, Message};
pub use wire::{Bytes, Decode, Encode, Reader, Writer};
