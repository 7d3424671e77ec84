//! The QXL display device's side of the display: memory slots, the primary and off-screen
//! surfaces, and the command and cursor rings, serviced on the server's clock.
//!
//! Each command is parsed (copied out of guest memory, see [`crate::qxl`]), then released at
//! once: the server keeps no pointer into guest memory. Drawables are applied to the server's
//! own copy of every surface (spice-proto's reference canvas, as libspice-server keeps a
//! software canvas per surface); drawables on the primary surface also go to the update log,
//! so clients that keep up receive them as draw messages, and clients that fall behind get the
//! changed regions as images of the current primary surface.
//!
//! Off-screen surfaces stay on the server: a drawable on the primary that reads one (a
//! `SURFACE` image) is sent with that area of the surface as a bitmap, taken when the drawable
//! was executed.
//!
//! Budgets ([`Budgets`]): commands per tick on each ring, bytes copied out of guest memory per
//! command and per tick (inlined surface areas count too); once a tick's bytes are spent the
//! remaining commands wait in their ring. With no display client attached drawables are
//! executed and dropped, not kept.
//!
//! Must not: panic on any guest input; keep a pointer into guest memory; do work that grows
//! with a count the guest chooses rather than with the bytes it pays for.

use std::rc::Rc;

use spice_proto::canvas::Canvas;
use spice_proto::display::{
    BitmapData, BitmapFlags, BitmapFmt, BitmapPalette, Image, ImageData, ImageFlags, SurfaceFlags,
    SurfaceFmt,
};
use spice_proto::messages::display::SurfaceCreate;
use spice_proto::messages::DisplayServer;
use spice_proto::qxl::{PrimarySurface, QxlHead, QxlMonitorsConfig};
use spice_proto::types::{Point16, Rect};

use crate::budget::Budgets;
use crate::qxl::{self, Budget, Command, CursorCommand, CursorShape, MemSlots, Reader};
use crate::vdi::{QxlDevice, QxlEvent};

/// What servicing the device produced for the shared display state.
#[derive(Debug, Default)]
pub struct Output {
    /// Drawables executed on the primary surface, in order: the area each changed (inside
    /// the surface) and the drawable, unless there is no client to keep it for.
    pub draws: Vec<(Rect, Option<Rc<DisplayServer>>)>,
    /// The primary surface was created, destroyed or replaced.
    pub primary_changed: bool,
    pub cursor: Vec<CursorCommand>,
    pub monitors: Option<Vec<QxlHead>>,
}

/// Counters, for logs, tests and the simulator's invariants.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QxlStats {
    pub commands: u64,
    pub cursor_commands: u64,
    pub released: u64,
    /// Commands refused (bad guest memory or a draw the canvas could not do).
    pub rejected: u64,
    pub draws: u64,
    /// Ticks that stopped taking commands because `qxl_tick_bytes` was spent.
    pub tick_bytes_hit: u64,
}

/// The QXL device and the server's copy of its surfaces.
pub struct QxlDisplay {
    device: Box<dyn QxlDevice>,
    slots: MemSlots,
    canvas: Canvas,
    canvas_limits: spice_proto::canvas::CanvasLimits,
    primary: Option<PrimarySurface>,
    n_surfaces: u32,
    /// The memory slot groups and slots per group the device declared (`num_memslots_groups`,
    /// `num_memslots`): a slot added outside them is refused (the reference's off-by-one
    /// class: an id equal to the count must be refused too).
    memslot_groups: u32,
    memslots: u32,
    pub stats: QxlStats,
    /// The last few rejections, for logs.
    pub last_errors: Vec<String>,
    /// Test-only: do not release the command with this number (1-based).
    pub(crate) drop_release: Option<u64>,
    /// Bytes copied out of guest memory (and inlined from surfaces) this tick.
    tick_spent: u64,
}

impl QxlDisplay {
    /// The device, with the server's canvas held to `canvas` ([`crate::Budgets::canvas`]).
    pub fn new(
        device: Box<dyn QxlDevice>,
        canvas: spice_proto::canvas::CanvasLimits,
    ) -> QxlDisplay {
        let info = device.init_info();
        QxlDisplay {
            slots: MemSlots::new(info.memslot_id_bits, info.memslot_gen_bits),
            device,
            canvas: Canvas::with_limits(canvas),
            canvas_limits: canvas,
            primary: None,
            n_surfaces: info.n_surfaces.min(1024),
            memslot_groups: info.num_memslots_groups,
            memslots: info.num_memslots,
            stats: QxlStats::default(),
            last_errors: Vec::new(),
            drop_release: None,
            tick_spent: 0,
        }
    }

    pub fn size(&self) -> Option<(u32, u32)> {
        let p = self.canvas.primary()?;
        Some((p.raster.width, p.raster.height))
    }

    /// The primary surface's pixels (`0xAARRGGBB`, rows top first).
    pub fn primary(&self) -> Option<&spice_proto::canvas::Raster> {
        self.canvas.primary().map(|s| &s.raster)
    }

    pub fn client_monitors_config(&mut self, monitors: &[crate::vdi::ClientMonitor]) {
        if !self.device.client_monitors_config(monitors) {
            tracing::debug!("qxl: the device does not take client monitors configs");
        }
    }

    pub fn next_wakeup(&self) -> Option<u64> {
        self.device.next_wakeup()
    }

    fn reject(&mut self, what: String) {
        self.stats.rejected += 1;
        tracing::warn!("qxl: {what}");
        if self.last_errors.len() >= 8 {
            self.last_errors.remove(0);
        }
        self.last_errors.push(what);
    }

    /// Whether this tick may take another command: `qxl_tick_bytes` not spent yet.
    fn tick_open(&mut self, b: &Budgets, ring: &str) -> bool {
        if self.tick_spent < b.qxl_tick_bytes {
            return true;
        }
        self.stats.tick_bytes_hit += 1;
        tracing::debug!(
            spent = self.tick_spent,
            limit = b.qxl_tick_bytes,
            "qxl_tick_bytes: this tick takes no more commands from the {ring} ring"
        );
        false
    }

    /// Run the device to `now_ms` and service its events and rings, within `budgets`.
    /// `keep_draws`: a display client is attached (else drawables are executed, not kept).
    pub fn service(&mut self, now_ms: u64, budgets: &Budgets, keep_draws: bool) -> Output {
        let mut out = Output::default();
        self.tick_spent = 0;
        for ev in self.device.run(now_ms) {
            self.event(ev, &mut out);
        }
        for _ in 0..budgets.qxl_commands_per_tick {
            if !self.tick_open(budgets, "command") {
                break;
            }
            let Some(ext) = self.device.get_command() else {
                break;
            };
            self.stats.commands += 1;
            let parsed = self.parse(&ext, budgets.qxl_command_bytes);
            match parsed {
                Ok(cmd) => self.execute(cmd, &mut out, keep_draws),
                Err(e) => self.reject(format!("command at {:#x}: {e}", ext.cmd.data)),
            }
        }
        for _ in 0..budgets.qxl_cursor_commands_per_tick {
            if !self.tick_open(budgets, "cursor") {
                break;
            }
            let Some(ext) = self.device.get_cursor_command() else {
                break;
            };
            self.stats.cursor_commands += 1;
            match self.parse(&ext, budgets.qxl_command_bytes) {
                Ok(Command::Cursor { cmd, .. }) => out.cursor.push(cmd),
                Ok(_) => self.reject("a non-cursor command on the cursor ring".into()),
                Err(e) => self.reject(format!("cursor command at {:#x}: {e}", ext.cmd.data)),
            }
        }
        out
    }

    /// Parse one command and give it back to the guest (release exactly once, whether or not
    /// it parsed, as long as its release id could be read).
    /// At most `command_bytes` are copied out; they count against the tick.
    fn parse(
        &mut self,
        ext: &crate::vdi::QxlCommandExt,
        command_bytes: u64,
    ) -> Result<Command, qxl::QxlError> {
        let mut r = Reader {
            slots: &self.slots,
            mem: self.device.memory(),
            group: ext.group_id,
            budget: Budget {
                bytes: command_bytes,
            },
        };
        let release = if ext.cmd.data == 0 {
            Err(qxl::QxlError::Null("command"))
        } else {
            qxl::release_id(&mut r, ext.cmd.data)
        };
        let parsed = qxl::parse(&mut r, &ext.cmd, ext.flags);
        self.tick_spent = self
            .tick_spent
            .saturating_add(command_bytes - r.budget.bytes);
        match release {
            Ok(_)
                if self.drop_release == Some(self.stats.commands + self.stats.cursor_commands) =>
            {
                tracing::warn!("qxl: breakage: not releasing this command");
            }
            Ok(id) => {
                self.device.release(id, ext.group_id);
                self.stats.released += 1;
            }
            Err(e) => {
                self.reject(format!("cannot read the release id: {e}"));
            }
        }
        parsed
    }

    fn event(&mut self, ev: QxlEvent, out: &mut Output) {
        match ev {
            QxlEvent::AddMemSlot(s) => {
                if s.group_id >= self.memslot_groups || s.slot_id >= self.memslots {
                    self.reject(format!(
                        "memslot {}:{} outside the device's {} groups of {} slots",
                        s.group_id, s.slot_id, self.memslot_groups, self.memslots
                    ));
                } else if s.start > s.end {
                    self.reject(format!(
                        "memslot {}:{} ends before it starts",
                        s.group_id, s.slot_id
                    ));
                } else {
                    self.slots.add(s);
                }
            }
            QxlEvent::DelMemSlot { group_id, slot_id } => self.slots.remove(group_id, slot_id),
            QxlEvent::CreatePrimary(p) => {
                // Only 32-bit primaries: the clients get 32_xRGB surfaces.
                if p.format != 32 && p.format != 96 {
                    self.reject(format!("primary surface format {} not supported", p.format));
                    return;
                }
                let c = SurfaceCreate {
                    surface_id: 0,
                    width: p.width,
                    height: p.height,
                    format: SurfaceFmt::Xrgb32,
                    flags: SurfaceFlags::PRIMARY,
                };
                match self.canvas.apply(&DisplayServer::SurfaceCreate(c)) {
                    Ok(()) => {
                        self.primary = Some(p);
                        out.primary_changed = true;
                    }
                    Err(e) => self.reject(format!("primary surface: {e}")),
                }
            }
            QxlEvent::DestroyPrimary => {
                let _ = self.canvas.apply(&DisplayServer::SurfaceDestroy(0));
                self.primary = None;
                out.primary_changed = true;
            }
            QxlEvent::MonitorsConfig { addr, group_id } => {
                let mut r = Reader {
                    slots: &self.slots,
                    mem: self.device.memory(),
                    group: group_id,
                    budget: Budget { bytes: 1 << 16 },
                };
                let parsed = r
                    .read(addr, QxlMonitorsConfig::SIZE, QxlMonitorsConfig::read)
                    .and_then(|h| {
                        let n = (h.count as u64).min(64);
                        let at = addr
                            .checked_add(QxlMonitorsConfig::SIZE as u64)
                            .ok_or(qxl::QxlError::Inconsistent("monitors config address"))?;
                        let b = r.bytes(at, n * QxlHead::SIZE as u64)?;
                        Ok(b.chunks_exact(QxlHead::SIZE)
                            .filter_map(QxlHead::read)
                            .collect::<Vec<_>>())
                    });
                match parsed {
                    Ok(heads) => out.monitors = Some(heads),
                    Err(e) => self.reject(format!("monitors config: {e}")),
                }
            }
            QxlEvent::Reset => {
                self.slots.clear();
                self.canvas = Canvas::with_limits(self.canvas_limits);
                self.primary = None;
                out.primary_changed = true;
            }
        }
    }

    fn execute(&mut self, cmd: Command, out: &mut Output, keep_draws: bool) {
        match cmd {
            Command::Draw {
                surface_id, msg, ..
            } => {
                if surface_id >= self.n_surfaces.max(1) {
                    self.reject(format!("drawable on surface {surface_id} out of range"));
                    return;
                }
                let msg = if surface_id == 0 && keep_draws {
                    let (msg, inlined) = self.inline_surfaces(msg);
                    self.tick_spent = self.tick_spent.saturating_add(inlined);
                    msg
                } else {
                    msg
                };
                if let Err(e) = self.canvas.apply(&msg) {
                    self.reject(format!(
                        "{} on surface {surface_id}: {e}",
                        spice_proto::messages::Message::name(&msg)
                    ));
                    return;
                }
                self.stats.draws += 1;
                if surface_id == 0 {
                    if let Some(r) = bbox(&msg).and_then(|b| self.on_screen(&b)) {
                        out.draws.push((r, keep_draws.then(|| Rc::new(msg))));
                    }
                }
            }
            Command::SurfaceCreate {
                surface_id,
                width,
                height,
                format,
                ..
            } => {
                if surface_id == 0 || surface_id >= self.n_surfaces {
                    self.reject(format!("surface create {surface_id} out of range"));
                    return;
                }
                let format = match format {
                    96 => SurfaceFmt::Argb32,
                    8 => SurfaceFmt::A8,
                    _ => SurfaceFmt::Xrgb32,
                };
                let c = SurfaceCreate {
                    surface_id,
                    width,
                    height,
                    format,
                    flags: SurfaceFlags::EMPTY,
                };
                if let Err(e) = self.canvas.apply(&DisplayServer::SurfaceCreate(c)) {
                    self.reject(format!("surface {surface_id}: {e}"));
                }
            }
            Command::SurfaceDestroy { surface_id, .. } => {
                if surface_id != 0 {
                    let _ = self
                        .canvas
                        .apply(&DisplayServer::SurfaceDestroy(surface_id));
                }
            }
            Command::Update { .. } => {}
            Command::Message { text, .. } => tracing::debug!("qxl guest: {text}"),
            Command::Cursor { cmd, .. } => out.cursor.push(cmd),
        }
    }

    fn on_screen(&self, r: &Rect) -> Option<Rect> {
        let (w, h) = self.size()?;
        let c = Rect {
            left: r.left.clamp(0, w as i32),
            top: r.top.clamp(0, h as i32),
            right: r.right.clamp(0, w as i32),
            bottom: r.bottom.clamp(0, h as i32),
        };
        (!c.is_empty()).then_some(c)
    }

    /// Replace every `SURFACE` image of a drawable by the area of that surface it reads, as a
    /// bitmap of the surface's current pixels; also returns the bytes copied.
    fn inline_surfaces(&self, mut msg: DisplayServer) -> (DisplayServer, u64) {
        let canvas = &self.canvas;
        let mut copied = 0u64;
        let mut fix = |img: &mut Option<Box<Image>>, area: &mut Rect| {
            let Some(i) = img.as_deref_mut() else { return };
            let ImageData::Surface(id) = i.data else {
                return;
            };
            let Some(s) = canvas.surface(id) else { return };
            let r = &s.raster;
            let (x, y) = (area.left.max(0) as i64, area.top.max(0) as i64);
            let w = (area.right as i64).min(r.width as i64) - x;
            let h = (area.bottom as i64).min(r.height as i64) - y;
            if w <= 0 || h <= 0 {
                return;
            }
            let sub = r.sub(x, y, w as u32, h as u32);
            let data: Vec<u8> = sub.px.iter().flat_map(|p| p.to_le_bytes()).collect();
            copied = copied.saturating_add(data.len() as u64);
            *i = Image {
                id: 0,
                flags: ImageFlags::EMPTY,
                width: w as u32,
                height: h as u32,
                data: ImageData::Bitmap(BitmapData {
                    format: if r.alpha {
                        BitmapFmt::Rgba
                    } else {
                        BitmapFmt::Bit32
                    },
                    flags: BitmapFlags::TOP_DOWN,
                    x: w as u32,
                    y: h as u32,
                    stride: w as u32 * 4,
                    palette: BitmapPalette::Inline(None),
                    data: data.into(),
                }),
            };
            *area = Rect {
                left: area.left - x as i32,
                top: area.top - y as i32,
                right: area.right - x as i32,
                bottom: area.bottom - y as i32,
            };
        };
        match &mut msg {
            DisplayServer::DrawCopy(d) | DisplayServer::DrawBlend(d) => {
                fix(&mut d.data.src_bitmap, &mut d.data.src_area)
            }
            DisplayServer::DrawOpaque(d) => fix(&mut d.data.src_bitmap, &mut d.data.src_area),
            DisplayServer::DrawTransparent(d) => fix(&mut d.data.src_bitmap, &mut d.data.src_area),
            DisplayServer::DrawAlphaBlend(d) => fix(&mut d.data.src_bitmap, &mut d.data.src_area),
            DisplayServer::DrawRop3(d) => fix(&mut d.data.src_bitmap, &mut d.data.src_area),
            _ => {}
        }
        (msg, copied)
    }
}

/// The bounding box of a draw message.
pub fn bbox(m: &DisplayServer) -> Option<Rect> {
    use DisplayServer as D;
    Some(
        match m {
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
            _ => return None,
        }
        .bbox
        .clone(),
    )
}

/// Bytes a drawable holds: every image (source, mask, brush pattern; pixels, palettes,
/// compressed streams), glyph, clip rectangle, path point and line style entry, plus a fixed
/// allowance per message, image, glyph and path segment for the structures around them. What
/// the update log and the display channels count against their byte budgets.
pub fn drawable_bytes(m: &DisplayServer) -> u64 {
    use spice_proto::display::{Brush, Clip, Glyphs, LzPltPalette, QMask};
    use DisplayServer as D;
    /// Allowance for a message, an image or a glyph beyond its payload.
    const OVERHEAD: u64 = 64;
    fn palette(p: &spice_proto::display::Palette) -> u64 {
        p.ents.len() as u64 * 4
    }
    fn image(i: &Image) -> u64 {
        OVERHEAD
            + match &i.data {
                ImageData::Bitmap(b) => {
                    b.data.0.len() as u64
                        + match &b.palette {
                            BitmapPalette::Inline(Some(p)) => palette(p),
                            _ => 0,
                        }
                }
                ImageData::Quic(d)
                | ImageData::LzRgb(d)
                | ImageData::GlzRgb(d)
                | ImageData::Jpeg(d)
                | ImageData::Lz4(d) => d.0.len() as u64,
                ImageData::LzPlt(l) => {
                    l.data.0.len() as u64
                        + match &l.palette {
                            LzPltPalette::Inline(p) => palette(p),
                            LzPltPalette::FromCache(_) => 0,
                        }
                }
                ImageData::ZlibGlzRgb(z) => z.data.0.len() as u64,
                ImageData::JpegAlpha(j) => j.data.0.len() as u64,
                ImageData::Surface(_) | ImageData::FromCache | ImageData::FromCacheLossless => 0,
            }
    }
    fn opt(i: &Option<Box<Image>>) -> u64 {
        i.as_deref().map_or(0, image)
    }
    fn brush(b: &Brush) -> u64 {
        match b {
            Brush::Pattern(p) => image(&p.pat),
            _ => 0,
        }
    }
    fn mask(q: &QMask) -> u64 {
        opt(&q.bitmap)
    }
    fn base(b: &spice_proto::display::DisplayBase) -> u64 {
        OVERHEAD
            + match &b.clip {
                Clip::Rects(r) => r.len() as u64 * 16,
                Clip::None => 0,
            }
    }
    match m {
        D::DrawFill(d) => base(&d.base) + brush(&d.data.brush) + mask(&d.data.mask),
        D::DrawOpaque(d) => {
            base(&d.base) + opt(&d.data.src_bitmap) + brush(&d.data.brush) + mask(&d.data.mask)
        }
        D::DrawCopy(d) | D::DrawBlend(d) => {
            base(&d.base) + opt(&d.data.src_bitmap) + mask(&d.data.mask)
        }
        D::DrawBlackness(d) | D::DrawWhiteness(d) | D::DrawInvers(d) => {
            base(&d.base) + mask(&d.data.mask)
        }
        D::DrawRop3(d) => {
            base(&d.base) + opt(&d.data.src_bitmap) + brush(&d.data.brush) + mask(&d.data.mask)
        }
        D::DrawStroke(d) => {
            let path: u64 = d
                .data
                .path
                .segments
                .iter()
                .map(|s| OVERHEAD + s.points.len() as u64 * 8)
                .sum();
            let style = d
                .data
                .attr
                .style
                .as_ref()
                .map_or(0, |s| s.0.len() as u64 * 4);
            base(&d.base) + path + style + brush(&d.data.brush)
        }
        D::DrawText(d) => {
            let glyphs = match &d.data.str.glyphs {
                Glyphs::A1(g) | Glyphs::A4(g) | Glyphs::A8(g) => {
                    g.iter().map(|g| OVERHEAD + g.data.0.len() as u64).sum()
                }
                Glyphs::None { .. } => 0,
            };
            base(&d.base) + glyphs + brush(&d.data.fore_brush) + brush(&d.data.back_brush)
        }
        D::DrawTransparent(d) => base(&d.base) + opt(&d.data.src_bitmap),
        D::DrawAlphaBlend(d) => base(&d.base) + opt(&d.data.src_bitmap),
        D::DrawComposite(d) => {
            base(&d.base) + opt(&d.data.src_bitmap) + d.data.mask_bitmap.as_ref().map_or(0, opt)
        }
        D::CopyBits(d) => base(&d.base),
        _ => OVERHEAD,
    }
}

/// The cursor as clients should see it now.
#[derive(Debug, Clone, Default)]
pub struct CursorState {
    pub position: Point16Value,
    pub visible: bool,
    pub shape: Option<Rc<CursorShape>>,
    pub trail: (u16, u16),
}

/// A copyable position (spice-proto's `Point16` is not `Copy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Point16Value {
    pub x: i16,
    pub y: i16,
}

impl Point16Value {
    pub fn wire(self) -> Point16 {
        Point16 {
            x: self.x,
            y: self.y,
        }
    }
}
