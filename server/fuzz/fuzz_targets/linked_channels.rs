//! Arbitrary bytes on the linked main, inputs, playback and record channels of one client,
//! while a second client is linked and a sound device plays: never a panic, and the second
//! client's channels are never closed.
//! The body is `spice_server::fuzzing::linked_channels` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_server::fuzzing::linked_channels(data));
