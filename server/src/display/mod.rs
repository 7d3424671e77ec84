//! The display side shared by all clients: the QXL device, its surfaces, and the drawables
//! waiting to be sent.
//!
//! Built so far: the placeholder the server object calls. The QXL command pipeline (reading
//! the rings, the drawable tree, the server-side canvas) comes with the display work.

use crate::server::ImageCompression;

/// The display state shared by every display channel.
pub struct Display {
    compression: ImageCompression,
}

impl Display {
    pub(crate) fn new(compression: ImageCompression) -> Self {
        Display { compression }
    }

    /// The image compression setting.
    pub fn compression(&self) -> ImageCompression {
        self.compression
    }

    /// Whether a display device is attached (display and cursor channels exist).
    pub fn has_device(&self) -> bool {
        false
    }

    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        None
    }

    pub(crate) fn handle_timeout(&mut self, _now_ms: u64) {}
}
