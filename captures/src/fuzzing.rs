//! The bodies of spice-captures' fuzz targets (captures/fuzz), as plain functions of the raw
//! input bytes, so that the fuzz targets and the regression tests (tests/fuzz_regressions.rs,
//! which replays every input of `fuzz/regressions/<target>/`) run exactly the same code.
//!
//! Owns: the meaning of a fuzz input for each target (structured inputs are read with
//! [`arbitrary`], exactly as `libfuzzer_sys::fuzz_target!` would). Must not: be used by anything
//! but fuzz targets and tests; a failed invariant here is a panic, on purpose.

use arbitrary::{Arbitrary, Unstructured};

use crate::net::{build_frame, flags, TcpPacket};
use crate::pcap::{linktype, PcapWriter};
use crate::tcp::{Origin, Piece, Reassembler};
use crate::Timestamp;

/// Read `T` from the whole input as `fuzz_target!(|x: T| ..)` does (inputs shorter than `T`'s
/// minimum size are skipped), then run `f` on it.
pub fn with<'a, T: Arbitrary<'a>>(data: &'a [u8], f: impl FnOnce(T)) {
    if data.len() < T::size_hint(0).0 {
        return;
    }
    if let Ok(x) = T::arbitrary_take_rest(Unstructured::new(data)) {
        f(x);
    }
}

/// Every target's name, as in captures/fuzz/Cargo.toml.
pub const TARGETS: &[&str] = &["pcap_reader", "reassembler", "transcript"];

/// Run target `name` on `data`; `false` if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "pcap_reader" => pcap_reader(data),
        "reassembler" => reassembler(data),
        "transcript" => transcript(data),
        _ => return false,
    }
    true
}

/// Arbitrary bytes as a capture file: reading frames and decoding their link, IP and TCP
/// headers never panics.
pub fn pcap_reader(data: &[u8]) {
    let _ = crate::pcap::read_frames(data, |f| {
        let _ = crate::net::decode_frame(f.linktype, f.data);
    });
}

/// One TCP segment of [`reassembler`]'s input.
#[derive(Debug, Arbitrary)]
pub struct Segment {
    pub seq: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
    pub missing: u8,
}

/// Arbitrary segments into one stream direction: reassembly never panics, and the pieces it
/// delivers are contiguous (each starts where the previous data or gap ended). Input: the
/// segments.
pub fn reassembler(data: &[u8]) {
    with(data, |segs: Vec<Segment>| {
        let mut r = Reassembler::new();
        let mut pieces = vec![];
        for (i, s) in segs.iter().enumerate() {
            let origin = Origin {
                frame: i as u64 + 1,
                ..Origin::default()
            };
            r.push(s.seq, s.flags, &s.payload, s.missing as usize, origin);
            pieces.extend(r.take());
        }
        r.finish();
        pieces.extend(r.take());
        let mut at = pieces.first().map_or(0, Piece::offset);
        for p in &pieces {
            assert_eq!(p.offset(), at);
            at += p.len();
        }
    });
}

/// One TCP payload of [`transcript`]'s input.
#[derive(Debug, Arbitrary)]
pub struct Payload {
    pub c2s: bool,
    /// Offset from the direction's next sequence number (small reorders and overlaps).
    pub delta: i8,
    pub payload: Vec<u8>,
}

/// Arbitrary TCP payloads on one connection (a valid handshake, then the payloads both ways)
/// through the whole loader: link stage, framing, resynchronisation and decoding never panic.
/// Input: the payloads.
pub fn transcript(data: &[u8]) {
    with(data, |segs: Vec<Payload>| {
        let c = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
        let s = std::net::SocketAddr::from(([127, 0, 0, 1], 5900));
        let _ = crate::parse(&pcap_of(c, s, &segs));
    });
}

/// The classic pcap of one connection from `c` to `s` carrying `segs`.
fn pcap_of(c: std::net::SocketAddr, s: std::net::SocketAddr, segs: &[Payload]) -> Vec<u8> {
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
    for g in segs {
        let i = usize::from(!g.c2s);
        let (src, dst) = if g.c2s { (c, s) } else { (s, c) };
        let at = seq[i].wrapping_add(g.delta as i32 as u32);
        emit(src, dst, at, flags::ACK, &g.payload);
        seq[i] = seq[i].max(at.wrapping_add(g.payload.len() as u32));
    }
    w.into_bytes()
}
