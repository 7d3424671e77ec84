//! Budgets: every resource a client or a guest can make the server spend, in one place, with
//! documented defaults (the shape of h2's `server::Builder` limits).
//!
//! Exceeding a budget is never a crash: it is a refusal for the peer that asked (a connection
//! closed, a command rejected and released, a cache entry evicted, a frame dropped), and every
//! refusal logs which budget was hit, by the field name used here. ARCHITECTURE.md lists the
//! budgets and where each is enforced.
//!
//! Owns: the numbers. Must not: enforce anything itself (the state machines that spend a
//! resource check its budget where they spend it).

/// The budgets a [`crate::Config`] carries. `Budgets::default()` is safe for a server exposed
/// to untrusted clients and guests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgets {
    // A guest (QXL device) and the display and cursor channels it feeds.
    /// Bytes one QXL command may copy out of guest memory (its images, chunks, clip
    /// rectangles, paths, glyphs, cursor shape). A command needing more is rejected (and
    /// released).
    pub qxl_command_bytes: u64,
    /// Bytes the QXL rings' commands may copy out of guest memory in one service of the
    /// device (one tick), counting the off-screen surface areas inlined into drawables. Once
    /// reached, the tick takes no more commands: the rest wait in their ring. The command that
    /// crosses it may take up to `qxl_command_bytes`, so a tick copies less than the sum.
    pub qxl_tick_bytes: u64,
    /// Commands taken from the QXL command ring in one tick.
    pub qxl_commands_per_tick: usize,
    /// Commands taken from the QXL cursor ring in one tick.
    pub qxl_cursor_commands_per_tick: usize,
    /// Bytes of drawables (their images, masks, brushes, glyphs, clips, paths) the shared
    /// display log holds for clients that are behind. Past it the oldest are forgotten (a
    /// client that needed them is sent the changed area from the current pixels); a drawable
    /// larger than this is logged as its area only. With no display client the log holds no
    /// drawable at all.
    pub display_log_bytes: u64,
    /// Bytes of drawables one display client may have taken from the log and not sent yet.
    /// Past it the client falls back to dirty regions of the current pixels.
    pub display_pending_bytes: u64,
    /// Largest GLZ dictionary window (pixels) a display client gets, whatever its `init`
    /// asks (up to 2^25). The dictionary keeps 4 bytes per pixel of the window, and is only
    /// allocated when the client is first sent a GLZ image.
    pub glz_window_pixels: u32,
    /// Images one display client's pixmap cache holds (besides the pixels its `init` allows):
    /// past it the oldest is evicted (`inval_list`), so tiny cached images from a guest cannot
    /// grow our mirror of the cache without bound.
    pub pixmap_cache_entries: usize,
    /// What the server's own canvas (the copy of the guest's surfaces every drawable is run
    /// on) may spend: surface and image pixels, work per drawable (bounded by the pixels it
    /// touches, whatever its path, clip or glyph counts), clip rectangles, path points, and the
    /// pixmap and palette caches by entries and bytes. A drawable over one is rejected (and
    /// released) with the canvas's `Budget` error naming it.
    pub canvas: spice_proto::canvas::CanvasLimits,
    // Audio.
    /// Frames (stereo samples) one playback client's queue holds: past it the oldest are
    /// dropped (counted in `Server::audio_stats`, logged at most once a second). The
    /// channel hands its core audio only while the core holds under 8 KiB, so this queue is
    /// where a client that falls behind is held. Default 9,600: 200 ms at 48 kHz (37.5 KiB
    /// of PCM), spice-gtk's default playback buffer (`min-latency`), so a client back from a
    /// stall of up to 200 ms loses nothing; older audio would only be played late.
    pub playback_queue_frames: usize,
    /// Frames one record `data` message may carry once decoded (a raw packet past it closes
    /// the record channel). Decoded audio goes to the device at once, so this is what the
    /// record path holds at most. Default 8,192: the reference's record ring
    /// (`RECORD_SAMPLES_SIZE`), 170 ms at 48 kHz; spice-gtk sends 480 per packet.
    pub record_ring_frames: usize,
    // Clients and connections.
    /// Connections held in any state (link stage, channels, closing). A new connection past
    /// this is closed at once. The async shell also stops accepting while it is reached.
    pub max_connections: usize,
    /// Connections still in the link stage (unauthenticated). A new one past this is refused.
    pub max_linking: usize,
    /// Client sessions (one per main channel).
    pub max_sessions: usize,
    /// Channel connections one session may link besides its main channel.
    pub max_channels_per_session: usize,
    /// The most bytes the async shell reads from one connection at once. Its read buffer
    /// starts at 4 KiB (enough for any link message) and grows to this only while the peer
    /// fills it, so idle and linking connections hold 4 KiB each.
    pub read_buffer: usize,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            qxl_command_bytes: 80 << 20,
            qxl_tick_bytes: 64 << 20,
            qxl_commands_per_tick: 256,
            qxl_cursor_commands_per_tick: 64,
            display_log_bytes: 64 << 20,
            display_pending_bytes: 16 << 20,
            glz_window_pixels: 1 << 22,
            pixmap_cache_entries: 16_384,
            // 16 Mi pixels: a 4K screen and then some.
            canvas: spice_proto::canvas::CanvasLimits::from_codec(spice_proto::codec::Limits {
                max_pixels: 16 << 20,
            }),
            playback_queue_frames: 9_600,
            record_ring_frames: 8_192,
            max_connections: 512,
            max_linking: 64,
            max_sessions: 16,
            max_channels_per_session: 32,
            read_buffer: 64 * 1024,
        }
    }
}
