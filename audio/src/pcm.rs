//! Conversions between the three sample layouts (see the crate doc). All are total: no
//! input makes them panic; odd trailing bytes are ignored by the byte readers.

/// One VD-Interface stereo frame from its two samples.
pub fn frame(left: i16, right: i16) -> u32 {
    (left as u16 as u32) | ((right as u16 as u32) << 16)
}

/// The two samples of a VD-Interface stereo frame.
pub fn split(frame: u32) -> (i16, i16) {
    (frame as u16 as i16, (frame >> 16) as u16 as i16)
}

/// VD-Interface frames as raw-mode wire bytes (S16LE, L R interleaved).
pub fn frames_to_bytes(frames: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames.len() * 4);
    for &f in frames {
        out.extend_from_slice(&f.to_le_bytes());
    }
    out
}

/// Raw-mode wire bytes as VD-Interface frames; a trailing partial frame is ignored.
pub fn bytes_to_frames(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// VD-Interface frames as interleaved samples (what Opus encodes).
pub fn frames_to_interleaved(frames: &[u32]) -> Vec<i16> {
    let mut out = Vec::with_capacity(frames.len() * 2);
    for &f in frames {
        let (l, r) = split(f);
        out.push(l);
        out.push(r);
    }
    out
}

/// Interleaved samples as VD-Interface frames; a trailing lone sample is ignored.
pub fn interleaved_to_frames(samples: &[i16]) -> Vec<u32> {
    samples.chunks_exact(2).map(|c| frame(c[0], c[1])).collect()
}

/// Raw-mode wire bytes as interleaved samples; a trailing odd byte is ignored.
pub fn bytes_to_interleaved(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn layouts_round_trip(frames in proptest::collection::vec(any::<u32>(), 0..64)) {
            prop_assert_eq!(bytes_to_frames(&frames_to_bytes(&frames)), frames.clone());
            prop_assert_eq!(interleaved_to_frames(&frames_to_interleaved(&frames)), frames.clone());
            prop_assert_eq!(bytes_to_interleaved(&frames_to_bytes(&frames)), frames_to_interleaved(&frames));
        }
    }

    #[test]
    fn left_is_the_low_half() {
        assert_eq!(frame(-1, 2), 0x0002_ffff);
        assert_eq!(split(0x0002_ffff), (-1, 2));
        assert_eq!(frames_to_bytes(&[frame(1, -2)]), [1, 0, 0xfe, 0xff]);
    }
}
