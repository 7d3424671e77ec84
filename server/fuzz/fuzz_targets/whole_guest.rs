//! Arbitrary QXL command graphs written by a fake guest into guest memory, through the
//! server's whole display path (parse, canvas, encoders for a fast and a slow client,
//! release): no panic, every command released once, queues within the output cap.
//! The body is `spice_fake_devices::fuzzing::whole_guest` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_fake_devices::fuzzing::whole_guest(data));
