//! Opus as SPICE uses it (spice-common's `snd_codec`): stereo, 48 kHz on the wire, frames of
//! 480 samples per channel (10 ms), compressed frames of at most 480 bytes, the `AUDIO`
//! application. The server encodes playback and decodes record; the simulator's client and
//! the tests decode playback and encode record.

use crate::{AudioError, CHANNELS};

/// Samples per channel in one Opus frame (`SND_CODEC_OPUS_FRAME_SIZE`): 10 ms at 48 kHz.
pub const FRAME_SAMPLES: usize = 480;
/// The frequency Opus playback runs at (`SND_CODEC_OPUS_PLAYBACK_FREQ`).
pub const FREQUENCY: u32 = 48_000;
/// The most bytes one compressed frame may take (`SND_CODEC_OPUS_COMPRESSED_FRAME_BYTES`).
pub const MAX_COMPRESSED_BYTES: usize = 480;
/// The largest packet the decoder looks at: libopus packets of one frame are at most 1275
/// bytes; anything longer is refused before libopus sees it.
pub const MAX_PACKET_BYTES: usize = 1275;

/// Whether Opus can carry audio at `rate` Hz (`snd_codec_is_capable`): the rates libopus
/// runs at.
pub fn is_capable(rate: u32) -> bool {
    matches!(rate, 8_000 | 12_000 | 16_000 | 24_000 | 48_000)
}

fn opus_err(e: opus2::Error) -> AudioError {
    AudioError::Opus(e.to_string())
}

/// An Opus encoder for one stream.
pub struct OpusEncoder {
    inner: opus2::Encoder,
    rate: u32,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("rate", &self.rate)
            .finish()
    }
}

impl OpusEncoder {
    pub fn new(rate: u32) -> Result<Self, AudioError> {
        if !is_capable(rate) {
            return Err(AudioError::UnsupportedRate(rate));
        }
        let inner = opus2::Encoder::new(rate, opus2::Channels::Stereo, opus2::Application::Audio)
            .map_err(opus_err)?;
        Ok(OpusEncoder { inner, rate })
    }

    /// Samples per channel one frame holds at this encoder's rate (10 ms).
    pub fn frame_samples(&self) -> usize {
        self.rate as usize / 100
    }

    /// Encode exactly one frame (`frame_samples() * 2` interleaved samples) into a packet of
    /// at most [`MAX_COMPRESSED_BYTES`].
    pub fn encode(&mut self, interleaved: &[i16]) -> Result<Vec<u8>, AudioError> {
        let expected = self.frame_samples() * CHANNELS;
        if interleaved.len() != expected {
            return Err(AudioError::FrameSize {
                expected,
                got: interleaved.len(),
            });
        }
        let mut out = vec![0u8; MAX_COMPRESSED_BYTES];
        let n = self.inner.encode(interleaved, &mut out).map_err(opus_err)?;
        out.truncate(n);
        Ok(out)
    }
}

/// An Opus decoder for one stream. Any bytes may be handed to it: a packet libopus refuses,
/// one longer than [`MAX_PACKET_BYTES`], or one that decodes to more than one SPICE frame
/// (10 ms) is an error, never a panic or an allocation sized by the packet.
pub struct OpusDecoder {
    inner: opus2::Decoder,
    rate: u32,
    buf: Vec<i16>,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("rate", &self.rate)
            .finish()
    }
}

impl OpusDecoder {
    pub fn new(rate: u32) -> Result<Self, AudioError> {
        if !is_capable(rate) {
            return Err(AudioError::UnsupportedRate(rate));
        }
        let inner = opus2::Decoder::new(rate, opus2::Channels::Stereo).map_err(opus_err)?;
        let frame = rate as usize / 100;
        Ok(OpusDecoder {
            inner,
            rate,
            buf: vec![0; frame * CHANNELS],
        })
    }

    /// Decode one packet; the interleaved samples it holds (at most one frame).
    pub fn decode(&mut self, packet: &[u8]) -> Result<&[i16], AudioError> {
        if packet.is_empty() {
            // libopus reads an empty packet as "lost": concealment, not data from the peer.
            return Err(AudioError::Opus("empty packet".into()));
        }
        if packet.len() > MAX_PACKET_BYTES {
            return Err(AudioError::PacketTooLarge(packet.len()));
        }
        let n = self
            .inner
            .decode(packet, &mut self.buf, false)
            .map_err(opus_err)?;
        let n = (n * CHANNELS).min(self.buf.len());
        Ok(&self.buf[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tone(n: usize, hz: f64, rate: f64) -> Vec<i16> {
        (0..n)
            .flat_map(|i| {
                let v = ((i as f64) * hz * std::f64::consts::TAU / rate).sin() * 12_000.0;
                [v as i16, v as i16]
            })
            .collect()
    }

    #[test]
    fn a_frame_round_trips_to_a_frame() {
        let mut e = OpusEncoder::new(FREQUENCY).unwrap();
        let mut d = OpusDecoder::new(FREQUENCY).unwrap();
        let pcm = tone(FRAME_SAMPLES, 440.0, 48_000.0);
        for _ in 0..5 {
            let p = e.encode(&pcm).unwrap();
            assert!(!p.is_empty() && p.len() <= MAX_COMPRESSED_BYTES);
            assert_eq!(d.decode(&p).unwrap().len(), FRAME_SAMPLES * 2);
        }
    }

    #[test]
    fn wrong_frame_sizes_and_rates_are_errors() {
        let mut e = OpusEncoder::new(FREQUENCY).unwrap();
        assert!(matches!(
            e.encode(&[0; 10]),
            Err(AudioError::FrameSize {
                expected: 960,
                got: 10
            })
        ));
        assert_eq!(
            OpusEncoder::new(44_100).unwrap_err(),
            AudioError::UnsupportedRate(44_100)
        );
        let mut d = OpusDecoder::new(FREQUENCY).unwrap();
        assert!(d.decode(&[]).is_err());
        assert_eq!(
            d.decode(&[0; 5000]).unwrap_err(),
            AudioError::PacketTooLarge(5000)
        );
        // A valid packet of 20 ms is more than one SPICE frame: refused, not truncated.
        let mut e20 =
            opus2::Encoder::new(48_000, opus2::Channels::Stereo, opus2::Application::Audio)
                .unwrap();
        let mut out = [0u8; 1000];
        let n = e20.encode(&tone(960, 440.0, 48_000.0), &mut out).unwrap();
        assert!(d.decode(&out[..n]).is_err());
    }

    proptest! {
        #[test]
        fn the_decoder_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let mut d = OpusDecoder::new(FREQUENCY).unwrap();
            if let Ok(s) = d.decode(&bytes) {
                prop_assert!(s.len() <= FRAME_SAMPLES * 2);
            }
        }
    }
}
