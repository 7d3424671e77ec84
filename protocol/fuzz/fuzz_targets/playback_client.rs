//! playback channel, client to server: decoding arbitrary bodies never panics, and what decodes re-encodes to bytes
//! that decode to the same message.
//! The body is `spice_proto::fuzzing::playback_client` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_proto::fuzzing::playback_client(data));
