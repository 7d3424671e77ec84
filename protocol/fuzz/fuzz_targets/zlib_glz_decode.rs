//! ZLIB_GLZ on arbitrary input: a sequence of (glz_data_size, zlib data) images inflated and
//! decoded through one GLZ window.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spice_proto::codec::{glz, zlib_glz, Limits};

fuzz_target!(|images: Vec<(u32, Vec<u8>)>| {
    let limits = Limits::default();
    let mut d = glz::Decoder::new(limits, 1 << 20);
    for (size, data) in images.iter().take(8) {
        let _ = zlib_glz::decode(&mut d, data, *size, &[0xff00_0000, 0x00ff_ffff], &limits);
    }
});
