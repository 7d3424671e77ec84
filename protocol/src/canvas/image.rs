//! Turning a SPICE image descriptor into pixels: every image type through its codec, palettes
//! (inline or from the palette cache), bottom-up rows flipped, masks, and the pixmap cache
//! (`CACHE_ME`, `FROM_CACHE`, `FROM_CACHE_LOSSLESS`, invalidations).
//!
//! Owns the pixmap and palette caches, each bounded by entries and by bytes
//! ([`CanvasLimits`]), evicting the oldest entry in O(log n). Must not: decode an image or a
//! mask larger than [`Limits::max_pixels`], or keep an entry larger than its cache.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::raster::Raster;
use super::{CanvasError, CanvasLimits, PIXMAP_ENTRY_OVERHEAD};
use crate::codec::{self, glz, lz, quic, Limits, PixelFormat, Pixmap};
use crate::display::{BitmapFlags, BitmapPalette, Image, ImageData, ImageFlags, LzPltPalette};

/// A decoded image and whether its pixels are exact (not from JPEG).
#[derive(Debug, Clone)]
pub struct Decoded {
    pub raster: Rc<Raster>,
    pub lossy: bool,
}

/// The client-side caches an image can read or fill, and the GLZ window.
///
/// Both caches are bounded by entries and by bytes held ([`CanvasLimits`]), and evict their
/// oldest entry first in O(log n) (an index by insertion number).
#[derive(Debug)]
pub struct Caches {
    pub limits: Limits,
    climits: CanvasLimits,
    /// Pixmap cache: image id → (insertion number, image).
    pixmaps: BTreeMap<u64, (u64, Decoded)>,
    /// Insertion number → image id, oldest first.
    pixmap_order: BTreeMap<u64, u64>,
    /// Bytes the pixmap cache holds: 4 per pixel plus [`PIXMAP_ENTRY_OVERHEAD`] per entry.
    pixmap_bytes: u64,
    seq: u64,
    /// Palette cache: palette id → (insertion number, colours).
    palettes: BTreeMap<u64, (u64, Rc<Vec<u32>>)>,
    /// Insertion number → palette id, oldest first.
    palette_order: BTreeMap<u64, u64>,
    /// Colours the palette cache holds in all.
    palette_entries: u64,
    pub glz: glz::Decoder,
}

/// Bytes a cached image is counted as.
fn pixmap_cost(d: &Decoded) -> u64 {
    (d.raster.px.len() as u64)
        .saturating_mul(4)
        .saturating_add(PIXMAP_ENTRY_OVERHEAD)
}

impl Caches {
    /// Caches with decoder limits `limits` and the default budgets for them.
    pub fn new(limits: Limits) -> Caches {
        Caches::with_limits(CanvasLimits::from_codec(limits))
    }

    /// Caches with every budget given.
    pub fn with_limits(climits: CanvasLimits) -> Caches {
        let limits = climits.codec;
        Caches {
            limits,
            climits,
            pixmaps: BTreeMap::new(),
            pixmap_order: BTreeMap::new(),
            pixmap_bytes: 0,
            seq: 0,
            palettes: BTreeMap::new(),
            palette_order: BTreeMap::new(),
            palette_entries: 0,
            glz: glz::Decoder::new(limits, climits.max_glz_window_pixels),
        }
    }

    pub fn clear_pixmaps(&mut self) {
        self.pixmaps.clear();
        self.pixmap_order.clear();
        self.pixmap_bytes = 0;
    }

    pub fn remove_pixmap(&mut self, id: u64) {
        if let Some((seq, d)) = self.pixmaps.remove(&id) {
            self.pixmap_order.remove(&seq);
            self.pixmap_bytes = self.pixmap_bytes.saturating_sub(pixmap_cost(&d));
        }
    }

    pub fn clear_palettes(&mut self) {
        self.palettes.clear();
        self.palette_order.clear();
        self.palette_entries = 0;
    }

    pub fn remove_palette(&mut self, id: u64) {
        if let Some((seq, p)) = self.palettes.remove(&id) {
            self.palette_order.remove(&seq);
            self.palette_entries = self.palette_entries.saturating_sub(p.len() as u64);
        }
    }

    /// Number of cached pixmaps.
    pub fn pixmap_count(&self) -> usize {
        self.pixmaps.len()
    }

    /// Bytes the pixmap cache is counted as holding (pixels and per-entry overhead).
    pub fn pixmap_bytes(&self) -> u64 {
        self.pixmap_bytes
    }

    /// Number of cached palettes.
    pub fn palette_count(&self) -> usize {
        self.palettes.len()
    }

    /// Colours the palette cache holds in all.
    pub fn palette_entries(&self) -> u64 {
        self.palette_entries
    }

    fn put_pixmap(&mut self, id: u64, d: Decoded) {
        self.remove_pixmap(id);
        let cost = pixmap_cost(&d);
        let (max_bytes, max_entries) = (
            self.climits.max_pixmap_bytes,
            self.climits.max_pixmap_entries,
        );
        if cost > max_bytes || max_entries == 0 {
            // Larger than the whole cache: drawn, not kept (a later FROM_CACHE misses).
            return;
        }
        while self.pixmap_bytes + cost > max_bytes || self.pixmaps.len() >= max_entries {
            let Some((_, old)) = self.pixmap_order.pop_first() else {
                break;
            };
            if let Some((_, o)) = self.pixmaps.remove(&old) {
                self.pixmap_bytes = self.pixmap_bytes.saturating_sub(pixmap_cost(&o));
            }
        }
        self.seq += 1;
        self.pixmap_bytes += cost;
        self.pixmap_order.insert(self.seq, id);
        self.pixmaps.insert(id, (self.seq, d));
    }

    fn put_palette(&mut self, id: u64, ents: Rc<Vec<u32>>) {
        self.remove_palette(id);
        let n = ents.len() as u64;
        let (max_entries, max_palettes) =
            (self.climits.max_palette_entries, self.climits.max_palettes);
        if n > max_entries || max_palettes == 0 {
            return;
        }
        while self.palette_entries + n > max_entries || self.palettes.len() >= max_palettes {
            let Some((_, old)) = self.palette_order.pop_first() else {
                break;
            };
            if let Some((_, p)) = self.palettes.remove(&old) {
                self.palette_entries = self.palette_entries.saturating_sub(p.len() as u64);
            }
        }
        self.seq += 1;
        self.palette_entries += n;
        self.palette_order.insert(self.seq, id);
        self.palettes.insert(id, (self.seq, ents));
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
                .map(|(_, p)| p.clone())
                .ok_or(CanvasError::MissingPalette(id));
        }
        let Some(p) = inline else {
            return Ok(Rc::new(Vec::new()));
        };
        let ents = Rc::new(p.ents.clone());
        if flags.contains(BitmapFlags::PAL_CACHE_ME) {
            self.put_palette(p.unique, ents.clone());
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
                if (b.x as u64).saturating_mul(b.y as u64) > limits.max_pixels {
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

/// A draw's mask image, read pixel by pixel (never expanded to a flag per pixel).
pub(crate) enum MaskImage {
    /// A 1-bit bitmap, rows top first.
    Bits { pix: Pixmap, msb_first: bool },
    /// Any other image: a pixel is set when its colour is not black.
    Raster(Rc<Raster>),
}

impl MaskImage {
    /// Whether the mask pixel at (x, y) is set; `None` outside the mask.
    #[inline]
    pub(crate) fn get(&self, x: i64, y: i64) -> Option<bool> {
        match self {
            MaskImage::Bits { pix, msb_first } => {
                if x < 0 || y < 0 || x >= pix.width() as i64 || y >= pix.height() as i64 {
                    return None;
                }
                let byte = *pix.row(y as u32).get(x as usize / 8)?;
                let bit = if *msb_first { 7 - (x % 8) } else { x % 8 };
                Some(byte >> bit & 1 == 1)
            }
            MaskImage::Raster(r) => r.raw(x, y).map(|p| p & 0x00ff_ffff != 0),
        }
    }
}

/// A mask image: 1-bit bitmaps as bits (checked against [`Limits`] like any image, and kept in
/// the pixmap cache for `CACHE_ME` as white on black, counted by the bytes held), other images
/// decoded through the caches.
pub(crate) fn mask_image(img: &Image, caches: &mut Caches) -> Result<MaskImage, CanvasError> {
    if let ImageData::Bitmap(b) = &img.data {
        let fmt = PixelFormat::from_spice_bitmap_fmt(b.format.to_raw());
        if let Some(f @ (PixelFormat::Pal1Le | PixelFormat::Pal1Be)) = fmt {
            if (b.x as u64).saturating_mul(b.y as u64) > caches.limits.max_pixels {
                return Err(CanvasError::TooLarge);
            }
            let pix = Pixmap::from_data(b.x, b.y, f, b.stride as usize, b.data.to_vec())?;
            let pix = if b.flags.contains(BitmapFlags::TOP_DOWN) {
                pix
            } else {
                pix.flipped_vertically()
            };
            let mask = MaskImage::Bits {
                pix,
                msb_first: f == PixelFormat::Pal1Be,
            };
            if img.flags.contains(ImageFlags::CACHE_ME) {
                // Kept for FROM_CACHE masks, as white on black.
                let mut px = Vec::with_capacity(b.x as usize * b.y as usize);
                for y in 0..b.y as i64 {
                    px.extend(
                        (0..b.x as i64)
                            .map(|x| mask.get(x, y) == Some(true))
                            .map(|s| if s { 0x00ff_ffff } else { 0 }),
                    );
                }
                let r = Raster {
                    width: b.x,
                    height: b.y,
                    alpha: false,
                    px,
                };
                caches.put_pixmap(
                    img.id,
                    Decoded {
                        raster: Rc::new(r),
                        lossy: false,
                    },
                );
            }
            return Ok(mask);
        }
    }
    Ok(MaskImage::Raster(caches.decode(img)?.raster))
}
