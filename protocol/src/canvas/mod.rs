//! A reference canvas: renders a display channel's messages into surfaces the way spice-gtk's
//! software canvas (spice-common `canvas_base.c` / `sw_canvas.c`) does.
//!
//! Owns: surfaces (primary and off-screen), every draw of the display channel (fill, copy,
//! opaque, blend, blackness, whiteness, invers, copy_bits, rop3, stroke, text, transparent,
//! alpha_blend, composite) with clip rectangles and masks, the pixmap, palette and GLZ caches,
//! and MJPEG streams. Does not: parse messages (that is [`crate::messages`]) or decode image
//! payloads itself (that is [`crate::codec`]).
//!
//! Where spice-gtk leans on pixman for resampling (scaled copies with the `interpolate` mode,
//! stream frames scaled to their destination, composite transforms), this canvas samples
//! bilinearly or by nearest pixel with pixman's coordinates, but not its exact filter
//! weights; unscaled draws, fills, rops, masks, text and blending are pixel-exact (checked
//! against spice-gtk by `fake-devices/tests/real_client.rs`, scene `qxl-ops`). Zero-width
//! strokes step as X's `miZeroLine` does (spice-gtk draws them with it); dashed strokes are
//! stepped the same way, where X draws them as 1-pixel-wide polygons (`miWideDash`), so dash
//! ends may differ by a pixel.
//!
//! Hostile input: [`Canvas::apply`] never panics; a draw it cannot do returns a
//! [`CanvasError`] and leaves the surfaces as they were before that draw or partly drawn, never
//! inconsistent. Image, mask and surface sizes are bounded by [`Limits`]; everything else a
//! peer can make the canvas spend is bounded by [`CanvasLimits`]: the work of one draw (pixels
//! visited, line steps, clip rectangles), the clip rectangles and path points of one draw, and
//! the pixmap and palette caches by entries and by bytes. Work is bounded by the pixels a draw
//! touches, not by counts the peer chooses: strokes are clipped to the draw's region before
//! they are stepped, dash patterns are walked in O(1) per pixel, clip rectangles are swept once
//! per row. Sizes that come from outside are multiplied with checked or wide arithmetic.
//!
//! Must not: panic, allocate by an unchecked size, or do work proportional to a peer-chosen
//! count beyond its budgets.

mod image;
pub mod raster;

use std::collections::BTreeMap;
use std::rc::Rc;

pub use image::{to_raster, Caches, Decoded};
pub use raster::{Raster, Region, Rop, RopInput};

use crate::codec::{CodecError, Limits};
use crate::display::{
    AlphaFlags, Brush, Clip, CompositeFlags, DisplayBase, Glyphs, Image, ImageData, ImageScaleMode,
    PathFlags, QMask, StreamFlags, SurfaceFmt, VideoCodecType,
};
use crate::messages::display::{StreamCreate, SurfaceCreate};
use crate::messages::DisplayServer;
use crate::types::{Point, PointFix, Rect, Transform};
use raster::{over, porter_duff, rop3, scale_argb};

/// Why a display message could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanvasError {
    #[error("surface {0} does not exist")]
    UnknownSurface(u32),
    #[error("surface or image too large")]
    TooLarge,
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("image {0} is not in the pixmap cache")]
    MissingPixmap(u64),
    #[error("palette {0} is not in the palette cache")]
    MissingPalette(u64),
    #[error("image refers to surface {0}")]
    SurfaceImage(u32),
    #[error("image decoded to {decoded:?}, descriptor says {descriptor:?}")]
    ImageSize {
        descriptor: (u32, u32),
        decoded: (u32, u32),
    },
    #[error("stream {0} does not exist")]
    UnknownStream(u32),
    #[error("draw without a source image")]
    NoSource,
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error("glyph {0}: data shorter than its size")]
    ShortGlyph(usize),
    /// A budget of [`CanvasLimits`] would be exceeded: the draw is refused.
    #[error("canvas budget exceeded: {what} (limit {limit})")]
    Budget { what: &'static str, limit: u64 },
}

/// What a [`Canvas`] may spend beyond the decoders' [`Limits`]; every field has a safe default
/// ([`CanvasLimits::from_codec`]). Exceeding one refuses the draw with
/// [`CanvasError::Budget`] naming it (caches evict instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanvasLimits {
    /// Image, mask, glyph-string and surface sizes (`max_pixels`).
    pub codec: Limits,
    /// Work units one draw may spend: one per pixel visited (region, mask, clip sweep, source
    /// copy, glyph pixel) and per line step, plus a few per line segment and clip rectangle.
    /// Default: 8 x `max_pixels` (at least 1 Mi), enough for a full-surface draw with a
    /// mask, clip rectangles and a surface source.
    pub max_draw_work: u64,
    /// Clip rectangles one draw may carry. Default 65,536 (drivers send a few hundred at most).
    pub max_clip_rects: usize,
    /// Points of one stroke's path, as sent and after flattening its curves. Default 1 Mi.
    pub max_path_points: usize,
    /// Entries of the pixmap cache; the oldest go first past it. Default 131,072.
    pub max_pixmap_entries: usize,
    /// Bytes the pixmap cache holds (4 per pixel plus [`PIXMAP_ENTRY_OVERHEAD`] per entry); the
    /// oldest entries go first past it, and an image larger than it is not cached. Default:
    /// 2 x `max_pixels` pixels.
    pub max_pixmap_bytes: u64,
    /// Palettes in the palette cache; the oldest go first past it. Default 4,096.
    pub max_palettes: usize,
    /// Palette entries the palette cache holds in all (a palette over it is not cached).
    /// Default 1 Mi (4,096 palettes of 256 colours).
    pub max_palette_entries: u64,
    /// Pixels of earlier images the GLZ window keeps (decoded, 4 bytes each). Default 32 Mi.
    pub max_glz_window_pixels: u64,
}

/// Bytes counted per pixmap cache entry on top of its pixels (map nodes, shared header).
pub const PIXMAP_ENTRY_OVERHEAD: u64 = 128;

impl CanvasLimits {
    /// The default canvas budgets for decoder limits `codec`.
    pub fn from_codec(codec: Limits) -> CanvasLimits {
        CanvasLimits {
            codec,
            max_draw_work: codec.max_pixels.saturating_mul(8).max(1 << 20),
            max_clip_rects: 1 << 16,
            max_path_points: 1 << 20,
            max_pixmap_entries: 1 << 17,
            max_pixmap_bytes: codec.max_pixels.saturating_mul(8),
            max_palettes: 4096,
            max_palette_entries: 1 << 20,
            max_glz_window_pixels: 1 << 25,
        }
    }
}

impl Default for CanvasLimits {
    fn default() -> Self {
        CanvasLimits::from_codec(Limits::default())
    }
}

/// The work counter of the draw being applied.
#[derive(Debug, Clone, Copy)]
struct Work {
    used: u64,
    limit: u64,
}

impl Work {
    /// Count `n` units; refuse the draw once past the budget.
    fn spend(&mut self, n: u64, what: &'static str) -> Result<(), CanvasError> {
        self.used = self.used.saturating_add(n);
        if self.used > self.limit {
            return Err(CanvasError::Budget {
                what,
                limit: self.limit,
            });
        }
        Ok(())
    }
}

/// One surface: its pixels and SPICE format.
#[derive(Debug, Clone)]
pub struct Surface {
    pub format: SurfaceFmt,
    pub raster: Raster,
}

impl Surface {
    fn is_16bpp(&self) -> bool {
        matches!(self.format, SurfaceFmt::Rgb555 | SurfaceFmt::Rgb565)
    }
}

#[derive(Debug, Clone)]
struct Stream {
    surface_id: u32,
    top_down: bool,
    codec: VideoCodecType,
    dest: Rect,
    clip: Clip,
    /// The MJPEG tables seen so far (later frames come without them).
    tables: crate::codec::jpeg::MjpegTables,
}

/// Counters of what a canvas did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CanvasStats {
    /// Draw messages applied.
    pub draws: u64,
    /// Stream frames shown.
    pub frames: u64,
    /// Draws whose source was lossy (JPEG) or stream frames.
    pub lossy: u64,
    /// Work units spent by all draws (see [`CanvasLimits::max_draw_work`]).
    pub work: u64,
    /// Work units spent by the last draw applied (refused or not).
    pub last_work: u64,
}

/// The client's surfaces and caches, fed display messages in order.
#[derive(Debug)]
pub struct Canvas {
    surfaces: BTreeMap<u32, Surface>,
    streams: BTreeMap<u32, Stream>,
    pub caches: Caches,
    pub stats: CanvasStats,
    limits: Limits,
    climits: CanvasLimits,
    work: Work,
}

/// At most this many surfaces, and this many streams, exist at once.
const MAX_SURFACES: usize = 1024;
const MAX_STREAMS: usize = 64;

/// A resolved brush.
enum Paint {
    Solid(u32),
    Tile(Rc<Raster>, Point),
}

impl Paint {
    #[inline]
    fn at(&self, x: i64, y: i64) -> u32 {
        match self {
            Paint::Solid(c) => *c,
            Paint::Tile(t, pos) => {
                let tx = (x - pos.x as i64).rem_euclid(t.width as i64);
                let ty = (y - pos.y as i64).rem_euclid(t.height as i64);
                t.px[t.idx(tx, ty)]
            }
        }
    }
}

impl Default for Canvas {
    fn default() -> Self {
        Canvas::new(Limits::default())
    }
}

impl Canvas {
    /// A canvas with decoder limits `limits` and the default budgets for them.
    pub fn new(limits: Limits) -> Canvas {
        Canvas::with_limits(CanvasLimits::from_codec(limits))
    }

    /// A canvas with every budget given.
    pub fn with_limits(climits: CanvasLimits) -> Canvas {
        Canvas {
            surfaces: BTreeMap::new(),
            streams: BTreeMap::new(),
            caches: Caches::with_limits(climits),
            stats: CanvasStats::default(),
            limits: climits.codec,
            climits,
            work: Work {
                used: 0,
                limit: climits.max_draw_work,
            },
        }
    }

    /// The budgets this canvas keeps.
    pub fn limits(&self) -> &CanvasLimits {
        &self.climits
    }

    pub fn surface(&self, id: u32) -> Option<&Surface> {
        self.surfaces.get(&id)
    }

    /// The primary surface (id 0).
    pub fn primary(&self) -> Option<&Surface> {
        self.surfaces.get(&0)
    }

    pub fn surface_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.surfaces.keys().copied()
    }

    /// Apply one server message of the display channel.
    pub fn apply(&mut self, m: &DisplayServer) -> Result<(), CanvasError> {
        self.work.used = 0;
        let r = self.apply_message(m);
        self.stats.last_work = self.work.used;
        self.stats.work = self.stats.work.saturating_add(self.work.used);
        r
    }

    fn apply_message(&mut self, m: &DisplayServer) -> Result<(), CanvasError> {
        use DisplayServer as D;
        match m {
            D::SurfaceCreate(c) => self.surface_create(c),
            D::SurfaceDestroy(id) => {
                self.surfaces.remove(id);
                self.streams.retain(|_, s| s.surface_id != *id);
                Ok(())
            }
            D::Mode(mode) => {
                let c = SurfaceCreate {
                    surface_id: 0,
                    width: mode.x_res,
                    height: mode.y_res,
                    format: SurfaceFmt::Xrgb32,
                    flags: crate::display::SurfaceFlags::PRIMARY,
                };
                self.surface_create(&c)
            }
            D::Reset => {
                self.surfaces.remove(&0);
                self.streams.clear();
                self.caches.clear_palettes();
                Ok(())
            }
            D::InvalList(l) => {
                for r in &l.resources {
                    if r.resource_type == crate::display::ResourceType::Pixmap {
                        self.caches.remove_pixmap(r.id);
                    }
                }
                Ok(())
            }
            D::InvalAllPixmaps(_) => {
                self.caches.clear_pixmaps();
                Ok(())
            }
            D::InvalPalette(id) => {
                self.caches.remove_palette(*id);
                Ok(())
            }
            D::InvalAllPalettes => {
                self.caches.clear_palettes();
                Ok(())
            }
            D::StreamCreate(s) => self.stream_create(s),
            D::StreamData(d) => self.stream_frame(d.base.id, &d.data, None),
            D::StreamDataSized(d) => self.stream_frame(
                d.base.id,
                &d.data,
                Some((d.dest.clone(), d.width, d.height)),
            ),
            D::StreamClip(c) => {
                let s = self
                    .streams
                    .get_mut(&c.id)
                    .ok_or(CanvasError::UnknownStream(c.id))?;
                s.clip = c.clip.clone();
                Ok(())
            }
            D::StreamDestroy(id) => {
                self.streams.remove(id);
                Ok(())
            }
            D::StreamDestroyAll => {
                self.streams.clear();
                Ok(())
            }
            D::CopyBits(c) => self.draw(|cv| cv.copy_bits(&c.base, c.src_pos.clone())),
            D::DrawFill(d) => self.draw(|cv| {
                let Some((sid, mut reg)) = cv.region(&d.base)? else {
                    return cv.touch_brush(&d.data.brush);
                };
                cv.mask(&mut reg, &d.data.mask, &d.base.bbox)?;
                let rop = Rop::from_ropd(d.data.rop_descriptor, RopInput::Brush, RopInput::Dest);
                cv.paint(sid, &reg, &d.data.brush, rop)
            }),
            D::DrawOpaque(d) => self.draw(|cv| {
                let o = &d.data;
                let Some((sid, mut reg)) = cv.region(&d.base)? else {
                    cv.touch(o.src_bitmap.as_deref())?;
                    return cv.touch_brush(&o.brush);
                };
                cv.mask(&mut reg, &o.mask, &d.base.bbox)?;
                let (src, map) = cv.sampled(
                    o.src_bitmap.as_deref(),
                    &o.src_area,
                    &d.base.bbox,
                    &reg,
                    o.scale_mode,
                )?;
                cv.blit_with(sid, &reg, &src, &map, Rop::COPY);
                let rop = Rop::from_ropd(o.rop_descriptor, RopInput::Brush, RopInput::Src);
                cv.paint(sid, &reg, &o.brush, rop)
            }),
            D::DrawCopy(d) | D::DrawBlend(d) => self.draw(|cv| {
                let c = &d.data;
                let Some((sid, mut reg)) = cv.region(&d.base)? else {
                    return cv.touch(c.src_bitmap.as_deref());
                };
                cv.mask(&mut reg, &c.mask, &d.base.bbox)?;
                let (src, map) = cv.sampled(
                    c.src_bitmap.as_deref(),
                    &c.src_area,
                    &d.base.bbox,
                    &reg,
                    c.scale_mode,
                )?;
                let rop = Rop::from_ropd(c.rop_descriptor, RopInput::Src, RopInput::Dest);
                cv.blit_with(sid, &reg, &src, &map, rop);
                Ok(())
            }),
            D::DrawBlackness(d) | D::DrawWhiteness(d) | D::DrawInvers(d) => {
                let rop = match m {
                    D::DrawBlackness(_) => raster::RopOp::Clear,
                    D::DrawWhiteness(_) => raster::RopOp::Set,
                    _ => raster::RopOp::Invert,
                };
                self.draw(|cv| {
                    let Some((sid, mut reg)) = cv.region(&d.base)? else {
                        return Ok(());
                    };
                    cv.mask(&mut reg, &d.data.mask, &d.base.bbox)?;
                    let rop = Rop {
                        op: rop,
                        inv_src: false,
                        inv_dst: false,
                        inv_res: false,
                    };
                    cv.fill_with(sid, &reg, |_, _, d| rop.apply(0, d));
                    Ok(())
                })
            }
            D::DrawRop3(d) => self.draw(|cv| cv.rop3(d)),
            D::DrawStroke(d) => self.draw(|cv| cv.stroke(d)),
            D::DrawText(d) => self.draw(|cv| cv.text(d)),
            D::DrawTransparent(d) => self.draw(|cv| {
                let t = &d.data;
                let Some((sid, reg)) = cv.region(&d.base)? else {
                    return cv.touch(t.src_bitmap.as_deref());
                };
                let (src, map) = cv.sampled(
                    t.src_bitmap.as_deref(),
                    &t.src_area,
                    &d.base.bbox,
                    &reg,
                    ImageScaleMode::Nearest,
                )?;
                let key = t.true_color & 0x00ff_ffff;
                cv.fill_with(sid, &reg, |x, y, dst| match map.get(&src, x, y) {
                    Some(s) if s & 0x00ff_ffff != key => s,
                    _ => dst,
                });
                Ok(())
            }),
            D::DrawAlphaBlend(d) => self.draw(|cv| {
                let a = &d.data;
                let Some((sid, reg)) = cv.region(&d.base)? else {
                    return cv.touch(a.src_bitmap.as_deref());
                };
                if a.alpha == 0 {
                    return cv.touch(a.src_bitmap.as_deref());
                }
                let (src, map) = cv.sampled(
                    a.src_bitmap.as_deref(),
                    &a.src_area,
                    &d.base.bbox,
                    &reg,
                    ImageScaleMode::Nearest,
                )?;
                let src_alpha = match a.src_bitmap.as_deref().map(|i| &i.data) {
                    Some(ImageData::Surface(_)) => {
                        a.alpha_flags.contains(AlphaFlags::SRC_SURFACE_HAS_ALPHA)
                    }
                    _ => src.alpha,
                };
                let m = a.alpha as u32;
                cv.fill_with(sid, &reg, |x, y, dst| match map.get(&src, x, y) {
                    Some(s) => {
                        let s = if src_alpha { s } else { s | 0xff00_0000 };
                        over(scale_argb(s, m), dst)
                    }
                    None => dst,
                });
                Ok(())
            }),
            D::DrawComposite(d) => self.draw(|cv| cv.composite(d)),
            D::MonitorsConfig(_)
            | D::Mark
            | D::StreamActivateReport(_)
            | D::QualityIndicator(_)
            | D::Base(_) => Ok(()),
            D::GlScanoutUnix(_) | D::GlDraw(_) => Err(CanvasError::Unsupported("GL scanout")),
            D::Unknown { .. } => Err(CanvasError::Unsupported("unknown message")),
        }
    }

    fn draw(
        &mut self,
        f: impl FnOnce(&mut Canvas) -> Result<(), CanvasError>,
    ) -> Result<(), CanvasError> {
        f(self)?;
        self.stats.draws += 1;
        Ok(())
    }

    fn surface_create(&mut self, c: &SurfaceCreate) -> Result<(), CanvasError> {
        let pixels = c.width as u64 * c.height as u64;
        let others: u64 = self
            .surfaces
            .iter()
            .filter(|(id, _)| **id != c.surface_id)
            .map(|(_, s)| s.raster.px.len() as u64)
            .sum();
        if c.width == 0
            || c.height == 0
            || pixels > self.limits.max_pixels
            || others + pixels > self.limits.max_pixels.saturating_mul(4)
            || (self.surfaces.len() >= MAX_SURFACES && !self.surfaces.contains_key(&c.surface_id))
        {
            return Err(CanvasError::TooLarge);
        }
        let alpha = matches!(c.format, SurfaceFmt::Argb32 | SurfaceFmt::A8);
        self.surfaces.insert(
            c.surface_id,
            Surface {
                format: c.format,
                raster: Raster::new(c.width, c.height, alpha, 0),
            },
        );
        Ok(())
    }

    /// The surface a draw targets and its region (bbox ∩ surface ∩ clip); `None` when empty.
    fn region(&mut self, base: &DisplayBase) -> Result<Option<(u32, Region)>, CanvasError> {
        let s = self
            .surfaces
            .get(&base.surface_id)
            .ok_or(CanvasError::UnknownSurface(base.surface_id))?;
        let Some(mut reg) = Region::new(&base.bbox, s.raster.width, s.raster.height) else {
            return Ok(None);
        };
        self.work.spend(reg.area(), "draw area")?;
        if let Clip::Rects(rects) = &base.clip {
            if rects.len() > self.climits.max_clip_rects {
                return Err(CanvasError::Budget {
                    what: "clip rectangles",
                    limit: self.climits.max_clip_rects as u64,
                });
            }
            // Sorting and sweeping the rectangles: O(r log r + area).
            let n = rects.len() as u64;
            let log = u64::from(64 - n.leading_zeros());
            self.work
                .spend(n.saturating_mul(log + 1) + reg.area(), "clip rectangles")?;
            reg.clip_rects(rects);
        }
        if reg.is_empty() {
            return Ok(None);
        }
        Ok(Some((base.surface_id, reg)))
    }

    /// Decode an image the draw would not use, for its cache side effects.
    fn touch(&mut self, img: Option<&Image>) -> Result<(), CanvasError> {
        match img {
            Some(i) if !matches!(i.data, ImageData::Surface(_)) => {
                self.caches.decode(i).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    fn touch_brush(&mut self, b: &Brush) -> Result<(), CanvasError> {
        match b {
            Brush::Pattern(p) => self.touch(Some(&p.pat)),
            _ => Ok(()),
        }
    }

    /// An image's pixels: decoded (through the caches) or copied from a surface.
    fn source(&mut self, img: Option<&Image>) -> Result<Rc<Raster>, CanvasError> {
        let img = img.ok_or(CanvasError::NoSource)?;
        if let ImageData::Surface(id) = img.data {
            let s = self
                .surfaces
                .get(&id)
                .ok_or(CanvasError::UnknownSurface(id))?;
            self.work
                .spend(s.raster.px.len() as u64, "surface source copy")?;
            return Ok(Rc::new(s.raster.clone()));
        }
        let d = self.caches.decode(img)?;
        if d.lossy {
            self.stats.lossy += 1;
        }
        Ok(d.raster)
    }

    /// A draw's source image and the sampler that maps the draw's pixels into it. A surface
    /// source is copied only where the draw's region can read it (its source span, one pixel
    /// wider for bilinear), not whole.
    fn sampled(
        &mut self,
        img: Option<&Image>,
        area: &Rect,
        bbox: &Rect,
        reg: &Region,
        mode: ImageScaleMode,
    ) -> Result<(Rc<Raster>, Sampler), CanvasError> {
        let img = img.ok_or(CanvasError::NoSource)?;
        let mut map = Sampler::new(area, bbox, mode);
        let ImageData::Surface(id) = img.data else {
            return Ok((self.source(Some(img))?, map));
        };
        let r = &self
            .surfaces
            .get(&id)
            .ok_or(CanvasError::UnknownSurface(id))?
            .raster;
        let (bx, by) = (bbox.left as i64, bbox.top as i64);
        let (x0, x1) = map.span(true, reg.x - bx, reg.x + reg.w as i64 - 1 - bx);
        let (y0, y1) = map.span(false, reg.y - by, reg.y + reg.h as i64 - 1 - by);
        let (l, t) = (x0.max(0), y0.max(0));
        let (rr, b) = ((x1 + 1).min(r.width as i64), (y1 + 1).min(r.height as i64));
        let (w, h) = ((rr - l).max(0), (b - t).max(0));
        self.work.spend((w * h) as u64, "surface source copy")?;
        let sub = r.sub(l, t, w as u32, h as u32);
        map.ox = l;
        map.oy = t;
        Ok((Rc::new(sub), map))
    }

    fn paint_of(&mut self, sid: u32, b: &Brush) -> Result<Option<Paint>, CanvasError> {
        Ok(match b {
            Brush::None => None,
            Brush::Solid(c) => {
                let c = if self.surfaces.get(&sid).is_some_and(|s| s.is_16bpp()) {
                    color_16_to_32(*c)
                } else {
                    *c
                };
                Some(Paint::Solid(c))
            }
            Brush::Pattern(p) => {
                let t = self.source(Some(&p.pat))?;
                if t.px.is_empty() {
                    return Err(CanvasError::Unsupported("empty pattern"));
                }
                Some(Paint::Tile(t, p.pos.clone()))
            }
        })
    }

    /// Apply `f(x, y, old) -> new` to every pixel of `reg` on surface `sid`.
    fn fill_with(&mut self, sid: u32, reg: &Region, mut f: impl FnMut(i64, i64, u32) -> u32) {
        let Some(s) = self.surfaces.get_mut(&sid) else {
            return;
        };
        let r = &mut s.raster;
        reg.for_each(|x, y| {
            let i = r.idx(x, y);
            r.px[i] = f(x, y, r.px[i]);
        });
    }

    /// `draw_brush`: the brush (or 0 for none) with `rop` onto the region.
    fn paint(&mut self, sid: u32, reg: &Region, b: &Brush, rop: Rop) -> Result<(), CanvasError> {
        let paint = self.paint_of(sid, b)?;
        self.fill_with(sid, reg, |x, y, d| {
            let s = paint.as_ref().map_or(0, |p| p.at(x, y));
            rop.apply(s, d)
        });
        Ok(())
    }

    /// Copy (or scale) `src_area` of `src` to `bbox`, inside `reg`, with `rop`.
    #[allow(clippy::too_many_arguments)]
    fn blit(
        &mut self,
        sid: u32,
        reg: &Region,
        src: &Raster,
        src_area: &Rect,
        bbox: &Rect,
        mode: ImageScaleMode,
        rop: Rop,
    ) {
        let map = Sampler::new(src_area, bbox, mode);
        self.blit_with(sid, reg, src, &map, rop);
    }

    /// `src` through `map` onto `reg`, with `rop`.
    fn blit_with(&mut self, sid: u32, reg: &Region, src: &Raster, map: &Sampler, rop: Rop) {
        self.fill_with(sid, reg, |x, y, d| match map.get(src, x, y) {
            Some(s) => rop.apply(s, d),
            None => d,
        });
    }

    /// Narrow `reg` to the pixels a draw's mask lets through.
    fn mask(&mut self, reg: &mut Region, m: &QMask, bbox: &Rect) -> Result<(), CanvasError> {
        let Some(img) = m.bitmap.as_deref() else {
            return Ok(());
        };
        let invert = m.flags.contains(crate::display::MaskFlags::INVERS);
        let ox = bbox.left as i64 - m.pos.x as i64;
        let oy = bbox.top as i64 - m.pos.y as i64;
        self.work.spend(reg.area(), "mask")?;
        if let ImageData::Surface(id) = img.data {
            let r = &self
                .surfaces
                .get(&id)
                .ok_or(CanvasError::UnknownSurface(id))?
                .raster;
            reg.restrict(|x, y| {
                r.raw(x - ox, y - oy)
                    .is_some_and(|p| (p & 0x00ff_ffff != 0) != invert)
            });
            return Ok(());
        }
        let mask = image::mask_image(img, &mut self.caches)?;
        reg.restrict(|x, y| mask.get(x - ox, y - oy).is_some_and(|b| b != invert));
        Ok(())
    }

    fn copy_bits(&mut self, base: &DisplayBase, src_pos: Point) -> Result<(), CanvasError> {
        let Some((sid, mut reg)) = self.region(base)? else {
            return Ok(());
        };
        let dx = base.bbox.left as i64 - src_pos.x as i64;
        let dy = base.bbox.top as i64 - src_pos.y as i64;
        if dx == 0 && dy == 0 {
            return Ok(());
        }
        // Only the source rectangle of the region is copied (not the whole surface).
        let Some(surface) = self.surfaces.get(&sid) else {
            return Ok(());
        };
        let (sw, sh) = (surface.raster.width as i64, surface.raster.height as i64);
        reg.intersect_xywh(dx, dy, sw, sh);
        self.work.spend(reg.area(), "copy_bits source")?;
        let (sx, sy) = (reg.x - dx, reg.y - dy);
        let old = surface.raster.sub(sx, sy, reg.w, reg.h);
        self.fill_with(sid, &reg, |x, y, d| {
            old.raw(x - dx - sx, y - dy - sy).unwrap_or(d)
        });
        Ok(())
    }

    fn rop3(&mut self, d: &crate::display::Draw<crate::display::Rop3>) -> Result<(), CanvasError> {
        let r = &d.data;
        let Some((sid, mut reg)) = self.region(&d.base)? else {
            self.touch(r.src_bitmap.as_deref())?;
            return self.touch_brush(&r.brush);
        };
        self.mask(&mut reg, &r.mask, &d.base.bbox)?;
        let (src, map) = self.sampled(
            r.src_bitmap.as_deref(),
            &r.src_area,
            &d.base.bbox,
            &reg,
            r.scale_mode,
        )?;
        let paint = self.paint_of(sid, &r.brush)?;
        let code = r.rop3;
        self.fill_with(sid, &reg, |x, y, dst| {
            let s = map.get(&src, x, y).unwrap_or(0);
            let p = paint.as_ref().map_or(0, |p| p.at(x, y));
            rop3(code, p, s, dst)
        });
        Ok(())
    }

    fn text(&mut self, d: &crate::display::Draw<crate::display::Text>) -> Result<(), CanvasError> {
        let t = &d.data;
        let Some((sid, reg)) = self.region(&d.base)? else {
            self.touch_brush(&t.fore_brush)?;
            return self.touch_brush(&t.back_brush);
        };
        if !t.back_area.is_empty() {
            let mut back = reg.clone();
            back.clip_rects(std::slice::from_ref(&t.back_area));
            if !back.is_empty() {
                self.paint(sid, &back, &t.back_brush, Rop::COPY)?;
            }
        }
        let (bpp, glyphs) = match &t.str.glyphs {
            Glyphs::A1(g) => (1, g),
            Glyphs::A4(g) => (4, g),
            Glyphs::A8(g) => (8, g),
            Glyphs::None { .. } => return Err(CanvasError::Unsupported("vector glyphs")),
        };
        if glyphs.is_empty() {
            return Ok(());
        }
        // The string's mask: the union of the glyph boxes, 8-bit coverage, kept only where it
        // meets the draw's region (so its size is bounded by the region, whatever the
        // positions the peer chose).
        self.work.spend(glyphs.len() as u64, "glyphs")?;
        let boxes: Vec<(i64, i64, i64, i64)> = glyphs
            .iter()
            .map(|g| {
                let l = g.render_pos.x as i64 + g.glyph_origin.x as i64;
                let t = g.render_pos.y as i64 + g.glyph_origin.y as i64;
                (l, t, l + g.width as i64, t + g.height as i64)
            })
            .collect();
        let l = boxes.iter().map(|b| b.0).min().unwrap_or(0).max(reg.x);
        let tp = boxes.iter().map(|b| b.1).min().unwrap_or(0).max(reg.y);
        let r = boxes
            .iter()
            .map(|b| b.2)
            .max()
            .unwrap_or(0)
            .min(reg.x + reg.w as i64);
        let b = boxes
            .iter()
            .map(|b| b.3)
            .max()
            .unwrap_or(0)
            .min(reg.y + reg.h as i64);
        let (mw, mh) = ((r - l).max(0) as u64, (b - tp).max(0) as u64);
        let n = mw
            .checked_mul(mh)
            .filter(|&n| n <= self.limits.max_pixels)
            .ok_or(CanvasError::TooLarge)?;
        let mut cov = vec![0u8; n as usize];
        for (gi, (g, bx)) in glyphs.iter().zip(&boxes).enumerate() {
            let (w, h) = (g.width as usize, g.height as usize);
            let stride = (w * bpp as usize).div_ceil(8);
            if stride.checked_mul(h).map_or(true, |n| g.data.len() < n) {
                return Err(CanvasError::ShortGlyph(gi));
            }
            // The glyph's rows and columns inside the coverage box.
            let span = |lo: i64, hi: i64, at: i64, n: usize| {
                let a = (lo - at).clamp(0, n as i64) as usize;
                let z = (hi - at).clamp(0, n as i64) as usize;
                (a, z.max(a))
            };
            let (row0, row1) = span(tp, b, bx.1, h);
            let (col0, col1) = span(l, r, bx.0, w);
            self.work
                .spend(((row1 - row0) * (col1 - col0)) as u64, "glyph pixels")?;
            for row in row0..row1 {
                // Glyph rows are stored bottom-up.
                let src = &g.data[(h - 1 - row) * stride..][..stride];
                let my = (bx.1 + row as i64 - tp) as usize;
                for col in col0..col1 {
                    let v = match bpp {
                        1 => {
                            if src[col / 8] >> (7 - col % 8) & 1 == 1 {
                                0xff
                            } else {
                                0
                            }
                        }
                        4 => {
                            let byte = src[col / 2];
                            if col % 2 == 0 {
                                byte & 0xf0
                            } else {
                                byte << 4
                            }
                        }
                        _ => src[col],
                    };
                    let mx = (bx.0 + col as i64 - l) as usize;
                    let c = &mut cov[my * mw as usize + mx];
                    *c = (*c).max(v);
                }
            }
        }
        let Some(paint) = self.paint_of(sid, &t.fore_brush)? else {
            return Ok(());
        };
        self.fill_with(sid, &reg, |x, y, dst| {
            let (mx, my) = (x - l, y - tp);
            if mx < 0 || my < 0 || mx >= mw as i64 || my >= mh as i64 {
                return dst;
            }
            let m = cov[my as usize * mw as usize + mx as usize] as u32;
            if m == 0 {
                return dst;
            }
            over(scale_argb(paint.at(x, y) | 0xff00_0000, m), dst)
        });
        Ok(())
    }

    fn stroke(
        &mut self,
        d: &crate::display::Draw<crate::display::Stroke>,
    ) -> Result<(), CanvasError> {
        let s = &d.data;
        let Some((sid, reg)) = self.region(&d.base)? else {
            return self.touch_brush(&s.brush);
        };
        let rop = Rop::from_ropd(
            crate::display::Ropd(s.fore_mode),
            RopInput::Brush,
            RopInput::Dest,
        );
        let paint = self.paint_of(sid, &s.brush)?;
        // Dashes (pixels on, off, ...), as the reference converts the style.
        let mut dashes: Vec<u32> = Vec::new();
        let mut dash_offset = 0u32;
        if let Some(style) = &s.attr.style {
            let v: Vec<u32> = style
                .0
                .iter()
                .map(|&f| fix_to_int(f).clamp(0, 255) as u32)
                .collect();
            if s.attr
                .flags
                .contains(crate::display::LineFlags::START_WITH_GAP)
                && !v.is_empty()
            {
                dashes = v[1..].to_vec();
                dashes.push(v[0]);
                dash_offset = dashes[0];
            } else {
                dashes = v;
            }
            if dashes.iter().all(|&x| x == 0) {
                dashes.clear();
            }
        }
        let dashes = Dashes::new(dashes);
        self.work.spend(
            dashes.as_ref().map_or(0, |d| d.len.len() as u64),
            "dash pattern",
        )?;
        // Polylines in integer pixels.
        let max_points = self.climits.max_path_points;
        let sent = s
            .path
            .segments
            .iter()
            .fold(0usize, |n, g| n.saturating_add(g.points.len()));
        if sent > max_points {
            return Err(CanvasError::Budget {
                what: "path points",
                limit: max_points as u64,
            });
        }
        self.work.spend(sent as u64, "path points")?;
        let mut lines: Vec<Vec<(i64, i64)>> = Vec::new();
        let mut cur: Vec<(i64, i64)> = Vec::new();
        // Points from flattened curves, against hostile beziers.
        let mut budget = u32::try_from(max_points).unwrap_or(u32::MAX);
        for seg in &s.path.segments {
            let mut pts = seg.points.iter();
            if seg.flags.contains(PathFlags::BEGIN) {
                if !cur.is_empty() {
                    lines.push(std::mem::take(&mut cur));
                }
                if let Some(p) = pts.next() {
                    cur.push(fix_point(p));
                }
            }
            let rest: Vec<&PointFix> = pts.collect();
            if seg.flags.contains(PathFlags::BEZIER) {
                for c in rest.chunks_exact(3) {
                    let Some(&(x0, y0)) = cur.last() else { break };
                    let f = |p: &PointFix| (p.x as i64, p.y as i64);
                    let pts = [(x0 << 4, y0 << 4), f(c[0]), f(c[1]), f(c[2])];
                    subdivide_bezier(&mut cur, pts, 0, &mut budget);
                }
            } else {
                cur.extend(rest.into_iter().map(fix_point));
            }
            if seg.flags.contains(PathFlags::END) {
                if seg.flags.contains(PathFlags::CLOSE) {
                    if let Some(&first) = cur.first() {
                        cur.push(first);
                    }
                }
                lines.push(std::mem::take(&mut cur));
            }
        }
        if !cur.is_empty() {
            lines.push(cur);
        }
        // Rasterise (zero width, the last point of each polyline not drawn). Each segment is
        // clipped to the region's rectangle before it is stepped, so only the pixels inside
        // are visited; the dash pattern skips the pixels outside in O(log n).
        let (w, h) = (reg.w as usize, reg.h as usize);
        let clip = (reg.x, reg.y, reg.x + w as i64, reg.y + h as i64);
        let mut on = vec![false; w * h];
        let start = dashes.as_ref().map(|d| d.start(dash_offset));
        for line in &lines {
            let mut pos = start;
            for seg in line.windows(2) {
                let zl = ZeroLine::new(seg[0], seg[1]);
                let inside = zl.clip(clip);
                self.work.spend(
                    64 + (inside.end - inside.start) as u64,
                    "stroke pixel steps",
                )?;
                if let (Some(d), Some(p)) = (&dashes, &mut pos) {
                    d.advance(p, inside.start as u64);
                }
                zl.step(inside.clone(), |x, y| {
                    let lit = match (&dashes, &mut pos) {
                        (Some(d), Some(p)) => {
                            let lit = p.i % 2 == 0;
                            d.step(p);
                            lit
                        }
                        _ => true,
                    };
                    if lit {
                        on[(y - clip.1) as usize * w + (x - clip.0) as usize] = true;
                    }
                });
                if let (Some(d), Some(p)) = (&dashes, &mut pos) {
                    d.advance(p, (zl.major - inside.end) as u64);
                }
            }
        }
        let mut sel = reg.clone();
        sel.restrict(|x, y| on[(y - clip.1) as usize * w + (x - clip.0) as usize]);
        self.fill_with(sid, &sel, |x, y, dst| {
            let p = paint.as_ref().map_or(0, |p| p.at(x, y));
            rop.apply(p, dst)
        });
        Ok(())
    }

    fn composite(
        &mut self,
        d: &crate::display::Draw<crate::display::Composite>,
    ) -> Result<(), CanvasError> {
        let c = &d.data;
        let Some((sid, reg)) = self.region(&d.base)? else {
            return Ok(());
        };
        let f = c.flags.0;
        let op = (f & 0xff) as u8;
        let src_filter = (f >> 8) & 7;
        let src_repeat = (f >> 14) & 3;
        let mask_repeat = (f >> 16) & 3;
        let (bx, by) = (d.base.bbox.left as i64, d.base.bbox.top as i64);
        let so = (c.src_origin.x as i64, c.src_origin.y as i64);
        let mo = (c.mask_origin.x as i64, c.mask_origin.y as i64);
        let src_img = c.src_bitmap.as_deref().ok_or(CanvasError::NoSource)?;
        let (src, sso) = self.composite_operand(
            src_img,
            c.src_transform.as_ref(),
            src_repeat,
            (so.0 - bx, so.1 - by),
            &reg,
        )?;
        let src_opaque = c.flags.contains(CompositeFlags::SOURCE_OPAQUE) || !src.alpha;
        let mask = match &c.mask_bitmap {
            Some(Some(m)) => Some(self.composite_operand(
                m,
                c.mask_transform.as_ref(),
                mask_repeat,
                (mo.0 - bx, mo.1 - by),
                &reg,
            )?),
            _ => None,
        };
        let dest_alpha = !c.flags.contains(CompositeFlags::DEST_OPAQUE)
            && self.surfaces.get(&sid).is_some_and(|s| s.raster.alpha);
        if porter_duff(op, 0, 0).is_none() {
            return Err(CanvasError::Unsupported("composite operator"));
        }
        let _ = src_filter;
        // Operand coordinates, less where a partly copied surface starts.
        let so = (so.0 - sso.0, so.1 - sso.1);
        self.fill_with(sid, &reg, |x, y, dst| {
            let (i, j) = (x - bx, y - by);
            let s = fetch(
                &src,
                c.src_transform.as_ref(),
                so.0 + i,
                so.1 + j,
                src_repeat,
            )
            .map_or(0, |p| if src_opaque { p | 0xff00_0000 } else { p });
            let s = match &mask {
                Some((m, mso)) => {
                    let mp = fetch(
                        m,
                        c.mask_transform.as_ref(),
                        mo.0 - mso.0 + i,
                        mo.1 - mso.1 + j,
                        mask_repeat,
                    )
                    .unwrap_or(0);
                    let ma = if m.alpha { mp >> 24 } else { 0xff };
                    scale_argb(s, ma)
                }
                None => s,
            };
            let dd = if dest_alpha { dst } else { dst | 0xff00_0000 };
            porter_duff(op, s, dd).unwrap_or(dst)
        });
        Ok(())
    }

    /// A composite operand and where its raster starts in operand coordinates. A surface read
    /// without a transform or repeat is copied only where the draw's region reads it
    /// (operand pixel = destination pixel + `shift`); otherwise the whole operand.
    fn composite_operand(
        &mut self,
        img: &Image,
        t: Option<&Transform>,
        repeat: u32,
        shift: (i64, i64),
        reg: &Region,
    ) -> Result<(Rc<Raster>, (i64, i64)), CanvasError> {
        let (ImageData::Surface(id), None, 0) = (&img.data, t, repeat) else {
            return Ok((self.source(Some(img))?, (0, 0)));
        };
        let r = &self
            .surfaces
            .get(id)
            .ok_or(CanvasError::UnknownSurface(*id))?
            .raster;
        let (x0, y0) = (reg.x + shift.0, reg.y + shift.1);
        let (l, t) = (x0.max(0), y0.max(0));
        let rr = (x0 + reg.w as i64).min(r.width as i64);
        let b = (y0 + reg.h as i64).min(r.height as i64);
        let (w, h) = ((rr - l).max(0), (b - t).max(0));
        self.work.spend((w * h) as u64, "surface source copy")?;
        Ok((Rc::new(r.sub(l, t, w as u32, h as u32)), (l, t)))
    }

    fn stream_create(&mut self, s: &StreamCreate) -> Result<(), CanvasError> {
        if !self.surfaces.contains_key(&s.surface_id) {
            return Err(CanvasError::UnknownSurface(s.surface_id));
        }
        if self.streams.len() >= MAX_STREAMS && !self.streams.contains_key(&s.id) {
            return Err(CanvasError::TooLarge);
        }
        self.streams.insert(
            s.id,
            Stream {
                surface_id: s.surface_id,
                top_down: s.flags.contains(StreamFlags::TOP_DOWN),
                codec: s.codec_type,
                dest: s.dest.clone(),
                clip: s.clip.clone(),
                tables: Default::default(),
            },
        );
        Ok(())
    }

    fn stream_frame(
        &mut self,
        id: u32,
        data: &[u8],
        sized: Option<(Rect, u32, u32)>,
    ) -> Result<(), CanvasError> {
        let st = self
            .streams
            .get_mut(&id)
            .ok_or(CanvasError::UnknownStream(id))?;
        if st.codec != VideoCodecType::Mjpeg {
            return Err(CanvasError::Unsupported("stream codec other than MJPEG"));
        }
        let frame = st.tables.complete(data);
        let st = st.clone();
        let pix = crate::codec::jpeg::decode(&frame, &self.limits)?;
        let mut frame = to_raster(&pix, &[]);
        if !st.top_down {
            frame = Raster {
                px: frame
                    .px
                    .chunks_exact(frame.width as usize)
                    .rev()
                    .flatten()
                    .copied()
                    .collect(),
                ..frame
            };
        }
        let dest = sized.map_or(st.dest.clone(), |s| s.0);
        let Some((sid, reg)) = self.region(&DisplayBase {
            surface_id: st.surface_id,
            bbox: dest.clone(),
            clip: st.clip.clone(),
        })?
        else {
            return Ok(());
        };
        let area = Rect::from_xywh(0, 0, frame.width as i32, frame.height as i32);
        self.blit(
            sid,
            &reg,
            &frame,
            &area,
            &dest,
            ImageScaleMode::Interpolate,
            Rop::COPY,
        );
        self.stats.frames += 1;
        self.stats.lossy += 1;
        Ok(())
    }
}

/// Maps destination pixels of a draw to source pixels: a plain offset when `src_area` and
/// `bbox` have the same size, else pixman's scaling transform (nearest, or bilinear for
/// `interpolate`).
struct Sampler {
    same: bool,
    nearest: bool,
    src_x: i64,
    src_y: i64,
    sw: i64,
    sh: i64,
    bx: i64,
    by: i64,
    /// 16.16 fixed-point source step per destination pixel.
    fsx: i64,
    fsy: i64,
    /// Where the source raster starts in source coordinates (a part of a surface).
    ox: i64,
    oy: i64,
}

impl Sampler {
    fn new(area: &Rect, bbox: &Rect, mode: ImageScaleMode) -> Sampler {
        let (sw, sh) = (area.width().max(0) as i64, area.height().max(0) as i64);
        let (dw, dh) = (bbox.width().max(1) as i64, bbox.height().max(1) as i64);
        Sampler {
            same: sw == bbox.width() as i64 && sh == bbox.height() as i64,
            nearest: mode != ImageScaleMode::Interpolate,
            src_x: area.left as i64,
            src_y: area.top as i64,
            sw,
            sh,
            bx: bbox.left as i64,
            by: bbox.top as i64,
            fsx: (sw << 16) / dw,
            fsy: (sh << 16) / dh,
            ox: 0,
            oy: 0,
        }
    }

    /// The source coordinates (inclusive, on the x or y axis) [`Sampler::get`] may read for
    /// destination offsets `i0..=i1` from the bbox's corner; empty (lo > hi) when it reads none.
    fn span(&self, x_axis: bool, i0: i64, i1: i64) -> (i64, i64) {
        let (src, len, fs) = if x_axis {
            (self.src_x, self.sw, self.fsx)
        } else {
            (self.src_y, self.sh, self.fsy)
        };
        if self.same {
            return (src + i0, src + i1);
        }
        if self.sw == 0 || self.sh == 0 || len == 0 {
            return (0, -1);
        }
        // Nearest reads (u - 1) >> 16, bilinear (u - 0.5) >> 16 and the pixel after; both
        // lie in [(u - 0.5) >> 16, ((u - 0.5) >> 16) + 1], u non-decreasing in i.
        let u = |i: i64| (2 * i + 1) * fs / 2 + (src << 16) - 0x8000;
        ((u(i0) >> 16) - 1, (u(i1) >> 16) + 2)
    }

    #[inline]
    fn get(&self, src: &Raster, x: i64, y: i64) -> Option<u32> {
        let (i, j) = (x - self.bx, y - self.by);
        if self.same {
            return src.raw(self.src_x + i - self.ox, self.src_y + j - self.oy);
        }
        if self.sw == 0 || self.sh == 0 {
            return None;
        }
        // Centre of the destination pixel in source coordinates (16.16).
        let ux = (2 * i + 1) * self.fsx / 2 + (self.src_x << 16);
        let uy = (2 * j + 1) * self.fsy / 2 + (self.src_y << 16);
        if self.nearest {
            return src.raw(((ux - 1) >> 16) - self.ox, ((uy - 1) >> 16) - self.oy);
        }
        bilinear(
            src,
            ux - 0x8000 - (self.ox << 16),
            uy - 0x8000 - (self.oy << 16),
        )
    }
}

/// Bilinear sample at 16.16 (x, y) with pixman's 7-bit weights; pixels outside are
/// transparent (repeat none). `None` when all four are outside.
fn bilinear(src: &Raster, ux: i64, uy: i64) -> Option<u32> {
    let (x0, y0) = (ux >> 16, uy >> 16);
    let wx = ((ux >> 9) & 0x7f) as u32;
    let wy = ((uy >> 9) & 0x7f) as u32;
    let p = [
        src.raw(x0, y0),
        src.raw(x0 + 1, y0),
        src.raw(x0, y0 + 1),
        src.raw(x0 + 1, y0 + 1),
    ];
    if p.iter().all(Option::is_none) {
        return None;
    }
    let alpha = src.alpha;
    let px = p.map(|v| match v {
        Some(v) if alpha => v,
        Some(v) => v | 0xff00_0000,
        None => 0,
    });
    let w = [
        (128 - wx) * (128 - wy),
        wx * (128 - wy),
        (128 - wx) * wy,
        wx * wy,
    ];
    let mut out = 0u32;
    for sh in [0u32, 8, 16, 24] {
        let sum: u32 = (0..4).map(|k| (px[k] >> sh & 0xff) * w[k]).sum();
        out |= ((sum + (1 << 13)) >> 14).min(0xff) << sh;
    }
    Some(out)
}

/// A composite operand's pixel for destination-relative (x, y): through the transform (of
/// the pixel centre, nearest), with pixman's repeat modes (0 none, 1 normal, 2 pad, 3 reflect).
fn fetch(r: &Raster, t: Option<&Transform>, x: i64, y: i64, repeat: u32) -> Option<u32> {
    let (mut sx, mut sy) = (x, y);
    if let Some(t) = t {
        // In i128: a coordinate of up to ~2^33 in 16.16 times a 32-bit matrix entry does not
        // fit an i64 (a far-left bbox); results beyond i64 saturate (outside any raster).
        let cx = ((x as i128) << 16) + 0x8000;
        let cy = ((y as i128) << 16) + 0x8000;
        let m = |v: u32| v as i32 as i128;
        let tx = (m(t.t00) * cx + m(t.t01) * cy) / 65536 + m(t.t02);
        let ty = (m(t.t10) * cx + m(t.t11) * cy) / 65536 + m(t.t12);
        let sat = |v: i128| i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX });
        sx = sat((tx - 1) >> 16);
        sy = sat((ty - 1) >> 16);
    }
    let (w, h) = (r.width as i64, r.height as i64);
    if w == 0 || h == 0 {
        return None;
    }
    let wrap = |v: i64, n: i64| -> Option<i64> {
        match repeat {
            1 => Some(v.rem_euclid(n)),
            2 => Some(v.clamp(0, n - 1)),
            3 => {
                let m = v.rem_euclid(2 * n);
                Some(if m < n { m } else { 2 * n - 1 - m })
            }
            _ => (0..n).contains(&v).then_some(v),
        }
    };
    let (sx, sy) = (wrap(sx, w)?, wrap(sy, h)?);
    let p = r.raw(sx, sy)?;
    Some(if r.alpha { p } else { p | 0xff00_0000 })
}

/// The reference's `fix_to_int`: 28.4 fixed point to the nearest integer, halves down.
fn fix_to_int(v: i32) -> i64 {
    let rem = v & 0x0f;
    let mut val = (v >> 4) as i64;
    if rem > 8 {
        val += 1;
    }
    val
}

fn fix_point(p: &PointFix) -> (i64, i64) {
    (fix_to_int(p.x), fix_to_int(p.y))
}

/// Flatten a cubic bezier (28.4 fixed-point control points) as the reference does: split
/// until the control points lie within half a pixel of the chord; end points go to `out`.
fn subdivide_bezier(out: &mut Vec<(i64, i64)>, p: [(i64, i64); 4], depth: u32, budget: &mut u32) {
    let dot = |x1: i64, y1: i64, x2: i64, y2: i64| {
        (x1.saturating_mul(x2).saturating_add(y1.saturating_mul(y2))) >> 4
    };
    let [a, b, c, d] = p;
    let a2 = dot(b.0 - a.0, b.1 - a.1, b.0 - a.0, b.1 - a.1);
    let b2 = dot(d.0 - a.0, d.1 - a.1, d.0 - a.0, d.1 - a.1);
    let c2 = dot(c.0 - d.0, c.1 - d.1, c.0 - d.0, c.1 - d.1);
    let ab = dot(b.0 - a.0, b.1 - a.1, d.0 - a.0, d.1 - a.1);
    let cb = dot(c.0 - d.0, c.1 - d.1, a.0 - d.0, a.1 - d.1);
    let h1 = a2.saturating_mul(b2).saturating_sub(ab.saturating_mul(ab)) >> 3;
    let h2 = c2.saturating_mul(b2).saturating_sub(cb.saturating_mul(cb)) >> 3;
    if (h1 < b2 && h2 < b2) || depth >= 16 || *budget == 0 {
        *budget = budget.saturating_sub(1);
        out.push((fix_to_int(d.0 as i32), fix_to_int(d.1 as i32)));
        return;
    }
    let mid = |p: (i64, i64), q: (i64, i64)| ((p.0 + q.0) / 2, (p.1 + q.1) / 2);
    let p01 = mid(a, b);
    let p12 = mid(b, c);
    let p23 = mid(c, d);
    let p012 = mid(p01, p12);
    let p123 = mid(p12, p23);
    let p0123 = mid(p012, p123);
    subdivide_bezier(out, [a, p01, p012, p0123], depth + 1, budget);
    subdivide_bezier(out, [p0123, p123, p23, d], depth + 1, budget);
}

/// A dash pattern (pixels on, off, on, ...; some lengths may be 0) walked in O(1) per pixel:
/// zero-length entries are skipped through `next`, and a run of `n` pixels is skipped in
/// O(log entries) through the pattern's period.
struct Dashes {
    len: Vec<u32>,
    /// `end[i]`: the sum of `len[..=i]`.
    end: Vec<u64>,
    /// `next[i]`: the first entry after `i` (cyclically) with a non-zero length.
    next: Vec<usize>,
    /// The sum of all lengths (> 0).
    period: u64,
}

/// Where a line is in its dash pattern: entry `i` (even = on), `left` pixels of it to go.
/// `left` is 0 only at a polyline's start when it starts on a zero-length entry: that pixel
/// is drawn with the entry's parity and the next one moves on, as the reference steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DashPos {
    i: usize,
    left: u32,
}

impl Dashes {
    /// `None` when there is no pattern (empty or all zero: a solid line).
    fn new(len: Vec<u32>) -> Option<Dashes> {
        if len.iter().all(|&l| l == 0) {
            return None;
        }
        let end: Vec<u64> = len
            .iter()
            .scan(0u64, |acc, &l| {
                *acc += l as u64;
                Some(*acc)
            })
            .collect();
        let period = *end.last()?;
        let n = len.len();
        // Walk backwards twice so every entry sees the next non-zero one, wrapping.
        let mut next = vec![0usize; n];
        let mut after = None;
        for k in (0..2 * n).rev() {
            let i = k % n;
            if let Some(a) = after {
                next[i] = a;
            }
            if len[i] > 0 {
                after = Some(i);
            }
        }
        Some(Dashes {
            len,
            end,
            next,
            period,
        })
    }

    /// The entry holding position `phase` (`< period`) and the pixels left in it after it.
    fn at(&self, phase: u64) -> DashPos {
        let i = self.end.partition_point(|&e| e <= phase);
        DashPos {
            i,
            left: (self.end[i] - phase) as u32,
        }
    }

    /// The state at the start of every polyline: entry 0 with `offset` pixels skipped, as the
    /// reference converts a style that starts with a gap (an entry used up exactly moves on
    /// to the next entry, even a zero-length one).
    fn start(&self, offset: u32) -> DashPos {
        if offset == 0 {
            return DashPos {
                i: 0,
                left: self.len[0],
            };
        }
        // The entry of the last pixel skipped.
        let last = self.at((offset as u64 - 1) % self.period);
        if last.left > 1 {
            return DashPos {
                i: last.i,
                left: last.left - 1,
            };
        }
        let i = (last.i + 1) % self.len.len();
        DashPos {
            i,
            left: self.len[i],
        }
    }

    /// One pixel on.
    #[inline]
    fn step(&self, p: &mut DashPos) {
        p.left = p.left.saturating_sub(1);
        if p.left == 0 {
            p.i = self.next[p.i];
            p.left = self.len[p.i];
        }
    }

    /// `n` pixels on.
    fn advance(&self, p: &mut DashPos, mut n: u64) {
        if n == 0 {
            return;
        }
        if p.left == 0 {
            self.step(p);
            n -= 1;
        }
        let phase = (self.end[p.i] - p.left as u64 + n) % self.period;
        *p = self.at(phase);
    }
}

/// A zero-width line from `a` towards `b`, `b` itself excluded (CapNotLast), as X's
/// `miZeroLine` (which spice-gtk's canvas uses) steps it: Bresenham with the error term biased
/// per octant (`DEFAULTZEROLINEBIAS`: octants 2 to 5 prefer the axial step on a tie). Pixel
/// `k` (`0 <= k < major`) has a closed form, so a line can be clipped to a rectangle before it
/// is stepped and only the pixels inside are visited, exactly those the whole line has there.
struct ZeroLine {
    a: (i64, i64),
    sx: i64,
    sy: i64,
    x_major: bool,
    /// Pixels of the line (the longer axis' length).
    major: i64,
    /// Twice the shorter axis' length.
    e1: i64,
    /// The error term before the first pixel.
    e0: i64,
}

impl ZeroLine {
    fn new(a: (i64, i64), b: (i64, i64)) -> ZeroLine {
        const XDECREASING: u32 = 4;
        const YDECREASING: u32 = 2;
        const YMAJOR: u32 = 1;
        // OCTANT2 | OCTANT3 | OCTANT4 | OCTANT5.
        const BIAS: u32 = (1 << (YDECREASING | YMAJOR))
            | (1 << (XDECREASING | YDECREASING | YMAJOR))
            | (1 << (XDECREASING | YDECREASING))
            | (1 << XDECREASING);
        let (mut octant, mut sx, mut sy) = (0u32, 1i64, 1i64);
        let mut adx = b.0 - a.0;
        if adx < 0 {
            adx = -adx;
            sx = -1;
            octant |= XDECREASING;
        }
        let mut ady = b.1 - a.1;
        if ady < 0 {
            ady = -ady;
            sy = -1;
            octant |= YDECREASING;
        }
        let x_major = adx > ady;
        let (major, minor) = if x_major { (adx, ady) } else { (ady, adx) };
        if !x_major {
            octant |= YMAJOR;
        }
        // miZeroLine: e = e1 - major - bias, then e -= e1 before the loop.
        let e1 = minor << 1;
        let e0 = -major - ((BIAS >> octant) & 1) as i64;
        ZeroLine {
            a,
            sx,
            sy,
            x_major,
            major,
            e1,
            e0,
        }
    }

    /// Steps along the shorter axis taken before pixel `k` (`0 <= k <= major`). The error
    /// before pixel `k` is `e0 + k * e1 - 2 * major * m` and stays in `[-2 major, 0)`.
    #[inline]
    fn minor_steps(&self, k: i64) -> i64 {
        (self.e0 + k * self.e1).div_euclid(2 * self.major) + 1
    }

    /// The pixels `k` whose (x, y) lies in `[x0, x1) x [y0, y1)`: one range, as both
    /// coordinates move monotonically.
    fn clip(&self, (x0, y0, x1, y1): (i64, i64, i64, i64)) -> std::ops::Range<i64> {
        if self.major <= 0 {
            return 0..0;
        }
        let (s_maj, s_min, a_maj, a_min, (lo_maj, hi_maj), (lo_min, hi_min)) = if self.x_major {
            (self.sx, self.sy, self.a.0, self.a.1, (x0, x1), (y0, y1))
        } else {
            (self.sy, self.sx, self.a.1, self.a.0, (y0, y1), (x0, x1))
        };
        // coord(k) = start + s * f(k), f non-decreasing from 0: the k with coord in [lo, hi)
        // are those with f(k) in [l, h).
        let bounds = |start: i64, s: i64, lo: i64, hi: i64| {
            if s > 0 {
                (lo - start, hi - start)
            } else {
                (start - hi + 1, start - lo + 1)
            }
        };
        let m = self.major;
        let (l, h) = bounds(a_maj, s_maj, lo_maj, hi_maj);
        let (k0, k1) = (l.clamp(0, m), h.clamp(0, m));
        let (l, h) = bounds(a_min, s_min, lo_min, hi_min);
        let first = |target: i64| {
            // The first k in [0, m] with minor_steps(k) >= target (m if none).
            let (mut lo, mut hi) = (0i64, m);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if self.minor_steps(mid) >= target {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            lo
        };
        let (j0, j1) = (first(l), first(h));
        let (s, e) = (k0.max(j0), k1.min(j1));
        if s < e {
            s..e
        } else {
            0..0
        }
    }

    /// Call `f(x, y)` for the pixels `k` in `range` (`0 <= start <= end <= major`), in order.
    fn step(&self, range: std::ops::Range<i64>, mut f: impl FnMut(i64, i64)) {
        if range.start >= range.end {
            return;
        }
        let k0 = range.start;
        let m0 = self.minor_steps(k0);
        let two_major = 2 * self.major;
        let mut e = self.e0 + k0 * self.e1 - two_major * m0;
        let (mut maj, mut min, s_maj, s_min) = if self.x_major {
            (
                self.a.0 + self.sx * k0,
                self.a.1 + self.sy * m0,
                self.sx,
                self.sy,
            )
        } else {
            (
                self.a.1 + self.sy * k0,
                self.a.0 + self.sx * m0,
                self.sy,
                self.sx,
            )
        };
        for _ in range {
            if self.x_major {
                f(maj, min);
            } else {
                f(min, maj);
            }
            e += self.e1;
            if e >= 0 {
                min += s_min;
                e -= two_major;
            }
            maj += s_maj;
        }
    }
}

#[cfg(test)]
/// The pixels of a zero-width line from `a` towards `b`, `b` itself excluded (CapNotLast),
/// as X's `miZeroLine` (which spice-gtk's canvas uses) steps them: Bresenham with the error
/// term biased per octant (`DEFAULTZEROLINEBIAS`: octants 2 to 5 prefer the axial step on a
/// tie).
fn bresenham(a: (i64, i64), b: (i64, i64), mut f: impl FnMut(i64, i64)) {
    const XDECREASING: u32 = 4;
    const YDECREASING: u32 = 2;
    const YMAJOR: u32 = 1;
    // OCTANT2 | OCTANT3 | OCTANT4 | OCTANT5.
    const BIAS: u32 = (1 << (YDECREASING | YMAJOR))
        | (1 << (XDECREASING | YDECREASING | YMAJOR))
        | (1 << (XDECREASING | YDECREASING))
        | (1 << XDECREASING);
    let (mut octant, mut sx, mut sy) = (0u32, 1i64, 1i64);
    let mut adx = b.0 - a.0;
    if adx < 0 {
        adx = -adx;
        sx = -1;
        octant |= XDECREASING;
    }
    let mut ady = b.1 - a.1;
    if ady < 0 {
        ady = -ady;
        sy = -1;
        octant |= YDECREASING;
    }
    let (mut x, mut y) = a;
    // Bounded: a hostile path cannot make this loop longer than the line.
    let x_major = adx > ady;
    let (major, minor) = if x_major { (adx, ady) } else { (ady, adx) };
    if !x_major {
        octant |= YMAJOR;
    }
    let e1 = minor << 1;
    let e2 = e1 - (major << 1);
    let mut e = e1 - major;
    e -= ((BIAS >> octant) & 1) as i64;
    let e3 = e2 - e1;
    e -= e1;
    for _ in 0..major.min(1 << 16) {
        f(x, y);
        e += e1;
        if x_major {
            if e >= 0 {
                y += sy;
                e += e3;
            }
            x += sx;
        } else {
            if e >= 0 {
                x += sx;
                e += e3;
            }
            y += sy;
        }
    }
}

/// A 16-bit (x1r5g5b5) colour widened as `canvas_16bpp_to_32bpp`.
fn color_16_to_32(c: u32) -> u32 {
    let x5 = |v: u32| {
        let v = v & 0x1f;
        (v << 3) | (v >> 2)
    };
    x5(c >> 10) << 16 | x5(c >> 5) << 8 | x5(c)
}

#[cfg(test)]
mod tests;
