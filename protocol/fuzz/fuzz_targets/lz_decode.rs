//! The LZ decoder on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spice_proto::codec::lz;

fuzz_target!(|data: &[u8]| {
    let _ = lz::decode(data);
});
