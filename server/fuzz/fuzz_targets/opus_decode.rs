//! Arbitrary packets as Opus (and raw) record audio: libopus's decoder, the record channel's
//! decoder and a linked record channel never panic; a refused packet closes the record channel
//! only; the device gets exactly the frames of the packets before it.
//! The body is `spice_server::fuzzing::opus_decode` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spice_server::fuzzing::opus_decode(data);
});
