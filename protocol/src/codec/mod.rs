//! Image codecs: the pixel buffer they share ([`Pixmap`]) and the SPICE image compressions
//! ([`quic`], [`lz`], [`glz`], [`zlib_glz`], [`lz4`], [`jpeg`]).
//!
//! Owns: the bitstreams of the compressed image payloads, with encoders byte-identical to the
//! reference ones (spice-common's quic.c and lz.c, spice-server's glz encoder and dictionary)
//! for the same pixels, and decoders for them (GLZ with spice-gtk's cross-image window). LZ4
//! (our own LZ4 block codec), ZLIB_GLZ (zlib through `flate2` around GLZ) and JPEG / JPEG_ALPHA
//! (`zune-jpeg` to decode, `jpeg-encoder` to encode, the alpha plane as LZ) have decoders for
//! what the reference sends and encoders of standard streams (not the reference's bytes).
//! Does not: parse SPICE image descriptors or chunk lists (that is [`crate::display`]); a codec
//! takes the payload bytes that follow the descriptor's `data_size`, already joined.
//!
//! Every decoder takes untrusted bytes: it never panics, checks the image size against
//! [`Limits`] and against what the input could possibly encode before allocating, and returns a
//! [`CodecError`] naming what was wrong.

pub mod glz;
pub mod images;
pub mod jpeg;
pub mod lz;
pub mod lz4;
pub mod quic;
pub mod zlib_glz;

/// Why an image could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The compressed input ended before the image was complete.
    #[error("{codec}: compressed data ended early")]
    Truncated { codec: &'static str },
    /// The payload does not start with the codec's magic.
    #[error("{codec}: bad magic {magic:#010x}")]
    BadMagic { codec: &'static str, magic: u32 },
    /// The payload has a version this implementation does not know.
    #[error("{codec}: unsupported version {version:#010x}")]
    BadVersion { codec: &'static str, version: u32 },
    /// The payload names an image type the codec does not have.
    #[error("{codec}: unknown image type {value}")]
    BadImageType { codec: &'static str, value: u32 },
    /// Width or height is zero or out of the codec's range.
    #[error("{codec}: invalid size {width}x{height}")]
    InvalidSize {
        codec: &'static str,
        width: u32,
        height: u32,
    },
    /// The image would need more pixels than the limit allows, or more than the input could
    /// encode.
    #[error("{codec}: {width}x{height} exceeds the limit of {limit} pixels")]
    TooLarge {
        codec: &'static str,
        width: u32,
        height: u32,
        limit: u64,
    },
    /// The compressed data is inconsistent (a run or back reference outside the image, ...).
    #[error("{codec}: corrupt data: {what}")]
    Corrupt {
        codec: &'static str,
        what: &'static str,
    },
    /// The codec cannot carry this pixel format.
    #[error("{codec}: pixel format {format:?} not supported")]
    UnsupportedFormat {
        codec: &'static str,
        format: PixelFormat,
    },
    /// A GLZ image refers to an earlier image the decoder does not hold (not received yet, or
    /// already dropped from the window).
    #[error("{codec}: referenced image {id} is not in the window")]
    MissingImage { codec: &'static str, id: u64 },
    /// A pixel buffer's stride or data length does not fit its size and format.
    #[error("pixmap: {what}")]
    BadPixmap { what: &'static str },
}

/// Decoder resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `width * height` a decoder will allocate for.
    pub max_pixels: u64,
}

impl Default for Limits {
    /// 64 Mi pixels: above any SPICE surface in practice (the reference's own cap, 512 Mi,
    /// would let a tiny payload demand 2 GiB).
    fn default() -> Self {
        Limits {
            max_pixels: 64 * 1024 * 1024,
        }
    }
}

/// Pixel layouts, named after SPICE_BITMAP_FMT_* (plus [`PixelFormat::Gray8`], which only
/// QUIC's GRAY type produces). Multi-byte pixels are little endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum PixelFormat {
    /// 1 bit palette index per pixel, first pixel in the least significant bit (1BIT_LE).
    Pal1Le,
    /// 1 bit palette index per pixel, first pixel in the most significant bit (1BIT_BE).
    Pal1Be,
    /// 4 bit palette index per pixel, first pixel in the low nibble (4BIT_LE).
    Pal4Le,
    /// 4 bit palette index per pixel, first pixel in the high nibble (4BIT_BE).
    Pal4Be,
    /// 8 bit palette index per pixel (8BIT).
    Pal8,
    /// x1r5g5b5 in a little-endian u16; bit 15 unused (16BIT).
    Rgb16,
    /// B, G, R bytes (24BIT).
    Rgb24,
    /// B, G, R, X bytes; X unused (32BIT).
    Rgb32,
    /// B, G, R, A bytes (RGBA).
    Rgba,
    /// One alpha byte per pixel (8BIT_A).
    A8,
    /// One gray level byte per pixel (not a SPICE bitmap format).
    Gray8,
}

impl PixelFormat {
    /// Bits one pixel takes.
    pub const fn bits_per_pixel(self) -> u32 {
        match self {
            PixelFormat::Pal1Le | PixelFormat::Pal1Be => 1,
            PixelFormat::Pal4Le | PixelFormat::Pal4Be => 4,
            PixelFormat::Pal8 | PixelFormat::A8 | PixelFormat::Gray8 => 8,
            PixelFormat::Rgb16 => 16,
            PixelFormat::Rgb24 => 24,
            PixelFormat::Rgb32 | PixelFormat::Rgba => 32,
        }
    }

    /// Bytes one row of `width` pixels needs (bits rounded up to whole bytes).
    pub const fn row_bytes(self, width: u32) -> u64 {
        (width as u64 * self.bits_per_pixel() as u64).div_ceil(8)
    }

    /// Whether pixels are palette indices.
    pub const fn is_palette(self) -> bool {
        matches!(
            self,
            PixelFormat::Pal1Le
                | PixelFormat::Pal1Be
                | PixelFormat::Pal4Le
                | PixelFormat::Pal4Be
                | PixelFormat::Pal8
        )
    }

    /// The SPICE_BITMAP_FMT_* value, `None` for [`PixelFormat::Gray8`].
    pub const fn spice_bitmap_fmt(self) -> Option<u8> {
        Some(match self {
            PixelFormat::Pal1Le => 1,
            PixelFormat::Pal1Be => 2,
            PixelFormat::Pal4Le => 3,
            PixelFormat::Pal4Be => 4,
            PixelFormat::Pal8 => 5,
            PixelFormat::Rgb16 => 6,
            PixelFormat::Rgb24 => 7,
            PixelFormat::Rgb32 => 8,
            PixelFormat::Rgba => 9,
            PixelFormat::A8 => 10,
            PixelFormat::Gray8 => return None,
        })
    }

    /// The format of a SPICE_BITMAP_FMT_* value.
    pub const fn from_spice_bitmap_fmt(v: u8) -> Option<PixelFormat> {
        Some(match v {
            1 => PixelFormat::Pal1Le,
            2 => PixelFormat::Pal1Be,
            3 => PixelFormat::Pal4Le,
            4 => PixelFormat::Pal4Be,
            5 => PixelFormat::Pal8,
            6 => PixelFormat::Rgb16,
            7 => PixelFormat::Rgb24,
            8 => PixelFormat::Rgb32,
            9 => PixelFormat::Rgba,
            10 => PixelFormat::A8,
            _ => return None,
        })
    }
}

/// A top-down pixel buffer: row `y` is `data[y * stride..][..row_bytes]`.
///
/// Invariants (checked by the constructors): `width, height >= 1`,
/// `stride >= format.row_bytes(width)`, `data.len() == stride * height`.
/// Bottom-up SPICE bitmaps are flipped by whoever builds the `Pixmap`; codecs see rows in the
/// order they are coded.
#[derive(Clone, PartialEq, Eq)]
pub struct Pixmap {
    width: u32,
    height: u32,
    format: PixelFormat,
    stride: usize,
    data: Vec<u8>,
}

impl core::fmt::Debug for Pixmap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Pixmap({}x{} {:?} stride {} fnv1a {:016x})",
            self.width,
            self.height,
            self.format,
            self.stride,
            crate::wire::fnv1a(&self.data)
        )
    }
}

impl Pixmap {
    /// A zeroed pixmap with the tightest stride, if `width * height` is within `max_pixels`.
    pub fn new(
        width: u32,
        height: u32,
        format: PixelFormat,
        max_pixels: u64,
    ) -> Result<Pixmap, CodecError> {
        if width == 0 || height == 0 {
            return Err(CodecError::BadPixmap { what: "empty size" });
        }
        if width as u64 * height as u64 > max_pixels {
            return Err(CodecError::BadPixmap { what: "too large" });
        }
        let stride = usize::try_from(format.row_bytes(width))
            .map_err(|_| CodecError::BadPixmap { what: "too large" })?;
        let len = stride
            .checked_mul(height as usize)
            .ok_or(CodecError::BadPixmap { what: "too large" })?;
        Ok(Pixmap {
            width,
            height,
            format,
            stride,
            data: vec![0; len],
        })
    }

    /// Wrap existing rows. `data` may be longer than `stride * height` (the excess is dropped)
    /// but not shorter.
    pub fn from_data(
        width: u32,
        height: u32,
        format: PixelFormat,
        stride: usize,
        mut data: Vec<u8>,
    ) -> Result<Pixmap, CodecError> {
        if width == 0 || height == 0 {
            return Err(CodecError::BadPixmap { what: "empty size" });
        }
        if (stride as u64) < format.row_bytes(width) {
            return Err(CodecError::BadPixmap {
                what: "stride shorter than a row",
            });
        }
        let len = stride
            .checked_mul(height as usize)
            .ok_or(CodecError::BadPixmap { what: "too large" })?;
        if data.len() < len {
            return Err(CodecError::BadPixmap {
                what: "data shorter than stride * height",
            });
        }
        data.truncate(len);
        Ok(Pixmap {
            width,
            height,
            format,
            stride,
            data,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    pub fn format(&self) -> PixelFormat {
        self.format
    }
    pub fn stride(&self) -> usize {
        self.stride
    }
    /// All rows, `stride * height` bytes (padding bytes included).
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// Bytes of the pixels of one row, without stride padding.
    pub fn row_bytes(&self) -> usize {
        // Fits: the constructors checked stride * height fits and stride >= row bytes.
        self.format.row_bytes(self.width) as usize
    }

    /// Row `y` (without stride padding); empty if `y >= height`.
    pub fn row(&self, y: u32) -> &[u8] {
        let start = y as usize * self.stride;
        self.data
            .get(start..start + self.row_bytes())
            .unwrap_or(&[])
    }

    /// Row `y` mutably (without stride padding); empty if `y >= height`.
    pub fn row_mut(&mut self, y: u32) -> &mut [u8] {
        let start = y as usize * self.stride;
        let n = self.row_bytes();
        self.data.get_mut(start..start + n).unwrap_or(&mut [])
    }

    /// The same pixels with the row order reversed (for bottom-up bitmaps).
    pub fn flipped_vertically(&self) -> Pixmap {
        let mut data = Vec::with_capacity(self.data.len());
        for row in self.data.chunks_exact(self.stride).rev() {
            data.extend_from_slice(row);
        }
        Pixmap {
            data,
            ..self.clone_header()
        }
    }

    fn clone_header(&self) -> Pixmap {
        Pixmap {
            width: self.width,
            height: self.height,
            format: self.format,
            stride: self.stride,
            data: Vec::new(),
        }
    }

    /// The pixels as R, G, B, A bytes, `width * 4` per row, no padding.
    ///
    /// Palette formats look indices up in `palette` (entries as SPICE sends them: `0x__RRGGBB`;
    /// an index past its end is black). 16BIT expands each 5-bit channel as the spice-gtk canvas
    /// does (`v << 3 | v >> 2`). 32BIT and 24BIT are opaque; A8 is black with that alpha; RGBA
    /// is passed through as stored.
    pub fn to_rgba8(&self, palette: &[u32]) -> Vec<u8> {
        let w = self.width as usize;
        let mut out = Vec::with_capacity(w * 4 * self.height as usize);
        let pal = |i: usize| -> [u8; 4] {
            let c = palette.get(i).copied().unwrap_or(0);
            [(c >> 16) as u8, (c >> 8) as u8, c as u8, 0xff]
        };
        let x5 = |v: u16| -> u8 {
            let v = (v & 0x1f) as u8;
            (v << 3) | (v >> 2)
        };
        for y in 0..self.height {
            let row = self.row(y);
            match self.format {
                PixelFormat::Rgb32 => {
                    for p in row.chunks_exact(4) {
                        out.extend_from_slice(&[p[2], p[1], p[0], 0xff]);
                    }
                }
                PixelFormat::Rgba => {
                    for p in row.chunks_exact(4) {
                        out.extend_from_slice(&[p[2], p[1], p[0], p[3]]);
                    }
                }
                PixelFormat::Rgb24 => {
                    for p in row.chunks_exact(3) {
                        out.extend_from_slice(&[p[2], p[1], p[0], 0xff]);
                    }
                }
                PixelFormat::Rgb16 => {
                    for p in row.chunks_exact(2) {
                        let v = u16::from_le_bytes([p[0], p[1]]);
                        out.extend_from_slice(&[x5(v >> 10), x5(v >> 5), x5(v), 0xff]);
                    }
                }
                PixelFormat::A8 => {
                    for &a in row {
                        out.extend_from_slice(&[0, 0, 0, a]);
                    }
                }
                PixelFormat::Gray8 => {
                    for &g in row {
                        out.extend_from_slice(&[g, g, g, 0xff]);
                    }
                }
                PixelFormat::Pal8 => {
                    for &i in row {
                        out.extend_from_slice(&pal(i as usize));
                    }
                }
                PixelFormat::Pal4Le | PixelFormat::Pal4Be => {
                    for x in 0..w {
                        let b = row.get(x / 2).copied().unwrap_or(0);
                        let hi_first = self.format == PixelFormat::Pal4Be;
                        let i = if (x % 2 == 0) == hi_first {
                            b >> 4
                        } else {
                            b & 0xf
                        };
                        out.extend_from_slice(&pal(i as usize));
                    }
                }
                PixelFormat::Pal1Le | PixelFormat::Pal1Be => {
                    for x in 0..w {
                        let b = row.get(x / 8).copied().unwrap_or(0);
                        let bit = if self.format == PixelFormat::Pal1Be {
                            7 - (x % 8)
                        } else {
                            x % 8
                        };
                        out.extend_from_slice(&pal(((b >> bit) & 1) as usize));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgba8_conversions() {
        let p =
            Pixmap::from_data(2, 1, PixelFormat::Rgb32, 8, vec![1, 2, 3, 9, 4, 5, 6, 9]).unwrap();
        assert_eq!(p.to_rgba8(&[]), [3, 2, 1, 255, 6, 5, 4, 255]);
        let p = Pixmap::from_data(
            1,
            1,
            PixelFormat::Rgb16,
            2,
            0x7c00u16.to_le_bytes().to_vec(),
        )
        .unwrap();
        assert_eq!(p.to_rgba8(&[]), [255, 0, 0, 255]);
        let pal = [0x000000, 0xff0000];
        let p = Pixmap::from_data(9, 1, PixelFormat::Pal1Be, 2, vec![0x80, 0x80]).unwrap();
        let px = p.to_rgba8(&pal);
        assert_eq!(&px[0..4], [255, 0, 0, 255]);
        assert_eq!(&px[4..8], [0, 0, 0, 255]);
        assert_eq!(&px[32..36], [255, 0, 0, 255]);
        let p = Pixmap::from_data(3, 1, PixelFormat::Pal4Le, 2, vec![0x10, 0x01]).unwrap();
        let px = p.to_rgba8(&pal);
        assert_eq!(&px[0..4], [0, 0, 0, 255]);
        assert_eq!(&px[4..8], [255, 0, 0, 255]);
        assert_eq!(&px[8..12], [255, 0, 0, 255]);
    }

    #[test]
    fn flip() {
        let p = Pixmap::from_data(1, 3, PixelFormat::A8, 2, vec![1, 9, 2, 9, 3, 9]).unwrap();
        assert_eq!(p.flipped_vertically().data(), [3, 9, 2, 9, 1, 9]);
        assert_eq!(p.flipped_vertically().flipped_vertically(), p);
    }

    #[test]
    fn pixmap_checks() {
        assert!(Pixmap::from_data(3, 2, PixelFormat::Rgb24, 10, vec![0; 19]).is_err());
        assert!(Pixmap::from_data(3, 2, PixelFormat::Rgb24, 10, vec![0; 21]).is_ok());
        assert!(Pixmap::from_data(3, 1, PixelFormat::Rgb24, 9, vec![0; 9]).is_ok());
        assert!(Pixmap::from_data(3, 1, PixelFormat::Rgb24, 8, vec![0; 8]).is_err());
        assert!(Pixmap::from_data(0, 1, PixelFormat::Rgb24, 9, vec![0; 9]).is_err());
        assert!(Pixmap::new(0, 1, PixelFormat::Rgb24, 100).is_err());
        assert!(Pixmap::new(11, 10, PixelFormat::Rgb24, 100).is_err());
        assert_eq!(
            Pixmap::new(3, 2, PixelFormat::Pal1Be, 100)
                .unwrap()
                .stride(),
            1
        );
    }
}
