//! The GLZ decoder on a sequence of arbitrary images sharing one window (references into
//! earlier images, missing or evicted ones included).
//! The body is `spice_proto::fuzzing::glz_decode` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_proto::fuzzing::glz_decode(data));
