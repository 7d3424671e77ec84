//! The QXL device ABI (spice-protocol `qxl_dev.h`): the packed little-endian structures a
//! guest driver writes into guest memory and the server reads through memory slots.
//!
//! Owns: the byte layout of each structure ([`QxlDrawable`], [`QxlImage`], [`QxlDataChunk`],
//! ...), read from and written to byte slices, and the ABI's constants. Does not: translate
//! addresses or follow pointers (that is the server's memory-slot reader, which bounds-checks
//! every access), nor interpret what a drawable means.
//!
//! Unions are kept as raw bytes (`u: [u8; N]`) and read as the member the type field names
//! (`QxlFill::read(&drawable.u)`).

/// A guest address: memory slot id and generation in the high bits, offset in the rest.
pub type QxlPhysical = u64;

/// A little-endian fixed-size field of a packed structure.
pub trait Field: Sized + Copy {
    const SIZE: usize;
    /// Read from `b` at `*o` (the caller checked the length) and advance.
    fn get(b: &[u8], o: &mut usize) -> Self;
    fn put(&self, out: &mut Vec<u8>);
}

macro_rules! prim_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            #[inline]
            fn get(b: &[u8], o: &mut usize) -> Self {
                let mut a = [0u8; core::mem::size_of::<$t>()];
                a.copy_from_slice(&b[*o..*o + Self::SIZE]);
                *o += Self::SIZE;
                <$t>::from_le_bytes(a)
            }
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
prim_field!(u8, u16, u32, u64, i16, i32);

impl<T: Field + Default, const N: usize> Field for [T; N] {
    const SIZE: usize = T::SIZE * N;
    fn get(b: &[u8], o: &mut usize) -> Self {
        let mut a = [T::default(); N];
        for x in a.iter_mut() {
            *x = T::get(b, o);
        }
        a
    }
    fn put(&self, out: &mut Vec<u8>) {
        for x in self {
            x.put(out);
        }
    }
}

macro_rules! qxl_struct {
    ($(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name { $( $(#[$fm])* pub $f: $t ),* }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $f: Default::default() ),* }
            }
        }

        impl $name {
            /// Bytes the structure takes (packed).
            pub const SIZE: usize = 0 $( + <$t as Field>::SIZE )*;

            /// Read from the start of `b`; `None` if `b` is shorter than [`Self::SIZE`].
            pub fn read(b: &[u8]) -> Option<Self> {
                if b.len() < Self::SIZE {
                    return None;
                }
                let mut o = 0;
                Some(<Self as Field>::get(b, &mut o))
            }

            /// The structure's bytes.
            pub fn to_bytes(&self) -> Vec<u8> {
                let mut v = Vec::with_capacity(Self::SIZE);
                self.put(&mut v);
                v
            }
        }

        impl Field for $name {
            const SIZE: usize = 0 $( + <$t as Field>::SIZE )*;
            #[allow(unused_variables)]
            fn get(b: &[u8], o: &mut usize) -> Self {
                $( let $f = <$t as Field>::get(b, o); )*
                $name { $( $f ),* }
            }
            #[allow(unused_variables)]
            fn put(&self, out: &mut Vec<u8>) {
                $( Field::put(&self.$f, out); )*
            }
        }
    };
}

// Large unions need Default for arrays longer than 32: provide a wrapper.
/// Raw bytes of a union member area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<const N: usize>(pub [u8; N]);

impl<const N: usize> Default for Raw<N> {
    fn default() -> Self {
        Raw([0; N])
    }
}

impl<const N: usize> Field for Raw<N> {
    const SIZE: usize = N;
    fn get(b: &[u8], o: &mut usize) -> Self {
        let mut a = [0u8; N];
        a.copy_from_slice(&b[*o..*o + N]);
        *o += N;
        Raw(a)
    }
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl<const N: usize> Raw<N> {
    /// The union area holding `bytes` (zero-padded; truncated if longer).
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut a = [0u8; N];
        let n = bytes.len().min(N);
        a[..n].copy_from_slice(&bytes[..n]);
        Raw(a)
    }
}

qxl_struct! {
    /// `QXLPoint`.
    pub struct QxlPoint { pub x: i32, pub y: i32 }
}
qxl_struct! {
    /// `QXLPoint16`.
    pub struct QxlPoint16 { pub x: i16, pub y: i16 }
}
qxl_struct! {
    /// `QXLRect` (top, left, bottom, right, as SPICE orders them).
    pub struct QxlRect { pub top: i32, pub left: i32, pub bottom: i32, pub right: i32 }
}

impl QxlRect {
    pub fn from_xywh(x: i32, y: i32, w: i32, h: i32) -> QxlRect {
        QxlRect {
            top: y,
            left: x,
            bottom: y + h,
            right: x + w,
        }
    }
}

qxl_struct! {
    /// `QXLCommand`: one ring entry.
    pub struct QxlCommand { pub data: u64, pub cmd_type: u32, pub padding: u32 }
}

/// `QXLCmdType`.
pub mod cmd {
    pub const NOP: u32 = 0;
    pub const DRAW: u32 = 1;
    pub const UPDATE: u32 = 2;
    pub const CURSOR: u32 = 3;
    pub const MESSAGE: u32 = 4;
    pub const SURFACE: u32 = 5;
}

/// `QXL_COMMAND_FLAG_COMPAT`: a qxl-1 (compat) command.
pub const COMMAND_FLAG_COMPAT: u32 = 1;

qxl_struct! {
    /// `QXLDataChunk` header; `data_size` bytes of data follow it.
    pub struct QxlDataChunk { pub data_size: u32, pub prev_chunk: u64, pub next_chunk: u64 }
}

qxl_struct! {
    /// `QXLClip`: `clip_type` 0 none, 1 rects (`data` points at a [`QxlClipRects`]).
    pub struct QxlClip { pub clip_type: u32, pub data: u64 }
}

qxl_struct! {
    /// `QXLClipRects`: the count; a [`QxlDataChunk`] of `QXLRect`s follows inline.
    pub struct QxlClipRects { pub num_rects: u32 }
}

qxl_struct! {
    /// `QXLBrush`: type (0 none, 1 solid, 2 pattern) and the union (color, or [`QxlPattern`]).
    pub struct QxlBrush { pub brush_type: u32, pub u: Raw<16> }
}
qxl_struct! {
    /// `QXLPattern`.
    pub struct QxlPattern { pub pat: u64, pub pos: QxlPoint }
}

impl QxlBrush {
    pub fn solid(color: u32) -> QxlBrush {
        QxlBrush {
            brush_type: 1,
            u: Raw::from_slice(&color.to_le_bytes()),
        }
    }
    pub fn color(&self) -> u32 {
        u32::from_le_bytes([self.u.0[0], self.u.0[1], self.u.0[2], self.u.0[3]])
    }
    pub fn pattern(&self) -> QxlPattern {
        QxlPattern::read(&self.u.0).unwrap_or_default()
    }
}

qxl_struct! {
    /// `QXLQMask`.
    pub struct QxlQMask { pub flags: u8, pub pos: QxlPoint, pub bitmap: u64 }
}

qxl_struct! {
    /// `QXLFill`.
    pub struct QxlFill { pub brush: QxlBrush, pub rop_descriptor: u16, pub mask: QxlQMask }
}
qxl_struct! {
    /// `QXLOpaque`.
    pub struct QxlOpaque {
        pub src_bitmap: u64, pub src_area: QxlRect, pub brush: QxlBrush,
        pub rop_descriptor: u16, pub scale_mode: u8, pub mask: QxlQMask,
    }
}
qxl_struct! {
    /// `QXLCopy` (also `QXLBlend`).
    pub struct QxlCopy {
        pub src_bitmap: u64, pub src_area: QxlRect, pub rop_descriptor: u16,
        pub scale_mode: u8, pub mask: QxlQMask,
    }
}
qxl_struct! {
    /// `QXLTransparent`.
    pub struct QxlTransparent {
        pub src_bitmap: u64, pub src_area: QxlRect, pub src_color: u32, pub true_color: u32,
    }
}
qxl_struct! {
    /// `QXLAlphaBlend`.
    pub struct QxlAlphaBlend {
        pub alpha_flags: u16, pub alpha: u8, pub src_bitmap: u64, pub src_area: QxlRect,
    }
}
qxl_struct! {
    /// `QXLCompatAlphaBlend` (qxl-1 drawables).
    pub struct QxlCompatAlphaBlend { pub alpha: u8, pub src_bitmap: u64, pub src_area: QxlRect }
}
qxl_struct! {
    /// `QXLCopyBits`.
    pub struct QxlCopyBits { pub src_pos: QxlPoint }
}
qxl_struct! {
    /// `QXLRop3`.
    pub struct QxlRop3 {
        pub src_bitmap: u64, pub src_area: QxlRect, pub brush: QxlBrush, pub rop3: u8,
        pub scale_mode: u8, pub mask: QxlQMask,
    }
}
qxl_struct! {
    /// `QXLLineAttr`.
    pub struct QxlLineAttr {
        pub flags: u8, pub join_style: u8, pub end_style: u8, pub style_nseg: u8,
        pub width: i32, pub miter_limit: i32, pub style: u64,
    }
}
qxl_struct! {
    /// `QXLStroke`.
    pub struct QxlStroke {
        pub path: u64, pub attr: QxlLineAttr, pub brush: QxlBrush, pub fore_mode: u16,
        pub back_mode: u16,
    }
}
qxl_struct! {
    /// `QXLText`.
    pub struct QxlText {
        pub str_: u64, pub back_area: QxlRect, pub fore_brush: QxlBrush,
        pub back_brush: QxlBrush, pub fore_mode: u16, pub back_mode: u16,
    }
}
qxl_struct! {
    /// `QXLBlackness` (also `QXLWhiteness`, `QXLInvers`).
    pub struct QxlMaskOnly { pub mask: QxlQMask }
}
qxl_struct! {
    /// `QXLComposite`.
    pub struct QxlComposite {
        pub flags: u32, pub src: u64, pub src_transform: u64, pub mask: u64,
        pub mask_transform: u64, pub src_origin: QxlPoint16, pub mask_origin: QxlPoint16,
    }
}
qxl_struct! {
    /// `QXLTransform`.
    pub struct QxlTransform {
        pub t00: u32, pub t01: u32, pub t02: u32, pub t10: u32, pub t11: u32, pub t12: u32,
    }
}

/// `QXL_DRAW_*`.
pub mod draw {
    pub const NOP: u8 = 0;
    pub const FILL: u8 = 1;
    pub const OPAQUE: u8 = 2;
    pub const COPY: u8 = 3;
    pub const COPY_BITS: u8 = 4;
    pub const BLEND: u8 = 5;
    pub const BLACKNESS: u8 = 6;
    pub const WHITENESS: u8 = 7;
    pub const INVERS: u8 = 8;
    pub const ROP3: u8 = 9;
    pub const STROKE: u8 = 10;
    pub const TEXT: u8 = 11;
    pub const TRANSPARENT: u8 = 12;
    pub const ALPHA_BLEND: u8 = 13;
    pub const COMPOSITE: u8 = 14;
}

/// Size of the drawable union (the largest member, `QXLText`).
pub const DRAWABLE_UNION: usize = 68;

qxl_struct! {
    /// `QXLDrawable`.
    pub struct QxlDrawable {
        pub release_info: u64,
        pub surface_id: u32,
        pub effect: u8,
        pub draw_type: u8,
        pub self_bitmap: u8,
        pub self_bitmap_area: QxlRect,
        pub bbox: QxlRect,
        pub clip: QxlClip,
        pub mm_time: u32,
        pub surfaces_dest: [i32; 3],
        pub surfaces_rects: [QxlRect; 3],
        pub u: Raw<DRAWABLE_UNION>,
    }
}

qxl_struct! {
    /// `QXLCompatDrawable` (qxl-1).
    pub struct QxlCompatDrawable {
        pub release_info: u64,
        pub effect: u8,
        pub draw_type: u8,
        pub bitmap_offset: u16,
        pub bitmap_area: QxlRect,
        pub bbox: QxlRect,
        pub clip: QxlClip,
        pub mm_time: u32,
        pub u: Raw<DRAWABLE_UNION>,
    }
}

qxl_struct! {
    /// `QXLUpdateCmd`.
    pub struct QxlUpdateCmd {
        pub release_info: u64, pub area: QxlRect, pub update_id: u32, pub surface_id: u32,
    }
}

qxl_struct! {
    /// `QXLMessage` header (a log string follows).
    pub struct QxlMessage { pub release_info: u64 }
}

qxl_struct! {
    /// `QXLSurface`.
    pub struct QxlSurface { pub format: u32, pub width: u32, pub height: u32, pub stride: i32, pub data: u64 }
}
qxl_struct! {
    /// `QXLSurfaceCmd`: `cmd_type` 0 create, 1 destroy.
    pub struct QxlSurfaceCmd {
        pub release_info: u64, pub surface_id: u32, pub cmd_type: u8, pub flags: u32,
        pub surface: QxlSurface,
    }
}

qxl_struct! {
    /// `QXLImageDescriptor`.
    pub struct QxlImageDescriptor {
        pub id: u64, pub image_type: u8, pub flags: u8, pub width: u32, pub height: u32,
    }
}
qxl_struct! {
    /// `QXLBitmap`.
    pub struct QxlBitmap {
        pub format: u8, pub flags: u8, pub x: u32, pub y: u32, pub stride: u32,
        pub palette: u64, pub data: u64,
    }
}
qxl_struct! {
    /// `QXLImage`: the descriptor and its union (a [`QxlBitmap`], a QUIC `data_size` with a
    /// [`QxlDataChunk`] inline after it, or a surface id).
    pub struct QxlImage { pub descriptor: QxlImageDescriptor, pub u: Raw<30> }
}
qxl_struct! {
    /// `QXLPalette` header; `num_ents` u32 entries follow.
    pub struct QxlPalette { pub unique: u64, pub num_ents: u16 }
}

/// `QXLImageFlags` and `QXLBitmapFlags`.
pub mod image_flags {
    pub const CACHE: u8 = 1 << 0;
    pub const HIGH_BITS_SET: u8 = 1 << 1;
    pub const BITMAP_DIRECT: u8 = 1 << 0;
    pub const BITMAP_UNSTABLE: u8 = 1 << 1;
    pub const BITMAP_TOP_DOWN: u8 = 1 << 2;
}

qxl_struct! {
    /// `QXLPath` header: `data_size`, then a [`QxlDataChunk`] inline holding `QXLPathSeg`s.
    pub struct QxlPath { pub data_size: u32 }
}
qxl_struct! {
    /// `QXLPathSeg` header; `count` [`QxlPointFix`] follow.
    pub struct QxlPathSeg { pub flags: u32, pub count: u32 }
}
qxl_struct! {
    /// `QXLPointFix` (28.4 fixed point).
    pub struct QxlPointFix { pub x: i32, pub y: i32 }
}
qxl_struct! {
    /// `QXLString` header; a [`QxlDataChunk`] of `QXLRasterGlyph`s follows inline.
    pub struct QxlString { pub data_size: u32, pub length: u16, pub flags: u16 }
}
qxl_struct! {
    /// `QXLRasterGlyph` header; the glyph bits follow.
    pub struct QxlRasterGlyph {
        pub render_pos: QxlPoint, pub glyph_origin: QxlPoint, pub width: u16, pub height: u16,
    }
}

qxl_struct! {
    /// `QXLCursorHeader`.
    pub struct QxlCursorHeader {
        pub unique: u64, pub cursor_type: u16, pub width: u16, pub height: u16,
        pub hot_spot_x: u16, pub hot_spot_y: u16,
    }
}
qxl_struct! {
    /// `QXLCursor`: header and `data_size`; a [`QxlDataChunk`] of shape data follows inline.
    pub struct QxlCursor { pub header: QxlCursorHeader, pub data_size: u32 }
}
qxl_struct! {
    /// `QXLCursorCmd`: `cmd_type` 0 set, 1 move, 2 hide, 3 trail; the union holds
    /// `set {position: QXLPoint16, visible: u8, shape: QXLPHYSICAL}`, `trail {length,
    /// frequency}` or `position`.
    pub struct QxlCursorCmd {
        pub release_info: u64, pub cmd_type: u8, pub u: Raw<13>, pub device_data: Raw<128>,
    }
}

/// `QXL_CURSOR_*`.
pub mod cursor_cmd {
    pub const SET: u8 = 0;
    pub const MOVE: u8 = 1;
    pub const HIDE: u8 = 2;
    pub const TRAIL: u8 = 3;
}

qxl_struct! {
    /// `QXLMonitorsConfig` header; `count` [`QxlHead`]s follow.
    pub struct QxlMonitorsConfig { pub count: u16, pub max_allowed: u16 }
}
qxl_struct! {
    /// `QXLHead`.
    pub struct QxlHead {
        pub id: u32, pub surface_id: u32, pub width: u32, pub height: u32, pub x: u32,
        pub y: u32, pub flags: u32,
    }
}

/// `QXLDevSurfaceCreate` as the VMM passes it for the primary surface (not in guest memory in
/// this Rust interface: the fields, the memory as a guest address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrimarySurface {
    pub width: u32,
    pub height: u32,
    pub stride: i32,
    /// `SPICE_SURFACE_FMT_*`.
    pub format: u32,
    pub mouse_mode: u32,
    pub mem: QxlPhysical,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_qxl_dev_h() {
        // The packed sizes of spice-protocol's structures.
        assert_eq!(QxlCommand::SIZE, 16);
        assert_eq!(QxlDataChunk::SIZE, 20);
        assert_eq!(QxlBrush::SIZE, 20);
        assert_eq!(QxlQMask::SIZE, 17);
        assert_eq!(QxlFill::SIZE, 39);
        assert_eq!(QxlOpaque::SIZE, 64);
        assert_eq!(QxlCopy::SIZE, 44);
        assert_eq!(QxlRop3::SIZE, 63);
        assert_eq!(QxlStroke::SIZE, 52);
        assert_eq!(QxlText::SIZE, DRAWABLE_UNION);
        assert_eq!(QxlComposite::SIZE, 44);
        assert_eq!(QxlDrawable::SIZE, 191);
        assert_eq!(QxlCompatDrawable::SIZE, 128);
        assert_eq!(QxlSurfaceCmd::SIZE, 41);
        assert_eq!(QxlImageDescriptor::SIZE, 18);
        assert_eq!(QxlBitmap::SIZE, 30);
        assert_eq!(QxlImage::SIZE, 48);
        assert_eq!(QxlCursorHeader::SIZE, 18);
        assert_eq!(QxlCursorCmd::SIZE, 150);
        assert_eq!(QxlUpdateCmd::SIZE, 32);
        assert_eq!(QxlHead::SIZE, 28);
    }

    #[test]
    fn round_trip_and_short_input() {
        let d = QxlDrawable {
            release_info: 7,
            surface_id: 1,
            draw_type: draw::FILL,
            bbox: QxlRect::from_xywh(1, 2, 3, 4),
            surfaces_dest: [-1, -1, -1],
            u: Raw::from_slice(
                &QxlFill {
                    brush: QxlBrush::solid(0x123456),
                    rop_descriptor: 8,
                    mask: QxlQMask::default(),
                }
                .to_bytes(),
            ),
            ..Default::default()
        };
        let b = d.to_bytes();
        assert_eq!(b.len(), QxlDrawable::SIZE);
        let back = QxlDrawable::read(&b).unwrap();
        assert_eq!(back, d);
        assert_eq!(QxlFill::read(&back.u.0).unwrap().brush.color(), 0x123456);
        assert!(QxlDrawable::read(&b[..190]).is_none());
    }
}
