//! The replay's sound card: a playback device that plays what the reference's guest played,
//! and a record device that starts and stops when the reference's did.
//!
//! The reference's guest sound is only seen through what the reference server sent: its
//! playback channel's `start`, `data`, `stop`, `volume` and `mute`, at their capture times.
//! [`ReplayPlayback`] makes the same calls at the same times: `Start` at a `start`, one
//! `Samples` per `data` (raw mode: exactly the PCM the message carried, so our server must
//! send the same bytes; Opus mode: the packet decoded by libopus, as the client heard it),
//! `Stop` at a `stop`, `Volume`/`Mute` at `volume`/`mute`. Its rate is the frequency the
//! reference's `start` announced (48 kHz when the capture has none). [`ReplayRecord`] does
//! the same with the reference's record channel (`start`, `stop`, `volume`, `mute`) and keeps
//! what our server hands it.
//!
//! Must not: read a clock (it is run at the capture's times) or panic on any capture.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use spice_captures::transcript::Channel;
use spice_proto::messages::playback::AudioDataMode;
use spice_proto::messages::{AnyMessage, Direction, PlaybackServer, RecordServer};
use spice_server::vdi::{
    PlaybackCall, PlaybackDevice, RecordCall, RecordDevice, AUDIO_FRAME_SAMPLES,
};

/// The rate when a capture does not say (the reference's default playback rate).
pub const DEFAULT_RATE: u32 = 48_000;

/// The calls a device makes, with the capture time (ms) of each.
type Timeline<C> = VecDeque<(u64, C)>;

/// A playback device replaying a captured playback channel.
pub struct ReplayPlayback {
    rate: u32,
    calls: Timeline<PlaybackCall>,
}

/// Whether the reference had playback compression off: it chose raw for a client that
/// offered Opus (`snd_desired_audio_mode`).
pub fn reference_compression_off(ch: &Channel) -> bool {
    let client_opus = ch
        .link
        .mess
        .caps
        .has_channel(spice_proto::caps::playback::OPUS);
    let mode = ch.messages.iter().find_map(|m| match &m.decoded {
        Ok(AnyMessage::PlaybackServer(PlaybackServer::Mode(md))) => Some(md.mode),
        _ => None,
    });
    client_opus && mode == Some(AudioDataMode::Raw)
}

impl ReplayPlayback {
    /// The calls the reference's guest made, from the captured playback channel (`at` turns a
    /// capture timestamp into replay ms). Without a `start` in the capture the device never
    /// plays, at the default rate.
    pub fn from_capture(ch: &Channel, at: impl Fn(f64) -> u64) -> ReplayPlayback {
        let mut rate = None;
        let mut mode = AudioDataMode::Raw;
        let mut decoder: Option<spice_audio::opus::OpusDecoder> = None;
        let mut calls = VecDeque::new();
        for m in ch
            .messages
            .iter()
            .filter(|m| m.dir == Direction::ServerToClient)
        {
            let t = at(m.at.ts.as_f64());
            let Ok(AnyMessage::PlaybackServer(msg)) = &m.decoded else {
                continue;
            };
            match msg {
                PlaybackServer::Mode(md) => {
                    mode = md.mode;
                    decoder = None;
                }
                PlaybackServer::Start(s) => {
                    rate.get_or_insert(s.frequency);
                    calls.push_back((t, PlaybackCall::Start));
                }
                PlaybackServer::Stop => calls.push_back((t, PlaybackCall::Stop)),
                PlaybackServer::Volume(v) => {
                    calls.push_back((t, PlaybackCall::Volume(v.volume.clone())))
                }
                PlaybackServer::Mute(mu) => calls.push_back((t, PlaybackCall::Mute(mu.mute != 0))),
                PlaybackServer::Data(d) => {
                    let frames = match mode {
                        AudioDataMode::Opus => {
                            let r = rate.unwrap_or(DEFAULT_RATE);
                            if decoder.is_none() {
                                decoder = spice_audio::opus::OpusDecoder::new(r).ok();
                            }
                            decoder
                                .as_mut()
                                .and_then(|dec| dec.decode(&d.data.0).ok())
                                .map(spice_audio::pcm::interleaved_to_frames)
                                .unwrap_or_default()
                        }
                        _ => spice_audio::pcm::bytes_to_frames(&d.data.0),
                    };
                    // The device contract: at most one buffer per call.
                    for chunk in frames.chunks(AUDIO_FRAME_SAMPLES) {
                        calls.push_back((t, PlaybackCall::Samples(chunk.to_vec())));
                    }
                }
                _ => {}
            }
        }
        ReplayPlayback {
            rate: rate.unwrap_or(DEFAULT_RATE),
            calls,
        }
    }
}

impl PlaybackDevice for ReplayPlayback {
    fn rate(&self) -> u32 {
        self.rate
    }

    fn run(&mut self, now_ms: u64) -> Vec<PlaybackCall> {
        let mut out = Vec::new();
        while self.calls.front().is_some_and(|(t, _)| *t <= now_ms) {
            if let Some((_, c)) = self.calls.pop_front() {
                out.push(c);
            }
        }
        out
    }

    fn next_wakeup(&self) -> Option<u64> {
        self.calls.front().map(|(t, _)| *t)
    }
}

/// A record device replaying the reference's record channel set-up; it keeps the frames our
/// server hands it.
#[derive(Clone)]
pub struct ReplayRecord {
    rate: u32,
    calls: Rc<RefCell<Timeline<RecordCall>>>,
    received: Rc<RefCell<Vec<u32>>>,
}

impl ReplayRecord {
    /// From the captured record channel, if any (none: a device that never starts).
    pub fn from_capture(ch: Option<&Channel>, at: impl Fn(f64) -> u64) -> ReplayRecord {
        let mut rate = None;
        let mut calls = VecDeque::new();
        for m in ch
            .iter()
            .flat_map(|c| c.messages.iter())
            .filter(|m| m.dir == Direction::ServerToClient)
        {
            let t = at(m.at.ts.as_f64());
            let Ok(AnyMessage::RecordServer(msg)) = &m.decoded else {
                continue;
            };
            match msg {
                RecordServer::Start(s) => {
                    rate.get_or_insert(s.frequency);
                    calls.push_back((t, RecordCall::Start));
                }
                RecordServer::Stop => calls.push_back((t, RecordCall::Stop)),
                RecordServer::Volume(v) => {
                    calls.push_back((t, RecordCall::Volume(v.volume.clone())))
                }
                RecordServer::Mute(mu) => calls.push_back((t, RecordCall::Mute(mu.mute != 0))),
                _ => {}
            }
        }
        ReplayRecord {
            rate: rate.unwrap_or(DEFAULT_RATE),
            calls: Rc::new(RefCell::new(calls)),
            received: Rc::default(),
        }
    }

    /// The frames our server handed the device.
    pub fn received(&self) -> Vec<u32> {
        self.received.borrow().clone()
    }
}

impl RecordDevice for ReplayRecord {
    fn rate(&self) -> u32 {
        self.rate
    }

    fn run(&mut self, now_ms: u64) -> Vec<RecordCall> {
        let mut calls = self.calls.borrow_mut();
        let mut out = Vec::new();
        while calls.front().is_some_and(|(t, _)| *t <= now_ms) {
            if let Some((_, c)) = calls.pop_front() {
                out.push(c);
            }
        }
        out
    }

    fn samples(&mut self, frames: &[u32]) {
        self.received.borrow_mut().extend_from_slice(frames);
    }

    fn next_wakeup(&self) -> Option<u64> {
        self.calls.borrow().front().map(|(t, _)| *t)
    }
}
