//! The data-header framer over arbitrary streams cut at arbitrary points.
//! The body is `spice_proto::fuzzing::framer` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_proto::fuzzing::framer(data));
