//! Client plans: what each simulated client does and which faults hit it, drawn from the seed.
//!
//! Every input a client sends is attributable to it from the device log alone: client `k`
//! types scancodes from its own range ([`key_for`]) and puts the tablet at `x = 1000 * k + i`,
//! so the invariants can check per-client order without trusting the server.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::{Faults, Options};

/// One input a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// key_down then key_up of this scancode.
    Key(u8),
    /// An absolute position (client mouse mode).
    Position { x: u32, y: u32 },
    /// mouse_press then mouse_release of this button (1 left, 2 middle, 3 right). Client `k`
    /// (k < 3) clicks button `k + 1` only, so its presses are attributable.
    Click { button: u8 },
    /// Ask for one monitor of this size (agent `monitors_config` on main, which the server
    /// passes to the QXL device). Client `k` asks for widths `400 + 10 * k + j`, j < 10.
    Resize { width: u32, height: u32 },
}

/// What hostile bytes a client sends on its inputs channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostileKind {
    /// A well-framed message of a type no channel has, with random bytes as its body.
    UnknownType,
    /// Random bytes where a header should be (often an oversized or truncated message).
    Garbage,
    /// Well-formed inputs messages built by `arbitrary` from the bytes: odd values (unknown
    /// button and modifier bits, huge deltas, any display id) the server must take in its
    /// stride. Messages that would carry another client's attributable input (keys, absolute
    /// positions) are sent as `key_modifiers` instead, so the invariants stay exact.
    Arbitrary,
}

/// What one client does.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    pub index: u32,
    pub start_ms: u64,
    /// Inputs with the delay before each, in ms.
    pub inputs: Vec<(u64, Input)>,
    /// Stop reading the main channel for this long after this many inputs.
    pub stall: Option<(usize, u64)>,
    /// Vanish after this many inputs (`mid_message`: after writing half a message).
    pub crash: Option<(usize, bool)>,
    /// Send hostile bytes after this many inputs.
    pub hostile: Option<(usize, HostileKind, Vec<u8>)>,
    /// Hold the client's link for a while: (start ms after the client starts, length ms).
    pub hold: Option<(u64, u64)>,
    /// Partition the client's link for a while: (start ms, length ms).
    pub partition: Option<(u64, u64)>,
    /// Link latency in ms (min, max) when latency faults are on.
    pub latency: Option<(u64, u64)>,
    /// Leave and come back as a new session before this input.
    pub reconnect: Option<usize>,
    /// When the client leaves (simulated ms), if it has not crashed: it stays connected,
    /// receiving, until the end of the run's duration.
    pub end_ms: u64,
    /// Its sound channels.
    pub audio: AudioPlan,
}

/// What a client does with sound, drawn from the seed apart from the rest of the plan (so
/// the other plans stay as they were).
#[derive(Debug, Clone, Default)]
pub struct AudioPlan {
    /// It offers the playback channel's `OPUS` capability.
    pub opus_playback: bool,
    /// It links the record channel and sends from its source (one client per run: the
    /// server serves one record client at a time, a newer link replacing the older).
    pub records: bool,
    /// It offers the record channel's `OPUS` capability.
    pub opus_record: bool,
    /// The seed of its record PCM.
    pub record_seed: u64,
    /// Stop reading the playback channel for a while: (ms after it links, length ms); set
    /// when the plan stalls (the `stall` fault).
    pub playback_stall: Option<(u64, u64)>,
}

impl ClientPlan {
    /// Whether this client keeps up with the playback channel: it reads it all the time and
    /// gets every byte the server writes, in time. Latency and jitter (at most 50 ms, far
    /// less than the flow window of raw audio) do not stop that; a stalled reader, a held or
    /// partitioned link, or a crash do.
    pub fn keeps_up(&self) -> bool {
        self.stall.is_none()
            && self.audio.playback_stall.is_none()
            && self.hold.is_none()
            && self.partition.is_none()
            && self.crash.is_none()
    }

    /// Whether every input of this client must reach the devices (no fault of its own can lose
    /// any).
    ///
    /// Leaving a session (`reconnect`) while the link is held can lose the inputs still held:
    /// the server may see main close, which ends the session and its other channels, before
    /// it reads the inputs channel's last bytes (the reference drops them the same way).
    pub fn lossless(&self) -> bool {
        self.crash.is_none()
            && self.hostile.is_none()
            && self.partition.is_none()
            && !(self.hold.is_some() && self.reconnect.is_some())
    }
}

/// The scancode client `k` types for its `i`th key (each client has its own range).
pub fn key_for(k: u32, i: usize) -> u8 {
    // Scancodes 0x10..=0x19 and 0x1e..=0x26 and 0x2c..=0x32: letters, no lock keys.
    const KEYS: [u8; 26] = [
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1e, 0x1f, 0x20, 0x21, 0x22,
        0x23, 0x24, 0x25, 0x26, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32,
    ];
    let per = 3usize;
    KEYS[(k as usize * per + i % per) % KEYS.len()]
}

/// Which client a scancode belongs to (None if it is nobody's).
pub fn client_of_key(byte: u8, clients: u32) -> Option<u32> {
    (0..clients).find(|&k| (0..3).any(|i| key_for(k, i) == byte & 0x7f))
}

fn range(rng: &mut ChaCha20Rng, lo: u64, hi: u64) -> u64 {
    lo + rng.next_u64() % (hi - lo + 1)
}

fn chance(rng: &mut ChaCha20Rng, percent: u64) -> bool {
    rng.next_u64() % 100 < percent
}

/// The plans of every client of a run.
pub fn generate(opts: &Options) -> Vec<ClientPlan> {
    let mut rng = ChaCha20Rng::seed_from_u64(opts.seed ^ 0x5eed_91a5);
    let f: Faults = opts.faults;
    let horizon = opts.duration_s * 1000;
    let mut plans = (0..opts.clients)
        .map(|k| {
            let start_ms = range(&mut rng, 0, 1000);
            let n = range(&mut rng, 8, 40) as usize;
            let mut inputs = Vec::with_capacity(n);
            let mut used = 0;
            for i in 0..n {
                let delay = range(&mut rng, 10, 300);
                if start_ms + used + delay + 2000 > horizon {
                    break;
                }
                used += delay;
                let input = if chance(&mut rng, 5) {
                    Input::Resize {
                        width: 400 + 10 * k + (i % 10) as u32,
                        height: 300 + range(&mut rng, 0, 200) as u32,
                    }
                } else if k < 3 && chance(&mut rng, 15) {
                    Input::Click {
                        button: k as u8 + 1,
                    }
                } else if chance(&mut rng, 50) {
                    Input::Key(key_for(k, i))
                } else {
                    Input::Position {
                        x: 1000 * k + i as u32,
                        y: range(&mut rng, 0, 767) as u32,
                    }
                };
                inputs.push((delay, input));
            }
            let n = inputs.len().max(1);
            let mut plan = ClientPlan {
                index: k,
                start_ms,
                inputs,
                stall: None,
                crash: None,
                hostile: None,
                hold: None,
                partition: None,
                latency: None,
                end_ms: horizon,
                reconnect: None,
                audio: AudioPlan::default(),
            };
            if chance(&mut rng, 25) {
                plan.reconnect = Some(range(&mut rng, 1, n as u64) as usize);
            }
            // Client 0 is kept well-behaved (only latency) when there are several clients, so
            // every run checks that others' faults do not stop a good client.
            let faulty = opts.clients == 1 || k != 0;
            if f.latency {
                let lo = range(&mut rng, 0, 20);
                plan.latency = Some((lo, lo + range(&mut rng, 0, 30)));
            }
            if faulty && f.stall && chance(&mut rng, 40) {
                plan.stall = Some((
                    range(&mut rng, 0, n as u64) as usize,
                    range(&mut rng, 500, 5000),
                ));
            }
            if faulty && f.hold && chance(&mut rng, 30) {
                plan.hold = Some((range(&mut rng, 0, 3000), range(&mut rng, 100, 3000)));
            }
            if faulty && f.partition && chance(&mut rng, 20) {
                plan.partition = Some((range(&mut rng, 0, 3000), range(&mut rng, 100, 2000)));
            }
            if faulty && f.crash && chance(&mut rng, 30) {
                plan.crash = Some((range(&mut rng, 0, n as u64) as usize, chance(&mut rng, 50)));
            }
            if faulty && f.hostile && chance(&mut rng, 30) {
                let len = range(&mut rng, 1, 64) as usize;
                let mut bytes = vec![0u8; len];
                rng.fill_bytes(&mut bytes);
                let target = match rng.next_u64() % 3 {
                    0 => HostileKind::UnknownType,
                    1 => HostileKind::Garbage,
                    _ => HostileKind::Arbitrary,
                };
                plan.hostile = Some((range(&mut rng, 0, n as u64) as usize, target, bytes));
            }
            plan
        })
        .collect::<Vec<_>>();
    draw_audio(opts, &mut plans);
    plans
}

/// The sound part of the plans, from its own stream of the seed.
fn draw_audio(opts: &Options, plans: &mut [ClientPlan]) {
    let mut rng = ChaCha20Rng::seed_from_u64(opts.seed ^ 0xa0d1_0a0d);
    let recorder = match plans.len() {
        0 => None,
        n => Some(rng.next_u64() % n as u64),
    };
    for p in plans.iter_mut() {
        p.audio.opus_playback = chance(&mut rng, 50);
        p.audio.opus_record = chance(&mut rng, 50);
        p.audio.record_seed = rng.next_u64();
        p.audio.records = recorder == Some(u64::from(p.index));
        let at = range(&mut rng, 0, 3000);
        if let Some((_, len)) = p.stall {
            p.audio.playback_stall = Some((at, len));
        }
    }
}
