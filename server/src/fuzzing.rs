//! The bodies of spice-server's fuzz targets (server/fuzz), as plain functions of the raw input
//! bytes, so that the fuzz targets and the regression tests (tests/fuzz_regressions.rs, which
//! replays every input of `fuzz/regressions/<target>/`) run exactly the same code.
//!
//! Owns: the meaning of a fuzz input for each target (structured inputs are read with
//! [`arbitrary`], exactly as `libfuzzer_sys::fuzz_target!` would) and the invariants each
//! checks. Must not: be used by anything but fuzz targets and tests; a failed invariant here
//! is a panic, on purpose. (The whole-guest target needs the fake QXL device and lives in
//! spice-fake-devices' `fuzzing`.)

use arbitrary::{Arbitrary, Unstructured};
use spice_proto::messages::ChannelType;
use spice_proto::qxl::QxlCommand;

use crate::link::{TicketKey, Ticketing};
use crate::qxl::{parse, Budget, MemSlots, Reader};

use crate::testing::{drain, fixed_key, Linked, Ram};
use crate::{Config, ConnId, Server};

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

/// Every target's name whose body is here, as in server/fuzz/Cargo.toml.
pub const TARGETS: &[&str] = &["link_stage", "linked_channels", "qxl_parse"];

/// Run target `name` on `data`; `false` if there is no such target here.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "link_stage" => link_stage(data),
        "linked_channels" => linked_channels(data),
        "qxl_parse" => qxl_parse(data),
        _ => return false,
    }
    true
}

/// The config of the fuzzed servers: the fixed RSA key for every link (no key generation per
/// input), a fixed seed.
fn config(ticketing: Ticketing) -> Config {
    let mut cfg = Config {
        ticketing,
        fresh_key_per_link: false,
        ..Config::default()
    };
    // Deterministic: the same input makes the same run (`into` fits a plain or an optional
    // seed).
    cfg.seed = 1u64.into();
    cfg
}

/// [`crate::testing::link_with_rest`] with no password (its tickets are encrypted once and
/// remembered, as [`key`] remembers what it decrypted): link `channel` of session
/// `connection_id` (0: a new main channel); the connection, the session id for main, and the
/// channel's first bytes.
pub fn link(
    server: &mut Server,
    channel: ChannelType,
    connection_id: u32,
) -> Option<(Linked, Option<u32>, Vec<u8>)> {
    crate::testing::link_with_rest(server, channel, connection_id, "", 0).ok()
}

/// The fixed test key, remembering the tickets it decrypted: the clients linked for every
/// input send the same tickets, so only the first input pays for RSA.
pub fn key() -> TicketKey {
    static KEY: std::sync::OnceLock<TicketKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| fixed_key().memoized()).clone()
}

/// Arbitrary bytes, in arbitrary pieces and at arbitrary times, on three fresh connections:
/// the link stage must answer or close, never panic, and never keep a connection past its
/// timeout. Input: up to 64 steps of (connection, bytes, milliseconds elapsed).
pub fn link_stage(data: &[u8]) {
    with(data, |steps: Vec<(u8, Vec<u8>, u16)>| {
        let mut s = Server::new(config(Ticketing::Disabled));
        s.set_link_key(key());
        let conns: Vec<_> = (0..3).map(|_| s.connect(0)).collect();
        let mut now = 0u64;
        for (which, bytes, dt) in steps.iter().take(64) {
            now += u64::from(*dt);
            let c = conns[usize::from(*which) % conns.len()];
            s.handle_bytes(c, bytes, now);
            while s.poll_transmit(c).is_some() {}
            s.handle_timeout(now);
        }
        s.handle_timeout(now + 60_000);
        for c in conns {
            while s.poll_transmit(c).is_some() {}
            assert!(s.is_finished(c) || s.session_count() > 0);
        }
    });
}

/// Two clients, each with linked main and inputs channels.
struct TwoClients {
    good: Linked,
    good_in: Linked,
    bad: Linked,
    bad_in: Linked,
}

fn two_clients(s: &mut Server) -> Option<TwoClients> {
    let (good, sid, _) = link(s, ChannelType::Main, 0)?;
    let (good_in, _, _) = link(s, ChannelType::Inputs, sid?)?;
    let (bad, bsid, _) = link(s, ChannelType::Main, 0)?;
    let (bad_in, _, _) = link(s, ChannelType::Inputs, bsid?)?;
    Some(TwoClients {
        good,
        good_in,
        bad,
        bad_in,
    })
}

/// Arbitrary bytes on the linked main and inputs channels of one client while a second client
/// is linked: never a panic, and the second client's channels are never closed. Input: up to
/// 64 steps of (on main rather than inputs, bytes, milliseconds elapsed modulo 1000).
pub fn linked_channels(data: &[u8]) {
    with(data, |steps: Vec<(bool, Vec<u8>, u16)>| {
        let mut s = Server::new(config(Ticketing::Disabled));
        s.set_link_key(key());
        let Some(c) = two_clients(&mut s) else {
            panic!("linking two clients failed");
        };
        let mut now = 0u64;
        for (on_main, bytes, dt) in steps.iter().take(64) {
            now += u64::from(*dt % 1000);
            let conn: ConnId = if *on_main { c.bad.conn } else { c.bad_in.conn };
            s.handle_bytes(conn, bytes, now);
            drain(&mut s, conn);
            drain(&mut s, c.good.conn);
            drain(&mut s, c.good_in.conn);
            s.handle_timeout(now);
        }
        assert!(!s.is_finished(c.good.conn));
        assert!(!s.is_finished(c.good_in.conn));
    });
}

/// Where [`qxl_parse`]'s memory slot starts (slot 1, generation 1, as the fake QXL device
/// puts its RAM, so the device's commands can seed the target unchanged).
pub const QXL_SLOT_BASE: u64 = 0x10_0000;
/// The most guest memory a [`qxl_parse`] input fills.
pub const QXL_SLOT_MAX: usize = 1 << 20;
/// Bytes before the memory in a [`qxl_parse`] input: four commands of eight bytes.
pub const QXL_HEAD: usize = 32;

/// QXL commands over arbitrary guest memory. Input: four commands of eight bytes (u32 LE
/// offset into the slot, generation bit (1: the slot's, 0: a stale one), command type modulo
/// 7, flags bit, one unused byte), then the slot's memory (at most 1 MiB, at
/// [`QXL_SLOT_BASE`]); commands of every type pointing anywhere in it and outside.
pub fn qxl_parse(data: &[u8]) {
    if data.len() < QXL_HEAD {
        return;
    }
    let (head, body) = data.split_at(QXL_HEAD);
    let n = body.len().min(QXL_SLOT_MAX);
    let mut ram = Ram::new(QXL_SLOT_BASE, n.max(4096));
    ram.bytes[..n].copy_from_slice(&body[..n]);
    let mut slots = MemSlots::new(8, 8);
    slots.add(ram.slot(1, 1));
    for c in head.chunks_exact(8) {
        let off = u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        let cmd = QxlCommand {
            data: slots.encode(1, c[4] & 1, QXL_SLOT_BASE + off),
            cmd_type: u32::from(c[5] % 7),
            padding: 0,
        };
        let mut r = Reader {
            slots: &slots,
            mem: &ram,
            group: 0,
            budget: Budget { bytes: 1 << 20 },
        };
        let _ = parse(&mut r, &cmd, u32::from(c[6] & 1));
    }
}

/// A [`qxl_parse`] input for one command of type `cmd_type` at device address `addr` in
/// `mem`, the slot's memory from [`QXL_SLOT_BASE`] on (pointers in it as the device wrote them:
/// slot 1, generation 1): for seeding the target with real commands.
pub fn qxl_parse_input(cmd_type: u32, addr: u64, mem: &[u8]) -> Vec<u8> {
    let off = addr.saturating_sub(QXL_SLOT_BASE) as u32;
    let mut v = Vec::with_capacity(QXL_HEAD + mem.len());
    v.extend(off.to_le_bytes());
    v.extend([1, cmd_type as u8, 0, 0]);
    v.extend([0; QXL_HEAD - 8]);
    v.extend_from_slice(&mem[..mem.len().min(QXL_SLOT_MAX)]);
    v
}
