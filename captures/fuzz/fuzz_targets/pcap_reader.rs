//! Arbitrary bytes as a capture file: reading frames and decoding their link, IP and TCP
//! headers never panics.
//! The body is `spice_captures::fuzzing::pcap_reader` (the regression tests run it too).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spice_captures::fuzzing::pcap_reader(data));
