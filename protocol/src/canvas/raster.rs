//! Pixels and the per-pixel arithmetic of the canvas: [`Raster`] (a 32-bit image), raster
//! operations ([`Rop`], ternary rop3), pixman-style OVER blending with its rounding, and the
//! covered area of a draw ([`Region`]).
//!
//! Must not: cost more than O(pixels) per region operation; clip rectangles are swept once
//! per row (O(r log r + pixels)), never tested per pixel.

use crate::display::Ropd;
use crate::types::Rect;

/// A 32-bit image: `0xAARRGGBB` per pixel, rows top first, no padding.
///
/// `alpha` says whether the alpha byte means anything (ARGB, RGBA bitmaps); when it does not
/// (xRGB), reads through [`Raster::argb`] see it as opaque, as pixman reads `x8r8g8b8`.
#[derive(Clone, PartialEq, Eq)]
pub struct Raster {
    pub width: u32,
    pub height: u32,
    pub alpha: bool,
    pub px: Vec<u32>,
}

impl core::fmt::Debug for Raster {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Raster({}x{}{})",
            self.width,
            self.height,
            if self.alpha { " alpha" } else { "" }
        )
    }
}

impl Raster {
    /// A raster of `width * height` pixels of `fill`. The caller has checked the size.
    pub fn new(width: u32, height: u32, alpha: bool, fill: u32) -> Raster {
        Raster {
            width,
            height,
            alpha,
            px: vec![fill; width as usize * height as usize],
        }
    }

    /// From R, G, B, A bytes (as [`crate::codec::Pixmap::to_rgba8`] gives them).
    pub fn from_rgba8(width: u32, height: u32, alpha: bool, rgba: &[u8]) -> Raster {
        let px = rgba
            .chunks_exact(4)
            .map(|p| u32::from_be_bytes([p[3], p[0], p[1], p[2]]))
            .collect();
        Raster {
            width,
            height,
            alpha,
            px,
        }
    }

    /// The pixels as R, G, B, A bytes; alpha is 255 when the raster has none.
    pub fn to_rgba8(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.px.len() * 4);
        for &p in &self.px {
            let [a, r, g, b] = p.to_be_bytes();
            out.extend_from_slice(&[r, g, b, if self.alpha { a } else { 0xff }]);
        }
        out
    }

    /// The pixel at (x, y) as pixman reads it (opaque if the raster has no alpha), or `None`
    /// outside.
    #[inline]
    pub fn argb(&self, x: i64, y: i64) -> Option<u32> {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return None;
        }
        let p = self.px[y as usize * self.width as usize + x as usize];
        Some(if self.alpha { p } else { p | 0xff00_0000 })
    }

    /// The raw stored value at (x, y), or `None` outside.
    #[inline]
    pub fn raw(&self, x: i64, y: i64) -> Option<u32> {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return None;
        }
        Some(self.px[y as usize * self.width as usize + x as usize])
    }

    #[inline]
    pub(crate) fn idx(&self, x: i64, y: i64) -> usize {
        y as usize * self.width as usize + x as usize
    }

    /// A copy of the rectangle at (x, y) of size w x h; pixels outside are 0.
    pub fn sub(&self, x: i64, y: i64, w: u32, h: u32) -> Raster {
        let mut out = Raster::new(w, h, self.alpha, 0);
        for j in 0..h as i64 {
            for i in 0..w as i64 {
                if let Some(p) = self.raw(x + i, y + j) {
                    out.px[(j * w as i64 + i) as usize] = p;
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Raster operations.

/// The boolean operation of a ROP descriptor, on 32-bit values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopOp {
    Copy,
    Or,
    And,
    Xor,
    Clear,
    Set,
    Invert,
}

/// A binary raster operation `res = op(s', d')` where `s'`/`d'` are optionally inverted
/// inputs and the result is optionally inverted: exactly the sixteen SPICE_ROP_* the
/// reference canvas derives from a `ropd` (`ropd_descriptor_to_rop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rop {
    pub op: RopOp,
    pub inv_src: bool,
    pub inv_dst: bool,
    pub inv_res: bool,
}

/// Which operand of a draw a `ropd` inversion bit refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopInput {
    Src,
    Brush,
    Dest,
}

impl Rop {
    pub const COPY: Rop = Rop {
        op: RopOp::Copy,
        inv_src: false,
        inv_dst: false,
        inv_res: false,
    };

    /// The operation a `ropd` means when `src` is the operand drawn and `dst` the one drawn
    /// onto (fill: brush onto dest; copy: src onto dest; opaque: brush onto src).
    pub fn from_ropd(d: Ropd, src: RopInput, dst: RopInput) -> Rop {
        let bit = |i: RopInput| match i {
            RopInput::Src => Ropd::INVERS_SRC,
            RopInput::Brush => Ropd::INVERS_BRUSH,
            RopInput::Dest => Ropd::INVERS_DEST,
        };
        let inv_src = d.contains(bit(src));
        let inv_dst = d.contains(bit(dst));
        let inv_res = d.contains(Ropd::INVERS_RES);
        let op = if d.contains(Ropd::OP_PUT) {
            RopOp::Copy
        } else if d.contains(Ropd::OP_OR) {
            RopOp::Or
        } else if d.contains(Ropd::OP_AND) {
            RopOp::And
        } else if d.contains(Ropd::OP_XOR) {
            RopOp::Xor
        } else if d.contains(Ropd::OP_BLACKNESS) {
            RopOp::Clear
        } else if d.contains(Ropd::OP_WHITENESS) {
            RopOp::Set
        } else if d.contains(Ropd::OP_INVERS) {
            RopOp::Invert
        } else {
            return Rop::COPY;
        };
        match op {
            // The reference ignores the inversion bits for these.
            RopOp::Clear | RopOp::Set | RopOp::Invert => Rop {
                op,
                inv_src: false,
                inv_dst: false,
                inv_res: false,
            },
            RopOp::Copy => Rop {
                op,
                inv_src,
                inv_dst: false,
                inv_res,
            },
            _ => Rop {
                op,
                inv_src,
                inv_dst,
                inv_res,
            },
        }
    }

    #[inline]
    pub fn apply(self, s: u32, d: u32) -> u32 {
        let s = if self.inv_src { !s } else { s };
        let dd = if self.inv_dst { !d } else { d };
        let r = match self.op {
            RopOp::Copy => s,
            RopOp::Or => s | dd,
            RopOp::And => s & dd,
            RopOp::Xor => s ^ dd,
            RopOp::Clear => 0,
            RopOp::Set => 0xffff_ffff,
            RopOp::Invert => !d,
        };
        if self.inv_res {
            !r
        } else {
            r
        }
    }
}

/// A ternary raster operation (`rop3`, Windows-style): bit `(p << 2) | (s << 1) | d` of the
/// code is the result bit, for every bit of the 32-bit pixels.
#[inline]
pub fn rop3(code: u8, p: u32, s: u32, d: u32) -> u32 {
    let mut r = 0;
    for i in 0..8 {
        if code >> i & 1 == 1 {
            let pp = if i & 4 != 0 { p } else { !p };
            let ss = if i & 2 != 0 { s } else { !s };
            let dd = if i & 1 != 0 { d } else { !d };
            r |= pp & ss & dd;
        }
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Blending, with pixman's 8-bit rounding.

/// `a * b / 255` rounded as pixman's `MUL_UN8`.
#[inline]
pub fn mul_un8(a: u32, b: u32) -> u32 {
    let t = a * b + 0x80;
    ((t >> 8) + t) >> 8
}

/// Each channel of a premultiplied ARGB pixel times `m / 255`.
#[inline]
pub fn scale_argb(p: u32, m: u32) -> u32 {
    if m == 0xff {
        return p;
    }
    let c = |sh: u32| mul_un8(p >> sh & 0xff, m) << sh;
    c(0) | c(8) | c(16) | c(24)
}

/// Porter-Duff OVER of premultiplied ARGB `s` onto `d`.
#[inline]
pub fn over(s: u32, d: u32) -> u32 {
    let ia = 0xff - (s >> 24);
    if ia == 0 {
        return s;
    }
    let c = |sh: u32| ((s >> sh & 0xff) + mul_un8(d >> sh & 0xff, ia)).min(0xff) << sh;
    c(0) | c(8) | c(16) | c(24)
}

/// The Porter-Duff and additive operators of `pixman_op_t` (composite draws), on premultiplied
/// ARGB. Returns `None` for operators this canvas does not implement.
pub fn porter_duff(op: u8, s: u32, d: u32) -> Option<u32> {
    let sa = s >> 24;
    let da = d >> 24;
    // (Fa, Fb) as functions of the alphas; result = s*Fa + d*Fb.
    let (fa, fb): (u32, u32) = match op {
        0 => (0, 0),                  // CLEAR
        1 => (0xff, 0),               // SRC
        2 => (0, 0xff),               // DST
        3 => (0xff, 0xff - sa),       // OVER
        4 => (0xff - da, 0xff),       // OVER_REVERSE
        5 => (da, 0),                 // IN
        6 => (0, sa),                 // IN_REVERSE
        7 => (0xff - da, 0),          // OUT
        8 => (0, 0xff - sa),          // OUT_REVERSE
        9 => (da, 0xff - sa),         // ATOP
        10 => (0xff - da, sa),        // ATOP_REVERSE
        11 => (0xff - da, 0xff - sa), // XOR
        12 => (0xff, 0xff),           // ADD
        _ => return None,
    };
    let c = |sh: u32| (mul_un8(s >> sh & 0xff, fa) + mul_un8(d >> sh & 0xff, fb)).min(0xff) << sh;
    Some(c(0) | c(8) | c(16) | c(24))
}

// ---------------------------------------------------------------------------------------------
// Regions.

/// The pixels a draw touches: a rectangle (already inside its surface), and optionally which
/// of its pixels are in (clip rectangles, masks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub x: i64,
    pub y: i64,
    pub w: u32,
    pub h: u32,
    /// `w * h` flags, row by row; `None` = every pixel.
    pub mask: Option<Vec<bool>>,
}

impl Region {
    /// `r` intersected with the surface `0..sw x 0..sh`; `None` if empty.
    pub fn new(r: &Rect, sw: u32, sh: u32) -> Option<Region> {
        let l = (r.left as i64).max(0);
        let t = (r.top as i64).max(0);
        let rr = (r.right as i64).min(sw as i64);
        let b = (r.bottom as i64).min(sh as i64);
        if rr <= l || b <= t {
            return None;
        }
        Some(Region {
            x: l,
            y: t,
            w: (rr - l) as u32,
            h: (b - t) as u32,
            mask: None,
        })
    }

    /// Keep only pixels for which `keep(x, y)` holds.
    pub fn restrict(&mut self, mut keep: impl FnMut(i64, i64) -> bool) {
        let (w, h) = (self.w as usize, self.h as usize);
        let mask = self.mask.get_or_insert_with(|| vec![true; w * h]);
        for j in 0..h {
            for i in 0..w {
                let m = &mut mask[j * w + i];
                if *m && !keep(self.x + i as i64, self.y + j as i64) {
                    *m = false;
                }
            }
        }
    }

    /// Keep only pixels inside one of `rects`.
    pub fn clip_rects(&mut self, rects: &[Rect]) {
        if let [r] = rects {
            // One rectangle: shrink instead of masking.
            let l = (r.left as i64).max(self.x);
            let t = (r.top as i64).max(self.y);
            let rr = (r.right as i64).min(self.x + self.w as i64);
            let b = (r.bottom as i64).min(self.y + self.h as i64);
            if self.mask.is_none() {
                if rr <= l || b <= t {
                    self.w = 0;
                    self.h = 0;
                } else {
                    self.x = l;
                    self.y = t;
                    self.w = (rr - l) as u32;
                    self.h = (b - t) as u32;
                }
                return;
            }
        }
        self.clip_rects_sweep(rects);
    }

    /// The general case of [`Region::clip_rects`]: the rectangles clamped to the region, sorted
    /// by top and by bottom once, then swept row by row with a difference array of the columns
    /// covered, so the cost is O(r log r + w * h), not rectangles times pixels.
    fn clip_rects_sweep(&mut self, rects: &[Rect]) {
        let (w, h) = (self.w as usize, self.h as usize);
        let (x0, y0) = (self.x, self.y);
        let (x1, y1) = (x0 + w as i64, y0 + h as i64);
        // (left, top, right, bottom) relative to the region, non-empty.
        let clamped: Vec<(usize, usize, usize, usize)> = rects
            .iter()
            .filter_map(|r| {
                let l = (r.left as i64).max(x0);
                let t = (r.top as i64).max(y0);
                let rr = (r.right as i64).min(x1);
                let b = (r.bottom as i64).min(y1);
                (l < rr && t < b).then(|| {
                    (
                        (l - x0) as usize,
                        (t - y0) as usize,
                        (rr - x0) as usize,
                        (b - y0) as usize,
                    )
                })
            })
            .collect();
        let mut by_top: Vec<usize> = (0..clamped.len()).collect();
        by_top.sort_unstable_by_key(|&i| clamped[i].1);
        let mut by_bottom = by_top.clone();
        by_bottom.sort_unstable_by_key(|&i| clamped[i].3);
        let mask = self.mask.get_or_insert_with(|| vec![true; w * h]);
        let mut diff = vec![0i64; w + 1];
        let (mut ti, mut bi) = (0, 0);
        for (j, row) in mask.chunks_exact_mut(w.max(1)).take(h).enumerate() {
            // A rectangle ending here started on an earlier row, so it is active.
            while bi < by_bottom.len() && clamped[by_bottom[bi]].3 <= j {
                let (l, _, r, _) = clamped[by_bottom[bi]];
                diff[l] -= 1;
                diff[r] += 1;
                bi += 1;
            }
            while ti < by_top.len() && clamped[by_top[ti]].1 <= j {
                let (l, _, r, _) = clamped[by_top[ti]];
                diff[l] += 1;
                diff[r] -= 1;
                ti += 1;
            }
            let mut cover = 0i64;
            for (m, d) in row.iter_mut().zip(&diff) {
                cover += d;
                if cover <= 0 {
                    *m = false;
                }
            }
        }
    }

    /// Keep only pixels inside the rectangle (x, y, w, h).
    pub fn intersect_xywh(&mut self, x: i64, y: i64, w: i64, h: i64) {
        self.restrict(|px, py| px >= x && px < x + w && py >= y && py < y + h);
    }

    /// Pixels of the region's rectangle (`w * h`).
    pub fn area(&self) -> u64 {
        self.w as u64 * self.h as u64
    }

    pub fn is_empty(&self) -> bool {
        self.w == 0 || self.h == 0 || self.mask.as_ref().is_some_and(|m| !m.iter().any(|&b| b))
    }

    /// Every pixel of the region, row by row.
    pub fn for_each(&self, mut f: impl FnMut(i64, i64)) {
        for j in 0..self.h as usize {
            for i in 0..self.w as usize {
                if self
                    .mask
                    .as_ref()
                    .map_or(true, |m| m[j * self.w as usize + i])
                {
                    f(self.x + i as i64, self.y + j as i64);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ropd_matches_the_reference_table() {
        // A few lines of ropd_descriptor_to_rop, checked on bit patterns.
        let s = 0b1100u32;
        let d = 0b1010u32;
        let r = |bits: u16| Rop::from_ropd(Ropd(bits), RopInput::Src, RopInput::Dest).apply(s, d);
        let put = Ropd::OP_PUT.0;
        let or = Ropd::OP_OR.0;
        let and = Ropd::OP_AND.0;
        let xor = Ropd::OP_XOR.0;
        let is = Ropd::INVERS_SRC.0;
        let id = Ropd::INVERS_DEST.0;
        let ir = Ropd::INVERS_RES.0;
        assert_eq!(r(put), s);
        assert_eq!(r(put | is), !s);
        assert_eq!(r(put | is | ir), s);
        assert_eq!(r(or | ir | is | id), s & d); // AND
        assert_eq!(r(or | ir), !(s | d)); // NOR
        assert_eq!(r(and | is), !s & d); // AND_INVERTED
        assert_eq!(r(xor | ir | is), s ^ d);
        assert_eq!(r(xor | id), !(s ^ d));
        assert_eq!(r(Ropd::OP_INVERS.0), !d);
        assert_eq!(r(Ropd::OP_BLACKNESS.0), 0);
        // The brush's inversion bit counts when the brush is the source.
        let f = Rop::from_ropd(
            Ropd(put | Ropd::INVERS_BRUSH.0),
            RopInput::Brush,
            RopInput::Dest,
        );
        assert_eq!(f.apply(s, d), !s);
    }

    #[test]
    fn rop3_codes() {
        let (p, s, d) = (0xf0u32, 0xccu32, 0xaau32);
        assert_eq!(rop3(0xcc, p, s, d) & 0xff, 0xcc); // SRCCOPY
        assert_eq!(rop3(0xf0, p, s, d) & 0xff, 0xf0); // PATCOPY
        assert_eq!(rop3(0x66, p, s, d) & 0xff, 0x66); // SRCINVERT = s ^ d
        assert_eq!(rop3(0x00, p, s, d), 0);
        assert_eq!(rop3(0xff, p, s, d), 0xffff_ffff);
    }

    #[test]
    fn blending_rounds_like_pixman() {
        assert_eq!(mul_un8(255, 255), 255);
        assert_eq!(mul_un8(128, 255), 128);
        assert_eq!(mul_un8(255, 128), 128);
        assert_eq!(mul_un8(0, 200), 0);
        assert_eq!(over(0xff11_2233, 0xff44_5566), 0xff11_2233);
        assert_eq!(over(0x0000_0000, 0xff44_5566), 0xff44_5566);
        // Half-transparent white over black.
        assert_eq!(over(0x8080_8080, 0xff00_0000), 0xff80_8080);
    }

    #[test]
    fn regions_clip() {
        let mut r = Region::new(&Rect::from_xywh(-5, -5, 20, 20), 10, 10).unwrap();
        assert_eq!((r.x, r.y, r.w, r.h), (0, 0, 10, 10));
        r.clip_rects(&[Rect::from_xywh(2, 2, 3, 3)]);
        assert_eq!((r.x, r.y, r.w, r.h), (2, 2, 3, 3));
        let mut n = 0;
        r.clip_rects(&[Rect::from_xywh(0, 0, 3, 3), Rect::from_xywh(4, 4, 1, 1)]);
        r.for_each(|_, _| n += 1);
        assert_eq!(n, 2);
        assert!(Region::new(&Rect::from_xywh(10, 0, 5, 5), 10, 10).is_none());
    }
}
