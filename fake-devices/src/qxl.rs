//! A fake QXL device: a guest driver that writes real QXL structures (drawables, images, data
//! chunks, palettes, surface and cursor commands, qxl_dev.h layouts) into simulated guest
//! memory, puts them on the command and cursor rings (in guest memory too), and frees each
//! command's memory when the server gives it back on the release ring.
//!
//! It plays deterministic scenes driven only by the time it is given, and keeps its own picture
//! of what the screen should be ([`FakeQxl::rgba`]), painted independently of the server's
//! canvas: `--snapshot` writes that picture.
//!
//! Scenes (`--display qxl --scene NAME`):
//! - `qxl-fills`: a background and solid rectangles appearing one by one;
//! - `qxl-text`: a 1-bit text-like bitmap with a cached palette, line by line;
//! - `qxl-photo`: a photo-like 32-bit bitmap (gradient and seeded noise), cached and drawn
//!   twice;
//! - `qxl-window`: a window moved with `copy_bits`, the uncovered area filled;
//! - `qxl-surface`: an off-screen surface drawn into, then composed onto the primary with a
//!   `SURFACE` image, then destroyed;
//! - `qxl-cursor`: cursor shape changes, moves and a hide/show;
//! - `qxl-desktop` (all of the above and an animated region that changes every frame until it
//!   settles);
//! - `qxl-ops`: one drawable of every other kind (opaque, blend, blackness, whiteness, invers,
//!   rop3, strokes (a polyline, a closed path with a bezier), text glyphs, transparent, alpha_blend, composite, a fill with a
//!   mask, with clip rectangles, with a pattern brush). Its picture is the device's commands
//!   read back and drawn by spice-proto's reference canvas (the other scenes are painted by
//!   the device itself), so comparing it with spice-gtk's screen checks the canvas.
//!
//! Every scene is at rest from [`crate::screen::SETTLE_MS`] on.
//!
//! Invariant kept and checked: every command is released exactly once. A release of an id that
//! is not outstanding is recorded in [`FakeQxl::errors`]; [`FakeQxl::outstanding`] counts the
//! commands not yet released.

use std::collections::{BTreeMap, VecDeque};

use spice_proto::qxl::{self, *};
use spice_server::qxl::MemSlots;
use spice_server::testing::Ram;
use spice_server::vdi::{GuestMemory, QxlCommandExt, QxlDevice, QxlEvent, QxlInitInfo};

use crate::screen::{FRAME_MS, SETTLE_MS};

pub const SCENES: [&str; 8] = [
    "qxl-desktop",
    "qxl-ops",
    "qxl-fills",
    "qxl-text",
    "qxl-photo",
    "qxl-window",
    "qxl-surface",
    "qxl-cursor",
];

const RAM_BASE: u64 = 0x10_0000;
const RAM_SIZE: usize = 48 << 20;
const SLOT_ID: u32 = 1;
const SLOT_GEN: u8 = 1;
const RING_SIZE: u32 = 32;
const RELEASE_RING_SIZE: u32 = 8;
const RING_HEADER: u64 = 20;
/// Ring addresses (device addresses inside the RAM).
const CMD_RING: u64 = RAM_BASE;
const CURSOR_RING: u64 = CMD_RING + RING_HEADER + 16 * RING_SIZE as u64;
const RELEASE_RING: u64 = CURSOR_RING + RING_HEADER + 16 * RING_SIZE as u64;
const HEAP: u64 = RAM_BASE + 4096;

const BACKGROUND: u32 = 0x0030_5a8c;

/// One thing a scene does, in device terms.
#[derive(Debug, Clone)]
enum Op {
    Fill {
        surface: u32,
        rect: QxlRect,
        color: u32,
    },
    /// A 32-bit bitmap copied to (x, y); `cache` gives it a cacheable image id.
    Bitmap32 {
        surface: u32,
        x: i32,
        y: i32,
        w: u32,
        h: u32,
        seed: u32,
        cache: Option<u64>,
    },
    /// A 1-bit text-like bitmap (1BIT_BE, two-colour palette `palette_id`).
    Text {
        surface: u32,
        x: i32,
        y: i32,
        w: u32,
        h: u32,
        seed: u32,
        fg: u32,
        bg: u32,
        palette_id: u64,
    },
    /// Move `rect` of the primary by (dx, dy) with `copy_bits`.
    CopyBits {
        rect: QxlRect,
        dx: i32,
        dy: i32,
    },
    CreateSurface {
        id: u32,
        w: u32,
        h: u32,
    },
    DestroySurface {
        id: u32,
    },
    /// Copy all of surface `id` to (x, y) of the primary.
    Compose {
        id: u32,
        x: i32,
        y: i32,
    },
    /// A drawable built by hand (qxl-ops): the drawable type, its bbox, and what goes in it.
    Raw {
        ty: u8,
        bbox: QxlRect,
        what: RawOp,
    },
    CursorSet {
        shape: u32,
        x: i16,
        y: i16,
    },
    CursorMove {
        x: i16,
        y: i16,
    },
    CursorHide,
}

/// The content of a [`Op::Raw`] drawable.
#[derive(Debug, Clone, Copy)]
enum RawOp {
    /// Opaque: a bitmap, a solid brush, `rop`.
    Opaque {
        seed: u32,
        color: u32,
        rop: u16,
    },
    /// Blend (copy with a rop).
    Blend {
        seed: u32,
        rop: u16,
    },
    MaskOnly,
    Rop3 {
        seed: u32,
        color: u32,
        code: u8,
    },
    /// A zigzag polyline, or (`curve`) a closed path with a bezier segment.
    Stroke {
        color: u32,
        curve: bool,
    },
    Text {
        fore: u32,
        back: u32,
    },
    Transparent {
        seed: u32,
    },
    AlphaBlend {
        seed: u32,
        alpha: u8,
    },
    Composite {
        seed: u32,
    },
    FillMask {
        color: u32,
    },
    FillClip {
        color: u32,
    },
    FillPattern {
        seed: u32,
    },
}

/// What a device has seen of its commands' lives, shared with whoever audits it (the
/// simulator keeps a handle while the server owns the device).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    pub issued: u64,
    pub released: u64,
    /// Issued and not released yet.
    pub outstanding: u64,
    /// Releases of ids that were not outstanding (a double or made-up release).
    pub errors: Vec<String>,
    /// Monitor sizes clients asked for (`client_monitors_config`), first monitor, in order.
    /// The fake guest notes them and keeps its mode.
    pub monitor_requests: Vec<(u32, u32)>,
}

/// One command's memory, until it is released.
#[derive(Debug, Clone, Copy)]
struct Allocation {
    bytes: u64,
}

/// The fake QXL device.
pub struct FakeQxl {
    scene: String,
    width: u32,
    height: u32,
    ram: Ram,
    slots: MemSlots,
    /// Scene ops by time, not yet issued.
    script: VecDeque<(u64, Op)>,
    events: Vec<QxlEvent>,
    started: bool,
    now_ms: u64,
    next_release_id: u64,
    outstanding: BTreeMap<u64, Allocation>,
    /// Problems seen (double or unknown releases).
    pub errors: Vec<String>,
    /// Commands put on the rings, and released.
    pub issued: u64,
    pub released: u64,
    /// The device's own picture of each surface (`0x00RRGGBB`).
    truth: BTreeMap<u32, (u32, u32, Vec<u32>)>,
    /// For `qxl-ops`: the picture as the reference canvas draws the device's own commands.
    canvas_truth: Option<spice_proto::canvas::Canvas>,
    audit: std::rc::Rc<std::cell::RefCell<Audit>>,
}

impl FakeQxl {
    /// A device of `width`×`height` playing `scene`; `None` if the scene is unknown or the size
    /// too small.
    pub fn new(scene: &str, width: u32, height: u32) -> Option<FakeQxl> {
        if !SCENES.contains(&scene) || width < 200 || height < 150 || width > 4096 || height > 4096
        {
            return None;
        }
        let mut slots = MemSlots::new(8, 8);
        let ram = Ram::new(RAM_BASE, RAM_SIZE);
        slots.add(ram.slot(SLOT_ID, SLOT_GEN));
        let mut d = FakeQxl {
            scene: scene.to_string(),
            width,
            height,
            ram,
            slots,
            script: VecDeque::new(),
            events: Vec::new(),
            started: false,
            now_ms: 0,
            next_release_id: 1,
            outstanding: BTreeMap::new(),
            errors: Vec::new(),
            issued: 0,
            released: 0,
            truth: BTreeMap::new(),
            canvas_truth: (scene == "qxl-ops").then(spice_proto::canvas::Canvas::default),
            audit: Default::default(),
        };
        d.init_rings();
        d.script = script(scene, width as i32, height as i32).into();
        Some(d)
    }

    /// A handle on the device's [`Audit`], updated as commands are issued and released.
    pub fn audit(&self) -> std::rc::Rc<std::cell::RefCell<Audit>> {
        self.audit.clone()
    }

    fn update_audit(&self) {
        let mut a = self.audit.borrow_mut();
        a.issued = self.issued;
        a.released = self.released;
        a.outstanding = self.outstanding.len() as u64;
        a.errors.clone_from(&self.errors);
    }

    pub fn scene(&self) -> &str {
        &self.scene
    }

    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Commands issued and not released yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// The time from which the scene no longer changes.
    pub fn settled(&self) -> u64 {
        SETTLE_MS
    }

    /// The primary surface as the device means it, R, G, B, A rows.
    pub fn rgba(&self) -> Vec<u8> {
        if let Some(c) = &self.canvas_truth {
            return c.primary().map(|p| p.raster.to_rgba8()).unwrap_or_default();
        }
        self.truth
            .get(&0)
            .map(|(_, _, px)| {
                px.iter()
                    .flat_map(|p| {
                        let [b, g, r, _] = p.to_le_bytes();
                        [r, g, b, 255]
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The scene's primary surface at `at_ms`, computed without a server.
    pub fn rgba_at(scene: &str, width: u32, height: u32, at_ms: u64) -> Option<Vec<u8>> {
        let mut d = FakeQxl::new(scene, width, height)?;
        d.play_to(at_ms);
        Some(d.rgba())
    }

    /// Play the scene to `at_ms` on the device's own picture, releasing every command at once
    /// (as a server would), e.g. for `--snapshot`.
    pub fn play_to(&mut self, at_ms: u64) {
        let _ = self.run(at_ms);
        loop {
            let mut any = false;
            while let Some(c) = self.get_command().or_else(|| self.get_cursor_command()) {
                let id = self.read_u64(c.cmd.data & (u64::MAX >> 16));
                self.release(id, 0);
                any = true;
            }
            let _ = self.run(at_ms);
            if !any && !self.script.front().is_some_and(|(t, _)| *t <= at_ms) {
                break;
            }
        }
    }

    fn read_u64(&self, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        self.ram.read(addr, &mut b);
        u64::from_le_bytes(b)
    }

    fn read_u32(&self, addr: u64) -> u32 {
        let mut b = [0u8; 4];
        self.ram.read(addr, &mut b);
        u32::from_le_bytes(b)
    }

    fn write_u32(&mut self, addr: u64, v: u32) {
        self.ram.write(addr, &v.to_le_bytes());
    }

    fn init_rings(&mut self) {
        for (ring, n) in [
            (CMD_RING, RING_SIZE),
            (CURSOR_RING, RING_SIZE),
            (RELEASE_RING, RELEASE_RING_SIZE),
        ] {
            self.write_u32(ring, n);
            for f in 1..5 {
                self.write_u32(ring + 4 * f, 0);
            }
        }
        self.ram.reset();
        // Keep the ring area: the heap starts after it.
        let _ = self.ram.alloc((HEAP - RAM_BASE) as usize);
    }

    fn ring_len(&self, ring: u64) -> u32 {
        let prod = self.read_u32(ring + 4);
        let cons = self.read_u32(ring + 12);
        prod.wrapping_sub(cons)
    }

    fn ring_push(&mut self, ring: u64, el_size: u64, n: u32, bytes: &[u8]) -> bool {
        if self.ring_len(ring) >= n {
            return false;
        }
        let prod = self.read_u32(ring + 4);
        let at = ring + RING_HEADER + (prod % n) as u64 * el_size;
        self.ram.write(at, bytes);
        self.write_u32(ring + 4, prod.wrapping_add(1));
        true
    }

    fn ring_pop(&mut self, ring: u64, el_size: u64, n: u32) -> Option<Vec<u8>> {
        if self.ring_len(ring) == 0 {
            return None;
        }
        let cons = self.read_u32(ring + 12);
        let at = ring + RING_HEADER + (cons % n) as u64 * el_size;
        let mut b = vec![0u8; el_size as usize];
        self.ram.read(at, &mut b);
        self.write_u32(ring + 12, cons.wrapping_add(1));
        Some(b)
    }

    fn phys(&self, addr: u64) -> u64 {
        self.slots.encode(SLOT_ID, SLOT_GEN, addr)
    }

    /// Put bytes in guest memory; their guest address.
    fn put(&mut self, b: &[u8], used: &mut u64) -> Option<u64> {
        let at = self.ram.put(b)?;
        *used += b.len() as u64;
        Some(self.phys(at))
    }

    /// A QXLImage of a bitmap with its data in a chunk (and a palette); guest address.
    #[allow(clippy::too_many_arguments)]
    fn put_bitmap(
        &mut self,
        format: u8,
        w: u32,
        h: u32,
        stride: u32,
        data: &[u8],
        palette: Option<(u64, &[u32])>,
        id: Option<u64>,
        used: &mut u64,
    ) -> Option<u64> {
        let mut chunk = QxlDataChunk {
            data_size: data.len() as u32,
            prev_chunk: 0,
            next_chunk: 0,
        }
        .to_bytes();
        chunk.extend_from_slice(data);
        let data_at = self.put(&chunk, used)?;
        let pal_at = match palette {
            Some((unique, ents)) => {
                let mut p = QxlPalette {
                    unique,
                    num_ents: ents.len() as u16,
                }
                .to_bytes();
                for e in ents {
                    p.extend(e.to_le_bytes());
                }
                self.put(&p, used)?
            }
            None => 0,
        };
        let img = QxlImage {
            descriptor: QxlImageDescriptor {
                id: id.unwrap_or(0),
                image_type: 0,
                flags: if id.is_some() { image_flags::CACHE } else { 0 },
                width: w,
                height: h,
            },
            u: Raw::from_slice(
                &QxlBitmap {
                    format,
                    flags: image_flags::BITMAP_TOP_DOWN,
                    x: w,
                    y: h,
                    stride,
                    palette: pal_at,
                    data: data_at,
                }
                .to_bytes(),
            ),
        };
        self.put(&img.to_bytes(), used)
    }

    fn drawable(&self, release: u64, surface: u32, ty: u8, bbox: QxlRect, u: &[u8]) -> Vec<u8> {
        QxlDrawable {
            release_info: release,
            surface_id: surface,
            effect: 1,
            draw_type: ty,
            self_bitmap: 0,
            self_bitmap_area: QxlRect::default(),
            bbox,
            clip: QxlClip::default(),
            mm_time: self.now_ms as u32,
            surfaces_dest: [-1; 3],
            surfaces_rects: [QxlRect::default(); 3],
            u: Raw::from_slice(u),
        }
        .to_bytes()
    }

    /// Write `op` into guest memory and put it on its ring; `false` if the ring or memory is
    /// full (try again later).
    fn issue(&mut self, op: &Op) -> bool {
        let cursor = matches!(
            op,
            Op::CursorSet { .. } | Op::CursorMove { .. } | Op::CursorHide
        );
        let ring = if cursor { CURSOR_RING } else { CMD_RING };
        if self.ring_len(ring) >= RING_SIZE {
            return false;
        }
        let id = self.next_release_id;
        let mut used = 0u64;
        let Some((addr, ty)) = self.write_op(op, id, &mut used) else {
            return false;
        };
        let cmd = QxlCommand {
            data: addr,
            cmd_type: ty,
            padding: 0,
        };
        if !self.ring_push(ring, 16, RING_SIZE, &cmd.to_bytes()) {
            return false;
        }
        self.next_release_id += 1;
        self.outstanding.insert(id, Allocation { bytes: used });
        self.issued += 1;
        if self.canvas_truth.is_some() {
            self.paint_by_canvas(&cmd);
        } else {
            self.paint(op);
        }
        true
    }

    fn write_op(&mut self, op: &Op, id: u64, used: &mut u64) -> Option<(u64, u32)> {
        let draw = |d: Vec<u8>, s: &mut FakeQxl, used: &mut u64| {
            s.put(&d, used).map(|a| (a, qxl::cmd::DRAW))
        };
        match op {
            Op::Fill {
                surface,
                rect,
                color,
            } => {
                let u = QxlFill {
                    brush: QxlBrush::solid(*color),
                    rop_descriptor: 1 << 3,
                    mask: QxlQMask::default(),
                }
                .to_bytes();
                let d = self.drawable(id, *surface, qxl::draw::FILL, *rect, &u);
                draw(d, self, used)
            }
            Op::Bitmap32 {
                surface,
                x,
                y,
                w,
                h,
                seed,
                cache,
            } => {
                let px = photo(*w, *h, *seed);
                let data: Vec<u8> = px.iter().flat_map(|p| p.to_le_bytes()).collect();
                let img = self.put_bitmap(8, *w, *h, w * 4, &data, None, *cache, used)?;
                self.copy_drawable(id, *surface, img, *x, *y, *w, *h, used)
            }
            Op::Text {
                surface,
                x,
                y,
                w,
                h,
                seed,
                fg,
                bg,
                palette_id,
            } => {
                let bits = text_bits(*w, *h, *seed);
                let stride = w.div_ceil(8);
                let img = self.put_bitmap(
                    2,
                    *w,
                    *h,
                    stride,
                    &bits,
                    Some((*palette_id, &[*bg, *fg])),
                    None,
                    used,
                )?;
                self.copy_drawable(id, *surface, img, *x, *y, *w, *h, used)
            }
            Op::CopyBits { rect, dx, dy } => {
                let dest = QxlRect {
                    top: rect.top + dy,
                    left: rect.left + dx,
                    bottom: rect.bottom + dy,
                    right: rect.right + dx,
                };
                let u = QxlCopyBits {
                    src_pos: QxlPoint {
                        x: rect.left,
                        y: rect.top,
                    },
                }
                .to_bytes();
                let d = self.drawable(id, 0, qxl::draw::COPY_BITS, dest, &u);
                draw(d, self, used)
            }
            Op::CreateSurface { id: sid, w, h } => {
                let s = QxlSurfaceCmd {
                    release_info: id,
                    surface_id: *sid,
                    cmd_type: 0,
                    flags: 0,
                    surface: QxlSurface {
                        format: 32,
                        width: *w,
                        height: *h,
                        stride: (*w * 4) as i32,
                        data: 0,
                    },
                };
                self.put(&s.to_bytes(), used)
                    .map(|a| (a, qxl::cmd::SURFACE))
            }
            Op::DestroySurface { id: sid } => {
                let s = QxlSurfaceCmd {
                    release_info: id,
                    surface_id: *sid,
                    cmd_type: 1,
                    ..Default::default()
                };
                self.put(&s.to_bytes(), used)
                    .map(|a| (a, qxl::cmd::SURFACE))
            }
            Op::Compose { id: sid, x, y } => {
                let (w, h, _) = self.truth.get(sid)?.clone();
                let mut u = Vec::new();
                u.extend(sid.to_le_bytes());
                let img = QxlImage {
                    descriptor: QxlImageDescriptor {
                        id: 0,
                        image_type: 104,
                        flags: 0,
                        width: w,
                        height: h,
                    },
                    u: Raw::from_slice(&u),
                };
                let img_at = self.put(&img.to_bytes(), used)?;
                self.copy_drawable(id, 0, img_at, *x, *y, w, h, used)
            }
            Op::CursorSet { shape, x, y } => {
                let (w, h, data) = cursor_shape(*shape);
                let mut c = QxlCursor {
                    header: QxlCursorHeader {
                        unique: 0x1000 + *shape as u64,
                        cursor_type: 0,
                        width: w,
                        height: h,
                        hot_spot_x: 1,
                        hot_spot_y: 1,
                    },
                    data_size: data.len() as u32,
                }
                .to_bytes();
                c.extend(
                    QxlDataChunk {
                        data_size: data.len() as u32,
                        prev_chunk: 0,
                        next_chunk: 0,
                    }
                    .to_bytes(),
                );
                c.extend(&data);
                let shape_at = self.put(&c, used)?;
                let mut u = Vec::new();
                u.extend(x.to_le_bytes());
                u.extend(y.to_le_bytes());
                u.push(1);
                u.extend(shape_at.to_le_bytes());
                self.cursor_cmd(id, cursor_cmd::SET, &u, used)
            }
            Op::CursorMove { x, y } => {
                let mut u = Vec::new();
                u.extend(x.to_le_bytes());
                u.extend(y.to_le_bytes());
                self.cursor_cmd(id, cursor_cmd::MOVE, &u, used)
            }
            Op::CursorHide => self.cursor_cmd(id, cursor_cmd::HIDE, &[], used),
            Op::Raw { ty, bbox, what } => self.write_raw(id, *ty, *bbox, *what, used),
        }
    }

    /// Read the command back as the server would and draw it with the reference canvas.
    fn paint_by_canvas(&mut self, cmd: &QxlCommand) {
        let mut r = spice_server::qxl::Reader {
            slots: &self.slots,
            mem: &self.ram,
            group: 0,
            budget: spice_server::qxl::Budget {
                bytes: spice_server::qxl::DEFAULT_COMMAND_BYTES,
            },
        };
        let parsed = spice_server::qxl::parse(&mut r, cmd, 0);
        let (w, h) = (self.width, self.height);
        let Some(c) = self.canvas_truth.as_mut() else {
            return;
        };
        use spice_proto::display::{SurfaceFlags, SurfaceFmt};
        use spice_proto::messages::display::SurfaceCreate;
        use spice_proto::messages::DisplayServer as D;
        use spice_server::qxl::Command;
        if c.primary().is_none() {
            let _ = c.apply(&D::SurfaceCreate(SurfaceCreate {
                surface_id: 0,
                width: w,
                height: h,
                format: SurfaceFmt::Xrgb32,
                flags: SurfaceFlags::PRIMARY,
            }));
        }
        let res = match parsed {
            Ok(Command::Draw { msg, .. }) => c.apply(&msg),
            Ok(Command::SurfaceCreate {
                surface_id,
                width,
                height,
                ..
            }) => c.apply(&D::SurfaceCreate(SurfaceCreate {
                surface_id,
                width,
                height,
                format: SurfaceFmt::Xrgb32,
                flags: SurfaceFlags::EMPTY,
            })),
            Ok(Command::SurfaceDestroy { surface_id, .. }) => {
                c.apply(&D::SurfaceDestroy(surface_id))
            }
            Ok(_) => Ok(()),
            Err(e) => {
                self.errors.push(format!("own command does not parse: {e}"));
                Ok(())
            }
        };
        if let Err(e) = res {
            self.errors.push(format!("own command does not draw: {e}"));
        }
    }

    /// The structures of a hand-built drawable; the drawable's guest address.
    fn write_raw(
        &mut self,
        id: u64,
        ty: u8,
        bbox: QxlRect,
        what: RawOp,
        used: &mut u64,
    ) -> Option<(u64, u32)> {
        let (w, h) = (
            (bbox.right - bbox.left) as u32,
            (bbox.bottom - bbox.top) as u32,
        );
        let area = QxlRect::from_xywh(0, 0, w as i32, h as i32);
        let put_photo = |s: &mut FakeQxl, seed: u32, alpha: bool, used: &mut u64| {
            let px = photo(w, h, seed);
            let data: Vec<u8> = px
                .iter()
                .enumerate()
                .flat_map(|(i, p)| {
                    if alpha {
                        // Premultiplied ARGB: alpha from a diagonal ramp.
                        let a = ((i as u32 % w + i as u32 / w) * 255 / (w + h)).min(255);
                        let c = |sh: u32| ((p >> sh & 0xff) * a / 255) << sh;
                        (a << 24 | c(16) | c(8) | c(0)).to_le_bytes()
                    } else {
                        p.to_le_bytes()
                    }
                })
                .collect();
            let fmt = if alpha { 9 } else { 8 };
            s.put_bitmap(fmt, w, h, w * 4, &data, None, None, used)
        };
        let mut clip = QxlClip::default();
        let u: Vec<u8> = match what {
            RawOp::Opaque { seed, color, rop } => QxlOpaque {
                src_bitmap: put_photo(self, seed, false, used)?,
                src_area: area,
                brush: QxlBrush::solid(color),
                rop_descriptor: rop,
                scale_mode: 1,
                mask: QxlQMask::default(),
            }
            .to_bytes(),
            RawOp::Blend { seed, rop } => QxlCopy {
                src_bitmap: put_photo(self, seed, false, used)?,
                src_area: area,
                rop_descriptor: rop,
                scale_mode: 1,
                mask: QxlQMask::default(),
            }
            .to_bytes(),
            RawOp::MaskOnly => QxlMaskOnly {
                mask: QxlQMask::default(),
            }
            .to_bytes(),
            RawOp::Rop3 { seed, color, code } => QxlRop3 {
                src_bitmap: put_photo(self, seed, false, used)?,
                src_area: area,
                brush: QxlBrush::solid(color),
                rop3: code,
                scale_mode: 1,
                mask: QxlQMask::default(),
            }
            .to_bytes(),
            RawOp::Stroke { color, curve } => {
                let fx = |x: i32, y: i32| QxlPointFix {
                    x: x << 4,
                    y: y << 4,
                };
                let (l, t, r, b) = (bbox.left + 4, bbox.top + 4, bbox.right - 5, bbox.bottom - 5);
                let mut segs = Vec::new();
                if curve {
                    // Begin at the left, a bezier over the top to the right, then straight
                    // back along the bottom, closed.
                    segs.extend(QxlPathSeg { flags: 1, count: 1 }.to_bytes());
                    segs.extend(fx(l, b).to_bytes());
                    segs.extend(
                        QxlPathSeg {
                            flags: 16,
                            count: 3,
                        }
                        .to_bytes(),
                    );
                    for p in [fx(l + 10, t), fx(r - 10, t), fx(r, b)] {
                        segs.extend(p.to_bytes());
                    }
                    segs.extend(
                        QxlPathSeg {
                            flags: 2 | 8,
                            count: 1,
                        }
                        .to_bytes(),
                    );
                    segs.extend(fx((l + r) / 2, b - 8).to_bytes());
                } else {
                    // A zigzag polyline.
                    segs.extend(
                        QxlPathSeg {
                            flags: 1 | 2,
                            count: 6,
                        }
                        .to_bytes(),
                    );
                    for i in 0..6 {
                        let y = if i % 2 == 0 { t } else { b };
                        segs.extend(fx(l + i * (r - l) / 5, y).to_bytes());
                    }
                }
                let mut path = QxlPath {
                    data_size: segs.len() as u32,
                }
                .to_bytes();
                path.extend(
                    QxlDataChunk {
                        data_size: segs.len() as u32,
                        prev_chunk: 0,
                        next_chunk: 0,
                    }
                    .to_bytes(),
                );
                path.extend(segs);
                QxlStroke {
                    path: self.put(&path, used)?,
                    attr: QxlLineAttr::default(),
                    brush: QxlBrush::solid(color),
                    fore_mode: 1 << 3,
                    back_mode: 1 << 3,
                }
                .to_bytes()
            }
            RawOp::Text { fore, back } => {
                // A row of 8x12 A1 glyphs (rows stored bottom-up, MSB first).
                let n = (w / 9).min(12) as u16;
                let mut glyphs = Vec::new();
                for i in 0..n {
                    glyphs.extend(
                        QxlRasterGlyph {
                            render_pos: QxlPoint {
                                x: bbox.left + 2 + i as i32 * 9,
                                y: bbox.top + 14,
                            },
                            glyph_origin: QxlPoint { x: 0, y: -12 },
                            width: 8,
                            height: 12,
                        }
                        .to_bytes(),
                    );
                    let bits = text_bits(8, 12, 100 + i as u32);
                    glyphs.extend(bits.iter().rev());
                }
                let mut st = QxlString {
                    data_size: glyphs.len() as u32,
                    length: n,
                    flags: 1,
                }
                .to_bytes();
                st.extend(
                    QxlDataChunk {
                        data_size: glyphs.len() as u32,
                        prev_chunk: 0,
                        next_chunk: 0,
                    }
                    .to_bytes(),
                );
                st.extend(glyphs);
                QxlText {
                    str_: self.put(&st, used)?,
                    back_area: bbox,
                    fore_brush: QxlBrush::solid(fore),
                    back_brush: QxlBrush::solid(back),
                    fore_mode: 1 << 3,
                    back_mode: 1 << 3,
                }
                .to_bytes()
            }
            RawOp::Transparent { seed } => {
                // The photo with a key colour painted in stripes.
                let data: Vec<u8> = photo(w, h, seed)
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| {
                        if (i as u32 % w) / 6 % 2 == 0 {
                            0x00ff_00ff
                        } else {
                            p
                        }
                    })
                    .flat_map(|p: u32| p.to_le_bytes())
                    .collect();
                QxlTransparent {
                    src_bitmap: self.put_bitmap(8, w, h, w * 4, &data, None, None, used)?,
                    src_area: area,
                    src_color: 0x00ff_00ff,
                    true_color: 0x00ff_00ff,
                }
                .to_bytes()
            }
            RawOp::AlphaBlend { seed, alpha } => QxlAlphaBlend {
                alpha_flags: 0,
                alpha,
                src_bitmap: put_photo(self, seed, true, used)?,
                src_area: area,
            }
            .to_bytes(),
            RawOp::Composite { seed } => QxlComposite {
                flags: 3, // OVER, nearest, no repeat
                src: put_photo(self, seed, true, used)?,
                src_transform: 0,
                mask: 0,
                mask_transform: 0,
                src_origin: QxlPoint16 { x: 0, y: 0 },
                mask_origin: QxlPoint16 { x: 0, y: 0 },
            }
            .to_bytes(),
            RawOp::FillMask { color } => {
                let bits = text_bits(w, h, 77);
                let stride = w.div_ceil(8);
                let mask = self.put_bitmap(2, w, h, stride, &bits, None, None, used)?;
                QxlFill {
                    brush: QxlBrush::solid(color),
                    rop_descriptor: 1 << 3,
                    mask: QxlQMask {
                        flags: 0,
                        pos: QxlPoint { x: 0, y: 0 },
                        bitmap: mask,
                    },
                }
                .to_bytes()
            }
            RawOp::FillClip { color } => {
                let mut b = QxlClipRects { num_rects: 4 }.to_bytes();
                b.extend(
                    QxlDataChunk {
                        data_size: 64,
                        prev_chunk: 0,
                        next_chunk: 0,
                    }
                    .to_bytes(),
                );
                for i in 0..4 {
                    let r = QxlRect::from_xywh(
                        bbox.left + i * (w as i32 / 4),
                        bbox.top + i * (h as i32 / 4),
                        w as i32 / 4,
                        h as i32 / 4,
                    );
                    b.extend(r.to_bytes());
                }
                clip = QxlClip {
                    clip_type: 1,
                    data: self.put(&b, used)?,
                };
                QxlFill {
                    brush: QxlBrush::solid(color),
                    rop_descriptor: 1 << 3,
                    mask: QxlQMask::default(),
                }
                .to_bytes()
            }
            RawOp::FillPattern { seed } => {
                let data: Vec<u8> = photo(8, 8, seed)
                    .iter()
                    .flat_map(|p| p.to_le_bytes())
                    .collect();
                let pat = self.put_bitmap(8, 8, 8, 32, &data, None, None, used)?;
                QxlFill {
                    brush: QxlBrush {
                        brush_type: 2,
                        u: Raw::from_slice(
                            &QxlPattern {
                                pat,
                                pos: QxlPoint { x: 3, y: 5 },
                            }
                            .to_bytes(),
                        ),
                    },
                    rop_descriptor: 1 << 3,
                    mask: QxlQMask::default(),
                }
                .to_bytes()
            }
        };
        let mut d = QxlDrawable::read(&self.drawable(id, 0, ty, bbox, &u))?;
        d.clip = clip;
        self.put(&d.to_bytes(), used).map(|a| (a, qxl::cmd::DRAW))
    }

    fn cursor_cmd(&mut self, id: u64, ty: u8, u: &[u8], used: &mut u64) -> Option<(u64, u32)> {
        let c = QxlCursorCmd {
            release_info: id,
            cmd_type: ty,
            u: Raw::from_slice(u),
            device_data: Raw::default(),
        };
        self.put(&c.to_bytes(), used).map(|a| (a, qxl::cmd::CURSOR))
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_drawable(
        &mut self,
        id: u64,
        surface: u32,
        img: u64,
        x: i32,
        y: i32,
        w: u32,
        h: u32,
        used: &mut u64,
    ) -> Option<(u64, u32)> {
        let u = QxlCopy {
            src_bitmap: img,
            src_area: QxlRect::from_xywh(0, 0, w as i32, h as i32),
            rop_descriptor: 1 << 3,
            scale_mode: 1,
            mask: QxlQMask::default(),
        }
        .to_bytes();
        let d = self.drawable(
            id,
            surface,
            qxl::draw::COPY,
            QxlRect::from_xywh(x, y, w as i32, h as i32),
            &u,
        );
        self.put(&d, used).map(|a| (a, qxl::cmd::DRAW))
    }

    // -----------------------------------------------------------------------------------------
    // The device's own picture.

    fn paint(&mut self, op: &Op) {
        let put = |t: &mut BTreeMap<u32, (u32, u32, Vec<u32>)>, s: u32, x: i32, y: i32, v: u32| {
            if let Some((w, h, px)) = t.get_mut(&s) {
                if x >= 0 && y >= 0 && (x as u32) < *w && (y as u32) < *h {
                    px[y as usize * *w as usize + x as usize] = v;
                }
            }
        };
        match op {
            Op::Fill {
                surface,
                rect,
                color,
            } => {
                for y in rect.top..rect.bottom {
                    for x in rect.left..rect.right {
                        put(&mut self.truth, *surface, x, y, *color & 0xff_ffff);
                    }
                }
            }
            Op::Bitmap32 {
                surface,
                x,
                y,
                w,
                h,
                seed,
                ..
            } => {
                let px = photo(*w, *h, *seed);
                for j in 0..*h {
                    for i in 0..*w {
                        let v = px[(j * w + i) as usize] & 0xff_ffff;
                        put(&mut self.truth, *surface, x + i as i32, y + j as i32, v);
                    }
                }
            }
            Op::Text {
                surface,
                x,
                y,
                w,
                h,
                seed,
                fg,
                bg,
                ..
            } => {
                let bits = text_bits(*w, *h, *seed);
                let stride = w.div_ceil(8) as usize;
                for j in 0..*h as usize {
                    for i in 0..*w as usize {
                        let on = bits[j * stride + i / 8] >> (7 - i % 8) & 1 == 1;
                        let v = if on { *fg } else { *bg };
                        put(&mut self.truth, *surface, x + i as i32, y + j as i32, v);
                    }
                }
            }
            Op::CopyBits { rect, dx, dy } => {
                let Some((w, _, px)) = self.truth.get(&0) else {
                    return;
                };
                let (w, old) = (*w, px.clone());
                for y in rect.top..rect.bottom {
                    for x in rect.left..rect.right {
                        if x >= 0 && y >= 0 && (x as u32) < w {
                            if let Some(&v) = old.get(y as usize * w as usize + x as usize) {
                                put(&mut self.truth, 0, x + dx, y + dy, v);
                            }
                        }
                    }
                }
            }
            Op::CreateSurface { id, w, h } => {
                self.truth
                    .insert(*id, (*w, *h, vec![0; *w as usize * *h as usize]));
            }
            Op::DestroySurface { id } => {
                self.truth.remove(id);
            }
            Op::Compose { id, x, y } => {
                let Some((w, h, px)) = self.truth.get(id).cloned() else {
                    return;
                };
                for j in 0..h {
                    for i in 0..w {
                        let v = px[(j * w + i) as usize];
                        put(&mut self.truth, 0, x + i as i32, y + j as i32, v);
                    }
                }
            }
            Op::CursorSet { .. } | Op::CursorMove { .. } | Op::CursorHide | Op::Raw { .. } => {}
        }
    }
}

impl QxlDevice for FakeQxl {
    fn init_info(&self) -> QxlInitInfo {
        QxlInitInfo {
            num_memslots_groups: 1,
            num_memslots: 8,
            memslot_gen_bits: 8,
            memslot_id_bits: 8,
            n_surfaces: 64,
        }
    }

    fn memory(&self) -> &dyn GuestMemory {
        &self.ram
    }

    fn run(&mut self, now_ms: u64) -> Vec<QxlEvent> {
        self.now_ms = self.now_ms.max(now_ms);
        if !self.started {
            self.started = true;
            self.events
                .push(QxlEvent::AddMemSlot(self.ram.slot(SLOT_ID, SLOT_GEN)));
            self.events.push(QxlEvent::CreatePrimary(PrimarySurface {
                width: self.width,
                height: self.height,
                stride: (self.width * 4) as i32,
                format: 32,
                mouse_mode: 0,
                mem: 0,
            }));
            self.truth.insert(
                0,
                (
                    self.width,
                    self.height,
                    vec![0; self.width as usize * self.height as usize],
                ),
            );
        }
        // The driver side: take what the server released back.
        while let Some(b) = self.ring_pop(RELEASE_RING, 8, RELEASE_RING_SIZE) {
            let id = u64::from_le_bytes(b.try_into().unwrap_or_default());
            self.free(id);
        }
        if self.outstanding.is_empty() {
            // All memory is back: start the heap again.
            self.ram.reset();
            let _ = self.ram.alloc((HEAP - RAM_BASE) as usize);
        }
        while let Some((t, op)) = self.script.front().cloned() {
            if t > self.now_ms || !self.issue(&op) {
                break;
            }
            self.script.pop_front();
        }
        self.update_audit();
        std::mem::take(&mut self.events)
    }

    fn get_command(&mut self) -> Option<QxlCommandExt> {
        let b = self.ring_pop(CMD_RING, 16, RING_SIZE)?;
        Some(QxlCommandExt {
            cmd: QxlCommand::read(&b)?,
            group_id: 0,
            flags: 0,
        })
    }

    fn get_cursor_command(&mut self) -> Option<QxlCommandExt> {
        let b = self.ring_pop(CURSOR_RING, 16, RING_SIZE)?;
        Some(QxlCommandExt {
            cmd: QxlCommand::read(&b)?,
            group_id: 0,
            flags: 0,
        })
    }

    fn release(&mut self, id: u64, group_id: u32) {
        self.release_inner(id, group_id);
        self.update_audit();
    }

    fn client_monitors_config(&mut self, monitors: &[spice_server::vdi::ClientMonitor]) -> bool {
        if let Some(m) = monitors.first() {
            self.audit
                .borrow_mut()
                .monitor_requests
                .push((m.width, m.height));
        }
        true
    }

    fn next_wakeup(&self) -> Option<u64> {
        if !self.started {
            return Some(0);
        }
        if self.ring_len(CMD_RING) > 0 || self.ring_len(CURSOR_RING) > 0 {
            return Some(self.now_ms);
        }
        self.script.front().map(|(t, _)| (*t).max(self.now_ms + 1))
    }
}

impl FakeQxl {
    fn release_inner(&mut self, id: u64, group_id: u32) {
        if group_id != 0 || !self.outstanding.contains_key(&id) {
            self.errors.push(format!(
                "release of {id} (group {group_id}): not outstanding"
            ));
            return;
        }
        // QEMU puts the id on the release ring; when it is full the driver is asked to take
        // some first (here: the device frees at once).
        if !self.ring_push(RELEASE_RING, 8, RELEASE_RING_SIZE, &id.to_le_bytes()) {
            self.free(id);
        } else {
            // Mark it as released now so a second release of the same id is caught.
            if let Some(a) = self.outstanding.remove(&id) {
                self.released += 1;
                let _ = a.bytes;
            }
        }
    }

    fn free(&mut self, id: u64) {
        if self.outstanding.remove(&id).is_some() {
            self.released += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scene content.

/// A deterministic photo-like picture (`0x00RRGGBB`): gradients and seeded noise.
fn photo(w: u32, h: u32, seed: u32) -> Vec<u32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut out = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let n = (s & 15) as i32 - 8;
            let r = ((x * 255 / w.max(1)) as i32 + n).clamp(0, 255) as u32;
            let g = ((y * 255 / h.max(1)) as i32 + n).clamp(0, 255) as u32;
            let b = ((((x + y) * 128) / (w + h).max(1)) as i32 + 64 + n).clamp(0, 255) as u32;
            out.push(r << 16 | g << 8 | b);
        }
    }
    out
}

/// Text-like 1-bit rows (MSB first): glyph-ish strokes in cells of 8x12.
fn text_bits(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let stride = w.div_ceil(8) as usize;
    let mut out = vec![0u8; stride * h as usize];
    let mut s = seed | 1;
    for cy in 0..h / 12 {
        for cx in 0..w / 8 {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            if (s >> 16) % 7 == 0 {
                continue; // a space
            }
            let glyph = s >> 8;
            for gy in 2..10u32 {
                for gx in 1..7u32 {
                    let on = match gy {
                        2 | 9 => glyph >> gx & 1 == 1,
                        _ => gx == 1 + (glyph >> 3 & 3) || (glyph >> (gy + gx)) & 3 == 0,
                    };
                    if on {
                        let x = (cx * 8 + gx) as usize;
                        let y = (cy * 12 + gy) as usize;
                        out[y * stride + x / 8] |= 0x80 >> (x % 8);
                    }
                }
            }
        }
    }
    out
}

/// An alpha cursor shape: (width, height, premultiplied ARGB bytes).
fn cursor_shape(n: u32) -> (u16, u16, Vec<u8>) {
    let (w, h) = (16u16, 16u16);
    let mut data = Vec::with_capacity(w as usize * h as usize * 4);
    for y in 0..h as u32 {
        for x in 0..w as u32 {
            let inside = match n {
                0 => x <= y && x < 10 && y < 14,                      // an arrow
                _ => (x as i32 - 8).abs() + (y as i32 - 8).abs() < 7, // a diamond
            };
            let edge = inside && (x == 0 || x == y || y == 13);
            let px: u32 = if !inside {
                0
            } else if edge {
                0xff00_0000
            } else if n == 0 {
                0xffff_ffff
            } else {
                0xffe0_6020
            };
            data.extend(px.to_le_bytes());
        }
    }
    (w, h, data)
}

/// The ops of a scene, by time.
fn script(scene: &str, w: i32, h: i32) -> Vec<(u64, Op)> {
    let mut v: Vec<(u64, Op)> = Vec::new();
    let all = scene == "qxl-desktop";
    let fill = |surface, x, y, ww, hh, color| Op::Fill {
        surface,
        rect: QxlRect::from_xywh(x, y, ww, hh),
        color,
    };
    v.push((0, fill(0, 0, 0, w, h, BACKGROUND)));
    if all || scene == "qxl-fills" {
        v.push((0, fill(0, 0, h - 28, w, 28, 0x00d0_d0d0)));
        for i in 0..8 {
            let t = 50 + i as u64 * FRAME_MS * 2;
            let color = [0x00e0_4040, 0x0040_c040, 0x004040e0, 0x00f0_c020][i % 4];
            v.push((t, fill(0, 8 + i as i32 * 22, h - 24, 18, 20, color)));
        }
    }
    if all || scene == "qxl-text" {
        let (tw, th) = ((w / 2 - 20).min(320) as u32, 12u32);
        v.push((0, fill(0, 10, 10, tw as i32 + 8, 6 * 12 + 8, 0x00ff_ffff)));
        for line in 0..6u32 {
            v.push((
                100 + line as u64 * 100,
                Op::Text {
                    surface: 0,
                    x: 14,
                    y: 14 + (line * th) as i32,
                    w: tw,
                    h: th,
                    seed: 7 + line,
                    fg: 0x0010_1010,
                    bg: 0x00ff_ffff,
                    palette_id: 0x5e_0001,
                },
            ));
        }
    }
    if all || scene == "qxl-photo" {
        let (pw, ph) = (160u32.min(w as u32 / 3), 120u32.min(h as u32 / 3));
        let x = w - pw as i32 - 12;
        for (t, y) in [(150u64, 12), (600, 24 + ph as i32)] {
            v.push((
                t,
                Op::Bitmap32 {
                    surface: 0,
                    x,
                    y,
                    w: pw,
                    h: ph,
                    seed: 99,
                    cache: Some(0x00ca_c4e0_0000_0001),
                },
            ));
        }
    }
    if all || scene == "qxl-window" {
        let (ww, wh) = (180, 110);
        let (mut x, mut y) = (20, h / 2 - 40);
        v.push((200, fill(0, x, y, ww, wh, 0x00f0_f0f0)));
        v.push((200, fill(0, x, y, ww, 18, 0x0020_4080)));
        v.push((
            200,
            Op::Bitmap32 {
                surface: 0,
                x: x + 10,
                y: y + 26,
                w: 60,
                h: 60,
                seed: 5,
                cache: Some(0x00ca_c4e0_0000_0002),
            },
        ));
        for step in 0..10 {
            let t = 300 + step as u64 * FRAME_MS * 2;
            let (dx, dy) = (12, 4);
            v.push((
                t,
                Op::CopyBits {
                    rect: QxlRect::from_xywh(x, y, ww, wh),
                    dx,
                    dy,
                },
            ));
            // The uncovered strips.
            v.push((t, fill(0, x, y, dx, wh, BACKGROUND)));
            v.push((t, fill(0, x, y, ww, dy, BACKGROUND)));
            x += dx;
            y += dy;
        }
    }
    if all || scene == "qxl-surface" {
        let (sw, sh) = (140u32, 90u32);
        v.push((
            250,
            Op::CreateSurface {
                id: 1,
                w: sw,
                h: sh,
            },
        ));
        v.push((250, fill(1, 0, 0, sw as i32, sh as i32, 0x00ff_f0c0)));
        v.push((250, fill(1, 4, 4, sw as i32 - 8, 14, 0x0080_2020)));
        v.push((
            250,
            Op::Text {
                surface: 1,
                x: 4,
                y: 24,
                w: sw - 8,
                h: 60,
                seed: 3,
                fg: 0x0000_0080,
                bg: 0x00ff_f0c0,
                palette_id: 0x5e_0002,
            },
        ));
        v.push((
            400,
            Op::Compose {
                id: 1,
                x: w / 2 - 40,
                y: 30,
            },
        ));
        v.push((450, Op::DestroySurface { id: 1 }));
    }
    if all || scene == "qxl-cursor" {
        v.push((
            0,
            Op::CursorSet {
                shape: 0,
                x: 40,
                y: 40,
            },
        ));
        for i in 0..6i16 {
            v.push((
                100 + i as u64 * 100,
                Op::CursorMove {
                    x: 40 + i * 20,
                    y: 40 + i * 10,
                },
            ));
        }
        v.push((
            800,
            Op::CursorSet {
                shape: 1,
                x: 160,
                y: 100,
            },
        ));
        v.push((900, Op::CursorHide));
        v.push((
            1000,
            Op::CursorSet {
                shape: 0,
                x: 100,
                y: 80,
            },
        ));
        v.push((
            1100,
            Op::CursorSet {
                shape: 1,
                x: 120,
                y: 90,
            },
        ));
    }
    if scene == "qxl-ops" {
        // A grid of cells, one drawable kind each, on two background colours for the rops.
        let (cw, ch) = ((w - 20) / 4, (h - 20) / 4);
        let cell =
            |i: i32| QxlRect::from_xywh(10 + (i % 4) * cw, 10 + (i / 4) * ch, cw - 6, ch - 6);
        for i in 0..16 {
            let r = cell(i);
            let color = if i % 2 == 0 { 0x0080_8080 } else { 0x00c0_a060 };
            let (rw, rh) = (r.right - r.left, r.bottom - r.top);
            v.push((0, fill(0, r.left, r.top, rw, rh, color)));
        }
        let ops: [(u8, RawOp); 15] = [
            (
                qxl::draw::OPAQUE,
                RawOp::Opaque {
                    seed: 1,
                    color: 0x0000_ff00,
                    rop: 1 << 5,
                },
            ),
            (
                qxl::draw::BLEND,
                RawOp::Blend {
                    seed: 2,
                    rop: 1 << 6,
                },
            ),
            (qxl::draw::BLACKNESS, RawOp::MaskOnly),
            (qxl::draw::WHITENESS, RawOp::MaskOnly),
            (qxl::draw::INVERS, RawOp::MaskOnly),
            (
                qxl::draw::ROP3,
                RawOp::Rop3 {
                    seed: 3,
                    color: 0x0033_66cc,
                    code: 0xb8,
                },
            ),
            (
                qxl::draw::STROKE,
                RawOp::Stroke {
                    color: 0x00ff_ff00,
                    curve: false,
                },
            ),
            (
                qxl::draw::STROKE,
                RawOp::Stroke {
                    color: 0x0000_ffff,
                    curve: true,
                },
            ),
            (
                qxl::draw::TEXT,
                RawOp::Text {
                    fore: 0x0000_0000,
                    back: 0x00ff_ffe0,
                },
            ),
            (qxl::draw::TRANSPARENT, RawOp::Transparent { seed: 4 }),
            (
                qxl::draw::ALPHA_BLEND,
                RawOp::AlphaBlend {
                    seed: 5,
                    alpha: 0xc0,
                },
            ),
            (qxl::draw::COMPOSITE, RawOp::Composite { seed: 6 }),
            (qxl::draw::FILL, RawOp::FillMask { color: 0x00ff_2020 }),
            (qxl::draw::FILL, RawOp::FillClip { color: 0x0020_20ff }),
            (qxl::draw::FILL, RawOp::FillPattern { seed: 7 }),
        ];
        for (i, (ty, what)) in ops.into_iter().enumerate() {
            let bbox = cell(i as i32);
            v.push((100 + i as u64 * 60, Op::Raw { ty, bbox, what }));
        }
    }
    if all {
        // An animated region: a bar that changes every frame until the scene settles.
        let (bx, by) = (w - 120, h - 24);
        let mut t = 0;
        let mut i = 0u32;
        while t < SETTLE_MS - FRAME_MS {
            let color = 0x0010_2030 + ((i * 0x0001_0305) & 0x003f_3f3f);
            v.push((t, fill(0, bx, by, 100, 16, 0x0020_2020)));
            v.push((t, fill(0, bx, by, (i as i32 * 4) % 100 + 1, 16, color)));
            t += FRAME_MS;
            i += 1;
        }
        v.push((SETTLE_MS - FRAME_MS, fill(0, bx, by, 100, 16, 0x0040_a040)));
    }
    v.sort_by_key(|(t, _)| *t);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_deterministic_and_settle() {
        for s in SCENES {
            let a = FakeQxl::rgba_at(s, 320, 240, SETTLE_MS).unwrap();
            let b = FakeQxl::rgba_at(s, 320, 240, SETTLE_MS).unwrap();
            assert_eq!(a, b, "{s}");
            let later = FakeQxl::rgba_at(s, 320, 240, SETTLE_MS + 5000).unwrap();
            assert_eq!(a, later, "{s} changes after settling");
        }
        assert!(FakeQxl::new("nope", 320, 240).is_none());
        let mut d = FakeQxl::new("qxl-ops", 320, 240).unwrap();
        d.play_to(SETTLE_MS);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
    }

    #[test]
    fn every_command_is_released_once() {
        let mut d = FakeQxl::new("qxl-desktop", 320, 240).unwrap();
        d.play_to(SETTLE_MS);
        assert!(d.issued > 50);
        assert_eq!(d.outstanding(), 0);
        assert_eq!(d.released, d.issued);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        // A second release of the same id is caught.
        d.release(1, 0);
        assert_eq!(d.errors.len(), 1);
    }
}
