//! A deterministic image set for benchmarks and speed comparisons (`cargo xtask bench
//! codecs`; `--write-images DIR` writes them out so any other encoder can be fed the same
//! pixels). The kinds follow the C reference figures in the project's perf baselines:
//! desktop (flat areas, windows, a text-like block), photo (gradients with small noise), text
//! (dense glyph-like strokes), noise (random), a 1920x1080 screen and a small icon.
//!
//! All images are 32-bit (B, G, R, X) and generated from fixed seeds: same build, same bytes.

use super::{PixelFormat, Pixmap};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }
}

fn image(w: u32, h: u32, mut f: impl FnMut(u32, u32) -> [u8; 3]) -> Pixmap {
    let mut data = Vec::with_capacity(w as usize * h as usize * 4);
    for y in 0..h {
        for x in 0..w {
            let [r, g, b] = f(x, y);
            data.extend_from_slice(&[b, g, r, 0]);
        }
    }
    Pixmap::from_data(w, h, PixelFormat::Rgb32, w as usize * 4, data).expect("valid size")
}

fn desktop(w: u32, h: u32) -> Pixmap {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let glyphs: Vec<u32> = (0..4096).map(|_| rng.next()).collect();
    image(w, h, |x, y| {
        // A window with a title bar and a text block on a flat wallpaper.
        let (wx0, wy0, wx1, wy1) = (w / 8, h / 8, w * 5 / 8, h * 3 / 4);
        if x >= wx0 && x < wx1 && y >= wy0 && y < wy1 {
            if y < wy0 + 24 {
                return [40, 90, 160];
            }
            let (cx, cy) = ((x - wx0) / 7, (y - wy0 - 24) / 12);
            let (gx, gy) = ((x - wx0) % 7, (y - wy0 - 24) % 12);
            let g = glyphs[((cy * 97 + cx) % 4096) as usize];
            if gx < 5 && gy < 8 && (g >> ((gy * 5 + gx) % 32)) & 1 == 1 && g % 5 != 0 {
                return [10, 10, 10];
            }
            return [250, 250, 250];
        }
        if x >= w * 3 / 4 && y < h / 3 {
            return [200, 60, 40];
        }
        [58, 110, 165]
    })
}

/// The named images: (name, pixels).
pub fn bench_set() -> Vec<(&'static str, Pixmap)> {
    let mut noise = Rng(0x9e37_79b9_7f4a_7c15);
    let mut photo_rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut text_rng = Rng(0x5851_f42d_4c95_7f2d);
    let text_glyphs: Vec<u32> = (0..8192).map(|_| text_rng.next()).collect();
    vec![
        ("desktop", desktop(1024, 768)),
        (
            "photo",
            image(1024, 768, |x, y| {
                let n = (photo_rng.next() % 9) as i32 - 4;
                let c = |v: i32| (v + n).clamp(0, 255) as u8;
                [
                    c(30 + (x * 200 / 1024) as i32),
                    c(60 + ((x + y) * 100 / 1024) as i32),
                    c(220 - (y * 150 / 768) as i32),
                ]
            }),
        ),
        (
            "text",
            image(1024, 768, |x, y| {
                let g = text_glyphs[(((y / 12) * 146 + x / 7) % 8192) as usize];
                let (gx, gy) = (x % 7, y % 12);
                if gx < 5 && gy < 8 && (g >> ((gy * 5 + gx) % 32)) & 1 == 1 {
                    [0, 0, 0]
                } else {
                    [255, 255, 255]
                }
            }),
        ),
        (
            "noise",
            image(512, 512, |_, _| {
                let v = noise.next();
                [v as u8, (v >> 8) as u8, (v >> 16) as u8]
            }),
        ),
        ("screen-1080p", desktop(1920, 1080)),
        (
            "icon",
            image(64, 64, |x, y| {
                let d = (x as i32 - 32).pow(2) + (y as i32 - 32).pow(2);
                if d < 26 * 26 {
                    [(x * 4) as u8, 120, (y * 4) as u8]
                } else {
                    [0, 80, 120]
                }
            }),
        ),
    ]
}
