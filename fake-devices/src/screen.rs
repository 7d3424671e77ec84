//! A fake framebuffer display playing deterministic scenes, driven only by the time it is
//! given: same scene and time, same pixels.
//!
//! Scenes (`--scene NAME`):
//! - `solid`: a background and solid rectangles appearing one by one;
//! - `text`: lines of glyph-like 1-pixel strokes, typed out line by line;
//! - `photo`: a gradient with seeded noise (photo-like: QUIC territory in `auto_*`);
//! - `windows`: a window with a title bar moved across the screen, then resting;
//! - `animated`: a region that changes 20 times a second forever (video-like);
//! - `desktop` (default): wallpaper, two windows (one with text, one with a photo), icons, and a
//!   window that moves, then rests.
//!
//! Every scene except `animated` is at rest from [`SETTLE_MS`] on, so a screenshot taken after
//! that is the scene's final frame ([`FakeScreen::settled`]).

use spice_proto::types::Rect;
use spice_server::vdi::Framebuffer;

/// From this time on every scene but `animated` no longer changes.
pub const SETTLE_MS: u64 = 1_500;
/// Time between frames of the timed parts of scenes.
pub const FRAME_MS: u64 = 50;

pub const SCENES: [&str; 6] = ["desktop", "solid", "text", "photo", "windows", "animated"];

/// Colours are (r, g, b).
type Rgb = (u8, u8, u8);

/// One step of a scene: what is drawn at a time.
#[derive(Debug, Clone)]
enum Op {
    Fill(Rect, Rgb),
    Gradient(Rect, u32),
    Glyphs(Rect, Rgb, Rgb, u32),
    Photo(Rect, u32),
    Window(Rect, Rgb),
    Icon(i32, i32, u32),
}

/// A framebuffer device showing a scene.
pub struct FakeScreen {
    scene: String,
    width: u32,
    height: u32,
    fb: Vec<u8>,
    /// The time the screen shows.
    now_ms: u64,
    started: bool,
}

impl FakeScreen {
    /// A screen of `width`×`height` showing `scene`; None if the scene is unknown.
    pub fn new(scene: &str, width: u32, height: u32) -> Option<FakeScreen> {
        if !SCENES.contains(&scene) || width < 64 || height < 64 {
            return None;
        }
        Some(FakeScreen {
            scene: scene.to_string(),
            width,
            height,
            fb: vec![0; width as usize * height as usize * 4],
            now_ms: 0,
            started: false,
        })
    }

    /// The screen at `at_ms` as RGBA rows (what a client should show), without touching self.
    pub fn rgba_at(scene: &str, width: u32, height: u32, at_ms: u64) -> Option<Vec<u8>> {
        let mut s = FakeScreen::new(scene, width, height)?;
        s.update(at_ms);
        Some(s.rgba())
    }

    /// The time after which the scene no longer changes (None: it never rests).
    pub fn settled(&self) -> Option<u64> {
        (self.scene != "animated").then_some(SETTLE_MS)
    }

    /// The current screen as RGBA rows.
    pub fn rgba(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.fb.len());
        for px in self.fb.chunks_exact(4) {
            out.extend_from_slice(&[px[2], px[1], px[0], 255]);
        }
        out
    }

    fn put(&mut self, x: i32, y: i32, c: Rgb) {
        if x < 0 || y < 0 || x >= self.width as i32 || y >= self.height as i32 {
            return;
        }
        let i = (y as usize * self.width as usize + x as usize) * 4;
        self.fb[i..i + 4].copy_from_slice(&[c.2, c.1, c.0, 0]);
    }

    fn clip(&self, r: &Rect) -> Rect {
        Rect {
            left: r.left.clamp(0, self.width as i32),
            top: r.top.clamp(0, self.height as i32),
            right: r.right.clamp(0, self.width as i32),
            bottom: r.bottom.clamp(0, self.height as i32),
        }
    }

    fn apply(&mut self, op: &Op) -> Rect {
        match op {
            Op::Fill(r, c) => {
                let r = self.clip(r);
                for y in r.top..r.bottom {
                    for x in r.left..r.right {
                        self.put(x, y, *c);
                    }
                }
                r
            }
            Op::Gradient(r, seed) => {
                let r = self.clip(r);
                let (w, h) = (r.width().max(1) as u32, r.height().max(1) as u32);
                for y in r.top..r.bottom {
                    for x in r.left..r.right {
                        let fx = ((x - r.left) as u32 * 255 / w) as u8;
                        let fy = ((y - r.top) as u32 * 255 / h) as u8;
                        let c = (fx / 2 + 40, fy / 3 + 60, (seed % 97) as u8 + 120);
                        self.put(x, y, c);
                    }
                }
                r
            }
            Op::Glyphs(r, fg, bg, seed) => {
                let r = self.clip(r);
                let mut rng = XorShift::new(*seed);
                for y in r.top..r.bottom {
                    for x in r.left..r.right {
                        self.put(x, y, *bg);
                    }
                }
                // 8x12 cells; each glyph a few strokes of a 5x8 pattern.
                let mut cy = r.top + 2;
                while cy + 10 <= r.bottom {
                    let mut cx = r.left + 2;
                    while cx + 7 <= r.right {
                        let g = rng.next() as u64;
                        if g % 7 != 0 {
                            for gy in 0..8 {
                                for gx in 0..5 {
                                    if (g >> ((gy * 5 + gx) % 40)) & 1 == 1 {
                                        self.put(cx + gx, cy + gy, *fg);
                                    }
                                }
                            }
                        }
                        cx += 7;
                    }
                    cy += 12;
                }
                r
            }
            Op::Photo(r, seed) => {
                let r = self.clip(r);
                let mut rng = XorShift::new(*seed);
                let (w, h) = (r.width().max(1), r.height().max(1));
                for y in r.top..r.bottom {
                    for x in r.left..r.right {
                        let n = (rng.next() % 9) as i32 - 4;
                        let fx = (x - r.left) * 200 / w;
                        let fy = (y - r.top) * 200 / h;
                        let c = (
                            (30 + fx + n).clamp(0, 255) as u8,
                            (60 + (fx + fy) / 2 + n).clamp(0, 255) as u8,
                            (200 - fy / 2 + n).clamp(0, 255) as u8,
                        );
                        self.put(x, y, c);
                    }
                }
                r
            }
            Op::Window(r, c) => {
                let r = self.clip(r);
                self.apply(&Op::Fill(r.clone(), (200, 200, 205)));
                let title = Rect {
                    bottom: (r.top + 20).min(r.bottom),
                    ..r.clone()
                };
                self.apply(&Op::Fill(title, *c));
                let inner = Rect {
                    left: r.left + 4,
                    top: r.top + 24,
                    right: r.right - 4,
                    bottom: r.bottom - 4,
                };
                if !inner.is_empty() {
                    self.apply(&Op::Fill(inner, (250, 250, 250)));
                }
                r
            }
            Op::Icon(x, y, seed) => {
                let r = Rect::from_xywh(*x, *y, 32, 32);
                let c = (
                    (seed * 53 % 200) as u8 + 40,
                    (seed * 97 % 200) as u8 + 40,
                    (seed * 31 % 200) as u8 + 40,
                );
                for yy in 0..32 {
                    for xx in 0..32 {
                        let inside = (xx - 16) * (xx - 16) + (yy - 16) * (yy - 16) < 14 * 14;
                        self.put(x + xx, y + yy, if inside { c } else { (0, 80, 120) });
                    }
                }
                self.clip(&r)
            }
        }
    }

    /// The steps of the scene with their times, in order, up to and including `until_ms`
    /// (timed parts are generated frame by frame).
    fn steps(&self, after_ms: Option<u64>, until_ms: u64) -> Vec<(u64, Op)> {
        let (w, h) = (self.width as i32, self.height as i32);
        let full = Rect::from_xywh(0, 0, w, h);
        let mut v: Vec<(u64, Op)> = Vec::new();
        let moving_window = |v: &mut Vec<(u64, Op)>, x0: i32, y0: i32, ww: i32, wh: i32| {
            // Moves for 20 frames from t=200 ms, then rests; the wallpaper under the old
            // position is repainted first.
            let mut prev: Option<Rect> = None;
            for k in 0..=20u64 {
                let t = 200 + k * FRAME_MS;
                let r = Rect::from_xywh(x0 + (k as i32) * 12, y0 + (k as i32) * 5, ww, wh);
                if let Some(p) = prev.take() {
                    v.push((t, Op::Gradient(p, 7)));
                }
                v.push((t, Op::Window(r.clone(), (40, 90, 160))));
                prev = Some(r);
            }
        };
        match self.scene.as_str() {
            "solid" => {
                v.push((0, Op::Fill(full, (20, 40, 60))));
                for k in 0..8 {
                    let r = Rect::from_xywh(40 + k * 50, 40 + k * 30, 120, 80);
                    let c = ((k * 30) as u8, (200 - k * 20) as u8, (100 + k * 15) as u8);
                    v.push((100 + k as u64 * 100, Op::Fill(r, c)));
                }
            }
            "text" => {
                v.push((0, Op::Fill(full, (255, 255, 255))));
                for line in 0..(h / 14).min(40) {
                    let r = Rect::from_xywh(10, 10 + line * 14, w - 20, 14);
                    v.push((
                        (line as u64 * 30).min(SETTLE_MS - 1),
                        Op::Glyphs(r, (0, 0, 0), (255, 255, 255), line as u32 + 1),
                    ));
                }
            }
            "photo" => {
                v.push((0, Op::Photo(full, 42)));
            }
            "windows" => {
                v.push((0, Op::Gradient(full, 7)));
                moving_window(&mut v, 30, 30, 300, 200);
            }
            "animated" => {
                v.push((0, Op::Gradient(full.clone(), 3)));
                let area = Rect::from_xywh(w / 4, h / 4, w / 2, h / 2);
                let first = after_ms.map_or(0, |a| a / FRAME_MS + 1);
                // Only the frames not yet shown: the animation never ends.
                for k in first..=until_ms / FRAME_MS {
                    v.push((k * FRAME_MS, Op::Photo(area.clone(), k as u32 + 1)));
                }
            }
            _ => {
                // desktop
                v.push((0, Op::Gradient(full, 7)));
                for i in 0..6 {
                    v.push((20, Op::Icon(16, 16 + i * 48, i as u32 + 1)));
                }
                let tw = Rect::from_xywh(w / 8, h / 6, w / 2, h / 2);
                v.push((50, Op::Window(tw.clone(), (40, 90, 160))));
                v.push((
                    60,
                    Op::Glyphs(
                        Rect {
                            left: tw.left + 6,
                            top: tw.top + 26,
                            right: tw.right - 6,
                            bottom: tw.bottom - 6,
                        },
                        (10, 10, 10),
                        (250, 250, 250),
                        9,
                    ),
                ));
                let pw = Rect::from_xywh(w / 2, h / 3, w / 3, h / 2);
                v.push((80, Op::Window(pw.clone(), (160, 60, 40))));
                v.push((
                    90,
                    Op::Photo(
                        Rect {
                            left: pw.left + 4,
                            top: pw.top + 24,
                            right: pw.right - 4,
                            bottom: pw.bottom - 4,
                        },
                        5,
                    ),
                ));
                moving_window(&mut v, w / 5, h / 2, 220, 140);
            }
        }
        v.retain(|(t, _)| *t <= until_ms && after_ms.is_none_or_compat(*t));
        v
    }
}

/// `Option::is_none_or` for the declared MSRV: true if `None` or `t > after`.
trait AfterExt {
    fn is_none_or_compat(&self, t: u64) -> bool;
}

impl AfterExt for Option<u64> {
    fn is_none_or_compat(&self, t: u64) -> bool {
        match self {
            None => true,
            Some(a) => t > *a,
        }
    }
}

impl Framebuffer for FakeScreen {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn update(&mut self, now_ms: u64) -> Vec<Rect> {
        let after = if self.started {
            if now_ms <= self.now_ms {
                return Vec::new();
            }
            Some(self.now_ms)
        } else {
            None
        };
        let steps = self.steps(after, now_ms);
        self.started = true;
        self.now_ms = now_ms;
        let mut dirty = Vec::with_capacity(steps.len());
        for (_, op) in steps {
            let r = self.apply(&op);
            if !r.is_empty() {
                dirty.push(r);
            }
        }
        dirty
    }

    fn pixels(&self) -> &[u8] {
        &self.fb
    }

    fn next_wakeup(&self) -> Option<u64> {
        if !self.started {
            return Some(0);
        }
        match self.scene.as_str() {
            "animated" => Some((self.now_ms / FRAME_MS + 1) * FRAME_MS),
            _ if self.now_ms < SETTLE_MS => Some((self.now_ms / 10 + 1) * 10),
            _ => None,
        }
    }
}

/// A tiny deterministic PRNG (xorshift32) for scene content.
struct XorShift(u32);

impl XorShift {
    fn new(seed: u32) -> Self {
        XorShift(seed.wrapping_mul(2_654_435_761).max(1))
    }
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_scene_and_time_same_pixels_whatever_the_steps() {
        for scene in SCENES {
            let mut a = FakeScreen::new(scene, 320, 240).unwrap();
            a.update(2_000);
            let mut b = FakeScreen::new(scene, 320, 240).unwrap();
            let mut t = 0;
            while t < 2_000 {
                t += 7;
                b.update(t.min(2_000));
            }
            assert_eq!(a.pixels(), b.pixels(), "scene {scene}");
        }
    }

    #[test]
    fn scenes_settle_except_animated() {
        for scene in SCENES {
            let mut s = FakeScreen::new(scene, 320, 240).unwrap();
            s.update(SETTLE_MS);
            let later = s.update(SETTLE_MS + 5_000);
            assert_eq!(later.is_empty(), scene != "animated", "scene {scene}");
        }
    }

    #[test]
    fn dirty_rectangles_cover_every_change() {
        let mut s = FakeScreen::new("desktop", 320, 240).unwrap();
        s.update(300);
        let before = s.pixels().to_vec();
        let dirty = s.update(600);
        let after = s.pixels();
        for y in 0..240i32 {
            for x in 0..320i32 {
                let i = (y as usize * 320 + x as usize) * 4;
                if before[i..i + 4] != after[i..i + 4] {
                    assert!(
                        dirty
                            .iter()
                            .any(|r| x >= r.left && x < r.right && y >= r.top && y < r.bottom),
                        "change at {x},{y} outside the dirty rectangles"
                    );
                }
            }
        }
    }
}
