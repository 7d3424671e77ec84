//! VD-Interface: the traits a VMM implements so the server can reach its virtual devices.
//!
//! They mirror libspice-server's interfaces (`SpiceKbdInterface`, `SpiceMouseInterface`,
//! `SpiceTabletInterface`, `SpiceCharDeviceInterface`, ...) in Rust terms. The server calls
//! them from its own event loop, never from another thread, and never with a clock of its own:
//! time reaches the server through its `handle_*`/`poll_*` calls.
//!
//! Built: input devices, char devices, the plain framebuffer display ([`Framebuffer`]) and the
//! QXL display device ([`QxlDevice`]: command and cursor rings whose commands live in guest
//! memory reached through memory slots, the release ring, the primary surface), and the sound
//! card ([`PlaybackDevice`], [`RecordDevice`]).
//!
//! Must not: know about channels, sockets or message encodings.

use spice_proto::messages::inputs::{KeyboardModifiers, MouseButtonMask};

/// A PS/2-style keyboard (`SpiceKbdInterface`).
pub trait Keyboard {
    /// One byte of a PC/AT scancode sequence (`push_scan_freg`): extended keys arrive as
    /// `0xe0` followed by the code; a release has bit 7 set.
    fn push_scancode(&mut self, byte: u8);
    /// The lock-key LEDs as the guest set them (`get_leds`), sent to clients on change.
    fn leds(&self) -> KeyboardModifiers;
}

/// A relative pointing device (`SpiceMouseInterface`), used in server mouse mode.
pub trait Mouse {
    /// Relative motion; `dz` is wheel motion (negative up).
    fn motion(&mut self, dx: i32, dy: i32, dz: i32, buttons: MouseButtonMask);
    /// Buttons changed without motion.
    fn buttons(&mut self, buttons: MouseButtonMask);
}

/// An absolute pointing device (`SpiceTabletInterface`), used in client mouse mode.
pub trait Tablet {
    /// The coordinate space positions are given in (the primary surface's size).
    fn set_logical_size(&mut self, width: u32, height: u32);
    /// An absolute position on display `display`.
    fn position(&mut self, x: u32, y: u32, display: u8, buttons: MouseButtonMask);
    /// Wheel motion (negative up).
    fn wheel(&mut self, dz: i32, buttons: MouseButtonMask);
    /// Buttons changed without motion.
    fn buttons(&mut self, buttons: MouseButtonMask);
}

/// A character device (`SpiceCharDeviceInterface`): the vdagent port, USB redirection, ports.
/// Flow control is by return values: a device takes what it can.
pub trait CharDevice {
    /// The spicevmc name the VMM gave it (`"vdagent"`, `"usbredir"`, a port name).
    fn subtype(&self) -> &str;
    /// A client connected (`true`) or went away (`false`).
    fn set_client_connected(&mut self, connected: bool);
    /// Bytes from the client to the device; returns how many were taken.
    fn write(&mut self, data: &[u8]) -> usize;
    /// Bytes from the device to the client; returns how many were put in `buf`.
    fn read(&mut self, buf: &mut [u8]) -> usize;
}

/// A plain framebuffer display (for VMMs without QXL, like QEMU's `-vga std` through
/// `spice-app`/gl-less displays): the device draws into its own 32-bit xRGB framebuffer and
/// reports which rectangles changed; the server reads the pixels when it sends them, so a slow
/// client gets the newest content of a region rather than every intermediate frame.
pub trait Framebuffer {
    /// Width and height in pixels (fixed for the device's life).
    fn size(&self) -> (u32, u32);
    /// Let the device run up to `now_ms`; the rectangles it changed since the last call
    /// (`left`/`top` inclusive, `right`/`bottom` exclusive, inside the screen).
    fn update(&mut self, now_ms: u64) -> Vec<spice_proto::types::Rect>;
    /// The whole screen: `width * 4` bytes per row (B, G, R, X), top row first.
    fn pixels(&self) -> &[u8];
    /// When the device will next change the screen, if it knows.
    fn next_wakeup(&self) -> Option<u64>;
}

/// Guest memory as the VMM maps it for the QXL device. The server only asks for ranges it has
/// checked against a registered [`MemSlot`]; an implementation still must not panic on any
/// range (return `false` instead).
pub trait GuestMemory {
    /// Copy `out.len()` bytes at device address `addr` (a slot's `start..end` space) into `out`.
    fn read(&self, addr: u64, out: &mut [u8]) -> bool;
}

/// A memory slot (`QXLDevMemSlot`): guest addresses of slot `slot_id` in group `group_id` with
/// generation `generation` map to device addresses `offset + delta`, which must lie in
/// `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemSlot {
    pub group_id: u32,
    pub slot_id: u32,
    pub generation: u8,
    pub start: u64,
    pub end: u64,
    pub delta: u64,
}

/// What the QXL device's ROM tells the server (`QXLDevInitInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QxlInitInfo {
    pub num_memslots_groups: u32,
    pub num_memslots: u32,
    pub memslot_gen_bits: u8,
    pub memslot_id_bits: u8,
    /// Surfaces the device supports (ids `0..n_surfaces`).
    pub n_surfaces: u32,
}

/// One entry of the command or cursor ring (`QXLCommandExt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QxlCommandExt {
    pub cmd: spice_proto::qxl::QxlCommand,
    pub group_id: u32,
    pub flags: u32,
}

/// What the device asks of the server outside the rings (the QXL I/O ports QEMU turns into
/// `spice_qxl_*` calls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QxlEvent {
    AddMemSlot(MemSlot),
    DelMemSlot {
        group_id: u32,
        slot_id: u32,
    },
    CreatePrimary(spice_proto::qxl::PrimarySurface),
    DestroyPrimary,
    /// The guest's `QXLMonitorsConfig` at this guest address (group `group_id`).
    MonitorsConfig {
        addr: u64,
        group_id: u32,
    },
    /// `QXL_IO_RESET`: drop all surfaces and memory slots.
    Reset,
}

/// A QXL display device (`QXLInterface`): the guest driver puts commands on rings; the server
/// takes them, reads their structures from guest memory, and gives each back exactly once
/// through [`QxlDevice::release`] (the release ring).
pub trait QxlDevice {
    fn init_info(&self) -> QxlInitInfo;
    /// The guest memory the commands point into.
    fn memory(&self) -> &dyn GuestMemory;
    /// Let the device (and its guest) run up to `now_ms`; the I/O events it raised.
    fn run(&mut self, now_ms: u64) -> Vec<QxlEvent>;
    /// The next command of the command ring (`get_command`), if any.
    fn get_command(&mut self) -> Option<QxlCommandExt>;
    /// The next command of the cursor ring (`get_cursor_command`), if any.
    fn get_cursor_command(&mut self) -> Option<QxlCommandExt>;
    /// Give a command's resources back (`release_resource`): the `release_info` id the command
    /// carried and its group.
    fn release(&mut self, id: u64, group_id: u32);
    /// When the device will next have something to do, if it knows.
    fn next_wakeup(&self) -> Option<u64>;
    /// A client asked for these monitors (`client_monitors_config`); the guest may follow.
    /// Returns whether the device took the request (the default: no).
    fn client_monitors_config(&mut self, _monitors: &[ClientMonitor]) -> bool {
        false
    }
}

/// One monitor a client asks for (`VDAgentMonConfig`, from the client's agent messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientMonitor {
    pub id: u32,
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
}

/// One call a playback device makes on the server: libspice-server's
/// `spice_server_playback_*` calls, one variant each, so a C-ABI layer maps onto it one to
/// one (its `run` returns the calls the C side queued).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaybackCall {
    /// `spice_server_playback_start`: the guest started playing.
    Start,
    /// `spice_server_playback_stop`.
    Stop,
    /// `spice_server_playback_get_buffer` filled and handed back with `put_samples`: stereo
    /// S16 frames (left in the low 16 bits), at most [`AUDIO_FRAME_SAMPLES`] of them (the
    /// size of the buffer `get_buffer` gives). Fewer are padded with silence when the codec
    /// needs whole frames.
    Samples(Vec<u32>),
    /// `spice_server_playback_set_volume`: one value per channel.
    Volume(Vec<u16>),
    /// `spice_server_playback_set_mute`.
    Mute(bool),
}

/// One call a record device makes on the server (`spice_server_record_*`, except
/// `get_samples`: the server hands captured samples to [`RecordDevice::samples`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordCall {
    /// `spice_server_record_start`: the guest opened its capture.
    Start,
    /// `spice_server_record_stop`.
    Stop,
    /// `spice_server_record_set_volume`.
    Volume(Vec<u16>),
    /// `spice_server_record_set_mute`.
    Mute(bool),
}

/// Stereo frames per playback buffer (`SND_CODEC_MAX_FRAME_SIZE`: 10 ms at 48 kHz), what
/// `spice_server_playback_get_buffer` hands out.
pub const AUDIO_FRAME_SAMPLES: usize = 480;

/// A playback device (`SpicePlaybackInterface`): the guest's sound output. The server asks
/// it to run up to a time and takes the calls it made, in order.
pub trait PlaybackDevice {
    /// The rate it plays at (`spice_server_set_playback_rate`; 48000 lets Opus be used).
    fn rate(&self) -> u32;
    /// Let the device run up to `now_ms`; the calls it made, in order.
    fn run(&mut self, now_ms: u64) -> Vec<PlaybackCall>;
    /// When the device will next make a call, if it knows.
    fn next_wakeup(&self) -> Option<u64>;
}

/// A record device (`SpiceRecordInterface`): the guest's sound input.
pub trait RecordDevice {
    /// The rate it captures at (`spice_server_set_record_rate`).
    fn rate(&self) -> u32;
    /// Let the device run up to `now_ms`; the calls it made, in order.
    fn run(&mut self, now_ms: u64) -> Vec<RecordCall>;
    /// Captured stereo S16 frames from the client, decoded, in order, each exactly once
    /// (what `spice_server_record_get_samples` hands a C device).
    fn samples(&mut self, frames: &[u32]);
    /// When the device will next make a call, if it knows.
    fn next_wakeup(&self) -> Option<u64>;
}
