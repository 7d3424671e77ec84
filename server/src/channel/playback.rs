//! The playback channel: the guest's sound to one client, as spice-server's `sound.cpp` sends
//! it and spice-gtk's `channel-playback.c` expects it.
//!
//! On link it sends `mode` (Opus when the server's `playback_compression` is on, the client
//! has the `OPUS` capability and the device's rate is one Opus runs at; raw otherwise), then
//! `start` if the device is playing, then `volume` and `mute` if the device ever set a volume
//! and the client has the `VOLUME` capability. Then, as the device makes its calls (relayed by
//! the server, see [`crate::vdi::PlaybackCall`]): `start` (2 channels, S16, the device's rate,
//! the multimedia time), one `data` per buffer the device put (raw: its frames as S16LE bytes;
//! Opus: one packet per frame of 10 ms, a short buffer padded with silence), `stop`, and
//! `volume`/`mute` changes. `latency` goes to clients with the `LATENCY` capability when the
//! server's multimedia-time latency changes during playback
//! ([`crate::Server::set_mm_time_latency`]).
//!
//! Timestamps: each `start` and `data` carries the multimedia time (the server's `now_ms` as
//! a wrapping `u32`, [`crate::channel::main::MmTime`]) at which the device started or put the
//! buffer. Several buffers put in the same millisecond get one millisecond more each, so the
//! timestamps of one channel strictly increase (modulo 2^32), as spice-gtk insists
//! (`playback_handle_data` warns on a timestamp older than the last).
//!
//! Bounded memory: buffers wait in a queue of at most `Budgets::playback_queue_frames` frames
//! (the oldest dropped, counted in [`AudioStats`] and logged at most once a second), and are
//! handed to the channel core only while it can send and holds less than
//! [`CORE_AUDIO_BYTES`]: the reference sends a sound message only when its pipe is empty, so a
//! client that falls behind loses old audio rather than making the server buffer it. Control
//! messages (`start`, `stop`, `volume`, `mute`, `latency`) are state, coalesced: whatever the
//! device did meanwhile, the client gets the current state once.
//!
//! Must not: reach the device (the server relays its calls); read a clock; queue audio past
//! the budget.

use std::collections::VecDeque;

use spice_audio::opus::OpusEncoder;
use spice_proto::caps;
use spice_proto::messages::playback::{
    AudioDataMode, AudioFmt, AudioModeMsg, AudioMute, AudioPacket, AudioVolume, PlaybackStart,
};
use spice_proto::messages::{Message, PlaybackClient, PlaybackServer};

use crate::channel::core::{ChannelCore, ChannelError};
use crate::channel::main::MmTime;
use crate::link::Linked;
use crate::server::{ChannelImpl, Shared};
use crate::vdi::{PlaybackDevice, AUDIO_FRAME_SAMPLES};

/// Bytes of audio messages the channel hands its core at most (a few 10 ms raw buffers): the
/// rest waits in the channel's own queue, where the oldest can still be dropped.
pub const CORE_AUDIO_BYTES: usize = 8 * 1024;

/// A dropped-frames log line at most this often (server time), with the count since the last.
pub const DROP_LOG_INTERVAL_MS: u64 = 1_000;

/// With [`crate::server::Breakage::DropPlaybackFrame`], the data buffer (counted from 1 on
/// each channel) the channel silently skips.
pub const BROKEN_FRAME: u64 = 10;

/// Audio counters, summed over every playback and record channel the server has had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AudioStats {
    /// Playback `data` messages sent.
    pub playback_buffers_sent: u64,
    /// Frames (stereo samples) those messages carried (before Opus padding).
    pub playback_frames_sent: u64,
    /// Frames dropped from a playback queue because the client did not keep up
    /// (`Budgets::playback_queue_frames`).
    pub playback_frames_dropped: u64,
    /// Frames the device put while no client was linked (the reference's `get_buffer`
    /// then hands the device no buffer).
    pub playback_frames_unheard: u64,
    /// Decoded record frames handed to the record device.
    pub record_frames_delivered: u64,
    /// Record frames received (and checked) while the device was not recording: dropped, as
    /// the reference's ring is reset at `start`.
    pub record_frames_ignored: u64,
}

/// The playback device and what the server knows of its state, shared by the channels.
#[derive(Default)]
pub(crate) struct PlaybackState {
    pub(crate) device: Option<Box<dyn PlaybackDevice>>,
    /// The device's rate (Hz), read once when it is attached.
    pub(crate) rate: u32,
    /// Between the device's `Start` and `Stop`.
    pub(crate) active: bool,
    /// The last volume the device set (empty: never set).
    pub(crate) volume: Vec<u16>,
    pub(crate) mute: bool,
    /// The one playback client (the reference serves one; a newer link replaces it).
    pub(crate) client: Option<crate::server::ConnId>,
}

/// The server's capabilities for the playback channel (`PlaybackChannel`'s constructor and
/// `spice_server_set_playback_rate`): `VOLUME`, and `OPUS` when the rate allows. CELT is
/// never offered.
pub fn server_caps(rate: u32) -> Vec<u32> {
    let mut v = vec![caps::playback::VOLUME];
    if spice_audio::opus::is_capable(rate) {
        v.push(caps::playback::OPUS);
    }
    v
}

/// The mode for a client (`snd_desired_audio_mode`).
pub fn desired_mode(compression: bool, rate: u32, client_opus: bool) -> AudioDataMode {
    if compression && client_opus && spice_audio::opus::is_capable(rate) {
        AudioDataMode::Opus
    } else {
        AudioDataMode::Raw
    }
}

/// One device buffer waiting to be sent.
#[derive(Debug)]
struct Buffer {
    /// The device stream (counted by `start`s) it belongs to.
    stream: u64,
    /// The `start` timestamp of that stream.
    stream_time: u32,
    time: u32,
    frames: Vec<u32>,
}

/// One client's playback channel.
pub struct PlaybackChannel {
    core: ChannelCore,
    mode: AudioDataMode,
    encoder: Option<OpusEncoder>,
    /// Frames per `data` message: the device's buffer (480) raw, 10 ms in Opus.
    packet_frames: usize,
    rate: u32,
    volume_cap: bool,
    latency_cap: bool,
    queue: VecDeque<Buffer>,
    queued_frames: usize,
    cap_frames: usize,
    /// Streams the device started on this channel (0: none yet).
    stream: u64,
    /// The stream the device is playing now, with its `start` timestamp.
    device_stream: Option<(u64, u32)>,
    /// The stream the client was last told started (None: stopped or never started).
    client_stream: Option<u64>,
    volume_pending: bool,
    mute_pending: bool,
    latency_pending: Option<u32>,
    /// The last timestamp handed out (start or data).
    last_time: Option<u32>,
    /// Data buffers taken from the queue (for the breakage).
    taken: u64,
    drop_broken: bool,
    dropped_unlogged: u64,
    drop_logged_ms: Option<u64>,
}

impl PlaybackChannel {
    pub(crate) fn new(
        core: ChannelCore,
        linked: &Linked,
        shared: &mut Shared,
        now_ms: u64,
    ) -> Self {
        let client = &linked.mess.caps;
        let rate = shared.playback.rate;
        let mut mode = desired_mode(
            shared.cfg.playback_compression,
            rate,
            client.has_channel(caps::playback::OPUS),
        );
        let mut encoder = None;
        if mode == AudioDataMode::Opus {
            match OpusEncoder::new(rate) {
                Ok(e) => encoder = Some(e),
                Err(e) => {
                    // As the reference: the client gets raw audio.
                    tracing::warn!("playback: Opus encoder not created ({e}); raw mode");
                    mode = AudioDataMode::Raw;
                }
            }
        }
        let packet_frames = encoder
            .as_ref()
            .map_or(AUDIO_FRAME_SAMPLES, |e| e.frame_samples().max(1));
        tracing::debug!(mode = mode.name(), rate, "playback client mode");
        let mut ch = PlaybackChannel {
            core,
            mode,
            encoder,
            packet_frames,
            rate,
            volume_cap: client.has_channel(caps::playback::VOLUME),
            latency_cap: client.has_channel(caps::playback::LATENCY),
            queue: VecDeque::new(),
            queued_frames: 0,
            cap_frames: shared.cfg.budgets.playback_queue_frames,
            stream: 0,
            device_stream: None,
            client_stream: None,
            volume_pending: !shared.playback.volume.is_empty(),
            mute_pending: !shared.playback.volume.is_empty(),
            latency_pending: None,
            last_time: None,
            taken: 0,
            drop_broken: shared.cfg.breakage == Some(crate::server::Breakage::DropPlaybackFrame),
            dropped_unlogged: 0,
            drop_logged_ms: None,
        };
        ch.core.send(&PlaybackServer::Mode(AudioModeMsg {
            time: MmTime::at(now_ms),
            mode,
            data: Default::default(),
        }));
        if shared.playback.active {
            ch.device_start(now_ms);
        }
        ch
    }

    pub fn core(&self) -> &ChannelCore {
        &self.core
    }

    /// The codec this client gets.
    pub fn mode(&self) -> AudioDataMode {
        self.mode
    }

    /// Frames waiting in this channel's queue.
    pub fn queued_frames(&self) -> usize {
        self.queued_frames
    }

    /// Whether the device is playing to this client (between its `start` and `stop`).
    pub(crate) fn is_active(&self) -> bool {
        self.device_stream.is_some()
    }

    /// A timestamp at multimedia time `now_ms`, strictly after the last one given out.
    fn stamp(&mut self, now_ms: u64) -> u32 {
        let mm = MmTime::at(now_ms);
        let t = match self.last_time {
            Some(last) if (mm.wrapping_sub(last) as i32) <= 0 => last.wrapping_add(1),
            _ => mm,
        };
        self.last_time = Some(t);
        t
    }

    /// The device started playing (`spice_server_playback_start`).
    pub(crate) fn device_start(&mut self, now_ms: u64) {
        if self.device_stream.is_some() {
            return;
        }
        self.stream += 1;
        let t = self.stamp(now_ms);
        self.device_stream = Some((self.stream, t));
    }

    /// The device stopped (`spice_server_playback_stop`).
    pub(crate) fn device_stop(&mut self) {
        self.device_stream = None;
    }

    /// The device put a buffer (`spice_server_playback_put_samples`). Outside a stream it is
    /// ignored (a device must start first; the reference hands it no buffer then).
    pub(crate) fn device_samples(&mut self, frames: &[u32], shared: &mut Shared, now_ms: u64) {
        let Some((stream, stream_time)) = self.device_stream else {
            shared.audio_stats.playback_frames_unheard += frames.len() as u64;
            return;
        };
        for chunk in frames.chunks(self.packet_frames) {
            let time = self.stamp(now_ms);
            // Oldest out first, so the queue never holds more than the budget (or one buffer,
            // if the budget is smaller than that).
            while !self.queue.is_empty() && self.queued_frames + chunk.len() > self.cap_frames {
                if let Some(old) = self.queue.pop_front() {
                    self.queued_frames -= old.frames.len();
                    self.dropped(old.frames.len() as u64, shared, now_ms);
                }
            }
            self.queued_frames += chunk.len();
            self.queue.push_back(Buffer {
                stream,
                stream_time,
                time,
                frames: chunk.to_vec(),
            });
        }
    }

    fn dropped(&mut self, frames: u64, shared: &mut Shared, now_ms: u64) {
        shared.audio_stats.playback_frames_dropped += frames;
        self.dropped_unlogged += frames;
        let due = self
            .drop_logged_ms
            .map_or(true, |t| now_ms >= t.saturating_add(DROP_LOG_INTERVAL_MS));
        if due {
            tracing::warn!(
                frames = self.dropped_unlogged,
                total = shared.audio_stats.playback_frames_dropped,
                cap = self.cap_frames,
                "playback: client behind, oldest audio dropped (budget playback_queue_frames)"
            );
            self.dropped_unlogged = 0;
            self.drop_logged_ms = Some(now_ms);
        }
    }

    /// The device's volume changed (already stored in the shared state).
    pub(crate) fn volume_changed(&mut self, volume: &[u16]) {
        if !volume.is_empty() {
            self.volume_pending = true;
        }
    }

    pub(crate) fn mute_changed(&mut self) {
        self.mute_pending = true;
    }

    /// The multimedia-time latency the client should buffer (`snd_set_playback_latency`);
    /// only for clients with the `LATENCY` capability.
    pub(crate) fn set_latency(&mut self, latency_ms: u32) {
        if self.latency_cap {
            self.latency_pending = Some(latency_ms);
        }
    }

    /// Room for audio data in the core.
    fn data_room(&self) -> bool {
        self.core.can_send() && self.core.queued_bytes() < CORE_AUDIO_BYTES
    }

    fn send_data(&mut self, b: Buffer, shared: &mut Shared) {
        self.taken += 1;
        if self.drop_broken && self.taken == BROKEN_FRAME {
            // Breakage::DropPlaybackFrame: silently lost.
            return;
        }
        let data = match &mut self.encoder {
            None => spice_audio::pcm::frames_to_bytes(&b.frames),
            Some(enc) => {
                let mut frames = b.frames.clone();
                frames.resize(self.packet_frames, 0);
                match enc.encode(&spice_audio::pcm::frames_to_interleaved(&frames)) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!("playback: Opus encode failed ({e}); buffer skipped");
                        return;
                    }
                }
            }
        };
        shared.audio_stats.playback_buffers_sent += 1;
        shared.audio_stats.playback_frames_sent += b.frames.len() as u64;
        self.core.send(&PlaybackServer::Data(AudioPacket {
            time: b.time,
            data: data.into(),
        }));
    }

    fn start_msg(&self, time: u32) -> PlaybackServer {
        PlaybackServer::Start(PlaybackStart {
            channels: spice_audio::CHANNELS as u32,
            format: AudioFmt::S16,
            frequency: self.rate,
            time,
        })
    }
}

impl ChannelImpl for PlaybackChannel {
    fn core_mut(&mut self) -> &mut ChannelCore {
        &mut self.core
    }

    fn handle_bytes(
        &mut self,
        data: &[u8],
        _shared: &mut Shared,
        now_ms: u64,
    ) -> Result<(), ChannelError> {
        for raw in self.core.handle_bytes(data, now_ms)? {
            // The playback channel has no client messages of its own.
            match PlaybackClient::decode(raw.header.msg_type, &raw.body)? {
                PlaybackClient::Base(_) => {}
                m => {
                    return Err(ChannelError::Protocol(format!(
                        "unexpected playback message type {}",
                        m.msg_type()
                    )))
                }
            }
        }
        Ok(())
    }

    /// Volume, mute and latency when they changed; then the queue in order, with `start` and
    /// `stop` wherever the stream the client knows differs from the next buffer's (or, with
    /// nothing queued, from the device's).
    fn pump(&mut self, shared: &mut Shared, _now_ms: u64) {
        loop {
            if !self.core.can_send() {
                return;
            }
            if self.volume_pending {
                self.volume_pending = false;
                if self.volume_cap && !shared.playback.volume.is_empty() {
                    self.core.send(&PlaybackServer::Volume(AudioVolume {
                        volume: shared.playback.volume.clone(),
                    }));
                }
                continue;
            }
            if self.mute_pending {
                self.mute_pending = false;
                if self.volume_cap {
                    self.core.send(&PlaybackServer::Mute(AudioMute {
                        mute: u8::from(shared.playback.mute),
                    }));
                }
                continue;
            }
            if let Some(l) = self.latency_pending.take() {
                self.core.send(&PlaybackServer::Latency(l));
                continue;
            }
            let (next_stream, next_time) = match self.queue.front() {
                Some(b) => (Some(b.stream), b.stream_time),
                None => match self.device_stream {
                    Some((s, t)) => (Some(s), t),
                    None => (None, 0),
                },
            };
            match (self.client_stream, next_stream) {
                (Some(c), Some(n)) if c == n => {
                    if self.queue.is_empty() || !self.data_room() {
                        return;
                    }
                    if let Some(b) = self.queue.pop_front() {
                        self.queued_frames -= b.frames.len();
                        self.send_data(b, shared);
                    }
                }
                (Some(_), _) => {
                    self.core.send(&PlaybackServer::Stop);
                    self.client_stream = None;
                }
                (None, Some(n)) => {
                    let m = self.start_msg(next_time);
                    self.core.send(&m);
                    self.client_stream = Some(n);
                }
                (None, None) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_follow_the_reference_table() {
        use AudioDataMode::{Opus, Raw};
        for (compression, rate, client_opus, want) in [
            (true, 48_000, true, Opus),
            (true, 48_000, false, Raw),
            (false, 48_000, true, Raw),
            (false, 48_000, false, Raw),
            (true, 44_100, true, Raw),
            (true, 16_000, true, Opus),
        ] {
            assert_eq!(
                desired_mode(compression, rate, client_opus),
                want,
                "{compression} {rate} {client_opus}"
            );
        }
    }

    #[test]
    fn caps_offer_opus_only_at_opus_rates_and_never_celt() {
        assert_eq!(
            server_caps(48_000),
            vec![caps::playback::VOLUME, caps::playback::OPUS]
        );
        assert_eq!(server_caps(44_100), vec![caps::playback::VOLUME]);
        assert!(!server_caps(48_000).contains(&caps::playback::CELT_0_5_1));
    }
}
