//! Synthetic captures: SPICE sessions built with spice-proto's encoders, written as pcap by
//! hand, then cut into random TCP segments, reordered and duplicated within a window, or with a
//! segment dropped. The loader must give the same transcript whatever the segmentation, and
//! report a dropped segment as a gap after which later messages still decode.

use proptest::prelude::*;
use spice_captures::net::{build_frame, flags, TcpPacket};
use spice_captures::pcap::{linktype, PcapWriter};
use spice_captures::{Problem, Timestamp, Transcript};
use spice_proto::caps::{common, Caps};
use spice_proto::header::{frame, HeaderKind};
use spice_proto::link::{LinkError, LinkMess, LinkReply, PUBKEY_BYTES};
use spice_proto::messages::base::{Ping, Pong, SetAck};
use spice_proto::messages::inputs::{MouseButtonMask, MouseMotion};
use spice_proto::messages::{
    BaseClient, BaseServer, InputsClient, InputsServer, MainClient, MainServer, Message,
};
use spice_proto::{ChannelType, Direction};
use std::net::SocketAddr;

const SESSION: u32 = 0x5e55_1017;

/// One write by one side: the bytes and whether it is in the data stage (droppable).
struct Write {
    c2s: bool,
    bytes: Vec<u8>,
    data: bool,
}

struct Conn {
    client: SocketAddr,
    server: SocketAddr,
    isn_c: u32,
    isn_s: u32,
    writes: Vec<Write>,
}

fn link_writes(conn_id: u32, ch: ChannelType, mini: bool, writes: &mut Vec<Write>) {
    let common_caps: Vec<u32> = if mini {
        vec![
            common::PROTOCOL_AUTH_SELECTION,
            common::AUTH_SPICE,
            common::MINI_HEADER,
        ]
    } else {
        vec![common::AUTH_SPICE]
    };
    let mess = LinkMess {
        connection_id: conn_id,
        channel_type: ch,
        channel_id: 0,
        caps: Caps::from_bits(&common_caps, &[1]),
    };
    writes.push(Write {
        c2s: true,
        bytes: mess.to_bytes(),
        data: false,
    });
    let reply = LinkReply {
        error: LinkError::Ok,
        pub_key: [7; PUBKEY_BYTES],
        caps: Caps::from_bits(&common_caps, &[]),
    };
    writes.push(Write {
        c2s: false,
        bytes: reply.to_bytes(),
        data: false,
    });
    let mut ticket = vec![];
    if mini {
        ticket.extend_from_slice(&1u32.to_le_bytes()); // auth mechanism: spice
    }
    ticket.extend_from_slice(&[0xab; 128]);
    writes.push(Write {
        c2s: true,
        bytes: ticket,
        data: false,
    });
    writes.push(Write {
        c2s: false,
        bytes: 0u32.to_le_bytes().to_vec(),
        data: false,
    });
}

fn msg<M: Message>(kind: HeaderKind, serial: u64, m: &M, c2s: bool) -> Write {
    let mut bytes = vec![];
    frame(kind, serial, m.msg_type(), &m.to_body(), &mut bytes);
    Write {
        c2s,
        bytes,
        data: true,
    }
}

/// A main channel (mini header) and an inputs channel (full header) of one session.
fn session(ip6: bool, isn_near_wrap: bool) -> Vec<Conn> {
    let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
    let (cip, sip) = if ip6 {
        (ip("::1"), ip("::1"))
    } else {
        (ip("127.0.0.1"), ip("127.0.0.1"))
    };
    let isn = |base: u32| {
        if isn_near_wrap {
            u32::MAX - 40 + base
        } else {
            base * 1000
        }
    };
    let mut main = Conn {
        client: SocketAddr::new(cip, 40001),
        server: SocketAddr::new(sip, 5900),
        isn_c: isn(1),
        isn_s: isn(2),
        writes: vec![],
    };
    let mk = HeaderKind::Mini;
    link_writes(0, ChannelType::Main, true, &mut main.writes);
    let mut init = SESSION.to_le_bytes().to_vec();
    init.extend_from_slice(&[0; 28]);
    let mut w = vec![];
    frame(mk, 0, 103, &init, &mut w);
    main.writes.push(Write {
        c2s: false,
        bytes: w,
        data: true,
    });
    for i in 0..6u32 {
        let ping = MainServer::Base(BaseServer::Ping(Ping {
            id: i,
            timestamp: 1000 + i as u64,
            data: vec![i as u8; (i as usize * 37) % 300].into(),
        }));
        main.writes.push(msg(mk, 0, &ping, false));
        let pong = MainClient::Base(BaseClient::Pong(Pong {
            id: i,
            timestamp: 1000 + i as u64,
        }));
        main.writes.push(msg(mk, 0, &pong, true));
    }
    let mut inputs = Conn {
        client: SocketAddr::new(cip, 40002),
        server: SocketAddr::new(sip, 5900),
        isn_c: isn(3),
        isn_s: isn(4),
        writes: vec![],
    };
    let fk = HeaderKind::Full;
    link_writes(SESSION, ChannelType::Inputs, false, &mut inputs.writes);
    let (mut sc, mut ss) = (1u64, 1u64);
    inputs.writes.push(msg(
        fk,
        ss,
        &InputsServer::Base(BaseServer::SetAck(SetAck {
            generation: 1,
            window: 20,
        })),
        false,
    ));
    ss += 1;
    inputs.writes.push(msg(
        fk,
        sc,
        &InputsClient::Base(BaseClient::AckSync(1)),
        true,
    ));
    sc += 1;
    for i in 0..12i32 {
        let m = InputsClient::MouseMotion(MouseMotion {
            dx: i,
            dy: -i,
            buttons_state: MouseButtonMask::EMPTY,
        });
        inputs.writes.push(msg(fk, sc, &m, true));
        sc += 1;
        let m = InputsClient::KeyDown(0x1e + i as u32);
        inputs.writes.push(msg(fk, sc, &m, true));
        sc += 1;
        if i % 4 == 3 {
            inputs
                .writes
                .push(msg(fk, ss, &InputsServer::MouseMotionAck, false));
            ss += 1;
        }
    }
    vec![main, inputs]
}

struct Seg {
    conn: usize,
    c2s: bool,
    seq: u32,
    flags: u8,
    payload: Vec<u8>,
    data: bool,
    /// Index of the write it belongs to.
    write: usize,
}

/// Cut every write into segments of at most `cut` bytes (`cut == 0`: whole writes).
fn segments(conns: &[Conn], cut: usize, rng: &mut u64) -> (Vec<Seg>, Vec<Seg>) {
    let mut hand = vec![];
    let mut data = vec![];
    for (ci, c) in conns.iter().enumerate() {
        hand.push(Seg {
            conn: ci,
            c2s: true,
            seq: c.isn_c,
            flags: flags::SYN,
            payload: vec![],
            data: false,
            write: 0,
        });
        hand.push(Seg {
            conn: ci,
            c2s: false,
            seq: c.isn_s,
            flags: flags::SYN | flags::ACK,
            payload: vec![],
            data: false,
            write: 0,
        });
        let (mut sc, mut ss) = (c.isn_c.wrapping_add(1), c.isn_s.wrapping_add(1));
        for (wi, w) in c.writes.iter().enumerate() {
            let mut rest = &w.bytes[..];
            while !rest.is_empty() {
                let n = if cut == 0 {
                    rest.len()
                } else {
                    1 + (next(rng) as usize % cut)
                }
                .min(rest.len());
                let seq = if w.c2s { &mut sc } else { &mut ss };
                data.push(Seg {
                    conn: ci,
                    c2s: w.c2s,
                    seq: *seq,
                    flags: flags::ACK | flags::PSH,
                    payload: rest[..n].to_vec(),
                    data: w.data,
                    write: wi,
                });
                *seq = seq.wrapping_add(n as u32);
                rest = &rest[n..];
            }
        }
    }
    (hand, data)
}

fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn write_pcap(conns: &[Conn], segs: impl IntoIterator<Item = Seg>, link: i32) -> Vec<u8> {
    let mut w = PcapWriter::new(link);
    for (i, s) in segs.into_iter().enumerate() {
        let c = &conns[s.conn];
        let (src, dst) = if s.c2s {
            (c.client, c.server)
        } else {
            (c.server, c.client)
        };
        let p = TcpPacket {
            src,
            dst,
            seq: s.seq,
            ack: 0,
            flags: s.flags,
            payload: &s.payload,
            missing: 0,
        };
        w.frame(
            Timestamp {
                secs: 1_700_000_000 + i as i64 / 1000,
                nanos: (i as u32 % 1000) * 1000,
            },
            &build_frame(link, &p),
        );
    }
    w.into_bytes()
}

type Digest = Vec<(
    String,
    u8,
    Option<u32>,
    Direction,
    Vec<(u64, u16, &'static str, u32, Vec<u8>, String)>,
)>;

/// Everything but frame numbers and timestamps, per channel and direction.
fn digest(t: &Transcript) -> Digest {
    let mut out = vec![];
    for (sid, c) in t.channels() {
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            let msgs = c
                .messages
                .iter()
                .filter(|m| m.dir == dir)
                .map(|m| {
                    (
                        m.serial,
                        m.msg_type,
                        m.name,
                        m.size,
                        m.body.clone(),
                        format!("{:?}", m.decoded),
                    )
                })
                .collect();
            out.push((c.type_name().to_string(), c.channel_id, sid, dir, msgs));
        }
    }
    out.sort_by(|a, b| (&a.0, a.1, a.3).cmp(&(&b.0, b.1, b.3)));
    out
}

fn baseline(ip6: bool, wrap: bool) -> (Vec<Conn>, Transcript) {
    let conns = session(ip6, wrap);
    let mut rng = 1;
    let (hand, data) = segments(&conns, 0, &mut rng);
    let bytes = write_pcap(&conns, hand.into_iter().chain(data), linktype::ETHERNET);
    let t = spice_captures::parse(&bytes).unwrap();
    (conns, t)
}

#[test]
fn the_baseline_decodes_completely() {
    for (ip6, wrap) in [(false, false), (true, true)] {
        let (_, t) = baseline(ip6, wrap);
        assert!(t.other_connections.is_empty(), "{:?}", t.other_connections);
        assert_eq!(
            t.sessions.len(),
            1,
            "{}",
            spice_captures::render::summary(&t)
        );
        let s = &t.sessions[0];
        assert_eq!(s.id, Some(SESSION));
        assert_eq!(s.channels.len(), 2);
        assert_eq!(s.channels[0].header, HeaderKind::Mini);
        assert_eq!(s.channels[1].header, HeaderKind::Full);
        assert_eq!(s.channels[0].messages.len(), 13);
        assert_eq!(s.channels[1].messages.len(), 2 + 24 + 3);
        for (_, c) in t.channels() {
            assert!(c.problems.is_empty(), "{:?}", c.problems);
            assert!(c.messages.iter().all(|m| !m.failed()));
        }
        assert_eq!(t.failures().count(), 0);
    }
}

#[test]
fn every_link_type_gives_the_same_transcript() {
    let (conns, t0) = baseline(false, false);
    for link in [
        linktype::LINUX_SLL,
        linktype::LINUX_SLL2,
        linktype::NULL,
        linktype::LOOP,
        linktype::RAW,
    ] {
        let mut rng = 1;
        let (hand, data) = segments(&conns, 0, &mut rng);
        let t =
            spice_captures::parse(&write_pcap(&conns, hand.into_iter().chain(data), link)).unwrap();
        assert_eq!(digest(&t), digest(&t0), "link type {link}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn segmentation_reordering_and_duplication_do_not_change_the_transcript(
        cut in 1usize..120,
        window in 1usize..8,
        dup_percent in 0u64..40,
        seed in 1u64..u64::MAX,
        ip6 in any::<bool>(),
        wrap in any::<bool>(),
    ) {
        let (conns, t0) = baseline(ip6, wrap);
        let mut rng = seed;
        let (hand, data) = segments(&conns, cut, &mut rng);
        // Shuffle within windows, duplicating some segments a little later.
        let mut out: Vec<Seg> = vec![];
        for chunk in data.chunks(window) {
            let mut chunk: Vec<&Seg> = chunk.iter().collect();
            for i in (1..chunk.len()).rev() {
                let j = next(&mut rng) as usize % (i + 1);
                chunk.swap(i, j);
            }
            for s in chunk {
                out.push(Seg { payload: s.payload.clone(), ..*s });
                if next(&mut rng) % 100 < dup_percent {
                    out.push(Seg { payload: s.payload.clone(), ..*s });
                }
            }
        }
        let t = spice_captures::parse(&write_pcap(&conns, hand.into_iter().chain(out), linktype::ETHERNET)).unwrap();
        prop_assert_eq!(digest(&t), digest(&t0));
        for (_, c) in t.channels() {
            prop_assert!(c.problems.is_empty(), "{:?}", c.problems);
        }
    }

    #[test]
    fn a_dropped_segment_is_a_gap_and_later_messages_still_decode(
        cut in 1usize..60,
        pick in any::<prop::sample::Index>(),
        seed in 1u64..u64::MAX,
        wrap in any::<bool>(),
    ) {
        let (conns, t0) = baseline(false, wrap);
        let mut rng = seed;
        let (hand, data) = segments(&conns, cut, &mut rng);
        // Drop a data-stage segment that is not in the last write of its direction.
        let candidates: Vec<usize> = (0..data.len())
            .filter(|&i| {
                let s = &data[i];
                s.data && conns[s.conn].writes.iter().enumerate().any(|(wi, w)| wi > s.write && w.c2s == s.c2s)
            })
            .collect();
        let victim = candidates[pick.index(candidates.len())];
        let (vconn, vc2s, vwrite) = (data[victim].conn, data[victim].c2s, data[victim].write);
        let kept = data.into_iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, s)| s);
        let t = spice_captures::parse(&write_pcap(&conns, hand.into_iter().chain(kept), linktype::ETHERNET)).unwrap();
        let dir = if vc2s { Direction::ClientToServer } else { Direction::ServerToClient };
        let chans: Vec<_> = t.channels().map(|(_, c)| c).collect();
        let c = chans[vconn];
        let gaps: Vec<_> = c.problems.iter().filter(|p| matches!(p, Problem::Gap { dir: d, .. } if *d == dir)).collect();
        prop_assert_eq!(gaps.len(), 1, "{:?}", c.problems);
        prop_assert!(matches!(gaps[0], Problem::Gap { resumed_at: Some(_), .. }), "{:?}", gaps[0]);
        // The messages of every later write of that direction decode as in the baseline.
        let later = conns[vconn].writes.iter().enumerate().filter(|(wi, w)| *wi > vwrite && w.c2s == vc2s && w.data).count();
        // (Implicit mini-header serials cannot count the messages lost in the hole.)
        let full = c.header == HeaderKind::Full;
        let key = |m: &spice_captures::MessageRecord| (if full { m.serial } else { 0 }, m.msg_type, m.body.clone());
        let base: Vec<_> = t0.channels().map(|(_, c)| c).nth(vconn).unwrap().messages.iter().filter(|m| m.dir == dir).map(key).collect();
        let got: Vec<_> = c.messages.iter().filter(|m| m.dir == dir).map(key).collect();
        prop_assert!(got.len() >= later, "{}", spice_captures::render::summary(&t));
        prop_assert_eq!(&got[got.len() - later..], &base[base.len() - later..]);
        prop_assert!(c.messages.iter().all(|m| !m.failed()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// After a valid link stage, arbitrary data-stage bytes in arbitrary segments (reordered,
    /// overlapping, with holes) never make the loader panic, and every message it reports lies
    /// inside the stream.
    #[test]
    fn garbage_after_the_link_stage_never_panics(
        mini in any::<bool>(),
        segs in proptest::collection::vec((any::<bool>(), -8i32..8, proptest::collection::vec(any::<u8>(), 0..64)), 0..40),
        seed in 1u64..u64::MAX,
    ) {
        let mut conns = session(false, false);
        conns.truncate(1);
        let c = &mut conns[0];
        c.writes.clear();
        link_writes(0, ChannelType::Main, mini, &mut c.writes);
        // Structured garbage: plausible headers with random sizes mixed with random bytes.
        let mut rng = seed;
        for (c2s, _, bytes) in &segs {
            let mut b = bytes.clone();
            if next(&mut rng) % 2 == 0 {
                let mut h = vec![];
                frame(if mini { HeaderKind::Mini } else { HeaderKind::Full }, next(&mut rng) % 4, (next(&mut rng) % 6) as u16, &b, &mut h);
                b = h;
            }
            c.writes.push(Write { c2s: *c2s, bytes: b, data: true });
        }
        let (hand, mut data) = segments(&conns, 7, &mut rng);
        // Perturb sequence numbers a little (overlaps and holes) and shuffle.
        for (i, s) in data.iter_mut().enumerate() {
            if s.data {
                let d = segs.get(i % segs.len().max(1)).map_or(0, |x| x.1);
                s.seq = s.seq.wrapping_add(d as u32);
            }
        }
        for i in (1..data.len()).rev() {
            if next(&mut rng) % 3 == 0 {
                let j = next(&mut rng) as usize % (i + 1);
                data.swap(i, j);
            }
        }
        let t = spice_captures::parse(&write_pcap(&conns, hand.into_iter().chain(data), linktype::ETHERNET)).unwrap();
        let _ = spice_captures::render::summary(&t);
        for (_, c) in t.channels() {
            for m in &c.messages {
                prop_assert_eq!(m.body.len(), m.size as usize);
            }
        }
    }
}
