use super::*;
use crate::codec::{self, PixelFormat, Pixmap};
use crate::display::*;
use crate::messages::display::{CopyBits, SurfaceCreate};
use crate::messages::DisplayServer as D;
use crate::types::{Point, Rect};
use crate::wire::Bytes;

fn canvas(w: u32, h: u32) -> Canvas {
    canvas_with(w, h, crate::codec::Limits::default())
}

fn canvas_with(w: u32, h: u32, limits: crate::codec::Limits) -> Canvas {
    let mut c = Canvas::new(limits);
    c.apply(&D::SurfaceCreate(SurfaceCreate {
        surface_id: 0,
        width: w,
        height: h,
        format: SurfaceFmt::Xrgb32,
        flags: SurfaceFlags::PRIMARY,
    }))
    .unwrap();
    c
}

fn base(bbox: Rect) -> DisplayBase {
    DisplayBase {
        surface_id: 0,
        bbox,
        clip: Clip::None,
    }
}

fn no_mask() -> QMask {
    QMask {
        flags: MaskFlags::EMPTY,
        pos: Point { x: 0, y: 0 },
        bitmap: None,
    }
}

fn fill(bbox: Rect, color: u32, ropd: Ropd) -> D {
    D::DrawFill(Draw {
        base: base(bbox),
        data: Fill {
            brush: Brush::Solid(color),
            rop_descriptor: ropd,
            mask: no_mask(),
        },
    })
}

fn px(c: &Canvas, x: i64, y: i64) -> u32 {
    c.primary().unwrap().raster.raw(x, y).unwrap() & 0x00ff_ffff
}

fn bitmap_image(id: u64, w: u32, h: u32, pixels: &[u32], flags: ImageFlags) -> Image {
    let data: Vec<u8> = pixels.iter().flat_map(|p| p.to_le_bytes()).collect();
    Image {
        id,
        flags,
        width: w,
        height: h,
        data: ImageData::Bitmap(BitmapData {
            format: BitmapFmt::Bit32,
            flags: BitmapFlags::TOP_DOWN,
            x: w,
            y: h,
            stride: w * 4,
            palette: BitmapPalette::Inline(None),
            data: Bytes::from(data),
        }),
    }
}

fn copy(bbox: Rect, img: Image, src_area: Rect) -> D {
    D::DrawCopy(Draw {
        base: base(bbox),
        data: Copy {
            src_bitmap: Some(Box::new(img)),
            src_area,
            rop_descriptor: Ropd::OP_PUT,
            scale_mode: ImageScaleMode::Nearest,
            mask: no_mask(),
        },
    })
}

#[test]
fn fill_clip_and_rops() {
    let mut c = canvas(8, 8);
    c.apply(&fill(Rect::from_xywh(0, 0, 8, 8), 0x112233, Ropd::OP_PUT))
        .unwrap();
    assert_eq!(px(&c, 7, 7), 0x112233);
    // Clipped to two rectangles.
    let mut m = fill(Rect::from_xywh(0, 0, 8, 8), 0xff0000, Ropd::OP_PUT);
    if let D::DrawFill(d) = &mut m {
        d.base.clip = Clip::Rects(vec![
            Rect::from_xywh(0, 0, 1, 1),
            Rect::from_xywh(5, 5, 2, 1),
        ]);
    }
    c.apply(&m).unwrap();
    assert_eq!(px(&c, 0, 0), 0xff0000);
    assert_eq!(px(&c, 1, 0), 0x112233);
    assert_eq!(px(&c, 6, 5), 0xff0000);
    assert_eq!(px(&c, 6, 6), 0x112233);
    // XOR with itself clears.
    c.apply(&fill(Rect::from_xywh(0, 0, 8, 8), 0x112233, Ropd::OP_XOR))
        .unwrap();
    assert_eq!(px(&c, 3, 3), 0);
    // Invers and whiteness.
    c.apply(&D::DrawInvers(Draw {
        base: base(Rect::from_xywh(0, 0, 2, 2)),
        data: MaskOnly { mask: no_mask() },
    }))
    .unwrap();
    assert_eq!(px(&c, 1, 1), 0xffffff);
    assert_eq!(px(&c, 2, 2), 0);
    assert_eq!(c.stats.draws, 4);
}

#[test]
fn copy_caches_and_scales() {
    let mut c = canvas(8, 8);
    let img = bitmap_image(
        7,
        2,
        2,
        &[0x010101, 0x020202, 0x030303, 0x040404],
        ImageFlags::CACHE_ME,
    );
    c.apply(&copy(
        Rect::from_xywh(1, 1, 2, 2),
        img,
        Rect::from_xywh(0, 0, 2, 2),
    ))
    .unwrap();
    assert_eq!(px(&c, 1, 1), 0x010101);
    assert_eq!(px(&c, 2, 2), 0x040404);
    // From the pixmap cache, scaled 2x (nearest).
    let cached = Image {
        id: 7,
        flags: ImageFlags::EMPTY,
        width: 2,
        height: 2,
        data: ImageData::FromCache,
    };
    c.apply(&copy(
        Rect::from_xywh(4, 4, 4, 4),
        cached.clone(),
        Rect::from_xywh(0, 0, 2, 2),
    ))
    .unwrap();
    assert_eq!(px(&c, 4, 4), 0x010101);
    assert_eq!(px(&c, 5, 5), 0x010101);
    assert_eq!(px(&c, 6, 4), 0x020202);
    assert_eq!(px(&c, 7, 7), 0x040404);
    // Invalidated: the next use fails, and the surface is untouched.
    c.apply(&D::InvalAllPixmaps(
        crate::messages::base::WaitForChannels { wait_list: vec![] },
    ))
    .unwrap();
    let e = c
        .apply(&copy(
            Rect::from_xywh(0, 0, 2, 2),
            cached,
            Rect::from_xywh(0, 0, 2, 2),
        ))
        .unwrap_err();
    assert_eq!(e, CanvasError::MissingPixmap(7));
    assert_eq!(px(&c, 0, 0), 0);
}

#[test]
fn compressed_images_and_glz_window() {
    let mut c = canvas(16, 4);
    let mut pix = Pixmap::new(16, 4, PixelFormat::Rgb32, 1 << 20).unwrap();
    for (i, b) in pix.row_mut(1).iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    for (ty, payload) in [
        (0, codec::quic::encode(&pix).unwrap()),
        (1, codec::lz::encode(&pix, true).unwrap()),
    ] {
        let data = if ty == 0 {
            ImageData::Quic(Bytes::from(payload))
        } else {
            ImageData::LzRgb(Bytes::from(payload))
        };
        let img = Image {
            id: 1,
            flags: ImageFlags::EMPTY,
            width: 16,
            height: 4,
            data,
        };
        c.apply(&copy(
            Rect::from_xywh(0, 0, 16, 4),
            img,
            Rect::from_xywh(0, 0, 16, 4),
        ))
        .unwrap();
        let want = pix.to_rgba8(&[]);
        assert_eq!(c.primary().unwrap().raster.to_rgba8(), want);
    }
}

#[test]
fn copy_bits_moves_overlapping_areas() {
    let mut c = canvas(6, 1);
    let img = bitmap_image(1, 6, 1, &[1, 2, 3, 4, 5, 6], ImageFlags::EMPTY);
    c.apply(&copy(
        Rect::from_xywh(0, 0, 6, 1),
        img,
        Rect::from_xywh(0, 0, 6, 1),
    ))
    .unwrap();
    c.apply(&D::CopyBits(CopyBits {
        base: base(Rect::from_xywh(2, 0, 4, 1)),
        src_pos: Point { x: 0, y: 0 },
    }))
    .unwrap();
    let got: Vec<u32> = (0..6).map(|x| px(&c, x, 0)).collect();
    assert_eq!(got, [1, 2, 1, 2, 3, 4]);
}

#[test]
fn masks_limit_a_fill() {
    let mut c = canvas(8, 1);
    // A 1-bit mask 8x1, MSB first: 0b1010_0000.
    let mask = Image {
        id: 9,
        flags: ImageFlags::EMPTY,
        width: 8,
        height: 1,
        data: ImageData::Bitmap(BitmapData {
            format: BitmapFmt::Bit1Be,
            flags: BitmapFlags::TOP_DOWN,
            x: 8,
            y: 1,
            stride: 1,
            palette: BitmapPalette::Inline(None),
            data: Bytes::from(vec![0b1010_0000]),
        }),
    };
    let m = D::DrawFill(Draw {
        base: base(Rect::from_xywh(0, 0, 8, 1)),
        data: Fill {
            brush: Brush::Solid(0xabcdef),
            rop_descriptor: Ropd::OP_PUT,
            mask: QMask {
                flags: MaskFlags::EMPTY,
                pos: Point { x: 0, y: 0 },
                bitmap: Some(Box::new(mask)),
            },
        },
    });
    c.apply(&m).unwrap();
    let got: Vec<u32> = (0..8).map(|x| px(&c, x, 0)).collect();
    assert_eq!(got, [0xabcdef, 0, 0xabcdef, 0, 0, 0, 0, 0]);
}

#[test]
fn text_a1_glyphs_over_back_area() {
    let mut c = canvas(8, 4);
    // One 3x2 glyph, rows stored bottom-up: bottom row 0b111, top row 0b010.
    let glyph = RasterGlyph {
        render_pos: Point { x: 2, y: 1 },
        glyph_origin: Point { x: 0, y: 0 },
        width: 3,
        height: 2,
        data: Bytes::from(vec![0b1110_0000, 0b0100_0000]),
    };
    let m = D::DrawText(Draw {
        base: base(Rect::from_xywh(0, 0, 8, 4)),
        data: Text {
            str: GlyphString {
                flags: StringFlags::EMPTY,
                glyphs: Glyphs::A1(vec![glyph]),
            },
            back_area: Rect::from_xywh(0, 0, 8, 4),
            fore_brush: Brush::Solid(0xffffff),
            back_brush: Brush::Solid(0x000080),
            fore_mode: Ropd::OP_PUT.0,
            back_mode: Ropd::OP_PUT.0,
        },
    });
    c.apply(&m).unwrap();
    assert_eq!(px(&c, 0, 0), 0x000080);
    assert_eq!(px(&c, 3, 1), 0xffffff);
    assert_eq!(px(&c, 2, 1), 0x000080);
    assert_eq!(
        (2..5).map(|x| px(&c, x, 2)).collect::<Vec<_>>(),
        [0xffffff; 3]
    );
}

#[test]
fn alpha_blend_rounds_like_pixman() {
    let mut c = canvas(2, 1);
    c.apply(&fill(Rect::from_xywh(0, 0, 2, 1), 0x000000, Ropd::OP_PUT))
        .unwrap();
    let img = bitmap_image(1, 2, 1, &[0xffffff, 0x808080], ImageFlags::EMPTY);
    c.apply(&D::DrawAlphaBlend(Draw {
        base: base(Rect::from_xywh(0, 0, 2, 1)),
        data: AlphaBlend {
            alpha_flags: AlphaFlags::EMPTY,
            alpha: 0x80,
            src_bitmap: Some(Box::new(img)),
            src_area: Rect::from_xywh(0, 0, 2, 1),
        },
    }))
    .unwrap();
    assert_eq!(px(&c, 0, 0), 0x808080);
    assert_eq!(px(&c, 1, 0), 0x404040);
}

#[test]
fn stroke_draws_a_line_without_its_last_point() {
    let mut c = canvas(6, 3);
    let f = |v: i32| v << 4;
    let m = D::DrawStroke(Draw {
        base: base(Rect::from_xywh(0, 0, 6, 3)),
        data: Stroke {
            path: Path {
                segments: vec![PathSegment {
                    flags: PathFlags(PathFlags::BEGIN.0 | PathFlags::END.0),
                    points: vec![
                        crate::types::PointFix { x: f(0), y: f(1) },
                        crate::types::PointFix { x: f(4), y: f(1) },
                    ],
                }],
            },
            attr: LineAttr {
                flags: LineFlags::EMPTY,
                style: None,
            },
            brush: Brush::Solid(0x00ff00),
            fore_mode: Ropd::OP_PUT.0,
            back_mode: Ropd::OP_PUT.0,
        },
    });
    c.apply(&m).unwrap();
    let got: Vec<u32> = (0..6).map(|x| px(&c, x, 1)).collect();
    assert_eq!(got, [0xff00, 0xff00, 0xff00, 0xff00, 0, 0]);
    assert_eq!(px(&c, 0, 0), 0);
}

#[test]
fn hostile_draws_are_errors_not_panics() {
    let mut c = canvas(4, 4);
    assert_eq!(
        c.apply(&D::DrawFill(Draw {
            base: DisplayBase {
                surface_id: 9,
                bbox: Rect::from_xywh(0, 0, 1, 1),
                clip: Clip::None
            },
            data: Fill {
                brush: Brush::Solid(0),
                rop_descriptor: Ropd::OP_PUT,
                mask: no_mask()
            },
        })),
        Err(CanvasError::UnknownSurface(9))
    );
    // Huge surfaces are refused.
    assert_eq!(
        c.apply(&D::SurfaceCreate(SurfaceCreate {
            surface_id: 1,
            width: 1 << 20,
            height: 1 << 20,
            format: SurfaceFmt::Xrgb32,
            flags: SurfaceFlags::EMPTY,
        })),
        Err(CanvasError::TooLarge)
    );
    // Extreme coordinates clip to nothing.
    c.apply(&fill(
        Rect {
            top: i32::MIN,
            left: i32::MIN,
            bottom: i32::MAX,
            right: i32::MAX,
        },
        0x123456,
        Ropd::OP_PUT,
    ))
    .unwrap();
    assert_eq!(px(&c, 3, 3), 0x123456);
}

mod prop {
    use super::*;
    use arbitrary::{Arbitrary, Unstructured};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Any sequence of arbitrary display messages is applied without a panic, on a small
        /// primary surface.
        #[test]
        fn arbitrary_messages_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut c = canvas_with(64, 48, crate::codec::Limits { max_pixels: 1 << 16 });
            let mut u = Unstructured::new(&data);
            for _ in 0..16 {
                let Ok(m) = DisplayServer::arbitrary(&mut u) else { break };
                let _ = c.apply(&m);
            }
        }
    }
}
