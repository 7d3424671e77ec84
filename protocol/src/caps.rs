//! Capabilities: bit numbers for the common caps and each channel's caps, and [`Caps`], the
//! two arrays of 32-bit words a link message carries.

/// Common capabilities (`SPICE_COMMON_CAP_*`).
pub mod common {
    pub const PROTOCOL_AUTH_SELECTION: u32 = 0;
    pub const AUTH_SPICE: u32 = 1;
    pub const AUTH_SASL: u32 = 2;
    pub const MINI_HEADER: u32 = 3;
}

/// Main channel capabilities (`SPICE_MAIN_CAP_*`).
pub mod main {
    pub const SEMI_SEAMLESS_MIGRATE: u32 = 0;
    pub const NAME_AND_UUID: u32 = 1;
    pub const AGENT_CONNECTED_TOKENS: u32 = 2;
    pub const SEAMLESS_MIGRATE: u32 = 3;
}

/// Display channel capabilities (`SPICE_DISPLAY_CAP_*`).
pub mod display {
    pub const SIZED_STREAM: u32 = 0;
    pub const MONITORS_CONFIG: u32 = 1;
    pub const COMPOSITE: u32 = 2;
    pub const A8_SURFACE: u32 = 3;
    pub const STREAM_REPORT: u32 = 4;
    pub const LZ4_COMPRESSION: u32 = 5;
    pub const PREF_COMPRESSION: u32 = 6;
    pub const GL_SCANOUT: u32 = 7;
    pub const MULTI_CODEC: u32 = 8;
    pub const CODEC_MJPEG: u32 = 9;
    pub const CODEC_VP8: u32 = 10;
    pub const CODEC_H264: u32 = 11;
    pub const PREF_VIDEO_CODEC_TYPE: u32 = 12;
    pub const CODEC_VP9: u32 = 13;
    pub const CODEC_H265: u32 = 14;
}

/// Inputs channel capabilities (`SPICE_INPUTS_CAP_*`).
pub mod inputs {
    pub const KEY_SCANCODE: u32 = 0;
}

/// Playback channel capabilities (`SPICE_PLAYBACK_CAP_*`).
pub mod playback {
    pub const CELT_0_5_1: u32 = 0;
    pub const VOLUME: u32 = 1;
    pub const LATENCY: u32 = 2;
    pub const OPUS: u32 = 3;
}

/// Record channel capabilities (`SPICE_RECORD_CAP_*`).
pub mod record {
    pub const CELT_0_5_1: u32 = 0;
    pub const VOLUME: u32 = 1;
    pub const OPUS: u32 = 2;
}

/// Spicevmc (usbredir, port, webdav) capabilities (`SPICE_SPICEVMC_CAP_*`).
pub mod spicevmc {
    pub const DATA_COMPRESS_LZ4: u32 = 0;
}

/// The capability words of one side of a link: common caps and channel caps.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Caps {
    pub common: Vec<u32>,
    pub channel: Vec<u32>,
}

impl<'u> arbitrary::Arbitrary<'u> for Caps {
    fn arbitrary(u: &mut arbitrary::Unstructured<'u>) -> arbitrary::Result<Self> {
        Ok(Caps {
            common: crate::wire::arb::vec_max::<u32, 4>(u)?,
            channel: crate::wire::arb::vec_max::<u32, 4>(u)?,
        })
    }
}

fn test_bit(words: &[u32], bit: u32) -> bool {
    words
        .get((bit / 32) as usize)
        .is_some_and(|w| w & (1 << (bit % 32)) != 0)
}

fn set_bit(words: &mut Vec<u32>, bit: u32) {
    let i = (bit / 32) as usize;
    if words.len() <= i {
        words.resize(i + 1, 0);
    }
    words[i] |= 1 << (bit % 32);
}

impl Caps {
    /// A set from lists of bit numbers.
    pub fn from_bits(common: &[u32], channel: &[u32]) -> Self {
        let mut c = Caps::default();
        for &b in common {
            c.set_common(b);
        }
        for &b in channel {
            c.set_channel(b);
        }
        c
    }
    pub fn has_common(&self, bit: u32) -> bool {
        test_bit(&self.common, bit)
    }
    pub fn has_channel(&self, bit: u32) -> bool {
        test_bit(&self.channel, bit)
    }
    pub fn set_common(&mut self, bit: u32) {
        set_bit(&mut self.common, bit)
    }
    pub fn set_channel(&mut self, bit: u32) {
        set_bit(&mut self.channel, bit)
    }
    /// The common caps both sides have.
    pub fn common_with(&self, other: &Caps) -> Vec<u32> {
        self.common
            .iter()
            .zip(other.common.iter())
            .map(|(a, b)| a & b)
            .collect()
    }
    /// Whether both sides have common cap `bit`.
    pub fn both_common(&self, other: &Caps, bit: u32) -> bool {
        self.has_common(bit) && other.has_common(bit)
    }
    /// Whether both sides have channel cap `bit`.
    pub fn both_channel(&self, other: &Caps, bit: u32) -> bool {
        self.has_channel(bit) && other.has_channel(bit)
    }

    /// `num_common_caps`, `num_channel_caps` and `caps_offset` as link messages carry them.
    pub(crate) fn encode_counts_and_offset(&self, offset: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.common.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.channel.len() as u32).to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
    }

    pub(crate) fn encode_words(&self, out: &mut Vec<u8>) {
        for w in self.common.iter().chain(&self.channel) {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_land_in_the_right_words() {
        let c = Caps::from_bits(&[common::MINI_HEADER, 33], &[display::CODEC_H265]);
        assert_eq!(c.common, vec![1 << 3, 1 << 1]);
        assert!(c.has_common(33) && !c.has_common(32) && !c.has_common(1000));
        assert!(c.has_channel(display::CODEC_H265));
    }
}
