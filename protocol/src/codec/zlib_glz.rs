//! ZLIB_GLZ: a GLZ payload deflated once more with zlib (SPICE_IMAGE_TYPE_ZLIB_GLZ_RGB), as
//! spice-server's zlib-encoder.c writes it (`deflateInit` at its configured level: a zlib
//! header, deflate data, the Adler-32 trailer) and spice-gtk's decode-zlib.c inflates it.
//!
//! The image descriptor carries `glz_data_size` (the GLZ payload's size before zlib) and the
//! zlib data ([`crate::display::ZlibGlzRgbData`]); the zlib stream must end, its checksum
//! must match, and it must inflate to exactly `glz_data_size` bytes. Bytes after the end of
//! the zlib stream are ignored, as spice-gtk does. The inflated bytes are an ordinary GLZ
//! payload, decoded by the connection's [`glz::Decoder`] (it shares the window with the
//! GLZ_RGB images, in message order).
//!
//! Owns: [`inflate`] (untrusted input, bounded allocation), [`decode`] and [`encode`]. Does
//! not: the GLZ stream itself (that is [`glz`]).

use std::io::Write;

use flate2::{Compression, Decompress, FlushDecompress, Status};

use super::{glz, CodecError, Limits};

const CODEC: &str = "zlib_glz";
/// Deflate expands at most about 1032:1 (a 258-byte match per two bits, roughly).
const MAX_RATIO: u64 = 1032;

fn corrupt(what: &'static str) -> CodecError {
    CodecError::Corrupt { codec: CODEC, what }
}

/// The largest `glz_data_size` [`inflate`] accepts under `limits`: an incompressible RGBA GLZ
/// payload of `max_pixels` pixels (about 4.07 bytes a pixel: literal B, G, R and the alpha
/// stream, a control byte per 32 units) plus its header.
pub fn max_glz_data_size(limits: &Limits) -> u64 {
    limits.max_pixels.saturating_mul(5).saturating_add(1024)
}

/// Inflate the zlib data of a ZLIB_GLZ_RGB image to its `glz_data_size` bytes of GLZ payload.
///
/// Refuses (with [`CodecError::TooLarge`], width = `glz_data_size`, height = 1) sizes above
/// [`max_glz_data_size`] or above what `data` could inflate to, before allocating; allocates
/// at most `glz_data_size + 1` bytes. A stream that would inflate past `glz_data_size`, ends
/// short of it, or fails its checksum is [`CodecError::Corrupt`]; one cut off before its end
/// is [`CodecError::Truncated`].
pub fn inflate(data: &[u8], glz_data_size: u32, limits: &Limits) -> Result<Vec<u8>, CodecError> {
    let n = glz_data_size as u64;
    let possible = n <= (data.len() as u64).saturating_mul(MAX_RATIO);
    if n > max_glz_data_size(limits) || !possible {
        return Err(CodecError::TooLarge {
            codec: CODEC,
            width: glz_data_size,
            height: 1,
            limit: max_glz_data_size(limits),
        });
    }
    if n == 0 {
        return Err(CodecError::InvalidSize {
            codec: CODEC,
            width: 0,
            height: 1,
        });
    }
    let n = n as usize;
    // One spare byte: output reaching it means the stream is longer than announced.
    let mut out = vec![0u8; n + 1];
    let mut z = Decompress::new(true);
    loop {
        let (ip, op) = (z.total_in() as usize, z.total_out() as usize);
        let status = z
            .decompress(
                data.get(ip..).unwrap_or(&[]),
                out.get_mut(op..).unwrap_or(&mut []),
                FlushDecompress::Finish,
            )
            .map_err(|_| corrupt("invalid zlib stream"))?;
        if z.total_out() as usize > n {
            return Err(corrupt("inflates past glz_data_size"));
        }
        if status == Status::StreamEnd {
            break;
        }
        if z.total_in() as usize == ip && z.total_out() as usize == op {
            return Err(CodecError::Truncated { codec: CODEC });
        }
    }
    if z.total_out() as usize != n {
        return Err(corrupt("inflates to less than glz_data_size"));
    }
    out.truncate(n);
    Ok(out)
}

/// Inflate a ZLIB_GLZ_RGB image's data and decode the GLZ payload with `dec` (see
/// [`glz::Decoder::decode`]; `palette` is for palette types).
pub fn decode(
    dec: &mut glz::Decoder,
    data: &[u8],
    glz_data_size: u32,
    palette: &[u32],
    limits: &Limits,
) -> Result<glz::GlzImage, CodecError> {
    let glz = inflate(data, glz_data_size, limits)?;
    dec.decode(&glz, palette)
}

/// Deflate a GLZ payload into a zlib stream at `level` (0 = stored .. 9 = best; larger values
/// are 9), as spice-server's zlib encoder does. The image's `glz_data_size` is
/// `glz_bytes.len()`.
pub fn encode(glz_bytes: &[u8], level: u32) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(glz_bytes.len() / 2 + 64),
        Compression::new(level.min(9)),
    );
    // Writing into a Vec cannot fail.
    let _ = z.write_all(glz_bytes);
    z.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{PixelFormat, Pixmap};
    use proptest::prelude::*;

    fn image(fmt: PixelFormat, w: u32, h: u32, seed: u64, kind: u8) -> Pixmap {
        let stride = fmt.row_bytes(w) as usize;
        let mut s = seed | 1;
        let data = (0..stride * h as usize)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                match kind {
                    0 => s as u8,
                    1 => (s % 3) as u8,
                    2 => (i / 9) as u8,
                    _ => 7,
                }
            })
            .collect();
        Pixmap::from_data(w, h, fmt, stride, data).unwrap()
    }

    const FORMATS: [PixelFormat; 4] = [
        PixelFormat::Rgb32,
        PixelFormat::Rgba,
        PixelFormat::Rgb24,
        PixelFormat::Rgb16,
    ];

    fn arb_image() -> impl Strategy<Value = Pixmap> {
        (0..FORMATS.len(), 1u32..300, 1u32..9, any::<u64>(), 0u8..4)
            .prop_map(|(f, w, h, seed, kind)| image(FORMATS[f], w, h, seed, kind))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn inflate_round_trip(data in proptest::collection::vec(any::<u8>(), 1..3000), level in 0u32..12) {
            let enc = encode(&data, level);
            prop_assert_eq!(inflate(&enc, data.len() as u32, &Limits::default()).unwrap(), data);
        }

        /// GLZ-encode random images in one dictionary, zlib them, and decode them in order
        /// through one window: the pixels come back exactly as plain GLZ gives them.
        #[test]
        fn glz_round_trip(imgs in proptest::collection::vec((arb_image(), any::<bool>()), 1..4), level in 1u32..10) {
            let mut enc = glz::Encoder::new(1 << 20).unwrap();
            let mut plain = glz::Decoder::default();
            let mut zdec = glz::Decoder::default();
            for (img, top_down) in &imgs {
                let (_, g) = enc.encode(img, *top_down).unwrap();
                let z = encode(&g, level);
                let want = plain.decode(&g, &[]).unwrap();
                let got = decode(&mut zdec, &z, g.len() as u32, &[], &Limits::default()).unwrap();
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(got.pixmap.to_rgba8(&[]), img.to_rgba8(&[]));
            }
        }

        #[test]
        fn inflate_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), size in any::<u32>()) {
            let _ = inflate(&data, size, &Limits { max_pixels: 1 << 16 });
            let _ = decode(&mut glz::Decoder::default(), &data, size % 4096, &[], &Limits { max_pixels: 1 << 16 });
        }

        #[test]
        fn decode_never_panics_on_damaged_streams(
            img in arb_image(), pos in any::<usize>(), val in any::<u8>(), cut in any::<usize>()
        ) {
            let (_, g) = glz::Encoder::new(1 << 20).unwrap().encode(&img, true).unwrap();
            let mut z = encode(&g, 6);
            let i = pos % z.len();
            z[i] ^= val | 1;
            let l = Limits { max_pixels: 1 << 16 };
            let _ = decode(&mut glz::Decoder::default(), &z, g.len() as u32, &[], &l);
            z.truncate(cut % (z.len() + 1));
            let _ = decode(&mut glz::Decoder::default(), &z, g.len() as u32, &[], &l);
        }
    }

    #[test]
    fn errors() {
        let l = Limits::default();
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let z = encode(&data, 6);
        // zlib header (deflate, 32 KiB window), as deflateInit writes it.
        assert_eq!(z[0], 0x78);
        assert_eq!(inflate(&z, 5000, &l).unwrap(), data);
        assert!(matches!(
            inflate(&z, 4999, &l),
            Err(CodecError::Corrupt {
                what: "inflates past glz_data_size",
                ..
            })
        ));
        assert!(matches!(
            inflate(&z, 5001, &l),
            Err(CodecError::Corrupt { .. })
        ));
        assert!(matches!(
            inflate(&z[..z.len() - 1], 5000, &l),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            inflate(&z[..z.len() / 2], 5000, &l),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            inflate(&[], 5000, &l),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(matches!(
            inflate(&z, 0, &l),
            Err(CodecError::InvalidSize { .. })
        ));
        // Trailing bytes after the stream are ignored.
        let mut long = z.clone();
        long.extend_from_slice(&[1, 2, 3]);
        assert_eq!(inflate(&long, 5000, &l).unwrap(), data);
        // A bad checksum.
        let mut bad = z.clone();
        let k = bad.len() - 1;
        bad[k] ^= 1;
        assert!(matches!(
            inflate(&bad, 5000, &l),
            Err(CodecError::Corrupt { .. })
        ));
        // Raw deflate (no zlib header) is refused.
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Compression::new(6));
        raw.write_all(&data).unwrap();
        assert!(inflate(&raw.finish().unwrap(), 5000, &l).is_err());
        // The size bound comes from the limits, whatever the input.
        let small = Limits { max_pixels: 100 };
        assert_eq!(max_glz_data_size(&small), 1524);
        assert!(matches!(
            inflate(&z, 5000, &small),
            Err(CodecError::TooLarge { .. })
        ));
        // A huge announced size for a small stream is refused before allocating.
        assert!(matches!(
            inflate(&z, u32::MAX, &l),
            Err(CodecError::TooLarge { .. })
        ));
    }
}
