//! Arbitrary bytes as a capture file: reading frames and decoding their link, IP and TCP
//! headers never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spice_captures::pcap::read_frames(data, |f| {
        let _ = spice_captures::net::decode_frame(f.linktype, f.data);
    });
});
