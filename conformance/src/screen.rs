//! The replay's display device: a framebuffer showing what the reference server showed.
//!
//! The captured session's display messages (server to client) are drawn by spice-proto's
//! reference canvas, each at its capture time; the device reports the area each one changed.
//! Our server, replaying the session, then serves the same screen content as the reference
//! did, so the two final screens can be compared pixel for pixel.

use spice_proto::canvas::Canvas;
use spice_proto::messages::{AnyMessage, Direction, DisplayServer};
use spice_proto::types::Rect;
use spice_server::vdi::Framebuffer;

use spice_captures::transcript::Channel;

/// A framebuffer replaying a captured display channel.
pub struct ReferenceScreen {
    canvas: Canvas,
    /// (capture ms, message), in order.
    msgs: Vec<(u64, DisplayServer)>,
    next: usize,
    width: u32,
    height: u32,
    /// B, G, R, X rows.
    pixels: Vec<u8>,
}

impl ReferenceScreen {
    /// The screen of display channel `ch` (times as `ms(ts)`); `None` if the channel never
    /// creates a primary surface.
    pub fn new(ch: &Channel, ms: impl Fn(f64) -> u64) -> Option<ReferenceScreen> {
        let msgs: Vec<(u64, DisplayServer)> = ch
            .messages
            .iter()
            .filter(|m| m.dir == Direction::ServerToClient)
            .filter_map(|m| match &m.decoded {
                Ok(AnyMessage::DisplayServer(d)) => Some((ms(m.at.ts.as_f64()), d.clone())),
                _ => None,
            })
            .collect();
        let (width, height) = msgs.iter().find_map(|(_, m)| match m {
            DisplayServer::SurfaceCreate(c) if c.surface_id == 0 => Some((c.width, c.height)),
            _ => None,
        })?;
        if width == 0 || height == 0 || width as u64 * height as u64 > 16 << 20 {
            return None;
        }
        Some(ReferenceScreen {
            canvas: Canvas::default(),
            msgs,
            next: 0,
            width,
            height,
            pixels: vec![0; width as usize * height as usize * 4],
        })
    }

    fn copy_out(&mut self, r: &Rect) {
        let Some(p) = self.canvas.primary() else {
            return;
        };
        let p = &p.raster;
        if (p.width, p.height) != (self.width, self.height) {
            return;
        }
        for y in r.top..r.bottom {
            for x in r.left..r.right {
                let i = y as usize * self.width as usize + x as usize;
                let [b, g, rr, _] = p.px[i].to_le_bytes();
                self.pixels[i * 4..i * 4 + 4].copy_from_slice(&[b, g, rr, 0]);
            }
        }
    }
}

/// The area of the primary surface a display message may change, if any.
fn changed_area(m: &DisplayServer, w: u32, h: u32) -> Option<Rect> {
    use DisplayServer as D;
    let full = Rect::from_xywh(0, 0, w as i32, h as i32);
    let base = match m {
        D::DrawFill(d) => &d.base,
        D::DrawOpaque(d) => &d.base,
        D::DrawCopy(d) | D::DrawBlend(d) => &d.base,
        D::DrawBlackness(d) | D::DrawWhiteness(d) | D::DrawInvers(d) => &d.base,
        D::DrawRop3(d) => &d.base,
        D::DrawStroke(d) => &d.base,
        D::DrawText(d) => &d.base,
        D::DrawTransparent(d) => &d.base,
        D::DrawAlphaBlend(d) => &d.base,
        D::DrawComposite(d) => &d.base,
        D::CopyBits(d) => &d.base,
        // Stream frames land inside their stream's area: take the whole screen.
        D::StreamData(_) | D::StreamDataSized(_) | D::SurfaceCreate(_) | D::Reset => {
            return Some(full)
        }
        _ => return None,
    };
    if base.surface_id != 0 {
        return None;
    }
    let b = &base.bbox;
    let r = Rect {
        left: b.left.clamp(0, w as i32),
        top: b.top.clamp(0, h as i32),
        right: b.right.clamp(0, w as i32),
        bottom: b.bottom.clamp(0, h as i32),
    };
    (!r.is_empty()).then_some(r)
}

impl Framebuffer for ReferenceScreen {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn update(&mut self, now_ms: u64) -> Vec<Rect> {
        let mut changed = Vec::new();
        while let Some((t, m)) = self.msgs.get(self.next) {
            if *t > now_ms {
                break;
            }
            let area = changed_area(m, self.width, self.height);
            // Messages the canvas cannot draw leave the screen as it was.
            let ok = self.canvas.apply(m).is_ok();
            self.next += 1;
            if let (true, Some(r)) = (ok, area) {
                changed.push(r);
            }
        }
        for r in &changed {
            self.copy_out(r);
        }
        changed
    }

    fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    fn next_wakeup(&self) -> Option<u64> {
        self.msgs.get(self.next).map(|(t, _)| *t)
    }
}
