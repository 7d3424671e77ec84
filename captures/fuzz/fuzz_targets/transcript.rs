//! Arbitrary TCP payloads on one connection (a valid handshake, then fuzzed bytes both ways)
//! through the whole loader: link stage, framing, resynchronisation and decoding never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spice_captures::net::{build_frame, flags, TcpPacket};
use spice_captures::pcap::{linktype, PcapWriter};
use spice_captures::Timestamp;

#[derive(Debug, arbitrary::Arbitrary)]
struct Seg {
    c2s: bool,
    /// Offset from the direction's next sequence number (small reorders and overlaps).
    delta: i8,
    payload: Vec<u8>,
}

fuzz_target!(|segs: Vec<Seg>| {
    let c = "127.0.0.1:40000".parse().unwrap();
    let s = "127.0.0.1:5900".parse().unwrap();
    let mut w = PcapWriter::new(linktype::ETHERNET);
    let mut seq = [1000u32, 5000u32];
    let mut emit = |src, dst, seq: u32, fl, payload: &[u8]| {
        let p = TcpPacket {
            src,
            dst,
            seq,
            ack: 0,
            flags: fl,
            payload,
            missing: 0,
        };
        w.frame(Timestamp::default(), &build_frame(linktype::ETHERNET, &p));
    };
    emit(c, s, 999, flags::SYN, &[]);
    emit(s, c, 4999, flags::SYN | flags::ACK, &[]);
    for g in &segs {
        let i = usize::from(!g.c2s);
        let (src, dst) = if g.c2s { (c, s) } else { (s, c) };
        let at = seq[i].wrapping_add(g.delta as i32 as u32);
        emit(src, dst, at, flags::ACK, &g.payload);
        seq[i] = seq[i].max(at.wrapping_add(g.payload.len() as u32));
    }
    let _ = spice_captures::parse(&w.into_bytes());
});
