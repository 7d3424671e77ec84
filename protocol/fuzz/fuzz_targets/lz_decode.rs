//! The LZ decoder on arbitrary bytes.
//! The body is `spice_proto::fuzzing::lz_decode` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_proto::fuzzing::lz_decode(data));
