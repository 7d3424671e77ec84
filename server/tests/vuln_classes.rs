//! Named regression tests, one per class of defect that gave spice-server its CVEs (issue 18):
//! each feeds the class's hostile input to our code and checks the typed refusal (never a
//! panic, never an allocation sized by the lie, nothing else affected).
//!
//! The guest-memory classes (QXL pointers outside slots, surface ids out of range, memslot ids,
//! generations, looping chunk lists) drive `spice_server::qxl` with crafted guest memory; the
//! client classes drive a live `Server` or spice-proto's decoders.

use spice_proto::caps::Caps;
use spice_proto::header::{frame, HeaderKind};
use spice_proto::link::{LinkHeader, LinkMess};
use spice_proto::messages::{decode, ChannelType, InputsClient, Message};
use spice_proto::qxl::{self, QxlCommand, QxlDataChunk, QxlDrawable, QxlImage, QxlRect};
use spice_proto::Direction;
use spice_server::link::Ticketing;
use spice_server::qxl::{parse, Budget, MemSlots, QxlError, Reader, DEFAULT_COMMAND_BYTES};
use spice_server::testing::{drain, link, Ram};
use spice_server::{Config, Server};

const ALL_CHANNELS: [ChannelType; 10] = [
    ChannelType::Main,
    ChannelType::Display,
    ChannelType::Inputs,
    ChannelType::Cursor,
    ChannelType::Playback,
    ChannelType::Record,
    ChannelType::Smartcard,
    ChannelType::Usbredir,
    ChannelType::Port,
    ChannelType::Webdav,
];

fn server() -> Server {
    let mut s = Server::new(Config {
        ticketing: Ticketing::Password {
            password: "pw".into(),
            expires_at_ms: None,
        },
        fresh_key_per_link: false,
        ..Config::default()
    });
    s.set_link_key(spice_server::testing::fixed_key());
    s
}

/// Deterministic bytes for `arbitrary` (no OS randomness in tests).
struct XorShift(u64);
impl XorShift {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 as u8
            })
            .collect()
    }
}

/// Every prefix of valid encodings of `M` (generated with `arbitrary`), decoded: never a
/// panic, and whatever decodes from a prefix re-encodes to no more bytes than the prefix
/// carried (nothing was read past the end of the body). Returns how many prefixes were
/// refused with a typed error.
fn truncations<M: Message + for<'u> arbitrary::Arbitrary<'u>>(rng: &mut XorShift) -> usize {
    let mut refused = 0;
    for _ in 0..300 {
        let data = rng.bytes(256);
        let Ok(m) = M::arbitrary(&mut arbitrary::Unstructured::new(&data)) else {
            continue;
        };
        let body = m.to_body();
        for cut in 0..body.len() {
            match M::decode(m.msg_type(), &body[..cut]) {
                Err(_) => refused += 1,
                // `notify`'s text ends in a NUL the decoder does not insist on (spice-gtk
                // does not either): its re-encoding may add that one byte.
                Ok(d) => assert!(
                    d.to_body().len() <= cut + usize::from(d.name() == "notify"),
                    "{} decoded from {cut} of {} bytes into more than it carried",
                    m.name(),
                    body.len()
                ),
            }
        }
    }
    refused
}

/// CVE-2018-10873 (demarshaller bounds): every prefix of valid messages of every channel and
/// direction (counts, lengths and nested offsets then point past the end of the body): never
/// a panic, never more data than the body carries, mostly a typed error. Then bodies made of
/// large values (counts and offsets near 2^32) for every type number.
#[test]
fn demarshaller_bounds_cve_2018_10873() {
    use spice_proto::messages::*;
    let mut rng = XorShift(0x2018_1087_3000_0001);
    let refused = truncations::<MainClient>(&mut rng)
        + truncations::<MainServer>(&mut rng)
        + truncations::<DisplayClient>(&mut rng)
        + truncations::<DisplayServer>(&mut rng)
        + truncations::<InputsClient>(&mut rng)
        + truncations::<InputsServer>(&mut rng)
        + truncations::<CursorClient>(&mut rng)
        + truncations::<CursorServer>(&mut rng)
        + truncations::<PlaybackClient>(&mut rng)
        + truncations::<PlaybackServer>(&mut rng)
        + truncations::<RecordClient>(&mut rng)
        + truncations::<RecordServer>(&mut rng)
        + truncations::<SmartcardClient>(&mut rng)
        + truncations::<SmartcardServer>(&mut rng)
        + truncations::<SpicevmcClient>(&mut rng)
        + truncations::<SpicevmcServer>(&mut rng)
        + truncations::<PortClient>(&mut rng)
        + truncations::<PortServer>(&mut rng);
    assert!(refused > 10_000, "{refused} truncated bodies refused");
    let lies: [&[u8]; 4] = [
        &[0xff; 64],
        &[0x7f; 64],
        &[0, 0, 0, 0x80, 0xff, 0xff, 0xff, 0xff, 0x10, 0, 0, 0],
        &[1, 0, 0, 0, 0xf0, 0xff, 0xff, 0x0f, 0, 0, 0, 0, 0, 0, 0, 0],
    ];
    for ch in ALL_CHANNELS {
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            for ty in 1..=120u16 {
                for body in lies {
                    let _ = decode(ch, dir, ty, body);
                }
            }
        }
    }
}

/// The same class on a live server: a client message whose nested count claims more than the
/// body carries closes that channel only.
#[test]
fn demarshaller_bounds_on_a_live_channel_close_it_only() {
    let mut s = server();
    let (main, sid) = link(&mut s, ChannelType::Main, 0, "pw", 0).unwrap();
    let (inputs, _) = link(&mut s, ChannelType::Inputs, sid.unwrap(), "pw", 0).unwrap();
    let mut b = Vec::new();
    // key_down (101) with a 1-byte body where 4 are needed.
    frame(HeaderKind::Mini, 0, 101, &[7], &mut b);
    s.handle_bytes(inputs.conn, &b, 5);
    drain(&mut s, inputs.conn);
    assert!(s.is_finished(inputs.conn));
    assert!(!s.is_finished(main.conn));
}

/// CVE-2016-0749 class (smartcard heap overflow: a message claiming more data than it
/// carries): the smartcard and spicevmc data headers' lengths are checked against the body.
#[test]
fn messages_claiming_more_data_than_they_carry_cve_2016_0749() {
    // VSCMsgHeader: type APDU, reader 0, length 2^32-1, 4 bytes of data.
    let mut body = 7u32.to_le_bytes().to_vec();
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    body.extend_from_slice(&[1, 2, 3, 4]);
    for dir in [Direction::ClientToServer, Direction::ServerToClient] {
        assert!(decode(ChannelType::Smartcard, dir, 101, &body).is_err());
    }
    // Inputs key_modifiers one byte short.
    let m = InputsClient::KeyModifiers(Default::default());
    let full = m.to_body();
    let short = &full[..full.len() - 1];
    assert!(decode(
        ChannelType::Inputs,
        Direction::ClientToServer,
        m.msg_type(),
        short
    )
    .is_err());
}

/// Link messages whose capability counts overflow (num_common_caps and num_channel_caps near
/// 2^32, an offset that wraps): refused with a typed error, nothing allocated by the counts,
/// and the live server answers with a link error and closes only that connection.
#[test]
fn link_messages_whose_capability_counts_overflow() {
    for (common, channel, offset) in [
        (u32::MAX, 0, 18),
        (0, u32::MAX, 18),
        (u32::MAX, u32::MAX, u32::MAX),
        (0x4000_0000, 0x4000_0000, 18),
        (1, 1, u32::MAX - 3),
    ] {
        let mut body = 0u32.to_le_bytes().to_vec();
        body.push(1); // main
        body.push(0);
        body.extend_from_slice(&common.to_le_bytes());
        body.extend_from_slice(&channel.to_le_bytes());
        body.extend_from_slice(&offset.to_le_bytes());
        body.extend_from_slice(&[0xff; 8]);
        assert!(
            LinkMess::decode(&body).is_err(),
            "{common} {channel} {offset}"
        );

        let mut s = server();
        let (good, _) = link(&mut s, ChannelType::Main, 0, "pw", 0).unwrap();
        let c = s.connect(1);
        let mut wire = vec![];
        LinkHeader::new(body.len() as u32).encode(&mut wire);
        wire.extend_from_slice(&body);
        s.handle_bytes(c, &wire, 2);
        drain(&mut s, c);
        assert!(s.is_finished(c));
        assert!(!s.is_finished(good.conn));
    }
    // A link header announcing a 4 GiB message is refused before anything is buffered.
    let mut s = server();
    let c = s.connect(0);
    let mut wire = vec![];
    LinkHeader::new(u32::MAX).encode(&mut wire);
    s.handle_bytes(c, &wire, 1);
    drain(&mut s, c);
    assert!(s.is_finished(c));
}

/// CVE-2013-4282 class (a very long password overflowed a fixed buffer): a server configured
/// with a password far longer than a ticket can carry, and a client sending a ticket that
/// decrypts to garbage, both end in an auth error for that link only.
#[test]
fn a_very_long_password() {
    let long = "p".repeat(100_000);
    let mut s = Server::new(Config {
        ticketing: Ticketing::Password {
            password: long.clone(),
            expires_at_ms: None,
        },
        fresh_key_per_link: false,
        ..Config::default()
    });
    s.set_link_key(spice_server::testing::fixed_key());
    // The client cannot even encrypt it (RSA-1024 OAEP carries at most 86 bytes) ...
    assert!(link(&mut s, ChannelType::Main, 0, &long, 0).is_err());
    // ... and the 60 bytes it can send are the wrong password.
    assert!(link(&mut s, ChannelType::Main, 0, &long[..60], 0).is_err());
    assert_eq!(s.session_count(), 0);
    // A short password on a normal server: a 128-byte ticket of garbage is refused.
    let mut s = server();
    let c = s.connect(0);
    let mess = LinkMess {
        connection_id: 0,
        channel_type: ChannelType::Main,
        channel_id: 0,
        caps: Caps::default(),
    };
    s.handle_bytes(c, &mess.to_bytes(), 0);
    drain(&mut s, c);
    s.handle_bytes(c, &[0xa5; 128], 1);
    drain(&mut s, c);
    assert!(s.is_finished(c));
}

// ---- a malicious guest (CVE-2015-5260/5261, DSA-3371) ----

const SLOT: u32 = 1;
const GEN: u8 = 3;

fn guest() -> (MemSlots, Ram) {
    let ram = Ram::new(0x1_0000, 1 << 20);
    let mut slots = MemSlots::new(8, 8);
    slots.add(ram.slot(SLOT, GEN));
    (slots, ram)
}

fn reader<'a>(slots: &'a MemSlots, ram: &'a Ram) -> Reader<'a> {
    Reader {
        slots,
        mem: ram,
        group: 0,
        budget: Budget {
            bytes: DEFAULT_COMMAND_BYTES,
        },
    }
}

fn phys(slots: &MemSlots, addr: u64) -> u64 {
    slots.encode(SLOT, GEN, addr)
}

fn fill_drawable(surface_id: u32) -> QxlDrawable {
    QxlDrawable {
        release_info: 1,
        surface_id,
        draw_type: qxl::draw::FILL,
        bbox: QxlRect::from_xywh(0, 0, 4, 4),
        surfaces_dest: [-1; 3],
        ..Default::default()
    }
}

fn draw_cmd(addr: u64) -> QxlCommand {
    QxlCommand {
        data: addr,
        cmd_type: qxl::cmd::DRAW,
        padding: 0,
    }
}

/// QXL pointers outside the memory slots (the guest points a command past its RAM, into
/// another slot id, or so that address + length wraps): refused, nothing read.
#[test]
fn qxl_pointers_outside_slots() {
    let (slots, mut ram) = guest();
    let at = ram.put(&fill_drawable(0).to_bytes()).unwrap();
    let good = phys(&slots, at);
    assert!(parse(&mut reader(&slots, &ram), &draw_cmd(good), 0).is_ok());
    for bad in [
        phys(&slots, 0x1_0000 + (1 << 20) - 8), // runs off the end of the slot
        slots.encode(SLOT + 1, GEN, at),        // a slot that does not exist
        phys(&slots, u64::MAX),                 // offset + length wraps
        0,                                      // a null pointer
    ] {
        assert!(
            parse(&mut reader(&slots, &ram), &draw_cmd(bad), 0).is_err(),
            "{bad:#x}"
        );
    }
}

/// A memory slot id equal to the number of slots (the reference's off-by-one) and a group
/// the device does not have: translation refuses them.
#[test]
fn a_memslot_id_equal_to_the_number_of_slots() {
    let (slots, ram) = guest();
    // This device has slot ids 0..=SLOT registered only: SLOT + 1 is one past them.
    let addr = slots.encode(SLOT + 1, GEN, ram.base);
    assert!(matches!(
        slots.translate(0, addr, 1),
        Err(QxlError::BadSlot { .. })
    ));
    assert!(slots.translate(1, phys(&slots, ram.base), 1).is_err());
}

/// A pointer carrying a stale generation (the slot was re-registered since) is refused.
#[test]
fn qxl_generation_mismatch() {
    let (slots, ram) = guest();
    for g in [GEN.wrapping_add(1), GEN.wrapping_sub(1), 0, 255] {
        let addr = slots.encode(SLOT, g, ram.base);
        assert!(matches!(
            slots.translate(0, addr, 1),
            Err(QxlError::BadGeneration { .. })
        ));
    }
}

/// A chunk list that loops back on itself ends at the chunk cap with an error, having copied
/// at most the budget.
#[test]
fn qxl_looping_chunk_lists() {
    let (slots, mut ram) = guest();
    let chunk_at = ram.alloc(QxlDataChunk::SIZE + 4).unwrap();
    let chunk = QxlDataChunk {
        data_size: 4,
        prev_chunk: 0,
        next_chunk: phys(&slots, chunk_at),
    };
    let mut bytes = chunk.to_bytes();
    bytes.extend_from_slice(&[1, 2, 3, 4]);
    ram.write(chunk_at, &bytes);
    let mut r = reader(&slots, &ram);
    let e = r.chunks(phys(&slots, chunk_at), u64::MAX, "looping list");
    assert!(e.is_err(), "{e:?}");
}

/// Surface ids out of range in a drawable (the reference's `validate_surface` class): parsed,
/// then refused by the display before any surface is indexed; the command is still released.
#[test]
fn qxl_surface_ids_out_of_range() {
    let (slots, mut ram) = guest();
    for id in [1024u32, u32::MAX, 0x8000_0000] {
        let at = ram.put(&fill_drawable(id).to_bytes()).unwrap();
        if let Ok(spice_server::qxl::Command::Draw { surface_id, .. }) =
            parse(&mut reader(&slots, &ram), &draw_cmd(phys(&slots, at)), 0)
        {
            assert_eq!(
                surface_id, id,
                "the id reaches the display unchanged, to be checked"
            );
        }
    }
    // The display side of the check runs in fake-devices/tests and the whole-guest fuzz target
    // (a surface id past the device's n_surfaces is rejected and released).
    let _ = QxlImage::SIZE;
}

/// QUIC and LZ images whose headers lie about their size (width x height far beyond the
/// data, or past the pixel limit): a typed error before any allocation by the claimed size.
#[test]
fn quic_and_lz_images_with_lying_sizes() {
    use spice_proto::codec::{lz, quic, Limits, PixelFormat, Pixmap};
    let pixels: Vec<u8> = (0..8 * 8 * 4).map(|i| (i * 7) as u8).collect();
    let small = Pixmap::from_data(8, 8, PixelFormat::Rgb32, 32, pixels).unwrap();
    let limits = Limits::default();
    let mut q = quic::encode(&small).unwrap();
    // QUIC header: magic, version, type, width, height (u32 each, little endian words).
    for (w, h) in [
        (u32::MAX, u32::MAX),
        (0x10000, 0x10000),
        (8, 1 << 30),
        (0, 8),
    ] {
        q[12..16].copy_from_slice(&w.to_le_bytes());
        q[16..20].copy_from_slice(&h.to_le_bytes());
        assert!(quic::decode_with(&q, &limits).is_err(), "quic {w}x{h}");
    }
    let mut l = lz::encode(&small, true).unwrap();
    // LZ header: magic, version, type, width, height, stride (big endian u32s).
    for (w, h) in [(u32::MAX, u32::MAX), (0x10000, 0x10000), (8, 1 << 30)] {
        l[12..16].copy_from_slice(&w.to_be_bytes());
        l[16..20].copy_from_slice(&h.to_be_bytes());
        assert!(lz::decode_with(&l, &limits).is_err(), "lz {w}x{h}");
    }
}

/// The memslot class on the live display: a device that declares 8 slots in 1 group and then
/// registers slot id 8 (equal to the count: the reference's off-by-one) and group 1. Both are
/// refused with a log line; a drawable pointing into slot 8 is then rejected (its release id
/// cannot even be read, so there is nothing to release).
#[test]
fn a_memslot_id_equal_to_the_number_of_slots_on_the_live_display() {
    use spice_proto::qxl::PrimarySurface;
    use spice_server::vdi::{GuestMemory, QxlCommandExt, QxlDevice, QxlEvent, QxlInitInfo};
    use std::cell::Cell;
    use std::rc::Rc;

    struct Dev {
        ram: Ram,
        cmd: Option<QxlCommandExt>,
        started: bool,
        released: Rc<Cell<u32>>,
    }
    impl QxlDevice for Dev {
        fn init_info(&self) -> QxlInitInfo {
            QxlInitInfo {
                num_memslots_groups: 1,
                num_memslots: 8,
                memslot_gen_bits: 8,
                memslot_id_bits: 8,
                n_surfaces: 4,
            }
        }
        fn memory(&self) -> &dyn GuestMemory {
            &self.ram
        }
        fn run(&mut self, _: u64) -> Vec<QxlEvent> {
            if std::mem::replace(&mut self.started, true) {
                return vec![];
            }
            let mut other_group = self.ram.slot(1, GEN);
            other_group.group_id = 1;
            vec![
                QxlEvent::AddMemSlot(self.ram.slot(8, GEN)),
                QxlEvent::AddMemSlot(other_group),
                QxlEvent::CreatePrimary(PrimarySurface {
                    width: 64,
                    height: 64,
                    stride: 256,
                    format: 32,
                    mouse_mode: 0,
                    mem: 0,
                }),
            ]
        }
        fn get_command(&mut self) -> Option<QxlCommandExt> {
            self.cmd.take()
        }
        fn get_cursor_command(&mut self) -> Option<QxlCommandExt> {
            None
        }
        fn release(&mut self, _: u64, _: u32) {
            self.released.set(self.released.get() + 1);
        }
        fn next_wakeup(&self) -> Option<u64> {
            None
        }
    }

    let mut ram = Ram::new(0x1_0000, 1 << 16);
    let slots = MemSlots::new(8, 8);
    let at = ram.put(&fill_drawable(0).to_bytes()).unwrap();
    let released = Rc::new(Cell::new(0));
    let mut s = server();
    s.display().set_qxl(Box::new(Dev {
        cmd: Some(QxlCommandExt {
            cmd: draw_cmd(slots.encode(8, GEN, at)),
            group_id: 0,
            flags: 0,
        }),
        ram,
        started: false,
        released: released.clone(),
    }));
    for t in 1..5 {
        s.handle_timeout(t * 20);
    }
    let stats = s.display().qxl_stats().unwrap();
    // Two refused slots, and the drawable that points into one of them.
    assert!(stats.rejected >= 3, "{stats:?}");
    assert_eq!(released.get(), 0);
}

/// Review minor: an expiry given as an absolute time on another clock never expired. A
/// lifetime (`spice_server_set_ticket`'s) is turned into an expiry on the server's own clock:
/// an embedder whose clock is far from zero gets a ticket that expires when it should.
#[test]
fn a_ticket_lifetime_expires_on_the_servers_clock() {
    let epoch = 1_700_000_000_000u64; // the embedder passes wall-clock milliseconds
    let mut s = server();
    s.handle_timeout(epoch);
    s.set_ticket("secret", Some(60_000));
    assert!(link(&mut s, ChannelType::Main, 0, "wrong!", epoch + 1).is_err());
    assert!(link(&mut s, ChannelType::Main, 0, "secret", epoch + 59_000).is_ok());
    assert!(link(&mut s, ChannelType::Main, 0, "secret", epoch + 61_000).is_err());
    s.set_ticket("secret", None);
    assert!(link(&mut s, ChannelType::Main, 0, "secret", epoch + 10_000_000).is_ok());
}
