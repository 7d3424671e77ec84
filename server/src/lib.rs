//! spice-server: the SPICE server library a VMM embeds.
//!
//! Built so far: [`link`], the server side of the link stage and SPICE ticket auth, as a sans-IO
//! state machine. To come (server issue): VD-Interface traits, guest memory and QXL parsing, the
//! channel state machines and the async shell.

pub mod link;
