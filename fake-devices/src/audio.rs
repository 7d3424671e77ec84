//! The fake sound card: a playback device that plays a deterministic program (tones and
//! chirps at known frequencies, silence gaps, all drawn from a seed) and a record device that
//! keeps every frame the server hands it.
//!
//! Both follow the VD-Interface's pull model ([`PlaybackDevice`], [`RecordDevice`]): the
//! server calls `run(now_ms)` and acts on the calls returned. Time is only what `run` is
//! given, so a run is a function of the seed and the times (the simulator relies on it); the
//! sine is computed by a polynomial of our own rather than the platform's `sin`, so the
//! samples are the same bytes on every machine.
//!
//! The playback device starts at its first `run` (or when its [`Script`] says), then hands
//! over one buffer of `rate / 100` stereo frames (at most [`AUDIO_FRAME_SAMPLES`]; 480 at
//! 48 kHz) per 10 ms of device time. Run late, it catches up at most
//! [`MAX_BUFFERS_PER_RUN`] buffers per call and asks to be run again at once; more than
//! [`MAX_BACKLOG_MS`] behind, it skips the excess (an overrun, logged as `audio_late`): its
//! program goes on from where it was, so [`FakePlayback::generated`] is always the program's
//! samples in order, without gaps.
//!
//! Both log into the shared [`EventLog`] (devices `playback` and `record`): start, stop (with
//! the span's frame count and first/last device times), volume and mute changes, and a
//! summary per second of device time while frames flow. Nothing is logged per frame.
//!
//! Handles are cheap clones of the same device (`Rc<RefCell<..>>`, single-threaded like the
//! server's event loop): give one to the server, keep one to look at.

use std::cell::RefCell;
use std::rc::Rc;

pub use spice_server::vdi::AUDIO_FRAME_SAMPLES;
use spice_server::vdi::{PlaybackCall, PlaybackDevice, RecordCall, RecordDevice};

use crate::input::{Device, EventLog, InputEvent};

/// The default rate of both devices (Opus-capable, what QEMU's spice audio uses).
pub const DEFAULT_RATE: u32 = 48_000;
/// The most buffers the playback device hands over in one `run` when it is behind.
pub const MAX_BUFFERS_PER_RUN: usize = 16;
/// How far behind (in device time) the playback device catches up; more is skipped.
pub const MAX_BACKLOG_MS: u64 = 500;
/// The interval of the per-second summaries in the events log.
const SUMMARY_MS: u64 = 1_000;
/// Each segment fades in and out over this many milliseconds (no clicks at the edges).
const FADE_MS: u64 = 2;

/// What one segment of the program plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sound {
    /// Steady tones: `left_hz` on the left channel, `right_hz` (a different frequency) on
    /// the right.
    Tone { left_hz: u32, right_hz: u32 },
    /// A linear sweep from `from_hz` to `to_hz` over the segment, the same on both channels.
    Chirp { from_hz: u32, to_hz: u32 },
    /// Zero samples.
    Silence,
}

/// One segment of the playback program: `len` stereo frames from frame `start` of the
/// device's output (frame indexes count only what was played: [`FakePlayback::generated`]
/// index `start` is its first frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub len: u64,
    /// Peak sample value (before the 2 ms fades at both ends).
    pub amplitude: i16,
    pub sound: Sound,
}

impl Segment {
    /// The first frame after the segment.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Frame `i` (`0..len`) of the segment at `rate` Hz.
    pub fn frame(&self, i: u64, rate: u32) -> u32 {
        let fade = (FADE_MS * rate as u64 / 1000).max(1);
        let edge = i.min(self.len.saturating_sub(1 + i));
        let env = if edge < fade {
            edge as f64 / fade as f64
        } else {
            1.0
        };
        let amp = self.amplitude as f64 * env;
        let (l, r) = match self.sound {
            Sound::Silence => (0.0, 0.0),
            Sound::Tone { left_hz, right_hz } => (
                sin_turns(tone_turns(left_hz, i, rate)),
                sin_turns(tone_turns(right_hz, i, rate)),
            ),
            Sound::Chirp { from_hz, to_hz } => {
                // Phase of a linear sweep: f0 t + (f1 - f0) t^2 / (2 T), in turns.
                let t = i as f64 / rate as f64;
                let span = self.len.max(1) as f64 / rate as f64;
                let turns =
                    from_hz as f64 * t + (to_hz as f64 - from_hz as f64) * t * t / (2.0 * span);
                let s = sin_turns(turns);
                (s, s)
            }
        };
        spice_audio::pcm::frame(sample(amp * l), sample(amp * r))
    }
}

/// Phase in turns of a tone of `hz` at frame `i`: exact in integers, then one division.
fn tone_turns(hz: u32, i: u64, rate: u32) -> f64 {
    let rate = rate.max(1) as u64;
    ((hz as u64 * (i % rate)) % rate) as f64 / rate as f64
}

fn sample(v: f64) -> i16 {
    v.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16
}

/// `sin(2 pi t)`: range reduction to a quarter turn, then the Taylor series to the 15th
/// power (error below 1e-11): plain IEEE arithmetic, the same result on every platform.
pub fn sin_turns(t: f64) -> f64 {
    let t = t - t.floor();
    let x = if t < 0.25 {
        t
    } else if t < 0.75 {
        0.5 - t
    } else {
        t - 1.0
    };
    let y = x * std::f64::consts::TAU;
    let y2 = y * y;
    // Horner form of y - y^3/3! + y^5/5! - ... - y^15/15!.
    let mut acc = -1.0 / 1_307_674_368_000.0; // 15!
    for k in [
        6_227_020_800.0, // 13!
        -39_916_800.0,   // 11!
        362_880.0,       // 9!
        -5_040.0,        // 7!
        120.0,           // 5!
        -6.0,            // 3!
        1.0,
    ] {
        acc = acc * y2 + 1.0 / k;
    }
    acc * y
}

/// splitmix64: the program's deterministic random numbers.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The playback program of a seed: an endless sequence of segments. Tones last 300 to
/// 800 ms (integer frequencies 200 to 4000 Hz, left and right at least 100 Hz apart), chirps
/// 200 to 500 ms (between 300 and 3000 Hz), silences 50 to 200 ms; amplitudes 4000 to
/// 12000. The first segment is always a tone.
#[derive(Debug, Clone)]
pub struct Program {
    rng: Rng,
    rate: u32,
    next_start: u64,
    count: u64,
}

impl Program {
    pub fn new(seed: u64, rate: u32) -> Self {
        Program {
            rng: Rng(seed ^ 0x5350_4943_4541_5544), // "SPICEAUD"
            rate: rate.max(1),
            next_start: 0,
            count: 0,
        }
    }

    /// The segments that play frames `0..frames`.
    pub fn covering(seed: u64, rate: u32, frames: u64) -> Vec<Segment> {
        Program::new(seed, rate)
            .take_while(|s| s.start < frames)
            .collect()
    }

    fn ms(&self, ms: u64) -> u64 {
        (ms * self.rate as u64 / 1000).max(1)
    }
}

impl Iterator for Program {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        let kind = if self.count == 0 {
            0
        } else {
            self.rng.range(0, 9)
        };
        let amplitude = self.rng.range(4_000, 12_000) as i16;
        let (sound, ms) = match kind {
            0..=5 => {
                let left_hz = self.rng.range(200, 4_000) as u32;
                let mut right_hz = self.rng.range(200, 3_900) as u32;
                if right_hz.abs_diff(left_hz) < 100 {
                    right_hz += 200;
                }
                (Sound::Tone { left_hz, right_hz }, self.rng.range(300, 800))
            }
            6 | 7 => (
                Sound::Chirp {
                    from_hz: self.rng.range(300, 3_000) as u32,
                    to_hz: self.rng.range(300, 3_000) as u32,
                },
                self.rng.range(200, 500),
            ),
            _ => (Sound::Silence, self.rng.range(50, 200)),
        };
        let len = self.ms(ms);
        let seg = Segment {
            start: self.next_start,
            len,
            amplitude,
            sound,
        };
        self.next_start += len;
        self.count += 1;
        Some(seg)
    }
}

/// One thing a scripted device does at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioAction {
    /// Start playing (capturing); nothing if already started.
    Start,
    /// Stop; nothing if already stopped.
    Stop,
    /// Set the volume, one value per channel.
    Volume(Vec<u16>),
    /// Mute or unmute.
    Mute(bool),
}

/// What a device does when: `(ms after its first run, action)`, in time order (actions at
/// the same time in the order given). The default script is `0:start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script(pub Vec<(u64, AudioAction)>);

impl Default for Script {
    fn default() -> Self {
        Script(vec![(0, AudioAction::Start)])
    }
}

impl std::str::FromStr for Script {
    type Err = String;

    /// `MS:ACTION[,MS:ACTION...]`, actions `start`, `stop`, `mute`, `unmute`,
    /// `volume=V[/V...]` (one value 0..=65535 per channel), e.g.
    /// `0:start,1500:volume=20000/30000,2000:mute,2500:unmute,3000:stop`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (ms, action) = item
                .split_once(':')
                .ok_or_else(|| format!("{item:?}: expected MS:ACTION"))?;
            let ms: u64 = ms
                .trim()
                .parse()
                .map_err(|_| format!("{item:?}: bad time {ms:?}"))?;
            let action = match action.trim() {
                "start" => AudioAction::Start,
                "stop" => AudioAction::Stop,
                "mute" => AudioAction::Mute(true),
                "unmute" => AudioAction::Mute(false),
                a => {
                    let v = a.strip_prefix("volume=").ok_or_else(|| {
                        format!("{item:?}: actions are start, stop, mute, unmute, volume=V/V")
                    })?;
                    let vols = v
                        .split('/')
                        .map(|x| x.trim().parse::<u16>())
                        .collect::<Result<Vec<u16>, _>>()
                        .map_err(|_| format!("{item:?}: volumes are 0..=65535"))?;
                    if vols.is_empty() || vols.len() > 8 {
                        return Err(format!("{item:?}: one to eight volume values"));
                    }
                    AudioAction::Volume(vols)
                }
            };
            out.push((ms, action));
        }
        // Stable: same-time actions keep their order.
        out.sort_by_key(|(ms, _)| *ms);
        Ok(Script(out))
    }
}

/// Per-second and per-span accounting for the events log.
#[derive(Debug)]
struct Meter {
    device: Device,
    window_start: Option<u64>,
    win: Span,
    span: Span,
    total: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Span {
    frames: u64,
    first_ms: Option<u64>,
    last_ms: Option<u64>,
}

impl Span {
    fn add(&mut self, now: u64, n: u64) {
        self.frames += n;
        self.first_ms.get_or_insert(now);
        self.last_ms = Some(now);
    }
}

impl Meter {
    fn new(device: Device) -> Self {
        Meter {
            device,
            window_start: None,
            win: Span::default(),
            span: Span::default(),
            total: 0,
        }
    }

    fn add(&mut self, now: u64, n: u64) {
        if n == 0 {
            return;
        }
        self.window_start.get_or_insert(now);
        self.win.add(now, n);
        self.span.add(now, n);
        self.total += n;
    }

    /// Log the window's summary once a second has passed since it began.
    fn tick(&mut self, now: u64, log: &EventLog) {
        let Some(start) = self.window_start else {
            return;
        };
        if now < start.saturating_add(SUMMARY_MS) {
            return;
        }
        if let (Some(first_ms), Some(last_ms)) = (self.win.first_ms, self.win.last_ms) {
            log.push(
                self.device,
                InputEvent::AudioFrames {
                    frames: self.win.frames,
                    first_ms,
                    last_ms,
                    total: self.total,
                },
            );
        }
        self.win = Span::default();
        self.window_start = None;
    }

    fn start(&mut self, rate: u32, log: &EventLog) {
        self.span = Span::default();
        log.push(self.device, InputEvent::AudioStart { rate, channels: 2 });
    }

    fn stop(&mut self, log: &EventLog) {
        log.push(
            self.device,
            InputEvent::AudioStop {
                frames: self.span.frames,
                first_ms: self.span.first_ms,
                last_ms: self.span.last_ms,
                total: self.total,
            },
        );
        self.span = Span::default();
        self.win = Span::default();
        self.window_start = None;
    }
}

/// Runs a script against a device's first-run time.
#[derive(Debug)]
struct Scripted {
    script: Vec<(u64, AudioAction)>,
    next: usize,
    t0: Option<u64>,
}

impl Scripted {
    fn new(script: Script) -> Self {
        Scripted {
            script: script.0,
            next: 0,
            t0: None,
        }
    }

    /// The device time of the next action, once the device has run.
    fn next_time(&self) -> Option<u64> {
        let t0 = self.t0?;
        self.script
            .get(self.next)
            .map(|(ms, _)| t0.saturating_add(*ms))
    }

    /// The next action if it is due at `now`, with its time.
    fn take_due(&mut self, now: u64) -> Option<(u64, AudioAction)> {
        let t = self.next_time()?;
        if t > now {
            return None;
        }
        let a = self.script[self.next].1.clone();
        self.next += 1;
        Some((t, a))
    }
}

struct PlaybackInner {
    seed: u64,
    rate: u32,
    /// The last run's time.
    now: u64,
    log: EventLog,
    program: Program,
    segments: Vec<Segment>,
    /// The next frame of the program.
    pos: u64,
    generated: Vec<u32>,
    history_limit: usize,
    script: Scripted,
    playing: bool,
    /// The current span: when it started, frames handed over and skipped since.
    span_start_ms: u64,
    span_emitted: u64,
    span_skipped: u64,
    /// Still behind after the last run's bounded catch-up.
    behind: bool,
    meter: Meter,
    volume: Option<Vec<u16>>,
    mute: bool,
}

impl PlaybackInner {
    fn chunk(&self) -> u64 {
        (self.rate as u64 / 100).clamp(1, AUDIO_FRAME_SAMPLES as u64)
    }

    /// Frames of the span due by `t` (not counting skipped ones).
    fn due(&self, t: u64) -> u64 {
        (t.saturating_sub(self.span_start_ms) * self.rate as u64 / 1000)
            .saturating_sub(self.span_skipped)
    }

    fn next_frames(&mut self, n: u64) -> Vec<u32> {
        let mut out = Vec::with_capacity(n as usize);
        while (out.len() as u64) < n {
            while self.segments.last().map_or(true, |s| s.end() <= self.pos) {
                let s = self.program.next().expect("the program is endless");
                self.segments.push(s);
            }
            // Segments are in order; the current one is the last whose start <= pos.
            let seg = *self
                .segments
                .iter()
                .rev()
                .find(|s| s.start <= self.pos)
                .expect("a segment covers pos");
            let upto = seg.end().min(self.pos + (n - out.len() as u64));
            for p in self.pos..upto {
                out.push(seg.frame(p - seg.start, self.rate));
            }
            self.pos = upto;
        }
        out
    }

    /// Hand over the buffers due by `until` (at most `budget` of them); `false` if the
    /// budget ran out first.
    fn produce(
        &mut self,
        now: u64,
        until: u64,
        budget: &mut usize,
        calls: &mut Vec<PlaybackCall>,
    ) -> bool {
        if !self.playing {
            return true;
        }
        let chunk = self.chunk();
        let backlog = MAX_BACKLOG_MS * self.rate as u64 / 1000;
        let due = self.due(until);
        if due > self.span_emitted + backlog {
            let skip = due - self.span_emitted - backlog;
            self.span_skipped += skip;
            self.log
                .push(Device::Playback, InputEvent::AudioLate { frames: skip });
        }
        let due = self.due(until);
        while self.span_emitted + chunk <= due {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            let frames = self.next_frames(chunk);
            self.span_emitted += chunk;
            self.meter.add(now, chunk);
            let keep = self.history_limit.saturating_sub(self.generated.len());
            self.generated
                .extend_from_slice(&frames[..keep.min(frames.len())]);
            calls.push(PlaybackCall::Samples(frames));
        }
        true
    }

    fn act(&mut self, t: u64, action: AudioAction, calls: &mut Vec<PlaybackCall>) {
        match action {
            AudioAction::Start if !self.playing => {
                self.playing = true;
                self.span_start_ms = t;
                self.span_emitted = 0;
                self.span_skipped = 0;
                self.meter.start(self.rate, &self.log);
                calls.push(PlaybackCall::Start);
            }
            AudioAction::Stop if self.playing => {
                self.playing = false;
                self.behind = false;
                self.meter.stop(&self.log);
                calls.push(PlaybackCall::Stop);
            }
            AudioAction::Start | AudioAction::Stop => {}
            AudioAction::Volume(v) => {
                self.log.push(
                    Device::Playback,
                    InputEvent::AudioVolume { volume: v.clone() },
                );
                self.volume = Some(v.clone());
                calls.push(PlaybackCall::Volume(v));
            }
            AudioAction::Mute(m) => {
                self.log
                    .push(Device::Playback, InputEvent::AudioMute { mute: m });
                self.mute = m;
                calls.push(PlaybackCall::Mute(m));
            }
        }
    }

    fn run(&mut self, now: u64) -> Vec<PlaybackCall> {
        self.script.t0.get_or_insert(now);
        self.now = self.now.max(now);
        let mut calls = Vec::new();
        let mut budget = MAX_BUFFERS_PER_RUN;
        self.behind = false;
        loop {
            let next = self.script.next_time().filter(|&t| t <= now);
            let until = next.unwrap_or(now);
            if !self.produce(now, until, &mut budget, &mut calls) {
                // Out of budget: later actions wait until the frames before them are out.
                self.behind = true;
                break;
            }
            match self.script.take_due(now) {
                Some((t, a)) => self.act(t, a, &mut calls),
                None => break,
            }
        }
        self.meter.tick(now, &self.log);
        calls
    }

    fn next_wakeup(&self) -> Option<u64> {
        if self.script.t0.is_none() {
            return Some(0);
        }
        if self.behind {
            return Some(self.now);
        }
        let mut next = self.script.next_time();
        if self.playing {
            let frames = self.span_emitted + self.span_skipped + self.chunk();
            let t = self.span_start_ms + (frames * 1000).div_ceil(self.rate as u64);
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        next
    }
}

/// The fake sound card's output: plays its seed's [`Program`] at `rate` Hz, stereo S16.
#[derive(Clone)]
pub struct FakePlayback(Rc<RefCell<PlaybackInner>>);

impl FakePlayback {
    /// 48 kHz, starting at its first run, playing [`Program::new`]`(seed, 48000)` forever.
    pub fn new(seed: u64, log: EventLog) -> Self {
        FakePlayback(Rc::new(RefCell::new(PlaybackInner {
            seed,
            rate: DEFAULT_RATE,
            now: 0,
            log,
            program: Program::new(seed, DEFAULT_RATE),
            segments: Vec::new(),
            pos: 0,
            generated: Vec::new(),
            history_limit: usize::MAX,
            script: Scripted::new(Script::default()),
            playing: false,
            span_start_ms: 0,
            span_emitted: 0,
            span_skipped: 0,
            behind: false,
            meter: Meter::new(Device::Playback),
            volume: None,
            mute: false,
        })))
    }

    /// Play at `rate` Hz (8000..=192000; the program's lengths and frequencies are the same
    /// in time). Call before the first run.
    pub fn with_rate(self, rate: u32) -> Self {
        {
            let mut i = self.0.borrow_mut();
            let rate = rate.clamp(8_000, 192_000);
            i.rate = rate;
            i.program = Program::new(i.seed, rate);
            i.segments.clear();
        }
        self
    }

    /// Replace the default script (`0:start`): starts, stops, volume and mute changes at
    /// times after the first run. Call before the first run.
    pub fn with_script(self, script: Script) -> Self {
        self.0.borrow_mut().script = Scripted::new(script);
        self
    }

    /// Keep only the first `frames` frames for [`generated`](Self::generated) (a long-running
    /// binary keeps none and writes them elsewhere); the count goes on.
    pub fn with_history_limit(self, frames: usize) -> Self {
        self.0.borrow_mut().history_limit = frames;
        self
    }

    /// Every frame handed to the server so far, in order (up to the history limit).
    pub fn generated(&self) -> Vec<u32> {
        self.0.borrow().generated.clone()
    }

    /// How many frames were handed to the server so far.
    pub fn generated_count(&self) -> u64 {
        self.0.borrow().meter.total
    }

    /// The segments played so far (the last may still be playing): frame ranges are indexes
    /// into [`generated`](Self::generated).
    pub fn program(&self) -> Vec<Segment> {
        let i = self.0.borrow();
        i.segments
            .iter()
            .copied()
            .take_while(|s| s.start < i.pos)
            .collect()
    }

    pub fn is_playing(&self) -> bool {
        self.0.borrow().playing
    }

    /// The last volume it set, if any.
    pub fn volume(&self) -> Option<Vec<u16>> {
        self.0.borrow().volume.clone()
    }

    pub fn is_muted(&self) -> bool {
        self.0.borrow().mute
    }
}

impl PlaybackDevice for FakePlayback {
    fn rate(&self) -> u32 {
        self.0.borrow().rate
    }

    fn run(&mut self, now_ms: u64) -> Vec<PlaybackCall> {
        self.0.borrow_mut().run(now_ms)
    }

    fn next_wakeup(&self) -> Option<u64> {
        self.0.borrow().next_wakeup()
    }
}

struct RecordInner {
    rate: u32,
    log: EventLog,
    script: Scripted,
    capturing: bool,
    now: u64,
    received: Vec<u32>,
    history_limit: usize,
    meter: Meter,
    volume: Option<Vec<u16>>,
    mute: bool,
}

impl RecordInner {
    fn run(&mut self, now: u64) -> Vec<RecordCall> {
        self.script.t0.get_or_insert(now);
        self.now = self.now.max(now);
        let mut calls = Vec::new();
        while let Some((_, a)) = self.script.take_due(now) {
            match a {
                AudioAction::Start if !self.capturing => {
                    self.capturing = true;
                    self.meter.start(self.rate, &self.log);
                    calls.push(RecordCall::Start);
                }
                AudioAction::Stop if self.capturing => {
                    self.capturing = false;
                    self.meter.stop(&self.log);
                    calls.push(RecordCall::Stop);
                }
                AudioAction::Start | AudioAction::Stop => {}
                AudioAction::Volume(v) => {
                    self.log.push(
                        Device::Record,
                        InputEvent::AudioVolume { volume: v.clone() },
                    );
                    self.volume = Some(v.clone());
                    calls.push(RecordCall::Volume(v));
                }
                AudioAction::Mute(m) => {
                    self.log
                        .push(Device::Record, InputEvent::AudioMute { mute: m });
                    self.mute = m;
                    calls.push(RecordCall::Mute(m));
                }
            }
        }
        self.meter.tick(now, &self.log);
        calls
    }
}

/// The fake sound card's input: keeps every frame the server hands it, in order.
#[derive(Clone)]
pub struct FakeRecord(Rc<RefCell<RecordInner>>);

impl FakeRecord {
    /// 48 kHz, capturing from its first run.
    pub fn new(log: EventLog) -> Self {
        FakeRecord(Rc::new(RefCell::new(RecordInner {
            rate: DEFAULT_RATE,
            log,
            script: Scripted::new(Script::default()),
            capturing: false,
            now: 0,
            received: Vec::new(),
            history_limit: usize::MAX,
            meter: Meter::new(Device::Record),
            volume: None,
            mute: false,
        })))
    }

    /// Capture at `rate` Hz (8000..=192000). A rate Opus does not run at (44100) makes
    /// clients send raw PCM.
    pub fn with_rate(self, rate: u32) -> Self {
        self.0.borrow_mut().rate = rate.clamp(8_000, 192_000);
        self
    }

    /// Replace the default script (`0:start`). Call before the first run.
    pub fn with_script(self, script: Script) -> Self {
        self.0.borrow_mut().script = Scripted::new(script);
        self
    }

    /// Keep only the first `frames` received frames (the count goes on).
    pub fn with_history_limit(self, frames: usize) -> Self {
        self.0.borrow_mut().history_limit = frames;
        self
    }

    /// Every frame the server handed it so far, in order (up to the history limit).
    pub fn received(&self) -> Vec<u32> {
        self.0.borrow().received.clone()
    }

    /// How many frames the server handed it so far.
    pub fn received_count(&self) -> u64 {
        self.0.borrow().meter.total
    }

    pub fn is_capturing(&self) -> bool {
        self.0.borrow().capturing
    }

    pub fn volume(&self) -> Option<Vec<u16>> {
        self.0.borrow().volume.clone()
    }

    pub fn is_muted(&self) -> bool {
        self.0.borrow().mute
    }
}

impl RecordDevice for FakeRecord {
    fn rate(&self) -> u32 {
        self.0.borrow().rate
    }

    fn run(&mut self, now_ms: u64) -> Vec<RecordCall> {
        self.0.borrow_mut().run(now_ms)
    }

    fn samples(&mut self, frames: &[u32]) {
        let mut i = self.0.borrow_mut();
        let now = i.now;
        i.meter.add(now, frames.len() as u64);
        let keep = i.history_limit.saturating_sub(i.received.len());
        i.received
            .extend_from_slice(&frames[..keep.min(frames.len())]);
    }

    fn next_wakeup(&self) -> Option<u64> {
        let i = self.0.borrow();
        if i.script.t0.is_none() {
            return Some(0);
        }
        i.script.next_time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::to_json_line;
    use spice_audio::analysis;

    /// Run `dev` every `step` ms from `from` to `to` (inclusive); every call, in order.
    fn drive(dev: &mut FakePlayback, from: u64, to: u64, step: u64) -> Vec<PlaybackCall> {
        let mut calls = Vec::new();
        let mut t = from;
        while t <= to {
            calls.extend(dev.run(t));
            t += step;
        }
        calls
    }

    fn samples(calls: &[PlaybackCall]) -> Vec<u32> {
        calls
            .iter()
            .filter_map(|c| match c {
                PlaybackCall::Samples(f) => Some(f.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn the_sine_is_accurate() {
        for i in 0..10_000 {
            let t = i as f64 / 10_000.0 * 3.0 - 1.0;
            let want = (t * std::f64::consts::TAU).sin();
            assert!((sin_turns(t) - want).abs() < 1e-10, "{t}");
        }
    }

    #[test]
    fn same_seed_same_frames_other_seed_other_frames() {
        let run = |seed| {
            let mut d = FakePlayback::new(seed, EventLog::new());
            let calls = drive(&mut d, 1_000, 4_000, 10);
            assert_eq!(samples(&calls), d.generated());
            d.generated()
        };
        let a = run(3);
        assert_eq!(a.len(), 300 * 480);
        assert_eq!(a, run(3));
        assert_ne!(a, run(4));
        // Driven at other times (late, in bursts) the same samples come out, in order.
        let mut d = FakePlayback::new(3, EventLog::new());
        drive(&mut d, 1_000, 4_000, 70);
        let b = d.generated();
        assert_eq!(a[..b.len()], b[..]);
    }

    #[test]
    fn one_buffer_per_10_ms_bounded_catch_up_and_overrun() {
        let log = EventLog::new();
        let mut d = FakePlayback::new(1, log.clone());
        assert_eq!(d.next_wakeup(), Some(0));
        assert_eq!(d.run(100), vec![PlaybackCall::Start]);
        assert_eq!(d.next_wakeup(), Some(110));
        let c = d.run(110);
        assert!(matches!(&c[..], [PlaybackCall::Samples(f)] if f.len() == AUDIO_FRAME_SAMPLES));
        // 300 ms late: 16 buffers now, the rest on the next run, which is due at once.
        let c = d.run(420);
        assert_eq!(c.len(), MAX_BUFFERS_PER_RUN);
        assert_eq!(d.next_wakeup(), Some(420));
        let c = d.run(420);
        assert_eq!(c.len(), 32 - 1 - MAX_BUFFERS_PER_RUN);
        assert_eq!(d.next_wakeup(), Some(430));
        assert_eq!(d.generated().len(), 32 * 480);
        // 10 s late: the device skips all but MAX_BACKLOG_MS and says so.
        let before = d.generated().len();
        let mut calls = 0;
        while calls < 1000 {
            let c = d.run(10_420);
            if c.is_empty() {
                break;
            }
            calls += c.len();
        }
        assert_eq!(calls, (MAX_BACKLOG_MS / 10) as usize);
        assert_eq!(d.generated().len(), before + calls * 480);
        let late: Vec<_> = log
            .records()
            .into_iter()
            .filter(|r| matches!(r.event, InputEvent::AudioLate { .. }))
            .collect();
        assert_eq!(late.len(), 1);
        assert_eq!(
            late[0].event,
            InputEvent::AudioLate {
                frames: (10_000 - MAX_BACKLOG_MS) * 48
            }
        );
        // Afterwards it plays on in real time, one buffer per 10 ms.
        assert_eq!(samples(&d.run(10_430)).len(), 480);
    }

    #[test]
    fn other_rates_give_a_10_ms_buffer_per_10_ms() {
        let mut d = FakePlayback::new(1, EventLog::new()).with_rate(44_100);
        assert_eq!(d.rate(), 44_100);
        let calls = drive(&mut d, 0, 1_000, 10);
        let sizes: Vec<usize> = calls
            .iter()
            .filter_map(|c| match c {
                PlaybackCall::Samples(f) => Some(f.len()),
                _ => None,
            })
            .collect();
        assert_eq!(sizes.len(), 100);
        assert!(sizes.iter().all(|&n| n == 441));
        // 96 kHz: buffers stay at most AUDIO_FRAME_SAMPLES, two per 10 ms.
        let mut d = FakePlayback::new(1, EventLog::new()).with_rate(96_000);
        assert_eq!(samples(&drive(&mut d, 0, 1_000, 10)).len(), 96_000);
    }

    #[test]
    fn tones_are_at_their_programmed_frequencies() {
        let mut d = FakePlayback::new(11, EventLog::new());
        drive(&mut d, 0, 20_000, 10);
        let pcm = spice_audio::pcm::frames_to_interleaved(&d.generated());
        let (l, r) = (analysis::channel(&pcm, 0), analysis::channel(&pcm, 1));
        let program = d.program();
        assert_eq!(
            program,
            Program::covering(11, 48_000, d.generated().len() as u64)
        );
        let (mut tones, mut chirps, mut silences) = (0, 0, 0);
        for seg in program.iter().filter(|s| s.end() <= l.len() as u64) {
            let (a, b) = (seg.start as usize, seg.end() as usize);
            // Every frame of the segment is the segment's.
            for i in [a, (a + b) / 2, b - 1] {
                assert_eq!(d.generated()[i], seg.frame((i - a) as u64, 48_000));
            }
            match seg.sound {
                Sound::Tone { left_hz, right_hz } => {
                    tones += 1;
                    assert!((300..=800).contains(&(seg.len / 48)));
                    assert!(left_hz.abs_diff(right_hz) >= 100);
                    for (ch, want) in [(&l, left_hz), (&r, right_hz)] {
                        let f = analysis::dominant_frequency(&ch[a..b], 48_000).unwrap();
                        assert!((f - want as f64).abs() < 0.2, "{want} Hz measured {f}");
                    }
                }
                Sound::Chirp { from_hz, to_hz } => {
                    chirps += 1;
                    // 20 ms around the middle sweep through the mean frequency.
                    let m = (a + b) / 2;
                    let f = analysis::dominant_frequency(&l[m - 480..m + 480], 48_000).unwrap();
                    let want = (from_hz + to_hz) as f64 / 2.0;
                    assert!((f - want).abs() < 60.0, "chirp {from_hz}..{to_hz}: {f}");
                }
                Sound::Silence => {
                    silences += 1;
                    assert!(l[a..b].iter().chain(&r[a..b]).all(|&v| v == 0.0));
                }
            }
        }
        assert!(
            tones >= 10 && chirps >= 3 && silences >= 3,
            "{tones} {chirps} {silences}"
        );
        assert!(matches!(program[0].sound, Sound::Tone { .. }));
    }

    #[test]
    fn the_script_starts_stops_and_sets_volume_and_mute_at_its_times() {
        let log = EventLog::new();
        let script: Script =
            "0:start, 100:volume=100/200, 150:mute, 200:stop, 200:unmute, 300:start"
                .parse()
                .unwrap();
        let mut d = FakePlayback::new(5, log.clone()).with_script(script);
        let calls = drive(&mut d, 1_000, 1_400, 50);
        let kinds: Vec<String> = calls
            .iter()
            .map(|c| match c {
                PlaybackCall::Samples(f) => format!("{}", f.len()),
                c => format!("{c:?}"),
            })
            .collect();
        let mut want = vec!["Start".to_string()];
        want.extend(["480"; 5].map(String::from)); // by 1050
        want.extend(["480"; 5].map(String::from)); // by 1100
        want.push("Volume([100, 200])".into());
        want.extend(["480"; 5].map(String::from)); // by 1150
        want.push("Mute(true)".into());
        want.extend(["480"; 5].map(String::from)); // by 1200
        want.push("Stop".into());
        want.push("Mute(false)".into());
        want.push("Start".into()); // at 1300
        want.extend(["480"; 10].map(String::from)); // by 1400
        assert_eq!(kinds, want);
        assert_eq!(d.volume(), Some(vec![100, 200]));
        assert!(!d.is_muted() && d.is_playing());
        let lines: Vec<String> = log.records().iter().map(to_json_line).collect();
        assert_eq!(
            lines[0],
            r#"{"seq":0,"t_ms":0,"device":"playback","event":"audio_start","rate":48000,"channels":2}"#
        );
        assert!(lines[1].contains(r#""event":"audio_volume","volume":[100,200]"#));
        assert!(lines[2].contains(r#""event":"audio_mute","mute":true"#));
        assert!(
            lines[3].contains(
                r#""event":"audio_stop","frames":9600,"first_ms":1050,"last_ms":1200,"total":9600"#
            ),
            "{}",
            lines[3]
        );
        assert_eq!(lines.len(), 6);
        assert!("5:loud".parse::<Script>().is_err());
        assert!("x:start".parse::<Script>().is_err());
        assert!("1:volume=70000".parse::<Script>().is_err());
        assert!("1:volume=".parse::<Script>().is_err());
    }

    #[test]
    fn playback_logs_a_summary_per_second_not_per_frame() {
        let log = EventLog::new();
        let mut d = FakePlayback::new(5, log.clone());
        drive(&mut d, 0, 3_500, 10);
        let frames: Vec<_> = log
            .records()
            .into_iter()
            .filter_map(|r| match r.event {
                InputEvent::AudioFrames { frames, total, .. } => Some((frames, total)),
                _ => None,
            })
            .collect();
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert_eq!(frames.iter().map(|f| f.0).sum::<u64>(), frames[2].1);
        assert!(frames.iter().all(|f| f.0 >= 47_000 && f.0 <= 49_000));
        assert_eq!(log.len(), 4);
    }

    #[test]
    fn the_record_sink_keeps_exactly_what_it_got() {
        let log = EventLog::new();
        let mut r = FakeRecord::new(log.clone()).with_rate(44_100);
        assert_eq!(r.rate(), 44_100);
        assert_eq!(r.next_wakeup(), Some(0));
        assert_eq!(r.run(7), vec![RecordCall::Start]);
        assert!(r.is_capturing());
        assert_eq!(r.next_wakeup(), None);
        let a: Vec<u32> = (0..1000).map(|i| i * 7919).collect();
        r.samples(&a[..300]);
        r.samples(&[]);
        r.run(500);
        r.samples(&a[300..]);
        assert_eq!(r.received(), a);
        assert_eq!(r.received_count(), 1000);
        r.run(1_200);
        let recs = log.records();
        assert_eq!(recs[0].device, Device::Record);
        assert_eq!(
            recs[0].event,
            InputEvent::AudioStart {
                rate: 44_100,
                channels: 2
            }
        );
        assert_eq!(
            recs[1].event,
            InputEvent::AudioFrames {
                frames: 1000,
                first_ms: 7,
                last_ms: 500,
                total: 1000
            }
        );
        // Scripted: stop, volume, mute; the span summary on stop.
        let log = EventLog::new();
        let mut r = FakeRecord::new(log.clone())
            .with_script("0:start,10:volume=5/6,20:mute,30:stop".parse().unwrap())
            .with_history_limit(2);
        assert_eq!(r.run(100), vec![RecordCall::Start]);
        r.samples(&[1, 2, 3]);
        assert_eq!(
            r.run(125),
            vec![RecordCall::Volume(vec![5, 6]), RecordCall::Mute(true)]
        );
        assert_eq!(r.run(130), vec![RecordCall::Stop]);
        assert_eq!(r.received(), vec![1, 2]);
        assert_eq!(r.received_count(), 3);
        assert_eq!(
            log.records().last().unwrap().event,
            InputEvent::AudioStop {
                frames: 3,
                first_ms: Some(100),
                last_ms: Some(100),
                total: 3
            }
        );
    }

    /// The codec alone on the fake card's output: what the real-client test can expect of
    /// Opus through the server (at least 20 dB, each tone within 1 Hz).
    #[test]
    fn opus_keeps_the_program_above_20_db() {
        use spice_audio::opus::{OpusDecoder, OpusEncoder};
        let mut d = FakePlayback::new(7, EventLog::new());
        let calls = drive(&mut d, 0, 5_000, 10);
        let (mut enc, mut dec) = (
            OpusEncoder::new(48_000).unwrap(),
            OpusDecoder::new(48_000).unwrap(),
        );
        let mut out = Vec::new();
        for c in &calls {
            if let PlaybackCall::Samples(f) = c {
                let p = enc
                    .encode(&spice_audio::pcm::frames_to_interleaved(f))
                    .unwrap();
                out.extend_from_slice(dec.decode(&p).unwrap());
            }
        }
        let src = spice_audio::pcm::frames_to_interleaved(&d.generated());
        for ch in 0..2 {
            let (a, b) = (analysis::channel(&src, ch), analysis::channel(&out, ch));
            let lag = analysis::best_lag(&a[..48_000], &b[..49_000], 960);
            let snr = analysis::snr_db(&a, &b[lag..], 0);
            eprintln!("opus alone, channel {ch}: {snr:.1} dB (lag {lag})");
            assert!(snr >= 20.0, "channel {ch}: {snr:.1} dB (lag {lag})");
        }
    }
}
