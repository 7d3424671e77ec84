//! Arbitrary bytes, in arbitrary pieces and at arbitrary times, on fresh connections: the link
//! stage must answer or close, never panic, and never keep a connection past its timeout.
//! The body is `spice_server::fuzzing::link_stage` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_server::fuzzing::link_stage(data));
