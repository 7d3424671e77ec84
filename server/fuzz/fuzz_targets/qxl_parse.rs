//! QXL commands over arbitrary guest memory: one 64 KiB slot filled with the input, commands
//! of every type pointing anywhere in it (and outside).
//! The body is `spice_server::fuzzing::qxl_parse` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_server::fuzzing::qxl_parse(data));
