//! The display channel: the screen of the display device to one client, with the image
//! compression the server is set to, in a byte-bounded way.
//!
//! On the client's `init` it sends what the reference sends a new client (spice-gtk ↔ Xspice
//! capture): `inval_all_palettes`, `surface_create` of the primary surface, the current screen
//! as `draw_copy`, `monitors_config` (if the client has the cap) and `mark`. Then it keeps a
//! dirty region (at most [`MAX_DIRTY`] rectangles; more are merged into their bounding box) of
//! what changed since it last sent, and sends each rectangle as one `draw_copy` of the device's
//! pixels at that moment, only while the channel core allows (ack window and output cap). A slow
//! client therefore gets fewer, newer frames; nothing queues up without bound.
//!
//! Compression follows `Config::image_compression`: `off` sends BITMAP, `quic` QUIC, `lz`
//! LZ_RGB, `glz` GLZ_RGB against this client's dictionary (window from its `init`), `auto_lz` /
//! `auto_glz` QUIC for photo-like images and LZ / GLZ otherwise (see [`photo_like`]), `lz4` and
//! a client's `preferred_compression` of LZ4: LZ_RGB for now (no LZ4 encoder yet). Images
//! smaller than the reference's minimum (`MIN_SIZE_TO_COMPRESS`, 54 bytes... in practice any
//! rectangle under 32 pixels) go uncompressed, as the reference does.

use spice_proto::caps;
use spice_proto::codec::{self, PixelFormat, Pixmap};
use spice_proto::display::ImageCompression as WireCompression;
use spice_proto::display::{
    BitmapData, BitmapFlags, BitmapFmt, BitmapPalette, Clip, Copy, DisplayBase, Draw, Head, Image,
    ImageData, ImageFlags, ImageScaleMode, MaskFlags, QMask, Ropd, SurfaceFlags, SurfaceFmt,
};
use spice_proto::messages::display::{MonitorsConfig, SurfaceCreate};
use spice_proto::messages::{DisplayClient, DisplayServer, Message};
use spice_proto::types::{Point, Rect};

use crate::channel::core::{ChannelCore, ChannelError};
use crate::link::Linked;
use crate::server::{ChannelImpl, ImageCompression, Shared};

/// The display capabilities this server offers: those spice-server 0.15 offers (the rest of
/// the display caps are client capabilities: what the client can decode).
pub const SERVER_CAPS: &[u32] = &[
    caps::display::MONITORS_CONFIG,
    caps::display::STREAM_REPORT,
    caps::display::PREF_COMPRESSION,
    caps::display::PREF_VIDEO_CODEC_TYPE,
];

/// The most rectangles a client's dirty region holds before they are merged into one.
pub const MAX_DIRTY: usize = 32;
/// Rectangles with fewer pixels than this are sent uncompressed.
pub const MIN_PIXELS_TO_COMPRESS: u64 = 32;
/// Rectangles larger than this many pixels are sent in horizontal bands. A full screen up to
/// 2048×2048 goes as one `draw_copy`, as the reference sends the first screen: clients such as
/// spicy-screenshot take the first draw as the whole screen.
pub const MAX_PIXELS_PER_DRAW: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's `init`.
    AwaitInit,
    /// Sending the first screen; `monitors_config` and `mark` follow it.
    FirstScreen,
    Streaming,
}

/// One client's display channel.
pub struct DisplayChannel {
    core: ChannelCore,
    phase: Phase,
    monitors_cap: bool,
    lz4_cap: bool,
    /// The client asked for this compression (`preferred_compression`).
    preferred: Option<WireCompression>,
    /// The next display change this client has not taken yet.
    seen_seq: u64,
    dirty: Vec<Rect>,
    glz: Option<codec::glz::Encoder>,
    next_image_id: u64,
    /// Images sent, by kind (for logs and tests).
    sent: [u64; 5],
}

impl DisplayChannel {
    pub(crate) fn new(
        core: ChannelCore,
        linked: &Linked,
        _shared: &mut Shared,
        _now_ms: u64,
    ) -> Self {
        let c = &linked.mess.caps;
        DisplayChannel {
            core,
            phase: Phase::AwaitInit,
            monitors_cap: c.has_channel(caps::display::MONITORS_CONFIG),
            lz4_cap: c.has_channel(caps::display::LZ4_COMPRESSION),
            preferred: None,
            seen_seq: 0,
            dirty: Vec::new(),
            glz: None,
            next_image_id: 1,
            sent: [0; 5],
        }
    }

    pub fn core(&self) -> &ChannelCore {
        &self.core
    }

    /// Images sent so far: bitmap, quic, lz, glz, other.
    pub fn images_sent(&self) -> [u64; 5] {
        self.sent
    }

    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        self.core.poll_timeout()
    }

    /// The connection is gone: give back what this client held (nothing is shared yet).
    pub(crate) fn closed(&mut self, _shared: &mut Shared) {}

    fn add_dirty(&mut self, r: Rect) {
        if r.is_empty() {
            return;
        }
        // Drop what the new rectangle covers; merge if it is covered.
        if self.dirty.iter().any(|d| contains(d, &r)) {
            return;
        }
        self.dirty.retain(|d| !contains(&r, d));
        self.dirty.push(r);
        if self.dirty.len() > MAX_DIRTY {
            let b = self
                .dirty
                .iter()
                .fold(self.dirty[0].clone(), |a, d| union(&a, d));
            self.dirty = vec![b];
        }
    }

    fn handle(&mut self, m: DisplayClient, shared: &mut Shared) -> Result<(), ChannelError> {
        match m {
            DisplayClient::Init(init) => {
                if self.phase != Phase::AwaitInit {
                    return Ok(());
                }
                let window = u32::try_from(init.glz_dictionary_window_size.max(0))
                    .unwrap_or(0)
                    .clamp(1 << 16, 1 << 25);
                self.glz = codec::glz::Encoder::new(window).ok();
                let Some((w, h)) = shared.display.size() else {
                    return Ok(());
                };
                self.core.send(&DisplayServer::InvalAllPalettes);
                self.core.send(&DisplayServer::SurfaceCreate(SurfaceCreate {
                    surface_id: 0,
                    width: w,
                    height: h,
                    format: SurfaceFmt::Xrgb32,
                    flags: SurfaceFlags::PRIMARY,
                }));
                self.seen_seq = shared.display.next_seq();
                self.dirty.clear();
                self.add_dirty(Rect::from_xywh(0, 0, w as i32, h as i32));
                self.phase = Phase::FirstScreen;
            }
            DisplayClient::PreferredCompression(c) => self.preferred = Some(c),
            DisplayClient::StreamReport(_)
            | DisplayClient::GlDrawDone
            | DisplayClient::PreferredVideoCodecType(_) => {}
            DisplayClient::Base(_) => {}
            DisplayClient::Unknown { msg_type, .. } => {
                return Err(ChannelError::Protocol(format!(
                    "unknown display message type {msg_type}"
                )))
            }
        }
        Ok(())
    }

    /// The compression for one image of `w`×`h` pixels.
    fn choose(&self, setting: ImageCompression, pix: &Pixmap) -> Kind {
        let px = u64::from(pix.width()) * u64::from(pix.height());
        if px < MIN_PIXELS_TO_COMPRESS {
            return Kind::Bitmap;
        }
        if let Some(p) = self.preferred {
            match p {
                WireCompression::Off => return Kind::Bitmap,
                WireCompression::Quic => return Kind::Quic,
                WireCompression::Lz | WireCompression::Lz4 => return Kind::Lz,
                WireCompression::Glz => return Kind::Glz,
                WireCompression::AutoLz => return auto(pix, Kind::Lz),
                WireCompression::AutoGlz => return auto(pix, Kind::Glz),
                _ => {}
            }
        }
        let _ = self.lz4_cap;
        match setting {
            ImageCompression::Off => Kind::Bitmap,
            ImageCompression::Quic => Kind::Quic,
            ImageCompression::Lz | ImageCompression::Lz4 => Kind::Lz,
            ImageCompression::Glz => Kind::Glz,
            ImageCompression::AutoLz => auto(pix, Kind::Lz),
            ImageCompression::AutoGlz => auto(pix, Kind::Glz),
        }
    }

    /// Encode `r` of the current screen as one `draw_copy`.
    fn draw(&mut self, shared: &Shared, r: Rect) -> Option<DisplayServer> {
        let (sw, _) = shared.display.size()?;
        let pixels = shared.display.pixels()?;
        let (w, h) = (r.width() as u32, r.height() as u32);
        let mut data = Vec::with_capacity(w as usize * h as usize * 4);
        let stride = sw as usize * 4;
        for y in r.top..r.bottom {
            let start = y as usize * stride + r.left as usize * 4;
            data.extend_from_slice(pixels.get(start..start + w as usize * 4)?);
        }
        let pix = Pixmap::from_data(w, h, PixelFormat::Rgb32, w as usize * 4, data).ok()?;
        let id = self.next_image_id;
        self.next_image_id += 1;
        let kind = self.choose(shared.display.compression(), &pix);
        let encoded = match kind {
            Kind::Quic => codec::quic::encode(&pix)
                .ok()
                .map(|b| ImageData::Quic(b.into())),
            Kind::Lz => codec::lz::encode(&pix, true)
                .ok()
                .map(|b| ImageData::LzRgb(b.into())),
            Kind::Glz => self
                .glz
                .as_mut()
                .and_then(|g| g.encode(&pix, true).ok())
                .map(|(_, b)| ImageData::GlzRgb(b.into())),
            Kind::Bitmap => None,
        };
        let (data, slot) = match encoded {
            Some(d) => (d, kind as usize),
            None => (
                ImageData::Bitmap(BitmapData {
                    format: BitmapFmt::Bit32,
                    flags: BitmapFlags::TOP_DOWN,
                    x: w,
                    y: h,
                    stride: w * 4,
                    palette: BitmapPalette::Inline(None),
                    data: pix.into_data().into(),
                }),
                Kind::Bitmap as usize,
            ),
        };
        self.sent[slot] += 1;
        Some(DisplayServer::DrawCopy(Draw {
            base: DisplayBase {
                surface_id: 0,
                bbox: r,
                clip: Clip::None,
            },
            data: Copy {
                src_bitmap: Some(Box::new(Image {
                    id,
                    flags: ImageFlags::EMPTY,
                    width: w,
                    height: h,
                    data,
                })),
                src_area: Rect::from_xywh(0, 0, w as i32, h as i32),
                rop_descriptor: Ropd::OP_PUT,
                scale_mode: ImageScaleMode::Nearest,
                mask: QMask {
                    flags: MaskFlags::EMPTY,
                    pos: Point { x: 0, y: 0 },
                    bitmap: None,
                },
            },
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bitmap = 0,
    Quic = 1,
    Lz = 2,
    Glz = 3,
}

/// The `auto_*` choice: QUIC for photo-like images, else the dictionary coder.
fn auto(pix: &Pixmap, otherwise: Kind) -> Kind {
    if photo_like(pix) {
        Kind::Quic
    } else {
        otherwise
    }
}

/// A graduality estimate in the spirit of the reference's `bitmap_get_graduality_level`:
/// sample pixels and count small non-zero steps from the left neighbour; many small steps
/// means gradients and noise (photo-like, where QUIC wins), equal neighbours or hard edges mean
/// graphics (where LZ/GLZ win).
pub fn photo_like(pix: &Pixmap) -> bool {
    let (mut gradual, mut total) = (0u32, 0u32);
    let row_step = (pix.height() / 32).max(1);
    let mut y = 0;
    while y < pix.height() {
        let row = pix.row(y);
        for px in row
            .chunks_exact(4)
            .collect::<Vec<_>>()
            .windows(2)
            .step_by(3)
        {
            let d: u32 = (0..3)
                .map(|c| (i32::from(px[0][c]) - i32::from(px[1][c])).unsigned_abs())
                .sum();
            total += 1;
            if d > 0 && d < 24 {
                gradual += 1;
            }
        }
        y += row_step;
    }
    total > 0 && gradual * 2 > total
}

fn contains(a: &Rect, b: &Rect) -> bool {
    a.left <= b.left && a.top <= b.top && a.right >= b.right && a.bottom >= b.bottom
}

fn union(a: &Rect, b: &Rect) -> Rect {
    Rect {
        left: a.left.min(b.left),
        top: a.top.min(b.top),
        right: a.right.max(b.right),
        bottom: a.bottom.max(b.bottom),
    }
}

/// Split `r` into horizontal bands of at most [`MAX_PIXELS_PER_DRAW`] pixels.
fn bands(r: Rect) -> Vec<Rect> {
    let w = r.width().max(1) as u64;
    let rows = (MAX_PIXELS_PER_DRAW / w).max(1) as i32;
    let mut v = Vec::new();
    let mut top = r.top;
    while top < r.bottom {
        let bottom = (top + rows).min(r.bottom);
        v.push(Rect {
            top,
            bottom,
            left: r.left,
            right: r.right,
        });
        top = bottom;
    }
    v
}

impl ChannelImpl for DisplayChannel {
    fn core_mut(&mut self) -> &mut ChannelCore {
        &mut self.core
    }

    fn handle_bytes(
        &mut self,
        data: &[u8],
        shared: &mut Shared,
        now_ms: u64,
    ) -> Result<(), ChannelError> {
        for raw in self.core.handle_bytes(data, now_ms)? {
            let m = DisplayClient::decode(raw.header.msg_type, &raw.body)?;
            self.handle(m, shared)?;
        }
        Ok(())
    }

    fn pump(&mut self, shared: &mut Shared, _now_ms: u64) {
        if self.phase == Phase::AwaitInit {
            return;
        }
        // Take the changes this client has not seen.
        let next = shared.display.next_seq();
        if self.seen_seq < next {
            match shared.display.updates_since(self.seen_seq) {
                Some(rs) => {
                    for r in rs {
                        self.add_dirty(r);
                    }
                }
                None => {
                    if let Some((w, h)) = shared.display.size() {
                        self.add_dirty(Rect::from_xywh(0, 0, w as i32, h as i32));
                    }
                }
            }
            self.seen_seq = next;
        }
        while self.core.can_send() && !self.dirty.is_empty() {
            let r = self.dirty.remove(0);
            let mut parts = bands(r);
            let first = parts.remove(0);
            // The rest of a large rectangle goes back to the front of the queue.
            for p in parts.into_iter().rev() {
                self.dirty.insert(0, p);
            }
            if let Some(m) = self.draw(shared, first) {
                self.core.send(&m);
            }
        }
        if self.phase == Phase::FirstScreen && self.dirty.is_empty() {
            if let (true, Some((w, h))) = (self.monitors_cap, shared.display.size()) {
                self.core
                    .send(&DisplayServer::MonitorsConfig(MonitorsConfig {
                        max_allowed: 1,
                        heads: vec![Head {
                            monitor_id: 0,
                            surface_id: 0,
                            width: w,
                            height: h,
                            x: 0,
                            y: 0,
                            flags: 0,
                        }],
                    }));
            }
            if shared.cfg.breakage != Some(crate::server::Breakage::NoMark) {
                self.core.send(&DisplayServer::Mark);
            }
            self.phase = Phase::Streaming;
        }
    }
}
