//! Arbitrary segments into one stream direction: reassembly never panics, and the pieces it
//! delivers are contiguous (each starts where the previous data or gap ended).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spice_captures::tcp::{Origin, Piece, Reassembler};

#[derive(Debug, arbitrary::Arbitrary)]
struct Seg {
    seq: u32,
    flags: u8,
    payload: Vec<u8>,
    missing: u8,
}

fuzz_target!(|segs: Vec<Seg>| {
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
