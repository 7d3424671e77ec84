//! The display channel: surfaces, draw commands, video streams, cache invalidation and GL
//! scanouts (server → client); the client's cache sizes, stream reports and codec preferences
//! (client → server).
//!
//! This module owns display message numbering (enums.h `SPICE_MSG_DISPLAY_*` /
//! `SPICE_MSGC_DISPLAY_*`) and the message bodies that are not drawing structures; images and
//! draw structures live in [`crate::display`]. It does not decode images or video.

use super::base::WaitForChannels;
use super::{BaseClient, BaseServer};
use crate::display::{
    AlphaBlend, Blackness, Blend, Clip, Composite, Copy, DisplayBase, Draw, Fill, GlScanoutFlags,
    Head, ImageCompression, Invers, Opaque, ResourceId, Rop3, StreamDataHeader, StreamFlags,
    Stroke, SurfaceFlags, SurfaceFmt, Text, Transparent, VideoCodecType, Whiteness,
};
use crate::error::Result;
use crate::types::{Point, Rect};
use crate::wire::{Bytes, Decode, Encode, Reader, Writer};
use crate::{channel_messages, wire_struct};

wire_struct! {
    /// `mode` (obsolete).
    pub struct Mode {
        pub x_res: u32,
        pub y_res: u32,
        pub bits: u32,
    }
}

wire_struct! {
    /// `copy_bits`: copy `base.bbox` from `src_pos` on the same surface.
    pub struct CopyBits {
        pub base: DisplayBase,
        pub src_pos: Point,
    }
}

/// `inval_list` (`SpiceResourceList`): a u16 count and the resources to drop.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct InvalList {
    #[arbitrary(with = crate::wire::arb::vec_max::<ResourceId, 65535>)]
    pub resources: Vec<ResourceId>,
}

impl Encode for InvalList {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        let n = self.resources.len().min(u16::MAX as usize);
        w.u16(n as u16);
        w.all(&self.resources[..n]);
    }
}
impl Decode for InvalList {
    const MIN_SIZE: usize = 2;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let n = r.u16("inval_list count")?;
        Ok(InvalList {
            resources: r.vec(n as u64, "inval_list resources")?,
        })
    }
}

wire_struct! {
    /// `stream_create`: a video stream on a surface, drawn into `dest` clipped by `clip`.
    pub struct StreamCreate {
        pub surface_id: u32,
        pub id: u32,
        pub flags: StreamFlags,
        pub codec_type: VideoCodecType,
        pub stamp: u64,
        pub stream_width: u32,
        pub stream_height: u32,
        pub src_width: u32,
        pub src_height: u32,
        pub dest: Rect,
        pub clip: Clip,
    }
}

/// `stream_data`: one encoded frame. Wire: header, `data_size` u32, the data inline (the size
/// written is `data.len()`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct StreamData {
    pub base: StreamDataHeader,
    pub data: Bytes,
}

impl Encode for StreamData {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        self.base.encode(w);
        w.u32(self.data.len() as u32);
        w.bytes(&self.data);
    }
}
impl Decode for StreamData {
    const MIN_SIZE: usize = 12;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let base = StreamDataHeader::decode(r)?;
        let n = r.u32("stream_data data_size")?;
        Ok(StreamData {
            base,
            data: r.bytes(n as u64, "stream_data data")?.into(),
        })
    }
}

wire_struct! {
    /// `stream_clip`: a new clip for a stream.
    pub struct StreamClip {
        pub id: u32,
        pub clip: Clip,
    }
}

wire_struct! {
    /// `surface_create` (`SpiceMsgSurfaceCreate`).
    pub struct SurfaceCreate {
        pub surface_id: u32,
        pub width: u32,
        pub height: u32,
        pub format: SurfaceFmt,
        pub flags: SurfaceFlags,
    }
}

/// `stream_data_sized`: a frame with its own size and destination. Wire: header, width,
/// height, dest, `data_size` u32, the data inline (the size written is `data.len()`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct StreamDataSized {
    pub base: StreamDataHeader,
    pub width: u32,
    pub height: u32,
    pub dest: Rect,
    pub data: Bytes,
}

impl Encode for StreamDataSized {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        self.base.encode(w);
        w.u32(self.width);
        w.u32(self.height);
        self.dest.encode(w);
        w.u32(self.data.len() as u32);
        w.bytes(&self.data);
    }
}
impl Decode for StreamDataSized {
    const MIN_SIZE: usize = 36;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let base = StreamDataHeader::decode(r)?;
        let width = r.u32("stream_data_sized width")?;
        let height = r.u32("stream_data_sized height")?;
        let dest = Rect::decode(r)?;
        let n = r.u32("stream_data_sized data_size")?;
        Ok(StreamDataSized {
            base,
            width,
            height,
            dest,
            data: r.bytes(n as u64, "stream_data_sized data")?.into(),
        })
    }
}

/// `monitors_config`: a u16 count, the most heads the guest allows, then the heads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct MonitorsConfig {
    pub max_allowed: u16,
    #[arbitrary(with = crate::wire::arb::vec_max::<Head, 65535>)]
    pub heads: Vec<Head>,
}

impl Encode for MonitorsConfig {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        let n = self.heads.len().min(u16::MAX as usize);
        w.u16(n as u16);
        w.u16(self.max_allowed);
        w.all(&self.heads[..n]);
    }
}
impl Decode for MonitorsConfig {
    const MIN_SIZE: usize = 4;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let n = r.u16("monitors_config count")?;
        let max_allowed = r.u16("monitors_config max_allowed")?;
        Ok(MonitorsConfig {
            max_allowed,
            heads: r.vec(n as u64, "monitors_config heads")?,
        })
    }
}

wire_struct! {
    /// `stream_activate_report`: the client should send `stream_report`s for this stream.
    pub struct StreamActivateReport {
        pub stream_id: u32,
        pub unique_id: u32,
        pub max_window_size: u32,
        pub timeout_ms: u32,
    }
}

wire_struct! {
    /// `gl_scanout_unix`: a DMA-BUF to show. Its first field, `unix_fd drm_dma_buf_fd`, has no
    /// bytes in the body: the descriptor travels out of band (SCM_RIGHTS on the channel's Unix
    /// socket) with the message, so the body is these five u32s (20 bytes).
    pub struct GlScanoutUnix {
        pub width: u32,
        pub height: u32,
        pub stride: u32,
        /// A `drm_fourcc.h` format.
        pub drm_fourcc_format: u32,
        pub flags: GlScanoutFlags,
    }
}

wire_struct! {
    /// `gl_draw`: the area of the scanout that changed.
    pub struct GlDraw {
        pub x: u32,
        pub y: u32,
        pub w: u32,
        pub h: u32,
    }
}

channel_messages! {
    /// Server → client messages of the display channel.
    pub enum DisplayServer(BaseServer) {
        101 => Mode(Mode) = "mode",
        102 => Mark = "mark",
        103 => Reset = "reset",
        104 => CopyBits(CopyBits) = "copy_bits",
        105 => InvalList(InvalList) = "inval_list",
        /// Drop the whole pixmap cache after the listed channels reached their serials.
        106 => InvalAllPixmaps(WaitForChannels) = "inval_all_pixmaps",
        /// `id` of the palette to drop (`SpiceMsgDisplayInvalOne`).
        107 => InvalPalette(u64) = "inval_palette",
        108 => InvalAllPalettes = "inval_all_palettes",
        122 => StreamCreate(StreamCreate) = "stream_create",
        123 => StreamData(StreamData) = "stream_data",
        124 => StreamClip(StreamClip) = "stream_clip",
        /// `id` of the stream.
        125 => StreamDestroy(u32) = "stream_destroy",
        126 => StreamDestroyAll = "stream_destroy_all",
        302 => DrawFill(Draw<Fill>) = "draw_fill",
        303 => DrawOpaque(Draw<Opaque>) = "draw_opaque",
        304 => DrawCopy(Draw<Copy>) = "draw_copy",
        305 => DrawBlend(Draw<Blend>) = "draw_blend",
        306 => DrawBlackness(Draw<Blackness>) = "draw_blackness",
        307 => DrawWhiteness(Draw<Whiteness>) = "draw_whiteness",
        308 => DrawInvers(Draw<Invers>) = "draw_invers",
        309 => DrawRop3(Draw<Rop3>) = "draw_rop3",
        310 => DrawStroke(Draw<Stroke>) = "draw_stroke",
        311 => DrawText(Draw<Text>) = "draw_text",
        312 => DrawTransparent(Draw<Transparent>) = "draw_transparent",
        313 => DrawAlphaBlend(Draw<AlphaBlend>) = "draw_alpha_blend",
        314 => SurfaceCreate(SurfaceCreate) = "surface_create",
        /// `surface_id`.
        315 => SurfaceDestroy(u32) = "surface_destroy",
        316 => StreamDataSized(StreamDataSized) = "stream_data_sized",
        317 => MonitorsConfig(MonitorsConfig) = "monitors_config",
        318 => DrawComposite(Draw<Composite>) = "draw_composite",
        319 => StreamActivateReport(StreamActivateReport) = "stream_activate_report",
        320 => GlScanoutUnix(GlScanoutUnix) = "gl_scanout_unix",
        321 => GlDraw(GlDraw) = "gl_draw",
        /// Free text about the stream quality, the rest of the message (`Data`).
        322 => QualityIndicator(Bytes) = "quality_indicator",
    }
}

wire_struct! {
    /// `init` (client): the client's cache sizes.
    pub struct DisplayInit {
        pub pixmap_cache_id: u8,
        /// In pixels.
        pub pixmap_cache_size: i64,
        pub glz_dictionary_id: u8,
        /// In pixels.
        pub glz_dictionary_window_size: i32,
    }
}

wire_struct! {
    /// `stream_report`: how a stream played on the client. `num_frames == 0` with
    /// `num_drops == 0xffffffff` means the client cannot decode the stream; `audio_delay` is
    /// 0xffffffff without audio playback.
    pub struct StreamReport {
        pub stream_id: u32,
        pub unique_id: u32,
        pub start_frame_mm_time: u32,
        pub end_frame_mm_time: u32,
        pub num_frames: u32,
        pub num_drops: u32,
        pub last_frame_delay: i32,
        pub audio_delay: u32,
    }
}

/// `preferred_video_codec_type`: a u8 count and the codecs, most preferred first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct PreferredVideoCodecType {
    #[arbitrary(with = crate::wire::arb::vec_max::<VideoCodecType, 255>)]
    pub codecs: Vec<VideoCodecType>,
}

impl Encode for PreferredVideoCodecType {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        let n = self.codecs.len().min(u8::MAX as usize);
        w.u8(n as u8);
        w.all(&self.codecs[..n]);
    }
}
impl Decode for PreferredVideoCodecType {
    const MIN_SIZE: usize = 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let n = r.u8("preferred_video_codec_type num_of_codecs")?;
        Ok(PreferredVideoCodecType {
            codecs: r.vec(n as u64, "preferred_video_codec_type codecs")?,
        })
    }
}

channel_messages! {
    /// Client → server messages of the display channel.
    pub enum DisplayClient(BaseClient) {
        101 => Init(DisplayInit) = "init",
        102 => StreamReport(StreamReport) = "stream_report",
        103 => PreferredCompression(ImageCompression) = "preferred_compression",
        104 => GlDrawDone = "gl_draw_done",
        105 => PreferredVideoCodecType(PreferredVideoCodecType) = "preferred_video_codec_type",
    }
}

#[cfg(test)]
mod tests {
    //! Byte vectors built by hand from the layout of spice-common's generated marshallers
    //! (`spice_marshall_Copy`, `spice_marshall_Image`, ...) and of spice-server's `fill_bits`
    //! (pointer targets appended in the order their pointers were created, pixel data inline
    //! after the image header, palettes last).

    use super::*;
    use crate::display::*;
    use crate::messages::Message;

    /// A little-endian byte builder.
    #[derive(Default)]
    struct B(Vec<u8>);
    impl B {
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn u16(mut self, v: u16) -> Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn i32(self, v: i32) -> Self {
            self.u32(v as u32)
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn raw(mut self, v: &[u8]) -> Self {
            self.0.extend_from_slice(v);
            self
        }
        fn rect(self, r: Rect) -> Self {
            self.i32(r.top).i32(r.left).i32(r.bottom).i32(r.right)
        }
        fn len(&self) -> u32 {
            self.0.len() as u32
        }
    }

    fn rect(top: i32, left: i32, bottom: i32, right: i32) -> Rect {
        Rect {
            top,
            left,
            bottom,
            right,
        }
    }

    fn check(m: DisplayServer, want: &[u8]) {
        let body = m.to_body();
        assert_eq!(body, want, "{} encodes to the reference layout", m.name());
        assert_eq!(DisplayServer::decode(m.msg_type(), want).unwrap(), m);
    }

    fn base_no_clip() -> DisplayBase {
        DisplayBase {
            surface_id: 0,
            bbox: rect(1, 2, 3, 4),
            clip: Clip::None,
        }
    }

    fn b_base_no_clip() -> B {
        B::default().u32(0).rect(rect(1, 2, 3, 4)).u8(0)
    }

    #[test]
    fn draw_copy_bitmap_with_palette_and_mask() {
        let m = DisplayServer::DrawCopy(Draw {
            base: base_no_clip(),
            data: Copy {
                src_bitmap: Some(Box::new(Image {
                    id: 0x11,
                    flags: ImageFlags::CACHE_ME,
                    width: 2,
                    height: 1,
                    data: ImageData::Bitmap(BitmapData {
                        format: BitmapFmt::Bit8,
                        flags: BitmapFlags::TOP_DOWN,
                        x: 2,
                        y: 1,
                        stride: 2,
                        palette: BitmapPalette::Inline(Some(Palette {
                            unique: 0x33,
                            ents: vec![0xff00_0000, 0xffff_ffff],
                        })),
                        data: Bytes(vec![0, 1]),
                    }),
                })),
                src_area: rect(0, 0, 1, 2),
                rop_descriptor: Ropd::OP_PUT,
                scale_mode: ImageScaleMode::Nearest,
                mask: QMask {
                    flags: MaskFlags::INVERS,
                    pos: Point { x: 5, y: 6 },
                    bitmap: Some(Box::new(Image {
                        id: 0x22,
                        flags: ImageFlags::EMPTY,
                        width: 8,
                        height: 1,
                        data: ImageData::Bitmap(BitmapData {
                            format: BitmapFmt::Bit1Be,
                            flags: BitmapFlags::EMPTY,
                            x: 8,
                            y: 1,
                            stride: 1,
                            palette: BitmapPalette::Inline(None),
                            data: Bytes(vec![0xf0]),
                        }),
                    })),
                },
            },
        });
        // Body: base (21), src pointer, src_area, rop, scale, mask flags/pos/pointer = 57.
        let (src_at, mask_at, pal_at) = (57, 57 + 38, 57 + 38 + 37);
        let want = b_base_no_clip()
            .u32(src_at)
            .rect(rect(0, 0, 1, 2))
            .u16(8) // OP_PUT
            .u8(1) // NEAREST
            .u8(1) // INVERS
            .i32(5)
            .i32(6)
            .u32(mask_at);
        assert_eq!(want.len(), src_at);
        // Source image: descriptor, bitmap header with the palette pointer, then its pixels.
        let want = want
            .u64(0x11)
            .u8(0) // BITMAP
            .u8(1) // CACHE_ME
            .u32(2)
            .u32(1)
            .u8(5) // 8BIT
            .u8(4) // TOP_DOWN
            .u32(2)
            .u32(1)
            .u32(2)
            .u32(pal_at)
            .raw(&[0, 1]);
        assert_eq!(want.len(), mask_at);
        // Mask image: a 1-bit bitmap without palette (null pointer).
        let want = want
            .u64(0x22)
            .u8(0)
            .u8(0)
            .u32(8)
            .u32(1)
            .u8(2) // 1BIT_BE
            .u8(0)
            .u32(8)
            .u32(1)
            .u32(1)
            .u32(0)
            .raw(&[0xf0]);
        assert_eq!(want.len(), pal_at);
        // The source's palette, created last (by spice_marshall_Image inside fill_bits).
        let want = want.u64(0x33).u16(2).u32(0xff00_0000).u32(0xffff_ffff);
        check(m, &want.0);
    }

    #[test]
    fn draw_fill_with_pattern_brush_and_cached_palette() {
        let m = DisplayServer::DrawFill(Draw {
            base: base_no_clip(),
            data: Fill {
                brush: Brush::Pattern(Pattern {
                    pat: Box::new(Image {
                        id: 7,
                        flags: ImageFlags::EMPTY,
                        width: 1,
                        height: 1,
                        data: ImageData::Bitmap(BitmapData {
                            format: BitmapFmt::Bit8,
                            flags: BitmapFlags::TOP_DOWN,
                            x: 1,
                            y: 1,
                            stride: 1,
                            palette: BitmapPalette::FromCache(0x99),
                            data: Bytes(vec![3]),
                        }),
                    }),
                    pos: Point { x: -1, y: 2 },
                }),
                rop_descriptor: Ropd::OP_PUT,
                mask: QMask {
                    flags: MaskFlags::EMPTY,
                    pos: Point { x: 0, y: 0 },
                    bitmap: None,
                },
            },
        });
        // Body: base (21), brush type + pattern pointer + pos (13), rop (2), mask (13) = 49.
        let want = b_base_no_clip()
            .u8(2) // PATTERN
            .u32(49)
            .i32(-1)
            .i32(2)
            .u16(8)
            .u8(0)
            .i32(0)
            .i32(0)
            .u32(0);
        assert_eq!(want.len(), 49);
        let want = want
            .u64(7)
            .u8(0)
            .u8(0)
            .u32(1)
            .u32(1)
            .u8(5)
            .u8(4 | 2) // TOP_DOWN | PAL_FROM_CACHE (derived)
            .u32(1)
            .u32(1)
            .u32(1)
            .u64(0x99) // palette_id instead of a pointer
            .u8(3);
        check(m, &want.0);
    }

    #[test]
    fn draw_text_with_an_a1_glyph() {
        let m = DisplayServer::DrawText(Draw {
            base: base_no_clip(),
            data: Text {
                str: GlyphString {
                    flags: StringFlags::RASTER_TOP_DOWN,
                    glyphs: Glyphs::A1(vec![RasterGlyph {
                        render_pos: Point { x: 10, y: 20 },
                        glyph_origin: Point { x: 0, y: -2 },
                        width: 10,
                        height: 2,
                        // ((10 * 1 + 7) / 8) * 2 = 4 bytes.
                        data: Bytes(vec![0xff, 0xc0, 0x80, 0x40]),
                    }]),
                },
                back_area: rect(0, 0, 2, 10),
                fore_brush: Brush::Solid(0x00ff_00ff),
                back_brush: Brush::None,
                fore_mode: 1,
                back_mode: 2,
            },
        });
        // Body: base (21), str pointer, back_area, solid brush (5), none brush (1), modes = 51.
        let want = b_base_no_clip()
            .u32(51)
            .rect(rect(0, 0, 2, 10))
            .u8(1)
            .u32(0x00ff_00ff)
            .u8(0)
            .u16(1)
            .u16(2);
        assert_eq!(want.len(), 51);
        let want = want
            .u16(1) // length
            .u8(1 | 8) // RASTER_A1 (derived) | RASTER_TOP_DOWN
            .i32(10)
            .i32(20)
            .i32(0)
            .i32(-2)
            .u16(10)
            .u16(2)
            .raw(&[0xff, 0xc0, 0x80, 0x40]);
        check(m, &want.0);
    }

    #[test]
    fn stream_create_with_clip_rects() {
        let m = DisplayServer::StreamCreate(StreamCreate {
            surface_id: 0,
            id: 3,
            flags: StreamFlags::TOP_DOWN,
            codec_type: VideoCodecType::Mjpeg,
            stamp: 0x0102_0304_0506_0708,
            stream_width: 64,
            stream_height: 48,
            src_width: 64,
            src_height: 48,
            dest: rect(10, 20, 58, 84),
            clip: Clip::Rects(vec![rect(10, 20, 30, 84), rect(30, 20, 58, 50)]),
        });
        let want = B::default()
            .u32(0)
            .u32(3)
            .u8(1)
            .u8(1)
            .u64(0x0102_0304_0506_0708)
            .u32(64)
            .u32(48)
            .u32(64)
            .u32(48)
            .rect(rect(10, 20, 58, 84))
            .u8(1) // RECTS
            .u32(2)
            .rect(rect(10, 20, 30, 84))
            .rect(rect(30, 20, 58, 50));
        assert_eq!(want.len(), 87);
        check(m, &want.0);
    }

    #[test]
    fn surface_create_layout() {
        let m = DisplayServer::SurfaceCreate(SurfaceCreate {
            surface_id: 0,
            width: 1024,
            height: 768,
            format: SurfaceFmt::Xrgb32,
            flags: SurfaceFlags::PRIMARY,
        });
        let want = B::default().u32(0).u32(1024).u32(768).u32(32).u32(1);
        check(m, &want.0);
    }

    #[test]
    fn client_init_layout() {
        let m = DisplayClient::Init(DisplayInit {
            pixmap_cache_id: 1,
            pixmap_cache_size: 20 * 1024 * 1024,
            glz_dictionary_id: 2,
            glz_dictionary_window_size: -1,
        });
        let want = B::default().u8(1).u64(20 * 1024 * 1024).u8(2).i32(-1);
        assert_eq!(want.len(), 14);
        assert_eq!(m.to_body(), want.0);
        assert_eq!(DisplayClient::decode(101, &want.0).unwrap(), m);
    }

    #[test]
    fn draw_opaque_targets_follow_pointer_creation_order() {
        // spice-server: spice_marshall_Opaque creates the src, pattern and mask
        // sub-marshallers, then fill_bits fills src (creating its palette's), pattern, mask.
        let img = |id: u64| {
            Box::new(Image {
                id,
                flags: ImageFlags::EMPTY,
                width: 1,
                height: 1,
                data: ImageData::Bitmap(BitmapData {
                    format: BitmapFmt::Bit8,
                    flags: BitmapFlags::EMPTY,
                    x: 1,
                    y: 1,
                    stride: 1,
                    palette: BitmapPalette::Inline(Some(Palette {
                        unique: id + 100,
                        ents: vec![id as u32],
                    })),
                    data: Bytes(vec![id as u8]),
                }),
            })
        };
        let m = DisplayServer::DrawOpaque(Draw {
            base: base_no_clip(),
            data: Opaque {
                src_bitmap: Some(img(1)),
                src_area: rect(0, 0, 1, 1),
                brush: Brush::Pattern(Pattern {
                    pat: img(2),
                    pos: Point { x: 0, y: 0 },
                }),
                rop_descriptor: Ropd::OP_PUT,
                scale_mode: ImageScaleMode::Interpolate,
                mask: QMask {
                    flags: MaskFlags::EMPTY,
                    pos: Point { x: 0, y: 0 },
                    bitmap: Some(img(3)),
                },
            },
        });
        let body = m.to_body();
        let u32_at = |o: usize| u32::from_le_bytes(body[o..o + 4].try_into().unwrap()) as usize;
        // Body: base 21, src ptr @21, area, brush type @41, pat ptr @42, pos, rop, scale,
        // mask flags @57, pos, mask ptr @66; 70 bytes. Each image: 18 + 18 + 1 = 37 bytes.
        let (src, pat, mask) = (u32_at(21), u32_at(42), u32_at(66));
        assert_eq!((src, pat, mask), (70, 107, 144));
        // Palette pointers sit at image + 32; palettes (8 + 2 + 4 bytes) follow all the images.
        let pals: Vec<usize> = [src, pat, mask].iter().map(|i| u32_at(i + 32)).collect();
        assert_eq!(pals, vec![181, 195, 209]);
        assert_eq!(body.len(), 223);
        assert_eq!(DisplayServer::decode(303, &body).unwrap(), m);
    }

    #[test]
    fn gl_scanout_unix_has_no_fd_bytes() {
        let m = DisplayServer::GlScanoutUnix(GlScanoutUnix {
            width: 1,
            height: 2,
            stride: 4,
            drm_fourcc_format: 0x3432_5258,
            flags: GlScanoutFlags::Y0TOP,
        });
        assert_eq!(m.to_body().len(), 20);
    }
}
