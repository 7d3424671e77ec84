//! The LZ4 image decoder on arbitrary bytes: the first four give the descriptor's width and
//! height (u16 little endian each), the rest is the payload. An error or an image, never a
//! panic or a huge allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spice_proto::codec::{lz4, Limits};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let w = u16::from_le_bytes([data[0], data[1]]) as u32;
    let h = u16::from_le_bytes([data[2], data[3]]) as u32;
    let _ = lz4::decode(&data[4..], w, h, &Limits::default());
});
