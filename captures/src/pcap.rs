//! Capture files: reading classic pcap and pcapng (through `pcap-parser`) into [`Frame`]s, and
//! writing classic pcap ([`PcapWriter`]) for synthetic captures in tests and simulator exports.
//!
//! This module owns file formats only: it knows link types as numbers and timestamps, not IP or
//! TCP (see [`crate::net`]). A truncated last record (a capture tool killed mid-write) ends the
//! file with a warning, not an error; only a file that is neither pcap nor pcapng is an error.

use crate::Error;
use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapNGPacketBlock;
use pcap_parser::{PcapBlockOwned, PcapError};

/// `LINKTYPE_*` numbers this crate decodes (see [`crate::net::decode_frame`]).
pub mod linktype {
    /// BSD loopback, address family in host byte order.
    pub const NULL: i32 = 0;
    pub const ETHERNET: i32 = 1;
    /// Raw IP as some BSDs number it.
    pub const RAW_BSD: i32 = 12;
    /// Raw IP (`LINKTYPE_RAW`, DLT 12/14 mapped by libpcap to 101).
    pub const RAW: i32 = 101;
    /// OpenBSD loopback, address family in network byte order.
    pub const LOOP: i32 = 108;
    /// Linux cooked capture v1.
    pub const LINUX_SLL: i32 = 113;
    pub const IPV4: i32 = 228;
    pub const IPV6: i32 = 229;
    /// Linux cooked capture v2.
    pub const LINUX_SLL2: i32 = 276;
}

/// A capture timestamp: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    /// Seconds as a float (for JSON and display).
    pub fn as_f64(self) -> f64 {
        self.secs as f64 + self.nanos as f64 / 1e9
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:06}", self.secs, self.nanos / 1000)
    }
}

/// One captured link-layer frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// 1-based frame number, as Wireshark counts them.
    pub number: u64,
    pub ts: Timestamp,
    /// The `LINKTYPE_*` of the interface it was captured on.
    pub linktype: i32,
    /// The captured bytes (possibly fewer than `orig_len`).
    pub data: &'a [u8],
    pub orig_len: u32,
}

/// What reading a whole file found besides its frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadSummary {
    pub frames: u64,
    /// "pcap" or "pcapng".
    pub format: &'static str,
    /// Problems that did not stop reading (truncated last record, unknown interface ids).
    pub warnings: Vec<String>,
}

/// The largest record we accept; loopback frames are at most 64 KiB plus headers, and
/// offloaded segments a few hundred KiB.
const MAX_RECORD: usize = 16 * 1024 * 1024;

struct Iface {
    linktype: i32,
    /// Units per second.
    resolution: u64,
    offset: i64,
}

fn ts_from_units(units: u64, resolution: u64, offset: i64) -> Timestamp {
    let resolution = resolution.max(1);
    // Saturating: a crafted if_tsoffset (or a timestamp past i64) must not overflow.
    let secs = i64::try_from(units / resolution)
        .unwrap_or(i64::MAX)
        .saturating_add(offset);
    let frac = units % resolution;
    let nanos = (frac as u128 * 1_000_000_000u128 / resolution as u128) as u32;
    Timestamp { secs, nanos }
}

/// The block type of a pcapng section header block (the same bytes in either byte order).
const SHB_TYPE: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// The length of the pcapng block at the start of `d`, in its section's byte order (updated
/// from a section header's byte-order magic); `None` while fewer than 8 bytes are buffered.
fn next_block_len(d: &[u8], big_endian: &mut bool) -> Option<u32> {
    let head = d.get(..8)?;
    if head[..4] == SHB_TYPE {
        if let Some(magic) = d.get(8..12) {
            *big_endian = magic == [0x1a, 0x2b, 0x3c, 0x4d];
        }
    }
    let raw = [head[4], head[5], head[6], head[7]];
    Some(if *big_endian {
        u32::from_be_bytes(raw)
    } else {
        u32::from_le_bytes(raw)
    })
}

/// Read every frame of a pcap or pcapng file held in memory, calling `f` for each in file order.
pub fn read_frames(bytes: &[u8], mut f: impl FnMut(Frame<'_>)) -> Result<ReadSummary, Error> {
    let mut summary = ReadSummary::default();
    let mut reader = match pcap_parser::create_reader(1 << 20, bytes) {
        Ok(r) => r,
        Err(PcapError::Eof) => return Err(Error::NotACapture("empty file".into())),
        Err(e) => return Err(Error::NotACapture(format!("{e:?}"))),
    };
    // Classic pcap state.
    let mut legacy_linktype = 0i32;
    let mut legacy_nanos = false;
    // pcapng state (per section).
    let mut ifaces: Vec<Iface> = vec![];
    let mut number = 0u64;
    let mut stalled = 0u32;
    let pcapng = bytes.starts_with(&SHB_TYPE);
    let mut big_endian = false;
    loop {
        // pcap-parser (0.16 and 0.17) subtracts the 12 bytes of block framing from a block's
        // length unchecked for some block types: a length under 12 overflows (a panic with
        // overflow checks). No valid block is that short: refuse it here.
        if pcapng {
            if let Some(len) = next_block_len(reader.data(), &mut big_endian) {
                if len < 12 {
                    summary
                        .warnings
                        .push(format!("pcapng block of length {len} after frame {number}"));
                    break;
                }
            }
        }
        match reader.next() {
            Ok((offset, block)) => {
                stalled = 0;
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        summary.format = "pcap";
                        legacy_linktype = h.network.0;
                        legacy_nanos = h.is_nanosecond_precision();
                    }
                    PcapBlockOwned::Legacy(b) => {
                        number += 1;
                        let nanos = if legacy_nanos {
                            b.ts_usec.min(999_999_999)
                        } else {
                            b.ts_usec.min(999_999) * 1000
                        };
                        let caplen = (b.caplen as usize).min(b.data.len());
                        f(Frame {
                            number,
                            ts: Timestamp {
                                secs: b.ts_sec as i64,
                                nanos,
                            },
                            linktype: legacy_linktype,
                            data: b.data.get(..caplen).unwrap_or(b.data),
                            orig_len: b.origlen,
                        });
                    }
                    PcapBlockOwned::NG(block) => {
                        summary.format = "pcapng";
                        match block {
                            Block::SectionHeader(_) => ifaces.clear(),
                            Block::InterfaceDescription(idb) => ifaces.push(Iface {
                                linktype: idb.linktype.0,
                                resolution: idb.ts_resolution().unwrap_or(1_000_000),
                                offset: idb.ts_offset(),
                            }),
                            Block::EnhancedPacket(epb) => {
                                number += 1;
                                match ifaces.get(epb.if_id as usize) {
                                    Some(i) => f(Frame {
                                        number,
                                        ts: ts_from_units(
                                            ((epb.ts_high as u64) << 32) | epb.ts_low as u64,
                                            i.resolution,
                                            i.offset,
                                        ),
                                        linktype: i.linktype,
                                        data: epb.packet_data(),
                                        orig_len: epb.origlen,
                                    }),
                                    None => summary.warnings.push(format!(
                                        "frame {number}: unknown interface {}",
                                        epb.if_id
                                    )),
                                }
                            }
                            Block::SimplePacket(spb) => {
                                number += 1;
                                let linktype = ifaces.first().map_or(-1, |i| i.linktype);
                                f(Frame {
                                    number,
                                    ts: Timestamp::default(),
                                    linktype,
                                    data: spb.packet_data(),
                                    orig_len: spb.origlen,
                                });
                            }
                            _ => {}
                        }
                    }
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                stalled += 1;
                if stalled > 2 {
                    summary
                        .warnings
                        .push(format!("truncated record after frame {number}"));
                    break;
                }
                if reader.refill().is_err() {
                    summary.warnings.push("read error".into());
                    break;
                }
            }
            Err(PcapError::BufferTooSmall) => {
                let cap = reader.data().len().max(1 << 20) * 2;
                if cap > MAX_RECORD || !reader.grow(cap) {
                    summary
                        .warnings
                        .push(format!("oversized record after frame {number}"));
                    break;
                }
                let _ = reader.refill();
            }
            Err(PcapError::UnexpectedEof) => {
                summary
                    .warnings
                    .push(format!("truncated record after frame {number}"));
                break;
            }
            Err(e) => {
                if number == 0 && summary.format.is_empty() {
                    return Err(Error::NotACapture(format!("{e:?}")));
                }
                summary
                    .warnings
                    .push(format!("unparseable record after frame {number}: {e:?}"));
                break;
            }
        }
    }
    summary.frames = number;
    Ok(summary)
}

/// Writes a classic (microsecond, little-endian) pcap file. pcap-parser cannot write, and the
/// format is a 24-byte header plus a 16-byte header per record.
#[derive(Debug, Clone)]
pub struct PcapWriter {
    out: Vec<u8>,
}

impl PcapWriter {
    /// A file of `linktype` frames with a 256 KiB snap length.
    pub fn new(linktype: i32) -> Self {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&262_144u32.to_le_bytes());
        out.extend_from_slice(&(linktype as u32).to_le_bytes());
        PcapWriter { out }
    }

    /// Append one frame captured at `ts` (whole, not truncated).
    pub fn frame(&mut self, ts: Timestamp, data: &[u8]) {
        self.out.extend_from_slice(&(ts.secs as u32).to_le_bytes());
        self.out.extend_from_slice(&(ts.nanos / 1000).to_le_bytes());
        self.out
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.out
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.out.extend_from_slice(data);
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_frames_read_back() {
        let mut w = PcapWriter::new(linktype::ETHERNET);
        w.frame(
            Timestamp {
                secs: 5,
                nanos: 7000,
            },
            b"abc",
        );
        w.frame(Timestamp { secs: 6, nanos: 0 }, b"");
        let bytes = w.into_bytes();
        let mut got = vec![];
        let s = read_frames(&bytes, |f| got.push((f.number, f.ts, f.data.to_vec()))).unwrap();
        assert_eq!(s.frames, 2);
        assert_eq!(s.format, "pcap");
        assert!(s.warnings.is_empty());
        assert_eq!(
            got[0],
            (
                1,
                Timestamp {
                    secs: 5,
                    nanos: 7000
                },
                b"abc".to_vec()
            )
        );
        assert_eq!(got[1].2, b"");
        // A cut file keeps what it had.
        let mut got = 0;
        let s = read_frames(&bytes[..bytes.len() - 10], |_| got += 1).unwrap();
        assert_eq!(got, 1);
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    }

    #[test]
    fn garbage_is_not_a_capture() {
        assert!(read_frames(b"hello world, this is not a pcap file at all", |_| {}).is_err());
        assert!(read_frames(b"", |_| {}).is_err());
    }

    /// Security review 17: a pcapng interface with `if_tsoffset = i64::MAX` (or a timestamp
    /// past i64 seconds) overflowed the seconds (a debug panic). They saturate now.
    #[test]
    fn a_huge_timestamp_offset_saturates() {
        let t = ts_from_units(u64::MAX, 1, i64::MAX);
        assert_eq!(t.secs, i64::MAX);
        let t = ts_from_units(5, 1, i64::MIN);
        assert_eq!(t.secs, i64::MIN + 5);
        let t = ts_from_units(1_500_000, 1_000_000, -1);
        assert_eq!((t.secs, t.nanos), (0, 500_000_000));
    }

    /// The same through the reader: an interface description with the option, then a packet.
    #[test]
    fn a_pcapng_with_if_tsoffset_max_reads_without_panic() {
        fn block(ty: u32, body: &[u8]) -> Vec<u8> {
            let len = (12 + body.len()) as u32;
            let mut b = ty.to_le_bytes().to_vec();
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(body);
            b.extend_from_slice(&len.to_le_bytes());
            b
        }
        let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        let mut idb = 1u16.to_le_bytes().to_vec(); // Ethernet
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&65535u32.to_le_bytes());
        idb.extend_from_slice(&14u16.to_le_bytes()); // if_tsoffset
        idb.extend_from_slice(&8u16.to_le_bytes());
        idb.extend_from_slice(&i64::MAX.to_le_bytes());
        idb.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
        let mut epb = 0u32.to_le_bytes().to_vec(); // interface 0
        epb.extend_from_slice(&u32::MAX.to_le_bytes()); // ts high
        epb.extend_from_slice(&u32::MAX.to_le_bytes()); // ts low
        epb.extend_from_slice(&4u32.to_le_bytes());
        epb.extend_from_slice(&4u32.to_le_bytes());
        epb.extend_from_slice(&[1, 2, 3, 4]);
        let mut file = block(0x0A0D_0D0A, &shb);
        file.extend(block(1, &idb));
        file.extend(block(6, &epb));
        let mut seen = vec![];
        read_frames(&file, |f| seen.push(f.ts)).unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].secs, i64::MAX);
    }
}
