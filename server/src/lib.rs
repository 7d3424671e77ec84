//! spice-server: the SPICE server library a VMM embeds.
//!
//! Built so far: [`link`], the server side of the link stage and SPICE ticket auth, as a sans-IO
//! state machine; [`channel::core`], what every channel connection shares (framing, serials,
//! ack flow control, pings, bounded output); [`vdi`], the input and char-device traits a VMM
//! implements. To come (server issue): the QXL interface and guest memory, each channel's state
//! machine and the async shell.

pub mod channel;
pub mod link;
pub mod vdi;
