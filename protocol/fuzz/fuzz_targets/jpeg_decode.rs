//! The JPEG and JPEG_ALPHA decoders on arbitrary bytes (for JPEG_ALPHA the first byte picks
//! TOP_DOWN and the next four are jpeg_size, little endian).
#![no_main]
use libfuzzer_sys::fuzz_target;
use spice_proto::codec::{jpeg, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let _ = jpeg::decode(data, &limits);
    if let [flags, a, b, c, d, rest @ ..] = data {
        let jpeg_size = u32::from_le_bytes([*a, *b, *c, *d]) % (rest.len() as u32 + 1);
        let _ = jpeg::decode_alpha(rest, jpeg_size, flags & 1 != 0, &limits);
    }
});
