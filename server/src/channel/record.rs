//! The record channel: the client's microphone to the guest, as spice-server's `sound.cpp`
//! takes it from spice-gtk's `channel-record.c`.
//!
//! The server offers `VOLUME`, and `OPUS` when the device's rate is one Opus runs at. On link
//! it sends `volume` and `mute` if the device ever set a volume (clients with `VOLUME`), and
//! `start` (2 channels, S16, the device's rate) if the device is recording. Then the device's
//! calls, relayed by the server: `start`, `stop` (coalesced: the client gets the device's
//! current state once), `volume`, `mute`.
//!
//! From the client: `mode` (raw, or Opus if we offered it: any other mode closes the channel,
//! as the reference refuses a codec it cannot create), `start_mark` (kept), and `data`: raw
//! audio must be whole stereo S16 frames, an Opus packet must decode (libopus, at most one
//! 10 ms frame); either may carry at most `Budgets::record_ring_frames` frames. A packet that
//! breaks these closes this channel (a log line; nothing else is affected). Decoded frames
//! go to [`crate::vdi::RecordDevice::samples`] at once, in order, each once, while the device
//! records; before its `start` or after its `stop` they are checked and dropped (the
//! reference's ring is reset at `start`, so what came before is never read). Data before any
//! `mode` is raw (the reference's default).
//!
//! Must not: buffer the client's audio (it goes straight to the device); trust a length.

use spice_audio::opus::OpusDecoder;
use spice_proto::caps;
use spice_proto::messages::playback::{AudioDataMode, AudioFmt, AudioMute, AudioVolume};
use spice_proto::messages::record::RecordStart;
use spice_proto::messages::{Message, RecordClient, RecordServer};

use crate::channel::core::{ChannelCore, ChannelError};
use crate::link::Linked;
use crate::server::{ChannelImpl, Shared};
use crate::vdi::RecordDevice;

/// The record device and what the server knows of its state, shared by the channels.
#[derive(Default)]
pub(crate) struct RecordState {
    pub(crate) device: Option<Box<dyn RecordDevice>>,
    pub(crate) rate: u32,
    pub(crate) active: bool,
    pub(crate) volume: Vec<u16>,
    pub(crate) mute: bool,
    /// The one record client (a newer link replaces it, as in the reference).
    pub(crate) client: Option<crate::server::ConnId>,
}

/// The server's record capabilities (`RecordChannel`'s constructor and
/// `spice_server_set_record_rate`): `VOLUME`, and `OPUS` when the rate allows.
pub fn server_caps(rate: u32) -> Vec<u32> {
    let mut v = vec![caps::record::VOLUME];
    if spice_audio::opus::is_capable(rate) {
        v.push(caps::record::OPUS);
    }
    v
}

/// Why a record `data` message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordDataError {
    #[error("raw record data of {0} bytes is not whole stereo S16 frames")]
    NotWholeFrames(usize),
    #[error("record data of {frames} frames exceeds the budget record_ring_frames ({limit})")]
    TooLarge { frames: usize, limit: usize },
    #[error("Opus record packet refused: {0}")]
    Opus(#[from] spice_audio::AudioError),
}

/// The record channel's decoding of client audio: a mode and, in Opus mode, a decoder. Also
/// what the `opus_decode` fuzz target drives.
#[derive(Debug)]
pub struct RecordDecoder {
    rate: u32,
    mode: AudioDataMode,
    opus: Option<OpusDecoder>,
    max_frames: usize,
}

impl RecordDecoder {
    /// Raw mode (the reference's default) for a device at `rate` Hz, at most `max_frames`
    /// frames per packet.
    pub fn new(rate: u32, max_frames: usize) -> Self {
        RecordDecoder {
            rate,
            mode: AudioDataMode::Raw,
            opus: None,
            max_frames,
        }
    }

    pub fn mode(&self) -> AudioDataMode {
        self.mode
    }

    /// The client's `mode`: raw, or Opus if the rate allows (what we offered). Anything else
    /// is refused (the channel closes).
    pub fn set_mode(&mut self, mode: AudioDataMode) -> Result<(), String> {
        match mode {
            AudioDataMode::Raw => {
                self.mode = mode;
                self.opus = None;
                Ok(())
            }
            AudioDataMode::Opus if spice_audio::opus::is_capable(self.rate) => {
                let d = OpusDecoder::new(self.rate)
                    .map_err(|e| format!("record: Opus decoder not created: {e}"))?;
                self.mode = mode;
                self.opus = Some(d);
                Ok(())
            }
            m => Err(format!(
                "record mode {} ({}) was never offered (rate {} Hz)",
                m.name(),
                m.to_raw(),
                self.rate
            )),
        }
    }

    /// One `data` packet's audio as stereo frames.
    pub fn decode(&mut self, data: &[u8]) -> Result<Vec<u32>, RecordDataError> {
        let frames = match &mut self.opus {
            None => {
                if data.len() % spice_audio::FRAME_BYTES != 0 {
                    return Err(RecordDataError::NotWholeFrames(data.len()));
                }
                let n = data.len() / spice_audio::FRAME_BYTES;
                if n > self.max_frames {
                    return Err(RecordDataError::TooLarge {
                        frames: n,
                        limit: self.max_frames,
                    });
                }
                spice_audio::pcm::bytes_to_frames(data)
            }
            Some(d) => {
                let pcm = d.decode(data)?;
                let n = pcm.len() / spice_audio::CHANNELS;
                if n > self.max_frames {
                    return Err(RecordDataError::TooLarge {
                        frames: n,
                        limit: self.max_frames,
                    });
                }
                spice_audio::pcm::interleaved_to_frames(pcm)
            }
        };
        Ok(frames)
    }
}

/// One client's record channel.
pub struct RecordChannel {
    core: ChannelCore,
    decoder: RecordDecoder,
    volume_cap: bool,
    /// The device records (its `start` came, its `stop` did not).
    device_active: bool,
    /// What the client was last told (`start` sent and no `stop` since).
    client_active: bool,
    volume_pending: bool,
    mute_pending: bool,
    /// The client's `mode` time and `start_mark` (kept, as the reference does).
    mode_time: u32,
    start_time: u32,
}

impl RecordChannel {
    pub(crate) fn new(core: ChannelCore, linked: &Linked, shared: &Shared) -> Self {
        let set = !shared.record.volume.is_empty();
        RecordChannel {
            core,
            decoder: RecordDecoder::new(shared.record.rate, shared.cfg.budgets.record_ring_frames),
            volume_cap: linked.mess.caps.has_channel(caps::record::VOLUME),
            device_active: shared.record.active,
            client_active: false,
            volume_pending: set,
            mute_pending: set,
            mode_time: 0,
            start_time: 0,
        }
    }

    pub fn core(&self) -> &ChannelCore {
        &self.core
    }

    /// The codec the client said it sends.
    pub fn mode(&self) -> AudioDataMode {
        self.decoder.mode()
    }

    /// The client's `start_mark` and `mode` times.
    pub fn times(&self) -> (u32, u32) {
        (self.start_time, self.mode_time)
    }

    pub(crate) fn device_start(&mut self) {
        self.device_active = true;
    }

    pub(crate) fn device_stop(&mut self) {
        self.device_active = false;
    }

    pub(crate) fn volume_changed(&mut self, volume: &[u16]) {
        if !volume.is_empty() {
            self.volume_pending = true;
        }
    }

    pub(crate) fn mute_changed(&mut self) {
        self.mute_pending = true;
    }

    fn data(&mut self, data: &[u8], shared: &mut Shared) -> Result<(), ChannelError> {
        let frames = self
            .decoder
            .decode(data)
            .map_err(|e| ChannelError::Protocol(e.to_string()))?;
        if frames.is_empty() {
            return Ok(());
        }
        match shared.record.device.as_mut() {
            Some(dev) if self.device_active => {
                dev.samples(&frames);
                shared.audio_stats.record_frames_delivered += frames.len() as u64;
            }
            _ => shared.audio_stats.record_frames_ignored += frames.len() as u64,
        }
        Ok(())
    }
}

impl ChannelImpl for RecordChannel {
    fn core_mut(&mut self) -> &mut ChannelCore {
        &mut self.core
    }

    fn handle_bytes(
        &mut self,
        data: &[u8],
        shared: &mut Shared,
        now_ms: u64,
    ) -> Result<(), ChannelError> {
        for raw in self.core.handle_bytes(data, now_ms)? {
            match RecordClient::decode(raw.header.msg_type, &raw.body)? {
                RecordClient::Data(p) => self.data(&p.data.0, shared)?,
                RecordClient::Mode(m) => {
                    self.mode_time = m.time;
                    self.decoder
                        .set_mode(m.mode)
                        .map_err(ChannelError::Protocol)?;
                    tracing::debug!(mode = m.mode.name(), "record client mode");
                }
                RecordClient::StartMark(t) => self.start_time = t,
                RecordClient::Base(_) => {}
                m @ RecordClient::Unknown { .. } => {
                    return Err(ChannelError::Protocol(format!(
                        "unknown record message type {}",
                        m.msg_type()
                    )))
                }
            }
        }
        Ok(())
    }

    /// `start`/`stop` when the device's state differs from what the client knows, then
    /// volume and mute when they changed.
    fn pump(&mut self, shared: &mut Shared, _now_ms: u64) {
        if self.client_active != self.device_active && self.core.can_send() {
            self.client_active = self.device_active;
            if self.device_active {
                self.core.send(&RecordServer::Start(RecordStart {
                    channels: spice_audio::CHANNELS as u32,
                    format: AudioFmt::S16,
                    frequency: shared.record.rate,
                }));
            } else {
                self.core.send(&RecordServer::Stop);
            }
        }
        if self.volume_pending && self.core.can_send() {
            self.volume_pending = false;
            if self.volume_cap && !shared.record.volume.is_empty() {
                self.core.send(&RecordServer::Volume(AudioVolume {
                    volume: shared.record.volume.clone(),
                }));
            }
        }
        if self.mute_pending && self.core.can_send() {
            self.mute_pending = false;
            if self.volume_cap {
                self.core.send(&RecordServer::Mute(AudioMute {
                    mute: u8::from(shared.record.mute),
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn raw_must_be_whole_frames_within_the_budget() {
        let mut d = RecordDecoder::new(48_000, 8);
        assert_eq!(d.decode(&[1, 0, 2, 0]).unwrap(), vec![0x0002_0001]);
        assert_eq!(d.decode(&[]).unwrap(), Vec::<u32>::new());
        assert_eq!(
            d.decode(&[0; 6]).unwrap_err(),
            RecordDataError::NotWholeFrames(6)
        );
        assert_eq!(
            d.decode(&[0; 36]).unwrap_err(),
            RecordDataError::TooLarge {
                frames: 9,
                limit: 8
            }
        );
    }

    #[test]
    fn modes_never_offered_are_refused() {
        let mut d = RecordDecoder::new(44_100, 8192);
        assert!(d.set_mode(AudioDataMode::Opus).is_err());
        assert!(d.set_mode(AudioDataMode::Celt051).is_err());
        assert!(d.set_mode(AudioDataMode::Invalid).is_err());
        assert!(d.set_mode(AudioDataMode::from_raw(77)).is_err());
        assert!(d.set_mode(AudioDataMode::Raw).is_ok());
        let mut d = RecordDecoder::new(48_000, 8192);
        assert!(d.set_mode(AudioDataMode::Opus).is_ok());
        assert_eq!(d.mode(), AudioDataMode::Opus);
        assert!(d.set_mode(AudioDataMode::Celt051).is_err());
        assert_eq!(
            server_caps(48_000),
            vec![caps::record::VOLUME, caps::record::OPUS]
        );
        assert_eq!(server_caps(44_100), vec![caps::record::VOLUME]);
    }

    #[test]
    fn opus_round_trips_and_garbage_is_an_error() {
        let mut enc = spice_audio::OpusEncoder::new(48_000).unwrap();
        let mut d = RecordDecoder::new(48_000, 8192);
        d.set_mode(AudioDataMode::Opus).unwrap();
        let pcm = vec![0i16; 960];
        let p = enc.encode(&pcm).unwrap();
        assert_eq!(d.decode(&p).unwrap().len(), 480);
        assert!(d.decode(&[]).is_err());
        assert!(d.decode(&[0xff; 2000]).is_err());
    }

    proptest! {
        #[test]
        fn decoding_never_panics(opus in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut d = RecordDecoder::new(48_000, 8192);
            if opus {
                d.set_mode(AudioDataMode::Opus).unwrap();
            }
            if let Ok(f) = d.decode(&data) {
                prop_assert!(f.len() <= 8192);
            }
        }
    }
}
