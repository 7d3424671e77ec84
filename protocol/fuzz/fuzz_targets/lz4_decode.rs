//! The LZ4 image decoder on arbitrary bytes: the first four give the descriptor's width and
//! height (u16 little endian each), the rest is the payload. An error or an image, never a
//! panic or a huge allocation.
//! The body is `spice_proto::fuzzing::lz4_decode` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_proto::fuzzing::lz4_decode(data));
