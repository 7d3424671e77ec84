//! vdagent: the reassembler (stream and strict rules), body decoding with every option set, and
//! the server-to-guest chunk reader, over arbitrary pieces.
//! The body is `spice_proto::fuzzing::agent` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_proto::fuzzing::agent(data));
