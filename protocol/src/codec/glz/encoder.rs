//! The GLZ encoder and its shared dictionary, as spice-server's glz-encoder.c and
//! glz-encoder-dict.c behave with one encoder thread.
//!
//! The dictionary is a window of the most recent images (at most `window_pixels` pixels), each
//! image a list of segments (one per data chunk); a 2^20-entry hash of 3-unit words points into
//! segments. Segment slots are recycled through a free list exactly as the reference does,
//! because stale hash entries name slots and whether they still match depends on what the slot
//! holds now. The pixels of every image in the window are kept (the server keeps the drawables
//! alive for the same reason).

use std::collections::VecDeque;

use super::super::lz::ImageType;
use super::super::{CodecError, PixelFormat, Pixmap};
use super::{MAGIC, VERSION};

const CODEC: &str = "glz";
const NULL_SEG: u32 = u32::MAX;
const INIT_SEGS: usize = 1000;
const HASH_BITS: u32 = 20;
const MAX_COPY: usize = 32;
const MAX_PIXEL_SHORT_DISTANCE: u64 = 1 << 12;
const MAX_PIXEL_MEDIUM_DISTANCE: u64 = 1 << 17;
const MAX_PIXEL_LONG_DISTANCE: u64 = 1 << 25;
const MAX_IMAGE_DIST: u64 = (1 << 24) - 1;
/// Largest window the reference accepts (LZ_MAX_WINDOW_SIZE).
pub const MAX_WINDOW_PIXELS: u32 = 1 << 25;

#[derive(Debug, Clone)]
struct Seg {
    /// Id of the image the slot holds (None: never used or freed).
    image: Option<u64>,
    /// Unit range in the image's data.
    start: usize,
    end: usize,
    pixels_num: u32,
    pixels_so_far: u64,
    next: u32,
}

#[derive(Debug, Clone)]
struct WinImage {
    id: u64,
    ty: ImageType,
    size: u32,
    first_seg: u32,
    alive: bool,
    /// Units: palette bytes, raw RGB16, or `b | g << 8 | r << 16 | a << 24`.
    data: Vec<u32>,
}

/// What a coding pass compares, hashes and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Palette,
    Rgb16,
    Rgb,
    Alpha,
}

impl Pass {
    fn key(self, v: u32) -> u32 {
        match self {
            Pass::Palette => v,
            Pass::Rgb16 => v & 0x7fff,
            Pass::Rgb => v & 0x00ff_ffff,
            Pass::Alpha => v >> 24,
        }
    }

    /// Units a reference must match before its encoded size is considered.
    fn min_ref(self) -> usize {
        match self {
            Pass::Palette | Pass::Alpha => 4,
            Pass::Rgb16 | Pass::Rgb => 2,
        }
    }

    /// References at least this long are always worth it.
    fn max_ref_size(self) -> usize {
        match self {
            Pass::Palette | Pass::Alpha => 7,
            Pass::Rgb16 => 3,
            Pass::Rgb => 2,
        }
    }
}

/// A GLZ encoder with its dictionary (spice-server keeps one per client, shared by the
/// client's display channels).
#[derive(Debug, Clone)]
pub struct Encoder {
    window_limit: u32,
    segs: Vec<Seg>,
    free_head: u32,
    used_segs_head: u32,
    used_segs_tail: u32,
    /// The window, oldest first; ids are consecutive.
    images: VecDeque<WinImage>,
    pixels_so_far: u64,
    next_id: u64,
    /// Per hash: (segment slot, unit index in the segment).
    table: Vec<(u32, u32)>,
}

impl Encoder {
    /// A dictionary whose window holds `window_pixels` pixels (the client's
    /// `glz_dictionary_window_size`), at most [`MAX_WINDOW_PIXELS`].
    pub fn new(window_pixels: u32) -> Result<Encoder, CodecError> {
        Self::with_first_id(window_pixels, 0)
    }

    /// As [`Encoder::new`], numbering images from `first_id` (a dictionary restored after
    /// migration continues the old numbering).
    pub fn with_first_id(window_pixels: u32, first_id: u64) -> Result<Encoder, CodecError> {
        if window_pixels > MAX_WINDOW_PIXELS {
            return Err(CodecError::TooLarge {
                codec: CODEC,
                width: window_pixels,
                height: 1,
                limit: MAX_WINDOW_PIXELS as u64,
            });
        }
        let segs = (0..INIT_SEGS)
            .map(|i| Seg {
                image: None,
                start: 0,
                end: 0,
                pixels_num: 0,
                pixels_so_far: 0,
                next: if i + 1 < INIT_SEGS {
                    i as u32 + 1
                } else {
                    NULL_SEG
                },
            })
            .collect();
        Ok(Encoder {
            window_limit: window_pixels,
            segs,
            free_head: 0,
            used_segs_head: NULL_SEG,
            used_segs_tail: NULL_SEG,
            images: VecDeque::new(),
            pixels_so_far: 0,
            next_id: first_id,
            table: vec![(0, 0); 1 << HASH_BITS],
        })
    }

    /// The id the next encoded image gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Ids of the images in the window.
    pub fn window_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.images.iter().map(|i| i.id)
    }

    /// Stop referencing image `id` (glz_enc_dictionary_remove_image: the server calls it when
    /// the drawable behind the image is freed). It still occupies the window until it ages
    /// out.
    pub fn remove_image(&mut self, id: u64) {
        if let Some(img) = self.images.iter_mut().find(|i| i.id == id) {
            img.alive = false;
        }
    }

    /// Encode `img` (one data chunk) as the next image of the dictionary; returns its id and
    /// the GLZ payload (what a SPICE_IMAGE_TYPE_GLZ_RGB image carries after `data_size`).
    /// Formats: 16BIT, 24BIT, 32BIT, RGBA (what spice-server sends as GLZ) and the palette
    /// formats; rows in `img`'s order, `top_down` recorded in the header.
    pub fn encode(&mut self, img: &Pixmap, top_down: bool) -> Result<(u64, Vec<u8>), CodecError> {
        self.encode_chunks(img, top_down, &[img.height()])
    }

    /// [`Encoder::encode`] for a bitmap in several chunks of `chunk_rows[i]` rows (each is a
    /// dictionary segment; the output depends on the split).
    pub fn encode_chunks(
        &mut self,
        img: &Pixmap,
        top_down: bool,
        chunk_rows: &[u32],
    ) -> Result<(u64, Vec<u8>), CodecError> {
        let fmt = img.format();
        let ty = match ImageType::for_format(fmt) {
            Some(t) if !matches!(t, ImageType::A8 | ImageType::Xxxa) => t,
            _ => {
                return Err(CodecError::UnsupportedFormat {
                    codec: CODEC,
                    format: fmt,
                })
            }
        };
        let (w, h) = (img.width(), img.height());
        if chunk_rows.iter().map(|&n| n as u64).sum::<u64>() != h as u64 || chunk_rows.contains(&0)
        {
            return Err(CodecError::BadPixmap {
                what: "chunk rows do not add up to the height",
            });
        }
        let (stride, size, row_units) = match fmt {
            PixelFormat::Pal1Le
            | PixelFormat::Pal1Be
            | PixelFormat::Pal4Le
            | PixelFormat::Pal4Be
            | PixelFormat::Pal8 => {
                let rb = img.row_bytes() as u64;
                let ppb = 8 / fmt.bits_per_pixel() as u64;
                (rb, rb * ppb * h as u64, rb as usize)
            }
            _ => (fmt.row_bytes(w), w as u64 * h as u64, w as usize),
        };
        if size > self.window_limit as u64 || w > i32::MAX as u32 || h > i32::MAX as u32 {
            return Err(CodecError::TooLarge {
                codec: CODEC,
                width: w,
                height: h,
                limit: self.window_limit as u64,
            });
        }
        let size = size as u32;
        let data = units(img);

        // Make room in the window, then add the image.
        let new_head = self.new_head(size);
        self.remove_head(new_head);
        let id = self.next_id;
        self.next_id += 1;
        let mut seg_ids = Vec::with_capacity(chunk_rows.len());
        let mut start = 0;
        for &rows in chunk_rows {
            let slot = self.alloc_seg();
            // The reference computes this in 32-bit unsigned arithmetic (it wraps for very
            // large images); so does the window accounting that depends on it.
            let pixels_num = size.wrapping_mul(rows) / h;
            let end = start + rows as usize * row_units;
            self.segs[slot as usize] = Seg {
                image: Some(id),
                start,
                end,
                pixels_num,
                pixels_so_far: self.pixels_so_far,
                next: NULL_SEG,
            };
            self.pixels_so_far += pixels_num as u64;
            if let Some(&prev) = seg_ids.last() {
                self.segs[prev as usize].next = slot;
            }
            seg_ids.push(slot);
            start = end;
        }
        let first_seg = seg_ids[0];
        let last_seg = seg_ids[seg_ids.len() - 1];
        if self.used_segs_tail == NULL_SEG {
            self.used_segs_head = first_seg;
        } else {
            self.segs[self.used_segs_tail as usize].next = first_seg;
        }
        self.used_segs_tail = last_seg;
        let (head_seg, win_head_dist) = match new_head {
            Some(_) => {
                let head = &self.images[0];
                (head.first_seg, (id - head.id) as u32)
            }
            None => (first_seg, 0),
        };
        self.images.push_back(WinImage {
            id,
            ty,
            size,
            first_seg,
            alive: true,
            data,
        });

        let mut out = Vec::with_capacity(img.data().len() / 2 + 64);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.push(ty as u8 | (top_down as u8) << 4);
        for v in [w, h, stride as u32] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&win_head_dist.to_be_bytes());

        let ppb = match fmt {
            PixelFormat::Pal1Le | PixelFormat::Pal1Be => 8,
            PixelFormat::Pal4Le | PixelFormat::Pal4Be => 2,
            _ => 1,
        };
        let passes: &[Pass] = match ty {
            ImageType::Rgba => &[Pass::Rgb, Pass::Alpha],
            ImageType::Rgb16 => &[Pass::Rgb16],
            ImageType::Rgb24 | ImageType::Rgb32 => &[Pass::Rgb],
            _ => &[Pass::Palette],
        };
        for &pass in passes {
            let mut c = Compressor {
                dict: self,
                pass,
                ppb,
                cur: id,
                head_pso: 0,
                out,
                last_copy: 0,
                hashed: [0; 8],
                // Far from any position (`i - hashed_from` wraps to a large number).
                hashed_from: usize::MAX / 2,
                touched: 0,
            };
            c.head_pso = c.dict.segs[head_seg as usize].pixels_so_far;
            c.compress(&seg_ids);
            out = c.out;
        }
        Ok((id, out))
    }

    /// The oldest image that stays when `size` more pixels join the window (index into
    /// `images`), or None when the window must be emptied or is empty.
    fn new_head(&self, size: u32) -> Option<usize> {
        if self.images.is_empty() {
            return None;
        }
        let head = &self.segs[self.used_segs_head as usize];
        let tail = &self.segs[self.used_segs_tail as usize];
        // 32-bit arithmetic, as the reference.
        let mut win =
            (tail.pixels_num as u64 + tail.pixels_so_far).wrapping_sub(head.pixels_so_far) as u32;
        let mut i = self
            .images
            .iter()
            .position(|im| Some(im.id) == head.image)?;
        while win.wrapping_add(size) > self.window_limit {
            let im = self.images.get(i)?;
            win = win.wrapping_sub(im.size);
            i += 1;
        }
        (i < self.images.len()).then_some(i)
    }

    /// Drop images before index `keep` (all if None), returning their segment slots to the
    /// free list.
    fn remove_head(&mut self, keep: Option<usize>) {
        let n = keep.unwrap_or(self.images.len());
        for _ in 0..n {
            let Some(img) = self.images.pop_front() else {
                break;
            };
            // The image's slots go to the front of the free list, in chain order.
            let mut last = img.first_seg;
            loop {
                let next = self.segs[last as usize].next;
                if next == NULL_SEG || self.segs[next as usize].image != Some(img.id) {
                    break;
                }
                last = next;
            }
            let mut s = img.first_seg;
            loop {
                let next = self.segs[s as usize].next;
                self.segs[s as usize].image = None;
                if s == last {
                    break;
                }
                s = next;
            }
            self.segs[last as usize].next = self.free_head;
            self.free_head = img.first_seg;
        }
        match self.images.front() {
            None => {
                self.used_segs_head = NULL_SEG;
                self.used_segs_tail = NULL_SEG;
            }
            Some(front) => self.used_segs_head = front.first_seg,
        }
    }

    fn alloc_seg(&mut self) -> u32 {
        if self.free_head == NULL_SEG {
            // Double the slots; the new ones become the free list.
            let old = self.segs.len();
            let new = old * 2;
            for i in old..new {
                self.segs.push(Seg {
                    image: None,
                    start: 0,
                    end: 0,
                    pixels_num: 0,
                    pixels_so_far: 0,
                    next: if i + 1 < new { i as u32 + 1 } else { NULL_SEG },
                });
            }
            self.free_head = old as u32;
        }
        let slot = self.free_head;
        self.free_head = self.segs[slot as usize].next;
        slot
    }

    fn image(&self, id: u64) -> Option<&WinImage> {
        let front = self.images.front()?.id;
        self.images.get(id.checked_sub(front)? as usize)
    }
}

/// The image's units in row order (see [`WinImage::data`]).
fn units(img: &Pixmap) -> Vec<u32> {
    let n = match img.format() {
        PixelFormat::Rgb32 | PixelFormat::Rgba | PixelFormat::Rgb24 | PixelFormat::Rgb16 => {
            img.width() as usize
        }
        _ => img.row_bytes(),
    };
    let mut v = vec![0u32; n * img.height() as usize];
    for (y, out) in (0..img.height()).zip(v.chunks_exact_mut(n.max(1))) {
        let row = img.row(y);
        // Whole-pixel loads into a preallocated row, which the compiler vectorises.
        match img.format() {
            PixelFormat::Rgb32 | PixelFormat::Rgba => {
                for (o, p) in out.iter_mut().zip(row.chunks_exact(4)) {
                    *o = u32::from_le_bytes(p.try_into().unwrap_or_default());
                }
            }
            PixelFormat::Rgb24 => {
                for (o, p) in out.iter_mut().zip(row.chunks_exact(3)) {
                    *o = p[0] as u32 | (p[1] as u32) << 8 | (p[2] as u32) << 16;
                }
            }
            PixelFormat::Rgb16 => {
                for (o, p) in out.iter_mut().zip(row.chunks_exact(2)) {
                    *o = u16::from_le_bytes([p[0], p[1]]) as u32;
                }
            }
            _ => {
                for (o, &b) in out.iter_mut().zip(row) {
                    *o = b as u32;
                }
            }
        }
    }
    v
}

/// The reference's hash step: `h * 33 ^ c`.
#[inline(always)]
fn mix(h: u32, c: u32) -> u32 {
    (h << 5).wrapping_add(h) ^ c
}

const HASH_INIT: u32 = 5381;
const HASH_MASK: u32 = (1 << HASH_BITS) - 1;

/// Pass kinds as const generic parameters of [`Compressor`]'s hot functions (so that every
/// per-unit choice is made at compile time).
const PALETTE: u8 = 0;
const RGB16: u8 = 1;
const RGB: u8 = 2;
const ALPHA: u8 = 3;

/// The pass of a [`Compressor`] const parameter.
const fn pass_of(p: u8) -> Pass {
    match p {
        PALETTE => Pass::Palette,
        RGB16 => Pass::Rgb16,
        RGB => Pass::Rgb,
        _ => Pass::Alpha,
    }
}

/// Bits of a unit that its key keeps: two units have equal keys when they agree on these.
const fn key_mask(p: u8) -> u32 {
    match p {
        RGB16 => 0x7fff,
        RGB => 0x00ff_ffff,
        ALPHA => 0xff00_0000,
        _ => u32::MAX,
    }
}

/// One hash step over unit `v` of pass `P` (one to three bytes mixed in).
#[inline(always)]
fn mix_unit<const P: u8>(h: u32, v: u32) -> u32 {
    let k = pass_of(P).key(v);
    match P {
        RGB16 => mix(mix(h, k & 0xff), (k >> 8) & 0x7f),
        RGB => mix(mix(mix(h, (k >> 16) & 0xff), (k >> 8) & 0xff), k & 0xff),
        _ => mix(h, k),
    }
}

/// The hash of units `i..i + 3`.
#[inline(always)]
fn hash<const P: u8>(data: &[u32], i: usize) -> usize {
    let u = &data[i..i + 3];
    let h = mix_unit::<P>(mix_unit::<P>(mix_unit::<P>(HASH_INIT, u[0]), u[1]), u[2]);
    (h & HASH_MASK) as usize
}

/// Hashes of positions `i..i + 8` (units up to `i + 10`), lane by lane so that the compiler
/// computes them with vector instructions.
#[inline]
fn hash8<const P: u8>(data: &[u32], i: usize) -> [u32; 8] {
    let u = &data[i..i + 10];
    let mut h = [HASH_INIT; 8];
    for j in 0..3 {
        for k in 0..8 {
            h[k] = mix_unit::<P>(h[k], u[j + k]);
        }
    }
    h.map(|h| h & HASH_MASK)
}

/// The first `k < x.len()` where `x[k]` and `y[k]` differ in `mask`, else `x.len()`.
#[inline]
fn mismatch(x: &[u32], y: &[u32], mask: u32) -> usize {
    let y = &y[..x.len()];
    // Blocks of 8 compared without early exit (vectorised); in the block with a difference,
    // a mask of the differing units locates the first.
    let mut k = 0;
    for (bx, by) in x.chunks_exact(8).zip(y.chunks_exact(8)) {
        let pairs = bx.iter().zip(by);
        if pairs.clone().fold(0, |d, (p, q)| d | (p ^ q)) & mask != 0 {
            let m = (pairs.enumerate()).fold(0u32, |m, (i, (p, q))| {
                m | (((p ^ q) & mask != 0) as u32) << i
            });
            return k + m.trailing_zeros() as usize;
        }
        k += 8;
    }
    k + (x[k..].iter().zip(&y[k..]))
        .take_while(|(p, q)| (*p ^ *q) & mask == 0)
        .count()
}

/// The first `k < x.len()` where `x[k]` differs from `v` in `mask`, else `x.len()`.
#[inline]
fn mismatch_value(x: &[u32], v: u32, mask: u32) -> usize {
    let mut k = 0;
    for block in x.chunks_exact(8) {
        if block.iter().fold(0, |d, &p| d | (p ^ v)) & mask != 0 {
            let m = (block.iter().enumerate())
                .fold(0u32, |m, (i, &p)| m | (((p ^ v) & mask != 0) as u32) << i);
            return k + m.trailing_zeros() as usize;
        }
        k += 8;
    }
    k + x[k..].iter().take_while(|&&p| (p ^ v) & mask == 0).count()
}

/// One coding pass over the current image.
struct Compressor<'a> {
    dict: &'a mut Encoder,
    pass: Pass,
    ppb: u64,
    cur: u64,
    /// pixels_so_far of the encoder's window head segment.
    head_pso: u64,
    out: Vec<u8>,
    last_copy: usize,
    /// Hashes of positions `hashed_from..hashed_from + 8` of the current image, computed
    /// together in stretches of literals (see [`Compressor::probe_hash`]).
    hashed: [u32; 8],
    hashed_from: usize,
    /// Sink for the loads that bring hash table entries into the cache ahead of use.
    touched: u32,
}

impl Compressor<'_> {
    fn data(&self, id: u64) -> &[u32] {
        self.dict.image(id).map(|i| &i.data[..]).unwrap_or(&[])
    }

    #[inline(always)]
    fn literal<const P: u8>(&mut self, v: u32) {
        match P {
            PALETTE => self.out.push(v as u8),
            ALPHA => self.out.push((v >> 24) as u8),
            RGB16 => self.out.extend_from_slice(&[(v >> 8) as u8, v as u8]),
            _ => self
                .out
                .extend_from_slice(&[v as u8, (v >> 8) as u8, (v >> 16) as u8]),
        }
    }

    /// One literal, continuing the open literal run of `copy` units.
    #[inline(always)]
    fn literal_run<const P: u8>(&mut self, v: u32, copy: &mut usize) {
        self.literal::<P>(v);
        *copy += 1;
        if *copy == MAX_COPY {
            *copy = 0;
            self.open_copy((MAX_COPY - 1) as u8);
        }
    }

    fn open_copy(&mut self, count: u8) {
        self.out.push(count);
        self.last_copy = self.out.len() - 1;
    }

    fn close_copy(&mut self, copy: usize) {
        if copy > 0 {
            self.out[self.last_copy] = (copy - 1) as u8;
        } else {
            self.out.pop();
        }
    }

    /// The hash of probe position `i` of the current image. In a stretch of literals
    /// (`literals`: the previous position was one) probes are consecutive: hashes are then
    /// computed eight at a time, and their table entries loaded together, so that the cache
    /// misses on the (large) table overlap instead of following one another.
    #[inline(always)]
    fn probe_hash<const P: u8>(&mut self, data: &[u32], i: usize, literals: bool) -> usize {
        if literals {
            let k = i.wrapping_sub(self.hashed_from);
            if k < 8 {
                return self.hashed[k] as usize;
            }
            if i + 10 <= data.len() {
                self.hashed = hash8::<P>(data, i);
                self.hashed_from = i;
                let table = &self.dict.table;
                let t = self.hashed.iter().fold(0, |t, &h| t ^ table[h as usize].1);
                self.touched ^= t;
                return self.hashed[0] as usize;
            }
        }
        hash::<P>(data, i)
    }

    fn compress(&mut self, seg_ids: &[u32]) {
        // The current image's units are only read; take them out while the pass borrows the
        // dictionary mutably, and put them back.
        let data = match self.dict.images.back_mut() {
            Some(img) => std::mem::take(&mut img.data),
            None => return,
        };
        match self.pass {
            Pass::Palette => self.compress_with::<PALETTE>(seg_ids, &data),
            Pass::Rgb16 => self.compress_with::<RGB16>(seg_ids, &data),
            Pass::Rgb => self.compress_with::<RGB>(seg_ids, &data),
            Pass::Alpha => self.compress_with::<ALPHA>(seg_ids, &data),
        }
        if let Some(img) = self.dict.images.back_mut() {
            img.data = data;
        }
    }

    fn compress_with<const P: u8>(&mut self, seg_ids: &[u32], data: &[u32]) {
        let mut k = 0;
        while let Some(&slot) = seg_ids.get(k) {
            let s = &self.dict.segs[slot as usize];
            let (start, end) = (s.start, s.end);
            if end - start >= 4 {
                break;
            }
            if end > start {
                self.open_copy((end - start - 1) as u8);
                for &v in &data[start..end] {
                    self.literal::<P>(v);
                }
            }
            k += 1;
        }
        let Some(&first) = seg_ids.get(k) else { return };
        let start = self.dict.segs[first as usize].start;
        self.open_copy((MAX_COPY - 1) as u8);
        let h = hash::<P>(data, start);
        self.dict.table[h] = (first, 0);
        self.literal::<P>(data[start]);
        self.literal::<P>(data[start + 1]);
        self.compress_segment::<P>(first, data, 2, 2);
        for &slot in &seg_ids[k + 1..] {
            self.compress_segment::<P>(slot, data, 0, 0);
        }
    }

    /// Whether the segment in `slot` may be referenced from segment `src`.
    fn valid_ref(&self, slot: u32, src: u32) -> bool {
        if slot == src {
            return true;
        }
        let (Some(r), Some(s)) = (
            self.dict.segs.get(slot as usize),
            self.dict.segs.get(src as usize),
        ) else {
            return false;
        };
        let Some(img) = r.image.and_then(|id| self.dict.image(id)) else {
            return false;
        };
        let cur_ty = self.dict.image(self.cur).map(|i| i.ty);
        img.alive
            && Some(img.ty) == cur_ty
            && r.pixels_so_far <= s.pixels_so_far
            && self.head_pso <= r.pixels_so_far
    }

    fn compress_segment<const P: u8>(
        &mut self,
        slot: u32,
        data: &[u32],
        from: usize,
        mut copy: usize,
    ) {
        let pass = pass_of(P);
        let mask = key_mask(P);
        let (base, seg_end) = {
            let s = &self.dict.segs[slot as usize];
            (s.start, s.end)
        };
        let len = (seg_end - base) as isize;
        let bound = len - 2;
        let limit = len - 6;
        if copy == 0 {
            self.open_copy((MAX_COPY - 1) as u8);
        }
        let same = |a: usize, b: usize| (data[a] ^ data[b]) & mask == 0;
        let mut ip = from as isize;
        // Whether the previous position was a literal.
        let mut literals = false;
        while ip < limit {
            let anchor = ip;
            let a = base + anchor as usize;
            let found: Option<(usize, u64, u64)>; // (len, image_dist, pixel_dist)
            if ip > 0 && same(a - 1, a) && same(a, a + 1) && same(a + 1, a + 2) {
                // A run: the units from ip + 3 (before the bound) equal to unit ip + 2.
                let x = data[a + 2];
                let n = if ip + 3 < bound {
                    mismatch_value(&data[a + 3..base + bound as usize], x, mask)
                } else {
                    0
                };
                found = Some((3 + n, 0, 1));
            } else {
                let h = self.probe_hash::<P>(data, a, literals);
                let (rslot, rpix) = self.dict.table[h];
                let mut m = None;
                if self.valid_ref(rslot, slot) {
                    m = self.do_match::<P>(
                        rslot,
                        rpix as usize,
                        slot,
                        anchor as usize,
                        bound,
                        data,
                    );
                }
                self.dict.table[h] = (slot, anchor as u32);
                found = m;
            }
            let Some((n, image_dist, mut pix_dist)) = found else {
                self.literal_run::<P>(data[a], &mut copy);
                ip = anchor + 1;
                literals = true;
                continue;
            };
            literals = false;
            if image_dist == 0 {
                pix_dist -= 1;
            }
            self.close_copy(copy);
            copy = 0;
            let mut p = anchor + n as isize - 2;
            let enc_len = match pass {
                Pass::Rgb16 => n - 1,
                Pass::Palette | Pass::Alpha => n - 2,
                Pass::Rgb => n,
            };
            self.encode_match(image_dist, pix_dist, enc_len);
            if pass == Pass::Palette || pass == Pass::Alpha || p > anchor {
                let h = hash::<P>(data, base + p as usize);
                self.dict.table[h] = (slot, p as u32);
            }
            p += 1;
            if pass != Pass::Rgb || p > anchor {
                let h = hash::<P>(data, base + p as usize);
                self.dict.table[h] = (slot, p as u32);
            }
            ip = p + 1;
            self.open_copy((MAX_COPY - 1) as u8);
        }
        while ip < len {
            self.literal_run::<P>(data[base + ip as usize], &mut copy);
            ip += 1;
        }
        self.close_copy(copy);
    }

    /// Length, image distance and pixel distance of a reference at `rpix` of segment `rslot`
    /// for the units at `ip` of segment `slot`, if it is worth encoding.
    #[inline(always)]
    fn do_match<const P: u8>(
        &self,
        rslot: u32,
        rpix: usize,
        slot: u32,
        ip: usize,
        ip_bound: isize,
        data: &[u32],
    ) -> Option<(usize, u64, u64)> {
        let pass = pass_of(P);
        let mask = key_mask(P);
        let rs = &self.dict.segs[rslot as usize];
        let s = &self.dict.segs[slot as usize];
        let ref_id = rs.image?;
        let ref_len = (rs.end - rs.start) as isize;
        let min = pass.min_ref();
        if rpix as isize > ref_len - min as isize {
            return None;
        }
        let rdata: &[u32] = if ref_id == self.cur {
            data
        } else {
            self.data(ref_id)
        };
        let (rbase, base) = (rs.start, s.start);
        let (r, x) = (&rdata[rbase + rpix..], &data[base + ip..]);
        if mismatch(&r[..min], &x[..min], mask) < min {
            return None;
        }
        let image_dist = self.cur - ref_id;
        let ppb = self.ppb;
        // Unsigned like the reference: a stale hash entry ahead of `ip` in a recycled slot
        // gives a huge distance, which is rejected below.
        let pix_dist = if image_dist == 0 {
            (ip as u64 * ppb + s.pixels_so_far).wrapping_sub(rpix as u64 * ppb + rs.pixels_so_far)
                / ppb
        } else {
            let first = self.dict.image(ref_id)?.first_seg;
            let fs = &self.dict.segs[first as usize];
            (rpix as u64 * ppb + rs.pixels_so_far).wrapping_sub(fs.pixels_so_far) / ppb
        };
        if pix_dist == 0 || pix_dist >= MAX_PIXEL_LONG_DISTANCE || image_dist > MAX_IMAGE_DIST {
            return None;
        }
        // Extend while both stay inside their bounds.
        let mut n = min;
        let room = (ip_bound - ip as isize).min(ref_len - rpix as isize);
        if room > n as isize {
            let room = room as usize;
            n += mismatch(&r[n..room], &x[n..room], mask);
        }
        if n > pass.max_ref_size() {
            return Some((n, image_dist, pix_dist));
        }
        let mut size = ref_encode_size(image_dist, pix_dist);
        match pass {
            Pass::Rgb16 => size /= 2,
            Pass::Rgb => size /= 3,
            _ => {}
        }
        if n < size + 1 {
            return None;
        }
        Some((n, image_dist, pix_dist))
    }

    fn encode_match(&mut self, image_dist: u64, pix_dist: u64, mut len: usize) {
        let long = if pix_dist < MAX_PIXEL_SHORT_DISTANCE {
            0
        } else {
            16
        };
        let lo = (pix_dist & 0x0f) as u8;
        if len < 7 {
            self.out.push(((len as u8) << 5) + long + lo);
        } else {
            self.out.push((7 << 5) + long + lo);
            len -= 7;
            while len >= 255 {
                self.out.push(255);
                len -= 255;
            }
            self.out.push(len as u8);
        }
        self.out.push((pix_dist >> 4) as u8);
        let d = image_dist;
        if pix_dist < MAX_PIXEL_SHORT_DISTANCE {
            let low6 = (d & 0x3f) as u8;
            if d < 1 << 6 {
                self.out.push(low6);
            } else if d < 1 << 14 {
                self.out
                    .extend_from_slice(&[(1 << 6) + low6, (d >> 6) as u8]);
            } else if d < 1 << 22 {
                self.out
                    .extend_from_slice(&[(1 << 7) + low6, (d >> 6) as u8, (d >> 14) as u8]);
            } else {
                self.out.extend_from_slice(&[
                    (3 << 6) + low6,
                    (d >> 6) as u8,
                    (d >> 14) as u8,
                    (d >> 22) as u8,
                ]);
            }
        } else {
            let medium = if pix_dist < MAX_PIXEL_MEDIUM_DISTANCE {
                0
            } else {
                32
            };
            let hi5 = ((pix_dist >> 12) & 31) as u8;
            if d == 0 {
                self.out.push(medium + hi5);
            } else if d < 1 << 8 {
                self.out
                    .extend_from_slice(&[medium + (1 << 6) + hi5, d as u8]);
            } else if d < 1 << 16 {
                self.out
                    .extend_from_slice(&[medium + (1 << 7) + hi5, d as u8, (d >> 8) as u8]);
            } else {
                self.out.extend_from_slice(&[
                    medium + (3 << 6) + hi5,
                    d as u8,
                    (d >> 8) as u8,
                    (d >> 16) as u8,
                ]);
            }
            if medium != 0 {
                self.out.push((pix_dist >> 17) as u8);
            }
        }
    }
}

/// Bytes a reference takes, not counting extra length bytes.
fn ref_encode_size(image_dist: u64, pix_dist: u64) -> usize {
    if pix_dist < MAX_PIXEL_SHORT_DISTANCE {
        match image_dist {
            d if d < 1 << 6 => 3,
            d if d < 1 << 14 => 4,
            d if d < 1 << 22 => 5,
            _ => 6,
        }
    } else {
        let base = match image_dist {
            0 => 3,
            d if d < 1 << 8 => 4,
            d if d < 1 << 16 => 5,
            _ => 6,
        };
        base + usize::from(pix_dist >= MAX_PIXEL_MEDIUM_DISTANCE)
    }
}
