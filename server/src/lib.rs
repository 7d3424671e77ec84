//! spice-server: the SPICE server library a VMM embeds.
//!
//! - [`server`]: the server object (sessions, connections, devices) as a sans-IO state machine.
//! - [`net`]: the thin async shell that drives it over any `AsyncRead + AsyncWrite` streams.
//! - [`link`]: the server side of the link stage and SPICE ticket auth.
//! - [`channel`]: one state machine per channel connection, on a shared [`channel::core`]
//!   (main, inputs, display, cursor, playback, record).
//! - [`display`]: the display state all clients share.
//! - [`qxl`]: QXL commands read from guest memory through memory slots, checked.
//! - [`vdi`]: the traits a VMM implements for its devices.
//! - [`budget`]: every resource a peer can make the server spend, with its default limit.

pub mod budget;
pub mod channel;
pub mod display;
#[doc(hidden)]
pub mod fuzzing;
pub mod link;
pub mod net;
pub mod qxl;
pub mod server;
pub mod testing;
pub mod vdi;

pub use budget::Budgets;
pub use server::{AudioStats, Config, ConnId, ImageCompression, Server};
