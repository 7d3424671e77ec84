//! Arbitrary segments into one stream direction: reassembly never panics, and the pieces it
//! delivers are contiguous (each starts where the previous data or gap ended).
//! The body is `spice_captures::fuzzing::reassembler` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_captures::fuzzing::reassembler(data));
