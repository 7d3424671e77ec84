//! The playback channel: audio from the server (`start`, `data`, `stop`), its codec
//! (`mode`), volume, mute and latency. The client sends only base messages.
//!
//! This module owns the playback messages and the audio structures the record channel
//! shares ([`AudioVolume`], [`AudioMute`], [`AudioPacket`], [`AudioModeMsg`]). It does not
//! decode audio.

use super::{BaseClient, BaseServer};
use crate::error::Result;
use crate::wire::{Bytes, Decode, Encode, Reader, Writer};
use crate::{channel_messages, wire_enum, wire_struct};

wire_enum! {
    /// `audio_data_mode`: the audio codec.
    pub enum AudioDataMode: u16 {
        Invalid = 0 => "invalid",
        Raw = 1 => "raw",
        /// Deprecated; no current peer uses it.
        Celt051 = 2 => "celt_0_5_1",
        Opus = 3 => "opus",
    }
}

wire_enum! {
    /// `audio_fmt`: the sample format.
    pub enum AudioFmt: u16 {
        Invalid = 0 => "invalid",
        S16 = 1 => "s16",
    }
}

wire_struct! {
    /// Playback's `data` and record's client `data` (`SpiceMsgPlaybackPacket`): a timestamp,
    /// then the encoded audio to the end of the message (`data[] @as_ptr`, inline on the
    /// wire).
    pub struct AudioPacket {
        pub time: u32,
        pub data: Bytes,
    }
}

wire_struct! {
    /// `mode` (`SpiceMsgPlaybackMode`, both channels): the codec from now on, and
    /// codec-specific data to the end of the message.
    pub struct AudioModeMsg {
        pub time: u32,
        pub mode: AudioDataMode,
        pub data: Bytes,
    }
}

wire_struct! {
    /// Playback's `start`.
    pub struct PlaybackStart {
        pub channels: u32,
        pub format: AudioFmt,
        pub frequency: u32,
        pub time: u32,
    }
}

/// `AudioVolume`: one volume per channel, a u8 count then u16 values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct AudioVolume {
    #[arbitrary(with = crate::wire::arb::vec_max::<u16, 255>)]
    pub volume: Vec<u16>,
}

impl Encode for AudioVolume {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        let n = self.volume.len().min(u8::MAX as usize);
        w.u8(n as u8);
        w.all(&self.volume[..n]);
    }
}
impl Decode for AudioVolume {
    const MIN_SIZE: usize = 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let n = r.u8("nchannels")?;
        Ok(AudioVolume {
            volume: r.vec(n as u64, "volume")?,
        })
    }
}

wire_struct! {
    /// `AudioMute`: 0 or 1.
    pub struct AudioMute {
        pub mute: u8,
    }
}

channel_messages! {
    /// Server → client messages of the playback channel.
    pub enum PlaybackServer(BaseServer) {
        101 => Data(AudioPacket) = "data",
        102 => Mode(AudioModeMsg) = "mode",
        103 => Start(PlaybackStart) = "start",
        104 => Stop = "stop",
        105 => Volume(AudioVolume) = "volume",
        106 => Mute(AudioMute) = "mute",
        /// `latency_ms`.
        107 => Latency(u32) = "latency",
    }
}

channel_messages! {
    /// Client → server messages of the playback channel (only base messages exist).
    pub enum PlaybackClient(BaseClient) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Message;

    #[test]
    fn layouts() {
        let start = PlaybackServer::Start(PlaybackStart {
            channels: 2,
            format: AudioFmt::S16,
            frequency: 48000,
            time: 5,
        });
        // format is 16 bits wide: 14 bytes in all.
        assert_eq!(
            start.to_body(),
            [2, 0, 0, 0, 1, 0, 0x80, 0xbb, 0, 0, 5, 0, 0, 0]
        );
        let data = PlaybackServer::Data(AudioPacket {
            time: 1,
            data: Bytes(vec![9, 8]),
        });
        assert_eq!(data.to_body(), [1, 0, 0, 0, 9, 8]);
        let mode = PlaybackServer::Mode(AudioModeMsg {
            time: 1,
            mode: AudioDataMode::Opus,
            data: Bytes::default(),
        });
        assert_eq!(mode.to_body(), [1, 0, 0, 0, 3, 0]);
        let vol = PlaybackServer::Volume(AudioVolume {
            volume: vec![0x100, 0x200],
        });
        assert_eq!(vol.to_body(), [2, 0, 1, 0, 2]);
        assert_eq!(PlaybackServer::decode(105, &vol.to_body()).unwrap(), vol);
        assert!(PlaybackServer::decode(105, &[3, 0, 1]).is_err());
        assert_eq!(PlaybackServer::Mute(AudioMute { mute: 1 }).to_body(), [1]);
    }
}
