//! TCP stream reassembly: segments in capture order in, each direction's bytes in stream order
//! out, with every hole the capture cannot fill reported as a [`Piece::Gap`].
//!
//! Rules (all offsets are 64-bit stream positions; sequence numbers are unwrapped against the
//! next expected position, so wraparound at 2^32 is invisible):
//! - a SYN fixes the initial sequence number; without one the first segment seen starts the
//!   stream (a capture started mid-connection: the stream is marked `midstream`);
//! - bytes before the next expected position are retransmissions and dropped; where copies of
//!   the same bytes disagree, the first one captured wins (as a receiver would have it);
//! - a segment beyond the next expected position waits; when the waiting bytes exceed
//!   [`Reassembler::MAX_PENDING`], or at the end of the capture, the hole before the first
//!   waiting segment is declared a gap and the stream goes on after it;
//! - a payload cut by the snap length counts as the bytes it lacks missing (a gap).
//!
//! [`Connections`] tracks every TCP connection of a capture by its address pair; a new SYN on a
//! pair whose connection has ended starts a new connection. This module knows nothing of SPICE.

use crate::net::{flags, TcpPacket};
use crate::pcap::Timestamp;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

/// Where a piece of a stream came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Origin {
    /// 1-based frame number.
    pub frame: u64,
    pub ts: Timestamp,
}

/// A run of stream bytes, or a hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Bytes at stream `offset`, deliverable (in order) from the segment captured at `origin`
    /// on: for bytes that waited for a hole to be filled, the segment that filled it.
    Data {
        offset: u64,
        data: Vec<u8>,
        origin: Origin,
    },
    /// `len` bytes at `offset` never seen; `origin` is the first segment after the hole.
    Gap {
        offset: u64,
        len: u64,
        origin: Origin,
    },
}

impl Piece {
    pub fn offset(&self) -> u64 {
        match self {
            Piece::Data { offset, .. } | Piece::Gap { offset, .. } => *offset,
        }
    }
    pub fn len(&self) -> u64 {
        match self {
            Piece::Data { data, .. } => data.len() as u64,
            Piece::Gap { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
struct Waiting {
    data: Vec<u8>,
    origin: Origin,
}

/// One direction of a TCP connection.
#[derive(Debug, Clone, Default)]
pub struct Reassembler {
    /// Sequence number of stream offset 0.
    base: Option<u32>,
    next: u64,
    waiting: BTreeMap<u64, Waiting>,
    waiting_bytes: usize,
    /// The first segment seen was not a SYN.
    pub midstream: bool,
    pub fin: bool,
    pub rst: bool,
    /// The latest segment taken: data it makes deliverable counts as arriving with it.
    last: Origin,
    out: Vec<Piece>,
}

impl Reassembler {
    /// Waiting (out-of-order) bytes above which the hole in front of them is declared lost.
    pub const MAX_PENDING: usize = 32 * 1024 * 1024;

    pub fn new() -> Self {
        Self::default()
    }

    /// The stream position of sequence number `seq`, unwrapped near the next expected position.
    fn position(&self, base: u32, seq: u32) -> i64 {
        let next_seq = base.wrapping_add(self.next as u32);
        self.next as i64 + seq.wrapping_sub(next_seq) as i32 as i64
    }

    /// Take one segment. `missing` payload bytes were cut by the snap length.
    pub fn push(&mut self, seq: u32, fl: u8, payload: &[u8], missing: usize, origin: Origin) {
        if fl & flags::RST != 0 {
            self.rst = true;
        }
        self.last = self.last.max(origin);
        let syn = fl & flags::SYN != 0;
        let base = match self.base {
            Some(b) => b,
            None => {
                // A SYN's own sequence number is consumed by the SYN.
                let b = if syn { seq.wrapping_add(1) } else { seq };
                self.midstream = !syn;
                self.base = Some(b);
                b
            }
        };
        let data_seq = if syn { seq.wrapping_add(1) } else { seq };
        let pos = self.position(base, data_seq);
        if fl & flags::FIN != 0 {
            self.fin = true;
        }
        let total = payload.len() + missing;
        if total == 0 {
            return;
        }
        let mut pos = pos;
        let mut data = payload;
        if pos < 0 {
            let cut = (-pos) as usize;
            if cut >= data.len() {
                return;
            }
            data = &data[cut..];
            pos = 0;
        }
        let pos = pos as u64;
        if !data.is_empty() {
            self.insert(pos, data.to_vec(), origin);
        }
        self.drain();
        if self.waiting_bytes > Self::MAX_PENDING {
            self.skip_hole();
        }
    }

    fn insert(&mut self, pos: u64, data: Vec<u8>, origin: Origin) {
        let end = pos + data.len() as u64;
        if end <= self.next {
            return;
        }
        match self.waiting.get(&pos) {
            Some(w) if w.data.len() >= data.len() => return,
            Some(w) => self.waiting_bytes -= w.data.len(),
            None => {}
        }
        self.waiting_bytes += data.len();
        self.waiting.insert(pos, Waiting { data, origin });
    }

    /// Deliver every waiting segment that now starts at or before the next expected position.
    fn drain(&mut self) {
        while let Some(entry) = self.waiting.first_entry() {
            let pos = *entry.key();
            if pos > self.next {
                break;
            }
            let w = entry.remove();
            self.waiting_bytes -= w.data.len();
            let skip = (self.next - pos) as usize;
            if skip < w.data.len() {
                let data = w.data[skip..].to_vec();
                let offset = self.next;
                self.next += data.len() as u64;
                self.out.push(Piece::Data {
                    offset,
                    data,
                    origin: self.last.max(w.origin),
                });
            }
        }
    }

    /// Declare the hole before the first waiting segment lost.
    fn skip_hole(&mut self) {
        if let Some((&pos, w)) = self.waiting.iter().next() {
            if pos > self.next {
                self.out.push(Piece::Gap {
                    offset: self.next,
                    len: pos - self.next,
                    origin: w.origin,
                });
                self.next = pos;
            }
            self.drain();
        }
    }

    /// The end of the capture: every hole left is a gap.
    pub fn finish(&mut self) {
        while !self.waiting.is_empty() {
            self.skip_hole();
        }
    }

    /// Take the pieces delivered so far.
    pub fn take(&mut self) -> Vec<Piece> {
        std::mem::take(&mut self.out)
    }

    /// Bytes delivered so far (the next expected stream position).
    pub fn delivered(&self) -> u64 {
        self.next
    }
}

/// Both directions of one TCP connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The side that sent the SYN (or, without one, the sender of the first segment seen).
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Whether a SYN was seen (so `client` is certain).
    pub saw_syn: bool,
    pub first: Origin,
    pub last: Origin,
    /// Client → server.
    pub c2s: Reassembler,
    /// Server → client.
    pub s2c: Reassembler,
    pub c2s_pieces: Vec<Piece>,
    pub s2c_pieces: Vec<Piece>,
}

impl Connection {
    fn ended(&self) -> bool {
        self.c2s.rst || self.s2c.rst || (self.c2s.fin && self.s2c.fin)
    }

    /// Swap which side is the client (when the first segment seen was the server's).
    pub fn swap_sides(&mut self) {
        std::mem::swap(&mut self.client, &mut self.server);
        std::mem::swap(&mut self.c2s, &mut self.s2c);
        std::mem::swap(&mut self.c2s_pieces, &mut self.s2c_pieces);
    }
}

/// Every TCP connection of a capture, in the order their first segment was seen.
#[derive(Debug, Default)]
pub struct Connections {
    conns: Vec<Connection>,
    by_pair: HashMap<(SocketAddr, SocketAddr), usize>,
}

impl Connections {
    pub fn new() -> Self {
        Self::default()
    }

    /// Take one TCP segment.
    pub fn push(&mut self, p: &TcpPacket<'_>, origin: Origin) {
        let key = if p.src <= p.dst {
            (p.src, p.dst)
        } else {
            (p.dst, p.src)
        };
        let pure_syn = p.flags & flags::SYN != 0 && p.flags & flags::ACK == 0;
        let idx = match self.by_pair.get(&key) {
            Some(&i) if !(pure_syn && self.conns[i].ended()) => i,
            _ => {
                self.conns.push(Connection {
                    client: p.src,
                    server: p.dst,
                    saw_syn: pure_syn,
                    first: origin,
                    last: origin,
                    c2s: Reassembler::new(),
                    s2c: Reassembler::new(),
                    c2s_pieces: vec![],
                    s2c_pieces: vec![],
                });
                self.by_pair.insert(key, self.conns.len() - 1);
                self.conns.len() - 1
            }
        };
        let c = &mut self.conns[idx];
        c.last = origin;
        if pure_syn && !c.saw_syn && c.c2s.delivered() == 0 && c.s2c.delivered() == 0 {
            // The SYN came after (reordered) or the first packet was the server's.
            c.saw_syn = true;
            if c.client != p.src {
                c.swap_sides();
            }
        }
        let (r, pieces) = if p.src == c.client {
            (&mut c.c2s, &mut c.c2s_pieces)
        } else {
            (&mut c.s2c, &mut c.s2c_pieces)
        };
        r.push(p.seq, p.flags, p.payload, p.missing, origin);
        pieces.extend(r.take());
    }

    /// End of capture: declare the remaining holes and hand out the connections.
    pub fn finish(mut self) -> Vec<Connection> {
        for c in &mut self.conns {
            c.c2s.finish();
            c.c2s_pieces.extend(c.c2s.take());
            c.s2c.finish();
            c.s2c_pieces.extend(c.s2c.take());
        }
        self.conns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(frame: u64) -> Origin {
        Origin {
            frame,
            ts: Timestamp::default(),
        }
    }

    fn bytes(pieces: &[Piece]) -> (Vec<u8>, Vec<(u64, u64)>) {
        let mut b = vec![];
        let mut gaps = vec![];
        for p in pieces {
            match p {
                Piece::Data { offset, data, .. } => {
                    assert_eq!(
                        *offset as usize,
                        b.len()
                            + gaps
                                .iter()
                                .map(|g: &(u64, u64)| g.1 as usize)
                                .sum::<usize>()
                    );
                    b.extend_from_slice(data)
                }
                Piece::Gap { offset, len, .. } => gaps.push((*offset, *len)),
            }
        }
        (b, gaps)
    }

    #[test]
    fn reorders_drops_duplicates_and_wraps() {
        let mut r = Reassembler::new();
        let isn = u32::MAX - 3;
        r.push(isn, flags::SYN, b"", 0, o(1));
        // Stream "abcdefghij" starting at isn+1, wrapping after 2 bytes.
        let s = isn.wrapping_add(1);
        r.push(s.wrapping_add(4), 0, b"efg", 0, o(2));
        r.push(s, 0, b"ab", 0, o(3));
        r.push(s, 0, b"abcd", 0, o(4)); // overlapping retransmission
        r.push(s.wrapping_add(6), 0, b"ghij", 0, o(5));
        r.push(s.wrapping_add(1), 0, b"b", 0, o(6)); // old duplicate
        r.finish();
        let (b, gaps) = bytes(&r.take());
        assert_eq!(b, b"abcdefghij");
        assert!(gaps.is_empty());
    }

    #[test]
    fn a_lost_segment_is_a_gap_at_its_position() {
        let mut r = Reassembler::new();
        r.push(100, flags::SYN, b"", 0, o(1));
        r.push(101, 0, b"abc", 0, o(2));
        r.push(107, 0, b"ghi", 0, o(3));
        r.finish();
        let pieces = r.take();
        let (b, gaps) = bytes(&pieces);
        assert_eq!(b, b"abcghi");
        assert_eq!(gaps, vec![(3, 3)]);
    }

    #[test]
    fn snap_length_cuts_are_gaps() {
        let mut r = Reassembler::new();
        r.push(0, flags::SYN, b"", 0, o(1));
        r.push(1, 0, b"ab", 2, o(2));
        r.push(5, 0, b"ef", 0, o(3));
        r.finish();
        assert_eq!(bytes(&r.take()).1, vec![(2, 2)]);
    }
}
