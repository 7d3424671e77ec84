//! The record channel: the server asks for audio capture (`start`, `stop`, volume, mute) and
//! the client sends it (`data`, `mode`, `start_mark`).
//!
//! This module owns the record message enums; the audio structures are shared with
//! [`super::playback`]. It does not decode audio.

use super::playback::{AudioFmt, AudioModeMsg, AudioMute, AudioPacket, AudioVolume};
use super::{BaseClient, BaseServer};
use crate::{channel_messages, wire_struct};

wire_struct! {
    /// Record's `start`.
    pub struct RecordStart {
        pub channels: u32,
        pub format: AudioFmt,
        pub frequency: u32,
    }
}

channel_messages! {
    /// Server → client messages of the record channel.
    pub enum RecordServer(BaseServer) {
        101 => Start(RecordStart) = "start",
        102 => Stop = "stop",
        103 => Volume(AudioVolume) = "volume",
        104 => Mute(AudioMute) = "mute",
    }
}

channel_messages! {
    /// Client → server messages of the record channel.
    pub enum RecordClient(BaseClient) {
        /// Captured audio (`SpiceMsgPlaybackPacket`).
        101 => Data(AudioPacket) = "data",
        102 => Mode(AudioModeMsg) = "mode",
        /// `time`: the timestamp capture started at.
        103 => StartMark(u32) = "start_mark",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Message;
    use crate::wire::Bytes;

    #[test]
    fn layouts() {
        let s = RecordServer::Start(RecordStart {
            channels: 2,
            format: AudioFmt::S16,
            frequency: 44100,
        });
        assert_eq!(s.to_body(), [2, 0, 0, 0, 1, 0, 0x44, 0xac, 0, 0]);
        let d = RecordClient::Data(AudioPacket {
            time: 0x0a0b_0c0d,
            data: Bytes(vec![1, 2, 3]),
        });
        assert_eq!(d.to_body(), [0xd, 0xc, 0xb, 0xa, 1, 2, 3]);
        assert_eq!(RecordClient::decode(101, &d.to_body()).unwrap(), d);
        assert_eq!(RecordClient::StartMark(4).to_body(), [4, 0, 0, 0]);
        assert!(RecordClient::decode(103, &[1, 2]).is_err());
    }
}
