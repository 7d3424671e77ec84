//! SPICE audio: the Opus codec as the playback and record channels use it (through libopus,
//! never a hand-written codec), the sample layouts the VD-Interface and the wire use, and
//! signal analysis (dominant frequency, SNR after alignment) for tests and benchmarks.
//!
//! Layouts: the VD-Interface speaks in `u32` stereo frames (`spice_server_playback_put_samples`:
//! left channel in the low 16 bits, right in the high 16 bits, both signed 16-bit); the wire's
//! raw mode is the same frames as little-endian bytes (`S16`, interleaved L R); Opus works on
//! interleaved `i16`.
//!
//! Must not: depend on any other crate of the workspace, read a clock, or panic on input.

#[cfg(feature = "analysis")]
pub mod analysis;
pub mod opus;
pub mod pcm;

pub use opus::{OpusDecoder, OpusEncoder};

/// Errors of the codec layer. A decode error is the peer's fault (bad packet); the others are
/// the caller's (a frame of the wrong size) or libopus refusing to start.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AudioError {
    #[error("opus does not run at {0} Hz")]
    UnsupportedRate(u32),
    #[error("an opus frame must be {expected} interleaved samples, got {got}")]
    FrameSize { expected: usize, got: usize },
    #[error("opus packet of {0} bytes is larger than a SPICE frame may be")]
    PacketTooLarge(usize),
    #[error("libopus: {0}")]
    Opus(String),
}

/// Channels of every SPICE audio stream (`SND_CODEC_PLAYBACK_CHAN`): stereo.
pub const CHANNELS: usize = 2;
/// Bytes per stereo frame (two signed 16-bit samples).
pub const FRAME_BYTES: usize = 4;
