//! Channel state machines, one per channel connection, all sans-IO.
//!
//! [`core`] is the base-channel behaviour every channel shares; [`main`], [`inputs`],
//! [`display`], [`cursor`], [`playback`] and [`record`] are the channels. Each implements the
//! server's internal `ChannelImpl` (bytes in, a pump that produces what can be sent now).

pub mod core;
pub mod cursor;
pub mod display;
pub mod inputs;
pub mod main;
pub mod playback;
pub mod record;
