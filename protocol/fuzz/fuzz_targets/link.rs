//! The link stage: header, link message, reply, auth selection, ticket and result decoders.
//! The body is `spice_proto::fuzzing::link` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_proto::fuzzing::link(data));
