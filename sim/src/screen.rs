//! The simulated client's screen: the primary surface rebuilt from what the display channel
//! sends (`surface_create`, `draw_copy` of BITMAP, QUIC, LZ_RGB and GLZ_RGB images: all our
//! server sends), decoded with spice-proto's codecs, with the client's own GLZ window.
//!
//! Anything else (another draw, a clip, an image the decoders refuse) is counted as
//! unsupported: the invariants then do not compare this screen, and say why.

use spice_proto::codec::{self, glz, Limits, PixelFormat, Pixmap};
use spice_proto::display::{Clip, ImageData};
use spice_proto::messages::DisplayServer;

/// One client's view of the primary surface (B, G, R, X rows, top first).
pub struct Screen {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
    glz: glz::Decoder,
    /// Draws applied.
    pub draws: u64,
    /// What could not be applied (first few).
    pub unsupported: Vec<String>,
}

impl Default for Screen {
    fn default() -> Self {
        Screen {
            width: 0,
            height: 0,
            pixels: Vec::new(),
            glz: glz::Decoder::new(Limits::default(), 1 << 25),
            draws: 0,
            unsupported: Vec::new(),
        }
    }
}

impl Screen {
    fn note(&mut self, s: String) {
        if self.unsupported.len() < 8 {
            self.unsupported.push(s);
        }
    }

    /// Apply one display message.
    pub fn apply(&mut self, m: &DisplayServer) {
        match m {
            DisplayServer::SurfaceCreate(c) if c.surface_id == 0 => {
                if u64::from(c.width) * u64::from(c.height) > 16 << 20 {
                    self.note("primary surface too large".into());
                    return;
                }
                self.width = c.width;
                self.height = c.height;
                self.pixels = vec![0; c.width as usize * c.height as usize * 4];
            }
            DisplayServer::DrawCopy(d) => {
                if d.base.surface_id != 0 || d.base.clip != Clip::None {
                    self.note("draw_copy off the primary or clipped".into());
                    return;
                }
                let Some(img) = &d.data.src_bitmap else {
                    self.note("draw_copy without an image".into());
                    return;
                };
                let pix = match &img.data {
                    ImageData::Bitmap(b) => Pixmap::from_data(
                        b.x,
                        b.y,
                        PixelFormat::Rgb32,
                        b.stride as usize,
                        b.data.to_vec(),
                    )
                    .map_err(|e| e.to_string()),
                    ImageData::Quic(b) => codec::quic::decode(b).map_err(|e| e.to_string()),
                    ImageData::LzRgb(b) => codec::lz::decode(b)
                        .map(|i| i.pixmap)
                        .map_err(|e| e.to_string()),
                    ImageData::GlzRgb(b) => self
                        .glz
                        .decode(b, &[])
                        .map(|i| i.pixmap)
                        .map_err(|e| e.to_string()),
                    other => Err(format!("image type {:?}", other.image_type())),
                };
                match pix {
                    Ok(p) => self.blit(&p, &d.base.bbox),
                    Err(e) => self.note(format!("image: {e}")),
                }
            }
            DisplayServer::SurfaceDestroy(_)
            | DisplayServer::Mark
            | DisplayServer::Reset
            | DisplayServer::InvalAllPalettes
            | DisplayServer::MonitorsConfig(_)
            | DisplayServer::Base(_) => {}
            other => {
                let name = spice_proto::messages::Message::name(other);
                self.note(format!("message {name}"))
            }
        }
    }

    fn blit(&mut self, p: &Pixmap, r: &spice_proto::types::Rect) {
        let (w, h) = (r.width(), r.height());
        if w <= 0
            || h <= 0
            || r.left < 0
            || r.top < 0
            || r.right as u32 > self.width
            || r.bottom as u32 > self.height
            || p.width() != w as u32
            || p.height() != h as u32
            || !matches!(p.format(), PixelFormat::Rgb32 | PixelFormat::Rgba)
        {
            self.note("draw outside the surface or of another size/format".into());
            return;
        }
        for y in 0..h {
            let src = p.row(y as u32);
            let start = ((r.top + y) as usize * self.width as usize + r.left as usize) * 4;
            let dst = &mut self.pixels[start..start + w as usize * 4];
            for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                d[..3].copy_from_slice(&s[..3]);
                d[3] = 0;
            }
        }
        self.draws += 1;
    }

    /// The screen as RGBA rows (alpha 255), to compare with a device's frame.
    pub fn rgba(&self) -> Vec<u8> {
        self.pixels
            .chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0], 255])
            .collect()
    }
}
