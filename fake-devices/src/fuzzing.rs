//! The whole-guest fuzz target (server/fuzz `whole_guest`): an arbitrary QXL command graph
//! written by a fake guest into guest memory (real qxl_dev.h structures: drawables of every
//! kind with images, palettes, chunk lists, clips, brushes, masks, paths, glyph strings;
//! surface and cursor commands; monitors configs) and run through the server's whole display
//! path (parse, canvas, encoders for a fast client and a slow one that never reads, release).
//!
//! Invariants checked: no panic; no command released twice or released without being issued,
//! and none left outstanding once the guest resets the device; bytes queued per connection
//! never more than the output cap plus one message.
//!
//! Owns: the input's meaning ([`Guest`], read with `arbitrary`) and the fuzz device
//! ([`FuzzQxl`]). Must not: be used by anything but the fuzz target and the regression test
//! (fake-devices/tests/fuzz_regressions.rs); a failed invariant is a panic, on purpose.

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::rc::Rc;

use arbitrary::{Arbitrary, Unstructured};
use spice_proto::header::{frame, Framer, HeaderKind};
use spice_proto::messages::base::{BaseClient, BaseServer};
use spice_proto::messages::display::DisplayInit;
use spice_proto::messages::{ChannelType, DisplayClient, Message};
use spice_proto::qxl::{self, *};
use spice_server::fuzzing::{key, link};
use spice_server::link::Ticketing;
use spice_server::qxl::MemSlots;
use spice_server::testing::{drain, Linked, Ram};
use spice_server::vdi::{GuestMemory, QxlCommandExt, QxlDevice, QxlEvent, QxlInitInfo};
use spice_server::{Config, ImageCompression, Server};

const RAM_BASE: u64 = 0x10_0000;
const RAM_SIZE: usize = 1 << 20;
const SLOT_ID: u32 = 1;
const SLOT_GEN: u8 = 1;
/// Commands one input may issue.
const MAX_COMMANDS: usize = 48;

/// A rectangle as x, y, width, height.
type Rect = (i16, i16, u16, u16);

/// The whole input.
#[derive(Debug, Arbitrary)]
pub struct Guest {
    /// Primary surface size: 16 + w, 16 + h pixels.
    pub size: (u8, u8),
    pub compression: u8,
    pub steps: Vec<Step>,
}

/// One thing the guest does.
#[derive(Debug, Arbitrary)]
pub enum Step {
    Draw(Box<Draw>),
    CreateSurface {
        id: u8,
        w: u8,
        h: u8,
        format: u8,
        stride: i16,
    },
    DestroySurface {
        id: u8,
    },
    CursorSet {
        shape: Img,
        x: i16,
        y: i16,
        visible: bool,
    },
    CursorMove {
        x: i16,
        y: i16,
    },
    CursorHide,
    CursorTrail {
        length: u16,
        frequency: u16,
    },
    /// `QXLMonitorsConfig`: `count` as written (it may lie), then the heads given.
    Monitors {
        count: u16,
        max_allowed: u16,
        heads: Vec<(u8, u16, u16, u16, u16)>,
    },
    /// Arbitrary bytes in guest memory given as a command of `cmd_type`.
    RawCommand {
        cmd_type: u8,
        cursor: bool,
        bytes: Vec<u8>,
    },
    /// Time passes (the server services the device; the fast client reads and acks).
    Tick {
        ms: u8,
    },
}

/// A drawable.
#[derive(Debug, Arbitrary)]
pub struct Draw {
    pub surface: u8,
    /// The draw type modulo 15 (NOP..COMPOSITE).
    pub kind: u8,
    pub bbox: Rect,
    pub clip: Clip,
    pub effect: u8,
    pub src: Img,
    pub src_area: Rect,
    pub brush: Brush,
    pub mask: Option<Img>,
    pub rop: u16,
    pub path: Vec<(u8, Vec<(i16, i16)>)>,
    pub line_width: i8,
    pub glyphs: Vec<Glyph>,
    pub glyph_bpp: u8,
    pub alpha: u8,
    pub flags: u32,
    pub colors: (u32, u32),
    pub self_bitmap: Option<Rect>,
    pub surfaces_dest: [i8; 3],
}

/// A clip.
#[derive(Debug, Arbitrary)]
pub enum Clip {
    None,
    Rects {
        rects: Vec<Rect>,
        chunking: Chunking,
        claimed: Option<u32>,
    },
    /// An unknown clip type with a pointer.
    Other {
        clip_type: u32,
        data: u64,
    },
}

/// A brush.
#[derive(Debug, Arbitrary)]
pub enum Brush {
    None,
    Solid(u32),
    Pattern { pat: Img, pos: (i8, i8) },
}

/// An image.
#[derive(Debug, Arbitrary)]
pub enum Img {
    Bitmap {
        format: u8,
        w: u8,
        h: u8,
        stride_pad: i8,
        flags: u8,
        palette: Option<(u64, Vec<u32>, Option<u16>)>,
        data: Vec<u8>,
        chunking: Chunking,
        cache: Option<u64>,
    },
    Surface(u8),
    /// Any image type with the payload as a chunk list (QUIC and what the server refuses).
    Encoded {
        image_type: u8,
        w: u16,
        h: u16,
        data: Vec<u8>,
        chunking: Chunking,
    },
    /// A pointer anywhere.
    Pointer(u64),
}

/// How data is cut into a chunk list, and how the list may lie.
#[derive(Debug, Arbitrary)]
pub struct Chunking {
    /// Bytes per chunk (0: one chunk).
    pub split: u8,
    /// Added to the first chunk's `data_size`.
    pub lie: u8,
    /// The last chunk links back to the first.
    pub looped: bool,
}

/// A raster glyph.
#[derive(Debug, Arbitrary)]
pub struct Glyph {
    pub pos: (i16, i16),
    pub origin: (i8, i8),
    pub w: u8,
    pub h: u8,
    pub bits: Vec<u8>,
}

/// What the device saw of its commands' lives.
#[derive(Debug, Default)]
pub struct Releases {
    pub outstanding: BTreeSet<u64>,
    pub errors: Vec<String>,
}

/// The fuzz QXL device: commands written by [`Writer`], handed to the server in order.
pub struct FuzzQxl {
    ram: Ram,
    width: u32,
    height: u32,
    events: Vec<QxlEvent>,
    started: bool,
    commands: VecDeque<QxlCommandExt>,
    cursor: VecDeque<QxlCommandExt>,
    releases: Rc<RefCell<Releases>>,
}

impl QxlDevice for FuzzQxl {
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
    fn run(&mut self, _now_ms: u64) -> Vec<QxlEvent> {
        if !self.started {
            self.started = true;
            self.events
                .insert(0, QxlEvent::AddMemSlot(self.ram.slot(SLOT_ID, SLOT_GEN)));
            self.events.insert(
                1,
                QxlEvent::CreatePrimary(PrimarySurface {
                    width: self.width,
                    height: self.height,
                    stride: (self.width * 4) as i32,
                    format: 32,
                    mouse_mode: 0,
                    mem: 0,
                }),
            );
        }
        std::mem::take(&mut self.events)
    }
    fn get_command(&mut self) -> Option<QxlCommandExt> {
        self.commands.pop_front()
    }
    fn get_cursor_command(&mut self) -> Option<QxlCommandExt> {
        self.cursor.pop_front()
    }
    fn release(&mut self, id: u64, group_id: u32) {
        let mut r = self.releases.borrow_mut();
        if group_id != 0 || !r.outstanding.remove(&id) {
            r.errors.push(format!(
                "release of {id} (group {group_id}): not outstanding"
            ));
        }
    }
    fn next_wakeup(&self) -> Option<u64> {
        None
    }
}

/// Writes the guest's structures into the fuzz device's memory.
struct Writer {
    ram: Ram,
    slots: MemSlots,
    next_id: u64,
    issued: usize,
}

impl Writer {
    fn phys(&self, addr: u64) -> u64 {
        self.slots.encode(SLOT_ID, SLOT_GEN, addr)
    }

    fn put(&mut self, b: &[u8]) -> Option<u64> {
        let at = self.ram.put(b)?;
        Some(self.phys(at))
    }

    /// `data` as chunks: the first one's header and bytes are returned (to go inline after a
    /// structure, or on their own); later chunks are written and linked from it.
    fn chunks(&mut self, data: &[u8], c: &Chunking) -> Option<Vec<u8>> {
        let split = if c.split == 0 {
            data.len().max(1)
        } else {
            c.split as usize
        };
        let mut parts: Vec<&[u8]> = data.chunks(split).collect();
        if parts.is_empty() {
            parts.push(&[]);
        }
        // Later chunks first, each pointing to the next.
        let mut next = 0u64;
        for p in parts[1..].iter().rev() {
            let mut b = QxlDataChunk {
                data_size: p.len() as u32,
                prev_chunk: 0,
                next_chunk: next,
            }
            .to_bytes();
            b.extend_from_slice(p);
            next = self.put(&b)?;
        }
        if c.looped {
            // A chunk whose next pointer is itself, after the first: a loop.
            let b = QxlDataChunk::default().to_bytes();
            let at = self.put(&b)?;
            let off = ((at & (u64::MAX >> 16)) - RAM_BASE) as usize + 12;
            self.ram.bytes[off..off + 8].copy_from_slice(&at.to_le_bytes());
            next = at;
        }
        let mut b = QxlDataChunk {
            data_size: (parts[0].len() as u32).wrapping_add(u32::from(c.lie)),
            prev_chunk: 0,
            next_chunk: next,
        }
        .to_bytes();
        b.extend_from_slice(parts[0]);
        Some(b)
    }

    fn image(&mut self, img: &Img, is_mask: bool) -> Option<u64> {
        match img {
            Img::Pointer(p) => Some(*p),
            Img::Surface(id) => {
                let d = QxlImage {
                    descriptor: QxlImageDescriptor {
                        id: 0,
                        image_type: 104,
                        flags: 0,
                        width: 0,
                        height: 0,
                    },
                    u: Raw::from_slice(&u32::from(*id % 8).to_le_bytes()),
                };
                self.put(&d.to_bytes())
            }
            Img::Encoded {
                image_type,
                w,
                h,
                data,
                chunking,
            } => {
                let chunk = self.chunks(data, chunking)?;
                let mut u = (data.len() as u32).to_le_bytes().to_vec();
                u.extend_from_slice(&chunk);
                let mut b = QxlImageDescriptor {
                    id: 0,
                    image_type: *image_type,
                    flags: 0,
                    width: u32::from(*w),
                    height: u32::from(*h),
                }
                .to_bytes();
                b.extend_from_slice(&u);
                self.put(&b)
            }
            Img::Bitmap {
                format,
                w,
                h,
                stride_pad,
                flags,
                palette,
                data,
                chunking,
                cache,
            } => {
                let format = if is_mask { 1 + format % 2 } else { format % 12 };
                let bpp: u32 = match format {
                    1 | 2 => 1,
                    3 | 4 => 4,
                    5 => 8,
                    6 | 7 => 16,
                    8 => 24,
                    _ => 32,
                };
                let (w, h) = (u32::from(*w), u32::from(*h));
                let stride = ((w * bpp).div_ceil(8) as i64 + i64::from(*stride_pad)).max(0) as u32;
                let chunk = self.chunks(data, chunking)?;
                let data_at = if flags & image_flags::BITMAP_DIRECT != 0 {
                    self.put(data)?
                } else {
                    self.put(&chunk)?
                };
                let pal_at = match palette {
                    Some((unique, ents, claimed)) => {
                        let mut p = QxlPalette {
                            unique: *unique,
                            num_ents: claimed.unwrap_or(ents.len() as u16),
                        }
                        .to_bytes();
                        for e in ents {
                            p.extend(e.to_le_bytes());
                        }
                        self.put(&p)?
                    }
                    None => 0,
                };
                let img = QxlImage {
                    descriptor: QxlImageDescriptor {
                        id: cache.unwrap_or(0),
                        image_type: 0,
                        flags: if cache.is_some() {
                            image_flags::CACHE
                        } else {
                            0
                        },
                        width: w,
                        height: h,
                    },
                    u: Raw::from_slice(
                        &QxlBitmap {
                            format,
                            flags: *flags,
                            x: w,
                            y: h,
                            stride,
                            palette: pal_at,
                            data: data_at,
                        }
                        .to_bytes(),
                    ),
                };
                self.put(&img.to_bytes())
            }
        }
    }

    fn brush(&mut self, b: &Brush) -> Option<QxlBrush> {
        Some(match b {
            Brush::None => QxlBrush {
                brush_type: 0,
                u: Raw::default(),
            },
            Brush::Solid(c) => QxlBrush::solid(*c),
            Brush::Pattern { pat, pos } => QxlBrush {
                brush_type: 2,
                u: Raw::from_slice(
                    &QxlPattern {
                        pat: self.image(pat, false)?,
                        pos: QxlPoint {
                            x: i32::from(pos.0),
                            y: i32::from(pos.1),
                        },
                    }
                    .to_bytes(),
                ),
            },
        })
    }

    fn mask(&mut self, m: &Option<Img>) -> Option<QxlQMask> {
        Some(match m {
            None => QxlQMask::default(),
            Some(img) => QxlQMask {
                flags: 0,
                pos: QxlPoint { x: 0, y: 0 },
                bitmap: self.image(img, true)?,
            },
        })
    }

    fn rect(r: &Rect) -> QxlRect {
        QxlRect::from_xywh(
            i32::from(r.0),
            i32::from(r.1),
            i32::from(r.2),
            i32::from(r.3),
        )
    }

    /// The drawable's union bytes and clip.
    fn draw(&mut self, d: &Draw, id: u64) -> Option<u64> {
        let kind = d.kind % 15;
        let area = Self::rect(&d.src_area);
        let u: Vec<u8> = match kind {
            qxl::draw::FILL => QxlFill {
                brush: self.brush(&d.brush)?,
                rop_descriptor: d.rop,
                mask: self.mask(&d.mask)?,
            }
            .to_bytes(),
            qxl::draw::OPAQUE => QxlOpaque {
                src_bitmap: self.image(&d.src, false)?,
                src_area: area,
                brush: self.brush(&d.brush)?,
                rop_descriptor: d.rop,
                scale_mode: d.alpha % 2,
                mask: self.mask(&d.mask)?,
            }
            .to_bytes(),
            qxl::draw::COPY | qxl::draw::BLEND => QxlCopy {
                src_bitmap: self.image(&d.src, false)?,
                src_area: area,
                rop_descriptor: d.rop,
                scale_mode: d.alpha % 2,
                mask: self.mask(&d.mask)?,
            }
            .to_bytes(),
            qxl::draw::COPY_BITS => QxlCopyBits {
                src_pos: QxlPoint {
                    x: i32::from(d.src_area.0),
                    y: i32::from(d.src_area.1),
                },
            }
            .to_bytes(),
            qxl::draw::BLACKNESS | qxl::draw::WHITENESS | qxl::draw::INVERS => QxlMaskOnly {
                mask: self.mask(&d.mask)?,
            }
            .to_bytes(),
            qxl::draw::ROP3 => QxlRop3 {
                src_bitmap: self.image(&d.src, false)?,
                src_area: area,
                brush: self.brush(&d.brush)?,
                rop3: d.rop as u8,
                scale_mode: d.alpha % 2,
                mask: self.mask(&d.mask)?,
            }
            .to_bytes(),
            qxl::draw::STROKE => {
                let mut segs = Vec::new();
                for (flags, pts) in &d.path {
                    segs.extend(
                        QxlPathSeg {
                            flags: u32::from(*flags),
                            count: pts.len() as u32,
                        }
                        .to_bytes(),
                    );
                    for (x, y) in pts {
                        segs.extend(
                            QxlPointFix {
                                x: i32::from(*x),
                                y: i32::from(*y),
                            }
                            .to_bytes(),
                        );
                    }
                }
                let chunking = Chunking {
                    split: d.effect,
                    lie: 0,
                    looped: false,
                };
                let mut path = QxlPath {
                    data_size: segs.len() as u32,
                }
                .to_bytes();
                path.extend(self.chunks(&segs, &chunking)?);
                QxlStroke {
                    path: self.put(&path)?,
                    attr: QxlLineAttr {
                        flags: (d.flags & 0xff) as u8,
                        width: i32::from(d.line_width),
                        ..QxlLineAttr::default()
                    },
                    brush: self.brush(&d.brush)?,
                    fore_mode: d.rop,
                    back_mode: d.rop >> 8,
                }
                .to_bytes()
            }
            qxl::draw::TEXT => {
                let mut glyphs = Vec::new();
                for g in &d.glyphs {
                    glyphs.extend(
                        QxlRasterGlyph {
                            render_pos: QxlPoint {
                                x: i32::from(g.pos.0),
                                y: i32::from(g.pos.1),
                            },
                            glyph_origin: QxlPoint {
                                x: i32::from(g.origin.0),
                                y: i32::from(g.origin.1),
                            },
                            width: u16::from(g.w),
                            height: u16::from(g.h),
                        }
                        .to_bytes(),
                    );
                    glyphs.extend_from_slice(&g.bits);
                }
                let mut st = QxlString {
                    data_size: glyphs.len() as u32,
                    length: d.glyphs.len() as u16,
                    flags: 1 << (d.glyph_bpp % 3),
                }
                .to_bytes();
                let chunking = Chunking {
                    split: d.effect,
                    lie: 0,
                    looped: false,
                };
                st.extend(self.chunks(&glyphs, &chunking)?);
                QxlText {
                    str_: self.put(&st)?,
                    back_area: Self::rect(&d.src_area),
                    fore_brush: self.brush(&d.brush)?,
                    back_brush: QxlBrush::solid(d.colors.1),
                    fore_mode: d.rop,
                    back_mode: d.rop >> 8,
                }
                .to_bytes()
            }
            qxl::draw::TRANSPARENT => QxlTransparent {
                src_bitmap: self.image(&d.src, false)?,
                src_area: area,
                src_color: d.colors.0,
                true_color: d.colors.1,
            }
            .to_bytes(),
            qxl::draw::ALPHA_BLEND => QxlAlphaBlend {
                alpha_flags: (d.flags & 3) as u16,
                alpha: d.alpha,
                src_bitmap: self.image(&d.src, false)?,
                src_area: area,
            }
            .to_bytes(),
            qxl::draw::COMPOSITE => QxlComposite {
                flags: d.flags,
                src: self.image(&d.src, false)?,
                src_transform: 0,
                mask: match &d.mask {
                    Some(m) => self.image(m, false)?,
                    None => 0,
                },
                mask_transform: 0,
                src_origin: QxlPoint16 {
                    x: d.src_area.0,
                    y: d.src_area.1,
                },
                mask_origin: QxlPoint16 { x: 0, y: 0 },
            }
            .to_bytes(),
            _ => Vec::new(),
        };
        let clip = match &d.clip {
            Clip::None => QxlClip::default(),
            Clip::Other { clip_type, data } => QxlClip {
                clip_type: *clip_type,
                data: *data,
            },
            Clip::Rects {
                rects,
                chunking,
                claimed,
            } => {
                let mut b = QxlClipRects {
                    num_rects: claimed.unwrap_or(rects.len() as u32),
                }
                .to_bytes();
                let rb: Vec<u8> = rects
                    .iter()
                    .flat_map(|r| Self::rect(r).to_bytes())
                    .collect();
                b.extend(self.chunks(&rb, chunking)?);
                QxlClip {
                    clip_type: 1,
                    data: self.put(&b)?,
                }
            }
        };
        let sd = |i: usize| i32::from(d.surfaces_dest[i]);
        let drawable = QxlDrawable {
            release_info: id,
            surface_id: u32::from(d.surface % 8),
            effect: d.effect,
            draw_type: kind,
            self_bitmap: u8::from(d.self_bitmap.is_some()),
            self_bitmap_area: d.self_bitmap.as_ref().map(Self::rect).unwrap_or_default(),
            bbox: Self::rect(&d.bbox),
            clip,
            mm_time: 0,
            surfaces_dest: [sd(0), sd(1), sd(2)],
            surfaces_rects: [QxlRect::default(); 3],
            u: Raw::from_slice(&u),
        };
        self.put(&drawable.to_bytes())
    }

    fn cursor(&mut self, id: u64, ty: u8, u: &[u8]) -> Option<u64> {
        let c = QxlCursorCmd {
            release_info: id,
            cmd_type: ty,
            u: Raw::from_slice(u),
            device_data: Raw::default(),
        };
        self.put(&c.to_bytes())
    }

    /// Write one step's command; the command and whether it goes on the cursor ring.
    fn step(&mut self, s: &Step) -> Option<(QxlCommand, bool)> {
        let id = self.next_id;
        let (addr, ty, cursor) = match s {
            Step::Draw(d) => (self.draw(d, id)?, qxl::cmd::DRAW, false),
            Step::CreateSurface {
                id: sid,
                w,
                h,
                format,
                stride,
            } => {
                let c = QxlSurfaceCmd {
                    release_info: id,
                    surface_id: u32::from(*sid % 10),
                    cmd_type: 0,
                    flags: 0,
                    surface: QxlSurface {
                        format: [32, 16, 8, 1, 0, 99][usize::from(*format % 6)],
                        width: u32::from(*w),
                        height: u32::from(*h),
                        stride: i32::from(*stride),
                        data: 0,
                    },
                };
                (self.put(&c.to_bytes())?, qxl::cmd::SURFACE, false)
            }
            Step::DestroySurface { id: sid } => {
                let c = QxlSurfaceCmd {
                    release_info: id,
                    surface_id: u32::from(*sid % 10),
                    cmd_type: 1,
                    ..Default::default()
                };
                (self.put(&c.to_bytes())?, qxl::cmd::SURFACE, false)
            }
            Step::CursorSet {
                shape,
                x,
                y,
                visible,
            } => {
                let shape_at = match shape {
                    Img::Bitmap {
                        format,
                        w,
                        h,
                        data,
                        chunking,
                        cache,
                        ..
                    } => {
                        let mut c = QxlCursor {
                            header: QxlCursorHeader {
                                unique: cache.unwrap_or(0),
                                cursor_type: u16::from(*format % 8),
                                width: u16::from(*w),
                                height: u16::from(*h),
                                hot_spot_x: u16::from(*w / 2),
                                hot_spot_y: u16::from(*h / 2),
                            },
                            data_size: data.len() as u32,
                        }
                        .to_bytes();
                        c.extend(self.chunks(data, chunking)?);
                        self.put(&c)?
                    }
                    Img::Pointer(p) => *p,
                    _ => 0,
                };
                let mut u = QxlPoint16 { x: *x, y: *y }.to_bytes();
                u.push(u8::from(*visible));
                u.extend(shape_at.to_le_bytes());
                (
                    self.cursor(id, cursor_cmd::SET, &u)?,
                    qxl::cmd::CURSOR,
                    true,
                )
            }
            Step::CursorMove { x, y } => {
                let u = QxlPoint16 { x: *x, y: *y }.to_bytes();
                (
                    self.cursor(id, cursor_cmd::MOVE, &u)?,
                    qxl::cmd::CURSOR,
                    true,
                )
            }
            Step::CursorHide => (
                self.cursor(id, cursor_cmd::HIDE, &[])?,
                qxl::cmd::CURSOR,
                true,
            ),
            Step::CursorTrail { length, frequency } => {
                let mut u = length.to_le_bytes().to_vec();
                u.extend(frequency.to_le_bytes());
                (
                    self.cursor(id, cursor_cmd::TRAIL, &u)?,
                    qxl::cmd::CURSOR,
                    true,
                )
            }
            Step::RawCommand {
                cmd_type,
                cursor,
                bytes,
            } => {
                let mut b = id.to_le_bytes().to_vec();
                b.extend_from_slice(bytes);
                (self.put(&b)?, u32::from(*cmd_type % 7), *cursor)
            }
            Step::Monitors { .. } | Step::Tick { .. } => return None,
        };
        Some((
            QxlCommand {
                data: addr,
                cmd_type: ty,
                padding: 0,
            },
            cursor,
        ))
    }
}

/// A client's channel as the fuzz target reads it: framing and acks.
struct Reader {
    link: Linked,
    framer: Framer,
    ack: Option<(u32, u32)>,
    /// Channel messages (not base ones) received.
    messages: u64,
}

impl Reader {
    fn new(link: Linked, rest: &[u8]) -> Reader {
        let mut framer = Framer::with_limit(HeaderKind::Mini, 64 << 20);
        framer.push(rest);
        Reader {
            link,
            framer,
            ack: None,
            messages: 0,
        }
    }

    fn send(&self, s: &mut Server, m: &DisplayClient, now: u64) {
        let mut b = Vec::new();
        frame(HeaderKind::Mini, 0, m.msg_type(), &m.to_body(), &mut b);
        s.handle_bytes(self.link.conn, &b, now);
    }

    /// Read everything queued, answering set_ack and acking as a client does.
    fn read(&mut self, s: &mut Server, now: u64) {
        self.framer.push(&drain(s, self.link.conn));
        while let Ok(Some(m)) = self.framer.next() {
            if let Some((w, left)) = self.ack.as_mut() {
                *left -= 1;
                if *left == 0 {
                    *left = *w;
                    self.send(s, &DisplayClient::Base(BaseClient::Ack), now);
                }
            }
            match BaseServer::try_decode(m.header.msg_type, &m.body) {
                Some(Ok(BaseServer::SetAck(a))) => {
                    self.send(
                        s,
                        &DisplayClient::Base(BaseClient::AckSync(a.generation)),
                        now,
                    );
                    self.ack = Some((a.window.max(1), a.window.max(1)));
                }
                Some(_) => {}
                None => self.messages += 1,
            }
        }
    }
}

/// A client's display and cursor channels.
fn client(s: &mut Server) -> Option<(Reader, Reader)> {
    let (_, sid, _) = link(s, ChannelType::Main, 0)?;
    let sid = sid?;
    let (d, _, d_rest) = link(s, ChannelType::Display, sid)?;
    let (c, _, c_rest) = link(s, ChannelType::Cursor, sid)?;
    let display = Reader::new(d, &d_rest);
    display.send(
        s,
        &DisplayClient::Init(DisplayInit {
            pixmap_cache_id: 1,
            pixmap_cache_size: 1 << 20,
            glz_dictionary_id: 1,
            glz_dictionary_window_size: 1 << 20,
        }),
        0,
    );
    Some((display, Reader::new(c, &c_rest)))
}

/// The whole-guest target. Input: a [`Guest`], read with `arbitrary`.
pub fn whole_guest(data: &[u8]) {
    if data.len() < <Guest as Arbitrary>::size_hint(0).0 {
        return;
    }
    let Ok(g) = Guest::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let _ = run_guest(&g);
}

/// Run one guest; panics when an invariant does not hold.
pub fn run_guest(g: &Guest) -> Summary {
    let (width, height) = (16 + u32::from(g.size.0), 16 + u32::from(g.size.1));
    let compression = [
        ImageCompression::AutoGlz,
        ImageCompression::AutoLz,
        ImageCompression::Quic,
        ImageCompression::Glz,
        ImageCompression::Lz,
        ImageCompression::Off,
    ][usize::from(g.compression % 6)];
    let mut cfg = Config {
        ticketing: Ticketing::Disabled,
        fresh_key_per_link: false,
        image_compression: compression,
        output_cap: 256 << 10,
        ..Config::default()
    };
    cfg.seed = 1u64.into();
    // The canvas budgets scaled to the fuzz guest's small screens (at most 271x271): the same
    // code and refusals as the defaults, a few milliseconds of work per input at most.
    let canvas = &mut cfg.budgets.canvas;
    canvas.max_draw_work = canvas.max_draw_work.min(1 << 20);
    canvas.max_path_points = canvas.max_path_points.min(1 << 12);
    canvas.max_clip_rects = canvas.max_clip_rects.min(1 << 10);
    // A log small enough that a few of the guest's images fill it, so its eviction runs.
    cfg.budgets.display_log_bytes = 1 << 20;
    let log_cap = cfg.budgets.display_log_bytes;
    let output_cap = cfg.output_cap;
    let mut s = Server::new(cfg);
    s.set_link_key(key());
    let releases = Rc::new(RefCell::new(Releases::default()));
    let mut slots = MemSlots::new(8, 8);
    let ram = Ram::new(RAM_BASE, RAM_SIZE);
    slots.add(ram.slot(SLOT_ID, SLOT_GEN));
    let mut w = Writer {
        ram,
        slots,
        next_id: 1,
        issued: 0,
    };
    let mut pending: Vec<(QxlCommand, bool)> = Vec::new();
    let mut events: Vec<QxlEvent> = Vec::new();
    for step in &g.steps {
        if w.issued >= MAX_COMMANDS {
            break;
        }
        match step {
            Step::Monitors {
                count,
                max_allowed,
                heads,
            } => {
                let mut b = QxlMonitorsConfig {
                    count: *count,
                    max_allowed: *max_allowed,
                }
                .to_bytes();
                for (sid, x, y, hw, hh) in heads.iter().take(16) {
                    b.extend(
                        QxlHead {
                            id: 0,
                            surface_id: u32::from(*sid % 4),
                            width: u32::from(*hw),
                            height: u32::from(*hh),
                            x: u32::from(*x),
                            y: u32::from(*y),
                            flags: 0,
                        }
                        .to_bytes(),
                    );
                }
                if let Some(addr) = w.put(&b) {
                    events.push(QxlEvent::MonitorsConfig { addr, group_id: 0 });
                }
            }
            Step::Tick { .. } => {}
            _ => {
                if let Some(c) = w.step(step) {
                    releases.borrow_mut().outstanding.insert(w.next_id);
                    w.next_id += 1;
                    w.issued += 1;
                    pending.push(c);
                }
            }
        }
    }
    // All of the guest's memory is written before the server runs: hand it to the device with
    // the commands, then play the ticks.
    let w_issued = w.issued;
    let mut dev = FuzzQxl {
        ram: w.ram,
        width,
        height,
        events,
        started: false,
        commands: VecDeque::new(),
        cursor: VecDeque::new(),
        releases: releases.clone(),
    };
    let ticks: Vec<u64> = g
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Tick { ms } => Some(u64::from(*ms)),
            _ => None,
        })
        .collect();
    // Commands reach the rings in order, spread over the ticks.
    let per_tick = pending.len().div_ceil(ticks.len().max(1)).max(1);
    let mut queued: VecDeque<(QxlCommand, bool)> = pending.into();
    let mut first = Vec::new();
    for _ in 0..per_tick {
        if let Some(c) = queued.pop_front() {
            first.push(c);
        }
    }
    for (cmd, cursor) in first {
        let c = QxlCommandExt {
            cmd,
            group_id: 0,
            flags: 0,
        };
        if cursor {
            dev.cursor.push_back(c);
        } else {
            dev.commands.push_back(c);
        }
    }
    // The device is behind a shared handle so later ticks can feed it.
    let shared = Rc::new(RefCell::new(dev));
    s.display().set_qxl(Box::new(Shared(shared.clone())));
    s.handle_timeout(0);
    let (Some((mut fast_d, mut fast_c)), Some((_slow_d, _slow_c))) =
        (client(&mut s), client(&mut s))
    else {
        panic!("linking the clients failed");
    };
    let mut now = 0;
    // One message: a draw carries up to three images (source, mask, pattern brush), each at
    // most a full surface (the primary, or a surface or bitmap of up to 255x255 pixels), or a
    // cursor shape, with its headers. (A draw_blend of a 255x255 source and mask, 525 KB, was
    // flagged when this allowed one image.)
    let one_message = 3 * (4 * (width * height).max(255 * 255)) as usize + (64 << 10);
    let bound = output_cap + one_message;
    let check_queues = |s: &mut Server| {
        // Every connection: the slow client's (which never reads) most of all.
        let q = s.max_queued_bytes();
        assert!(
            q <= bound,
            "{q} bytes queued for one connection (cap {output_cap} and one message)"
        );
        // The drawables held for clients that are behind stay within their budget.
        let held = s.display().held_bytes();
        assert!(
            held <= log_cap,
            "{held} bytes of drawables held (display_log_bytes {log_cap})"
        );
    };
    for ms in ticks.iter().copied().chain([100, 100, 1000]) {
        now += ms + 1;
        {
            let mut d = shared.borrow_mut();
            for _ in 0..per_tick {
                if let Some((cmd, cursor)) = queued.pop_front() {
                    let c = QxlCommandExt {
                        cmd,
                        group_id: 0,
                        flags: 0,
                    };
                    if cursor {
                        d.cursor.push_back(c);
                    } else {
                        d.commands.push_back(c);
                    }
                }
            }
        }
        s.handle_timeout(now);
        check_queues(&mut s);
        fast_d.read(&mut s, now);
        fast_c.read(&mut s, now);
        check_queues(&mut s);
    }
    // Time until every command has been taken (each is released once parsed).
    for _ in 0..50 {
        if shared.borrow().commands.is_empty() && shared.borrow().cursor.is_empty() {
            break;
        }
        now += 100;
        s.handle_timeout(now);
        fast_d.read(&mut s, now);
        fast_c.read(&mut s, now);
        check_queues(&mut s);
    }
    // The guest resets the device.
    shared.borrow_mut().events.push(QxlEvent::Reset);
    now += 100;
    s.handle_timeout(now);
    fast_d.read(&mut s, now);
    let r = releases.borrow();
    assert!(r.errors.is_empty(), "bad releases: {:?}", r.errors);
    let d = shared.borrow();
    if d.commands.is_empty() && d.cursor.is_empty() {
        assert!(
            r.outstanding.is_empty(),
            "taken and never released: {:?}",
            r.outstanding
        );
    }
    Summary {
        issued: w_issued,
        outstanding: r.outstanding.len(),
        display_messages: fast_d.messages,
        cursor_messages: fast_c.messages,
    }
}

/// What one [`run_guest`] did (for the tests that check the target is not vacuous).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Commands the guest put on the rings.
    pub issued: usize,
    /// Commands not released at the end.
    pub outstanding: usize,
    /// Display and cursor messages the fast client received.
    pub display_messages: u64,
    pub cursor_messages: u64,
}

/// The device behind a shared handle (the server owns a `Box<dyn QxlDevice>`).
struct Shared(Rc<RefCell<FuzzQxl>>);

impl QxlDevice for Shared {
    fn init_info(&self) -> QxlInitInfo {
        self.0.borrow().init_info()
    }
    fn memory(&self) -> &dyn GuestMemory {
        self
    }
    fn run(&mut self, now_ms: u64) -> Vec<QxlEvent> {
        self.0.borrow_mut().run(now_ms)
    }
    fn get_command(&mut self) -> Option<QxlCommandExt> {
        self.0.borrow_mut().get_command()
    }
    fn get_cursor_command(&mut self) -> Option<QxlCommandExt> {
        self.0.borrow_mut().get_cursor_command()
    }
    fn release(&mut self, id: u64, group_id: u32) {
        self.0.borrow_mut().release(id, group_id)
    }
    fn next_wakeup(&self) -> Option<u64> {
        self.0.borrow().next_wakeup()
    }
}

impl GuestMemory for Shared {
    fn read(&self, addr: u64, out: &mut [u8]) -> bool {
        self.0.borrow().ram.read(addr, out)
    }
}
