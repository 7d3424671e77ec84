//! Simulated VD-Interface back-ends (the VMM side of the server library) and the
//! `spice-server` binary that serves them.
//!
//! - [`input`]: keyboard, mouse and tablet that record every event into an [`input::EventLog`].
//! - [`screen`]: a framebuffer display playing deterministic scenes.
//! - [`qxl`]: a QXL display device whose guest driver writes real QXL structures.
//! - [`audio`]: the sound card: a playback device playing a seeded program of tones, chirps
//!   and silences, and a record device keeping what it receives (both log into the
//!   [`input::EventLog`]).

pub mod audio;
#[doc(hidden)]
pub mod fuzzing;
pub mod input;
pub mod qxl;
pub mod screen;
