//! The display channel: the screen of the display device to one client, with the image
//! compression the server is set to, in a byte-bounded way.
//!
//! With a QXL device, changes arrive as drawables: while this client keeps up they are sent as
//! the draw messages themselves (fill, copy, copy_bits, text, ...), their images compressed for
//! this client and served from its pixmap and palette caches; an opaque drawable drops the
//! unsent ones it fully covers. When this client falls behind (more than [`MAX_PENDING_DRAWS`]
//! unsent, or more than [`Budgets::display_pending_bytes`] of them), its unsent drawables turn
//! into dirty rectangles sent from the current pixels, as for the framebuffer device.
//!
//! On the client's `init` it sends what the reference sends a new client (spice-gtk ↔ Xspice
//! capture): `inval_all_palettes`, `surface_create` of the primary surface, the current screen
//! as `draw_copy`, `monitors_config` (if the client has the cap) and `mark`. Then it keeps a
//! dirty region ([`Dirty`]: at most [`MAX_DIRTY`] rectangles, each clamped to the surface as it
//! enters; more are merged into their bounding box) of what changed since it last sent, and
//! sends each rectangle as `draw_copy`s of the device's pixels at that moment (bands of at most
//! [`MAX_PIXELS_PER_DRAW`] pixels), only while the channel core allows (ack window and output
//! cap). A slow client therefore gets fewer, newer frames; nothing queues up without bound.
//!
//! The GLZ dictionary (window from the client's `init`, at most
//! [`Budgets::glz_window_pixels`]) is only allocated when the first GLZ image is sent.
//!
//! Must not: compute with a guest's coordinates before they are clamped to the surface; do
//! work per band or per drawable that is not paid for by pixels sent; queue past `can_send`.
//!
//! Compression follows `Config::image_compression`: `off` sends BITMAP, `quic` QUIC, `lz`
//! LZ_RGB, `glz` GLZ_RGB against this client's dictionary (window from its `init`), `auto_lz` /
//! `auto_glz` QUIC for photo-like images and LZ / GLZ otherwise (see [`photo_like`]), `lz4` (or a
//! client's `preferred_compression` of LZ4) LZ4 to clients with the `LZ4_COMPRESSION` cap and
//! LZ_RGB to others. Images
//! smaller than the reference's minimum (`MIN_SIZE_TO_COMPRESS`, 54 bytes... in practice any
//! rectangle under 32 pixels) go uncompressed, as the reference does.

use spice_proto::caps;
use spice_proto::codec::{self, PixelFormat, Pixmap};
use spice_proto::display::ImageCompression as WireCompression;
use spice_proto::display::ResourceId;
use spice_proto::display::ResourceType;
use spice_proto::display::{
    BitmapData, BitmapFlags, BitmapFmt, BitmapPalette, Clip, Copy, DisplayBase, Draw, Head, Image,
    ImageData, ImageFlags, ImageScaleMode, MaskFlags, QMask, Ropd, SurfaceFlags, SurfaceFmt,
};
use spice_proto::messages::display::{InvalList, MonitorsConfig, SurfaceCreate};
use spice_proto::messages::{DisplayClient, DisplayServer, Message};
use spice_proto::types::{Point, Rect};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use crate::budget::Budgets;
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
/// Unsent drawables a client may have before it falls back to dirty regions.
pub const MAX_PENDING_DRAWS: usize = 128;
/// Palettes one client's palette cache is given (spice-gtk keeps them all; the reference
/// server caps its mirror similarly).
pub const MAX_CACHED_PALETTES: usize = 128;

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
    dirty: Dirty,
    /// Drawables taken from the display but not sent yet (QXL), with the area each changed
    /// (clamped to the surface) and the bytes it holds.
    pending: VecDeque<Pending>,
    /// The bytes of `pending`.
    pending_bytes: u64,
    /// A prepared draw message that found the queue full after the `inval_list` sent before
    /// it: sent first when there is room (every message is queued under the output cap).
    ready: Option<DisplayServer>,
    /// The primary surface generation this client was last given.
    primary_gen: Option<u64>,
    /// Whether this client has a primary surface (we sent `surface_create`).
    has_surface: bool,
    /// The client's pixmap cache as we filled it: id → pixels, and insertion order.
    pixmaps: BTreeMap<u64, u64>,
    pixmap_order: VecDeque<u64>,
    pixmap_used: u64,
    pixmap_budget: u64,
    /// Most entries in the client's pixmap cache (`Budgets::pixmap_cache_entries`).
    pixmap_entries: usize,
    palettes: BTreeSet<u64>,
    /// The GLZ window this client gets (its `init`, within the budget).
    glz_window: u32,
    /// The GLZ dictionary, made when the first GLZ image is encoded.
    glz: Option<codec::glz::Encoder>,
    /// Pixels given to the GLZ dictionary so far (for [`DisplayChannel::memory`]).
    glz_pixels: u64,
    next_image_id: u64,
    /// Images sent, by kind (for logs and tests).
    sent: [u64; 5],
    /// Drawables dropped because a newer opaque one covered them before they were sent.
    dropped: u64,
    /// Images sent as `FROM_CACHE`.
    cache_hits: u64,
    /// What [`DisplayChannel::memory`] last told the display.
    reported: u64,
}

impl DisplayChannel {
    pub(crate) fn new(
        core: ChannelCore,
        linked: &Linked,
        shared: &mut Shared,
        _now_ms: u64,
    ) -> Self {
        let c = &linked.mess.caps;
        shared.display.add_client();
        DisplayChannel {
            core,
            phase: Phase::AwaitInit,
            monitors_cap: c.has_channel(caps::display::MONITORS_CONFIG),
            lz4_cap: c.has_channel(caps::display::LZ4_COMPRESSION),
            preferred: None,
            seen_seq: 0,
            dirty: Dirty::default(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            ready: None,
            primary_gen: None,
            has_surface: false,
            pixmaps: BTreeMap::new(),
            pixmap_order: VecDeque::new(),
            pixmap_used: 0,
            pixmap_budget: 0,
            pixmap_entries: 0,
            palettes: BTreeSet::new(),
            glz_window: 0,
            glz: None,
            glz_pixels: 0,
            next_image_id: 1,
            sent: [0; 5],
            dropped: 0,
            cache_hits: 0,
            reported: 0,
        }
    }

    pub fn core(&self) -> &ChannelCore {
        &self.core
    }

    /// Images sent so far: bitmap, quic, lz, glz, other.
    pub fn images_sent(&self) -> [u64; 5] {
        self.sent
    }

    /// Drawables dropped unsent (covered by newer opaque ones), and images sent from the
    /// client's pixmap cache.
    pub fn draw_stats(&self) -> (u64, u64) {
        (self.dropped, self.cache_hits)
    }

    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        self.core.poll_timeout()
    }

    /// What this client holds now, by kind (bytes).
    pub fn memory(&self) -> DisplayMemory {
        DisplayMemory {
            queued: self.core.queued_bytes() as u64,
            pending: self.pending_bytes,
            glz: self.glz.as_ref().map_or(0, |_| {
                GLZ_TABLE_BYTES + 4 * self.glz_pixels.min(u64::from(self.glz_window))
            }),
        }
    }

    /// The connection is gone: give back what this client held.
    pub(crate) fn closed(&mut self, shared: &mut Shared) {
        self.pending.clear();
        self.pending_bytes = 0;
        self.glz = None;
        shared.display.client_memory(self.reported, 0);
        self.reported = 0;
        shared.display.remove_client();
    }

    fn add_dirty(&mut self, r: &Rect) {
        self.dirty.add(r);
    }

    fn handle(&mut self, m: DisplayClient, shared: &mut Shared) -> Result<(), ChannelError> {
        match m {
            DisplayClient::Init(init) => {
                if self.phase != Phase::AwaitInit {
                    return Ok(());
                }
                let asked = u32::try_from(init.glz_dictionary_window_size.max(0))
                    .unwrap_or(0)
                    .clamp(1 << 16, codec::glz::MAX_WINDOW_PIXELS);
                let limit = shared.display.budgets().glz_window_pixels;
                if asked > limit {
                    tracing::debug!(
                        asked,
                        limit,
                        "glz_window_pixels: the client's GLZ window is clamped"
                    );
                }
                self.glz_window = asked.min(limit).min(codec::glz::MAX_WINDOW_PIXELS);
                self.pixmap_budget = u64::try_from(init.pixmap_cache_size.max(0)).unwrap_or(0);
                self.pixmap_entries = shared.display.budgets().pixmap_cache_entries;
                self.core.send(&DisplayServer::InvalAllPalettes);
                self.phase = Phase::FirstScreen;
                self.new_primary(shared);
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
                WireCompression::Lz4 if self.lz4_cap => return Kind::Lz4,
                WireCompression::Lz | WireCompression::Lz4 => return Kind::Lz,
                WireCompression::Glz => return Kind::Glz,
                WireCompression::AutoLz => return auto(pix, Kind::Lz),
                WireCompression::AutoGlz => return auto(pix, Kind::Glz),
                _ => {}
            }
        }
        match setting {
            ImageCompression::Off => Kind::Bitmap,
            ImageCompression::Quic => Kind::Quic,
            // LZ4 only to a client that can decode it (the reference does the same).
            ImageCompression::Lz4 if self.lz4_cap => Kind::Lz4,
            ImageCompression::Lz | ImageCompression::Lz4 => Kind::Lz,
            ImageCompression::Glz => Kind::Glz,
            ImageCompression::AutoLz => auto(pix, Kind::Lz),
            ImageCompression::AutoGlz => auto(pix, Kind::Glz),
        }
    }

    /// Image ids of the images we make (dirty regions, re-encoded drawables): counted down
    /// from the top so they never meet a guest's QXL image ids.
    fn fresh_image_id(&mut self) -> u64 {
        let id = u64::MAX - self.next_image_id;
        self.next_image_id += 1;
        id
    }

    /// Compress a 32-bit (or RGBA) top-down pixmap as this client's settings say.
    /// `of_drawable`: the image is a drawable's; images made from the current pixels (the
    /// first screen, dirty regions) go LZ where GLZ is chosen, as in the reference (its GLZ
    /// dictionary holds drawables only), so a client that only ever gets those never has a
    /// dictionary.
    fn encode_pixmap(
        &mut self,
        setting: ImageCompression,
        pix: Pixmap,
        of_drawable: bool,
    ) -> ImageData {
        let kind = if pix.format() == PixelFormat::Rgba {
            // QUIC and GLZ could carry alpha too; LZ (RGBA) is what the reference uses.
            match self.choose(setting, &pix) {
                Kind::Bitmap => Kind::Bitmap,
                _ => Kind::Lz,
            }
        } else {
            match self.choose(setting, &pix) {
                Kind::Glz if !of_drawable => Kind::Lz,
                k => k,
            }
        };
        let encoded = match kind {
            Kind::Quic => codec::quic::encode(&pix)
                .ok()
                .map(|b| ImageData::Quic(b.into())),
            Kind::Lz4 => codec::lz4::encode(&pix, true)
                .ok()
                .map(|b| ImageData::Lz4(b.into())),
            Kind::Lz => codec::lz::encode(&pix, true)
                .ok()
                .map(|b| ImageData::LzRgb(b.into())),
            Kind::Glz => {
                if self.glz.is_none() {
                    self.glz = codec::glz::Encoder::new(self.glz_window).ok();
                }
                self.glz_pixels = self
                    .glz_pixels
                    .saturating_add(u64::from(pix.width()) * u64::from(pix.height()));
                self.glz
                    .as_mut()
                    .and_then(|g| g.encode(&pix, true).ok())
                    .map(|(_, b)| ImageData::GlzRgb(b.into()))
            }
            Kind::Bitmap => None,
        };
        match encoded {
            Some(d) => {
                self.sent[kind as usize] += 1;
                d
            }
            None => {
                self.sent[Kind::Bitmap as usize] += 1;
                let (w, h, stride) = (pix.width(), pix.height(), pix.stride() as u32);
                ImageData::Bitmap(BitmapData {
                    format: if pix.format() == PixelFormat::Rgba {
                        BitmapFmt::Rgba
                    } else {
                        BitmapFmt::Bit32
                    },
                    flags: BitmapFlags::TOP_DOWN,
                    x: w,
                    y: h,
                    stride,
                    palette: BitmapPalette::Inline(None),
                    data: pix.into_data().into(),
                })
            }
        }
    }

    /// Encode `r` of the current screen as one `draw_copy`.
    fn draw(&mut self, shared: &Shared, r: Rect) -> Option<DisplayServer> {
        let pix = shared.display.rect_pixmap(&r)?;
        let (w, h) = (pix.width(), pix.height());
        let id = self.fresh_image_id();
        let data = self.encode_pixmap(shared.display.compression(), pix, false);
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

    /// Send `surface_create` for the current primary surface (destroying the one this client
    /// had) and queue the whole screen.
    fn new_primary(&mut self, shared: &Shared) {
        self.primary_gen = Some(shared.display.primary_generation());
        self.pending.clear();
        self.pending_bytes = 0;
        self.drop_ready();
        self.seen_seq = shared.display.next_seq();
        if self.has_surface {
            self.core.send(&DisplayServer::SurfaceDestroy(0));
            self.has_surface = false;
        }
        let Some((w, h)) = shared.display.size() else {
            self.dirty.reset(0, 0);
            return;
        };
        self.dirty.reset(w, h);
        self.core.send(&DisplayServer::SurfaceCreate(SurfaceCreate {
            surface_id: 0,
            width: w,
            height: h,
            format: SurfaceFmt::Xrgb32,
            flags: SurfaceFlags::PRIMARY,
        }));
        self.has_surface = true;
        self.dirty.add_all();
    }

    /// Queue a drawable that changed `rect` (clamped to the surface) and holds `bytes`,
    /// dropping unsent ones it covers; fall back to dirty regions when too many, or too many
    /// bytes, are waiting.
    fn push_draw(&mut self, d: Rc<DisplayServer>, rect: Rect, bytes: u64, budgets: &Budgets) {
        let over_bytes = self.pending_bytes.saturating_add(bytes) > budgets.display_pending_bytes;
        if over_bytes {
            tracing::debug!(
                pending = self.pending_bytes,
                bytes,
                limit = budgets.display_pending_bytes,
                "display_pending_bytes: the client is behind; its unsent drawables become regions"
            );
        }
        if !self.dirty.is_empty() || self.pending.len() >= MAX_PENDING_DRAWS || over_bytes {
            // Behind: everything unsent becomes regions of the current pixels.
            for p in std::mem::take(&mut self.pending) {
                self.dirty.add(&p.rect);
            }
            self.pending_bytes = 0;
            self.dirty.add(&rect);
            return;
        }
        if let Some(nb) = opaque_area(&d) {
            // Walk back over unsent drawables that do not read the surface: those the new one
            // covers can never be seen.
            // (At most MAX_PENDING_DRAWS are pending, so this walk is bounded.)
            let mut i = self.pending.len();
            while i > 0 {
                i -= 1;
                let o = &self.pending[i].draw;
                let covered = crate::display::qxl::bbox(o).is_some_and(|b| contains(&nb, &b));
                let reads = opaque_area(o).is_none();
                if covered {
                    if let Some(p) = self.pending.remove(i) {
                        self.pending_bytes -= p.bytes;
                    }
                    self.dropped += 1;
                } else if reads {
                    break;
                }
            }
        }
        self.pending_bytes += bytes;
        self.pending.push_back(Pending {
            draw: d,
            rect,
            bytes,
        });
    }

    /// Forget the prepared message that was not sent (its surface is gone): what it would
    /// have put in the client's caches is taken out of our mirror of them.
    fn drop_ready(&mut self) {
        let Some(mut m) = self.ready.take() else {
            return;
        };
        let (pixmaps, palettes) = (&mut self.pixmaps, &mut self.palettes);
        let mut used = 0;
        for_each_image(&mut m, &mut |img, _| {
            if img.flags.contains(ImageFlags::CACHE_ME) {
                used += pixmaps.remove(&img.id).unwrap_or(0);
            }
            if let ImageData::Bitmap(b) = &img.data {
                if let (true, BitmapPalette::Inline(Some(p))) =
                    (b.flags.contains(BitmapFlags::PAL_CACHE_ME), &b.palette)
                {
                    palettes.remove(&p.unique);
                }
            }
        });
        self.pixmap_used -= used;
    }

    /// A drawable with its images made ready for this client: bitmaps compressed, cached
    /// images and palettes referred to by id.
    fn prepare(&mut self, setting: ImageCompression, d: &DisplayServer) -> Vec<DisplayServer> {
        let mut m = d.clone();
        let mut before = Vec::new();
        for_each_image(&mut m, &mut |img, is_mask| {
            if let Some(inval) = self.prepare_image(setting, img, is_mask) {
                before.push(inval);
            }
        });
        before.push(m);
        before
    }

    /// Prepare one image; returns an `inval_list` to send first if the cache evicted.
    fn prepare_image(
        &mut self,
        setting: ImageCompression,
        img: &mut Image,
        is_mask: bool,
    ) -> Option<DisplayServer> {
        let cacheable = img.flags.contains(ImageFlags::CACHE_ME);
        img.flags = img.flags.without(ImageFlags::CACHE_ME);
        let pixels = img.width as u64 * img.height as u64;
        if cacheable && self.pixmaps.contains_key(&img.id) {
            img.data = ImageData::FromCache;
            self.cache_hits += 1;
            return None;
        }
        let mut inval = Vec::new();
        if cacheable && pixels <= self.pixmap_budget / 2 && self.pixmap_entries > 0 {
            if self.pixmaps.len() >= self.pixmap_entries {
                tracing::debug!(
                    limit = self.pixmap_entries,
                    "pixmap_cache_entries: the oldest cached image is evicted"
                );
            }
            while self.pixmap_used + pixels > self.pixmap_budget
                || self.pixmaps.len() >= self.pixmap_entries
            {
                let Some(old) = self.pixmap_order.pop_front() else {
                    break;
                };
                if let Some(n) = self.pixmaps.remove(&old) {
                    self.pixmap_used -= n;
                    inval.push(ResourceId {
                        resource_type: ResourceType::Pixmap,
                        id: old,
                    });
                }
            }
            self.pixmaps.insert(img.id, pixels);
            self.pixmap_order.push_back(img.id);
            self.pixmap_used += pixels;
            img.flags = img.flags.with(ImageFlags::CACHE_ME, true);
        }
        if let ImageData::Bitmap(b) = &mut img.data {
            let fmt = PixelFormat::from_spice_bitmap_fmt(b.format.to_raw());
            match fmt {
                Some(f @ (PixelFormat::Rgb32 | PixelFormat::Rgba)) if !is_mask => {
                    let top_down = b.flags.contains(BitmapFlags::TOP_DOWN);
                    if let Ok(p) =
                        Pixmap::from_data(b.x, b.y, f, b.stride as usize, b.data.to_vec())
                    {
                        let p = if top_down { p } else { p.flipped_vertically() };
                        img.data = self.encode_pixmap(setting, p, true);
                    }
                }
                _ => {
                    // Palette and other bitmaps go as they are, palettes through the cache.
                    if let BitmapPalette::Inline(Some(p)) = &b.palette {
                        if self.palettes.contains(&p.unique) {
                            b.palette = BitmapPalette::FromCache(p.unique);
                        } else if self.palettes.len() < MAX_CACHED_PALETTES && p.unique != 0 {
                            self.palettes.insert(p.unique);
                            b.flags = b.flags.with(BitmapFlags::PAL_CACHE_ME, true);
                        }
                    }
                    self.sent[Kind::Bitmap as usize] += 1;
                }
            }
        }
        (!inval.is_empty()).then_some(DisplayServer::InvalList(InvalList { resources: inval }))
    }
}

/// The area a drawable paints without reading what was there (an opaque drawable), if it is
/// one: fills, copies and opaques with the plain PUT operation, no mask and no clip, and
/// blackness/whiteness without a mask or clip.
fn opaque_area(d: &DisplayServer) -> Option<Rect> {
    use DisplayServer as D;
    let plain = |base: &DisplayBase, mask: &QMask| base.clip == Clip::None && mask.bitmap.is_none();
    let opaque_image = |i: &Option<Box<Image>>| {
        i.as_deref().is_some_and(|i| match &i.data {
            ImageData::Bitmap(b) => b.format != BitmapFmt::Rgba,
            ImageData::Surface(_) => false,
            _ => true,
        })
    };
    match d {
        D::DrawFill(f)
            if plain(&f.base, &f.data.mask)
                && f.data.rop_descriptor == Ropd::OP_PUT
                && !matches!(f.data.brush, spice_proto::display::Brush::None) =>
        {
            Some(f.base.bbox.clone())
        }
        D::DrawCopy(c)
            if plain(&c.base, &c.data.mask)
                && c.data.rop_descriptor == Ropd::OP_PUT
                && opaque_image(&c.data.src_bitmap) =>
        {
            Some(c.base.bbox.clone())
        }
        D::DrawBlackness(b) | D::DrawWhiteness(b) if plain(&b.base, &b.data.mask) => {
            Some(b.base.bbox.clone())
        }
        _ => None,
    }
}

/// Call `f` on every image a draw message carries (`true` for masks).
fn for_each_image(m: &mut DisplayServer, f: &mut dyn FnMut(&mut Image, bool)) {
    use spice_proto::display::Brush;
    use DisplayServer as D;
    let brush = |b: &mut Brush, f: &mut dyn FnMut(&mut Image, bool)| {
        if let Brush::Pattern(p) = b {
            f(&mut p.pat, false)
        }
    };
    let mask = |q: &mut QMask, f: &mut dyn FnMut(&mut Image, bool)| {
        if let Some(i) = q.bitmap.as_deref_mut() {
            f(i, true)
        }
    };
    let src = |i: &mut Option<Box<Image>>, f: &mut dyn FnMut(&mut Image, bool)| {
        if let Some(i) = i.as_deref_mut() {
            f(i, false)
        }
    };
    match m {
        D::DrawFill(d) => {
            brush(&mut d.data.brush, f);
            mask(&mut d.data.mask, f);
        }
        D::DrawOpaque(d) => {
            src(&mut d.data.src_bitmap, f);
            brush(&mut d.data.brush, f);
            mask(&mut d.data.mask, f);
        }
        D::DrawCopy(d) | D::DrawBlend(d) => {
            src(&mut d.data.src_bitmap, f);
            mask(&mut d.data.mask, f);
        }
        D::DrawBlackness(d) | D::DrawWhiteness(d) | D::DrawInvers(d) => mask(&mut d.data.mask, f),
        D::DrawRop3(d) => {
            src(&mut d.data.src_bitmap, f);
            brush(&mut d.data.brush, f);
            mask(&mut d.data.mask, f);
        }
        D::DrawStroke(d) => brush(&mut d.data.brush, f),
        D::DrawText(d) => {
            brush(&mut d.data.fore_brush, f);
            brush(&mut d.data.back_brush, f);
        }
        D::DrawTransparent(d) => src(&mut d.data.src_bitmap, f),
        D::DrawAlphaBlend(d) => src(&mut d.data.src_bitmap, f),
        D::DrawComposite(d) => {
            src(&mut d.data.src_bitmap, f);
            if let Some(m) = d.data.mask_bitmap.as_mut() {
                src(m, f);
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bitmap = 0,
    Quic = 1,
    Lz = 2,
    Glz = 3,
    Lz4 = 4,
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

/// A drawable taken from the display's log and not sent to this client yet.
struct Pending {
    draw: Rc<DisplayServer>,
    /// The area it changed, clamped to the surface.
    rect: Rect,
    /// [`crate::display::qxl::drawable_bytes`] of `draw`.
    bytes: u64,
}

/// What one display client holds, in bytes (see [`DisplayChannel::memory`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DisplayMemory {
    /// Encoded messages queued for the connection.
    pub queued: u64,
    /// Drawables taken and not sent (shared with the display's log and other clients while
    /// the log still holds them).
    pub pending: u64,
    /// The GLZ dictionary: its hash table and the pixels of its window (0 until the first
    /// GLZ image).
    pub glz: u64,
}

impl DisplayMemory {
    pub fn total(&self) -> u64 {
        self.queued + self.pending + self.glz
    }
}

/// The GLZ encoder's hash table: 2^20 entries of 8 bytes, allocated with the dictionary.
pub const GLZ_TABLE_BYTES: u64 = 8 << 20;

/// The part of the primary surface a client must be sent again from the current pixels.
///
/// Every rectangle is clamped to the surface as it enters ([`Dirty::add`] is the only way in),
/// so the band arithmetic never sees a guest's coordinates; at most [`MAX_DIRTY`] rectangles
/// are kept (more are merged into their bounding box, inside the surface too).
#[derive(Debug, Default)]
struct Dirty {
    /// The surface's width and height (0 when there is none: nothing can be added).
    width: i32,
    height: i32,
    rects: VecDeque<Rect>,
}

impl Dirty {
    /// Empty, for a surface of `w`×`h`.
    fn reset(&mut self, w: u32, h: u32) {
        self.width = i32::try_from(w).unwrap_or(i32::MAX);
        self.height = i32::try_from(h).unwrap_or(i32::MAX);
        self.rects.clear();
    }

    fn is_empty(&self) -> bool {
        self.rects.is_empty()
    }

    /// The whole surface.
    fn add_all(&mut self) {
        self.rects.clear();
        self.add(&Rect {
            left: 0,
            top: 0,
            right: self.width,
            bottom: self.height,
        });
    }

    /// Add `r`, clamped to the surface: what lies outside is dropped, an empty result too.
    fn add(&mut self, r: &Rect) {
        let r = Rect {
            left: r.left.clamp(0, self.width),
            top: r.top.clamp(0, self.height),
            right: r.right.clamp(0, self.width),
            bottom: r.bottom.clamp(0, self.height),
        };
        if r.is_empty() {
            return;
        }
        // Drop what the new rectangle covers; nothing to do if it is covered.
        if self.rects.iter().any(|d| contains(d, &r)) {
            return;
        }
        self.rects.retain(|d| !contains(&r, d));
        self.rects.push_back(r);
        if self.rects.len() > MAX_DIRTY {
            let b = self.rects.iter().fold(None::<Rect>, |a, d| {
                Some(a.map_or_else(|| d.clone(), |a| union(&a, d)))
            });
            self.rects.clear();
            self.rects.extend(b);
        }
    }

    /// Take the next band to send: the top rows of the oldest rectangle, at most
    /// [`MAX_PIXELS_PER_DRAW`] pixels (the rest stays at the front). O(1).
    fn next_band(&mut self) -> Option<Rect> {
        let r = self.rects.front_mut()?;
        // Clamped and non-empty: width and height are positive and fit in i32.
        let w = u64::try_from(i64::from(r.right) - i64::from(r.left))
            .unwrap_or(1)
            .max(1);
        let h = u64::try_from(i64::from(r.bottom) - i64::from(r.top)).unwrap_or(0);
        let rows = (MAX_PIXELS_PER_DRAW / w).max(1);
        if h <= rows {
            return self.rects.pop_front();
        }
        // rows < h, so top + rows < bottom: no overflow.
        let split = i32::try_from(i64::from(r.top) + rows as i64).unwrap_or(r.bottom);
        let band = Rect {
            top: r.top,
            bottom: split,
            left: r.left,
            right: r.right,
        };
        r.top = split;
        Some(band)
    }
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
        if self.primary_gen != Some(shared.display.primary_generation()) {
            self.new_primary(shared);
        }
        // Take the changes this client has not seen.
        let next = shared.display.next_seq();
        if self.seen_seq < next {
            match shared.display.updates_since(self.seen_seq) {
                Some(us) => {
                    let budgets = shared.display.budgets().clone();
                    for u in us {
                        match u.draw {
                            Some(d) if self.phase == Phase::Streaming => {
                                self.push_draw(d, u.rect, u.bytes, &budgets)
                            }
                            _ => self.add_dirty(&u.rect),
                        }
                    }
                }
                None => {
                    self.pending.clear();
                    self.pending_bytes = 0;
                    self.dirty.add_all();
                }
            }
            self.seen_seq = next;
        }
        // Drawables first (they are older than any dirty region: a region is only added once
        // no drawable is pending, or together with all of them).
        let setting = shared.display.compression();
        while self.core.can_send() {
            if let Some(m) = self.ready.take() {
                self.core.send(&m);
                continue;
            }
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes -= p.bytes;
            let mut msgs = self.prepare(setting, &p.draw);
            let draw = msgs.pop();
            // The `inval_list`s first (small), then the draw if there is still room.
            for m in msgs {
                self.core.send(&m);
            }
            match draw {
                Some(m) if self.core.can_send() => self.core.send(&m),
                m => self.ready = m,
            }
        }
        while self.core.can_send() && self.ready.is_none() {
            let Some(band) = self.dirty.next_band() else {
                break;
            };
            if let Some(m) = self.draw(shared, band) {
                self.core.send(&m);
            }
        }
        if self.phase == Phase::FirstScreen && self.dirty.is_empty() {
            if let (true, Some(heads)) = (self.monitors_cap, shared.display.monitors()) {
                self.core
                    .send(&DisplayServer::MonitorsConfig(MonitorsConfig {
                        max_allowed: heads.len().max(1) as u16,
                        heads: heads.to_vec(),
                    }));
            } else if let (true, Some((w, h))) = (self.monitors_cap, shared.display.size()) {
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
        let now = self.memory().total();
        shared.display.client_memory(self.reported, now);
        self.reported = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirty(w: u32, h: u32) -> Dirty {
        let mut d = Dirty::default();
        d.reset(w, h);
        d
    }

    #[test]
    fn dirty_rectangles_are_clamped_to_the_surface_on_the_way_in() {
        let mut d = dirty(64, 48);
        d.add(&Rect {
            left: 0,
            top: 0,
            right: 1,
            bottom: i32::MAX,
        });
        d.add(&Rect {
            left: i32::MIN,
            top: i32::MIN,
            right: -5,
            bottom: i32::MAX,
        });
        d.add(&Rect {
            left: 10,
            top: 60,
            right: 20,
            bottom: 70,
        });
        assert_eq!(
            Vec::from(d.rects.clone()),
            vec![Rect::from_xywh(0, 0, 1, 48)]
        );
        // Merged past MAX_DIRTY: the bounding boxes are still inside.
        for i in 1..64 {
            d.add(&Rect {
                left: i,
                top: i32::MIN + i,
                right: i + 1,
                bottom: i32::MAX - i,
            });
        }
        assert!(d.rects.len() <= MAX_DIRTY);
        let inside = Rect::from_xywh(0, 0, 64, 48);
        assert!(d.rects.iter().all(|r| contains(&inside, r)));
        assert_eq!(
            d.rects.iter().fold(d.rects[0].clone(), |a, r| union(&a, r)),
            inside
        );
        // Nothing can enter without a surface.
        let mut none = dirty(0, 0);
        none.add(&Rect::from_xywh(0, 0, 10, 10));
        assert!(none.is_empty());
    }

    #[test]
    fn bands_cost_one_step_each_and_cover_the_rectangle_once() {
        // A full-width rectangle of a tall surface: bands of MAX_PIXELS_PER_DRAW pixels, not
        // one per row.
        let (w, h) = (4096u32, 4096u32);
        let mut d = dirty(w, h);
        d.add_all();
        let mut rows = 0i64;
        let mut n = 0;
        while let Some(b) = d.next_band() {
            assert_eq!((b.left, b.right), (0, w as i32));
            assert_eq!(b.top as i64, rows);
            assert!(b.width() as u64 * b.height() as u64 <= MAX_PIXELS_PER_DRAW);
            rows = b.bottom as i64;
            n += 1;
        }
        assert_eq!(rows, h as i64);
        assert_eq!(n, (w as u64 * h as u64).div_ceil(MAX_PIXELS_PER_DRAW));
        // A one-pixel-wide column of the largest height: bands of MAX_PIXELS_PER_DRAW rows,
        // the last one ending exactly at i32::MAX (no overflow on the way).
        let mut d = dirty(1, i32::MAX as u32);
        d.add_all();
        let mut n = 0u64;
        let mut last = None;
        while let Some(b) = d.next_band() {
            n += 1;
            last = Some(b);
        }
        assert_eq!(n, (i32::MAX as u64).div_ceil(MAX_PIXELS_PER_DRAW));
        assert_eq!(last.map(|b| b.bottom), Some(i32::MAX));
    }
}
