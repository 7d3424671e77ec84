//! QXL commands from guest memory: memory slots, a bounds-checked reader, and the parser that
//! turns a command into spice-proto display and cursor messages.
//!
//! Guest memory is hostile. Every structure is read through [`MemSlots::translate`] (slot id,
//! group, generation, range and overflow checked) and *copied out*: nothing the guest changes
//! after a command is parsed can reach the server, so a command's resources go back to the
//! guest (release ring) as soon as it is parsed. Chunk lists are followed with a cap on their
//! number and total size (a circular list ends at the cap); every count read from the guest is
//! checked against those caps and against the bytes it implies before anything is allocated.
//!
//! Must not: panic on any guest input, or allocate more than [`Budget`] allows per command.

use std::collections::BTreeMap;

use spice_proto::display::{
    AlphaFlags, BitmapData, BitmapFlags, BitmapFmt, BitmapPalette, Brush, Clip, Composite,
    CompositeFlags, Copy, DisplayBase, Draw, Fill, GlyphString, Glyphs, Image, ImageData,
    ImageFlags, ImageScaleMode, LineAttr, LineFlags, LineStyle, MaskFlags, MaskOnly, Opaque,
    Palette, Path, PathFlags, PathSegment, Pattern, QMask, RasterGlyph, Rop3, Ropd, StringFlags,
    Stroke, Text, Transparent,
};
use spice_proto::messages::display::CopyBits;
use spice_proto::messages::DisplayServer;
use spice_proto::qxl::{self, *};
use spice_proto::types::{Point, Point16, PointFix, Rect, Transform};

use crate::vdi::{GuestMemory, MemSlot};

/// Why a QXL command was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QxlError {
    #[error("address {addr:#x}: slot {slot} (group {group}) does not exist")]
    BadSlot { addr: u64, group: u32, slot: u32 },
    #[error("address {addr:#x}: generation {got} but slot {slot} is at {want}")]
    BadGeneration {
        addr: u64,
        slot: u32,
        got: u32,
        want: u32,
    },
    #[error("address {addr:#x}+{len}: outside slot {slot}")]
    OutOfRange { addr: u64, len: u64, slot: u32 },
    #[error("null address for {0}")]
    Null(&'static str),
    #[error("the device could not read {len} bytes at {addr:#x}")]
    Read { addr: u64, len: u64 },
    #[error("{0}: chunk list too long or circular")]
    TooManyChunks(&'static str),
    #[error("command needs more than {0} bytes of guest data (qxl_command_bytes)")]
    TooMuchData(u64),
    #[error("{what}: invalid value {value}")]
    BadValue { what: &'static str, value: u64 },
    #[error("{0}: sizes do not agree")]
    Inconsistent(&'static str),
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    #[error(
        "cursor shape of type {cursor_type}, {width}x{height}: {got} bytes of data, needs {want}"
    )]
    CursorDataSize {
        cursor_type: u16,
        width: u16,
        height: u16,
        got: u64,
        want: u64,
    },
}

type Result<T> = std::result::Result<T, QxlError>;

/// The memory slots the device registered (`add_memslot`), and how addresses encode them.
#[derive(Debug, Clone)]
pub struct MemSlots {
    id_bits: u8,
    gen_bits: u8,
    slots: BTreeMap<(u32, u32), MemSlot>,
}

impl MemSlots {
    /// `id_bits` and `gen_bits` as the device's ROM gives them (`slot_id_bits`,
    /// `slot_gen_bits`); clamped so the masks stay meaningful.
    pub fn new(id_bits: u8, gen_bits: u8) -> MemSlots {
        let id_bits = id_bits.clamp(1, 16);
        let gen_bits = gen_bits.clamp(1, 16);
        MemSlots {
            id_bits,
            gen_bits,
            slots: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, s: MemSlot) {
        self.slots.insert((s.group_id, s.slot_id), s);
    }

    pub fn remove(&mut self, group_id: u32, slot_id: u32) {
        self.slots.remove(&(group_id, slot_id));
    }

    pub fn clear(&mut self) {
        self.slots.clear();
    }

    /// The guest address of `offset` in slot `slot_id` with `generation` (for devices and
    /// tests building addresses).
    pub fn encode(&self, slot_id: u32, generation: u8, offset: u64) -> u64 {
        let id_shift = 64 - self.id_bits as u32;
        let gen_shift = id_shift - self.gen_bits as u32;
        ((slot_id as u64) << id_shift)
            | (((generation as u64) & ((1 << self.gen_bits) - 1)) << gen_shift)
            | (offset & self.clean_mask())
    }

    fn clean_mask(&self) -> u64 {
        u64::MAX >> (self.id_bits + self.gen_bits)
    }

    /// The device address of `len` bytes at guest address `addr` (group `group`), checked.
    pub fn translate(&self, group: u32, addr: u64, len: u64) -> Result<u64> {
        let id_shift = 64 - self.id_bits as u32;
        let gen_shift = id_shift - self.gen_bits as u32;
        let slot = (addr >> id_shift) as u32;
        // Compared at full width: with more than 8 generation bits, a generation that only
        // agrees in its low byte is a stale address, not this slot.
        let generation = ((addr >> gen_shift) & ((1u64 << self.gen_bits) - 1)) as u32;
        let s = self
            .slots
            .get(&(group, slot))
            .ok_or(QxlError::BadSlot { addr, group, slot })?;
        if u32::from(s.generation) != generation {
            return Err(QxlError::BadGeneration {
                addr,
                slot,
                got: generation,
                want: u32::from(s.generation),
            });
        }
        let virt = (addr & self.clean_mask())
            .checked_add(s.delta)
            .ok_or(QxlError::OutOfRange { addr, len, slot })?;
        let end = virt
            .checked_add(len)
            .ok_or(QxlError::OutOfRange { addr, len, slot })?;
        if virt < s.start || end > s.end {
            return Err(QxlError::OutOfRange { addr, len, slot });
        }
        Ok(virt)
    }
}

/// Per-command limits on what may be copied out of guest memory.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Bytes left for this command.
    pub bytes: u64,
}

/// Most chunks one list may have (the reference allows 2M; a real driver uses a handful).
pub const MAX_CHUNKS: u32 = 65_536;
/// Default bytes one command may copy out (a 4K screen of 32-bit pixels, with room).
pub const DEFAULT_COMMAND_BYTES: u64 = 80 << 20;
/// Most clip rectangles, path points, glyphs, palette entries one command may have.
pub const MAX_ITEMS: u64 = 1 << 20;

/// Reads guest memory for one command.
pub struct Reader<'a> {
    pub slots: &'a MemSlots,
    pub mem: &'a dyn GuestMemory,
    pub group: u32,
    pub budget: Budget,
}

impl Reader<'_> {
    /// Copy `len` bytes at `addr`.
    pub fn bytes(&mut self, addr: u64, len: u64) -> Result<Vec<u8>> {
        if len > self.budget.bytes {
            return Err(QxlError::TooMuchData(self.budget.bytes));
        }
        let virt = self.slots.translate(self.group, addr, len)?;
        self.budget.bytes -= len;
        let mut v = vec![0; len as usize];
        if !self.mem.read(virt, &mut v) {
            return Err(QxlError::Read { addr, len });
        }
        Ok(v)
    }

    /// A fixed-size structure at `addr`.
    pub fn read<T>(&mut self, addr: u64, size: usize, f: fn(&[u8]) -> Option<T>) -> Result<T> {
        let b = self.bytes(addr, size as u64)?;
        f(&b).ok_or(QxlError::Inconsistent("structure"))
    }

    /// The data of the chunk list whose first [`QxlDataChunk`] header is at `addr`, at most
    /// `max` bytes in all.
    pub fn chunks(&mut self, addr: u64, max: u64, what: &'static str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = addr;
        let mut n = 0u32;
        loop {
            let h = self.read(at, QxlDataChunk::SIZE, QxlDataChunk::read)?;
            if out.len() as u64 + h.data_size as u64 > max {
                return Err(QxlError::Inconsistent(what));
            }
            if h.data_size > 0 {
                let data_addr = offset(at, QxlDataChunk::SIZE as u64)?;
                out.extend(self.bytes(data_addr, h.data_size as u64)?);
            }
            if h.next_chunk == 0 {
                return Ok(out);
            }
            n += 1;
            if n >= MAX_CHUNKS {
                return Err(QxlError::TooManyChunks(what));
            }
            at = h.next_chunk;
        }
    }
}

/// `addr + off` (the offset lives in the low bits; a carry into the slot bits is an error the
/// translation then reports as out of range, so only overflow of u64 is checked here).
fn offset(addr: u64, off: u64) -> Result<u64> {
    addr.checked_add(off).ok_or(QxlError::OutOfRange {
        addr,
        len: off,
        slot: 0,
    })
}

/// A parsed command; every variant carries the release id to give back.
#[derive(Debug, Clone)]
pub enum Command {
    /// A drawable: its target surface and the display message that draws it.
    Draw {
        release: u64,
        surface_id: u32,
        msg: DisplayServer,
    },
    /// `QXL_CMD_UPDATE`: the guest wants an area rendered (we render every drawable).
    Update {
        release: u64,
    },
    /// `QXL_CMD_MESSAGE`: a log line from the driver.
    Message {
        release: u64,
        text: String,
    },
    SurfaceCreate {
        release: u64,
        surface_id: u32,
        width: u32,
        height: u32,
        stride: i32,
        format: u32,
        data: u64,
    },
    SurfaceDestroy {
        release: u64,
        surface_id: u32,
    },
    Cursor {
        release: u64,
        cmd: CursorCommand,
    },
}

/// A cursor ring command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorCommand {
    Set {
        position: Point16,
        visible: bool,
        shape: Option<CursorShape>,
    },
    Move(Point16),
    Hide,
    Trail {
        length: u16,
        frequency: u16,
    },
}

/// A cursor shape copied out of guest memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorShape {
    pub header: QxlCursorHeader,
    pub data: Vec<u8>,
}

/// The release id at the start of every command structure, if it can be read.
pub fn release_id(r: &mut Reader<'_>, addr: u64) -> Result<u64> {
    let b = r.bytes(addr, 8)?;
    Ok(u64::from_le_bytes(b.try_into().unwrap_or_default()))
}

/// Parse the command `c` (from the command or cursor ring). `flags` are the command's
/// `QXLCommandExt` flags (compat drawables).
pub fn parse(r: &mut Reader<'_>, c: &QxlCommand, flags: u32) -> Result<Command> {
    if c.data == 0 {
        return Err(QxlError::Null("command"));
    }
    match c.cmd_type {
        qxl::cmd::DRAW => parse_drawable(r, c.data, flags),
        qxl::cmd::UPDATE => {
            let u = r.read(c.data, QxlUpdateCmd::SIZE, QxlUpdateCmd::read)?;
            Ok(Command::Update {
                release: u.release_info,
            })
        }
        qxl::cmd::MESSAGE => {
            let m = r.read(c.data, QxlMessage::SIZE, QxlMessage::read)?;
            // A NUL-terminated string follows; read what the slot allows, at most 1 KiB.
            let mut text = String::new();
            let at = offset(c.data, 8)?;
            for len in [1024u64, 256, 64, 16, 1] {
                if let Ok(b) = r.bytes(at, len) {
                    let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
                    text = String::from_utf8_lossy(&b[..end]).into_owned();
                    break;
                }
            }
            Ok(Command::Message {
                release: m.release_info,
                text,
            })
        }
        qxl::cmd::SURFACE => {
            let s = r.read(c.data, QxlSurfaceCmd::SIZE, QxlSurfaceCmd::read)?;
            match s.cmd_type {
                0 => Ok(Command::SurfaceCreate {
                    release: s.release_info,
                    surface_id: s.surface_id,
                    width: s.surface.width,
                    height: s.surface.height,
                    stride: s.surface.stride,
                    format: s.surface.format,
                    data: s.surface.data,
                }),
                1 => Ok(Command::SurfaceDestroy {
                    release: s.release_info,
                    surface_id: s.surface_id,
                }),
                v => Err(QxlError::BadValue {
                    what: "surface command",
                    value: v as u64,
                }),
            }
        }
        qxl::cmd::CURSOR => parse_cursor(r, c.data),
        v => Err(QxlError::BadValue {
            what: "command type",
            value: v as u64,
        }),
    }
}

fn parse_cursor(r: &mut Reader<'_>, addr: u64) -> Result<Command> {
    let c = r.read(addr, QxlCursorCmd::SIZE, QxlCursorCmd::read)?;
    let u = &c.u.0;
    let p16 = |o: usize| Point16 {
        x: i16::from_le_bytes([u[o], u[o + 1]]),
        y: i16::from_le_bytes([u[o + 2], u[o + 3]]),
    };
    let cmd = match c.cmd_type {
        qxl::cursor_cmd::SET => {
            let shape_addr = u64::from_le_bytes(u[5..13].try_into().unwrap_or_default());
            let shape = if shape_addr == 0 {
                None
            } else {
                let h = r.read(shape_addr, QxlCursor::SIZE, QxlCursor::read)?;
                let w = h.header.width as u64;
                let ht = h.header.height as u64;
                if w > 512 || ht > 512 {
                    return Err(QxlError::BadValue {
                        what: "cursor size",
                        value: w.max(ht),
                    });
                }
                // The data must be exactly what the shape needs: no more (the shape is sent
                // to every client), no less (clients read that much).
                let want =
                    cursor_data_size(h.header.cursor_type, w, ht).ok_or(QxlError::BadValue {
                        what: "cursor type",
                        value: h.header.cursor_type as u64,
                    })?;
                if h.data_size as u64 != want {
                    return Err(QxlError::CursorDataSize {
                        cursor_type: h.header.cursor_type,
                        width: h.header.width,
                        height: h.header.height,
                        got: h.data_size as u64,
                        want,
                    });
                }
                let data = r.chunks(
                    offset(shape_addr, QxlCursor::SIZE as u64)?,
                    h.data_size as u64,
                    "cursor shape",
                )?;
                if data.len() as u64 != h.data_size as u64 {
                    return Err(QxlError::Inconsistent("cursor data_size"));
                }
                Some(CursorShape {
                    header: h.header,
                    data,
                })
            };
            CursorCommand::Set {
                position: p16(0),
                visible: u[4] != 0,
                shape,
            }
        }
        qxl::cursor_cmd::MOVE => CursorCommand::Move(p16(0)),
        qxl::cursor_cmd::HIDE => CursorCommand::Hide,
        qxl::cursor_cmd::TRAIL => CursorCommand::Trail {
            length: u16::from_le_bytes([u[0], u[1]]),
            frequency: u16::from_le_bytes([u[2], u[3]]),
        },
        v => {
            return Err(QxlError::BadValue {
                what: "cursor command",
                value: v as u64,
            })
        }
    };
    Ok(Command::Cursor {
        release: c.release_info,
        cmd,
    })
}

/// The bytes of data a cursor shape of `cursor_type` and `w`×`h` pixels has
/// (`SPICE_CURSOR_TYPE_*`, laid out as spice-gtk and the reference canvas read them): the
/// pixels, the palette of the palette types, and the 1-bit AND mask of every type but alpha.
/// `None` for an unknown type.
pub fn cursor_data_size(cursor_type: u16, w: u64, h: u64) -> Option<u64> {
    let mask = w.div_ceil(8) * h;
    Some(match cursor_type {
        0 => 4 * w * h,
        1 => 2 * mask,
        2 => w.div_ceil(2) * h + 16 * 4 + mask,
        3 => w * h + 256 * 4 + mask,
        4 => 2 * w * h + mask,
        5 => 3 * w * h + mask,
        6 => 4 * w * h + mask,
        _ => return None,
    })
}

fn rect(r: &QxlRect) -> Rect {
    Rect {
        top: r.top,
        left: r.left,
        bottom: r.bottom,
        right: r.right,
    }
}

fn point(p: &QxlPoint) -> Point {
    Point { x: p.x, y: p.y }
}

fn parse_drawable(r: &mut Reader<'_>, addr: u64, flags: u32) -> Result<Command> {
    let (release, surface_id, draw_type, bbox, clip, u, compat) =
        if flags & qxl::COMMAND_FLAG_COMPAT != 0 {
            let d = r.read(addr, QxlCompatDrawable::SIZE, QxlCompatDrawable::read)?;
            (d.release_info, 0, d.draw_type, d.bbox, d.clip, d.u.0, true)
        } else {
            let d = r.read(addr, QxlDrawable::SIZE, QxlDrawable::read)?;
            (
                d.release_info,
                d.surface_id,
                d.draw_type,
                d.bbox,
                d.clip,
                d.u.0,
                false,
            )
        };
    let base = DisplayBase {
        surface_id,
        bbox: rect(&bbox),
        clip: parse_clip(r, &clip)?,
    };
    let bad = |what| QxlError::Inconsistent(what);
    use qxl::draw as d;
    let msg = match draw_type {
        d::FILL => {
            let f = QxlFill::read(&u).ok_or(bad("fill"))?;
            DisplayServer::DrawFill(Draw {
                base,
                data: Fill {
                    brush: brush(r, &f.brush)?,
                    rop_descriptor: Ropd(f.rop_descriptor),
                    mask: mask(r, &f.mask)?,
                },
            })
        }
        d::OPAQUE => {
            let o = QxlOpaque::read(&u).ok_or(bad("opaque"))?;
            DisplayServer::DrawOpaque(Draw {
                base,
                data: Opaque {
                    src_bitmap: Some(Box::new(image(r, o.src_bitmap, false)?)),
                    src_area: rect(&o.src_area),
                    brush: brush(r, &o.brush)?,
                    rop_descriptor: Ropd(o.rop_descriptor),
                    scale_mode: scale(o.scale_mode)?,
                    mask: mask(r, &o.mask)?,
                },
            })
        }
        d::COPY | d::BLEND => {
            let c = QxlCopy::read(&u).ok_or(bad("copy"))?;
            let data = Copy {
                src_bitmap: Some(Box::new(image(r, c.src_bitmap, false)?)),
                src_area: rect(&c.src_area),
                rop_descriptor: Ropd(c.rop_descriptor),
                scale_mode: scale(c.scale_mode)?,
                mask: mask(r, &c.mask)?,
            };
            if draw_type == d::COPY {
                DisplayServer::DrawCopy(Draw { base, data })
            } else {
                DisplayServer::DrawBlend(Draw { base, data })
            }
        }
        d::COPY_BITS => {
            let c = QxlCopyBits::read(&u).ok_or(bad("copy_bits"))?;
            DisplayServer::CopyBits(CopyBits {
                base,
                src_pos: point(&c.src_pos),
            })
        }
        d::BLACKNESS | d::WHITENESS | d::INVERS => {
            let m = QxlMaskOnly::read(&u).ok_or(bad("mask"))?;
            let data = MaskOnly {
                mask: mask(r, &m.mask)?,
            };
            let draw = Draw { base, data };
            match draw_type {
                d::BLACKNESS => DisplayServer::DrawBlackness(draw),
                d::WHITENESS => DisplayServer::DrawWhiteness(draw),
                _ => DisplayServer::DrawInvers(draw),
            }
        }
        d::ROP3 => {
            let o = QxlRop3::read(&u).ok_or(bad("rop3"))?;
            DisplayServer::DrawRop3(Draw {
                base,
                data: Rop3 {
                    src_bitmap: Some(Box::new(image(r, o.src_bitmap, false)?)),
                    src_area: rect(&o.src_area),
                    brush: brush(r, &o.brush)?,
                    rop3: o.rop3,
                    scale_mode: scale(o.scale_mode)?,
                    mask: mask(r, &o.mask)?,
                },
            })
        }
        d::TRANSPARENT => {
            let t = QxlTransparent::read(&u).ok_or(bad("transparent"))?;
            DisplayServer::DrawTransparent(Draw {
                base,
                data: Transparent {
                    src_bitmap: Some(Box::new(image(r, t.src_bitmap, false)?)),
                    src_area: rect(&t.src_area),
                    src_color: t.src_color,
                    true_color: t.true_color,
                },
            })
        }
        d::ALPHA_BLEND => {
            let (alpha_flags, alpha, src, area) = if compat {
                let a = QxlCompatAlphaBlend::read(&u).ok_or(bad("alpha_blend"))?;
                (0u16, a.alpha, a.src_bitmap, a.src_area)
            } else {
                let a = QxlAlphaBlend::read(&u).ok_or(bad("alpha_blend"))?;
                (a.alpha_flags, a.alpha, a.src_bitmap, a.src_area)
            };
            DisplayServer::DrawAlphaBlend(Draw {
                base,
                data: spice_proto::display::AlphaBlend {
                    alpha_flags: AlphaFlags((alpha_flags & 0x3) as u8),
                    alpha,
                    src_bitmap: Some(Box::new(image(r, src, false)?)),
                    src_area: rect(&area),
                },
            })
        }
        d::STROKE => {
            let s = QxlStroke::read(&u).ok_or(bad("stroke"))?;
            DisplayServer::DrawStroke(Draw {
                base,
                data: Stroke {
                    path: path(r, s.path)?,
                    attr: line_attr(r, &s.attr)?,
                    brush: brush(r, &s.brush)?,
                    fore_mode: s.fore_mode,
                    back_mode: s.back_mode,
                },
            })
        }
        d::TEXT => {
            let t = QxlText::read(&u).ok_or(bad("text"))?;
            DisplayServer::DrawText(Draw {
                base,
                data: Text {
                    str: glyph_string(r, t.str_)?,
                    back_area: rect(&t.back_area),
                    fore_brush: brush(r, &t.fore_brush)?,
                    back_brush: brush(r, &t.back_brush)?,
                    fore_mode: t.fore_mode,
                    back_mode: t.back_mode,
                },
            })
        }
        d::COMPOSITE => {
            let c = QxlComposite::read(&u).ok_or(bad("composite"))?;
            let transform = |r: &mut Reader<'_>, a: u64| -> Result<Option<Transform>> {
                if a == 0 {
                    return Ok(None);
                }
                let t = r.read(a, QxlTransform::SIZE, QxlTransform::read)?;
                Ok(Some(Transform {
                    t00: t.t00,
                    t01: t.t01,
                    t02: t.t02,
                    t10: t.t10,
                    t11: t.t11,
                    t12: t.t12,
                }))
            };
            let has_mask = c.mask != 0;
            DisplayServer::DrawComposite(Draw {
                base,
                data: Composite {
                    // The HAS_* switches are derived from the options on the wire.
                    flags: CompositeFlags(c.flags & 0x7_ffff),
                    src_bitmap: Some(Box::new(image(r, c.src, false)?)),
                    mask_bitmap: if has_mask {
                        Some(Some(Box::new(image(r, c.mask, false)?)))
                    } else {
                        None
                    },
                    src_transform: transform(r, c.src_transform)?,
                    mask_transform: transform(r, c.mask_transform)?,
                    src_origin: Point16 {
                        x: c.src_origin.x,
                        y: c.src_origin.y,
                    },
                    mask_origin: Point16 {
                        x: c.mask_origin.x,
                        y: c.mask_origin.y,
                    },
                },
            })
        }
        d::NOP => return Err(QxlError::Unsupported("NOP drawable")),
        v => {
            return Err(QxlError::BadValue {
                what: "drawable type",
                value: v as u64,
            })
        }
    };
    Ok(Command::Draw {
        release,
        surface_id,
        msg,
    })
}

fn scale(v: u8) -> Result<ImageScaleMode> {
    match v {
        0 => Ok(ImageScaleMode::Interpolate),
        1 => Ok(ImageScaleMode::Nearest),
        v => Err(QxlError::BadValue {
            what: "scale mode",
            value: v as u64,
        }),
    }
}

fn parse_clip(r: &mut Reader<'_>, c: &QxlClip) -> Result<Clip> {
    match c.clip_type {
        0 => Ok(Clip::None),
        1 => {
            let h = r.read(c.data, QxlClipRects::SIZE, QxlClipRects::read)?;
            let n = h.num_rects as u64;
            if n > MAX_ITEMS {
                return Err(QxlError::BadValue {
                    what: "clip rectangles",
                    value: n,
                });
            }
            let want = n * QxlRect::SIZE as u64;
            let data = r.chunks(offset(c.data, 4)?, want, "clip rects")?;
            if data.len() as u64 != want {
                return Err(QxlError::Inconsistent("clip rects"));
            }
            Ok(Clip::Rects(
                data.chunks_exact(QxlRect::SIZE)
                    .filter_map(QxlRect::read)
                    .map(|q| rect(&q))
                    .collect(),
            ))
        }
        v => Err(QxlError::BadValue {
            what: "clip type",
            value: v as u64,
        }),
    }
}

fn brush(r: &mut Reader<'_>, b: &QxlBrush) -> Result<Brush> {
    match b.brush_type {
        0 => Ok(Brush::None),
        1 => Ok(Brush::Solid(b.color())),
        2 => {
            let p = b.pattern();
            Ok(Brush::Pattern(Pattern {
                pat: Box::new(image(r, p.pat, false)?),
                pos: point(&p.pos),
            }))
        }
        v => Err(QxlError::BadValue {
            what: "brush type",
            value: v as u64,
        }),
    }
}

fn mask(r: &mut Reader<'_>, m: &QxlQMask) -> Result<QMask> {
    Ok(QMask {
        flags: MaskFlags(m.flags & 1),
        pos: point(&m.pos),
        bitmap: if m.bitmap == 0 {
            None
        } else {
            Some(Box::new(image(r, m.bitmap, true)?))
        },
    })
}

/// Bytes one row of `x` pixels of SPICE bitmap format `fmt` takes.
fn row_bytes(fmt: u8, x: u32) -> Option<u64> {
    let bits: u64 = match fmt {
        1 | 2 => 1,
        3 | 4 => 4,
        5 | 10 => 8,
        6 => 16,
        7 => 24,
        8 | 9 => 32,
        _ => return None,
    };
    Some((x as u64 * bits).div_ceil(8))
}

/// A `QXLImage` at `addr`, its pixels copied out.
pub fn image(r: &mut Reader<'_>, addr: u64, is_mask: bool) -> Result<Image> {
    if addr == 0 {
        return Err(QxlError::Null("image"));
    }
    let q = r.read(addr, QxlImage::SIZE.min(18 + 30), QxlImage::read)?;
    let desc = q.descriptor;
    let mut flags = ImageFlags::EMPTY;
    if desc.flags & qxl::image_flags::CACHE != 0 {
        flags = flags.with(ImageFlags::CACHE_ME, true);
    }
    if desc.flags & qxl::image_flags::HIGH_BITS_SET != 0 {
        flags = flags.with(ImageFlags::HIGH_BITS_SET, true);
    }
    let data = match desc.image_type {
        // SPICE_IMAGE_TYPE_BITMAP
        0 => {
            let b = QxlBitmap::read(&q.u.0).ok_or(QxlError::Inconsistent("bitmap"))?;
            let rb = row_bytes(b.format, b.x).ok_or(QxlError::BadValue {
                what: "bitmap format",
                value: b.format as u64,
            })?;
            if b.x == 0 || b.y == 0 {
                return Err(QxlError::Inconsistent("zero-area bitmap"));
            }
            if (b.stride as u64) < rb {
                return Err(QxlError::Inconsistent("bitmap stride"));
            }
            if (desc.width, desc.height) != (b.x, b.y) {
                return Err(QxlError::Inconsistent("bitmap size and descriptor"));
            }
            let size = b.y as u64 * b.stride as u64;
            let palette_fmt = matches!(b.format, 1..=5);
            let palette = if b.palette != 0 {
                let p = r.read(b.palette, QxlPalette::SIZE, QxlPalette::read)?;
                let ents = r.bytes(
                    offset(b.palette, QxlPalette::SIZE as u64)?,
                    p.num_ents as u64 * 4,
                )?;
                Some(Palette {
                    unique: p.unique,
                    ents: ents
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                })
            } else if palette_fmt && !is_mask {
                return Err(QxlError::Null("palette of a palette bitmap"));
            } else {
                None
            };
            let pixels = if b.flags & qxl::image_flags::BITMAP_DIRECT != 0 {
                if b.data == 0 {
                    return Err(QxlError::Null("bitmap data"));
                }
                r.bytes(b.data, size)?
            } else {
                let v = r.chunks(b.data, size, "bitmap data")?;
                if v.len() as u64 != size {
                    return Err(QxlError::Inconsistent("bitmap data size"));
                }
                v
            };
            let mut bf = BitmapFlags::EMPTY;
            if b.flags & qxl::image_flags::BITMAP_TOP_DOWN != 0 {
                bf = bf.with(BitmapFlags::TOP_DOWN, true);
            }
            ImageData::Bitmap(BitmapData {
                format: BitmapFmt::from_raw(b.format),
                flags: bf,
                x: b.x,
                y: b.y,
                stride: b.stride,
                palette: BitmapPalette::Inline(palette),
                data: pixels.into(),
            })
        }
        // SPICE_IMAGE_TYPE_QUIC: data_size, then a chunk list inline.
        1 => {
            let size = u32::from_le_bytes([q.u.0[0], q.u.0[1], q.u.0[2], q.u.0[3]]) as u64;
            let v = r.chunks(offset(addr, 18 + 4)?, size, "quic data")?;
            if v.len() as u64 != size {
                return Err(QxlError::Inconsistent("quic data size"));
            }
            ImageData::Quic(v.into())
        }
        // SPICE_IMAGE_TYPE_SURFACE
        104 => ImageData::Surface(u32::from_le_bytes([q.u.0[0], q.u.0[1], q.u.0[2], q.u.0[3]])),
        v => {
            return Err(QxlError::BadValue {
                what: "image type",
                value: v as u64,
            })
        }
    };
    Ok(Image {
        id: desc.id,
        flags,
        width: desc.width,
        height: desc.height,
        data,
    })
}

fn path(r: &mut Reader<'_>, addr: u64) -> Result<Path> {
    if addr == 0 {
        return Err(QxlError::Null("path"));
    }
    let h = r.read(addr, QxlPath::SIZE, QxlPath::read)?;
    let data = r.chunks(offset(addr, 4)?, h.data_size as u64, "path")?;
    let mut segments = Vec::new();
    let mut at = 0usize;
    while at + QxlPathSeg::SIZE <= data.len() {
        let s = QxlPathSeg::read(&data[at..]).ok_or(QxlError::Inconsistent("path"))?;
        at += QxlPathSeg::SIZE;
        let n = s.count as usize;
        let end = n
            .checked_mul(QxlPointFix::SIZE)
            .and_then(|b| at.checked_add(b))
            .filter(|&end| end <= data.len())
            .ok_or(QxlError::Inconsistent("path segment"))?;
        let points = data[at..end]
            .chunks_exact(QxlPointFix::SIZE)
            .filter_map(QxlPointFix::read)
            .map(|p| PointFix { x: p.x, y: p.y })
            .collect();
        at = end;
        segments.push(PathSegment {
            flags: PathFlags((s.flags & 0x1b) as u8),
            points,
        });
    }
    Ok(Path { segments })
}

fn line_attr(r: &mut Reader<'_>, a: &QxlLineAttr) -> Result<LineAttr> {
    let styled = a.flags & LineFlags::STYLED.0 != 0;
    let style = if styled && a.style_nseg > 0 {
        let b = r.bytes(a.style, a.style_nseg as u64 * 4)?;
        Some(LineStyle(
            b.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    } else {
        None
    };
    Ok(LineAttr {
        flags: LineFlags(a.flags & LineFlags::START_WITH_GAP.0),
        style,
    })
}

fn glyph_string(r: &mut Reader<'_>, addr: u64) -> Result<GlyphString> {
    if addr == 0 {
        return Err(QxlError::Null("string"));
    }
    let h = r.read(addr, QxlString::SIZE, QxlString::read)?;
    let data = r.chunks(
        offset(addr, QxlString::SIZE as u64)?,
        h.data_size as u64,
        "string",
    )?;
    let f = h.flags as u8;
    let bpp: usize = if f & StringFlags::RASTER_A1.0 != 0 {
        1
    } else if f & StringFlags::RASTER_A4.0 != 0 {
        4
    } else if f & StringFlags::RASTER_A8.0 != 0 {
        8
    } else {
        return Err(QxlError::Unsupported("vector glyphs"));
    };
    let mut glyphs = Vec::new();
    let mut at = 0usize;
    for _ in 0..h.length {
        let g = data
            .get(at..)
            .and_then(QxlRasterGlyph::read)
            .ok_or(QxlError::Inconsistent("glyph"))?;
        at += QxlRasterGlyph::SIZE;
        // Sized by the glyph's box, but only read from the bytes the guest paid for.
        let end = (g.width as usize)
            .checked_mul(bpp)
            .map(|b| b.div_ceil(8))
            .and_then(|row| row.checked_mul(g.height as usize))
            .and_then(|n| at.checked_add(n))
            .ok_or(QxlError::Inconsistent("glyph size"))?;
        let bits = data
            .get(at..end)
            .ok_or(QxlError::Inconsistent("glyph data"))?;
        at = end;
        glyphs.push(RasterGlyph {
            render_pos: point(&g.render_pos),
            glyph_origin: point(&g.glyph_origin),
            width: g.width,
            height: g.height,
            data: bits.to_vec().into(),
        });
    }
    Ok(GlyphString {
        flags: StringFlags(f & StringFlags::RASTER_TOP_DOWN.0),
        glyphs: match bpp {
            1 => Glyphs::A1(glyphs),
            4 => Glyphs::A4(glyphs),
            _ => Glyphs::A8(glyphs),
        },
    })
}

#[cfg(test)]
mod tests;
