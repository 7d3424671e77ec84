//! The simulated client's screen: spice-proto's reference canvas fed the display channel's
//! messages (so the simulator judges frames the way spice-gtk would draw them).
//!
//! A message the canvas cannot apply is recorded as unsupported: the invariants then do not
//! compare this screen, and say why.

use spice_proto::canvas::Canvas;
use spice_proto::messages::DisplayServer;

/// One client's view of its surfaces.
#[derive(Default)]
pub struct Screen {
    pub width: u32,
    pub height: u32,
    canvas: Canvas,
    /// Draws applied.
    pub draws: u64,
    /// What could not be applied (first few).
    pub unsupported: Vec<String>,
}

impl Screen {
    fn note(&mut self, s: String) {
        if self.unsupported.len() < 8 {
            self.unsupported.push(s);
        }
    }

    /// Apply one display message.
    pub fn apply(&mut self, m: &DisplayServer) {
        if let Err(e) = self.canvas.apply(m) {
            let name = spice_proto::messages::Message::name(m);
            self.note(format!("{name}: {e}"));
        }
        self.draws = self.canvas.stats.draws;
        if let Some(p) = self.canvas.primary() {
            self.width = p.raster.width;
            self.height = p.raster.height;
        }
    }

    /// The primary surface as RGBA rows (alpha 255), to compare with a device's frame.
    pub fn rgba(&self) -> Vec<u8> {
        self.canvas
            .primary()
            .map(|p| p.raster.to_rgba8())
            .unwrap_or_default()
    }
}
