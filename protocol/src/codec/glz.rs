//! GLZ: LZ with a dictionary shared across images (SPICE_IMAGE_TYPE_GLZ_RGB), as spice-server's
//! glz encoder writes it and spice-gtk's decode-glz.c reads it.
//!
//! Payload layout (all big endian): magic `"  ZL"`, version 0x00010001, one byte
//! `type | top_down << 4` (type as [`super::lz::ImageType`]), width, height, stride (u32
//! each), the image id (u64) and `win_head_dist` (u32: images older than `id - win_head_dist`
//! are out of the server's window). Then one stream of control bytes (two for RGBA: the RGB
//! stream, then the alpha stream):
//! - `c < 32`: `c + 1` literal units (as in LZ: B, G, R for RGB24/32, the u16 high byte first
//!   for RGB16, bytes otherwise);
//! - `c >= 32`: a reference: length `c >> 5` (7 = extended by bytes until one is not 255),
//!   biased by 2 for bytes and alpha, 1 for RGB16; a pixel offset built from `c & 15`, the
//!   next byte (<< 4) and, when bit 4 of `c` is set, 5 more bits and optionally a byte (<< 17);
//!   and an image distance (0 = this image, where the offset is a biased backwards distance;
//!   otherwise the offset is an absolute pixel index into image `id - distance`).
//!
//! Decoded images are always 32-bit (palette types through the palette, RGB16 expanded), as
//! the client renders them, and references between images copy those decoded pixels.
//!
//! Owns: [`Encoder`], spice-server's encoder with its shared dictionary, byte-identical to the
//! reference for the same sequence of images; [`Decoder`], the client-side window of earlier
//! images. Does not: wait for images that
//! another display channel has not delivered yet (spice-gtk blocks its coroutine; here the
//! decode fails with [`CodecError::MissingImage`] and can be retried).

use std::collections::BTreeMap;

mod encoder;
pub use encoder::{Encoder, MAX_WINDOW_PIXELS};

use super::lz::ImageType;
use super::{CodecError, Limits, PixelFormat, Pixmap};

const CODEC: &str = "glz";
const MAGIC: u32 = 0x2020_5a4c;
const VERSION: u32 = 0x0001_0001;
const MAX_COPY: usize = 32;

/// The fields of a GLZ header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub image_type: ImageType,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    pub top_down: bool,
    /// The image's id in the shared dictionary.
    pub id: u64,
    /// Images with ids below `id - win_head_dist` may be dropped.
    pub win_head_dist: u32,
}

impl Header {
    /// Pixels the decoded image holds: `width * height`, or for palette types every index a
    /// row's bytes hold (`stride * pixels per byte * height`), as the client allocates.
    pub fn gross_pixels(&self) -> u64 {
        self.row_pixels() as u64 * self.height as u64
    }

    fn row_pixels(&self) -> u32 {
        match self.image_type {
            ImageType::Plt1Le | ImageType::Plt1Be => self.stride.saturating_mul(8),
            ImageType::Plt4Le | ImageType::Plt4Be => self.stride.saturating_mul(2),
            ImageType::Plt8 => self.stride,
            _ => self.width,
        }
    }
}

/// A decoded GLZ image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlzImage {
    pub header: Header,
    /// [`PixelFormat::Rgba`] for RGBA images, [`PixelFormat::Rgb32`] (X = 0) otherwise. Rows
    /// are in stream order (if `!header.top_down`, row 0 is the bottom of the picture); for
    /// palette types the stride covers every index of a row (see [`Header::gross_pixels`]).
    pub pixmap: Pixmap,
}

/// The client's GLZ window: every decoded image still referable, by id.
///
/// One per client connection, shared by its display channels (the server shares one
/// dictionary among them).
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Decoded pixels of each image (`b | g << 8 | r << 16 | a << 24`) and its header.
    images: BTreeMap<u64, (Header, Vec<u32>)>,
    /// The first id not yet received, counting from the first image seen.
    tail_gap: Option<u64>,
    stored_pixels: u64,
    limits: Limits,
    /// Cap on the pixels kept for references (oldest images are dropped past it).
    max_window_pixels: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(Limits::default(), 64 * 1024 * 1024)
    }
}

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or(CodecError::Truncated { codec: CODEC })?;
        self.pos += 1;
        Ok(b)
    }

    fn be(&mut self, n: usize) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for _ in 0..n {
            v = v << 8 | self.byte()? as u64;
        }
        Ok(v)
    }
}

fn corrupt(what: &'static str) -> CodecError {
    CodecError::Corrupt { codec: CODEC, what }
}

/// How a stream's units become pixels.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Units {
    /// Literal B, G, R: one pixel, X = 0.
    Rgb,
    /// Literal u16 (high byte first), expanded to 8 bits a channel.
    Rgb16,
    /// Literal byte = palette index; `per_byte` pixels a byte (8, 2 or 1).
    Palette { per_byte: usize, low_first: bool },
    /// Literal byte = alpha; only the alpha byte of pixels is written.
    Alpha,
}

impl Units {
    fn length_bias(self) -> usize {
        match self {
            Units::Rgb => 0,
            Units::Rgb16 => 1,
            Units::Palette { .. } | Units::Alpha => 2,
        }
    }

    fn pixels_per_unit(self) -> usize {
        match self {
            Units::Palette { per_byte, .. } => per_byte,
            _ => 1,
        }
    }
}

fn expand5(v: u32) -> u32 {
    let v = v & 0x1f;
    (v << 3) | (v >> 2)
}

impl Decoder {
    /// A decoder whose images are checked against `limits` and whose window keeps at most
    /// `max_window_pixels` pixels of earlier images.
    pub fn new(limits: Limits, max_window_pixels: u64) -> Decoder {
        Decoder {
            images: BTreeMap::new(),
            tail_gap: None,
            stored_pixels: 0,
            limits,
            max_window_pixels,
        }
    }

    /// Forget every image (spice-gtk clears its window on a display reset / new dictionary).
    pub fn clear(&mut self) {
        self.images.clear();
        self.tail_gap = None;
        self.stored_pixels = 0;
    }

    /// Ids of the images currently kept for references.
    pub fn window_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.images.keys().copied()
    }

    /// Decode one GLZ payload: the `data_size` bytes of a SPICE_IMAGE_TYPE_GLZ_RGB image after
    /// its descriptor and `data_size`, chunks joined. `palette` is the image's palette for
    /// palette types (entries `0x__RRGGBB`; ignored otherwise). On success the image joins the
    /// window and older images the server no longer references are dropped. Bytes after the
    /// streams are ignored, as spice-gtk does.
    pub fn decode(&mut self, data: &[u8], palette: &[u32]) -> Result<GlzImage, CodecError> {
        let mut r = Input { data, pos: 0 };
        let header = read_header_from(&mut r)?;
        let gross = header.gross_pixels();
        // A control byte yields at most 255 * 8 pixels per input byte (palette 1-bit runs).
        let possible = gross <= (data.len() as u64).saturating_mul(255 * 8) + 64;
        if gross > self.limits.max_pixels || !possible {
            return Err(CodecError::TooLarge {
                codec: CODEC,
                width: header.width,
                height: header.height,
                limit: self.limits.max_pixels,
            });
        }
        let mut px = vec![0u32; gross as usize];
        let units = match header.image_type {
            ImageType::Rgb24 | ImageType::Rgb32 | ImageType::Rgba => Units::Rgb,
            ImageType::Rgb16 => Units::Rgb16,
            ImageType::Plt1Le => Units::Palette {
                per_byte: 8,
                low_first: true,
            },
            ImageType::Plt1Be => Units::Palette {
                per_byte: 8,
                low_first: false,
            },
            ImageType::Plt4Le => Units::Palette {
                per_byte: 2,
                low_first: true,
            },
            ImageType::Plt4Be => Units::Palette {
                per_byte: 2,
                low_first: false,
            },
            ImageType::Plt8 => Units::Palette {
                per_byte: 1,
                low_first: false,
            },
            ImageType::Xxxa | ImageType::A8 => {
                return Err(CodecError::BadImageType {
                    codec: CODEC,
                    value: header.image_type as u32,
                })
            }
        };
        self.stream(&mut r, &header, &mut px, units, palette)?;
        if header.image_type == ImageType::Rgba {
            self.stream(&mut r, &header, &mut px, Units::Alpha, palette)?;
        }

        let format = if header.image_type == ImageType::Rgba {
            PixelFormat::Rgba
        } else {
            PixelFormat::Rgb32
        };
        let row = header.row_pixels() as usize;
        let mut bytes = Vec::with_capacity(px.len() * 4);
        for p in &px {
            bytes.extend_from_slice(&p.to_le_bytes());
        }
        let pixmap = Pixmap::from_data(header.width, header.height, format, row * 4, bytes)?;
        self.add(header, px);
        Ok(GlzImage { header, pixmap })
    }

    fn add(&mut self, header: Header, px: Vec<u32>) {
        self.stored_pixels += px.len() as u64;
        if let Some((_, old)) = self.images.insert(header.id, (header, px)) {
            self.stored_pixels -= old.len() as u64;
        }
        let mut gap = self.tail_gap.unwrap_or(header.id);
        // Image ids come from the peer: the last id is u64::MAX, not a wrap to 0.
        while self.images.contains_key(&gap) {
            match gap.checked_add(1) {
                Some(next) => gap = next,
                None => break,
            }
        }
        self.tail_gap = Some(gap);
        // Release what the newest image of the gap-free run says is outside the window.
        if let Some((last, _)) = gap.checked_sub(1).and_then(|id| self.images.get(&id)) {
            let oldest = last.id.saturating_sub(last.win_head_dist as u64);
            self.drop_below(oldest);
        }
        while self.stored_pixels > self.max_window_pixels && self.images.len() > 1 {
            let Some(first) = self.images.keys().next().copied() else {
                break;
            };
            self.drop_below(first.saturating_add(1));
        }
    }

    fn drop_below(&mut self, oldest: u64) {
        while let Some(entry) = self.images.first_entry() {
            if *entry.key() >= oldest {
                break;
            }
            let (_, px) = entry.remove();
            self.stored_pixels -= px.len() as u64;
        }
    }

    /// Decode one stream into `out` (gross pixels of the image).
    fn stream(
        &self,
        r: &mut Input,
        header: &Header,
        out: &mut [u32],
        units: Units,
        palette: &[u32],
    ) -> Result<(), CodecError> {
        let n = out.len();
        let k = units.pixels_per_unit();
        let mut op = 0usize;
        while op < n {
            let ctrl = r.byte()? as usize;
            if ctrl >= MAX_COPY {
                let mut len = ctrl >> 5;
                let long_offset = ctrl & 0x10 != 0;
                let mut ofs = ctrl & 0x0f;
                if len == 7 {
                    loop {
                        let b = r.byte()? as usize;
                        len += b;
                        if len > n {
                            return Err(corrupt("reference past the end of the image"));
                        }
                        if b != 255 {
                            break;
                        }
                    }
                }
                ofs += (r.byte()? as usize) << 4;
                let code = r.byte()? as usize;
                let extra = code >> 6;
                let mut image_dist = 0u64;
                if !long_offset {
                    image_dist = (code & 0x3f) as u64;
                    for i in 0..extra {
                        image_dist += (r.byte()? as u64) << (6 + 8 * i);
                    }
                } else {
                    ofs += (code & 0x1f) << 12;
                    for i in 0..extra {
                        image_dist += (r.byte()? as u64) << (8 * i);
                    }
                    if code & 0x20 != 0 {
                        ofs += (r.byte()? as usize) << 17;
                    }
                }
                let len = (len + units.length_bias()) * k;
                if image_dist == 0 {
                    ofs += 1;
                }
                let ofs = ofs * k;
                if op + len > n {
                    return Err(corrupt("reference past the end of the image"));
                }
                if image_dist == 0 {
                    if ofs > op {
                        return Err(corrupt("reference before the start of the image"));
                    }
                    for i in op..op + len {
                        out[i] = Self::copy(units, out[i], out[i - ofs]);
                    }
                } else {
                    let id = header
                        .id
                        .checked_sub(image_dist)
                        .ok_or(corrupt("reference to an image before id 0"))?;
                    let (_, src) = self
                        .images
                        .get(&id)
                        .ok_or(CodecError::MissingImage { codec: CODEC, id })?;
                    let src = src
                        .get(ofs..ofs + len)
                        .ok_or(corrupt("reference past the end of an earlier image"))?;
                    for (o, &s) in out[op..op + len].iter_mut().zip(src) {
                        *o = Self::copy(units, *o, s);
                    }
                }
                op += len;
            } else {
                let count = ctrl + 1;
                if op + count * k > n {
                    return Err(corrupt("literals past the end of the image"));
                }
                for _ in 0..count {
                    op = Self::literal(r, units, palette, out, op)?;
                }
            }
        }
        Ok(())
    }

    fn copy(units: Units, dst: u32, src: u32) -> u32 {
        if units == Units::Alpha {
            (dst & 0x00ff_ffff) | (src & 0xff00_0000)
        } else {
            src
        }
    }

    fn literal(
        r: &mut Input,
        units: Units,
        palette: &[u32],
        out: &mut [u32],
        op: usize,
    ) -> Result<usize, CodecError> {
        match units {
            Units::Rgb => {
                let (b, g, rr) = (r.byte()? as u32, r.byte()? as u32, r.byte()? as u32);
                out[op] = b | g << 8 | rr << 16;
                Ok(op + 1)
            }
            Units::Rgb16 => {
                let v = (r.byte()? as u32) << 8 | r.byte()? as u32;
                out[op] = expand5(v) | expand5(v >> 5) << 8 | expand5(v >> 10) << 16;
                Ok(op + 1)
            }
            Units::Alpha => {
                out[op] = (out[op] & 0x00ff_ffff) | (r.byte()? as u32) << 24;
                Ok(op + 1)
            }
            Units::Palette {
                per_byte,
                low_first,
            } => {
                let byte = r.byte()? as u32;
                let bits = 8 / per_byte as u32;
                let mask = (1u32 << bits) - 1;
                for i in 0..per_byte as u32 {
                    let shift = if low_first {
                        i * bits
                    } else {
                        8 - bits - i * bits
                    };
                    let idx = ((byte >> shift) & mask) as usize;
                    // 4-bit indices wrap around the palette as spice-gtk does; others past
                    // its end are black.
                    let ent = if per_byte == 2 && !palette.is_empty() {
                        palette[idx % palette.len()]
                    } else {
                        palette.get(idx).copied().unwrap_or(0)
                    };
                    out[op + i as usize] = ent & 0x00ff_ffff;
                }
                Ok(op + per_byte)
            }
        }
    }
}

/// The header of a GLZ payload.
pub fn read_header(data: &[u8]) -> Result<Header, CodecError> {
    read_header_from(&mut Input { data, pos: 0 })
}

fn read_header_from(r: &mut Input) -> Result<Header, CodecError> {
    let magic = r.be(4)? as u32;
    if magic != MAGIC {
        return Err(CodecError::BadMagic {
            codec: CODEC,
            magic,
        });
    }
    let version = r.be(4)? as u32;
    if version != VERSION {
        return Err(CodecError::BadVersion {
            codec: CODEC,
            version,
        });
    }
    let tb = r.byte()?;
    let raw = (tb & 0x0f) as u32;
    let image_type = match raw {
        1..=9 => ImageType::from_u32(raw),
        _ => None,
    }
    .ok_or(CodecError::BadImageType {
        codec: CODEC,
        value: raw,
    })?;
    let width = r.be(4)? as u32;
    let height = r.be(4)? as u32;
    let stride = r.be(4)? as u32;
    let id = r.be(8)?;
    let win_head_dist = r.be(4)? as u32;
    let header = Header {
        image_type,
        width,
        height,
        stride,
        top_down: tb >> 4 != 0,
        id,
        win_head_dist,
    };
    // The server only encodes tight rows (palette rows: the bytes the indices need).
    let stride_ok = stride as u64 == image_type.pixel_format().row_bytes(width);
    if width == 0
        || height == 0
        || width > i32::MAX as u32
        || height > i32::MAX as u32
        || !stride_ok
    {
        return Err(CodecError::InvalidSize {
            codec: CODEC,
            width,
            height,
        });
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Produced by spice-server's glz encoder (glz-encoder.c, built locally, not part of this
    // repository), one dictionary, images encoded in this order with `test_image`:
    // A = Rgb32 16x4 top-down (id 0); B = A with pixel (5, 2) changed, bottom-up (id 1, refers
    // to A); C = Pal4Be 9x3 top-down (id 2).
    const A: &[u8] = &[
        0x20, 0x20, 0x5a, 0x4c, 0x00, 0x01, 0x00, 0x01, 0x18, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,
        0x00, 0x04, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x0c, 0x00, 0x70, 0x10, 0x20, 0x90, 0x30, 0x40, 0xb0, 0x50, 0x60, 0x00,
        0x70, 0x80, 0x20, 0x90, 0xa0, 0x40, 0xb0, 0xc0, 0x60, 0x00, 0x10, 0x80, 0x20, 0x30, 0xa0,
        0x40, 0x50, 0xc0, 0x60, 0x70, 0x10, 0x80, 0x90, 0x30, 0xa0, 0xb0, 0x50, 0xc0, 0xec, 0x2a,
        0x00, 0x00, 0x01, 0x70, 0x10, 0x80, 0x90, 0x30, 0xa0,
    ];
    const B: &[u8] = &[
        0x20, 0x20, 0x5a, 0x4c, 0x00, 0x01, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,
        0x00, 0x04, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x01, 0x01, 0x00, 0x70, 0x10, 0x20, 0x90, 0x30, 0xe2, 0x1c, 0x00, 0x01, 0x00,
        0x6f, 0x30, 0xa0, 0xec, 0x11, 0x00, 0x01, 0x01, 0x70, 0x10, 0x80, 0x90, 0x30, 0xa0,
    ];
    const C: &[u8] = &[
        0x20, 0x20, 0x5a, 0x4c, 0x00, 0x01, 0x00, 0x01, 0x14, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00,
        0x00, 0x03, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00,
        0x00, 0x00, 0x02, 0x0e, 0x00, 0x70, 0x10, 0x80, 0x20, 0x90, 0x30, 0xa0, 0x40, 0xb0, 0x50,
        0xc0, 0x60, 0x00, 0x70,
    ];

    fn test_image(f: PixelFormat, w: u32, h: u32, tweak: bool) -> Pixmap {
        let rb = f.row_bytes(w) as usize;
        let mut d: Vec<u8> = (0..rb * h as usize)
            .map(|i| ((i * 7) % 13) as u8 * 16)
            .collect();
        if tweak {
            d[2 * rb + 5 * 4] ^= 0xff;
        }
        Pixmap::from_data(w, h, f, rb, d).unwrap()
    }

    fn palette() -> Vec<u32> {
        (0..16u32).map(|i| i * 0x0010_2030).collect()
    }

    #[test]
    fn reference_streams_decode_with_cross_image_references() {
        let mut dec = Decoder::default();
        let a = dec.decode(A, &[]).unwrap();
        assert_eq!(a.header.id, 0);
        assert!(a.header.top_down);
        assert_eq!(
            a.pixmap.to_rgba8(&[]),
            test_image(PixelFormat::Rgb32, 16, 4, false).to_rgba8(&[])
        );
        let b = dec.decode(B, &[]).unwrap();
        assert_eq!((b.header.id, b.header.win_head_dist), (1, 1));
        assert!(!b.header.top_down);
        assert_eq!(
            b.pixmap.to_rgba8(&[]),
            test_image(PixelFormat::Rgb32, 16, 4, true).to_rgba8(&[])
        );
        let c = dec.decode(C, &palette()).unwrap();
        assert_eq!(c.header.image_type, ImageType::Plt4Be);
        // Palette rows decode to every index of the row's bytes (10 for 9 pixels).
        assert_eq!(c.pixmap.stride(), 10 * 4);
        let want = test_image(PixelFormat::Pal4Be, 9, 3, false).to_rgba8(&palette());
        assert_eq!(c.pixmap.to_rgba8(&[]), want);
        assert_eq!(dec.window_ids().collect::<Vec<_>>(), [0, 1, 2]);

        // B alone cannot be decoded: it copies pixels of A.
        assert_eq!(
            Decoder::default().decode(B, &[]),
            Err(CodecError::MissingImage {
                codec: CODEC,
                id: 0
            })
        );
    }

    #[test]
    fn window_drops_images_the_server_released() {
        let mut dec = Decoder::default();
        dec.decode(A, &[]).unwrap();
        // C claims the window starts at its own id (win_head_dist 0): A and B are dropped.
        let mut c = C.to_vec();
        c[32] = 0;
        dec.decode(B, &[]).unwrap();
        dec.decode(&c, &palette()).unwrap();
        assert_eq!(dec.window_ids().collect::<Vec<_>>(), [2]);
        dec.clear();
        assert_eq!(dec.window_ids().count(), 0);
    }

    #[test]
    fn header_checks() {
        let h = read_header(A).unwrap();
        assert_eq!(
            (h.width, h.height, h.stride, h.gross_pixels()),
            (16, 4, 64, 64)
        );
        let mut bad = A.to_vec();
        bad[8] = 0x1a; // type 10 (XXXA) is not a GLZ type
        assert!(matches!(
            Decoder::default().decode(&bad, &[]),
            Err(CodecError::BadImageType { .. })
        ));
        let mut bad = A.to_vec();
        bad[20] = 0x41; // stride
        assert!(matches!(
            read_header(&bad),
            Err(CodecError::InvalidSize { .. })
        ));
        assert!(matches!(
            Decoder::default().decode(&A[..A.len() - 1], &[]),
            Err(CodecError::Truncated { .. })
        ));
    }

    #[test]
    fn encoder_reproduces_reference_streams() {
        let mut enc = Encoder::new(1 << 20).unwrap();
        let a = enc
            .encode(&test_image(PixelFormat::Rgb32, 16, 4, false), true)
            .unwrap();
        assert_eq!(a, (0, A.to_vec()));
        let b = enc
            .encode(&test_image(PixelFormat::Rgb32, 16, 4, true), false)
            .unwrap();
        assert_eq!(b, (1, B.to_vec()));
        let c = enc
            .encode(&test_image(PixelFormat::Pal4Be, 9, 3, false), true)
            .unwrap();
        assert_eq!(c, (2, C.to_vec()));
        assert_eq!(enc.window_ids().collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn small_window_evicts_and_decoder_follows() {
        // 64-pixel images in a 150-pixel window: two fit, the third pushes the oldest out.
        let mut enc = Encoder::new(150).unwrap();
        let mut dec = Decoder::default();
        for i in 0..6 {
            let img = test_image(PixelFormat::Rgb32, 16, 4, i % 2 == 1);
            let (id, bytes) = enc.encode(&img, true).unwrap();
            assert_eq!(id, i);
            let got = dec.decode(&bytes, &[]).unwrap();
            assert_eq!(got.pixmap.to_rgba8(&[]), img.to_rgba8(&[]));
            assert_eq!(got.header.win_head_dist, u32::from(i > 0));
        }
        assert_eq!(enc.window_ids().collect::<Vec<_>>(), [4, 5]);
        assert_eq!(dec.window_ids().collect::<Vec<_>>(), [4, 5]);
        let big = test_image(PixelFormat::Rgb32, 16, 10, false);
        assert!(matches!(
            enc.encode(&big, true),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(Encoder::new(MAX_WINDOW_PIXELS + 1).is_err());
    }

    fn arb_sequence() -> impl Strategy<Value = Vec<(Pixmap, u32)>> {
        const FORMATS: [PixelFormat; 9] = [
            PixelFormat::Rgb32,
            PixelFormat::Rgba,
            PixelFormat::Rgb24,
            PixelFormat::Rgb16,
            PixelFormat::Pal8,
            PixelFormat::Pal4Le,
            PixelFormat::Pal4Be,
            PixelFormat::Pal1Le,
            PixelFormat::Pal1Be,
        ];
        (
            0..FORMATS.len(),
            1u32..30,
            1u32..5,
            any::<u64>(),
            1usize..5,
            1u32..4,
        )
            .prop_map(|(f, w, h, seed, n, chunk)| {
                let fmt = FORMATS[f];
                let rb = fmt.row_bytes(w) as usize;
                let mut s = seed | 1;
                let mut next = move || {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s
                };
                let mut data: Vec<u8> = (0..rb * h as usize).map(|_| (next() % 4) as u8).collect();
                (0..n)
                    .map(|_| {
                        // Each image is the previous one with a few bytes changed.
                        for _ in 0..next() % 3 {
                            let i = (next() % data.len() as u64) as usize;
                            data[i] = next() as u8;
                        }
                        let img = Pixmap::from_data(w, h, fmt, rb, data.clone()).unwrap();
                        (img, chunk)
                    })
                    .collect()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn encode_decode_identity(seq in arb_sequence()) {
            let mut enc = Encoder::new(1 << 16).unwrap();
            let mut dec = Decoder::default();
            let pal: Vec<u32> = (0..256u32).map(|i| i * 0x0001_0203).collect();
            for (img, chunk) in &seq {
                let mut rows = vec![];
                let mut left = img.height();
                while left > 0 {
                    rows.push((*chunk).min(left));
                    left -= (*chunk).min(left);
                }
                let (_, bytes) = enc.encode_chunks(img, true, &rows).unwrap();
                let got = dec.decode(&bytes, &pal).unwrap();
                prop_assert_eq!(img.to_rgba8(&pal), got.pixmap.to_rgba8(&pal));
            }
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = Decoder::new(Limits { max_pixels: 1 << 16 }, 1 << 16).decode(&data, &[1, 2]);
        }

        #[test]
        fn decode_never_panics_on_damaged_streams(
            which in 0usize..3, pos in any::<usize>(), val in any::<u8>(), cut in any::<usize>()
        ) {
            let mut dec = Decoder::new(Limits { max_pixels: 1 << 16 }, 1 << 16);
            let _ = dec.decode(A, &[]);
            let mut s = [A, B, C][which].to_vec();
            let i = pos % s.len();
            s[i] ^= val | 1;
            let _ = dec.decode(&s, &palette());
            s.truncate(cut % (s.len() + 1));
            let _ = dec.decode(&s, &[]);
        }
    }
}
