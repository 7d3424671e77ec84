//! Simulated VD-Interface back-ends (the VMM side of the server library) and the
//! `spice-server` binary that serves them.
//!
//! - [`input`]: keyboard, mouse and tablet that record every event into an [`input::EventLog`].
//! - [`screen`]: a framebuffer display playing deterministic scenes.

#[doc(hidden)]
pub mod fuzzing;
pub mod input;
pub mod qxl;
pub mod screen;
