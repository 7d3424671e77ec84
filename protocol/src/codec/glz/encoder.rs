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
    let mut v = Vec::with_capacity(img.width() as usize * img.height() as usize);
    for y in 0..img.height() {
        let row = img.row(y);
        match img.format() {
            PixelFormat::Rgb32 | PixelFormat::Rgba => v.extend(
                row.chunks_exact(4)
                    .map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]])),
            ),
            PixelFormat::Rgb24 => v.extend(
                row.chunks_exact(3)
                    .map(|p| p[0] as u32 | (p[1] as u32) << 8 | (p[2] as u32) << 16),
            ),
            PixelFormat::Rgb16 => v.extend(
                row.chunks_exact(2)
                    .map(|p| u16::from_le_bytes([p[0], p[1]]) as u32),
            ),
            _ => v.extend(row.iter().map(|&b| b as u32)),
        }
    }
    v
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
}

impl Compressor<'_> {
    fn data(&self, id: u64) -> &[u32] {
        self.dict.image(id).map(|i| &i.data[..]).unwrap_or(&[])
    }

    fn hash(&self, data: &[u32], i: usize) -> usize {
        let mut h: u32 = 5381;
        let mut mix = |c: u32| h = (h << 5).wrapping_add(h) ^ c;
        for &v in &data[i..i + 3] {
            let k = self.pass.key(v);
            match self.pass {
                Pass::Palette | Pass::Alpha => mix(k),
                Pass::Rgb16 => {
                    mix(k & 0xff);
                    mix((k >> 8) & 0x7f);
                }
                Pass::Rgb => {
                    mix((k >> 16) & 0xff);
                    mix((k >> 8) & 0xff);
                    mix(k & 0xff);
                }
            }
        }
        (h & ((1 << HASH_BITS) - 1)) as usize
    }

    fn literal(&mut self, v: u32) {
        match self.pass {
            Pass::Palette => self.out.push(v as u8),
            Pass::Alpha => self.out.push((v >> 24) as u8),
            Pass::Rgb16 => self.out.extend_from_slice(&[(v >> 8) as u8, v as u8]),
            Pass::Rgb => self
                .out
                .extend_from_slice(&[v as u8, (v >> 8) as u8, (v >> 16) as u8]),
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

    fn compress(&mut self, seg_ids: &[u32]) {
        // The current image's units are only read; take them out while the pass borrows the
        // dictionary mutably, and put them back.
        let data = match self.dict.images.back_mut() {
            Some(img) => std::mem::take(&mut img.data),
            None => return,
        };
        self.compress_with(seg_ids, &data);
        if let Some(img) = self.dict.images.back_mut() {
            img.data = data;
        }
    }

    fn compress_with(&mut self, seg_ids: &[u32], data: &[u32]) {
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
                    self.literal(v);
                }
            }
            k += 1;
        }
        let Some(&first) = seg_ids.get(k) else { return };
        let start = self.dict.segs[first as usize].start;
        self.open_copy((MAX_COPY - 1) as u8);
        let h = self.hash(data, start);
        self.dict.table[h] = (first, 0);
        self.literal(data[start]);
        self.literal(data[start + 1]);
        self.compress_segment(first, data, 2, 2);
        for &slot in &seg_ids[k + 1..] {
            self.compress_segment(slot, data, 0, 0);
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

    fn compress_segment(&mut self, slot: u32, data: &[u32], from: usize, mut copy: usize) {
        let pass = self.pass;
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
        let same = |a: usize, b: usize| pass.key(data[a]) == pass.key(data[b]);
        let mut ip = from as isize;
        while ip < limit {
            let anchor = ip;
            let a = base + anchor as usize;
            let found: Option<(usize, u64, u64)>; // (len, image_dist, pixel_dist)
            if ip > 0 && same(a - 1, a) && same(a, a + 1) && same(a + 1, a + 2) {
                let x = pass.key(data[a + 2]);
                let mut p = ip + 3;
                let mut n = 3;
                while p < bound {
                    let eq = pass.key(data[base + p as usize]) == x;
                    p += 1;
                    if !eq {
                        break;
                    }
                    n += 1;
                }
                found = Some((n, 0, 1));
            } else {
                let h = self.hash(data, a);
                let (rslot, rpix) = self.dict.table[h];
                let mut m = None;
                if self.valid_ref(rslot, slot) {
                    m = self.do_match(rslot, rpix as usize, slot, anchor as usize, bound, data);
                }
                self.dict.table[h] = (slot, anchor as u32);
                found = m;
            }
            let Some((n, image_dist, mut pix_dist)) = found else {
                self.literal(data[a]);
                ip = anchor + 1;
                copy += 1;
                if copy == MAX_COPY {
                    copy = 0;
                    self.open_copy((MAX_COPY - 1) as u8);
                }
                continue;
            };
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
                let h = self.hash(data, base + p as usize);
                self.dict.table[h] = (slot, p as u32);
            }
            p += 1;
            if pass != Pass::Rgb || p > anchor {
                let h = self.hash(data, base + p as usize);
                self.dict.table[h] = (slot, p as u32);
            }
            ip = p + 1;
            self.open_copy((MAX_COPY - 1) as u8);
        }
        while ip < len {
            self.literal(data[base + ip as usize]);
            ip += 1;
            copy += 1;
            if copy == MAX_COPY {
                copy = 0;
                self.open_copy((MAX_COPY - 1) as u8);
            }
        }
        self.close_copy(copy);
    }

    /// Length, image distance and pixel distance of a reference at `rpix` of segment `rslot`
    /// for the units at `ip` of segment `slot`, if it is worth encoding.
    fn do_match(
        &self,
        rslot: u32,
        rpix: usize,
        slot: u32,
        ip: usize,
        ip_bound: isize,
        data: &[u32],
    ) -> Option<(usize, u64, u64)> {
        let pass = self.pass;
        let rs = &self.dict.segs[rslot as usize];
        let s = &self.dict.segs[slot as usize];
        let ref_id = rs.image?;
        let ref_len = (rs.end - rs.start) as isize;
        if rpix as isize > ref_len - pass.min_ref() as isize {
            return None;
        }
        let rdata: &[u32] = if ref_id == self.cur {
            data
        } else {
            self.data(ref_id)
        };
        let (rbase, base) = (rs.start, s.start);
        let mut n = 0usize;
        while n < pass.min_ref() {
            if pass.key(rdata[rbase + rpix + n]) != pass.key(data[base + ip + n]) {
                return None;
            }
            n += 1;
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
        while ((ip + n) as isize) < ip_bound
            && ((rpix + n) as isize) < ref_len
            && pass.key(rdata[rbase + rpix + n]) == pass.key(data[base + ip + n])
        {
            n += 1;
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
