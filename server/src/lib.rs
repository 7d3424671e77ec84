//! spice-server: the SPICE server library a VMM embeds.
//!
//! Built so far: [`link`], the server side of the link stage and SPICE ticket auth, as a sans-IO
//! state machine; [`vdi`], the input and char-device traits a VMM implements. To come (server
//! issue): the QXL interface and guest memory, the channel state machines and the async shell.

pub mod link;
pub mod vdi;
