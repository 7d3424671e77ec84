//! The playback and record channels end to end through `Server`: a scripted sound card on the
//! device side, a sans-IO client on the other (links with chosen capabilities, reads and
//! decodes every message). What the client gets is compared with what the device put, bit for
//! bit in raw mode, by length (libopus decode) in Opus mode; timestamps against the server's
//! clock; memory against the budgets; hostile record input closes only the record channel.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use proptest::prelude::*;
use spice_proto::caps;
use spice_proto::header::{frame, Framer, HeaderKind};
use spice_proto::messages::playback::{AudioDataMode, AudioFmt, AudioModeMsg, AudioPacket};
use spice_proto::messages::{
    ChannelType, MainClient, MainServer, Message, PlaybackServer, RecordClient, RecordServer,
};
use spice_proto::wire::Bytes;
use spice_server::channel::playback::CORE_AUDIO_BYTES;
use spice_server::server::Breakage;
use spice_server::testing::{drain, link, link_with_caps, Linked};
use spice_server::vdi::{PlaybackCall, PlaybackDevice, RecordCall, RecordDevice};
use spice_server::{Config, ConnId, Server};

/// A playback device playing a script of `(at_ms, call)`.
struct ScriptedPlayback {
    rate: u32,
    script: Rc<RefCell<VecDeque<(u64, PlaybackCall)>>>,
}

impl PlaybackDevice for ScriptedPlayback {
    fn rate(&self) -> u32 {
        self.rate
    }
    fn run(&mut self, now_ms: u64) -> Vec<PlaybackCall> {
        let mut s = self.script.borrow_mut();
        let mut out = Vec::new();
        while s.front().is_some_and(|(at, _)| *at <= now_ms) {
            out.extend(s.pop_front().map(|(_, c)| c));
        }
        out
    }
    fn next_wakeup(&self) -> Option<u64> {
        self.script.borrow().front().map(|(at, _)| *at)
    }
}

/// A record device playing a script and keeping every frame it is handed.
struct RecordSink {
    rate: u32,
    script: Rc<RefCell<VecDeque<(u64, RecordCall)>>>,
    got: Rc<RefCell<Vec<u32>>>,
}

impl RecordDevice for RecordSink {
    fn rate(&self) -> u32 {
        self.rate
    }
    fn run(&mut self, now_ms: u64) -> Vec<RecordCall> {
        let mut s = self.script.borrow_mut();
        let mut out = Vec::new();
        while s.front().is_some_and(|(at, _)| *at <= now_ms) {
            out.extend(s.pop_front().map(|(_, c)| c));
        }
        out
    }
    fn samples(&mut self, frames: &[u32]) {
        self.got.borrow_mut().extend_from_slice(frames);
    }
    fn next_wakeup(&self) -> Option<u64> {
        self.script.borrow().front().map(|(at, _)| *at)
    }
}

type Script<C> = Rc<RefCell<VecDeque<(u64, C)>>>;

struct Rig {
    s: Server,
    play: Script<PlaybackCall>,
    rec: Script<RecordCall>,
    got: Rc<RefCell<Vec<u32>>>,
}

fn rig_with(cfg: Config, play_rate: u32, rec_rate: u32) -> Rig {
    let mut s = Server::new(Config {
        fresh_key_per_link: false,
        seed: Some(7),
        ..cfg
    });
    s.set_link_key(spice_server::testing::fixed_key());
    let play: Script<PlaybackCall> = Default::default();
    let rec: Script<RecordCall> = Default::default();
    let got: Rc<RefCell<Vec<u32>>> = Default::default();
    s.set_playback_device(Box::new(ScriptedPlayback {
        rate: play_rate,
        script: play.clone(),
    }));
    s.set_record_device(Box::new(RecordSink {
        rate: rec_rate,
        script: rec.clone(),
        got: got.clone(),
    }));
    Rig { s, play, rec, got }
}

fn rig() -> Rig {
    rig_with(Config::default(), 48_000, 48_000)
}

/// Run the server's timer from `from` to `to` in 1 ms steps (as the shell would, woken at
/// `poll_timeout`).
fn run_until(s: &mut Server, from: u64, to: u64) {
    for t in from..=to {
        s.handle_timeout(t);
    }
}

fn messages<M: Message>(bytes: &[u8]) -> Vec<M> {
    let mut f = Framer::new(HeaderKind::Mini);
    f.push(bytes);
    let mut v = Vec::new();
    while let Ok(Some(m)) = f.next() {
        v.push(M::decode(m.header.msg_type, &m.body).expect("decodes"));
    }
    v
}

fn msg<M: Message>(m: &M) -> Vec<u8> {
    let mut b = Vec::new();
    frame(HeaderKind::Mini, 0, m.msg_type(), &m.to_body(), &mut b);
    b
}

/// A client: main, then playback and record with the given channel caps.
fn client(s: &mut Server, play_caps: &[u32], rec_caps: &[u32]) -> (Linked, Linked, Linked) {
    let (main, p, r, _) = client_with_rest(s, play_caps, rec_caps);
    (main, p, r)
}

/// [`client`], also returning the playback channel's first bytes (its `mode`).
fn client_with_rest(
    s: &mut Server,
    play_caps: &[u32],
    rec_caps: &[u32],
) -> (Linked, Linked, Linked, Vec<u8>) {
    let (main, sid) = link(s, ChannelType::Main, 0, "", 0).unwrap();
    let sid = sid.unwrap();
    let (p, _, rest) = link_with_caps(s, ChannelType::Playback, sid, "", 0, play_caps).unwrap();
    let (r, _, _) = link_with_caps(s, ChannelType::Record, sid, "", 0, rec_caps).unwrap();
    (main, p, r, rest)
}

/// A deterministic buffer of `n` frames, different for each `k`.
fn buffer(k: u32, n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| {
            let l = ((i * 37 + k * 1001) % 20_000) as i16 - 10_000;
            let r = ((i * 91 + k * 7) % 30_000) as i16 - 15_000;
            spice_audio::pcm::frame(l, r)
        })
        .collect()
}

fn data_of(msgs: &[PlaybackServer]) -> Vec<&AudioPacket> {
    msgs.iter()
        .filter_map(|m| match m {
            PlaybackServer::Data(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn open(s: &Server, l: Linked) -> bool {
    !s.is_finished(l.conn)
}

#[test]
fn the_channel_list_offers_playback_and_record_with_their_devices() {
    let mut r = rig();
    let (main, _sid) = link(&mut r.s, ChannelType::Main, 0, "", 0).unwrap();
    drain(&mut r.s, main.conn);
    r.s.handle_bytes(main.conn, &msg(&MainClient::AttachChannels), 1);
    let list = messages::<MainServer>(&drain(&mut r.s, main.conn))
        .into_iter()
        .find_map(|m| match m {
            MainServer::ChannelsList(l) => Some(l.channels),
            _ => None,
        })
        .unwrap();
    let types: Vec<ChannelType> = list.iter().map(|c| c.channel_type).collect();
    assert!(types.contains(&ChannelType::Playback) && types.contains(&ChannelType::Record));
    // Without devices: neither listed, and a link is refused.
    let mut s = Server::new(Config {
        fresh_key_per_link: false,
        ..Config::default()
    });
    s.set_link_key(spice_server::testing::fixed_key());
    let (_, sid) = link(&mut s, ChannelType::Main, 0, "", 0).unwrap();
    assert!(link(&mut s, ChannelType::Playback, sid.unwrap(), "", 0).is_err());
    assert!(link(&mut s, ChannelType::Record, sid.unwrap(), "", 0).is_err());
}

#[test]
fn raw_playback_is_the_device_frames_bit_exact_with_increasing_timestamps() {
    let mut r = rig_with(
        Config {
            playback_compression: false,
            ..Config::default()
        },
        48_000,
        48_000,
    );
    let (_main, p, _rec, rest) = client_with_rest(
        &mut r.s,
        &[caps::playback::VOLUME, caps::playback::OPUS],
        &[],
    );
    let mut sent = Vec::new();
    r.play.borrow_mut().push_back((100, PlaybackCall::Start));
    for k in 0..50u32 {
        // One buffer every 10 ms; two in the same millisecond at 300 ms; a short one last.
        let at = if k == 20 {
            300
        } else {
            110 + 10 * u64::from(k)
        };
        let n = if k == 49 { 123 } else { 480 };
        let b = buffer(k, n);
        sent.push((at, b.clone()));
        r.play
            .borrow_mut()
            .push_back((at, PlaybackCall::Samples(b)));
    }
    r.play.borrow_mut().push_back((700, PlaybackCall::Stop));
    let mut bytes = rest;
    bytes.extend(drain(&mut r.s, p.conn));
    for t in 1..=800 {
        r.s.handle_timeout(t);
        bytes.extend(drain(&mut r.s, p.conn));
    }
    let msgs = messages::<PlaybackServer>(&bytes);
    assert!(matches!(
        &msgs[0],
        PlaybackServer::Mode(AudioModeMsg {
            mode: AudioDataMode::Raw,
            ..
        })
    ));
    let start = msgs
        .iter()
        .find_map(|m| match m {
            PlaybackServer::Start(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (start.channels, start.format, start.frequency, start.time),
        (2, AudioFmt::S16, 48_000, 100)
    );
    let data = data_of(&msgs);
    assert_eq!(data.len(), sent.len());
    let mut last = start.time;
    for (d, (at, frames)) in data.iter().zip(&sent) {
        assert_eq!(d.data.0, spice_audio::pcm::frames_to_bytes(frames));
        assert!(d.time > last, "timestamps strictly increase");
        // The mm time the device put the buffer at (one ms more for a second buffer put in
        // the same millisecond).
        assert!(d.time == *at as u32 || d.time == *at as u32 + 1);
        last = d.time;
    }
    assert!(matches!(msgs.last(), Some(PlaybackServer::Stop)));
    assert_eq!(r.s.audio_stats().playback_frames_dropped, 0);
}

#[test]
fn opus_playback_decodes_to_whole_frames() {
    let mut r = rig();
    let (_main, p, _rec, rest) = client_with_rest(&mut r.s, &[caps::playback::OPUS], &[]);
    r.play.borrow_mut().push_back((5, PlaybackCall::Start));
    for k in 0..20u32 {
        let n = if k == 19 { 100 } else { 480 };
        r.play
            .borrow_mut()
            .push_back((10 + u64::from(k) * 10, PlaybackCall::Samples(buffer(k, n))));
    }
    let mut bytes = rest;
    bytes.extend(drain(&mut r.s, p.conn));
    for t in 1..=300 {
        r.s.handle_timeout(t);
        bytes.extend(drain(&mut r.s, p.conn));
    }
    let msgs = messages::<PlaybackServer>(&bytes);
    assert!(matches!(
        &msgs[0],
        PlaybackServer::Mode(AudioModeMsg {
            mode: AudioDataMode::Opus,
            ..
        })
    ));
    let data = data_of(&msgs);
    assert_eq!(data.len(), 20);
    let mut dec = spice_audio::OpusDecoder::new(48_000).unwrap();
    for d in data {
        assert!(d.data.0.len() <= spice_audio::opus::MAX_COMPRESSED_BYTES);
        assert_eq!(dec.decode(&d.data.0).unwrap().len(), 960);
    }
}

/// The mode table (`snd_desired_audio_mode`) and the caps offered, through real links.
#[test]
fn the_mode_follows_compression_client_caps_and_rate() {
    use AudioDataMode::{Opus, Raw};
    for (compression, client_opus, rate, want) in [
        (true, true, 48_000, Opus),
        (true, false, 48_000, Raw),
        (false, true, 48_000, Raw),
        (false, false, 48_000, Raw),
        (true, true, 44_100, Raw),
        (true, true, 16_000, Opus),
    ] {
        let mut r = rig_with(
            Config {
                playback_compression: compression,
                ..Config::default()
            },
            rate,
            rate,
        );
        let (_, sid) = link(&mut r.s, ChannelType::Main, 0, "", 0).unwrap();
        let c: &[u32] = if client_opus {
            &[caps::playback::OPUS]
        } else {
            &[]
        };
        let (p, _, rest) =
            link_with_caps(&mut r.s, ChannelType::Playback, sid.unwrap(), "", 0, c).unwrap();
        let mut bytes = rest;
        bytes.extend(drain(&mut r.s, p.conn));
        let mode = messages::<PlaybackServer>(&bytes)
            .into_iter()
            .find_map(|m| match m {
                PlaybackServer::Mode(m) => Some(m.mode),
                _ => None,
            });
        assert_eq!(mode, Some(want), "{compression} {client_opus} {rate}");
    }
}

#[test]
fn main_keeps_the_multimedia_time_in_step_with_playback() {
    let mut r = rig();
    r.s.handle_timeout(5_000);
    let (main, sid, rest) =
        spice_server::testing::link_with_rest(&mut r.s, ChannelType::Main, 0, "", 5_000).unwrap();
    let init = messages::<MainServer>(&rest)
        .into_iter()
        .find_map(|m| match m {
            MainServer::Init(i) => Some(i),
            _ => None,
        })
        .unwrap();
    // reds_get_mm_time() - MM_TIME_DELTA.
    assert_eq!(init.multi_media_time, 5_000 - 400);
    let (p, _, _) = link_with_caps(
        &mut r.s,
        ChannelType::Playback,
        sid.unwrap(),
        "",
        5_000,
        &[],
    )
    .unwrap();
    r.play.borrow_mut().push_back((6_000, PlaybackCall::Start));
    r.play
        .borrow_mut()
        .push_back((6_010, PlaybackCall::Samples(buffer(0, 480))));
    r.play.borrow_mut().push_back((7_000, PlaybackCall::Stop));
    r.s.handle_timeout(6_000);
    r.s.handle_timeout(6_010);
    let main_msgs = messages::<MainServer>(&drain(&mut r.s, main.conn));
    assert!(
        !main_msgs
            .iter()
            .any(|m| matches!(m, MainServer::MultiMediaTime(_))),
        "while playback runs its timestamps drive the client's clock"
    );
    let play_msgs = messages::<PlaybackServer>(&drain(&mut r.s, p.conn));
    assert_eq!(data_of(&play_msgs)[0].time, 6_010);
    r.s.handle_timeout(7_000);
    let main_msgs = messages::<MainServer>(&drain(&mut r.s, main.conn));
    assert!(main_msgs.contains(&MainServer::MultiMediaTime(7_000 - 400)));
}

#[test]
fn a_stalled_playback_client_hits_the_cap_and_memory_stays_bounded() {
    let mut r = rig_with(
        Config {
            playback_compression: false,
            ..Config::default()
        },
        48_000,
        48_000,
    );
    let cap = r.s.config().budgets.playback_queue_frames;
    let (_main, p, _rec) = client(&mut r.s, &[], &[]);
    r.play.borrow_mut().push_back((1, PlaybackCall::Start));
    let n = 1_000u64;
    for k in 0..n {
        r.play
            .borrow_mut()
            .push_back((2 + k * 10, PlaybackCall::Samples(buffer(k as u32, 480))));
    }
    let mut max_bytes = 0;
    for t in (0..=n * 10 + 10).step_by(10) {
        r.s.handle_timeout(t);
        // The client never reads.
        assert!(r.s.playback_queued_frames() <= cap);
        max_bytes = max_bytes.max(r.s.queued_bytes(p.conn));
    }
    let st = r.s.audio_stats();
    assert!(st.playback_frames_dropped > 0);
    // Everything put is sent, queued or dropped.
    assert_eq!(
        st.playback_frames_sent + st.playback_frames_dropped + r.s.playback_queued_frames() as u64,
        n * 480
    );
    assert_eq!(r.s.playback_queued_frames(), cap);
    // The core holds a few buffers (plus the pings and the opening messages).
    assert!(max_bytes <= CORE_AUDIO_BYTES + 2_000 + 200, "{max_bytes}");
    assert!(open(&r.s, p));
}

#[test]
fn volume_and_mute_reach_the_client_with_the_volume_cap_only() {
    let mut r = rig();
    let (_main, p, rec) = client(&mut r.s, &[caps::playback::VOLUME], &[caps::record::VOLUME]);
    r.play
        .borrow_mut()
        .push_back((10, PlaybackCall::Volume(vec![1000, 2000])));
    r.play
        .borrow_mut()
        .push_back((20, PlaybackCall::Mute(true)));
    r.rec
        .borrow_mut()
        .push_back((10, RecordCall::Volume(vec![300, 400])));
    r.rec.borrow_mut().push_back((20, RecordCall::Mute(true)));
    run_until(&mut r.s, 0, 30);
    let pm = messages::<PlaybackServer>(&drain(&mut r.s, p.conn));
    assert!(pm
        .iter()
        .any(|m| matches!(m, PlaybackServer::Volume(v) if v.volume == [1000, 2000])));
    assert!(pm
        .iter()
        .any(|m| matches!(m, PlaybackServer::Mute(m) if m.mute == 1)));
    let rm = messages::<RecordServer>(&drain(&mut r.s, rec.conn));
    assert!(rm
        .iter()
        .any(|m| matches!(m, RecordServer::Volume(v) if v.volume == [300, 400])));
    assert!(rm
        .iter()
        .any(|m| matches!(m, RecordServer::Mute(m) if m.mute == 1)));
    // A client linking later gets the current volume and mute on link.
    let (_, sid) = link(&mut r.s, ChannelType::Main, 0, "", 40).unwrap();
    let (p2, _, rest) = link_with_caps(
        &mut r.s,
        ChannelType::Playback,
        sid.unwrap(),
        "",
        40,
        &[caps::playback::VOLUME],
    )
    .unwrap();
    let mut b = rest;
    b.extend(drain(&mut r.s, p2.conn));
    let pm = messages::<PlaybackServer>(&b);
    assert!(pm
        .iter()
        .any(|m| matches!(m, PlaybackServer::Volume(v) if v.volume == [1000, 2000])));
    assert!(pm
        .iter()
        .any(|m| matches!(m, PlaybackServer::Mute(m) if m.mute == 1)));
    // Without the cap: none.
    let (_, sid) = link(&mut r.s, ChannelType::Main, 0, "", 50).unwrap();
    let (p3, _, rest) =
        link_with_caps(&mut r.s, ChannelType::Playback, sid.unwrap(), "", 50, &[]).unwrap();
    let mut b = rest;
    r.play
        .borrow_mut()
        .push_back((60, PlaybackCall::Volume(vec![5, 5])));
    run_until(&mut r.s, 51, 60);
    b.extend(drain(&mut r.s, p3.conn));
    assert!(!messages::<PlaybackServer>(&b)
        .iter()
        .any(|m| matches!(m, PlaybackServer::Volume(_) | PlaybackServer::Mute(_))));
}

#[test]
fn a_second_playback_link_replaces_the_first_as_the_reference() {
    let mut r = rig();
    let (main1, p1, _) = client(&mut r.s, &[], &[]);
    let (main2, p2, _) = client(&mut r.s, &[], &[]);
    drain(&mut r.s, p1.conn);
    assert!(
        r.s.is_finished(p1.conn),
        "the older playback channel is closed"
    );
    assert!(open(&r.s, main1) && open(&r.s, main2) && open(&r.s, p2));
    r.play.borrow_mut().push_back((10, PlaybackCall::Start));
    r.play
        .borrow_mut()
        .push_back((20, PlaybackCall::Samples(buffer(1, 480))));
    run_until(&mut r.s, 0, 30);
    assert_eq!(
        data_of(&messages::<PlaybackServer>(&drain(&mut r.s, p2.conn))).len(),
        1
    );
}

#[test]
fn the_drop_playback_frame_breakage_loses_one_buffer() {
    let mut r = rig_with(
        Config {
            breakage: Some(Breakage::DropPlaybackFrame),
            ..Config::default()
        },
        48_000,
        48_000,
    );
    assert_eq!(
        "drop-playback-frame".parse::<Breakage>(),
        Ok(Breakage::DropPlaybackFrame)
    );
    let (_main, p, _) = client(&mut r.s, &[], &[]);
    r.play.borrow_mut().push_back((1, PlaybackCall::Start));
    for k in 0..20u64 {
        r.play
            .borrow_mut()
            .push_back((10 + k * 10, PlaybackCall::Samples(buffer(k as u32, 480))));
    }
    let mut b = Vec::new();
    for t in 0..=300 {
        r.s.handle_timeout(t);
        b.extend(drain(&mut r.s, p.conn));
    }
    assert_eq!(data_of(&messages::<PlaybackServer>(&b)).len(), 19);
    assert_eq!(r.s.audio_stats().playback_frames_dropped, 0, "silently");
}

fn record_data(time: u32, data: Vec<u8>) -> Vec<u8> {
    msg(&RecordClient::Data(AudioPacket {
        time,
        data: Bytes(data),
    }))
}

fn record_mode(mode: AudioDataMode) -> Vec<u8> {
    msg(&RecordClient::Mode(AudioModeMsg {
        time: 1,
        mode,
        data: Bytes::default(),
    }))
}

#[test]
fn record_data_reaches_the_device_in_order_and_once() {
    let mut r = rig();
    let (_main, _p, rec) = client(&mut r.s, &[], &[caps::record::VOLUME]);
    // Before the device starts: checked, dropped.
    r.s.handle_bytes(rec.conn, &record_data(1, vec![1, 2, 3, 4]), 1);
    r.rec.borrow_mut().push_back((10, RecordCall::Start));
    run_until(&mut r.s, 2, 10);
    let rm = messages::<RecordServer>(&drain(&mut r.s, rec.conn));
    assert!(rm.iter().any(|m| matches!(m,
        RecordServer::Start(s) if s.channels == 2 && s.format == AudioFmt::S16 && s.frequency == 48_000)));
    let mut want = Vec::new();
    let mut stream = record_mode(AudioDataMode::Raw);
    stream.extend(msg(&RecordClient::StartMark(11)));
    for k in 0..30u32 {
        let b = buffer(k, 480);
        stream.extend(record_data(11 + k, spice_audio::pcm::frames_to_bytes(&b)));
        want.extend(b);
    }
    // In odd pieces.
    for (i, c) in stream.chunks(777).enumerate() {
        r.s.handle_bytes(rec.conn, c, 11 + i as u64);
    }
    assert_eq!(*r.got.borrow(), want);
    assert!(open(&r.s, rec));
    // After stop: dropped.
    r.rec.borrow_mut().push_back((100, RecordCall::Stop));
    run_until(&mut r.s, 90, 100);
    assert!(messages::<RecordServer>(&drain(&mut r.s, rec.conn)).contains(&RecordServer::Stop));
    r.s.handle_bytes(rec.conn, &record_data(200, vec![9; 1920]), 101);
    assert_eq!(r.got.borrow().len(), want.len());
    let st = r.s.audio_stats();
    assert_eq!(st.record_frames_delivered, want.len() as u64);
    assert_eq!(st.record_frames_ignored, 1 + 480);
}

#[test]
fn opus_record_data_is_decoded_for_the_device() {
    let mut r = rig();
    let (_main, _p, rec) = client(&mut r.s, &[], &[caps::record::OPUS]);
    r.rec.borrow_mut().push_back((1, RecordCall::Start));
    run_until(&mut r.s, 0, 2);
    let mut enc = spice_audio::OpusEncoder::new(48_000).unwrap();
    let mut b = record_mode(AudioDataMode::Opus);
    for k in 0..10u32 {
        let pcm = spice_audio::pcm::frames_to_interleaved(&buffer(k, 480));
        b.extend(record_data(k, enc.encode(&pcm).unwrap()));
    }
    r.s.handle_bytes(rec.conn, &b, 3);
    assert_eq!(r.got.borrow().len(), 4_800);
    assert!(open(&r.s, rec));
}

/// Each hostile record message closes the record channel, and only it: the same client's
/// main and playback and another client's channels stay open and served.
#[test]
fn hostile_record_messages_close_only_the_record_channel() {
    let max = spice_server::Budgets::default().record_ring_frames;
    let cases: Vec<(&str, u32, Vec<u8>)> = vec![
        (
            "raw not whole frames",
            48_000,
            record_data(1, vec![0; 1922]),
        ),
        (
            "raw larger than the budget",
            48_000,
            record_data(1, vec![0; (max + 1) * 4]),
        ),
        (
            "opus at a rate never offered",
            44_100,
            record_mode(AudioDataMode::Opus),
        ),
        ("celt", 48_000, record_mode(AudioDataMode::Celt051)),
        ("invalid mode", 48_000, record_mode(AudioDataMode::Invalid)),
        ("garbage opus", 48_000, {
            let mut b = record_mode(AudioDataMode::Opus);
            b.extend(record_data(1, vec![0xff; 900]));
            b
        }),
        ("empty opus", 48_000, {
            let mut b = record_mode(AudioDataMode::Opus);
            b.extend(record_data(1, Vec::new()));
            b
        }),
        (
            "unknown message",
            48_000,
            msg(&RecordClient::Unknown {
                msg_type: 150,
                bytes: Bytes(vec![1]),
            }),
        ),
    ];
    for (what, rate, bytes) in cases {
        let mut r = rig_with(Config::default(), 48_000, rate);
        let (good_main, good_p, good_rec) = client(&mut r.s, &[], &[]);
        let (bad_main, bad_p, bad_rec) = client(&mut r.s, &[], &[]);
        // The good client's record channel was replaced by the newer one; the bad client has it.
        assert!(r.s.is_finished(good_rec.conn));
        let _ = good_p;
        r.rec.borrow_mut().push_back((1, RecordCall::Start));
        run_until(&mut r.s, 0, 2);
        r.s.handle_bytes(bad_rec.conn, &bytes, 3);
        drain(&mut r.s, bad_rec.conn);
        assert!(
            r.s.is_finished(bad_rec.conn),
            "{what}: the record channel is closed"
        );
        assert!(
            open(&r.s, bad_main) && open(&r.s, bad_p),
            "{what}: its client stays"
        );
        assert!(open(&r.s, good_main), "{what}: the other client stays");
        assert!(
            r.got.borrow().is_empty(),
            "{what}: nothing reached the device"
        );
        // Playback still served.
        r.play.borrow_mut().push_back((10, PlaybackCall::Start));
        r.play
            .borrow_mut()
            .push_back((20, PlaybackCall::Samples(buffer(0, 480))));
        run_until(&mut r.s, 3, 30);
        assert_eq!(
            data_of(&messages::<PlaybackServer>(&drain(&mut r.s, bad_p.conn))).len(),
            1,
            "{what}"
        );
    }
}

fn conn_of(l: Linked) -> ConnId {
    l.conn
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The record channel never panics on any sequence of client messages (valid, unknown,
    /// any codec data), with the device starting and stopping in between; whatever it
    /// delivers is whole frames within the budget; the rest of the server keeps running.
    #[test]
    fn the_record_channel_never_panics(
        steps in proptest::collection::vec(
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..600)), 0..24),
        opus_seed in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut r = rig();
        let (main, p, rec) = client(&mut r.s, &[], &[caps::record::OPUS]);
        let mut now = 0;
        for (kind, body) in steps {
            now += 1;
            let m = match kind % 8 {
                0 => record_mode(AudioDataMode::from_raw(u16::from(kind >> 3) % 5)),
                1 => msg(&RecordClient::StartMark(u32::from(kind))),
                2 | 3 => record_data(now as u32, body.clone()),
                4 => record_data(now as u32, opus_seed.clone()),
                5 => {
                    let call = if kind & 8 == 0 { RecordCall::Start } else { RecordCall::Stop };
                    r.rec.borrow_mut().push_back((now, call));
                    r.s.handle_timeout(now);
                    continue;
                }
                6 => {
                    let mut b = Vec::new();
                    frame(HeaderKind::Mini, 0, 101 + u16::from(kind >> 4) % 4, &body, &mut b);
                    b
                }
                _ => body.clone(),
            };
            r.s.handle_bytes(conn_of(rec), &m, now);
            drain(&mut r.s, conn_of(rec));
        }
        prop_assert!(open(&r.s, main) && open(&r.s, p));
        prop_assert!(r.s.audio_stats().record_frames_delivered as usize == r.got.borrow().len());
    }
}

fn opus_packets(n: usize, rate: u32) -> Vec<Vec<u8>> {
    let mut enc = spice_audio::OpusEncoder::new(rate).unwrap();
    let frame = rate as usize / 100;
    (0..n)
        .map(|k| {
            let pcm = spice_audio::pcm::frames_to_interleaved(&buffer(k as u32, frame));
            enc.encode(&pcm).unwrap()
        })
        .collect()
}

/// The opus_decode fuzz body is not vacuous: real packets decode and reach the device
/// through the record channel; a garbage packet closes the channel after the good ones.
#[test]
fn the_opus_decode_fuzz_body_decodes_real_packets() {
    use spice_server::fuzzing::{opus_decode, opus_decode_input, OpusDecodeRun};
    let good = opus_packets(5, 48_000);
    assert_eq!(
        opus_decode(&opus_decode_input(0, &good)),
        OpusDecodeRun {
            decoded: 5,
            record_decoded: 5,
            delivered: 5 * 480,
            record_closed: false,
        }
    );
    let mut bad = good.clone();
    bad.insert(3, vec![0xff; 700]);
    let run = opus_decode(&opus_decode_input(0, &bad));
    assert_eq!((run.delivered, run.record_closed), (3 * 480, true));
    // At 16 kHz, 10 ms is 160 frames.
    let run = opus_decode(&opus_decode_input(2, &opus_packets(4, 16_000)));
    assert_eq!((run.delivered, run.record_closed), (4 * 160, false));
    // Raw: whole frames pass, an odd length closes.
    let run = opus_decode(&opus_decode_input(1, &[vec![0; 1920], vec![0; 7]]));
    assert_eq!((run.delivered, run.record_closed), (480, true));
}

/// `latency` (`snd_set_playback_latency`): sent during playback to a client with the
/// `LATENCY` cap; outside playback a larger latency moves main's multimedia time back.
#[test]
fn latency_goes_to_the_playback_client_during_playback_else_to_main() {
    let mut r = rig();
    let (main, sid) = link(&mut r.s, ChannelType::Main, 0, "", 0).unwrap();
    let sid = sid.unwrap();
    let (p, _, _) = link_with_caps(
        &mut r.s,
        ChannelType::Playback,
        sid,
        "",
        0,
        &[caps::playback::LATENCY],
    )
    .unwrap();
    drain(&mut r.s, main.conn);
    r.s.handle_timeout(1_000);
    r.s.set_mm_time_latency(700);
    let mm = messages::<MainServer>(&drain(&mut r.s, main.conn));
    assert!(mm.contains(&MainServer::MultiMediaTime(1_000 - 700)));
    assert!(!messages::<PlaybackServer>(&drain(&mut r.s, p.conn))
        .iter()
        .any(|m| matches!(m, PlaybackServer::Latency(_))));
    r.play.borrow_mut().push_back((1_010, PlaybackCall::Start));
    r.s.handle_timeout(1_010);
    r.s.set_mm_time_latency(250);
    let pm = messages::<PlaybackServer>(&drain(&mut r.s, p.conn));
    assert!(pm.contains(&PlaybackServer::Latency(250)));
    assert!(!messages::<MainServer>(&drain(&mut r.s, main.conn))
        .iter()
        .any(|m| matches!(m, MainServer::MultiMediaTime(_))));
    // The playback client leaving while playing gives main the clock back.
    r.s.handle_closed(p.conn, 1_100);
    let mm = messages::<MainServer>(&drain(&mut r.s, main.conn));
    assert!(mm.contains(&MainServer::MultiMediaTime(1_100 - 400)));
}

#[test]
fn the_devices_wake_the_server_when_they_ask() {
    let mut r = rig();
    let (_main, p, _rec) = client(&mut r.s, &[], &[]);
    r.play.borrow_mut().push_back((37, PlaybackCall::Start));
    r.rec.borrow_mut().push_back((23, RecordCall::Start));
    assert_eq!(r.s.poll_timeout(), Some(23));
    r.s.handle_timeout(23);
    assert_eq!(r.s.poll_timeout(), Some(37));
    r.s.handle_timeout(37);
    assert!(messages::<PlaybackServer>(&drain(&mut r.s, p.conn))
        .iter()
        .any(|m| matches!(m, PlaybackServer::Start(s) if s.time == 37)));
}

/// The playback client has no messages of its own: one closes its playback channel only.
#[test]
fn a_client_message_on_playback_closes_that_channel_only() {
    let mut r = rig();
    let (main, p, rec) = client(&mut r.s, &[], &[]);
    let mut b = Vec::new();
    frame(HeaderKind::Mini, 0, 101, &[1, 2, 3], &mut b);
    r.s.handle_bytes(p.conn, &b, 5);
    drain(&mut r.s, p.conn);
    assert!(r.s.is_finished(p.conn));
    assert!(open(&r.s, main) && open(&r.s, rec));
    // A new playback link is served.
    r.play.borrow_mut().push_back((10, PlaybackCall::Start));
    r.play
        .borrow_mut()
        .push_back((20, PlaybackCall::Samples(buffer(0, 480))));
    let (main2, sid) = link(&mut r.s, ChannelType::Main, 0, "", 6).unwrap();
    let (p2, _) = link(&mut r.s, ChannelType::Playback, sid.unwrap(), "", 6).unwrap();
    run_until(&mut r.s, 6, 30);
    assert!(open(&r.s, main2));
    assert_eq!(
        data_of(&messages::<PlaybackServer>(&drain(&mut r.s, p2.conn))).len(),
        1
    );
}

/// A device that panics is removed with its channel; everything else goes on.
#[test]
fn a_panicking_playback_device_is_removed_and_nothing_else() {
    struct Bomb;
    impl PlaybackDevice for Bomb {
        fn rate(&self) -> u32 {
            48_000
        }
        fn run(&mut self, now_ms: u64) -> Vec<PlaybackCall> {
            if now_ms >= 50 {
                panic!("device bug");
            }
            vec![]
        }
        fn next_wakeup(&self) -> Option<u64> {
            Some(50)
        }
    }
    let mut r = rig();
    r.s.set_playback_device(Box::new(Bomb));
    let (main, p, rec) = client(&mut r.s, &[], &[]);
    run_until(&mut r.s, 0, 60);
    drain(&mut r.s, p.conn);
    assert!(r.s.is_finished(p.conn));
    assert!(open(&r.s, main) && open(&r.s, rec));
    let (_, sid) = link(&mut r.s, ChannelType::Main, 0, "", 61).unwrap();
    assert!(link(&mut r.s, ChannelType::Playback, sid.unwrap(), "", 61).is_err());
}

fn arb_call() -> impl Strategy<Value = PlaybackCall> {
    prop_oneof![
        1 => Just(PlaybackCall::Start),
        1 => Just(PlaybackCall::Stop),
        6 => (0usize..1_200).prop_map(|n| PlaybackCall::Samples(buffer(n as u32, n))),
        1 => proptest::collection::vec(any::<u16>(), 0..300).prop_map(PlaybackCall::Volume),
        1 => any::<bool>().prop_map(PlaybackCall::Mute),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any sequence of device calls, with a client that reads at times and stalls at others,
    /// in raw or Opus: the client's messages decode, `data` only between `start` and `stop`,
    /// timestamps strictly increase (`start` included), the queue stays within its budget,
    /// and every frame put while a stream runs is sent, queued or counted as dropped.
    #[test]
    fn playback_keeps_its_promises_under_any_device_calls(
        steps in proptest::collection::vec((proptest::collection::vec(arb_call(), 0..6), 0u64..40, any::<bool>()), 1..60),
        opus in any::<bool>(),
        cap in 0usize..3_000,
    ) {
        let mut cfg = Config::default();
        cfg.budgets.playback_queue_frames = cap;
        let mut r = rig_with(cfg, 48_000, 48_000);
        let c: &[u32] = if opus { &[caps::playback::OPUS] } else { &[] };
        let (_main, p, _rec, rest) = client_with_rest(&mut r.s, c, &[]);
        let mut bytes = rest;
        let mut now = 0;
        let mut put = 0u64;
        for (calls, dt, read) in steps {
            now += dt;
            for call in calls {
                if let PlaybackCall::Samples(f) = &call {
                    put += f.len() as u64;
                }
                r.play.borrow_mut().push_back((now, call));
            }
            r.s.handle_timeout(now);
            prop_assert!(r.s.playback_queued_frames() <= cap.max(480));
            if read {
                bytes.extend(drain(&mut r.s, p.conn));
            }
        }
        bytes.extend(drain(&mut r.s, p.conn));
        let mut playing = false;
        let mut last: Option<u32> = None;
        for m in messages::<PlaybackServer>(&bytes) {
            let t = match &m {
                PlaybackServer::Start(s) => { prop_assert!(!playing); playing = true; Some(s.time) }
                PlaybackServer::Stop => { prop_assert!(playing); playing = false; None }
                PlaybackServer::Data(d) => { prop_assert!(playing); Some(d.time) }
                _ => None,
            };
            if let Some(t) = t {
                prop_assert!(last.map_or(true, |l| t > l), "{t} after {last:?}");
                last = Some(t);
            }
        }
        let st = r.s.audio_stats();
        prop_assert!(open(&r.s, p));
        prop_assert_eq!(
            st.playback_frames_sent + st.playback_frames_dropped + st.playback_frames_unheard
                + r.s.playback_queued_frames() as u64,
            put
        );
    }
}
