//! Arbitrary TCP payloads on one connection (a valid handshake, then fuzzed bytes both ways)
//! through the whole loader: link stage, framing, resynchronisation and decoding never panic.
//! The body is `spice_captures::fuzzing::transcript` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_captures::fuzzing::transcript(data));
