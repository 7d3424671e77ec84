//! The GLZ decoder on a sequence of arbitrary images sharing one window (references into
//! earlier images, missing or evicted ones included).
#![no_main]
use libfuzzer_sys::fuzz_target;
use spice_proto::codec::{glz, Limits};

fuzz_target!(|images: Vec<Vec<u8>>| {
    let mut d = glz::Decoder::new(Limits::default(), 1 << 20);
    for img in images.iter().take(8) {
        let _ = d.decode(img, &[0xff00_0000, 0x00ff_ffff]);
    }
});
