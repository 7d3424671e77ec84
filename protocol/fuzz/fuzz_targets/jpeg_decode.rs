//! The JPEG and JPEG_ALPHA decoders on arbitrary bytes (for JPEG_ALPHA the first byte picks
//! TOP_DOWN and the next four are jpeg_size, little endian).
//! The body is `spice_proto::fuzzing::jpeg_decode` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_proto::fuzzing::jpeg_decode(data));
