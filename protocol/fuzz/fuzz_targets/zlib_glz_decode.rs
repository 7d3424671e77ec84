//! ZLIB_GLZ on arbitrary input: a sequence of (glz_data_size, zlib data) images inflated and
//! decoded through one GLZ window.
//! The body is `spice_proto::fuzzing::zlib_glz_decode` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_proto::fuzzing::zlib_glz_decode(data));
