//! Export a run's traffic as a classic pcap file (raw IPv4, LINKTYPE_RAW), so tshark's SPICE
//! dissector and our own transcript tool can read a simulated session like a real one.
//!
//! Each client connection becomes one TCP connection from `10.0.1.<client>:<40000+conn>` to
//! `10.0.0.1:5900`, opened with a three-way handshake and carrying the recorded chunks in
//! order, split into segments of at most 16 KiB, with sequence and acknowledgement numbers as
//! a real stack would write them. Checksums are left zero (tshark does not check them by
//! default).

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::client::{Chunk, Dir};

const SERVER_IP: [u8; 4] = [10, 0, 0, 1];
const SERVER_PORT: u16 = 5900;
const MSS: usize = 16 * 1024;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

struct Tcp {
    client_ip: [u8; 4],
    client_port: u16,
    /// Next sequence number client → server and server → client.
    c_seq: u32,
    s_seq: u32,
}

#[allow(clippy::too_many_arguments)] // one field of the TCP header each
fn packet(
    out: &mut Vec<u8>,
    t_us: u64,
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    seq: u32,
    ack: u32,
    flags: u8,
    data: &[u8],
) {
    let total = 20 + 20 + data.len();
    let mut p = Vec::with_capacity(total);
    // IPv4 header.
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    p.extend_from_slice(&src.0);
    p.extend_from_slice(&dst.0);
    // TCP header.
    p.extend_from_slice(&src.1.to_be_bytes());
    p.extend_from_slice(&dst.1.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ack.to_be_bytes());
    p.extend_from_slice(&[0x50, flags]);
    p.extend_from_slice(&0xffffu16.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(data);
    // pcap record header.
    out.extend_from_slice(&((t_us / 1_000_000) as u32).to_le_bytes());
    out.extend_from_slice(&((t_us % 1_000_000) as u32).to_le_bytes());
    out.extend_from_slice(&(p.len() as u32).to_le_bytes());
    out.extend_from_slice(&(p.len() as u32).to_le_bytes());
    out.extend_from_slice(&p);
}

/// Write `chunks` as a pcap file.
pub fn write(chunks: &[Chunk], w: &mut impl Write) -> io::Result<()> {
    let mut out = Vec::new();
    // Global header: magic, version 2.4, zone, sigfigs, snaplen, LINKTYPE_RAW (101).
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&262_144u32.to_le_bytes());
    out.extend_from_slice(&101u32.to_le_bytes());
    let mut conns: BTreeMap<(u32, u32), Tcp> = BTreeMap::new();
    let server = (SERVER_IP, SERVER_PORT);
    for c in chunks {
        let tcp = conns.entry((c.client, c.conn)).or_insert_with(|| {
            let client_ip = [10, 0, 1, (c.client % 250) as u8 + 1];
            let client_port = 40_000 + c.conn as u16;
            let t = Tcp {
                client_ip,
                client_port,
                c_seq: 1_000,
                s_seq: 9_000,
            };
            let cl = (client_ip, client_port);
            packet(&mut out, c.t_us, cl, server, t.c_seq - 1, 0, SYN, &[]);
            packet(
                &mut out,
                c.t_us,
                server,
                cl,
                t.s_seq - 1,
                t.c_seq,
                SYN | ACK,
                &[],
            );
            packet(&mut out, c.t_us, cl, server, t.c_seq, t.s_seq, ACK, &[]);
            t
        });
        let cl = (tcp.client_ip, tcp.client_port);
        for seg in c.bytes.chunks(MSS) {
            match c.dir {
                Dir::ClientToServer => {
                    packet(
                        &mut out,
                        c.t_us,
                        cl,
                        server,
                        tcp.c_seq,
                        tcp.s_seq,
                        ACK | PSH,
                        seg,
                    );
                    tcp.c_seq = tcp.c_seq.wrapping_add(seg.len() as u32);
                }
                Dir::ServerToClient => {
                    packet(
                        &mut out,
                        c.t_us,
                        server,
                        cl,
                        tcp.s_seq,
                        tcp.c_seq,
                        ACK | PSH,
                        seg,
                    );
                    tcp.s_seq = tcp.s_seq.wrapping_add(seg.len() as u32);
                }
            }
        }
    }
    w.write_all(&out)
}
