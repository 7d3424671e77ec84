//! Turning a SPICE image descriptor into pixels: every image type through its codec, palettes
//! (inline or from the palette cache), bottom-up rows flipped, and the pixmap cache
//! (`CACHE_ME`, `FROM_CACHE`, `FROM_CACHE_LOSSLESS`, invalidations).

use std::collections::BTreeMap;
use std::rc::Rc;

use super::raster::Raster;
use super::CanvasError;
use crate::codec::{self, glz, lz, quic, Limits, PixelFormat, Pixmap};
use crate::display::{BitmapFlags, BitmapPalette, Image, ImageData, ImageFlags, LzPltPalette};

/// A decoded image and whether its pixels are exact (not from JPEG).
#[derive(Debug, Clone)]
pub struct Decoded {
    pub raster: Rc<Raster>,
    pub lossy: bool,
}

/// The client-side caches an image can read or fill, and the GLZ window.
#[derive(Debug)]
pub struct Caches {
    pub limits: Limits,
    /// Pixmap cache: image id → (insertion number, image).
    pixmaps: BTreeMap<u64, (u64, Decoded)>,
    pixmap_pixels: u64,
    /// Cap on the pixels the pixmap cache holds; the oldest entries go first past it.
    pub max_pixmap_pixels: u64,
    seq: u64,
    palettes: BTreeMap<u64, Rc<Vec<u32>>>,
    pub glz: glz::Decoder,
}

/// At most this many palettes are cached (a compliant server invalidates long before).
const MAX_PALETTES: usize = 4096;

impl Caches {
    pub fn new(limits: Limits) -> Caches {
        Caches {
            limits,
            pixmaps: BTreeMap::new(),
            pixmap_pixels: 0,
            max_pixmap_pixels: limits.max_pixels.saturating_mul(2),
            seq: 0,
            palettes: BTreeMap::new(),
            glz: glz::Decoder::new(limits, 1 << 25),
        }
    }

    pub fn clear_pixmaps(&mut self) {
        self.pixmaps.clear();
        self.pixmap_pixels = 0;
    }

    pub fn remove_pixmap(&mut self, id: u64) {
        if let Some((_, d)) = self.pixmaps.remove(&id) {
            self.pixmap_pixels -= d.raster.px.len() as u64;
        }
    }

    pub fn clear_palettes(&mut self) {
        self.palettes.clear();
    }

    pub fn remove_palette(&mut self, id: u64) {
        self.palettes.remove(&id);
    }

    /// Number of cached pixmaps.
    pub fn pixmap_count(&self) -> usize {
        self.pixmaps.len()
    }

    fn put_pixmap(&mut self, id: u64, d: Decoded) {
        self.remove_pixmap(id);
        let n = d.raster.px.len() as u64;
        while self.pixmap_pixels + n > self.max_pixmap_pixels {
            // Evict the oldest entry.
            let Some((&old, _)) = self.pixmaps.iter().min_by_key(|(_, (seq, _))| *seq) else {
                break;
            };
            self.remove_pixmap(old);
        }
        self.seq += 1;
        self.pixmap_pixels += n;
        self.pixmaps.insert(id, (self.seq, d));
    }

    fn palette(
        &mut self,
        flags: BitmapFlags,
        from_cache: Option<u64>,
        inline: Option<&crate::display::Palette>,
    ) -> Result<Rc<Vec<u32>>, CanvasError> {
        if let Some(id) = from_cache {
            return self
                .palettes
                .get(&id)
                .cloned()
                .ok_or(CanvasError::MissingPalette(id));
        }
        let Some(p) = inline else {
            return Ok(Rc::new(Vec::new()));
        };
        let ents = Rc::new(p.ents.clone());
        if flags.contains(BitmapFlags::PAL_CACHE_ME) {
            if self.palettes.len() >= MAX_PALETTES {
                self.palettes.pop_first();
            }
            self.palettes.insert(p.unique, ents.clone());
        }
        Ok(ents)
    }

    /// Decode `img` (reading and filling the caches as its flags say).
    pub fn decode(&mut self, img: &Image) -> Result<Decoded, CanvasError> {
        let d = match &img.data {
            ImageData::FromCache | ImageData::FromCacheLossless => {
                return self
                    .pixmaps
                    .get(&img.id)
                    .map(|(_, d)| d.clone())
                    .ok_or(CanvasError::MissingPixmap(img.id));
            }
            ImageData::Surface(id) => return Err(CanvasError::SurfaceImage(*id)),
            data => self.decode_data(img, data)?,
        };
        if d.raster.width != img.width || d.raster.height != img.height {
            return Err(CanvasError::ImageSize {
                descriptor: (img.width, img.height),
                decoded: (d.raster.width, d.raster.height),
            });
        }
        if img.flags.contains(ImageFlags::CACHE_ME) {
            self.put_pixmap(img.id, d.clone());
        }
        Ok(d)
    }

    fn decode_data(&mut self, img: &Image, data: &ImageData) -> Result<Decoded, CanvasError> {
        let limits = self.limits;
        let lossless = |r: Raster| Decoded {
            raster: Rc::new(r),
            lossy: false,
        };
        Ok(match data {
            ImageData::Bitmap(b) => {
                let fmt = PixelFormat::from_spice_bitmap_fmt(b.format.to_raw())
                    .ok_or(CanvasError::Unsupported("bitmap format"))?;
                if b.x as u64 * b.y as u64 > limits.max_pixels {
                    return Err(CanvasError::TooLarge);
                }
                let (cache, inline) = match &b.palette {
                    BitmapPalette::FromCache(id) => (Some(*id), None),
                    BitmapPalette::Inline(p) => (None, p.as_ref()),
                };
                let pal = self.palette(b.flags, cache, inline)?;
                let pix = Pixmap::from_data(b.x, b.y, fmt, b.stride as usize, b.data.to_vec())?;
                let pix = if b.flags.contains(BitmapFlags::TOP_DOWN) {
                    pix
                } else {
                    pix.flipped_vertically()
                };
                lossless(to_raster(&pix, &pal))
            }
            ImageData::Quic(b) => lossless(to_raster(&quic::decode_with(b, &limits)?, &[])),
            ImageData::LzRgb(b) => {
                let i = lz::decode_with(b, &limits)?;
                lossless(to_raster(&upright(i.pixmap, i.header.top_down), &[]))
            }
            ImageData::LzPlt(p) => {
                let (cache, inline) = match &p.palette {
                    LzPltPalette::FromCache(id) => (Some(*id), None),
                    LzPltPalette::Inline(pal) => (None, Some(pal)),
                };
                let pal = self.palette(p.flags, cache, inline)?;
                let i = lz::decode_with(&p.data, &limits)?;
                lossless(to_raster(&upright(i.pixmap, i.header.top_down), &pal))
            }
            ImageData::GlzRgb(b) => {
                let i = self.glz.decode(b, &[])?;
                lossless(glz_raster(i, img.width))
            }
            ImageData::ZlibGlzRgb(z) => {
                let i =
                    codec::zlib_glz::decode(&mut self.glz, &z.data, z.glz_data_size, &[], &limits)?;
                lossless(glz_raster(i, img.width))
            }
            ImageData::Lz4(b) => lossless(to_raster(
                &codec::lz4::decode(b, img.width, img.height, &limits)?,
                &[],
            )),
            ImageData::Jpeg(b) => Decoded {
                raster: Rc::new(to_raster(&codec::jpeg::decode(b, &limits)?, &[])),
                lossy: true,
            },
            ImageData::JpegAlpha(j) => Decoded {
                raster: Rc::new(to_raster(
                    &codec::jpeg::decode_alpha(
                        &j.data,
                        j.jpeg_size,
                        j.flags.contains(crate::display::JpegAlphaFlags::TOP_DOWN),
                        &limits,
                    )?,
                    &[],
                )),
                lossy: true,
            },
            ImageData::FromCache | ImageData::FromCacheLossless | ImageData::Surface(_) => {
                unreachable!("handled by decode")
            }
        })
    }
}

fn upright(p: Pixmap, top_down: bool) -> Pixmap {
    if top_down {
        p
    } else {
        p.flipped_vertically()
    }
}

/// A GLZ image's pixels, cut to the descriptor's width (palette types decode whole bytes).
fn glz_raster(i: glz::GlzImage, width: u32) -> Raster {
    let r = to_raster(&upright(i.pixmap, i.header.top_down), &[]);
    if r.width <= width {
        return r;
    }
    r.sub(0, 0, width, r.height)
}

/// Any pixmap as a raster (palette formats through `pal`).
pub fn to_raster(p: &Pixmap, pal: &[u32]) -> Raster {
    let alpha = matches!(p.format(), PixelFormat::Rgba | PixelFormat::A8);
    Raster::from_rgba8(p.width(), p.height(), alpha, &p.to_rgba8(pal))
}

/// A 1-bit mask bitmap as flags (bit set = inside); other images count a pixel as set when
/// its colour is not black.
pub fn mask_bits(img: &Image, caches: &mut Caches) -> Result<(u32, u32, Vec<bool>), CanvasError> {
    if let ImageData::Bitmap(b) = &img.data {
        let fmt = PixelFormat::from_spice_bitmap_fmt(b.format.to_raw());
        if let Some(f @ (PixelFormat::Pal1Le | PixelFormat::Pal1Be)) = fmt {
            let pix = Pixmap::from_data(b.x, b.y, f, b.stride as usize, b.data.to_vec())?;
            let pix = if b.flags.contains(BitmapFlags::TOP_DOWN) {
                pix
            } else {
                pix.flipped_vertically()
            };
            let mut out = Vec::with_capacity(b.x as usize * b.y as usize);
            for y in 0..b.y {
                let row = pix.row(y);
                for x in 0..b.x as usize {
                    let byte = row[x / 8];
                    let bit = if f == PixelFormat::Pal1Be {
                        7 - (x % 8)
                    } else {
                        x % 8
                    };
                    out.push(byte >> bit & 1 == 1);
                }
            }
            if img.flags.contains(ImageFlags::CACHE_ME) {
                // Keep it for FROM_CACHE masks, as white on black.
                let r = Raster {
                    width: b.x,
                    height: b.y,
                    alpha: false,
                    px: out
                        .iter()
                        .map(|&s| if s { 0x00ff_ffff } else { 0 })
                        .collect(),
                };
                caches.put_pixmap(
                    img.id,
                    Decoded {
                        raster: Rc::new(r),
                        lossy: false,
                    },
                );
            }
            return Ok((b.x, b.y, out));
        }
    }
    let d = caches.decode(img)?;
    let r = &d.raster;
    Ok((
        r.width,
        r.height,
        r.px.iter().map(|p| p & 0x00ff_ffff != 0).collect(),
    ))
}
