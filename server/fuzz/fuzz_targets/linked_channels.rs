//! Arbitrary bytes on linked main and inputs channels of one client, while a second client is
//! linked: never a panic, and the second client's channels are never closed.
//! The body is `spice_server::fuzzing::linked_channels` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_server::fuzzing::linked_channels(data));
