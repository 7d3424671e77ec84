//! Channel state machines, one per channel connection, all sans-IO.
//!
//! Built so far: [`core`], the base-channel behaviour every channel shares. The main, display,
//! inputs, cursor, playback, record and spicevmc channels come with the server issue.

pub mod core;
