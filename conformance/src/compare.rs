//! Compare our server's replies with the reference server's, channel by channel, under the
//! written equivalence policy (`conformance/POLICY.md`; this module is its implementation).
//!
//! A channel's verdict is the worst of its findings:
//! - **fails**: the link result differs (reference linked, we did not), a capability the
//!   reference offered is missing from ours (migration excepted), the mini header was not negotiated
//!   like the reference, a reply of ours does not decode, our server closed a channel the
//!   reference kept, a required message is missing, main's `init` reports another mouse mode,
//!   the inputs acknowledged differ in number, or the input events our devices received differ
//!   from what the reference's semantics give for the captured client messages; playback:
//!   another mode, `start` format, number of `data`, raw PCM, volume or mute, timestamps that
//!   go back or stray more than a buffer from the reference's spacing; record: another
//!   set-up, or (raw) other frames than the captured client sent;
//! - **differs**: only allowed differences (a channel we do not offer yet, other optional
//!   capabilities, optional messages, another valid choice such as the number and kind of
//!   draw messages for the same screen);
//! - **pass**: the normalised message sequences are equal and nothing else differs.

use spice_captures::transcript::Channel;
use spice_fake_devices::input::{Device, InputEvent, Record};
use spice_proto::caps::{self, Caps};
use spice_proto::link::LinkError;
use spice_proto::messages::inputs::{KeyboardModifiers, MouseButton};
use spice_proto::messages::main::MouseMode;
use spice_proto::messages::playback::AudioDataMode;
use spice_proto::messages::{
    AnyMessage, ChannelType, Direction, InputsClient, MainServer, PlaybackServer, RecordClient,
    RecordServer,
};

use crate::replay::ChannelReplay;

/// A verdict, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Differs,
    Fails,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Differs => "differs",
            Status::Fails => "fails",
        }
    }
}

/// One thing found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub status: Status,
    pub text: String,
}

/// The verdict on one channel of one session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelVerdict {
    /// `main:0`, `display:0`, ...
    pub channel: String,
    pub status: Status,
    /// Server-to-client data messages: the reference's, ours.
    pub reference_messages: usize,
    pub our_messages: usize,
    pub findings: Vec<Finding>,
    /// The normalised sequences compared (for the report and snapshots).
    pub reference_sequence: Vec<String>,
    pub our_sequence: Vec<String>,
}

impl ChannelVerdict {
    fn add(&mut self, status: Status, text: impl Into<String>) {
        self.status = self.status.max(status);
        self.findings.push(Finding {
            status,
            text: text.into(),
        });
    }
}

/// Channels this server offers; others are reported as not offered (differs).
fn offered(t: ChannelType) -> bool {
    matches!(
        t,
        ChannelType::Main
            | ChannelType::Display
            | ChannelType::Inputs
            | ChannelType::Cursor
            | ChannelType::Playback
            | ChannelType::Record
    )
}

/// The policy's normal form of a server-to-client message name on `channel`; None = ignored.
pub fn normalise(channel: ChannelType, name: &str) -> Option<String> {
    // Timing and implementation notices, not behaviour.
    if matches!(name, "ping" | "notify" | "multi_media_time") {
        return None;
    }
    match channel {
        ChannelType::Main if name.starts_with("agent_") => None,
        ChannelType::Display => {
            if name.starts_with("draw_") || name.starts_with("stream_") || name == "copy_bits" {
                Some("draw*".into())
            } else if name.starts_with("inval_") {
                // Cache management follows from the compression and cache choices made.
                None
            } else {
                Some(name.into())
            }
        }
        // One message per 10 ms of sound: their number and content are judged apart
        // (`compare_playback`).
        ChannelType::Playback if name == "data" => Some("data*".into()),
        _ => Some(name.into()),
    }
}

/// Normalise and collapse runs of `draw*` into one.
fn sequence(channel: ChannelType, names: impl Iterator<Item = &'static str>) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for n in names.filter_map(|n| normalise(channel, n)) {
        if (n == "draw*" || n == "data*") && v.last().is_some_and(|l| *l == n) {
            continue;
        }
        v.push(n);
    }
    v
}

/// Messages whose absence from our replies fails the channel (when the reference sent them).
fn required(channel: ChannelType) -> &'static [&'static str] {
    match channel {
        ChannelType::Main => &["init", "channels_list", "mouse_mode", "name", "uuid"],
        ChannelType::Inputs => &["init", "mouse_motion_ack"],
        ChannelType::Display => &["surface_create", "mark", "draw*"],
        ChannelType::Cursor => &["init"],
        ChannelType::Playback => &["mode", "start", "data*", "stop", "volume", "mute"],
        ChannelType::Record => &["start", "stop", "volume", "mute"],
        _ => &[],
    }
}

fn cap_names(channel: ChannelType, bit: u32) -> String {
    let name = match (channel, bit) {
        (ChannelType::Main, caps::main::NAME_AND_UUID) => "NAME_AND_UUID",
        (ChannelType::Main, caps::main::AGENT_CONNECTED_TOKENS) => "AGENT_CONNECTED_TOKENS",
        (ChannelType::Main, caps::main::SEAMLESS_MIGRATE) => "SEAMLESS_MIGRATE",
        (ChannelType::Main, caps::main::SEMI_SEAMLESS_MIGRATE) => "SEMI_SEAMLESS_MIGRATE",
        (ChannelType::Inputs, caps::inputs::KEY_SCANCODE) => "KEY_SCANCODE",
        (ChannelType::Display, caps::display::LZ4_COMPRESSION) => "LZ4_COMPRESSION",
        (ChannelType::Display, caps::display::PREF_COMPRESSION) => "PREF_COMPRESSION",
        (ChannelType::Display, caps::display::MONITORS_CONFIG) => "MONITORS_CONFIG",
        (ChannelType::Display, caps::display::SIZED_STREAM) => "SIZED_STREAM",
        (ChannelType::Display, caps::display::COMPOSITE) => "COMPOSITE",
        (ChannelType::Display, caps::display::A8_SURFACE) => "A8_SURFACE",
        (ChannelType::Display, caps::display::STREAM_REPORT) => "STREAM_REPORT",
        (ChannelType::Display, caps::display::GL_SCANOUT) => "GL_SCANOUT",
        (ChannelType::Display, caps::display::MULTI_CODEC) => "MULTI_CODEC",
        (ChannelType::Display, caps::display::CODEC_MJPEG) => "CODEC_MJPEG",
        (ChannelType::Display, caps::display::PREF_VIDEO_CODEC_TYPE) => "PREF_VIDEO_CODEC_TYPE",
        (ChannelType::Playback, caps::playback::CELT_0_5_1) => "CELT_0_5_1",
        (ChannelType::Playback, caps::playback::VOLUME) => "VOLUME",
        (ChannelType::Playback, caps::playback::LATENCY) => "LATENCY",
        (ChannelType::Playback, caps::playback::OPUS) => "OPUS",
        (ChannelType::Record, caps::record::CELT_0_5_1) => "CELT_0_5_1",
        (ChannelType::Record, caps::record::VOLUME) => "VOLUME",
        (ChannelType::Record, caps::record::OPUS) => "OPUS",
        _ => "",
    };
    if name.is_empty() {
        format!("bit {bit}")
    } else {
        format!("{name} (bit {bit})")
    }
}

fn bits(words: &[u32]) -> Vec<u32> {
    (0..words.len() as u32 * 32)
        .filter(|&b| {
            words
                .get(b as usize / 32)
                .is_some_and(|w| w & (1 << (b % 32)) != 0)
        })
        .collect()
}

fn compare_caps(
    v: &mut ChannelVerdict,
    ty: ChannelType,
    client: &Caps,
    reference: &Caps,
    ours: &Caps,
) {
    let (rb, ob) = (bits(&reference.channel), bits(&ours.channel));
    for b in &rb {
        if !ob.contains(b) {
            let migration = ty == ChannelType::Main
                && (*b == caps::main::SEMI_SEAMLESS_MIGRATE || *b == caps::main::SEAMLESS_MIGRATE);
            let status = if migration {
                Status::Differs
            } else {
                Status::Fails
            };
            v.add(
                status,
                format!(
                    "capability {} offered by the reference is missing",
                    cap_names(ty, *b)
                ),
            );
        }
    }
    for b in &ob {
        if !rb.contains(b) {
            v.add(
                Status::Differs,
                format!(
                    "capability {} offered by us, not by the reference",
                    cap_names(ty, *b)
                ),
            );
        }
    }
    let mini = |c: &Caps| c.has_common(caps::common::MINI_HEADER);
    if mini(client) && mini(reference) != mini(ours) {
        v.add(Status::Fails, "the mini header was negotiated differently");
    }
}

/// Judge one channel.
pub fn compare_channel(captured: &Channel, ours: &ChannelReplay) -> ChannelVerdict {
    let ty = captured.channel_type;
    let ref_names = captured
        .messages
        .iter()
        .filter(|m| m.dir == Direction::ServerToClient)
        .map(|m| m.name);
    let reference_sequence = sequence(ty, ref_names);
    let our_sequence = sequence(ty, ours.replies.iter().map(|r| r.name));
    let mut v = ChannelVerdict {
        channel: format!("{}:{}", ty.name(), captured.channel_id),
        status: Status::Pass,
        reference_messages: captured
            .messages
            .iter()
            .filter(|m| m.dir == Direction::ServerToClient)
            .count(),
        our_messages: ours.replies.len(),
        findings: Vec::new(),
        reference_sequence,
        our_sequence,
    };
    for n in &ours.notes {
        v.add(Status::Differs, format!("replay: {n}"));
    }
    let ref_ok = captured.link.result == Some(LinkError::Ok);
    let our_result = ours.result.or(ours.reply.as_ref().map(|r| r.error));
    if !offered(ty) {
        if our_result == Some(LinkError::Ok) {
            v.add(
                Status::Fails,
                "linked a channel this server says it does not offer",
            );
        } else {
            v.add(
                Status::Differs,
                format!(
                    "channel not offered by this server (link result {:?}); the reference {}",
                    our_result,
                    if ref_ok {
                        "served it"
                    } else {
                        "refused it too"
                    }
                ),
            );
        }
        return v;
    }
    match (ref_ok, our_result) {
        (true, Some(LinkError::Ok)) => {}
        (true, other) => {
            v.add(
                Status::Fails,
                format!("link: the reference linked, ours gave {other:?}"),
            );
            return v;
        }
        (false, Some(LinkError::Ok)) => {
            v.add(
                Status::Differs,
                format!(
                    "link: the reference answered {:?}, ours linked",
                    captured.link.result
                ),
            );
        }
        (false, r) => {
            if r != captured.link.result {
                v.add(
                    Status::Differs,
                    format!(
                        "link: the reference answered {:?}, ours {r:?}",
                        captured.link.result
                    ),
                );
            }
            return v;
        }
    }
    if let (Some(rr), Some(or)) = (&captured.link.reply, &ours.reply) {
        compare_caps(&mut v, ty, &captured.link.mess.caps, &rr.caps, &or.caps);
    }
    let bad: Vec<String> = ours
        .replies
        .iter()
        .filter_map(|r| {
            r.decoded
                .as_ref()
                .err()
                .map(|e| format!("{} ({}): {e}", r.name, r.msg_type))
        })
        .collect();
    if !bad.is_empty() {
        v.add(
            Status::Fails,
            format!(
                "{} of our messages do not decode: {}",
                bad.len(),
                bad.join("; ")
            ),
        );
    }
    if let Some(t) = ours.closed_at_ms {
        v.add(
            Status::Fails,
            format!("our server closed the channel at {t} ms"),
        );
    }
    for req in required(ty) {
        let in_ref = v.reference_sequence.iter().any(|s| s == req);
        let in_ours = v.our_sequence.iter().any(|s| s == req);
        if in_ref && !in_ours {
            v.add(Status::Fails, format!("required message {req} missing"));
        }
    }
    if v.reference_sequence != v.our_sequence {
        let missing: Vec<&String> = v
            .reference_sequence
            .iter()
            .filter(|s| !v.our_sequence.contains(s))
            .collect();
        let extra: Vec<&String> = v
            .our_sequence
            .iter()
            .filter(|s| !v.reference_sequence.contains(s))
            .collect();
        let text = if missing.is_empty() && extra.is_empty() {
            "same messages, in another order or number".to_string()
        } else {
            format!("messages only in the reference: {missing:?}; only in ours: {extra:?}")
        };
        v.add(Status::Differs, text);
    }
    match ty {
        ChannelType::Main => {
            let mode = |msgs: &mut dyn Iterator<Item = Option<&AnyMessage>>| {
                msgs.flatten().find_map(|m| match m {
                    AnyMessage::MainServer(MainServer::Init(i)) => Some(i.current_mouse_mode),
                    _ => None,
                })
            };
            let r = mode(&mut captured.messages.iter().map(|m| m.decoded.as_ref().ok()));
            let o = mode(&mut ours.replies.iter().map(|m| m.decoded.as_ref().ok()));
            if r.is_some() && o.is_some() && r != o {
                v.add(
                    Status::Fails,
                    format!(
                        "init: current mouse mode {} where the reference says {}",
                        o.unwrap_or(0),
                        r.unwrap_or(0)
                    ),
                );
            }
        }
        ChannelType::Inputs => {
            let count = |it: &mut dyn Iterator<Item = &str>| {
                it.filter(|n| *n == "mouse_motion_ack").count()
            };
            let r = count(
                &mut captured
                    .messages
                    .iter()
                    .filter(|m| m.dir == Direction::ServerToClient)
                    .map(|m| m.name),
            );
            let o = count(&mut ours.replies.iter().map(|m| m.name));
            if r != o {
                v.add(
                    Status::Fails,
                    format!("{o} motion acks where the reference sent {r}"),
                );
            }
        }
        ChannelType::Playback => compare_playback(&mut v, captured, ours),
        ChannelType::Record => compare_record(&mut v, captured, ours),
        _ => {}
    }
    v
}

/// What a playback stream shows, from either side.
#[derive(Debug, Default)]
struct Sound {
    modes: Vec<AudioDataMode>,
    /// (channels, format, frequency, time).
    starts: Vec<(u32, u16, u32, u32)>,
    /// (timestamp, the last start's timestamp, the payload).
    data: Vec<(u32, u32, Vec<u8>)>,
    volumes: Vec<Vec<u16>>,
    mutes: Vec<u8>,
}

impl Sound {
    fn of<'a>(msgs: impl Iterator<Item = &'a AnyMessage>) -> Sound {
        let mut s = Sound::default();
        for m in msgs {
            let AnyMessage::PlaybackServer(m) = m else {
                continue;
            };
            match m {
                PlaybackServer::Mode(md) => s.modes.push(md.mode),
                PlaybackServer::Start(st) => {
                    s.starts
                        .push((st.channels, st.format.to_raw(), st.frequency, st.time))
                }
                PlaybackServer::Data(d) => {
                    let start = s.starts.last().map_or(d.time, |st| st.3);
                    s.data.push((d.time, start, d.data.0.clone()));
                }
                PlaybackServer::Volume(vo) => s.volumes.push(vo.volume.clone()),
                PlaybackServer::Mute(mu) => s.mutes.push(mu.mute),
                _ => {}
            }
        }
        s
    }
}

/// How far one of our playback timestamps may be, relative to its stream's `start`, from the
/// reference's (one 10 ms buffer).
pub const PLAYBACK_TIME_SLACK_MS: i64 = 10;

/// The playback policy: the same mode, `start` format, data (raw: the same bytes; Opus: the
/// same number of packets), timestamps that never go back and keep the reference's spacing
/// from their `start`, and the same volume and mute.
fn compare_playback(v: &mut ChannelVerdict, captured: &Channel, ours: &ChannelReplay) {
    let r = Sound::of(
        captured
            .messages
            .iter()
            .filter(|m| m.dir == Direction::ServerToClient)
            .filter_map(|m| m.decoded.as_ref().ok()),
    );
    let o = Sound::of(ours.replies.iter().filter_map(|m| m.decoded.as_ref().ok()));
    if r.modes.first() != o.modes.first() {
        v.add(
            Status::Fails,
            format!(
                "mode {:?} where the reference chose {:?}",
                o.modes.first().map(|m| m.name()),
                r.modes.first().map(|m| m.name())
            ),
        );
    }
    let fmt = |s: &Sound| -> Vec<(u32, u16, u32)> {
        s.starts.iter().map(|&(c, f, hz, _)| (c, f, hz)).collect()
    };
    if fmt(&r) != fmt(&o) {
        v.add(
            Status::Fails,
            format!(
                "start (channels, format, frequency): ours {:?}, the reference's {:?}",
                fmt(&o),
                fmt(&r)
            ),
        );
    }
    if r.data.len() != o.data.len() {
        v.add(
            Status::Fails,
            format!(
                "{} data messages where the reference sent {}",
                o.data.len(),
                r.data.len()
            ),
        );
    }
    let raw = r.modes.first() == Some(&AudioDataMode::Raw);
    let pairs = r.data.iter().zip(&o.data).enumerate();
    if raw {
        if let Some((i, (a, b))) = pairs.clone().find(|(_, (a, b))| a.2 != b.2) {
            v.add(
                Status::Fails,
                format!(
                    "data #{i}: our raw PCM ({} bytes) differs from the reference's ({} bytes)",
                    b.2.len(),
                    a.2.len()
                ),
            );
        }
    } else if let Some((i, b)) = o
        .data
        .iter()
        .enumerate()
        .find(|(_, b)| b.2.len() > spice_audio::opus::MAX_COMPRESSED_BYTES)
    {
        v.add(
            Status::Fails,
            format!(
                "data #{i}: an Opus packet of {} bytes (at most {})",
                b.2.len(),
                spice_audio::opus::MAX_COMPRESSED_BYTES
            ),
        );
    }
    if let Some(w) = o
        .data
        .windows(2)
        .find(|w| (w[1].0.wrapping_sub(w[0].0) as i32) < 0)
    {
        v.add(
            Status::Fails,
            format!("our data timestamps go back: {} then {}", w[0].0, w[1].0),
        );
    }
    let offset = |d: &(u32, u32, Vec<u8>)| i64::from(d.0.wrapping_sub(d.1) as i32);
    if let Some((i, (a, b))) = pairs
        .clone()
        .find(|(_, (a, b))| (offset(a) - offset(b)).abs() > PLAYBACK_TIME_SLACK_MS)
    {
        v.add(
            Status::Fails,
            format!(
                "data #{i}: our timestamp is {} ms after its start, the reference's {} ms",
                offset(b),
                offset(a)
            ),
        );
    }
    if r.volumes != o.volumes || r.mutes != o.mutes {
        v.add(
            Status::Fails,
            format!(
                "volume/mute: ours {:?}/{:?}, the reference's {:?}/{:?}",
                o.volumes, o.mutes, r.volumes, r.mutes
            ),
        );
    }
}

/// The record policy: the same `start` format, volume and mute as the reference sent.
fn compare_record(v: &mut ChannelVerdict, captured: &Channel, ours: &ChannelReplay) {
    type Setup = (Vec<(u32, u16, u32)>, Vec<Vec<u16>>, Vec<u8>);
    let of = |msgs: &mut dyn Iterator<Item = &AnyMessage>| -> Setup {
        let mut s: Setup = Default::default();
        for m in msgs {
            match m {
                AnyMessage::RecordServer(RecordServer::Start(st)) => {
                    s.0.push((st.channels, st.format.to_raw(), st.frequency))
                }
                AnyMessage::RecordServer(RecordServer::Volume(vo)) => s.1.push(vo.volume.clone()),
                AnyMessage::RecordServer(RecordServer::Mute(mu)) => s.2.push(mu.mute),
                _ => {}
            }
        }
        s
    };
    let r = of(&mut captured
        .messages
        .iter()
        .filter(|m| m.dir == Direction::ServerToClient)
        .filter_map(|m| m.decoded.as_ref().ok()));
    let o = of(&mut ours.replies.iter().filter_map(|m| m.decoded.as_ref().ok()));
    if r != o {
        v.add(
            Status::Fails,
            format!("record set-up (starts, volumes, mutes): ours {o:?}, the reference's {r:?}"),
        );
    }
}

/// The record data our device received against the raw PCM the captured client sent (only
/// when it sent raw data): the same frames, in order.
pub fn compare_recorded(v: &mut ChannelVerdict, captured: &Channel, recorded: &[u32]) {
    let mut raw = true;
    let mut sent = Vec::new();
    for m in captured
        .messages
        .iter()
        .filter(|m| m.dir == Direction::ClientToServer)
    {
        match &m.decoded {
            Ok(AnyMessage::RecordClient(RecordClient::Mode(md))) => {
                raw = md.mode == AudioDataMode::Raw
            }
            Ok(AnyMessage::RecordClient(RecordClient::Data(d))) if raw => {
                sent.extend(spice_audio::pcm::bytes_to_frames(&d.data.0))
            }
            _ => {}
        }
    }
    if raw && !sent.is_empty() && recorded != sent.as_slice() {
        v.add(
            Status::Fails,
            format!(
                "our record device received {} frames; the captured client sent {} raw frames",
                recorded.len(),
                sent.len()
            ),
        );
    }
}

/// The mouse mode the reference was in over time: (capture ms, mode) changes, from main.
pub fn mouse_mode_timeline(main: &Channel, t0: f64) -> Vec<(u64, MouseMode)> {
    let mut v = Vec::new();
    for m in &main.messages {
        let at = ((m.at.ts.as_f64() - t0).max(0.0) * 1000.0).round() as u64;
        match &m.decoded {
            Ok(AnyMessage::MainServer(MainServer::Init(i))) => {
                v.push((at, MouseMode(i.current_mouse_mode as u16)))
            }
            Ok(AnyMessage::MainServer(MainServer::MouseMode(mm))) => v.push((at, mm.current_mode)),
            _ => {}
        }
    }
    v
}

/// The device events the reference's inputs semantics give for the captured client messages
/// (`InputsChannelClient::handle_message` in spice-server; keyboard LEDs as a PS/2 keyboard
/// whose guest acknowledges lock keys).
pub fn expected_events(inputs: &Channel, modes: &[(u64, MouseMode)], t0: f64) -> Vec<InputEvent> {
    let mut out = Vec::new();
    // The reference's tracked lock state (`modifiers`) and held lock keys (`modifiers_pressed`).
    let mut leds = KeyboardModifiers::EMPTY;
    let mut pressed = 0u16;
    let flag_of = |b: u8| match b & 0x7f {
        0x3a => KeyboardModifiers::CAPS_LOCK.0,
        0x45 => KeyboardModifiers::NUM_LOCK.0,
        0x46 => KeyboardModifiers::SCROLL_LOCK.0,
        _ => 0,
    };
    let key =
        |b: u8, out: &mut Vec<InputEvent>, leds: &mut KeyboardModifiers, pressed: &mut u16| {
            out.push(InputEvent::Scancode { byte: b });
            let f = flag_of(b);
            if b & 0x80 != 0 {
                *pressed &= !f;
            } else if f != 0 && *pressed & f == 0 {
                leds.0 ^= f;
                *pressed |= f;
            }
        };
    for m in inputs
        .messages
        .iter()
        .filter(|m| m.dir == Direction::ClientToServer)
    {
        let at = ((m.at.ts.as_f64() - t0).max(0.0) * 1000.0).round() as u64;
        let client_mode = modes
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .is_some_and(|(_, mm)| *mm == MouseMode::CLIENT);
        let Ok(AnyMessage::InputsClient(msg)) = &m.decoded else {
            continue;
        };
        match msg {
            InputsClient::KeyDown(c) | InputsClient::KeyUp(c) => {
                for b in c.to_le_bytes() {
                    if b == 0 {
                        break;
                    }
                    key(b, &mut out, &mut leds, &mut pressed);
                }
            }
            InputsClient::KeyScancode(bytes) => {
                for &b in bytes.iter() {
                    key(b, &mut out, &mut leds, &mut pressed);
                }
            }
            InputsClient::KeyModifiers(want) => {
                for (flag, code) in [
                    (KeyboardModifiers::SCROLL_LOCK, 0x46u8),
                    (KeyboardModifiers::NUM_LOCK, 0x45),
                    (KeyboardModifiers::CAPS_LOCK, 0x3a),
                ] {
                    if pressed & flag.0 == 0 && want.contains(flag) != leds.contains(flag) {
                        out.push(InputEvent::Scancode { byte: code });
                        out.push(InputEvent::Scancode { byte: code | 0x80 });
                        leds.0 ^= flag.0;
                    }
                }
            }
            InputsClient::MouseMotion(mm) if !client_mode => out.push(InputEvent::Motion {
                dx: mm.dx,
                dy: mm.dy,
                dz: 0,
                buttons: mm.buttons_state.bits(),
            }),
            InputsClient::MousePosition(p) if client_mode => out.push(InputEvent::Position {
                x: p.x,
                y: p.y,
                display: p.display_id,
                buttons: p.buttons_state.bits(),
            }),
            InputsClient::MousePress(ev) => {
                let dz = match ev.button {
                    MouseButton::Up => -1,
                    MouseButton::Down => 1,
                    _ => 0,
                };
                out.push(if client_mode {
                    InputEvent::Wheel {
                        dz,
                        buttons: ev.buttons_state.bits(),
                    }
                } else {
                    InputEvent::Motion {
                        dx: 0,
                        dy: 0,
                        dz,
                        buttons: ev.buttons_state.bits(),
                    }
                });
            }
            InputsClient::MouseRelease(ev) => out.push(if client_mode {
                InputEvent::TabletButtons {
                    buttons: ev.buttons_state.bits(),
                }
            } else {
                InputEvent::Buttons {
                    buttons: ev.buttons_state.bits(),
                }
            }),
            _ => {}
        }
    }
    out
}

/// Compare the events our devices got with the expected ones; findings go on the inputs
/// verdict.
pub fn compare_events(v: &mut ChannelVerdict, expected: &[InputEvent], got: &[Record]) {
    let got: Vec<&InputEvent> = got
        .iter()
        .filter(|r| matches!(r.device, Device::Keyboard | Device::Mouse | Device::Tablet))
        .filter(|r| !matches!(r.event, InputEvent::LogicalSize { .. }))
        .map(|r| &r.event)
        .collect();
    let exp: Vec<&InputEvent> = expected.iter().collect();
    if got != exp {
        let first = got
            .iter()
            .zip(&exp)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(exp.len()));
        v.add(
            Status::Fails,
            format!(
                "input events: our devices got {} events, the captured client's messages give {}; first difference at #{first}: ours {:?}, expected {:?}",
                got.len(),
                exp.len(),
                got.get(first),
                exp.get(first)
            ),
        );
    }
}

/// Judge the final screens of a session's display channel: our server's display messages must
/// all be drawable by the reference canvas and give the reference's final screen, pixel for
/// pixel (the replay's device shows what the reference showed; both are in the HTML report,
/// side by side).
pub fn judge_screens(v: &mut ChannelVerdict, s: &crate::Screens) {
    if !s.our_errors.is_empty() {
        v.add(
            Status::Fails,
            format!(
                "the reference canvas cannot draw our display messages: {}",
                s.our_errors.join("; ")
            ),
        );
    }
    match (&s.reference, &s.ours) {
        (Some(_), None) => v.add(
            Status::Fails,
            "our display messages never make a primary surface",
        ),
        (Some(r), Some(o)) if (r.width, r.height) != (o.width, o.height) => v.add(
            Status::Differs,
            format!(
                "final screen {}x{}, the reference's {}x{}",
                o.width, o.height, r.width, r.height
            ),
        ),
        (Some(r), Some(o)) => {
            // Same content (the replay's device shows the reference's screen): the final
            // screens must be equal.
            let differ = r
                .to_rgba8()
                .chunks_exact(4)
                .zip(o.to_rgba8().chunks_exact(4))
                .filter(|(a, b)| a[..3] != b[..3])
                .count();
            if differ > 0 {
                v.add(
                    Status::Fails,
                    format!("final screen: {differ} pixels differ from the reference's"),
                );
            }
        }
        _ => {}
    }
}
