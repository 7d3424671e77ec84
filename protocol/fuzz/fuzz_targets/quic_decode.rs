//! The QUIC decoder on arbitrary bytes: an error or an image, never a panic or a huge
//! allocation (sizes are bounded by `Limits`).
//! The body is `spice_proto::fuzzing::quic_decode` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_proto::fuzzing::quic_decode(data));
