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

/// Hostile draws (security review findings 4 to 9 and 19): each is refused with a typed error
/// or completes within the canvas's budgets.
mod hostile {
    use super::*;

    /// Finding 9: the glyph box `mw * mh` overflowed (fuzz finding, kept as a regression).
    #[test]
    fn fuzz_regression_text_mul_overflow() {
        let data = include_bytes!("../../fuzz/regressions/canvas_apply/text-mul-overflow.bin");
        // Exactly what protocol/fuzz/fuzz_targets/canvas_apply.rs does with its input.
        crate::fuzzing::canvas_apply(data);
    }

    fn one_bit_mask(id: u64, flags: ImageFlags, w: u32, h: u32) -> Image {
        let stride = w.div_ceil(8);
        Image {
            id,
            flags,
            width: w,
            height: h,
            data: ImageData::Bitmap(BitmapData {
                format: BitmapFmt::Bit1Be,
                flags: BitmapFlags::TOP_DOWN,
                x: w,
                y: h,
                stride,
                palette: BitmapPalette::Inline(None),
                data: Bytes::from(vec![0xaa; (stride * h) as usize]),
            }),
        }
    }

    fn masked_fill(bbox: Rect, mask: Image) -> D {
        D::DrawFill(Draw {
            base: base(bbox),
            data: Fill {
                brush: Brush::Solid(0xabcdef),
                rop_descriptor: Ropd::OP_PUT,
                mask: QMask {
                    flags: MaskFlags::EMPTY,
                    pos: Point { x: 0, y: 0 },
                    bitmap: Some(Box::new(mask)),
                },
            },
        })
    }

    /// Finding 4: a 1-bit mask larger than `Limits::max_pixels` is refused, and is not cached.
    #[test]
    fn oversized_one_bit_mask_is_refused_and_not_cached() {
        let mut c = canvas_with(
            8,
            8,
            crate::codec::Limits {
                max_pixels: 1 << 16,
            },
        );
        let m = one_bit_mask(5, ImageFlags::CACHE_ME, 1024, 1024);
        let e = c.apply(&masked_fill(Rect::from_xywh(0, 0, 8, 8), m));
        assert_eq!(e, Err(CanvasError::TooLarge));
        assert_eq!(c.caches.pixmap_count(), 0);
        assert_eq!(px(&c, 0, 0), 0);
        // One within the limit still masks.
        let m = one_bit_mask(6, ImageFlags::CACHE_ME, 256, 256);
        c.apply(&masked_fill(Rect::from_xywh(0, 0, 8, 8), m))
            .unwrap();
        assert_eq!(px(&c, 0, 0), 0xabcdef);
        assert_eq!(px(&c, 1, 0), 0);
        assert_eq!(c.caches.pixmap_count(), 1);
    }

    fn composite(bbox: Rect, src: Image, t: Transform) -> D {
        D::DrawComposite(Draw {
            base: base(bbox),
            data: Composite {
                flags: CompositeFlags(3 | (1 << 14)), // OVER, repeat normal
                src_bitmap: Some(Box::new(src)),
                mask_bitmap: None,
                src_transform: Some(t),
                mask_transform: None,
                src_origin: crate::types::Point16 {
                    x: i16::MAX,
                    y: i16::MAX,
                },
                mask_origin: crate::types::Point16 { x: 0, y: 0 },
            },
        })
    }

    /// Finding 8: a composite transform applied to a far-left bbox overflowed i64.
    #[test]
    fn composite_transform_far_left_bbox_does_not_overflow() {
        let mut c = canvas(4, 4);
        let src = bitmap_image(1, 2, 2, &[0xff0000; 4], ImageFlags::EMPTY);
        let t = Transform {
            t00: i32::MAX as u32,
            t01: i32::MAX as u32,
            t02: i32::MIN as u32,
            t10: i32::MIN as u32,
            t11: i32::MAX as u32,
            t12: i32::MAX as u32,
        };
        let bbox = Rect {
            top: i32::MIN,
            left: i32::MIN,
            bottom: 4,
            right: 4,
        };
        c.apply(&composite(bbox, src, t)).unwrap();
    }

    fn limits(f: impl FnOnce(&mut CanvasLimits)) -> CanvasLimits {
        let mut l = CanvasLimits::default();
        f(&mut l);
        l
    }

    fn canvas_limits(w: u32, h: u32, l: CanvasLimits) -> Canvas {
        let mut c = Canvas::with_limits(l);
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

    fn stroke(bbox: Rect, points: Vec<(i32, i32)>, style: Option<Vec<i32>>) -> D {
        let f = |v: i32| v.saturating_mul(16);
        D::DrawStroke(Draw {
            base: base(bbox),
            data: Stroke {
                path: Path {
                    segments: vec![PathSegment {
                        flags: PathFlags(PathFlags::BEGIN.0 | PathFlags::END.0),
                        points: points
                            .into_iter()
                            .map(|(x, y)| crate::types::PointFix { x: f(x), y: f(y) })
                            .collect(),
                    }],
                },
                attr: LineAttr {
                    flags: LineFlags::EMPTY,
                    style: style.map(|v| LineStyle(v.into_iter().map(f).collect())),
                },
                brush: Brush::Solid(0x00ff00),
                fore_mode: Ropd::OP_PUT.0,
                back_mode: Ropd::OP_PUT.0,
            },
        })
    }

    /// Finding 5: segments far outside the surface cost O(1) each, not their length.
    #[test]
    fn stroke_segments_outside_the_surface_are_not_stepped() {
        let mut c = canvas(64, 64);
        let far = 1 << 26;
        // 1,000 segments of ~2^27 pixels each, all far to the left.
        let pts: Vec<(i32, i32)> = (0..1000)
            .map(|i| (-far, if i % 2 == 0 { -far } else { far }))
            .collect();
        c.apply(&stroke(Rect::from_xywh(0, 0, 64, 64), pts, None))
            .unwrap();
        assert!(
            c.stats.last_work < 1000 * 64 + 2 * 64 * 64,
            "work {}",
            c.stats.last_work
        );
        // Long segments crossing the surface: only the pixels inside are stepped.
        let pts: Vec<(i32, i32)> = (0..1000)
            .map(|i| if i % 2 == 0 { (-far, 32) } else { (far, 33) })
            .collect();
        c.apply(&stroke(Rect::from_xywh(0, 0, 64, 64), pts, None))
            .unwrap();
        assert!(
            c.stats.last_work < 1000 * (64 + 64) + 2 * 64 * 64,
            "work {}",
            c.stats.last_work
        );
        assert_eq!(px(&c, 10, 32) | px(&c, 10, 33), 0x00ff00);
    }

    /// Finding 5: a dash pattern of one pixel and 254 empty entries costs O(1) per pixel.
    #[test]
    fn dash_pattern_with_empty_entries_costs_o1_per_pixel() {
        let mut c = canvas(256, 256);
        let mut style = vec![1];
        style.extend(std::iter::repeat(0).take(254));
        // 100 segments across the surface and back.
        let pts: Vec<(i32, i32)> = (0..101)
            .map(|i| if i % 2 == 0 { (0, i) } else { (255, i) })
            .collect();
        c.apply(&stroke(Rect::from_xywh(0, 0, 256, 256), pts, Some(style)))
            .unwrap();
        let per_segment = 64 + 256;
        assert!(
            c.stats.last_work < 100 * per_segment + 2 * 256 * 256 + 255,
            "work {}",
            c.stats.last_work
        );
        assert_eq!(px(&c, 10, 0), 0x00ff00);
    }

    /// Finding 5: a draw past its work budget, or with too many path points, is refused.
    #[test]
    fn stroke_over_its_budgets_is_refused() {
        let l = limits(|l| {
            l.max_draw_work = 100_000;
            l.max_path_points = 5_000;
        });
        let mut c = canvas_limits(64, 64, l);
        // 2,000 segments across the surface: 128,000 steps and more.
        let pts: Vec<(i32, i32)> = (0..2001)
            .map(|i| if i % 2 == 0 { (0, 5) } else { (63, 6) })
            .collect();
        assert_eq!(
            c.apply(&stroke(Rect::from_xywh(0, 0, 64, 64), pts, None)),
            Err(CanvasError::Budget {
                what: "stroke pixel steps",
                limit: 100_000
            })
        );
        assert_eq!(px(&c, 5, 5), 0, "a refused stroke draws nothing");
        let pts = vec![(0, 0); 5_001];
        assert_eq!(
            c.apply(&stroke(Rect::from_xywh(0, 0, 64, 64), pts, None)),
            Err(CanvasError::Budget {
                what: "path points",
                limit: 5_000
            })
        );
    }

    /// Finding 6: many clip rectangles cost rectangles + pixels, not their product; past the
    /// cap the draw is refused.
    #[test]
    fn clip_rectangles_cost_rects_plus_pixels() {
        let mut c = canvas(256, 256);
        let mut m = fill(Rect::from_xywh(0, 0, 256, 256), 0x123456, Ropd::OP_PUT);
        let rects: Vec<Rect> = (0..4000)
            .map(|i| Rect::from_xywh(i % 256, 0, 1, 256))
            .collect();
        if let D::DrawFill(d) = &mut m {
            d.base.clip = Clip::Rects(rects);
        }
        c.apply(&m).unwrap();
        assert!(
            c.stats.last_work < 4000 * 14 + 3 * 256 * 256,
            "work {}",
            c.stats.last_work
        );
        assert_eq!(px(&c, 255, 255), 0x123456);
        let l = limits(|l| l.max_clip_rects = 1000);
        let mut c = canvas_limits(8, 8, l);
        if let D::DrawFill(d) = &mut m {
            d.base.clip = Clip::Rects(vec![Rect::from_xywh(0, 0, 1, 1); 1001]);
        }
        assert_eq!(
            c.apply(&m),
            Err(CanvasError::Budget {
                what: "clip rectangles",
                limit: 1000
            })
        );
    }

    /// Finding 7: the pixmap cache is bounded by entries and by bytes; the oldest go first.
    #[test]
    fn pixmap_cache_is_bounded_by_entries_and_bytes() {
        let l = limits(|l| {
            l.max_pixmap_entries = 1000;
            l.max_pixmap_bytes = 1 << 20;
        });
        let mut c = canvas_limits(4, 4, l);
        for id in 0..5000u64 {
            let img = bitmap_image(id, 1, 1, &[id as u32], ImageFlags::CACHE_ME);
            c.apply(&copy(
                Rect::from_xywh(0, 0, 1, 1),
                img,
                Rect::from_xywh(0, 0, 1, 1),
            ))
            .unwrap();
        }
        assert_eq!(c.caches.pixmap_count(), 1000);
        assert_eq!(c.caches.pixmap_bytes(), 1000 * (4 + PIXMAP_ENTRY_OVERHEAD));
        let cached = |id| Image {
            id,
            flags: ImageFlags::EMPTY,
            width: 1,
            height: 1,
            data: ImageData::FromCache,
        };
        let r = Rect::from_xywh(0, 0, 1, 1);
        assert_eq!(
            c.apply(&copy(r.clone(), cached(3999), r.clone())),
            Err(CanvasError::MissingPixmap(3999))
        );
        c.apply(&copy(r.clone(), cached(4000), r.clone())).unwrap();
        // Bytes: a 256x256 image (256 KiB + overhead) leaves room for three more of them.
        let big: Vec<u32> = vec![7; 256 * 256];
        for id in 10_000..10_010u64 {
            let img = bitmap_image(id, 256, 256, &big, ImageFlags::CACHE_ME);
            c.apply(&copy(r.clone(), img, r.clone())).unwrap();
        }
        assert!(c.caches.pixmap_bytes() <= 1 << 20);
        assert_eq!(c.caches.pixmap_count(), 3);
        // One larger than the whole cache is drawn but not kept.
        let huge: Vec<u32> = vec![9; 1024 * 1024];
        let img = bitmap_image(20_000, 1024, 1024, &huge, ImageFlags::CACHE_ME);
        c.apply(&copy(r.clone(), img, r.clone())).unwrap();
        assert_eq!(px(&c, 0, 0), 9);
        assert!(c.caches.pixmap_bytes() <= 1 << 20);
        assert_eq!(
            c.apply(&copy(r.clone(), cached(20_000), r)),
            Err(CanvasError::MissingPixmap(20_000))
        );
    }

    /// Finding 4: a cached 1-bit mask is counted by the bytes it holds (as 32-bit pixels).
    #[test]
    fn cached_one_bit_mask_is_counted_by_bytes_held() {
        let mut c = canvas(8, 8);
        let m = one_bit_mask(5, ImageFlags::CACHE_ME, 64, 64);
        c.apply(&masked_fill(Rect::from_xywh(0, 0, 8, 8), m))
            .unwrap();
        assert_eq!(c.caches.pixmap_bytes(), 64 * 64 * 4 + PIXMAP_ENTRY_OVERHEAD);
    }

    /// Finding 19: the palette cache is bounded by palettes and by colours in all.
    #[test]
    fn palette_cache_is_bounded_by_entries() {
        let l = limits(|l| l.max_palette_entries = 200_000);
        let mut c = canvas_limits(4, 4, l);
        for id in 0..20u64 {
            let img = Image {
                id,
                flags: ImageFlags::EMPTY,
                width: 1,
                height: 1,
                data: ImageData::Bitmap(BitmapData {
                    format: BitmapFmt::Bit8,
                    flags: BitmapFlags(BitmapFlags::TOP_DOWN.0 | BitmapFlags::PAL_CACHE_ME.0),
                    x: 1,
                    y: 1,
                    stride: 1,
                    palette: BitmapPalette::Inline(Some(Palette {
                        unique: id,
                        ents: vec![0x00ff_00ff; 65535],
                    })),
                    data: Bytes::from(vec![0]),
                }),
            };
            let r = Rect::from_xywh(0, 0, 1, 1);
            c.apply(&copy(r.clone(), img, r)).unwrap();
        }
        assert_eq!(c.caches.palette_count(), 3);
        assert!(c.caches.palette_entries() <= 200_000);
        assert_eq!(px(&c, 0, 0), 0xff00ff);
    }

    fn text(glyphs: Vec<RasterGlyph>) -> D {
        D::DrawText(Draw {
            base: base(Rect::from_xywh(0, 0, 8, 8)),
            data: Text {
                str: GlyphString {
                    flags: StringFlags::EMPTY,
                    glyphs: Glyphs::A8(glyphs),
                },
                back_area: Rect::from_xywh(0, 0, 0, 0),
                fore_brush: Brush::Solid(0xffffff),
                back_brush: Brush::None,
                fore_mode: Ropd::OP_PUT.0,
                back_mode: Ropd::OP_PUT.0,
            },
        })
    }

    fn glyph(x: i32, y: i32, w: u16, h: u16, len: usize) -> RasterGlyph {
        RasterGlyph {
            render_pos: Point { x, y },
            glyph_origin: Point { x: 0, y: 0 },
            width: w,
            height: h,
            data: Bytes::from(vec![0xff; len]),
        }
    }

    /// Finding 9 and the audit: glyphs far apart make a box of ~2^64 pixels; only the part
    /// inside the draw is built, and glyph data shorter than its size is an error.
    #[test]
    fn text_work_is_bounded_by_the_draw() {
        let mut c = canvas(8, 8);
        c.apply(&text(vec![
            glyph(i32::MIN, i32::MIN, 2, 2, 4),
            glyph(1, 1, 2, 2, 4),
            glyph(i32::MAX, i32::MAX, 2, 2, 4),
        ]))
        .unwrap();
        assert_eq!(px(&c, 1, 1), 0xffffff);
        assert_eq!(px(&c, 3, 3), 0);
        assert!(
            c.stats.last_work < 2 * 64 + 16,
            "work {}",
            c.stats.last_work
        );
        assert_eq!(
            c.apply(&text(vec![glyph(0, 0, 4, 4, 15)])),
            Err(CanvasError::ShortGlyph(0))
        );
    }

    /// Audit: copy_bits copies the rectangle it moves, not the whole surface.
    #[test]
    fn copy_bits_work_is_bounded_by_its_area() {
        let mut c = canvas(1024, 1024);
        c.apply(&D::CopyBits(CopyBits {
            base: base(Rect::from_xywh(10, 10, 2, 2)),
            src_pos: Point { x: 0, y: 0 },
        }))
        .unwrap();
        assert!(c.stats.last_work <= 8, "work {}", c.stats.last_work);
    }

    /// Audit: a draw from a surface copies the part of the surface it reads, not all of it.
    #[test]
    fn surface_source_work_is_bounded_by_the_draw() {
        let mut c = canvas(1024, 1024);
        c.apply(&D::SurfaceCreate(SurfaceCreate {
            surface_id: 1,
            width: 1024,
            height: 1024,
            format: SurfaceFmt::Xrgb32,
            flags: SurfaceFlags::EMPTY,
        }))
        .unwrap();
        let src_surface = || Image {
            id: 1,
            flags: ImageFlags::EMPTY,
            width: 1024,
            height: 1024,
            data: ImageData::Surface(1),
        };
        let src = src_surface();
        c.apply(&copy(
            Rect::from_xywh(10, 10, 2, 2),
            src.clone(),
            Rect::from_xywh(500, 500, 2, 2),
        ))
        .unwrap();
        assert!(c.stats.last_work <= 8, "work {}", c.stats.last_work);
        // Scaled down 512 times: the span it samples, a few pixels more.
        c.apply(&copy(
            Rect::from_xywh(10, 10, 2, 2),
            src,
            Rect::from_xywh(0, 0, 1024, 1024),
        ))
        .unwrap();
        assert!(
            c.stats.last_work <= 4 + 520 * 520,
            "work {}",
            c.stats.last_work
        );
        // A composite from the surface, untransformed: the 2x2 it reads.
        let mut m = composite(
            Rect::from_xywh(10, 10, 2, 2),
            src_surface(),
            Transform {
                t00: 1 << 16,
                t01: 0,
                t02: 0,
                t10: 0,
                t11: 1 << 16,
                t12: 0,
            },
        );
        if let D::DrawComposite(d) = &mut m {
            d.data.src_transform = None;
            d.data.flags = CompositeFlags(3);
            d.data.src_origin = crate::types::Point16 { x: 500, y: 500 };
        }
        c.apply(&m).unwrap();
        assert_eq!(c.stats.last_work, 8, "the region and the 2x2 it reads");
    }

    /// Audit: an LZ4 image's descriptor size (guest-chosen) is multiplied without overflow.
    #[test]
    fn lz4_image_of_huge_descriptor_size_is_refused() {
        let mut c = canvas(4, 4);
        let img = Image {
            id: 1,
            flags: ImageFlags::EMPTY,
            width: u32::MAX,
            height: u32::MAX,
            data: ImageData::Lz4(Bytes::from(vec![1, 8, 0, 0, 0, 0])),
        };
        let r = Rect::from_xywh(0, 0, 1, 1);
        assert!(matches!(
            c.apply(&copy(r.clone(), img, r)),
            Err(CanvasError::Codec(_))
        ));
    }

    /// The pixels of a whole line (the reference stepping) inside a rectangle.
    fn reference_pixels(a: (i64, i64), b: (i64, i64), r: (i64, i64, i64, i64)) -> Vec<(i64, i64)> {
        let mut v = Vec::new();
        bresenham(a, b, |x, y| {
            if x >= r.0 && y >= r.1 && x < r.2 && y < r.3 {
                v.push((x, y));
            }
        });
        v
    }

    /// The reference's conversion of a dash offset, step by step.
    fn reference_start(d: &[u32], offset: u32) -> (usize, u32) {
        let (mut i, mut left, mut skip) = (0usize, d[0], offset);
        while skip > 0 {
            let n = skip.min(left);
            skip -= n;
            left -= n;
            if left == 0 {
                i = (i + 1) % d.len();
                left = d[i];
            }
        }
        (i, left)
    }

    /// The reference's per-pixel dash step.
    fn reference_step(d: &[u32], p: &mut (usize, u32)) {
        p.1 = p.1.saturating_sub(1);
        let mut guard = d.len();
        while p.1 == 0 && guard > 0 {
            p.0 = (p.0 + 1) % d.len();
            p.1 = d[p.0];
            guard -= 1;
        }
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            /// A clipped line has exactly the pixels the whole line has inside the rectangle,
            /// in the same order.
            #[test]
            fn clipped_lines_step_as_whole_lines(
                ax in -300i64..300, ay in -300i64..300, bx in -300i64..300, by in -300i64..300,
                rx in -100i64..100, ry in -100i64..100, rw in 0i64..150, rh in 0i64..150,
            ) {
                let r = (rx, ry, rx + rw, ry + rh);
                let zl = ZeroLine::new((ax, ay), (bx, by));
                let mut got = Vec::new();
                zl.step(zl.clip(r), |x, y| got.push((x, y)));
                prop_assert_eq!(got, reference_pixels((ax, ay), (bx, by), r));
                let mut all = Vec::new();
                zl.step(0..zl.major, |x, y| all.push((x, y)));
                prop_assert_eq!(all, reference_pixels((ax, ay), (bx, by), (i64::MIN, i64::MIN, i64::MAX, i64::MAX)));
            }

            /// Dash positions: the start state, one step and a skip of n pixels agree with
            /// the reference's pixel-by-pixel walk.
            #[test]
            fn dashes_walk_as_the_reference(
                d in proptest::collection::vec(prop_oneof![Just(0u32), 0u32..6, 0u32..256], 1..12),
                offset in 0u32..256,
                n in 0u64..2000,
            ) {
                prop_assume!(d.iter().any(|&x| x > 0));
                let dashes = Dashes::new(d.clone()).unwrap();
                let mut want = reference_start(&d, offset);
                let mut got = dashes.start(offset);
                prop_assert_eq!((got.i, got.left), want);
                let mut skipped = got;
                dashes.advance(&mut skipped, n);
                for _ in 0..n {
                    prop_assert_eq!(got.i % 2, want.0 % 2);
                    reference_step(&d, &mut want);
                    dashes.step(&mut got);
                    prop_assert_eq!((got.i, got.left), want);
                }
                prop_assert_eq!(skipped, got);
            }

            /// A surface source copied only where the draw reads it draws exactly what the
            /// same pixels as an image draw, scaled or not.
            #[test]
            fn surface_sources_draw_as_images(
                pixels in proptest::collection::vec(any::<u32>(), 20 * 20),
                sx in -4i32..24, sy in -4i32..24, sw in 0i32..24, sh in 0i32..24,
                dx in -4i32..24, dy in -4i32..24, dw in 0i32..24, dh in 0i32..24,
                mode in prop_oneof![Just(ImageScaleMode::Nearest), Just(ImageScaleMode::Interpolate)],
                clip in proptest::option::of((0i32..20, 0i32..20, 0i32..20, 0i32..20)),
            ) {
                let pixels: Vec<u32> = pixels.into_iter().map(|p| p & 0x00ff_ffff).collect();
                let img = || bitmap_image(1, 20, 20, &pixels, ImageFlags::EMPTY);
                let full = Rect::from_xywh(0, 0, 20, 20);
                let draw = |src: Image| {
                    let mut m = copy(Rect::from_xywh(dx, dy, dw, dh), src, Rect::from_xywh(sx, sy, sw, sh));
                    if let D::DrawCopy(d) = &mut m {
                        d.data.scale_mode = mode;
                        if let Some((x, y, w, h)) = clip {
                            d.base.clip = Clip::Rects(vec![Rect::from_xywh(x, y, w, h)]);
                        }
                    }
                    m
                };
                let mut a = canvas(20, 20);
                a.apply(&D::SurfaceCreate(SurfaceCreate {
                    surface_id: 1,
                    width: 20,
                    height: 20,
                    format: SurfaceFmt::Xrgb32,
                    flags: SurfaceFlags::EMPTY,
                }))
                .unwrap();
                let mut to_1 = copy(full.clone(), img(), full.clone());
                if let D::DrawCopy(d) = &mut to_1 {
                    d.base.surface_id = 1;
                }
                a.apply(&to_1).unwrap();
                let from_surface = Image {
                    id: 2,
                    flags: ImageFlags::EMPTY,
                    width: 20,
                    height: 20,
                    data: ImageData::Surface(1),
                };
                let ra = a.apply(&draw(from_surface));
                let mut b = canvas(20, 20);
                let rb = b.apply(&draw(img()));
                prop_assert_eq!(ra.is_ok(), rb.is_ok());
                prop_assert_eq!(&a.primary().unwrap().raster.px, &b.primary().unwrap().raster.px);
            }

            /// Composite operands from a surface, copied only where the draw reads them,
            /// compose exactly as the same pixels given as images.
            #[test]
            fn composite_surface_operands_compose_as_images(
                pixels in proptest::collection::vec(any::<u32>(), 20 * 20),
                ox in -24i16..24, oy in -24i16..24, mx in -24i16..24, my in -24i16..24,
                dx in -4i32..24, dy in -4i32..24, dw in 0i32..24, dh in 0i32..24,
                op in prop_oneof![Just(1u32), Just(3u32)],
                repeat in 0u32..4,
                with_mask in any::<bool>(),
            ) {
                let pixels: Vec<u32> = pixels.into_iter().map(|p| p & 0x00ff_ffff).collect();
                let img = || bitmap_image(1, 20, 20, &pixels, ImageFlags::EMPTY);
                let full = Rect::from_xywh(0, 0, 20, 20);
                let draw = |src: Image| {
                    D::DrawComposite(Draw {
                        base: base(Rect::from_xywh(dx, dy, dw, dh)),
                        data: Composite {
                            flags: CompositeFlags(op | (repeat << 14)),
                            src_bitmap: Some(Box::new(src.clone())),
                            mask_bitmap: with_mask.then(|| Some(Box::new(src))),
                            src_transform: None,
                            mask_transform: None,
                            src_origin: crate::types::Point16 { x: ox, y: oy },
                            mask_origin: crate::types::Point16 { x: mx, y: my },
                        },
                    })
                };
                let mut a = canvas(20, 20);
                a.apply(&D::SurfaceCreate(SurfaceCreate {
                    surface_id: 1,
                    width: 20,
                    height: 20,
                    format: SurfaceFmt::Xrgb32,
                    flags: SurfaceFlags::EMPTY,
                }))
                .unwrap();
                let mut to_1 = copy(full.clone(), img(), full.clone());
                if let D::DrawCopy(d) = &mut to_1 {
                    d.base.surface_id = 1;
                }
                a.apply(&to_1).unwrap();
                let from_surface = Image {
                    id: 2,
                    flags: ImageFlags::EMPTY,
                    width: 20,
                    height: 20,
                    data: ImageData::Surface(1),
                };
                let ra = a.apply(&draw(from_surface));
                let mut b = canvas(20, 20);
                let rb = b.apply(&draw(img()));
                prop_assert_eq!(ra.is_ok(), rb.is_ok());
                prop_assert_eq!(&a.primary().unwrap().raster.px, &b.primary().unwrap().raster.px);
            }

            /// The clip rectangles' sweep keeps exactly the pixels inside one of them.
            #[test]
            fn clip_rect_sweep_matches_the_definition(
                rects in proptest::collection::vec((-4i32..20, -4i32..20, 0i32..12, 0i32..12), 0..12),
            ) {
                let rects: Vec<Rect> = rects.into_iter().map(|(x, y, w, h)| Rect::from_xywh(x, y, w, h)).collect();
                let mut reg = Region::new(&Rect::from_xywh(1, 2, 14, 13), 16, 16).unwrap();
                reg.mask = Some(vec![true; 14 * 13]);
                reg.clip_rects(&rects);
                let mut got = Vec::new();
                reg.for_each(|x, y| got.push((x, y)));
                let mut want = Vec::new();
                for y in 2..15i64 {
                    for x in 1..15i64 {
                        if rects.iter().any(|r| x >= r.left as i64 && x < r.right as i64 && y >= r.top as i64 && y < r.bottom as i64) {
                            want.push((x, y));
                        }
                    }
                }
                prop_assert_eq!(got, want);
            }
        }
    }
}
