//! The simulated client's sound: a playback reader and a record sender, as spice-gtk's
//! `channel-playback.c` and `channel-record.c` behave.
//!
//! - Playback: every message of the channel is read and decoded (`mode`, `start`, `data`,
//!   `stop`, `volume`, `mute`, `latency`); `data` is decoded as the mode says (raw S16LE, or
//!   Opus through [`spice_audio::opus::OpusDecoder`]) and kept, with its timestamp, in a
//!   [`PlaybackLog`] per connection. A client whose plan stalls stops reading it for a while
//!   (the connection is flow-controlled, see [`crate::flow`], so the server sees it).
//! - Record: after the server's `start`, the client sends `mode` (Opus if it offered the
//!   capability and the server did too, at 48 kHz; raw otherwise), `start_mark` and then one
//!   `data` of 10 ms every 10 ms from its seeded PCM source ([`RecordSource`]) until `stop`
//!   or until it leaves; what it sent is kept in a [`RecordLog`].
//!
//! Must not: read the wall clock or take randomness other than its seed.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use spice_audio::opus::{OpusDecoder, OpusEncoder, FRAME_SAMPLES, FREQUENCY};
use spice_proto::caps;
use spice_proto::messages::playback::{AudioDataMode, AudioModeMsg, AudioPacket};
use spice_proto::messages::{Message, PlaybackServer, RecordClient, RecordServer};

use crate::client::{now_us, Conn};

/// What one playback connection received.
#[derive(Debug, Default, Clone)]
pub struct PlaybackLog {
    /// The client's index and the connection's number within it.
    pub client: u32,
    pub conn: u32,
    /// The client offered the `OPUS` capability.
    pub opus_offered: bool,
    /// Every `mode` (the first is the one that counts).
    pub modes: Vec<AudioDataMode>,
    /// `start`s: (channels, format, frequency, time).
    pub starts: Vec<(u32, u16, u32, u32)>,
    pub stops: u32,
    /// One entry per `data`: its timestamp and how many frames it decoded to, in order.
    pub packets: Vec<(u32, usize)>,
    /// Every decoded frame, in order (raw: the bytes as sent).
    pub frames: Vec<u32>,
    /// Volumes and mutes received.
    pub volumes: Vec<Vec<u16>>,
    pub mutes: Vec<bool>,
    /// Problems: undecodable messages, Opus errors, data before a mode.
    pub errors: Vec<String>,
    /// The reader stopped reading for a while (its plan's stall).
    pub stalled: bool,
    /// The connection ended from the server's side (closed or reset) before the client left.
    pub closed_by_server: bool,
}

impl PlaybackLog {
    /// The mode the server chose (its first `mode`).
    pub fn mode(&self) -> Option<AudioDataMode> {
        self.modes.first().copied()
    }
}

/// What one record connection sent, and what it heard.
#[derive(Debug, Default, Clone)]
pub struct RecordLog {
    pub client: u32,
    pub conn: u32,
    pub opus_offered: bool,
    /// The mode the client chose.
    pub mode: Option<AudioDataMode>,
    /// Frames sent, in order (raw: exactly these; Opus: these were encoded, one packet per
    /// 480 frames).
    pub frames: Vec<u32>,
    /// Packets sent.
    pub packets: u32,
    pub starts: u32,
    pub stops: u32,
    pub errors: Vec<String>,
    /// The connection ended from the server's side before the client left.
    pub closed_by_server: bool,
}

/// A client's record PCM: deterministic from its seed. Raw clients send frames unique within
/// the run (a sequence number from a seeded origin, split over both channels), so the sink's
/// frames can be matched one by one; Opus clients send a seeded tone (Opus is lossy: only
/// frame counts can be compared).
#[derive(Debug, Clone)]
pub struct RecordSource {
    next: u64,
    hz: u32,
    phase: u64,
}

impl RecordSource {
    pub fn new(seed: u64) -> Self {
        RecordSource {
            next: seed % (1 << 20),
            hz: 200 + (seed >> 20) as u32 % 3000,
            phase: 0,
        }
    }

    /// The next `n` raw frames: frame `s` of the sequence is `(s & 0xffff, s >> 16)`.
    pub fn raw(&mut self, n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| {
                let s = self.next;
                self.next += 1;
                spice_audio::pcm::frame(s as u16 as i16, (s >> 16) as u16 as i16)
            })
            .collect()
    }

    /// The next `n` frames of the tone (both channels).
    pub fn tone(&mut self, n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| {
                let turns =
                    (self.hz as u64 * self.phase % FREQUENCY as u64) as f64 / FREQUENCY as f64;
                self.phase = (self.phase + 1) % FREQUENCY as u64;
                let v = (spice_fake_devices::audio::sin_turns(turns) * 6000.0).round() as i16;
                spice_audio::pcm::frame(v, v)
            })
            .collect()
    }
}

/// The playback capabilities a client offers.
pub fn playback_caps(opus: bool) -> Vec<u32> {
    let mut v = vec![caps::playback::VOLUME, caps::playback::LATENCY];
    if opus {
        v.push(caps::playback::OPUS);
    }
    v
}

/// The record capabilities a client offers.
pub fn record_caps(opus: bool) -> Vec<u32> {
    let mut v = vec![caps::record::VOLUME];
    if opus {
        v.push(caps::record::OPUS);
    }
    v
}

/// Read a playback channel until told to stop (or the server ends it). `stall`: stop reading
/// for `len` ms, `at` ms after linking.
pub async fn playback_reader(
    mut conn: Conn,
    log: Rc<RefCell<PlaybackLog>>,
    stall: Option<(u64, u64)>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let linked_ms = now_us() / 1000;
    let mut decoder: Option<OpusDecoder> = None;
    let mut stalled = false;
    loop {
        if let Some((at, len)) = stall {
            if !stalled && now_us() / 1000 >= linked_ms + at {
                stalled = true;
                log.borrow_mut().stalled = true;
                tokio::select! {
                    biased;
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(Duration::from_millis(len)) => {}
                }
            }
        }
        let wake = stall
            .filter(|_| !stalled)
            .map(|(at, _)| linked_ms + at)
            .unwrap_or(u64::MAX);
        let m = tokio::select! {
            biased;
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_millis(wake.saturating_sub(now_us() / 1000))),
                if wake != u64::MAX => continue,
            r = conn.recv() => match r {
                Ok(m) => m,
                Err(_) => {
                    log.borrow_mut().closed_by_server = true;
                    return;
                }
            },
        };
        let mut l = log.borrow_mut();
        match PlaybackServer::decode(m.header.msg_type, &m.body) {
            Ok(PlaybackServer::Mode(AudioModeMsg { mode, .. })) => {
                l.modes.push(mode);
                decoder = None;
                if mode == AudioDataMode::Opus {
                    match OpusDecoder::new(FREQUENCY) {
                        Ok(d) => decoder = Some(d),
                        Err(e) => l.errors.push(format!("no Opus decoder: {e}")),
                    }
                }
            }
            Ok(PlaybackServer::Start(s)) => {
                l.starts
                    .push((s.channels, s.format.to_raw(), s.frequency, s.time));
            }
            Ok(PlaybackServer::Stop) => l.stops += 1,
            Ok(PlaybackServer::Data(AudioPacket { time, data })) => {
                let frames = match (l.mode(), decoder.as_mut()) {
                    (Some(AudioDataMode::Raw), _) => {
                        if data.0.len() % 4 != 0 {
                            l.errors.push(format!("raw data of {} bytes", data.0.len()));
                        }
                        spice_audio::pcm::bytes_to_frames(&data.0)
                    }
                    (Some(AudioDataMode::Opus), Some(d)) => match d.decode(&data.0) {
                        Ok(s) => spice_audio::pcm::interleaved_to_frames(s),
                        Err(e) => {
                            l.errors.push(format!("Opus packet does not decode: {e}"));
                            Vec::new()
                        }
                    },
                    (mode, _) => {
                        l.errors.push(format!("data in mode {mode:?}"));
                        Vec::new()
                    }
                };
                l.packets.push((time, frames.len()));
                l.frames.extend_from_slice(&frames);
            }
            Ok(PlaybackServer::Volume(v)) => l.volumes.push(v.volume),
            Ok(PlaybackServer::Mute(m)) => l.mutes.push(m.mute != 0),
            Ok(_) => {}
            Err(e) => l.errors.push(format!(
                "undecodable playback message {}: {e}",
                m.header.msg_type
            )),
        }
    }
}

/// Send record data while the server says it records; until told to stop.
pub async fn record_sender(
    mut conn: Conn,
    log: Rc<RefCell<RecordLog>>,
    mut source: RecordSource,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let server_opus = conn.server_caps.has_channel(caps::record::OPUS);
    let opus_offered = log.borrow().opus_offered;
    let mut encoder: Option<OpusEncoder> = None;
    // Some(frequency) between the server's start and stop.
    let mut started: Option<u32> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => return,
            r = conn.recv() => {
                let m = match r {
                    Ok(m) => m,
                    Err(_) => {
                        log.borrow_mut().closed_by_server = true;
                        return;
                    }
                };
                match RecordServer::decode(m.header.msg_type, &m.body) {
                    Ok(RecordServer::Start(s)) => {
                        log.borrow_mut().starts += 1;
                        let opus = opus_offered && server_opus && s.frequency == FREQUENCY;
                        let mode = if opus { AudioDataMode::Opus } else { AudioDataMode::Raw };
                        encoder = None;
                        if opus {
                            match OpusEncoder::new(FREQUENCY) {
                                Ok(e) => encoder = Some(e),
                                Err(e) => log.borrow_mut().errors.push(format!("no Opus encoder: {e}")),
                            }
                        }
                        let t = (now_us() / 1000) as u32;
                        let sent = conn
                            .send(&RecordClient::Mode(AudioModeMsg { time: t, mode, data: Default::default() }))
                            .await
                            .and(conn.send(&RecordClient::StartMark(t)).await);
                        if sent.is_err() {
                            log.borrow_mut().closed_by_server = true;
                            return;
                        }
                        log.borrow_mut().mode = Some(mode);
                        started = Some(s.frequency);
                    }
                    Ok(RecordServer::Stop) => {
                        log.borrow_mut().stops += 1;
                        started = None;
                    }
                    Ok(_) => {}
                    Err(e) => log.borrow_mut().errors.push(format!("undecodable record message {}: {e}", m.header.msg_type)),
                }
            }
            _ = tick.tick() => {
                if started.is_none() {
                    continue;
                }
                let (frames, payload) = match encoder.as_mut() {
                    Some(enc) => {
                        let f = source.tone(FRAME_SAMPLES);
                        match enc.encode(&spice_audio::pcm::frames_to_interleaved(&f)) {
                            Ok(p) => (f, p),
                            Err(e) => {
                                log.borrow_mut().errors.push(format!("Opus encode: {e}"));
                                continue;
                            }
                        }
                    }
                    None => {
                        let f = source.raw(FRAME_SAMPLES);
                        let b = spice_audio::pcm::frames_to_bytes(&f);
                        (f, b)
                    }
                };
                let t = (now_us() / 1000) as u32;
                if conn.send(&RecordClient::Data(AudioPacket { time: t, data: spice_proto::wire::Bytes(payload) })).await.is_err() {
                    log.borrow_mut().closed_by_server = true;
                    return;
                }
                let mut l = log.borrow_mut();
                l.frames.extend_from_slice(&frames);
                l.packets += 1;
            }
        }
    }
}
