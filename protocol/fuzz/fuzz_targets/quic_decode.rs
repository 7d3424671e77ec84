//! The QUIC decoder on arbitrary bytes: an error or an image, never a panic or a huge
//! allocation (sizes are bounded by `Limits`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use spice_proto::codec::quic;

fuzz_target!(|data: &[u8]| {
    let _ = quic::decode(data);
});
