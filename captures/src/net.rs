//! Link, IP and TCP headers: from a captured frame to a [`TcpPacket`], and back for synthetic
//! captures ([`build_frame`]).
//!
//! Link types: Ethernet (with 802.1Q/802.1ad tags), Linux cooked SLL and SLL2, BSD loopback
//! (`NULL`, host byte order, and `LOOP`, network byte order) and raw IP. Network: IPv4 (options
//! skipped; fragments are reported, not reassembled: SPICE over TCP with path MTU discovery has
//! none) and IPv6 (hop-by-hop, routing and destination-options extension headers skipped).
//! Checksums are not verified (loopback captures carry offloaded, unfinished checksums).
//!
//! This module never panics on input: every slice access is checked.

use crate::pcap::linktype;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// TCP flag bits.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// One TCP segment out of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// The captured payload.
    pub payload: &'a [u8],
    /// Payload bytes the IP header announces but the capture cut off (snap length).
    pub missing: usize,
}

/// Why a frame yielded no TCP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not TCP over IP (ARP, UDP, ICMP, ...): silently ignored.
    NotTcp,
    /// A link type this crate does not decode.
    UnsupportedLinktype(i32),
    /// An IPv4 fragment (reported, not reassembled).
    Fragment,
    /// A header was cut short or inconsistent.
    Malformed(&'static str),
}

fn get<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}
fn be16(b: &[u8], at: usize) -> Option<u16> {
    get::<2>(b, at).map(u16::from_be_bytes)
}
fn be32(b: &[u8], at: usize) -> Option<u32> {
    get::<4>(b, at).map(u32::from_be_bytes)
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Decode a frame of `linktype` down to its TCP segment.
pub fn decode_frame(link: i32, data: &[u8]) -> Result<TcpPacket<'_>, Skip> {
    let (ethertype, ip) = match link {
        linktype::ETHERNET => {
            let mut at = 12;
            let mut et = be16(data, at).ok_or(Skip::Malformed("ethernet header"))?;
            while et == 0x8100 || et == 0x88a8 {
                at += 4;
                et = be16(data, at).ok_or(Skip::Malformed("vlan tag"))?;
            }
            (Some(et), data.get(at + 2..))
        }
        linktype::LINUX_SLL => (be16(data, 14), data.get(16..)),
        linktype::LINUX_SLL2 => (be16(data, 0), data.get(20..)),
        linktype::NULL | linktype::LOOP => {
            let raw = get::<4>(data, 0).ok_or(Skip::Malformed("loopback header"))?;
            // NULL is host byte order of the capturing machine: accept either.
            let fam = if link == linktype::LOOP {
                u32::from_be_bytes(raw)
            } else {
                let le = u32::from_le_bytes(raw);
                if le < 0x10000 {
                    le
                } else {
                    u32::from_be_bytes(raw)
                }
            };
            let et = match fam {
                2 => ETHERTYPE_IPV4,
                24 | 28 | 30 => ETHERTYPE_IPV6,
                _ => return Err(Skip::NotTcp),
            };
            (Some(et), data.get(4..))
        }
        linktype::RAW | linktype::RAW_BSD | linktype::IPV4 | linktype::IPV6 => (None, Some(data)),
        other => return Err(Skip::UnsupportedLinktype(other)),
    };
    let ip = ip.ok_or(Skip::Malformed("link header"))?;
    let version = ip.first().ok_or(Skip::Malformed("ip header"))? >> 4;
    match (ethertype, version) {
        (Some(ETHERTYPE_IPV4) | None, 4) => ipv4(ip),
        (Some(ETHERTYPE_IPV6) | None, 6) => ipv6(ip),
        _ => Err(Skip::NotTcp),
    }
}

fn ipv4(ip: &[u8]) -> Result<TcpPacket<'_>, Skip> {
    let ihl = (*ip.first().ok_or(Skip::Malformed("ipv4"))? & 0xf) as usize * 4;
    let total = be16(ip, 2).ok_or(Skip::Malformed("ipv4 header"))? as usize;
    let frag = be16(ip, 6).ok_or(Skip::Malformed("ipv4 header"))?;
    let proto = *ip.get(9).ok_or(Skip::Malformed("ipv4 header"))?;
    let src = get::<4>(ip, 12).ok_or(Skip::Malformed("ipv4 header"))?;
    let dst = get::<4>(ip, 16).ok_or(Skip::Malformed("ipv4 header"))?;
    if ihl < 20 || total < ihl {
        return Err(Skip::Malformed("ipv4 lengths"));
    }
    if proto != 6 {
        return Err(Skip::NotTcp);
    }
    if frag & 0x3fff != 0 {
        return Err(Skip::Fragment);
    }
    // total == 0 happens with TSO captures: trust the captured length then.
    let total = if total == 0 { ip.len() } else { total };
    tcp(
        IpAddr::V4(Ipv4Addr::from(src)),
        IpAddr::V4(Ipv4Addr::from(dst)),
        ip,
        ihl,
        total,
    )
}

fn ipv6(ip: &[u8]) -> Result<TcpPacket<'_>, Skip> {
    let payload_len = be16(ip, 4).ok_or(Skip::Malformed("ipv6 header"))? as usize;
    let mut next = *ip.get(6).ok_or(Skip::Malformed("ipv6 header"))?;
    let src = get::<16>(ip, 8).ok_or(Skip::Malformed("ipv6 header"))?;
    let dst = get::<16>(ip, 24).ok_or(Skip::Malformed("ipv6 header"))?;
    let mut at = 40usize;
    loop {
        match next {
            6 => break,
            0 | 43 | 60 => {
                next = *ip.get(at).ok_or(Skip::Malformed("ipv6 extension"))?;
                let len = *ip.get(at + 1).ok_or(Skip::Malformed("ipv6 extension"))? as usize;
                at += (len + 1) * 8;
            }
            44 => return Err(Skip::Fragment),
            _ => return Err(Skip::NotTcp),
        }
    }
    let total = if payload_len == 0 {
        ip.len()
    } else {
        40 + payload_len
    };
    tcp(
        IpAddr::V6(Ipv6Addr::from(src)),
        IpAddr::V6(Ipv6Addr::from(dst)),
        ip,
        at,
        total,
    )
}

fn tcp(
    src: IpAddr,
    dst: IpAddr,
    ip: &[u8],
    at: usize,
    total: usize,
) -> Result<TcpPacket<'_>, Skip> {
    let t = ip.get(at..).ok_or(Skip::Malformed("tcp header"))?;
    let sport = be16(t, 0).ok_or(Skip::Malformed("tcp header"))?;
    let dport = be16(t, 2).ok_or(Skip::Malformed("tcp header"))?;
    let seq = be32(t, 4).ok_or(Skip::Malformed("tcp header"))?;
    let ack = be32(t, 8).ok_or(Skip::Malformed("tcp header"))?;
    let off = (*t.get(12).ok_or(Skip::Malformed("tcp header"))? >> 4) as usize * 4;
    let fl = *t.get(13).ok_or(Skip::Malformed("tcp header"))?;
    if off < 20 || at + off > total {
        return Err(Skip::Malformed("tcp data offset"));
    }
    let want = total - at - off;
    let payload = t.get(off..).unwrap_or(&[]);
    let payload = payload.get(..want).unwrap_or(payload);
    Ok(TcpPacket {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        seq,
        ack,
        flags: fl,
        payload,
        missing: want - payload.len(),
    })
}

/// Build one frame of `link` type carrying a TCP segment (checksums left zero). Supports every
/// link type [`decode_frame`] reads; used by tests and synthetic captures.
pub fn build_frame(link: i32, p: &TcpPacket<'_>) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20 + p.payload.len());
    tcp.extend_from_slice(&p.src.port().to_be_bytes());
    tcp.extend_from_slice(&p.dst.port().to_be_bytes());
    tcp.extend_from_slice(&p.seq.to_be_bytes());
    tcp.extend_from_slice(&p.ack.to_be_bytes());
    tcp.push(5 << 4);
    tcp.push(p.flags);
    tcp.extend_from_slice(&65535u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    tcp.extend_from_slice(p.payload);
    let (v6, ip) = match (p.src.ip(), p.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            ip.extend_from_slice(&tcp);
            (false, ip)
        }
        (s, d) => {
            let to6 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[6, 64]);
            ip.extend_from_slice(&to6(s).octets());
            ip.extend_from_slice(&to6(d).octets());
            ip.extend_from_slice(&tcp);
            (true, ip)
        }
    };
    let ethertype: u16 = if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
    let mut out = vec![];
    match link {
        linktype::ETHERNET => {
            out.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
            out.extend_from_slice(&ethertype.to_be_bytes());
        }
        linktype::LINUX_SLL => {
            out.extend_from_slice(&[0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&ethertype.to_be_bytes());
        }
        linktype::LINUX_SLL2 => {
            out.extend_from_slice(&ethertype.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 1, 4, 6, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        linktype::NULL => out.extend_from_slice(&(if v6 { 30u32 } else { 2 }).to_le_bytes()),
        linktype::LOOP => out.extend_from_slice(&(if v6 { 30u32 } else { 2 }).to_be_bytes()),
        _ => {}
    }
    out.extend_from_slice(&ip);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_link_type_round_trips() {
        for v6 in [false, true] {
            let (s, d): (IpAddr, IpAddr) = if v6 {
                ("::1".parse().unwrap(), "fe80::2".parse().unwrap())
            } else {
                ("127.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
            };
            let p = TcpPacket {
                src: SocketAddr::new(s, 40000),
                dst: SocketAddr::new(d, 5900),
                seq: 0xffff_fff0,
                ack: 7,
                flags: flags::ACK | flags::PSH,
                payload: b"REDQ and more",
                missing: 0,
            };
            for link in [
                linktype::ETHERNET,
                linktype::LINUX_SLL,
                linktype::LINUX_SLL2,
                linktype::NULL,
                linktype::LOOP,
                linktype::RAW,
                linktype::RAW_BSD,
            ] {
                let f = build_frame(link, &p);
                assert_eq!(decode_frame(link, &f), Ok(p.clone()), "link {link} v6 {v6}");
                // Cut by a snap length: the payload is reported missing, not misread.
                let cut = &f[..f.len() - 5];
                let got = decode_frame(link, cut).unwrap();
                assert_eq!(got.missing, 5);
                assert_eq!(got.payload, &p.payload[..p.payload.len() - 5]);
            }
        }
    }

    proptest! {
        #[test]
        fn decoding_never_panics(link in 0i32..300, data in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = decode_frame(link, &data);
        }
    }
}
