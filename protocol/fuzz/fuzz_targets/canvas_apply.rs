//! The reference canvas on arbitrary display messages (a small primary surface, small limits).
//! The body is `spice_proto::fuzzing::canvas_apply` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_proto::fuzzing::canvas_apply(data));
