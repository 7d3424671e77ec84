//! Image descriptors and draw structures carried by display-channel messages.
//!
//! This module owns the spice.proto structures the display channel nests inside its messages:
//! [`Image`] (an `ImageDescriptor` and its per-type payload), [`Palette`], [`Clip`],
//! [`DisplayBase`], [`Brush`]/[`Pattern`], [`QMask`], [`LineAttr`], [`Path`], [`GlyphString`]
//! (`String`), [`Head`], [`StreamDataHeader`] and the draw structures ([`Fill`], [`Opaque`],
//! [`Copy`](struct@Copy), [`Rop3`], [`Stroke`], [`Text`], [`Transparent`], [`AlphaBlend`], [`Composite`], ...),
//! with the enums and flags they use. Message numbering lives in
//! [`crate::messages::display`]. This module does not decompress image payloads (see
//! [`crate::codec`]) and does not draw.
//!
//! # Layout
//!
//! Images, palettes, patterns, masks, paths, strings and line styles are reached through
//! pointers (offsets from the start of the message body). [`Writer`] lays the targets out in
//! the order spice-server's marshaller does: the message body, then the targets of the body's
//! pointers in field order, then the targets of *their* pointers (an image's palette) in the
//! same order. Pixel data of an image is inline, right after its descriptor and payload
//! header, exactly as spice-server appends it (`spice_marshaller_add_by_ref` on the image's
//! own sub-marshaller in `fill_bits`). For `draw_opaque` that gives: body, source image (with
//! its pixels), pattern image, mask image, then the source's palette, the pattern's palette and
//! the mask's palette.
//!
//! # Switches
//!
//! Where a field of spice.proto decides which fields follow (image type, brush type, clip type,
//! `PAL_FROM_CACHE`, `STYLED`, the raster bits of a string, the `HAS_*` bits of a composite),
//! the Rust type is an enum or an `Option` and the deciding bits are derived from it when
//! encoding; the stored flags field never holds them (each type's doc says which). A type value
//! that leaves the rest unparseable (an unknown image, brush or clip type) is a
//! [`DecodeError::InvalidValue`].
//!
//! # Hostile input
//!
//! Several pointers of one message may point at the same bytes; each is decoded separately. That
//! is bounded: a message has a fixed number of pointers (at most six images or palettes, a path,
//! a string or a style array), each decoding at most the message's own bytes, so the decoded
//! size stays within a small constant times the message size.

use arbitrary::{Arbitrary, Unstructured};

use crate::error::{DecodeError, Result};
use crate::types::{Point, Point16, PointFix, Rect, Transform};
use crate::wire::{Bytes, Decode, Encode, Reader, Writer};
use crate::{wire_enum, wire_flags, wire_struct};

// ---------------------------------------------------------------------------------------------
// Enums and flags
// ---------------------------------------------------------------------------------------------

wire_enum! {
    /// `clip_type`.
    pub enum ClipType: u8 {
        None = 0 => "none",
        Rects = 1 => "rects",
    }
}

wire_flags! {
    /// `path_flags` (of one path segment).
    pub struct PathFlags: u8 {
        const BEGIN = 1 << 0;
        const END = 1 << 1;
        const CLOSE = 1 << 3;
        const BEZIER = 1 << 4;
    }
}

wire_enum! {
    /// `video_codec_type`.
    pub enum VideoCodecType: u8 {
        Mjpeg = 1 => "mjpeg",
        Vp8 = 2 => "vp8",
        H264 = 3 => "h264",
        Vp9 = 4 => "vp9",
        H265 = 5 => "h265",
    }
}

wire_flags! {
    /// `stream_flags`.
    pub struct StreamFlags: u8 {
        const TOP_DOWN = 1 << 0;
    }
}

wire_enum! {
    /// `brush_type`.
    pub enum BrushType: u8 {
        None = 0 => "none",
        Solid = 1 => "solid",
        Pattern = 2 => "pattern",
    }
}

wire_flags! {
    /// `mask_flags`.
    pub struct MaskFlags: u8 {
        const INVERS = 1 << 0;
    }
}

wire_enum! {
    /// `image_type`: which payload follows an image descriptor.
    pub enum ImageType: u8 {
        Bitmap = 0 => "bitmap",
        Quic = 1 => "quic",
        Reserved = 2 => "reserved",
        LzPlt = 100 => "lz_plt",
        LzRgb = 101 => "lz_rgb",
        GlzRgb = 102 => "glz_rgb",
        FromCache = 103 => "from_cache",
        Surface = 104 => "surface",
        Jpeg = 105 => "jpeg",
        FromCacheLossless = 106 => "from_cache_lossless",
        ZlibGlzRgb = 107 => "zlib_glz_rgb",
        JpegAlpha = 108 => "jpeg_alpha",
        Lz4 = 109 => "lz4",
    }
}

wire_enum! {
    /// `image_compression`: the client's preferred compression (`preferred_compression`).
    pub enum ImageCompression: u8 {
        Invalid = 0 => "invalid",
        Off = 1 => "off",
        AutoGlz = 2 => "auto_glz",
        AutoLz = 3 => "auto_lz",
        Quic = 4 => "quic",
        Glz = 5 => "glz",
        Lz = 6 => "lz",
        Lz4 = 7 => "lz4",
    }
}

wire_flags! {
    /// `image_flags` (of an image descriptor).
    pub struct ImageFlags: u8 {
        const CACHE_ME = 1 << 0;
        const HIGH_BITS_SET = 1 << 1;
        const CACHE_REPLACE_ME = 1 << 2;
    }
}

wire_enum! {
    /// `bitmap_fmt`: the pixel format of a `BITMAP` image.
    pub enum BitmapFmt: u8 {
        Invalid = 0 => "invalid",
        /// `1BIT_LE`.
        Bit1Le = 1 => "1bit_le",
        /// `1BIT_BE`.
        Bit1Be = 2 => "1bit_be",
        /// `4BIT_LE`.
        Bit4Le = 3 => "4bit_le",
        /// `4BIT_BE`.
        Bit4Be = 4 => "4bit_be",
        /// `8BIT`: 8-bit indexed.
        Bit8 = 5 => "8bit",
        /// `16BIT`: 0555.
        Bit16 = 6 => "16bit",
        /// `24BIT`: 3 bytes, bgr.
        Bit24 = 7 => "24bit",
        /// `32BIT`: xrgb little endian.
        Bit32 = 8 => "32bit",
        /// `RGBA`: argb little endian.
        Rgba = 9 => "rgba",
        /// `8BIT_A`: alpha only.
        Bit8A = 10 => "8bit_a",
    }
}

wire_flags! {
    /// `bitmap_flags` (of `BITMAP` and `LZ_PLT` images).
    pub struct BitmapFlags: u8 {
        const PAL_CACHE_ME = 1 << 0;
        const PAL_FROM_CACHE = 1 << 1;
        const TOP_DOWN = 1 << 2;
    }
}

wire_flags! {
    /// `jpeg_alpha_flags`.
    pub struct JpegAlphaFlags: u8 {
        const TOP_DOWN = 1 << 0;
    }
}

wire_enum! {
    /// `image_scale_mode`.
    pub enum ImageScaleMode: u8 {
        Interpolate = 0 => "interpolate",
        Nearest = 1 => "nearest",
    }
}

wire_flags! {
    /// `ropd`: the raster operation descriptor of most draws.
    pub struct Ropd: u16 {
        const INVERS_SRC = 1 << 0;
        const INVERS_BRUSH = 1 << 1;
        const INVERS_DEST = 1 << 2;
        const OP_PUT = 1 << 3;
        const OP_OR = 1 << 4;
        const OP_AND = 1 << 5;
        const OP_XOR = 1 << 6;
        const OP_BLACKNESS = 1 << 7;
        const OP_WHITENESS = 1 << 8;
        const OP_INVERS = 1 << 9;
        const INVERS_RES = 1 << 10;
    }
}

wire_flags! {
    /// `line_flags` (values of Windows' winddi.h).
    pub struct LineFlags: u8 {
        const START_WITH_GAP = 1 << 2;
        const STYLED = 1 << 3;
    }
}

wire_flags! {
    /// `string_flags`.
    pub struct StringFlags: u8 {
        const RASTER_A1 = 1 << 0;
        const RASTER_A4 = 1 << 1;
        const RASTER_A8 = 1 << 2;
        const RASTER_TOP_DOWN = 1 << 3;
    }
}

wire_flags! {
    /// `surface_flags`.
    pub struct SurfaceFlags: u32 {
        const PRIMARY = 1 << 0;
        const STREAMING_MODE = 1 << 1;
    }
}

wire_enum! {
    /// `surface_fmt`.
    pub enum SurfaceFmt: u32 {
        Invalid = 0 => "invalid",
        /// `1_A`.
        A1 = 1 => "1_a",
        /// `8_A`.
        A8 = 8 => "8_a",
        /// `16_555`.
        Rgb555 = 16 => "16_555",
        /// `32_xRGB`.
        Xrgb32 = 32 => "32_xrgb",
        /// `16_565`.
        Rgb565 = 80 => "16_565",
        /// `32_ARGB`.
        Argb32 = 96 => "32_argb",
    }
}

wire_flags! {
    /// `alpha_flags`.
    pub struct AlphaFlags: u8 {
        const DEST_HAS_ALPHA = 1 << 0;
        const SRC_SURFACE_HAS_ALPHA = 1 << 1;
    }
}

wire_flags! {
    /// `composite_flags`: the operator (bits 0..8), filters, repeats and the `HAS_*` switches.
    pub struct CompositeFlags: u32 {
        const OP0 = 1 << 0;
        const OP1 = 1 << 1;
        const OP2 = 1 << 2;
        const OP3 = 1 << 3;
        const OP4 = 1 << 4;
        const OP5 = 1 << 5;
        const OP6 = 1 << 6;
        const OP7 = 1 << 7;
        const SRC_FILTER0 = 1 << 8;
        const SRC_FILTER1 = 1 << 9;
        const SRC_FILTER2 = 1 << 10;
        const MASK_FILTER0 = 1 << 11;
        /// Spelled `MASK_FITLER1` in spice.proto and enums.h.
        const MASK_FILTER1 = 1 << 12;
        const MASK_FILTER2 = 1 << 13;
        const SRC_REPEAT0 = 1 << 14;
        const SRC_REPEAT1 = 1 << 15;
        const MASK_REPEAT0 = 1 << 16;
        const MASK_REPEAT1 = 1 << 17;
        const COMPONENT_ALPHA = 1 << 18;
        const HAS_MASK = 1 << 19;
        const HAS_SRC_TRANSFORM = 1 << 20;
        const HAS_MASK_TRANSFORM = 1 << 21;
        const SOURCE_OPAQUE = 1 << 22;
        const MASK_OPAQUE = 1 << 23;
        const DEST_OPAQUE = 1 << 24;
    }
}

wire_enum! {
    /// `resource_type` (of a `ResourceID`).
    pub enum ResourceType: u8 {
        Invalid = 0 => "invalid",
        Pixmap = 1 => "pixmap",
    }
}

wire_flags! {
    /// `gl_scanout_flags`.
    pub struct GlScanoutFlags: u32 {
        const Y0TOP = 1 << 0;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `image_size(bpp, width, height)` of spice.proto: bytes of a raster of `height` rows of
/// `width` pixels of `bpp` bits, each row padded to a byte.
pub const fn image_size(bpp: u64, width: u64, height: u64) -> u64 {
    (width * bpp).div_ceil(8) * height
}

/// Write a pointer to an optional boxed target.
fn put_ptr<'a, T: Encode>(w: &mut Writer<'a>, target: Option<&'a T>) {
    w.ptr(target.map(|t| t as &dyn Encode));
}

/// Read a nullable image pointer.
fn image_ptr(r: &mut Reader<'_>, what: &'static str) -> Result<Option<Box<Image>>> {
    Ok(r.ptr::<Image>(what)?.map(Box::new))
}

/// Exactly `n` bytes from `u` (zero-padded when it runs out), for payloads whose length another
/// field decides.
fn arb_exact_bytes(u: &mut Unstructured<'_>, n: usize) -> arbitrary::Result<Bytes> {
    let mut v = u.bytes(n.min(u.len()))?.to_vec();
    v.resize(n, 0);
    Ok(Bytes(v))
}

/// A payload with its own u32 size field: the size written is `data.len()`.
fn put_sized(w: &mut Writer<'_>, data: &[u8]) {
    w.u32(data.len() as u32);
    w.bytes(data);
}

// ---------------------------------------------------------------------------------------------
// Clip, DisplayBase
// ---------------------------------------------------------------------------------------------

/// `Clip`: a clip type and, for `RECTS`, the rectangles inline (`ClipRects`: a u32 count and
/// the rectangles). An unknown clip type is an error.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub enum Clip {
    /// `NONE`: no clipping.
    None,
    /// `RECTS`: draw only inside these rectangles.
    Rects(Vec<Rect>),
}

impl Encode for Clip {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        match self {
            Clip::None => ClipType::None.encode(w),
            Clip::Rects(rects) => {
                ClipType::Rects.encode(w);
                w.u32(rects.len() as u32);
                w.all(rects);
            }
        }
    }
}
impl Decode for Clip {
    const MIN_SIZE: usize = 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        match ClipType::decode(r)? {
            ClipType::None => Ok(Clip::None),
            ClipType::Rects => {
                let n = r.u32("clip num_rects")?;
                Ok(Clip::Rects(r.vec(n as u64, "clip rects")?))
            }
            ClipType::Unknown(v) => Err(DecodeError::InvalidValue {
                what: "clip type",
                value: v as u64,
            }),
        }
    }
}

wire_struct! {
    /// `DisplayBase`: the surface, bounding box and clip every draw starts with.
    pub struct DisplayBase {
        pub surface_id: u32,
        /// `box`.
        pub bbox: Rect,
        pub clip: Clip,
    }
}

wire_struct! {
    /// `ResourceID`: a cached resource to drop (`inval_list`).
    pub struct ResourceId {
        pub resource_type: ResourceType,
        pub id: u64,
    }
}

wire_struct! {
    /// `StreamDataHeader`: the stream and the multimedia time of a frame.
    pub struct StreamDataHeader {
        pub id: u32,
        pub multi_media_time: u32,
    }
}

wire_struct! {
    /// `Head`: one monitor of `monitors_config`.
    pub struct Head {
        pub monitor_id: u32,
        pub surface_id: u32,
        pub width: u32,
        pub height: u32,
        pub x: u32,
        pub y: u32,
        pub flags: u32,
    }
}

// ---------------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------------

/// `Palette`: a cache key and up to 65535 colours (u16 count).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct Palette {
    pub unique: u64,
    #[arbitrary(with = crate::wire::arb::vec_max::<u32, 65535>)]
    pub ents: Vec<u32>,
}

impl Encode for Palette {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u64(self.unique);
        let n = self.ents.len().min(u16::MAX as usize);
        w.u16(n as u16);
        w.all(&self.ents[..n]);
    }
}
impl Decode for Palette {
    const MIN_SIZE: usize = 10;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let unique = r.u64("palette unique")?;
        let n = r.u16("palette num_ents")?;
        Ok(Palette {
            unique,
            ents: r.vec(n as u64, "palette ents")?,
        })
    }
}

/// The palette of a `BITMAP` image: the `pal` switch on `PAL_FROM_CACHE`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub enum BitmapPalette {
    /// `PAL_FROM_CACHE`: the id of a palette the client cached.
    FromCache(u64),
    /// A pointer to the palette; null for formats without one (and written null by
    /// spice-server when the bitmap has none).
    Inline(Option<Palette>),
}

/// `BitmapData` (`SpiceBitmap`): an uncompressed raster.
///
/// Wire: format u8, flags u8, x, y, stride (u32 each), then `palette_id` u64 when the flags
/// hold `PAL_FROM_CACHE` or else a palette pointer, then `stride * y` bytes of pixels inline.
/// `flags` never holds `PAL_FROM_CACHE`: it is derived from [`BitmapPalette::FromCache`].
/// `data` must be `stride * y` bytes long (see [`BitmapData::data_len`]); the decoder checks
/// that length against the bytes left before copying.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BitmapData {
    pub format: BitmapFmt,
    pub flags: BitmapFlags,
    /// Width in pixels.
    pub x: u32,
    /// Height in rows.
    pub y: u32,
    /// Bytes per row.
    pub stride: u32,
    pub palette: BitmapPalette,
    pub data: Bytes,
}

impl BitmapData {
    /// The pixel bytes `stride * y` (u64: never overflows).
    pub const fn data_len(&self) -> u64 {
        self.stride as u64 * self.y as u64
    }
    /// The flags as written on the wire.
    pub fn wire_flags(&self) -> BitmapFlags {
        self.flags.with(
            BitmapFlags::PAL_FROM_CACHE,
            matches!(self.palette, BitmapPalette::FromCache(_)),
        )
    }
}

impl<'u> Arbitrary<'u> for BitmapData {
    fn arbitrary(u: &mut Unstructured<'u>) -> arbitrary::Result<Self> {
        let format = BitmapFmt::arbitrary(u)?;
        let flags = BitmapFlags(u8::arbitrary(u)?).without(BitmapFlags::PAL_FROM_CACHE);
        let x = u32::arbitrary(u)?;
        // Small rasters: the data length follows from stride and height.
        let y = u.int_in_range(0..=8u32)?;
        let stride = u.int_in_range(0..=32u32)?;
        let palette = BitmapPalette::arbitrary(u)?;
        let data = arb_exact_bytes(u, (stride * y) as usize)?;
        Ok(BitmapData {
            format,
            flags,
            x,
            y,
            stride,
            palette,
            data,
        })
    }
}

impl Encode for BitmapData {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        self.format.encode(w);
        w.u8(self.wire_flags().bits());
        w.u32(self.x);
        w.u32(self.y);
        w.u32(self.stride);
        match &self.palette {
            BitmapPalette::FromCache(id) => w.u64(*id),
            BitmapPalette::Inline(p) => put_ptr(w, p.as_ref()),
        }
        w.bytes(&self.data);
    }
}
impl Decode for BitmapData {
    const MIN_SIZE: usize = 18;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let format = BitmapFmt::decode(r)?;
        let flags = BitmapFlags::decode(r)?;
        let x = r.u32("bitmap x")?;
        let y = r.u32("bitmap y")?;
        let stride = r.u32("bitmap stride")?;
        let palette = if flags.contains(BitmapFlags::PAL_FROM_CACHE) {
            BitmapPalette::FromCache(r.u64("bitmap palette_id")?)
        } else {
            BitmapPalette::Inline(r.ptr("bitmap palette")?)
        };
        // stride * y in u64, checked against the bytes left by `bytes` before copying.
        let data = r.bytes(stride as u64 * y as u64, "bitmap data")?.into();
        Ok(BitmapData {
            format,
            flags: flags.without(BitmapFlags::PAL_FROM_CACHE),
            x,
            y,
            stride,
            palette,
            data,
        })
    }
}

/// Read `BinaryData` (`SpiceQUICData`): a u32 size and that many bytes inline. QUIC, LZ_RGB,
/// GLZ_RGB, JPEG and LZ4 images carry it; [`ImageData`] holds just the bytes and the size
/// written is their length.
fn get_sized(r: &mut Reader<'_>, what: &'static str) -> Result<Bytes> {
    let n = r.u32(what)?;
    Ok(r.bytes(n as u64, what)?.into())
}

/// The palette of an `LZ_PLT` image: the `pal` switch on `PAL_FROM_CACHE` (the pointer may not
/// be null).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub enum LzPltPalette {
    /// `PAL_FROM_CACHE`: the id of a palette the client cached.
    FromCache(u64),
    /// A (non-null) pointer to the palette.
    Inline(Palette),
}

/// `LZPLTData`: flags u8, data_size u32, `palette_id` u64 or a non-null palette pointer, then
/// the LZ data inline. `flags` never holds `PAL_FROM_CACHE` (derived from
/// [`LzPltPalette::FromCache`]); the size written is `data.len()`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LzPltData {
    pub flags: BitmapFlags,
    pub palette: LzPltPalette,
    pub data: Bytes,
}

impl LzPltData {
    /// The flags as written on the wire.
    pub fn wire_flags(&self) -> BitmapFlags {
        self.flags.with(
            BitmapFlags::PAL_FROM_CACHE,
            matches!(self.palette, LzPltPalette::FromCache(_)),
        )
    }
}

impl<'u> Arbitrary<'u> for LzPltData {
    fn arbitrary(u: &mut Unstructured<'u>) -> arbitrary::Result<Self> {
        Ok(LzPltData {
            flags: BitmapFlags(u8::arbitrary(u)?).without(BitmapFlags::PAL_FROM_CACHE),
            palette: LzPltPalette::arbitrary(u)?,
            data: Bytes::arbitrary(u)?,
        })
    }
}

impl Encode for LzPltData {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u8(self.wire_flags().bits());
        w.u32(self.data.len() as u32);
        match &self.palette {
            LzPltPalette::FromCache(id) => w.u64(*id),
            LzPltPalette::Inline(p) => w.ptr(Some(p)),
        }
        w.bytes(&self.data);
    }
}
impl Decode for LzPltData {
    const MIN_SIZE: usize = 9;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let flags = BitmapFlags::decode(r)?;
        let n = r.u32("lz_plt data_size")?;
        let palette = if flags.contains(BitmapFlags::PAL_FROM_CACHE) {
            LzPltPalette::FromCache(r.u64("lz_plt palette_id")?)
        } else {
            LzPltPalette::Inline(r.ptr_nonnull("lz_plt palette")?)
        };
        Ok(LzPltData {
            flags: flags.without(BitmapFlags::PAL_FROM_CACHE),
            palette,
            data: r.bytes(n as u64, "lz_plt data")?.into(),
        })
    }
}

/// `ZlibGlzRGBData`: the GLZ size before zlib, then a u32 size and the zlib data inline (the
/// size written is `data.len()`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct ZlibGlzRgbData {
    pub glz_data_size: u32,
    pub data: Bytes,
}

impl Encode for ZlibGlzRgbData {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u32(self.glz_data_size);
        put_sized(w, &self.data);
    }
}
impl Decode for ZlibGlzRgbData {
    const MIN_SIZE: usize = 8;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let glz_data_size = r.u32("zlib_glz glz_data_size")?;
        let n = r.u32("zlib_glz data_size")?;
        Ok(ZlibGlzRgbData {
            glz_data_size,
            data: r.bytes(n as u64, "zlib_glz data")?.into(),
        })
    }
}

/// `JPEGAlphaData`: flags, the size of the JPEG part, then a u32 size and the data (JPEG then
/// LZ alpha) inline (the size written is `data.len()`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct JpegAlphaData {
    pub flags: JpegAlphaFlags,
    pub jpeg_size: u32,
    pub data: Bytes,
}

impl Encode for JpegAlphaData {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        self.flags.encode(w);
        w.u32(self.jpeg_size);
        put_sized(w, &self.data);
    }
}
impl Decode for JpegAlphaData {
    const MIN_SIZE: usize = 9;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let flags = JpegAlphaFlags::decode(r)?;
        let jpeg_size = r.u32("jpeg_alpha jpeg_size")?;
        let n = r.u32("jpeg_alpha data_size")?;
        Ok(JpegAlphaData {
            flags,
            jpeg_size,
            data: r.bytes(n as u64, "jpeg_alpha data")?.into(),
        })
    }
}

/// The per-type payload of an [`Image`]: the `u` switch on `descriptor.type`, which is derived
/// from the variant when encoding.
///
/// `FROM_CACHE` and `FROM_CACHE_LOSSLESS` carry nothing more. `RESERVED` and unknown types are
/// a [`DecodeError::InvalidValue`] (the reference demarshaller reads them as an empty payload,
/// but no client can draw them and nothing after them can be trusted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub enum ImageData {
    Bitmap(BitmapData),
    /// `QUIC`: a QUIC stream (`BinaryData`: u32 size, then the bytes).
    Quic(Bytes),
    /// `LZ_RGB`: an LZ stream (`BinaryData`).
    LzRgb(Bytes),
    /// `GLZ_RGB`: a GLZ stream against the client's dictionary (`BinaryData`).
    GlzRgb(Bytes),
    /// `JPEG`: a JPEG file (`BinaryData`).
    Jpeg(Bytes),
    /// `LZ4`: an LZ4 stream (`BinaryData`).
    Lz4(Bytes),
    LzPlt(LzPltData),
    ZlibGlzRgb(ZlibGlzRgbData),
    JpegAlpha(JpegAlphaData),
    /// `SURFACE`: another surface of this channel, by id.
    Surface(u32),
    /// `FROM_CACHE`: the image with the descriptor's id from the client's pixmap cache.
    FromCache,
    /// `FROM_CACHE_LOSSLESS`: the same, and the cached copy is lossless.
    FromCacheLossless,
}

impl ImageData {
    /// The `image_type` this payload is written with.
    pub const fn image_type(&self) -> ImageType {
        match self {
            ImageData::Bitmap(_) => ImageType::Bitmap,
            ImageData::Quic(_) => ImageType::Quic,
            ImageData::LzRgb(_) => ImageType::LzRgb,
            ImageData::GlzRgb(_) => ImageType::GlzRgb,
            ImageData::Jpeg(_) => ImageType::Jpeg,
            ImageData::Lz4(_) => ImageType::Lz4,
            ImageData::LzPlt(_) => ImageType::LzPlt,
            ImageData::ZlibGlzRgb(_) => ImageType::ZlibGlzRgb,
            ImageData::JpegAlpha(_) => ImageType::JpegAlpha,
            ImageData::Surface(_) => ImageType::Surface,
            ImageData::FromCache => ImageType::FromCache,
            ImageData::FromCacheLossless => ImageType::FromCacheLossless,
        }
    }
}

/// `Image`: the `ImageDescriptor` (id u64, type u8, flags u8, width u32, height u32; 18 bytes)
/// and its payload. The descriptor's type is derived from [`Image::data`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct Image {
    /// Cache key (`descriptor.id`).
    pub id: u64,
    pub flags: ImageFlags,
    pub width: u32,
    pub height: u32,
    pub data: ImageData,
}

impl Image {
    /// `descriptor.type`.
    pub const fn image_type(&self) -> ImageType {
        self.data.image_type()
    }
}

impl Encode for Image {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u64(self.id);
        w.u8(self.image_type().to_raw());
        self.flags.encode(w);
        w.u32(self.width);
        w.u32(self.height);
        match &self.data {
            ImageData::Bitmap(b) => b.encode(w),
            ImageData::Quic(b)
            | ImageData::LzRgb(b)
            | ImageData::GlzRgb(b)
            | ImageData::Jpeg(b)
            | ImageData::Lz4(b) => put_sized(w, b),
            ImageData::LzPlt(d) => d.encode(w),
            ImageData::ZlibGlzRgb(d) => d.encode(w),
            ImageData::JpegAlpha(d) => d.encode(w),
            ImageData::Surface(id) => w.u32(*id),
            ImageData::FromCache | ImageData::FromCacheLossless => {}
        }
    }
}
impl Decode for Image {
    const MIN_SIZE: usize = 18;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let id = r.u64("image id")?;
        let ty = ImageType::decode(r)?;
        let flags = ImageFlags::decode(r)?;
        let width = r.u32("image width")?;
        let height = r.u32("image height")?;
        let data = match ty {
            ImageType::Bitmap => ImageData::Bitmap(BitmapData::decode(r)?),
            ImageType::Quic => ImageData::Quic(get_sized(r, "quic data")?),
            ImageType::LzRgb => ImageData::LzRgb(get_sized(r, "lz_rgb data")?),
            ImageType::GlzRgb => ImageData::GlzRgb(get_sized(r, "glz_rgb data")?),
            ImageType::Jpeg => ImageData::Jpeg(get_sized(r, "jpeg data")?),
            ImageType::Lz4 => ImageData::Lz4(get_sized(r, "lz4 data")?),
            ImageType::LzPlt => ImageData::LzPlt(LzPltData::decode(r)?),
            ImageType::ZlibGlzRgb => ImageData::ZlibGlzRgb(ZlibGlzRgbData::decode(r)?),
            ImageType::JpegAlpha => ImageData::JpegAlpha(JpegAlphaData::decode(r)?),
            ImageType::Surface => ImageData::Surface(r.u32("image surface_id")?),
            ImageType::FromCache => ImageData::FromCache,
            ImageType::FromCacheLossless => ImageData::FromCacheLossless,
            ImageType::Reserved | ImageType::Unknown(_) => {
                return Err(DecodeError::InvalidValue {
                    what: "image type",
                    value: ty.to_raw() as u64,
                })
            }
        };
        Ok(Image {
            id,
            flags,
            width,
            height,
            data,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Brush, mask
// ---------------------------------------------------------------------------------------------

/// `Pattern`: a tiled image (non-null pointer) and its origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct Pattern {
    pub pat: Box<Image>,
    pub pos: Point,
}

impl Encode for Pattern {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        put_ptr(w, Some(&*self.pat));
        self.pos.encode(w);
    }
}
impl Decode for Pattern {
    const MIN_SIZE: usize = 12;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Pattern {
            pat: Box::new(r.ptr_nonnull("pattern image")?),
            pos: Point::decode(r)?,
        })
    }
}

/// `Brush`: the `u` switch on `brush_type` (derived from the variant). An unknown brush type is
/// an error.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub enum Brush {
    None,
    /// A solid colour.
    Solid(u32),
    Pattern(Pattern),
}

impl Brush {
    /// `brush_type`.
    pub const fn brush_type(&self) -> BrushType {
        match self {
            Brush::None => BrushType::None,
            Brush::Solid(_) => BrushType::Solid,
            Brush::Pattern(_) => BrushType::Pattern,
        }
    }
}

impl Encode for Brush {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u8(self.brush_type().to_raw());
        match self {
            Brush::None => {}
            Brush::Solid(c) => w.u32(*c),
            Brush::Pattern(p) => p.encode(w),
        }
    }
}
impl Decode for Brush {
    const MIN_SIZE: usize = 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        match BrushType::decode(r)? {
            BrushType::None => Ok(Brush::None),
            BrushType::Solid => Ok(Brush::Solid(r.u32("brush color")?)),
            BrushType::Pattern => Ok(Brush::Pattern(Pattern::decode(r)?)),
            BrushType::Unknown(v) => Err(DecodeError::InvalidValue {
                what: "brush type",
                value: v as u64,
            }),
        }
    }
}

/// `QMask`: flags, position and an optional mask image (nullable pointer).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct QMask {
    pub flags: MaskFlags,
    pub pos: Point,
    pub bitmap: Option<Box<Image>>,
}

impl Encode for QMask {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        self.flags.encode(w);
        self.pos.encode(w);
        put_ptr(w, self.bitmap.as_deref());
    }
}
impl Decode for QMask {
    const MIN_SIZE: usize = 13;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(QMask {
            flags: MaskFlags::decode(r)?,
            pos: Point::decode(r)?,
            bitmap: image_ptr(r, "mask bitmap")?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Lines and paths
// ---------------------------------------------------------------------------------------------

/// The dash pattern of a styled line: up to 255 28.4 fixed-point lengths, reached by pointer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct LineStyle(#[arbitrary(with = crate::wire::arb::vec_max::<i32, 255>)] pub Vec<i32>);

impl Encode for LineStyle {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        let n = self.0.len().min(u8::MAX as usize);
        w.all(&self.0[..n]);
    }
}

/// `LineAttr`: flags, then for `STYLED` a u8 segment count and a pointer to that many
/// fixed-point lengths.
///
/// `flags` never holds `STYLED`: it is derived from `style` being `Some`. An empty style is
/// written as a null pointer (spice-server's empty sub-marshaller). As the reference
/// demarshaller, a non-empty style behind a null pointer is read from the start of the message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LineAttr {
    pub flags: LineFlags,
    pub style: Option<LineStyle>,
}

impl<'u> Arbitrary<'u> for LineAttr {
    fn arbitrary(u: &mut Unstructured<'u>) -> arbitrary::Result<Self> {
        Ok(LineAttr {
            flags: LineFlags(u8::arbitrary(u)?).without(LineFlags::STYLED),
            style: Option::<LineStyle>::arbitrary(u)?,
        })
    }
}

impl LineAttr {
    /// The flags as written on the wire.
    pub fn wire_flags(&self) -> LineFlags {
        self.flags.with(LineFlags::STYLED, self.style.is_some())
    }
}

impl Encode for LineAttr {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u8(self.wire_flags().bits());
        if let Some(style) = &self.style {
            w.u8(style.0.len().min(u8::MAX as usize) as u8);
            w.ptr(Some(style));
        }
    }
}
impl Decode for LineAttr {
    const MIN_SIZE: usize = 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let flags = LineFlags::decode(r)?;
        let style = if flags.contains(LineFlags::STYLED) {
            let nseg = r.u8("line_attr style_nseg")?;
            let off = r.u32("line_attr style")?;
            let mut at = r.at_offset(off, "line_attr style")?;
            if at.left() == 0 {
                // The reference wants the offset inside the message even for zero segments.
                return Err(DecodeError::BadOffset {
                    what: "line_attr style",
                    offset: off,
                    len: at.position(),
                });
            }
            Some(LineStyle(at.vec(nseg as u64, "line_attr style")?))
        } else {
            None
        };
        Ok(LineAttr {
            flags: flags.without(LineFlags::STYLED),
            style,
        })
    }
}

/// `PathSegment` (`SpicePathSeg`): flags, a u32 count and that many points inline.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct PathSegment {
    pub flags: PathFlags,
    pub points: Vec<PointFix>,
}

impl Encode for PathSegment {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        self.flags.encode(w);
        w.u32(self.points.len() as u32);
        w.all(&self.points);
    }
}
impl Decode for PathSegment {
    const MIN_SIZE: usize = 5;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let flags = PathFlags::decode(r)?;
        let n = r.u32("path segment count")?;
        Ok(PathSegment {
            flags,
            points: r.vec(n as u64, "path segment points")?,
        })
    }
}

/// `Path`: a u32 count and that many segments, inline one after the other (`@ptr_array` is the
/// C structure's shape, not the wire's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct Path {
    pub segments: Vec<PathSegment>,
}

impl Encode for Path {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u32(self.segments.len() as u32);
        w.all(&self.segments);
    }
}
impl Decode for Path {
    const MIN_SIZE: usize = 4;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let n = r.u32("path num_segments")?;
        Ok(Path {
            segments: r.vec(n as u64, "path segments")?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Glyph strings
// ---------------------------------------------------------------------------------------------

/// `RasterGlyphA1`/`A4`/`A8` (`SpiceRasterGlyph`): positions, size, then
/// `image_size(bpp, width, height)` bytes of coverage inline. `data` must have that length for
/// the string's bits per pixel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RasterGlyph {
    pub render_pos: Point,
    pub glyph_origin: Point,
    pub width: u16,
    pub height: u16,
    pub data: Bytes,
}

impl RasterGlyph {
    const MIN_SIZE: usize = 20;

    fn write<'a>(&'a self, w: &mut Writer<'a>) {
        self.render_pos.encode(w);
        self.glyph_origin.encode(w);
        w.u16(self.width);
        w.u16(self.height);
        w.bytes(&self.data);
    }

    fn read(r: &mut Reader<'_>, bpp: u64) -> Result<Self> {
        let render_pos = Point::decode(r)?;
        let glyph_origin = Point::decode(r)?;
        let width = r.u16("glyph width")?;
        let height = r.u16("glyph height")?;
        let n = image_size(bpp, width as u64, height as u64);
        Ok(RasterGlyph {
            render_pos,
            glyph_origin,
            width,
            height,
            data: r.bytes(n, "glyph data")?.into(),
        })
    }

    fn arbitrary_with_bpp(u: &mut Unstructured<'_>, bpp: u64) -> arbitrary::Result<Self> {
        let render_pos = Point::arbitrary(u)?;
        let glyph_origin = Point::arbitrary(u)?;
        let width = u.int_in_range(0..=24u16)?;
        let height = u.int_in_range(0..=8u16)?;
        let n = image_size(bpp, width as u64, height as u64) as usize;
        Ok(RasterGlyph {
            render_pos,
            glyph_origin,
            width,
            height,
            data: arb_exact_bytes(u, n)?,
        })
    }
}

/// The glyphs of a [`GlyphString`]: the `u` switch on the raster bits of its flags.
///
/// The reference tests `RASTER_A1`, then `RASTER_A4`, then `RASTER_A8`; with none of them set
/// no glyph follows, whatever the length says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Glyphs {
    /// No raster bit: `length` is written but no glyph follows.
    None { length: u16 },
    /// 1 bit per pixel.
    A1(Vec<RasterGlyph>),
    /// 4 bits per pixel.
    A4(Vec<RasterGlyph>),
    /// 8 bits per pixel.
    A8(Vec<RasterGlyph>),
}

impl Glyphs {
    /// The raster bit that selects this variant, and the bits that would take precedence over it
    /// (which the wire flags must not hold).
    const fn bits(&self) -> (StringFlags, StringFlags) {
        match self {
            Glyphs::None { .. } => (
                StringFlags::EMPTY,
                StringFlags(
                    StringFlags::RASTER_A1.0 | StringFlags::RASTER_A4.0 | StringFlags::RASTER_A8.0,
                ),
            ),
            Glyphs::A1(_) => (StringFlags::RASTER_A1, StringFlags::EMPTY),
            Glyphs::A4(_) => (StringFlags::RASTER_A4, StringFlags::RASTER_A1),
            Glyphs::A8(_) => (
                StringFlags::RASTER_A8,
                StringFlags(StringFlags::RASTER_A1.0 | StringFlags::RASTER_A4.0),
            ),
        }
    }
}

/// `String` (named `GlyphString` here): a u16 length, flags u8, then `length` raster glyphs
/// inline.
///
/// `flags` never holds the raster bit selecting [`Glyphs`] nor any that would take precedence
/// over it (the encoder clears them, the decoder strips them); a lower-priority raster bit (A4
/// next to A1) is kept as it is, so odd flags re-encode byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GlyphString {
    pub flags: StringFlags,
    pub glyphs: Glyphs,
}

impl GlyphString {
    /// The flags as written on the wire.
    pub fn wire_flags(&self) -> StringFlags {
        let (select, before) = self.glyphs.bits();
        StringFlags(self.flags.without(before).without(select).0 | select.0)
    }
}

impl<'u> Arbitrary<'u> for GlyphString {
    fn arbitrary(u: &mut Unstructured<'u>) -> arbitrary::Result<Self> {
        let raw = u8::arbitrary(u)?;
        let kind = u.int_in_range(0..=3u8)?;
        let n = if kind == 0 {
            0
        } else {
            u.int_in_range(0..=6usize)?
        };
        let bpp = [0, 1, 4, 8][kind as usize];
        let list = (0..n)
            .map(|_| RasterGlyph::arbitrary_with_bpp(u, bpp))
            .collect::<arbitrary::Result<Vec<_>>>()?;
        let glyphs = match kind {
            0 => Glyphs::None {
                length: u16::arbitrary(u)?,
            },
            1 => Glyphs::A1(list),
            2 => Glyphs::A4(list),
            _ => Glyphs::A8(list),
        };
        let (select, before) = glyphs.bits();
        Ok(GlyphString {
            flags: StringFlags(raw).without(before).without(select),
            glyphs,
        })
    }
}

impl Encode for GlyphString {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        let list = match &self.glyphs {
            Glyphs::None { length } => {
                w.u16(*length);
                w.u8(self.wire_flags().bits());
                return;
            }
            Glyphs::A1(g) | Glyphs::A4(g) | Glyphs::A8(g) => g,
        };
        let n = list.len().min(u16::MAX as usize);
        w.u16(n as u16);
        w.u8(self.wire_flags().bits());
        for g in &list[..n] {
            g.write(w);
        }
    }
}
impl Decode for GlyphString {
    const MIN_SIZE: usize = 3;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let length = r.u16("string length")?;
        let flags = StringFlags::decode(r)?;
        let (bpp, make): (u64, fn(Vec<RasterGlyph>) -> Glyphs) =
            if flags.contains(StringFlags::RASTER_A1) {
                (1, Glyphs::A1)
            } else if flags.contains(StringFlags::RASTER_A4) {
                (4, Glyphs::A4)
            } else if flags.contains(StringFlags::RASTER_A8) {
                (8, Glyphs::A8)
            } else {
                return Ok(GlyphString {
                    flags,
                    glyphs: Glyphs::None { length },
                });
            };
        r.check_count(length as u64, RasterGlyph::MIN_SIZE, "string glyphs")?;
        let mut list = Vec::with_capacity(length as usize);
        for _ in 0..length {
            list.push(RasterGlyph::read(r, bpp)?);
        }
        let glyphs = make(list);
        let (select, before) = glyphs.bits();
        Ok(GlyphString {
            flags: flags.without(before).without(select),
            glyphs,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Draw structures
// ---------------------------------------------------------------------------------------------

/// `Fill`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct Fill {
    pub brush: Brush,
    pub rop_descriptor: Ropd,
    pub mask: QMask,
}

impl Encode for Fill {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        self.brush.encode(w);
        self.rop_descriptor.encode(w);
        self.mask.encode(w);
    }
}
impl Decode for Fill {
    const MIN_SIZE: usize = 16;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Fill {
            brush: Brush::decode(r)?,
            rop_descriptor: Ropd::decode(r)?,
            mask: QMask::decode(r)?,
        })
    }
}

/// `Opaque`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct Opaque {
    pub src_bitmap: Option<Box<Image>>,
    pub src_area: Rect,
    pub brush: Brush,
    pub rop_descriptor: Ropd,
    pub scale_mode: ImageScaleMode,
    pub mask: QMask,
}

impl Encode for Opaque {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        put_ptr(w, self.src_bitmap.as_deref());
        self.src_area.encode(w);
        self.brush.encode(w);
        self.rop_descriptor.encode(w);
        self.scale_mode.encode(w);
        self.mask.encode(w);
    }
}
impl Decode for Opaque {
    const MIN_SIZE: usize = 37;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Opaque {
            src_bitmap: image_ptr(r, "opaque src_bitmap")?,
            src_area: Rect::decode(r)?,
            brush: Brush::decode(r)?,
            rop_descriptor: Ropd::decode(r)?,
            scale_mode: ImageScaleMode::decode(r)?,
            mask: QMask::decode(r)?,
        })
    }
}

/// `Copy` (also the body of `draw_blend`, whose `Blend` has the C type `SpiceCopy`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct Copy {
    pub src_bitmap: Option<Box<Image>>,
    pub src_area: Rect,
    pub rop_descriptor: Ropd,
    pub scale_mode: ImageScaleMode,
    pub mask: QMask,
}

/// `Blend`: the same structure as [`Copy`](struct@Copy).
pub type Blend = Copy;

impl Encode for Copy {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        put_ptr(w, self.src_bitmap.as_deref());
        self.src_area.encode(w);
        self.rop_descriptor.encode(w);
        self.scale_mode.encode(w);
        self.mask.encode(w);
    }
}
impl Decode for Copy {
    const MIN_SIZE: usize = 36;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Copy {
            src_bitmap: image_ptr(r, "copy src_bitmap")?,
            src_area: Rect::decode(r)?,
            rop_descriptor: Ropd::decode(r)?,
            scale_mode: ImageScaleMode::decode(r)?,
            mask: QMask::decode(r)?,
        })
    }
}

wire_struct! {
    /// `Blackness`, `Whiteness` and `Invers`: a mask only.
    pub struct MaskOnly {
        pub mask: QMask,
    }
}

/// `Blackness`.
pub type Blackness = MaskOnly;
/// `Whiteness`.
pub type Whiteness = MaskOnly;
/// `Invers`.
pub type Invers = MaskOnly;

/// `Rop3`: a ternary raster operation of source, brush and destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct Rop3 {
    pub src_bitmap: Option<Box<Image>>,
    pub src_area: Rect,
    pub brush: Brush,
    pub rop3: u8,
    pub scale_mode: ImageScaleMode,
    pub mask: QMask,
}

impl Encode for Rop3 {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        put_ptr(w, self.src_bitmap.as_deref());
        self.src_area.encode(w);
        self.brush.encode(w);
        w.u8(self.rop3);
        self.scale_mode.encode(w);
        self.mask.encode(w);
    }
}
impl Decode for Rop3 {
    const MIN_SIZE: usize = 36;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Rop3 {
            src_bitmap: image_ptr(r, "rop3 src_bitmap")?,
            src_area: Rect::decode(r)?,
            brush: Brush::decode(r)?,
            rop3: r.u8("rop3 rop3")?,
            scale_mode: ImageScaleMode::decode(r)?,
            mask: QMask::decode(r)?,
        })
    }
}

/// `Stroke`: a path (non-null pointer), line attributes, a brush and the fore/back modes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct Stroke {
    pub path: Path,
    pub attr: LineAttr,
    pub brush: Brush,
    pub fore_mode: u16,
    pub back_mode: u16,
}

impl Encode for Stroke {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.ptr(Some(&self.path));
        self.attr.encode(w);
        self.brush.encode(w);
        w.u16(self.fore_mode);
        w.u16(self.back_mode);
    }
}
impl Decode for Stroke {
    const MIN_SIZE: usize = 10;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Stroke {
            path: r.ptr_nonnull("stroke path")?,
            attr: LineAttr::decode(r)?,
            brush: Brush::decode(r)?,
            fore_mode: r.u16("stroke fore_mode")?,
            back_mode: r.u16("stroke back_mode")?,
        })
    }
}

/// `Text`: a glyph string (non-null pointer), the background area, two brushes and the modes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct Text {
    pub str: GlyphString,
    pub back_area: Rect,
    pub fore_brush: Brush,
    pub back_brush: Brush,
    pub fore_mode: u16,
    pub back_mode: u16,
}

impl Encode for Text {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.ptr(Some(&self.str));
        self.back_area.encode(w);
        self.fore_brush.encode(w);
        self.back_brush.encode(w);
        w.u16(self.fore_mode);
        w.u16(self.back_mode);
    }
}
impl Decode for Text {
    const MIN_SIZE: usize = 26;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Text {
            str: r.ptr_nonnull("text str")?,
            back_area: Rect::decode(r)?,
            fore_brush: Brush::decode(r)?,
            back_brush: Brush::decode(r)?,
            fore_mode: r.u16("text fore_mode")?,
            back_mode: r.u16("text back_mode")?,
        })
    }
}

/// `Transparent`: copy the source except pixels of `src_color`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct Transparent {
    pub src_bitmap: Option<Box<Image>>,
    pub src_area: Rect,
    pub src_color: u32,
    pub true_color: u32,
}

impl Encode for Transparent {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        put_ptr(w, self.src_bitmap.as_deref());
        self.src_area.encode(w);
        w.u32(self.src_color);
        w.u32(self.true_color);
    }
}
impl Decode for Transparent {
    const MIN_SIZE: usize = 28;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Transparent {
            src_bitmap: image_ptr(r, "transparent src_bitmap")?,
            src_area: Rect::decode(r)?,
            src_color: r.u32("transparent src_color")?,
            true_color: r.u32("transparent true_color")?,
        })
    }
}

/// `AlphaBlend`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct AlphaBlend {
    pub alpha_flags: AlphaFlags,
    pub alpha: u8,
    pub src_bitmap: Option<Box<Image>>,
    pub src_area: Rect,
}

impl Encode for AlphaBlend {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        self.alpha_flags.encode(w);
        w.u8(self.alpha);
        put_ptr(w, self.src_bitmap.as_deref());
        self.src_area.encode(w);
    }
}
impl Decode for AlphaBlend {
    const MIN_SIZE: usize = 22;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AlphaBlend {
            alpha_flags: AlphaFlags::decode(r)?,
            alpha: r.u8("alpha_blend alpha")?,
            src_bitmap: image_ptr(r, "alpha_blend src_bitmap")?,
            src_area: Rect::decode(r)?,
        })
    }
}

/// `Composite`: flags u32, the source pointer, then the mask pointer if `HAS_MASK`, the source
/// transform if `HAS_SRC_TRANSFORM`, the mask transform if `HAS_MASK_TRANSFORM`, then the two
/// origins.
///
/// `flags` never holds the three `HAS_*` bits: they are derived from `mask_bitmap`,
/// `src_transform` and `mask_transform` being `Some`. `mask_bitmap` is `Some(None)` for
/// `HAS_MASK` with a null pointer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Composite {
    pub flags: CompositeFlags,
    pub src_bitmap: Option<Box<Image>>,
    pub mask_bitmap: Option<Option<Box<Image>>>,
    pub src_transform: Option<Transform>,
    pub mask_transform: Option<Transform>,
    pub src_origin: Point16,
    pub mask_origin: Point16,
}

impl Composite {
    const SWITCHES: CompositeFlags = CompositeFlags(
        CompositeFlags::HAS_MASK.0
            | CompositeFlags::HAS_SRC_TRANSFORM.0
            | CompositeFlags::HAS_MASK_TRANSFORM.0,
    );

    /// The flags as written on the wire.
    pub fn wire_flags(&self) -> CompositeFlags {
        self.flags
            .with(CompositeFlags::HAS_MASK, self.mask_bitmap.is_some())
            .with(
                CompositeFlags::HAS_SRC_TRANSFORM,
                self.src_transform.is_some(),
            )
            .with(
                CompositeFlags::HAS_MASK_TRANSFORM,
                self.mask_transform.is_some(),
            )
    }
}

impl<'u> Arbitrary<'u> for Composite {
    fn arbitrary(u: &mut Unstructured<'u>) -> arbitrary::Result<Self> {
        Ok(Composite {
            flags: CompositeFlags(u32::arbitrary(u)?).without(Composite::SWITCHES),
            src_bitmap: Arbitrary::arbitrary(u)?,
            mask_bitmap: Arbitrary::arbitrary(u)?,
            src_transform: Arbitrary::arbitrary(u)?,
            mask_transform: Arbitrary::arbitrary(u)?,
            src_origin: Arbitrary::arbitrary(u)?,
            mask_origin: Arbitrary::arbitrary(u)?,
        })
    }
}

impl Encode for Composite {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u32(self.wire_flags().bits());
        put_ptr(w, self.src_bitmap.as_deref());
        if let Some(mask) = &self.mask_bitmap {
            put_ptr(w, mask.as_deref());
        }
        if let Some(t) = &self.src_transform {
            t.encode(w);
        }
        if let Some(t) = &self.mask_transform {
            t.encode(w);
        }
        self.src_origin.encode(w);
        self.mask_origin.encode(w);
    }
}
impl Decode for Composite {
    const MIN_SIZE: usize = 16;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let flags = CompositeFlags::decode(r)?;
        let src_bitmap = image_ptr(r, "composite src_bitmap")?;
        let mask_bitmap = if flags.contains(CompositeFlags::HAS_MASK) {
            Some(image_ptr(r, "composite mask_bitmap")?)
        } else {
            None
        };
        let src_transform = if flags.contains(CompositeFlags::HAS_SRC_TRANSFORM) {
            Some(Transform::decode(r)?)
        } else {
            None
        };
        let mask_transform = if flags.contains(CompositeFlags::HAS_MASK_TRANSFORM) {
            Some(Transform::decode(r)?)
        } else {
            None
        };
        Ok(Composite {
            flags: flags.without(Composite::SWITCHES),
            src_bitmap,
            mask_bitmap,
            src_transform,
            mask_transform,
            src_origin: Point16::decode(r)?,
            mask_origin: Point16::decode(r)?,
        })
    }
}

/// A draw message: the [`DisplayBase`] every draw starts with, then its draw structure
/// (`data`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Arbitrary)]
pub struct Draw<T> {
    pub base: DisplayBase,
    pub data: T,
}

impl<T: Encode> Encode for Draw<T> {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        self.base.encode(w);
        self.data.encode(w);
    }
}
impl<T: Decode> Decode for Draw<T> {
    const MIN_SIZE: usize = DisplayBase::MIN_SIZE + T::MIN_SIZE;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Draw {
            base: DisplayBase::decode(r)?,
            data: T::decode(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode_from_slice, encode_to_vec};

    /// An image descriptor of `ty` followed by `rest`.
    fn image_bytes(ty: u8, rest: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(1u64.to_le_bytes());
        v.push(ty);
        v.push(0);
        v.extend(4u32.to_le_bytes());
        v.extend(4u32.to_le_bytes());
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn unknown_image_brush_and_clip_types_are_errors() {
        for ty in [2u8, 99, 110, 255] {
            assert_eq!(
                decode_from_slice::<Image>(&image_bytes(ty, &[0; 16])),
                Err(DecodeError::InvalidValue {
                    what: "image type",
                    value: ty as u64
                })
            );
        }
        assert!(matches!(
            decode_from_slice::<Brush>(&[3, 0, 0, 0, 0]),
            Err(DecodeError::InvalidValue {
                what: "brush type",
                value: 3
            })
        ));
        assert!(matches!(
            decode_from_slice::<Clip>(&[2, 0, 0, 0, 0]),
            Err(DecodeError::InvalidValue {
                what: "clip type",
                value: 2
            })
        ));
    }

    #[test]
    fn from_cache_images_carry_nothing_more() {
        let img = Image {
            id: 1,
            flags: ImageFlags::EMPTY,
            width: 4,
            height: 4,
            data: ImageData::FromCacheLossless,
        };
        let b = encode_to_vec(&img);
        assert_eq!(b, image_bytes(106, &[]));
        assert_eq!(decode_from_slice::<Image>(&b).unwrap(), img);
    }

    #[test]
    fn bitmap_size_is_checked_before_copying() {
        // stride 0xffffffff * y 0xffffffff: refused from the u64 product, nothing allocated.
        let mut rest = vec![8, 0];
        rest.extend(1u32.to_le_bytes());
        rest.extend(u32::MAX.to_le_bytes());
        rest.extend(u32::MAX.to_le_bytes());
        rest.extend(0u32.to_le_bytes());
        rest.extend([0; 8]);
        assert!(matches!(
            decode_from_slice::<Image>(&image_bytes(0, &rest)),
            Err(DecodeError::CountTooLarge {
                what: "bitmap data",
                ..
            })
        ));
        // LZ_PLT needs its palette pointer.
        let mut rest = vec![0];
        rest.extend(0u32.to_le_bytes());
        rest.extend(0u32.to_le_bytes());
        assert_eq!(
            decode_from_slice::<Image>(&image_bytes(100, &rest)),
            Err(DecodeError::NullPointer {
                what: "lz_plt palette"
            })
        );
    }

    #[test]
    fn string_raster_bits_follow_the_reference_priority() {
        // A1 and A4 both set: A1 glyphs, and the A4 bit is kept so it re-encodes as it was.
        let mut b = vec![1, 0, 1 | 2];
        b.extend([0; 16]);
        b.extend(8u16.to_le_bytes());
        b.extend(1u16.to_le_bytes());
        b.push(0xaa);
        let s = decode_from_slice::<GlyphString>(&b).unwrap();
        assert_eq!(s.flags, StringFlags::RASTER_A4);
        assert!(matches!(&s.glyphs, Glyphs::A1(g) if g.len() == 1 && g[0].data.len() == 1));
        assert_eq!(encode_to_vec(&s), b);
        // No raster bit: the length is kept, no glyph follows.
        let s = decode_from_slice::<GlyphString>(&[5, 0, 8]).unwrap();
        assert_eq!(s.glyphs, Glyphs::None { length: 5 });
        assert_eq!(encode_to_vec(&s), [5, 0, 8]);
        // A4 glyph data: ((3 * 4 + 7) / 8) * 2 = 4 bytes; A8: 3 * 2 = 6.
        assert_eq!(image_size(4, 3, 2), 4);
        assert_eq!(image_size(8, 3, 2), 6);
        assert_eq!(image_size(1, 9, 1), 2);
    }

    #[test]
    fn composite_switches_are_derived() {
        let c = Composite {
            flags: CompositeFlags::OP3 | CompositeFlags::SOURCE_OPAQUE,
            src_bitmap: None,
            mask_bitmap: Some(None),
            src_transform: None,
            mask_transform: Some(Transform {
                t00: 1,
                t01: 2,
                t02: 3,
                t10: 4,
                t11: 5,
                t12: 6,
            }),
            src_origin: Point16 { x: 1, y: 2 },
            mask_origin: Point16 { x: 3, y: 4 },
        };
        let b = encode_to_vec(&c);
        let flags = (1u32 << 3) | (1 << 22) | (1 << 19) | (1 << 21);
        let mut want = flags.to_le_bytes().to_vec();
        want.extend([0; 8]); // src and mask pointers, both null
        for t in 1u32..=6 {
            want.extend(t.to_le_bytes());
        }
        want.extend([1, 0, 2, 0, 3, 0, 4, 0]);
        assert_eq!(b, want);
        assert_eq!(decode_from_slice::<Composite>(&b).unwrap(), c);
    }

    #[test]
    fn styled_line_points_at_its_dashes() {
        let s = Stroke {
            path: Path {
                segments: vec![PathSegment {
                    flags: PathFlags::BEGIN | PathFlags::END,
                    points: vec![PointFix { x: 16, y: 32 }],
                }],
            },
            attr: LineAttr {
                flags: LineFlags::START_WITH_GAP,
                style: Some(LineStyle(vec![0x10, 0x20])),
            },
            brush: Brush::Solid(7),
            fore_mode: 1,
            back_mode: 2,
        };
        let b = encode_to_vec(&s);
        // Body: path ptr, flags, nseg, style ptr, brush (5), modes = 19; the path (4 + 5 + 8)
        // then the style (8), in pointer order.
        let mut want = 19u32.to_le_bytes().to_vec();
        want.extend([4 | 8, 2]);
        want.extend((19u32 + 17).to_le_bytes());
        want.extend([1, 7, 0, 0, 0, 1, 0, 2, 0]);
        want.extend(1u32.to_le_bytes());
        want.push(1 | 2);
        want.extend(1u32.to_le_bytes());
        want.extend(16i32.to_le_bytes());
        want.extend(32i32.to_le_bytes());
        want.extend(0x10i32.to_le_bytes());
        want.extend(0x20i32.to_le_bytes());
        assert_eq!(b, want);
        assert_eq!(decode_from_slice::<Stroke>(&b).unwrap(), s);
    }
}
