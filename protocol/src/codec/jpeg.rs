//! JPEG: SPICE_IMAGE_TYPE_JPEG and SPICE_IMAGE_TYPE_JPEG_ALPHA, as spice-server's
//! jpeg-encoder.c (libjpeg: baseline JFIF, `jpeg_set_defaults` so 4:2:0 chroma, the
//! configured quality) writes them and spice-gtk's decode-jpeg.c / spice-common's canvas
//! (`canvas_get_jpeg`, `canvas_get_jpeg_alpha`) read them.
//!
//! JPEG: the payload is a JFIF stream of the picture, rows top-down whatever the source
//! bitmap's order. The client decodes it to RGB and stores B, G, R, 0 (32BIT).
//!
//! JPEG_ALPHA ([`crate::display::JpegAlphaData`]): the first `jpeg_size` bytes of the payload
//! are the JPEG of the colour (top-down, as above), the rest is an LZ payload of type XXXA
//! ([`lz::ImageType::Xxxa`]: the alpha bytes alone) of the same width and height, whose
//! top_down must equal the TOP_DOWN flag. The alpha rows are in the source bitmap's memory
//! order: if not top-down, alpha row 0 is the bottom of the picture. The result is RGBA.
//!
//! Decoding uses `zune-jpeg` (pure Rust, its SIMD features off so it forbids unsafe code,
//! single-threaded; it is the `image` crate's JPEG decoder), strict mode; encoding uses
//! `jpeg-encoder` (no_std build, no unsafe code) with 2x2 chroma subsampling as libjpeg's
//! defaults. Lossy, so neither side is byte-compatible with libjpeg; pixels agree within the
//! codec's error.
//!
//! Owns: [`decode`], [`decode_alpha`] (untrusted input), [`encode`], [`encode_alpha`]. Does
//! not: check the size against the image descriptor (the caller compares; the reference
//! refuses a mismatch).

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::{lz, CodecError, Limits, PixelFormat, Pixmap};

const CODEC: &str = "jpeg";
const CODEC_ALPHA: &str = "jpeg_alpha";
/// Pixels one input byte can stand for in a stream [`decode`] accepts. A complete sequential
/// JPEG spends at least 2 bits (a DC code and an end-of-block code) on each 8x8 block of each
/// component: at most 256 pixels a byte for gray, fewer with chroma. The bound leaves a
/// margin of 4 and refuses streams that only reach their size by running out of data.
const MAX_PIXELS_PER_BYTE: u64 = 1024;
/// Images up to this many pixels are never refused for their input size.
const SMALL_PIXELS: u64 = 1 << 16;

fn corrupt(codec: &'static str, what: &'static str) -> CodecError {
    CodecError::Corrupt { codec, what }
}

fn jpeg_error(e: zune_jpeg::errors::DecodeErrors) -> CodecError {
    use zune_jpeg::errors::DecodeErrors as E;
    match e {
        E::ExhaustedData | E::IoErrors(_) => CodecError::Truncated { codec: CODEC },
        E::IllegalMagicBytes(magic) => CodecError::BadMagic {
            codec: CODEC,
            magic: magic as u32,
        },
        E::Unsupported(_) => corrupt(CODEC, "unsupported JPEG feature"),
        E::HuffmanDecode(_) => corrupt(CODEC, "bad Huffman table or code"),
        E::DqtError(_) => corrupt(CODEC, "bad quantization table"),
        E::SosError(_) => corrupt(CODEC, "bad scan header"),
        E::SofError(_) | E::ZeroError | E::LargeDimensions(_) => corrupt(CODEC, "bad frame header"),
        E::MCUError(_) => corrupt(CODEC, "bad entropy-coded data"),
        _ => corrupt(CODEC, "invalid JPEG stream"),
    }
}

/// Decode a JPEG stream to `(width, height, R G B bytes)`.
fn decode_rgb(data: &[u8], limits: &Limits) -> Result<(u32, u32, Vec<u8>), CodecError> {
    let opts = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        // The format's own maximum: the pixel limit below is the one that counts.
        .set_max_width(u16::MAX as usize)
        .set_max_height(u16::MAX as usize)
        .set_strict_mode(true);
    let mut d = JpegDecoder::new_with_options(ZCursor::new(data), opts);
    d.decode_headers().map_err(jpeg_error)?;
    let (w, h) = d.dimensions().ok_or(corrupt(CODEC, "no frame header"))?;
    let (w, h) = (w as u32, h as u32);
    if w == 0 || h == 0 {
        return Err(CodecError::InvalidSize {
            codec: CODEC,
            width: w,
            height: h,
        });
    }
    let pixels = w as u64 * h as u64;
    let possible =
        pixels <= SMALL_PIXELS || pixels <= (data.len() as u64).saturating_mul(MAX_PIXELS_PER_BYTE);
    if pixels > limits.max_pixels || !possible {
        return Err(CodecError::TooLarge {
            codec: CODEC,
            width: w,
            height: h,
            limit: limits.max_pixels,
        });
    }
    let n = d
        .output_buffer_size()
        .filter(|&n| n as u64 == pixels * 3)
        .ok_or(corrupt(CODEC, "unexpected output size"))?;
    let mut rgb = vec![0u8; n];
    d.decode_into(&mut rgb).map_err(jpeg_error)?;
    Ok((w, h, rgb))
}

/// Decode a SPICE_IMAGE_TYPE_JPEG payload (the `data_size` bytes after the descriptor and
/// `data_size`, chunks joined) to a top-down [`PixelFormat::Rgb32`] pixmap: B, G, R, 0, as
/// the reference client stores it. Grayscale streams give gray pixels.
pub fn decode(data: &[u8], limits: &Limits) -> Result<Pixmap, CodecError> {
    let (w, h, rgb) = decode_rgb(data, limits)?;
    let mut out = Vec::with_capacity(rgb.len() / 3 * 4);
    for p in rgb.chunks_exact(3) {
        out.extend_from_slice(&[p[2], p[1], p[0], 0]);
    }
    Pixmap::from_data(w, h, PixelFormat::Rgb32, w as usize * 4, out)
}

/// Decode a SPICE_IMAGE_TYPE_JPEG_ALPHA payload: `data` is the whole `data` of
/// [`crate::display::JpegAlphaData`], `jpeg_size` and `top_down` (its flags' TOP_DOWN) its
/// other fields. Returns a top-down [`PixelFormat::Rgba`] pixmap: B, G, R from the JPEG and A
/// from the LZ alpha plane.
pub fn decode_alpha(
    data: &[u8],
    jpeg_size: u32,
    top_down: bool,
    limits: &Limits,
) -> Result<Pixmap, CodecError> {
    let (jpeg, alpha) = data
        .split_at_checked(jpeg_size as usize)
        .ok_or(CodecError::Truncated { codec: CODEC_ALPHA })?;
    // Check the alpha header against the colour before decoding either.
    let ah = lz::read_header(alpha)?;
    if ah.image_type != lz::ImageType::Xxxa {
        return Err(CodecError::BadImageType {
            codec: CODEC_ALPHA,
            value: ah.image_type as u32,
        });
    }
    if ah.top_down != top_down {
        return Err(corrupt(
            CODEC_ALPHA,
            "alpha top_down differs from the flags",
        ));
    }
    let (w, h, rgb) = decode_rgb(jpeg, limits)?;
    if (ah.width, ah.height) != (w, h) {
        return Err(corrupt(CODEC_ALPHA, "alpha size differs from the JPEG's"));
    }
    let a = lz::decode_with(alpha, limits)?.pixmap;
    let mut out = Vec::with_capacity(rgb.len() / 3 * 4);
    for (y, row) in (0..h).zip(rgb.chunks_exact(w as usize * 3)) {
        let arow = a.row(if top_down { y } else { h - 1 - y });
        for (p, &alpha) in row.chunks_exact(3).zip(arow) {
            out.extend_from_slice(&[p[2], p[1], p[0], alpha]);
        }
    }
    Pixmap::from_data(w, h, PixelFormat::Rgba, w as usize * 4, out)
}

/// Compress `img` (top-down) as a baseline JFIF stream at `quality` (1..=100, clamped), with
/// 2x2 chroma subsampling at every quality, as spice-server's libjpeg defaults do.
///
/// Takes [`PixelFormat::Rgb32`] (X ignored), [`PixelFormat::Rgba`] (alpha ignored),
/// [`PixelFormat::Rgb24`] and [`PixelFormat::Rgb16`]; at most 65535 pixels each way.
pub fn encode(img: &Pixmap, quality: u8) -> Result<Vec<u8>, CodecError> {
    use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
    let (w, h) = (img.width(), img.height());
    let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
        return Err(CodecError::InvalidSize {
            codec: CODEC,
            width: w,
            height: h,
        });
    };
    let tight = |img: &Pixmap| -> Vec<u8> { (0..h).flat_map(|y| img.row(y).to_vec()).collect() };
    let (pixels, ty) = match img.format() {
        PixelFormat::Rgb32 | PixelFormat::Rgba => (tight(img), ColorType::Bgra),
        PixelFormat::Rgb24 => (tight(img), ColorType::Bgr),
        PixelFormat::Rgb16 => (img.to_rgba8(&[]), ColorType::Rgba),
        format => {
            return Err(CodecError::UnsupportedFormat {
                codec: CODEC,
                format,
            })
        }
    };
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out, quality.clamp(1, 100));
    e.set_sampling_factor(SamplingFactor::F_2_2);
    e.encode(&pixels, w16, h16, ty)
        .map_err(|_| corrupt(CODEC, "JPEG encoder failed"))?;
    Ok(out)
}

/// Compress an RGBA `img` (top-down) as a JPEG_ALPHA payload: [`encode`] of the colour, then
/// the LZ XXXA payload of the alpha bytes with rows in the order `top_down` says (bottom-up
/// when false, as spice-server sends a bottom-up bitmap). Returns the payload and its
/// `jpeg_size`; the flags' TOP_DOWN is `top_down`.
pub fn encode_alpha(
    img: &Pixmap,
    quality: u8,
    top_down: bool,
) -> Result<(Vec<u8>, u32), CodecError> {
    if img.format() != PixelFormat::Rgba {
        return Err(CodecError::UnsupportedFormat {
            codec: CODEC_ALPHA,
            format: img.format(),
        });
    }
    let mut out = encode(img, quality)?;
    let jpeg_size =
        u32::try_from(out.len()).map_err(|_| CodecError::BadPixmap { what: "too large" })?;
    let alpha = if top_down {
        lz::encode_alpha(img, true)?
    } else {
        lz::encode_alpha(&img.flipped_vertically(), false)?
    };
    out.extend_from_slice(&alpha);
    Ok((out, jpeg_size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A smooth picture (gradients and a soft disc), what JPEG is made for.
    fn picture(fmt: PixelFormat, w: u32, h: u32, pad: usize) -> Pixmap {
        let bpp = fmt.bits_per_pixel() as usize / 8;
        let stride = w as usize * bpp + pad;
        let mut data = vec![0u8; stride * h as usize];
        for y in 0..h as usize {
            for x in 0..w as usize {
                let (fx, fy) = (x as f64, y as f64);
                let d = ((fx - 20.0).powi(2) + (fy - 12.0).powi(2)).sqrt();
                let b = (128.0 + 100.0 * (fx / 9.0).sin()) as u8;
                let g = (128.0 + 100.0 * (fy / 11.0).cos()) as u8;
                let r = (255.0 * (1.0 - d / 30.0).clamp(0.0, 1.0)) as u8;
                let a = ((x * 3 + y * 5) % 256) as u8;
                let p = &mut data[y * stride + x * bpp..][..bpp];
                match fmt {
                    PixelFormat::Rgb16 => {
                        let v = (r as u16 >> 3) << 10 | (g as u16 >> 3) << 5 | b as u16 >> 3;
                        p.copy_from_slice(&v.to_le_bytes());
                    }
                    PixelFormat::Rgb24 => p.copy_from_slice(&[b, g, r]),
                    _ => p.copy_from_slice(&[b, g, r, a]),
                }
            }
        }
        Pixmap::from_data(w, h, fmt, stride, data).unwrap()
    }

    /// Largest absolute channel difference and PSNR (dB) of the colour channels.
    fn error(a: &Pixmap, b: &Pixmap) -> (u8, f64) {
        let (pa, pb) = (a.to_rgba8(&[]), b.to_rgba8(&[]));
        let mut max = 0u8;
        let mut se = 0f64;
        let mut n = 0f64;
        for (x, y) in pa.chunks(4).zip(pb.chunks(4)) {
            for c in 0..3 {
                let d = x[c].abs_diff(y[c]);
                max = max.max(d);
                se += (d as f64).powi(2);
                n += 1.0;
            }
        }
        let mse = se / n;
        (
            max,
            if mse == 0.0 {
                f64::INFINITY
            } else {
                10.0 * (255f64.powi(2) / mse).log10()
            },
        )
    }

    #[test]
    fn round_trip_within_error() {
        for fmt in [
            PixelFormat::Rgb32,
            PixelFormat::Rgba,
            PixelFormat::Rgb24,
            PixelFormat::Rgb16,
        ] {
            for (w, h) in [(64, 48), (37, 23), (1, 1), (300, 7)] {
                let img = picture(fmt, w, h, 4);
                let enc = encode(&img, 90).unwrap();
                assert_eq!(&enc[..2], [0xff, 0xd8]);
                let dec = decode(&enc, &Limits::default()).unwrap();
                assert_eq!(
                    (dec.width(), dec.height(), dec.format()),
                    (w, h, PixelFormat::Rgb32)
                );
                assert!(dec.data().chunks(4).all(|p| p[3] == 0), "X is 0");
                let (max, psnr) = error(&img, &dec);
                // Measured at quality 90: PSNR 36.4..40 dB, max channel error 10..16.
                assert!(
                    psnr > 35.0 && max <= 24,
                    "{fmt:?} {w}x{h}: max {max}, {psnr:.1} dB"
                );
            }
        }
    }

    #[test]
    fn alpha_round_trip() {
        for top_down in [true, false] {
            let img = picture(PixelFormat::Rgba, 45, 31, 0);
            let (payload, jpeg_size) = encode_alpha(&img, 85, top_down).unwrap();
            assert_eq!(&payload[jpeg_size as usize..][..4], b"  ZL");
            let dec = decode_alpha(&payload, jpeg_size, top_down, &Limits::default()).unwrap();
            assert_eq!(
                (dec.width(), dec.height(), dec.format()),
                (45, 31, PixelFormat::Rgba)
            );
            // Alpha is lossless and upright.
            for y in 0..31 {
                let want: Vec<u8> = img.row(y).chunks(4).map(|p| p[3]).collect();
                let got: Vec<u8> = dec.row(y).chunks(4).map(|p| p[3]).collect();
                assert_eq!(got, want, "row {y} top_down {top_down}");
            }
            let (max, psnr) = error(&img, &dec);
            // Measured at quality 85: 38.1 dB, max channel error 19.
            assert!(psnr > 35.0 && max <= 24, "max {max}, {psnr:.1} dB");
            // The flag must match the alpha stream's.
            assert!(matches!(
                decode_alpha(&payload, jpeg_size, !top_down, &Limits::default()),
                Err(CodecError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn alpha_errors() {
        let img = picture(PixelFormat::Rgba, 16, 8, 0);
        let (payload, js) = encode_alpha(&img, 80, true).unwrap();
        let l = Limits::default();
        assert!(matches!(
            decode_alpha(&payload, payload.len() as u32 + 1, true, &l),
            Err(CodecError::Truncated { .. })
        ));
        assert!(decode_alpha(&payload, js - 1, true, &l).is_err());
        assert!(decode_alpha(&payload, js + 1, true, &l).is_err());
        // An alpha plane of another size.
        let other = picture(PixelFormat::Rgba, 16, 9, 0);
        let mut p = payload[..js as usize].to_vec();
        p.extend_from_slice(&lz::encode_alpha(&other, true).unwrap());
        assert!(matches!(
            decode_alpha(&p, js, true, &l),
            Err(CodecError::Corrupt { .. })
        ));
        // An LZ payload that is not XXXA.
        let mut p = payload[..js as usize].to_vec();
        p.extend_from_slice(&lz::encode(&img, true).unwrap());
        assert!(matches!(
            decode_alpha(&p, js, true, &l),
            Err(CodecError::BadImageType { .. })
        ));
        assert!(matches!(
            encode_alpha(&picture(PixelFormat::Rgb32, 4, 4, 0), 80, true),
            Err(CodecError::UnsupportedFormat { .. })
        ));
    }

    #[test]
    fn decode_errors() {
        let l = Limits::default();
        let img = picture(PixelFormat::Rgb32, 40, 30, 0);
        let enc = encode(&img, 75).unwrap();
        assert!(matches!(decode(&[], &l), Err(CodecError::Truncated { .. })));
        assert!(matches!(
            decode(b"GIF89a", &l),
            Err(CodecError::BadMagic { .. })
        ));
        assert!(decode(&enc[..enc.len() / 2], &l).is_err());
        assert!(matches!(
            decode(&enc, &Limits { max_pixels: 1199 }),
            Err(CodecError::TooLarge { .. })
        ));
        // A frame header announcing 65535x65535 pixels over a tiny stream is refused before
        // allocating for it.
        let mut huge = enc.clone();
        let sof = huge.windows(2).position(|m| m == [0xff, 0xc0]).unwrap();
        huge[sof + 5..sof + 9].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode(&huge, &l),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(matches!(
            encode(
                &Pixmap::new(70_000, 1, PixelFormat::Rgb32, 1 << 20).unwrap(),
                80
            ),
            Err(CodecError::InvalidSize { .. })
        ));
        assert!(matches!(
            encode(&Pixmap::new(4, 4, PixelFormat::Pal8, 100).unwrap(), 80),
            Err(CodecError::UnsupportedFormat { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let l = Limits { max_pixels: 1 << 16 };
            let _ = decode(&data, &l);
            let mut jfif = vec![0xff, 0xd8];
            jfif.extend_from_slice(&data);
            let _ = decode(&jfif, &l);
            let _ = decode_alpha(&data, data.len() as u32 / 2, true, &l);
        }

        #[test]
        fn decode_never_panics_on_damaged_streams(
            w in 1u32..70, h in 1u32..40, q in 1u8..101, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(), top_down in any::<bool>()
        ) {
            let l = Limits { max_pixels: 1 << 16 };
            let img = picture(PixelFormat::Rgba, w, h, 0);
            let (mut enc, js) = encode_alpha(&img, q, top_down).unwrap();
            for (pos, val) in edits {
                let i = pos % enc.len();
                enc[i] ^= val | 1;
            }
            let _ = decode(&enc[..js as usize], &l);
            let _ = decode_alpha(&enc, js, top_down, &l);
            enc.truncate(cut % (enc.len() + 1));
            let _ = decode(&enc, &l);
            let _ = decode_alpha(&enc, js, top_down, &l);
        }
    }
}

/// The tables of an MJPEG stream: spice-server's encoder writes its quantisation and Huffman
/// tables with the first frame only (`jpeg_start_compress(.., first_frame)`), and spice-gtk's
/// decoder keeps them across frames. This keeps the last ones seen and puts them back into
/// frames that come without (abbreviated JPEG streams).
#[derive(Debug, Clone, Default)]
pub struct MjpegTables {
    dqt: Vec<Vec<u8>>,
    dht: Vec<Vec<u8>>,
}

impl MjpegTables {
    /// `frame` with the tables it lacks taken from earlier frames (and this frame's tables
    /// remembered). Returns the frame unchanged if it cannot be parsed up to its scan.
    pub fn complete(&mut self, frame: &[u8]) -> Vec<u8> {
        let Some(segments) = segments_before_scan(frame) else {
            return frame.to_vec();
        };
        let (mut dqt, mut dht) = (Vec::new(), Vec::new());
        for &(marker, start, end) in &segments {
            match marker {
                0xdb => dqt.push(frame[start..end].to_vec()),
                0xc4 => dht.push(frame[start..end].to_vec()),
                _ => {}
            }
        }
        let missing_dqt = dqt.is_empty() && !self.dqt.is_empty();
        let missing_dht = dht.is_empty() && !self.dht.is_empty();
        if !dqt.is_empty() {
            self.dqt = dqt;
        }
        if !dht.is_empty() {
            self.dht = dht;
        }
        if !missing_dqt && !missing_dht {
            return frame.to_vec();
        }
        let mut out = Vec::with_capacity(frame.len() + 1024);
        out.extend_from_slice(&frame[..2]); // SOI
        if missing_dqt {
            self.dqt.iter().for_each(|s| out.extend_from_slice(s));
        }
        if missing_dht {
            self.dht.iter().for_each(|s| out.extend_from_slice(s));
        }
        out.extend_from_slice(&frame[2..]);
        out
    }
}

/// The marker segments of a JPEG stream from after SOI up to (not including) SOS, as
/// (marker, start, end) byte ranges including the `FF xx` and the length; `None` if the
/// stream does not start with SOI or a segment runs past the end.
fn segments_before_scan(d: &[u8]) -> Option<Vec<(u8, usize, usize)>> {
    if d.get(..2)? != [0xff, 0xd8] {
        return None;
    }
    let mut v = Vec::new();
    let mut at = 2usize;
    loop {
        if *d.get(at)? != 0xff {
            return None;
        }
        let marker = *d.get(at + 1)?;
        if marker == 0xff {
            at += 1; // fill byte
            continue;
        }
        if marker == 0xda || v.len() > 64 {
            return Some(v);
        }
        let len = u16::from_be_bytes([*d.get(at + 2)?, *d.get(at + 3)?]) as usize;
        let end = at
            .checked_add(2 + len)
            .filter(|&e| e <= d.len() && len >= 2)?;
        v.push((marker, at, end));
        at = end;
    }
}

#[cfg(test)]
mod mjpeg_tests {
    use super::*;

    #[test]
    fn abbreviated_frames_get_the_first_frames_tables() {
        let px: Vec<u8> = (0..16 * 16)
            .flat_map(|i| [i as u8, 255 - i as u8, 7, 0])
            .collect();
        let img = Pixmap::from_data(16, 16, PixelFormat::Rgb32, 64, px).unwrap();
        let full = encode(&img, 80).unwrap();
        let segs = segments_before_scan(&full).unwrap();
        assert!(segs.iter().any(|s| s.0 == 0xc4) && segs.iter().any(|s| s.0 == 0xdb));
        // The same frame without its tables.
        let mut abbreviated = full[..2].to_vec();
        let mut last = 2;
        for &(m, s, e) in &segs {
            abbreviated.extend_from_slice(&full[last..s]);
            if m != 0xc4 && m != 0xdb {
                abbreviated.extend_from_slice(&full[s..e]);
            }
            last = e;
        }
        abbreviated.extend_from_slice(&full[last..]);
        let lim = Limits::default();
        assert!(decode(&abbreviated, &lim).is_err());
        let mut t = MjpegTables::default();
        let first = t.complete(&full);
        assert_eq!(first, full);
        let fixed = t.complete(&abbreviated);
        assert_eq!(decode(&fixed, &lim).unwrap(), decode(&full, &lim).unwrap());
        // Garbage passes through untouched.
        assert_eq!(t.complete(&[1, 2, 3]), [1, 2, 3]);
    }
}
