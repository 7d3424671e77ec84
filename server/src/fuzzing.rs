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
pub const TARGETS: &[&str] = &["link_stage", "linked_channels", "qxl_parse", "opus_decode"];

/// Run target `name` on `data`; `false` if there is no such target here.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "link_stage" => link_stage(data),
        "linked_channels" => linked_channels(data),
        "qxl_parse" => qxl_parse(data),
        "opus_decode" => {
            opus_decode(data);
        }
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

/// Two clients, each with linked main and inputs channels; the second (the one the input
/// attacks) also has the playback and record channels (one client per sound device).
struct TwoClients {
    good: Linked,
    good_in: Linked,
    bad: Linked,
    bad_in: Linked,
    bad_play: Linked,
    bad_rec: Linked,
}

fn two_clients(s: &mut Server) -> Option<TwoClients> {
    let (good, sid, _) = link(s, ChannelType::Main, 0)?;
    let (good_in, _, _) = link(s, ChannelType::Inputs, sid?)?;
    let (bad, bsid, _) = link(s, ChannelType::Main, 0)?;
    let (bad_in, _, _) = link(s, ChannelType::Inputs, bsid?)?;
    let (bad_play, _, _) = link(s, ChannelType::Playback, bsid?)?;
    let (bad_rec, _, _) = link(s, ChannelType::Record, bsid?)?;
    Some(TwoClients {
        good,
        good_in,
        bad,
        bad_in,
        bad_play,
        bad_rec,
    })
}

/// A playback device for fuzzing: starts at once, then a 480-frame buffer of a fixed pattern
/// every 10 ms (what a guest playing sound makes the server do), volume and mute changes now
/// and then, a stop and a restart each second.
struct FuzzPlayback {
    next_ms: u64,
    started: bool,
}

impl crate::vdi::PlaybackDevice for FuzzPlayback {
    fn rate(&self) -> u32 {
        spice_audio::opus::FREQUENCY
    }
    fn run(&mut self, now_ms: u64) -> Vec<crate::vdi::PlaybackCall> {
        use crate::vdi::PlaybackCall;
        let mut calls = Vec::new();
        // At most a second of buffers per call (a long idle step plays one second).
        self.next_ms = self.next_ms.max(now_ms.saturating_sub(1_000));
        while self.next_ms <= now_ms {
            let t = self.next_ms;
            if t % 1_000 == 0 {
                calls.push(if self.started {
                    PlaybackCall::Stop
                } else {
                    PlaybackCall::Start
                });
                self.started = !self.started;
            }
            if t % 330 == 0 {
                calls.push(PlaybackCall::Volume(vec![(t % 65_536) as u16; 2]));
                calls.push(PlaybackCall::Mute(t % 660 == 0));
            }
            if self.started {
                let frames = (0..crate::vdi::AUDIO_FRAME_SAMPLES as u32)
                    .map(|i| i.wrapping_mul(0x9e37_79b9) ^ (t as u32))
                    .collect();
                calls.push(PlaybackCall::Samples(frames));
            }
            self.next_ms += 10;
        }
        calls
    }
    fn next_wakeup(&self) -> Option<u64> {
        Some(self.next_ms)
    }
}

/// A record device for fuzzing: records from its first run; counts the frames it is handed
/// and checks each batch is within the budget.
struct FuzzRecord {
    frames: std::rc::Rc<std::cell::Cell<u64>>,
    max: usize,
    rate: u32,
    started: bool,
}

impl FuzzRecord {
    fn new(frames: std::rc::Rc<std::cell::Cell<u64>>, rate: u32) -> Self {
        FuzzRecord {
            frames,
            max: crate::Budgets::default().record_ring_frames,
            rate,
            started: false,
        }
    }
}

impl crate::vdi::RecordDevice for FuzzRecord {
    fn rate(&self) -> u32 {
        self.rate
    }
    fn run(&mut self, _now_ms: u64) -> Vec<crate::vdi::RecordCall> {
        if std::mem::replace(&mut self.started, true) {
            Vec::new()
        } else {
            vec![crate::vdi::RecordCall::Start]
        }
    }
    fn samples(&mut self, frames: &[u32]) {
        assert!(!frames.is_empty() && frames.len() <= self.max);
        self.frames.set(self.frames.get() + frames.len() as u64);
    }
    fn next_wakeup(&self) -> Option<u64> {
        (!self.started).then_some(0)
    }
}

/// Arbitrary bytes on the linked main, inputs, playback and record channels of one client
/// while a second client is linked and a sound device plays: never a panic, and the second
/// client's channels are never closed. Input: up to 64 steps of (channel: 0 inputs, 1 main,
/// 2 playback, 3 record, modulo 4; bytes; milliseconds elapsed modulo 1000). (A `bool` here
/// before the sound channels: its inputs read the same.)
pub fn linked_channels(data: &[u8]) {
    with(data, |steps: Vec<(u8, Vec<u8>, u16)>| {
        let mut s = Server::new(config(Ticketing::Disabled));
        s.set_link_key(key());
        let delivered = std::rc::Rc::new(std::cell::Cell::new(0));
        s.set_playback_device(Box::new(FuzzPlayback {
            next_ms: 0,
            started: false,
        }));
        s.set_record_device(Box::new(FuzzRecord::new(
            delivered.clone(),
            spice_audio::opus::FREQUENCY,
        )));
        let Some(c) = two_clients(&mut s) else {
            panic!("linking two clients failed");
        };
        let mut now = 0u64;
        for (channel, bytes, dt) in steps.iter().take(64) {
            now += u64::from(*dt % 1000);
            let conn: ConnId = match channel % 4 {
                0 => c.bad_in.conn,
                1 => c.bad.conn,
                2 => c.bad_play.conn,
                _ => c.bad_rec.conn,
            };
            s.handle_bytes(conn, bytes, now);
            drain(&mut s, conn);
            drain(&mut s, c.good.conn);
            drain(&mut s, c.good_in.conn);
            s.handle_timeout(now);
            // The playback client never reads unless attacked: its queue stays bounded.
            assert!(s.playback_queued_frames() <= s.config().budgets.playback_queue_frames);
        }
        assert!(!s.is_finished(c.good.conn));
        assert!(!s.is_finished(c.good_in.conn));
        assert_eq!(delivered.get(), s.audio_stats().record_frames_delivered);
    });
}

/// What [`opus_decode`] did with an input: packets decoded by libopus and by the record
/// channel's decoder, and frames the record channel handed its device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpusDecodeRun {
    pub decoded: usize,
    pub record_decoded: usize,
    pub delivered: u64,
    /// The record channel was closed by a refused packet.
    pub record_closed: bool,
}

/// Split an [`opus_decode`] input into its flags byte and packets (each a u16 LE length, then
/// that many bytes; the last may be short).
fn opus_packets(data: &[u8]) -> (u8, Vec<&[u8]>) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return (0, Vec::new());
    };
    let mut v = Vec::new();
    while rest.len() >= 2 && v.len() < 64 {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let body = &rest[2..];
        let n = n.min(body.len());
        v.push(&body[..n]);
        rest = &body[n..];
    }
    (flags, v)
}

/// An [`opus_decode`] input: `flags`, then the packets.
pub fn opus_decode_input(flags: u8, packets: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![flags];
    for p in packets {
        v.extend((p.len().min(u16::MAX as usize) as u16).to_le_bytes());
        v.extend_from_slice(&p[..p.len().min(u16::MAX as usize)]);
    }
    v
}

/// Arbitrary packets as Opus: straight into [`spice_audio::OpusDecoder`], into the record
/// channel's decoder ([`crate::channel::record::RecordDecoder`], Opus mode, or raw with flags
/// bit 0), and as `data` messages of a linked record channel in that mode. Never a panic; a
/// decoded packet is at most one 10 ms frame; a refused packet closes the record channel and
/// nothing else; the device gets exactly the frames of the packets before it. Input: a flags
/// byte (bit 0: raw mode; bit 1: the device at 16 kHz instead of 48 kHz), then up to 64
/// packets, each a u16 LE length and its bytes.
pub fn opus_decode(data: &[u8]) -> OpusDecodeRun {
    use crate::channel::record::RecordDecoder;
    use spice_proto::messages::playback::{AudioDataMode, AudioModeMsg, AudioPacket};
    use spice_proto::messages::{Message, RecordClient};
    let (flags, packets) = opus_packets(data);
    let raw = flags & 1 == 1;
    let rate = if flags & 2 == 2 { 16_000 } else { 48_000 };
    let frame = rate as usize / 100;
    let mut run = OpusDecodeRun::default();
    let Ok(mut dec) = spice_audio::OpusDecoder::new(rate) else {
        panic!("no Opus decoder at {rate} Hz");
    };
    for p in &packets {
        if let Ok(pcm) = dec.decode(p) {
            assert!(pcm.len() <= frame * spice_audio::CHANNELS);
            run.decoded += 1;
        }
    }
    let max = crate::Budgets::default().record_ring_frames;
    let mut rd = RecordDecoder::new(rate, max);
    let mode = if raw {
        AudioDataMode::Raw
    } else {
        AudioDataMode::Opus
    };
    assert!(rd.set_mode(mode).is_ok());
    let mut want_frames = 0u64;
    let mut refused = false;
    for p in &packets {
        match rd.decode(p) {
            Ok(f) => {
                assert!(f.len() <= if raw { max } else { frame });
                run.record_decoded += 1;
                if !refused {
                    want_frames += f.len() as u64;
                }
            }
            Err(_) => refused = true,
        }
    }
    // The same packets through a linked record channel.
    let mut s = Server::new(config(Ticketing::Disabled));
    s.set_link_key(key());
    let delivered = std::rc::Rc::new(std::cell::Cell::new(0));
    s.set_record_device(Box::new(FuzzRecord::new(delivered.clone(), rate)));
    let Some((main, sid, _)) = link(&mut s, ChannelType::Main, 0) else {
        panic!("linking main failed");
    };
    let Some((rec, _, _)) = sid.and_then(|sid| link(&mut s, ChannelType::Record, sid)) else {
        panic!("linking record failed");
    };
    s.handle_timeout(1);
    let mut bytes = Vec::new();
    let m = RecordClient::Mode(AudioModeMsg {
        time: 0,
        mode,
        data: Default::default(),
    });
    spice_proto::header::frame(
        spice_proto::header::HeaderKind::Mini,
        0,
        m.msg_type(),
        &m.to_body(),
        &mut bytes,
    );
    for (i, p) in packets.iter().enumerate() {
        let m = RecordClient::Data(AudioPacket {
            time: i as u32,
            data: p.to_vec().into(),
        });
        spice_proto::header::frame(
            spice_proto::header::HeaderKind::Mini,
            0,
            m.msg_type(),
            &m.to_body(),
            &mut bytes,
        );
    }
    s.handle_bytes(rec.conn, &bytes, 2);
    drain(&mut s, rec.conn);
    drain(&mut s, main.conn);
    run.delivered = delivered.get();
    run.record_closed = s.is_finished(rec.conn);
    assert_eq!(run.record_closed, refused);
    assert_eq!(run.delivered, want_frames);
    assert!(!s.is_finished(main.conn));
    run
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
