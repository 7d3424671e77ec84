//! LZ4: SPICE_IMAGE_TYPE_LZ4, plain LZ4 blocks over the bitmap's rows, as spice-server's
//! lz4-encoder.c writes them and spice-common's canvas (`canvas_get_lz4`) reads them.
//!
//! Payload layout: one byte top_down (non-zero if row 0 is the top of the picture), one byte
//! SPICE bitmap format (16BIT, 24BIT, 32BIT or RGBA; nothing else is allowed), then blocks
//! until the data ends, at least one: a big-endian u32 compressed size and an LZ4 *block*
//! (the raw block format: sequences of a token, literals, a 16-bit little-endian offset and a
//! match length; no frame, no checksums). The blocks decode one after the other into one
//! buffer, and a match may reach back into the output of earlier blocks of the same image
//! (the reference decodes with `LZ4_decompress_safe_continue`). Width and height are not in
//! the payload: they are the image descriptor's. The decoded bytes are the rows, `width *
//! bytes per pixel` each with no padding, in memory order (bottom-up unless top_down), and
//! must fill the image exactly.
//!
//! The LZ4 block format is implemented here, decoder and encoder, rather than through a
//! crate: `lz4_flex`, the well-kept pure-Rust one, needs a newer Rust than this workspace's
//! MSRV from the release that fixes its decoder's unchecked match offsets on (RUSTSEC-2026-0041)
//! and every older release is yanked. The tests check both directions against `lz4_flex`.
//!
//! Owns: [`decode`] (untrusted input; rows flipped to top-down) and [`encode`] (blocks of whole
//! rows, which any LZ4 block decoder with the earlier output as its prefix accepts). Does not:
//! produce the reference encoder's exact bytes (liblz4's `LZ4_compress_fast_continue` has its
//! own match finder; LZ4 output is not canonical).

use super::{CodecError, Limits, PixelFormat, Pixmap};

const CODEC: &str = "lz4";

/// Shortest match the format can express.
const MIN_MATCH: usize = 4;
/// The last bytes of a block are always literals (LZ4 block format rule).
const LAST_LITERALS: usize = 5;
/// The last match starts at least this many bytes before the end of its block.
const MF_LIMIT: usize = 12;
/// Largest match offset (a u16).
const MAX_OFFSET: usize = 65_535;
/// Input bytes per block [`encode`] aims for (whole rows, at least one).
const BLOCK_BYTES: usize = 64 * 1024;
const HASH_LOG: u32 = 14;
/// One input byte yields at most this many output bytes (a length-extension byte of 255).
const MAX_RATIO: u64 = 255;

fn corrupt(what: &'static str) -> CodecError {
    CodecError::Corrupt { codec: CODEC, what }
}

fn truncated() -> CodecError {
    CodecError::Truncated { codec: CODEC }
}

/// The pixel format of a payload's format byte (the formats the reference canvas takes).
fn format_of(v: u8) -> Option<PixelFormat> {
    match PixelFormat::from_spice_bitmap_fmt(v)? {
        f @ (PixelFormat::Rgb16 | PixelFormat::Rgb24 | PixelFormat::Rgb32 | PixelFormat::Rgba) => {
            Some(f)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder.

/// Read the bytes of an extended length (each 255 adds and continues) and add them to `len`,
/// refusing lengths past `cap`.
fn read_ext(src: &[u8], ip: &mut usize, mut len: usize, cap: usize) -> Result<usize, CodecError> {
    loop {
        let b = *src.get(*ip).ok_or_else(truncated)?;
        *ip += 1;
        len += b as usize;
        if len > cap {
            return Err(corrupt("block decodes past the end of the image"));
        }
        if b != 255 {
            return Ok(len);
        }
    }
}

/// Decode one LZ4 block into `out[*op..]`; matches may reach back to `out[0]`.
fn decode_block(src: &[u8], out: &mut [u8], op: &mut usize) -> Result<(), CodecError> {
    let cap = out.len();
    let mut o = *op;
    let mut ip = 0;
    loop {
        let token = *src.get(ip).ok_or_else(truncated)?;
        ip += 1;
        let mut lit = (token >> 4) as usize;
        if lit == 15 {
            lit = read_ext(src, &mut ip, lit, cap)?;
        }
        let literals = src.get(ip..ip + lit).ok_or_else(truncated)?;
        out.get_mut(o..o + lit)
            .ok_or_else(|| corrupt("block decodes past the end of the image"))?
            .copy_from_slice(literals);
        ip += lit;
        o += lit;
        if ip == src.len() {
            break;
        }
        let lo = *src.get(ip).ok_or_else(truncated)?;
        let hi = *src.get(ip + 1).ok_or_else(truncated)?;
        ip += 2;
        let offset = u16::from_le_bytes([lo, hi]) as usize;
        if offset == 0 {
            return Err(corrupt("match offset 0"));
        }
        if offset > o {
            return Err(corrupt("match before the start of the image"));
        }
        let mut len = (token & 15) as usize;
        if len == 15 {
            len = read_ext(src, &mut ip, len, cap)?;
        }
        let len = len + MIN_MATCH;
        if len > cap - o {
            return Err(corrupt("block decodes past the end of the image"));
        }
        // Overlapping copy, as a byte-by-byte forward copy would do it: the bytes from
        // `o - offset` on repeat with period `offset`, so copy whole periods, doubling.
        let from = o - offset;
        let mut done = 0;
        while done < len {
            let n = (done + offset).min(len - done);
            out.copy_within(from..from + n, o + done);
            done += n;
        }
        o += len;
        if ip == src.len() {
            // The reference format ends a block with literals; a block ending on a match is
            // accepted (its output is unambiguous).
            break;
        }
    }
    *op = o;
    Ok(())
}

/// Decompress an LZ4 image payload: the `data_size` bytes of a SPICE_IMAGE_TYPE_LZ4 image
/// after its descriptor and `data_size`, chunks joined. `width` and `height` are the image
/// descriptor's.
///
/// The pixmap has the payload's format, the tight stride and rows top-down (a bottom-up
/// payload is flipped). Pixels are as sent: RGB32's X byte and RGB16's bit 15 included.
pub fn decode(data: &[u8], width: u32, height: u32, limits: &Limits) -> Result<Pixmap, CodecError> {
    let [td, fmt, ..] = *data else {
        return Err(truncated());
    };
    let top_down = td != 0;
    let format = format_of(fmt).ok_or(CodecError::BadImageType {
        codec: CODEC,
        value: fmt as u32,
    })?;
    if width == 0 || height == 0 {
        return Err(CodecError::InvalidSize {
            codec: CODEC,
            width,
            height,
        });
    }
    let row = format.row_bytes(width);
    let total = row.saturating_mul(height as u64);
    let possible = total <= (data.len() as u64).saturating_mul(MAX_RATIO);
    if width as u64 * height as u64 > limits.max_pixels || !possible {
        return Err(CodecError::TooLarge {
            codec: CODEC,
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    let total = usize::try_from(total).map_err(|_| CodecError::BadPixmap { what: "too large" })?;
    let mut out = vec![0u8; total];
    let mut op = 0;
    let mut ip = 2;
    loop {
        let size = data.get(ip..ip + 4).ok_or_else(truncated)?;
        let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
        ip += 4;
        let block = data
            .get(ip..)
            .and_then(|rest| rest.get(..size))
            .ok_or_else(truncated)?;
        if block.is_empty() {
            return Err(corrupt("empty block"));
        }
        let before = op;
        decode_block(block, &mut out, &mut op)?;
        if op == before {
            return Err(corrupt("block decodes to nothing"));
        }
        ip += size;
        if ip >= data.len() {
            break;
        }
    }
    if op != total {
        return Err(corrupt("blocks decode to less than the image"));
    }
    let img = Pixmap::from_data(width, height, format, row as usize, out)?;
    Ok(if top_down {
        img
    } else {
        img.flipped_vertically()
    })
}

// ---------------------------------------------------------------------------------------------
// Encoder.

fn read_u32(src: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([src[i], src[i + 1], src[i + 2], src[i + 3]])
}

fn hash(v: u32) -> usize {
    (v.wrapping_mul(2_654_435_761) >> (32 - HASH_LOG)) as usize
}

fn put_ext(out: &mut Vec<u8>, mut n: usize) {
    while n >= 255 {
        out.push(255);
        n -= 255;
    }
    out.push(n as u8);
}

/// One sequence: `literals`, then (unless `m` is `None`) a match of `(offset, length)`.
fn put_sequence(out: &mut Vec<u8>, literals: &[u8], m: Option<(usize, usize)>) {
    let ll = literals.len();
    let ml = m.map_or(0, |(_, len)| len - MIN_MATCH);
    out.push(((ll.min(15) as u8) << 4) | ml.min(15) as u8);
    if ll >= 15 {
        put_ext(out, ll - 15);
    }
    out.extend_from_slice(literals);
    if let Some((offset, _)) = m {
        out.extend_from_slice(&(offset as u16).to_le_bytes());
        if ml >= 15 {
            put_ext(out, ml - 15);
        }
    }
}

/// Compress `src[start..end]` as one block; matches may start anywhere in `src[..]` up to
/// [`MAX_OFFSET`] back (earlier blocks are the decoder's prefix). `table` maps hashes of 4
/// bytes to their last position (`usize::MAX`: none) and carries over between blocks.
fn compress_block(src: &[u8], start: usize, end: usize, table: &mut [usize], out: &mut Vec<u8>) {
    let mut anchor = start;
    let mut i = start;
    let mut misses = 0usize;
    while i + MF_LIMIT <= end {
        let v = read_u32(src, i);
        let h = hash(v);
        let cand = table[h];
        table[h] = i;
        if cand == usize::MAX || i - cand > MAX_OFFSET || read_u32(src, cand) != v {
            // Skip faster through data that does not compress.
            misses += 1;
            i += 1 + (misses >> 6);
            continue;
        }
        misses = 0;
        let (mut s, mut c) = (i, cand);
        while s > anchor && c > 0 && src[s - 1] == src[c - 1] {
            s -= 1;
            c -= 1;
        }
        let mut e = i + MIN_MATCH;
        let limit = end - LAST_LITERALS;
        while e < limit && src[e] == src[e - (i - cand)] {
            e += 1;
        }
        put_sequence(out, &src[anchor..s], Some((s - c, e - s)));
        if e - 2 + 4 <= end {
            table[hash(read_u32(src, e - 2))] = e - 2;
        }
        i = e;
        anchor = e;
    }
    put_sequence(out, &src[anchor..end], None);
}

/// Compress `img` as an LZ4 image payload, rows coded top-down if `top_down`, else bottom-up
/// (memory order of a bottom-up bitmap); [`decode`] gives `img` back either way.
///
/// Supports the formats the payload can name: [`PixelFormat::Rgb16`], [`PixelFormat::Rgb24`],
/// [`PixelFormat::Rgb32`] and [`PixelFormat::Rgba`]. Stride padding of `img` is dropped. Each
/// block holds whole rows (about 64 KiB of them, at least one).
pub fn encode(img: &Pixmap, top_down: bool) -> Result<Vec<u8>, CodecError> {
    let fmt = img.format();
    let code = fmt
        .spice_bitmap_fmt()
        .filter(|&v| format_of(v).is_some())
        .ok_or(CodecError::UnsupportedFormat {
            codec: CODEC,
            format: fmt,
        })?;
    let rb = img.row_bytes();
    let mut src = Vec::with_capacity(rb * img.height() as usize);
    for i in 0..img.height() {
        let y = if top_down { i } else { img.height() - 1 - i };
        src.extend_from_slice(img.row(y));
    }
    let rows_per_block = (BLOCK_BYTES / rb).max(1);
    let mut out = Vec::with_capacity(src.len() / 2 + 64);
    out.push(top_down as u8);
    out.push(code);
    let mut table = vec![usize::MAX; 1 << HASH_LOG];
    for start in (0..src.len()).step_by(rows_per_block * rb) {
        let end = (start + rows_per_block * rb).min(src.len());
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        compress_block(&src, start, end, &mut table, &mut out);
        let size = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&size.to_be_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FORMATS: [PixelFormat; 4] = [
        PixelFormat::Rgb16,
        PixelFormat::Rgb24,
        PixelFormat::Rgb32,
        PixelFormat::Rgba,
    ];

    fn image(fmt: PixelFormat, w: u32, h: u32, pad: usize, seed: u64, kind: u8) -> Pixmap {
        let stride = fmt.row_bytes(w) as usize + pad;
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
                    3 => (i % 7) as u8 ^ (i / stride) as u8,
                    _ => 7,
                }
            })
            .collect();
        Pixmap::from_data(w, h, fmt, stride, data).unwrap()
    }

    fn tight(img: &Pixmap) -> Vec<u8> {
        (0..img.height())
            .flat_map(|y| img.row(y).to_vec())
            .collect()
    }

    /// The blocks of a payload.
    fn blocks(payload: &[u8]) -> Vec<&[u8]> {
        let mut v = vec![];
        let mut ip = 2;
        while ip < payload.len() {
            let n = u32::from_be_bytes(payload[ip..ip + 4].try_into().unwrap()) as usize;
            v.push(&payload[ip + 4..ip + 4 + n]);
            ip += 4 + n;
        }
        v
    }

    fn arb_image() -> impl Strategy<Value = Pixmap> {
        (
            0..FORMATS.len(),
            1u32..300,
            1u32..9,
            0usize..3,
            any::<u64>(),
            0u8..5,
        )
            .prop_map(|(f, w, h, pad, seed, kind)| image(FORMATS[f], w, h, pad, seed, kind))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn encode_decode_identity(img in arb_image(), top_down in any::<bool>()) {
            let enc = encode(&img, top_down).unwrap();
            prop_assert_eq!(enc[0], top_down as u8);
            let dec = decode(&enc, img.width(), img.height(), &Limits::default()).unwrap();
            prop_assert_eq!(
                (dec.width(), dec.height(), dec.format()),
                (img.width(), img.height(), img.format())
            );
            prop_assert_eq!(tight(&dec), tight(&img));
        }

        /// Our blocks are standard LZ4: `lz4_flex` decodes each with the earlier output as
        /// its dictionary.
        #[test]
        fn lz4_flex_decodes_our_blocks(img in arb_image()) {
            let enc = encode(&img, true).unwrap();
            let want = tight(&img);
            let mut out = vec![0u8; want.len()];
            let mut op = 0;
            for b in blocks(&enc) {
                let (done, rest) = out.split_at_mut(op);
                let dict = &done[op.saturating_sub(65_536)..];
                op += lz4_flex::block::decompress_into_with_dict(b, rest, dict).unwrap();
            }
            prop_assert_eq!(out, want);
        }

        /// We decode `lz4_flex`'s blocks (independent blocks of arbitrary sizes).
        #[test]
        fn we_decode_lz4_flex_blocks(img in arb_image(), split in 1usize..5000, td in any::<bool>()) {
            let rows = if td { img.clone() } else { img.flipped_vertically() };
            let raw = tight(&rows);
            let mut payload = vec![td as u8, img.format().spice_bitmap_fmt().unwrap()];
            for part in raw.chunks(split) {
                let c = lz4_flex::block::compress(part);
                payload.extend_from_slice(&(c.len() as u32).to_be_bytes());
                payload.extend_from_slice(&c);
            }
            let dec = decode(&payload, img.width(), img.height(), &Limits::default()).unwrap();
            prop_assert_eq!(tight(&dec), tight(&img));
        }

        #[test]
        fn decode_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..200), w in 0u32..64, h in 0u32..64
        ) {
            let _ = decode(&data, w, h, &Limits { max_pixels: 1 << 16 });
        }

        #[test]
        fn decode_never_panics_on_damaged_streams(
            img in arb_image(), pos in any::<usize>(), val in any::<u8>(), cut in any::<usize>()
        ) {
            let mut enc = encode(&img, false).unwrap();
            let (w, h) = (img.width(), img.height());
            let i = 2 + pos % (enc.len() - 2);
            enc[i] ^= val | 1;
            let _ = decode(&enc, w, h, &Limits { max_pixels: 1 << 16 });
            enc.truncate(cut % (enc.len() + 1));
            let _ = decode(&enc, w, h, &Limits { max_pixels: 1 << 16 });
        }
    }

    #[test]
    fn matches_reach_into_earlier_blocks() {
        // 2 rows of 40000 bytes, the second equal to the first: its block is mostly one match
        // into the first block.
        let row: Vec<u8> = (0..40_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let img = Pixmap::from_data(
            10_000,
            2,
            PixelFormat::Rgb32,
            40_000,
            [&row[..], &row[..]].concat(),
        )
        .unwrap();
        let enc = encode(&img, true).unwrap();
        let b = blocks(&enc);
        assert_eq!(b.len(), 2);
        assert!(b[1].len() < 1000, "{}", b[1].len());
        assert_eq!(decode(&enc, 10_000, 2, &Limits::default()).unwrap(), img);
    }

    #[test]
    fn long_runs_and_large_images() {
        let img = image(PixelFormat::Rgb24, 1000, 300, 0, 1, 4);
        let enc = encode(&img, false).unwrap();
        assert!(enc.len() < 10_000, "{}", enc.len());
        assert_eq!(decode(&enc, 1000, 300, &Limits::default()).unwrap(), img);
    }

    #[test]
    fn errors() {
        let l = Limits::default();
        let img = image(PixelFormat::Rgb32, 5, 3, 0, 9, 0);
        let enc = encode(&img, true).unwrap();
        assert_eq!(decode(&enc, 5, 3, &l).unwrap(), img);
        assert!(matches!(
            decode(&enc[..1], 5, 3, &l),
            Err(CodecError::Truncated { .. })
        ));
        // Header only: at least one block is needed.
        assert!(matches!(
            decode(&enc[..2], 5, 3, &l),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&enc[..enc.len() - 1], 5, 3, &l),
            Err(CodecError::Truncated { .. })
        ));
        // Wrong size from the descriptor: too few or too many bytes.
        assert!(matches!(
            decode(&enc, 5, 4, &l),
            Err(CodecError::Corrupt { .. })
        ));
        assert!(matches!(
            decode(&enc, 5, 2, &l),
            Err(CodecError::Corrupt { .. })
        ));
        assert!(matches!(
            decode(&enc, 0, 3, &l),
            Err(CodecError::InvalidSize { .. })
        ));
        for bad in [0u8, 1, 5, 10, 11, 200] {
            let mut b = enc.clone();
            b[1] = bad;
            assert!(
                matches!(decode(&b, 5, 3, &l), Err(CodecError::BadImageType { .. })),
                "{bad}"
            );
        }
        // An empty block.
        let mut b = enc.clone();
        b.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(
            decode(&b, 5, 3, &l),
            Err(CodecError::Corrupt { .. })
        ));
        // Match offsets 0 and before the start.
        let payload = |block: &[u8]| {
            let mut p = vec![1, 6];
            p.extend_from_slice(&(block.len() as u32).to_be_bytes());
            p.extend_from_slice(block);
            p
        };
        let ok = payload(&[0x10, 7, 1, 0, 0x50, 1, 2, 3, 4, 5]);
        assert_eq!(
            decode(&ok, 5, 1, &l).unwrap().data(),
            [7, 7, 7, 7, 7, 1, 2, 3, 4, 5]
        );
        assert!(matches!(
            decode(&payload(&[0x10, 7, 0, 0, 0x50, 1, 2, 3, 4, 5]), 5, 1, &l),
            Err(CodecError::Corrupt {
                what: "match offset 0",
                ..
            })
        ));
        assert!(matches!(
            decode(&payload(&[0x10, 7, 2, 0, 0x50, 1, 2, 3, 4, 5]), 5, 1, &l),
            Err(CodecError::Corrupt {
                what: "match before the start of the image",
                ..
            })
        ));
        // A huge size with a tiny body is refused before allocating.
        assert!(matches!(
            decode(&enc, 8000, 8000, &l),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(matches!(
            decode(&enc, 5, 3, &Limits { max_pixels: 14 }),
            Err(CodecError::TooLarge { .. })
        ));
        let pal = Pixmap::new(2, 2, PixelFormat::Pal8, 10).unwrap();
        assert!(matches!(
            encode(&pal, true),
            Err(CodecError::UnsupportedFormat { .. })
        ));
    }
}
