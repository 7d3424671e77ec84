//! VD-Interface: the traits a VMM implements so the server can reach its virtual devices.
//!
//! They mirror libspice-server's interfaces (`SpiceKbdInterface`, `SpiceMouseInterface`,
//! `SpiceTabletInterface`, `SpiceCharDeviceInterface`, ...) in Rust terms. The server calls
//! them from its own event loop, never from another thread, and never with a clock of its own:
//! time reaches the server through its `handle_*`/`poll_*` calls.
//!
//! Built so far: input devices and char devices. The QXL display interface (command and cursor
//! rings in guest memory, memory slots, surfaces), the framebuffer display and audio come with
//! the display and audio channels.
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
