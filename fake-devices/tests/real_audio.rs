//! The fake sound card through our `spice-server` to the real spice-gtk client
//! (SpiceClientGLib through python3-gi, driven by a script this test writes at run time):
//!
//! - raw playback (`--playback-compression off`): `playback-start` is S16, stereo, 48000 Hz
//!   and the PCM of `playback-data` is, byte for byte, a stretch of what the card generated
//!   (the binary's `--audio-dump`); the card's scripted volume and mute changes reach the
//!   client's `notify::volume` / `notify::mute`; the client's record PCM at 44100 Hz (raw:
//!   Opus does not run at that rate) reaches the record sink exactly;
//! - Opus playback (the default): each tone's dominant frequency within 1 Hz of the
//!   program's and the SNR after alignment at least 20 dB (printed); a scripted stop and
//!   start reach the client; the client's record PCM at 48000 Hz (Opus) reaches the sink with
//!   its frequencies.
//!
//! These need the Debian packages `gir1.2-spiceclientglib-2.0` and `python3-gi`. Without them
//! the tests print why and pass, unless `CI` is set: CI installs them, so there they must run.

mod common;
use common::{real_client_available, ServerProc, PYTHON};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use spice_audio::analysis;
use spice_audio::pcm;
use spice_fake_devices::audio::{Program, Sound};

const SEED: u64 = 7;

/// The scripted client: connects, opens every channel, keeps what the playback channel
/// delivers (one file per `playback-start`), the volume and mute it is told, and after
/// `record-start` sends the plan's PCM through the record channel at real-time pace.
const CLIENT: &str = r#"
import ctypes, json, sys, time
import gi
gi.require_version("SpiceClientGLib", "2.0")
from gi.repository import GLib, GObject, SpiceClientGLib as S

plan = json.load(open(sys.argv[1]))
loop = GLib.MainLoop()
rep = {"channels": [], "playback_starts": [], "playback_stops": 0, "playback_files": [],
       "data_messages": 0, "volume": [], "mute": [], "record_starts": [], "record_sent": 0,
       "errors": []}
spans = []
record_pcm = open(plan["record_pcm"], "rb").read() if plan.get("record_pcm") else b""
keep = []  # ctypes buffers stay alive until the end

def log(m):
    print("real_audio client: " + m, file=sys.stderr, flush=True)

def fail(m):
    log("error: " + m)
    rep["errors"].append(m)

def on_start(ch, fmt, channels, rate):
    rep["playback_starts"].append([fmt, channels, rate])
    spans.append(bytearray())

def on_data(ch, data, size):
    rep["data_messages"] += 1
    if not spans:
        fail("playback-data before playback-start")
        spans.append(bytearray())
    spans[-1] += ctypes.string_at(data, size)

def on_stop(ch):
    rep["playback_stops"] += 1

def on_volume(ch, _p):
    n = ch.get_property("nchannels")
    v = ch.get_property("volume")
    if isinstance(v, int) and v:
        rep["volume"].append(list((ctypes.c_uint16 * n).from_address(v)))
    else:
        fail("volume property is %r" % (v,))

def on_mute(ch, _p):
    rep["mute"].append(bool(ch.get_property("mute")))

def on_record_start(ch, fmt, channels, rate):
    rep["record_starts"].append([fmt, channels, rate])
    if not record_pcm:
        return
    t0 = time.monotonic()
    chunk = 480 * 4
    def pump():
        due = int((time.monotonic() - t0) * rate) * 4 + chunk
        while rep["record_sent"] < min(due, len(record_pcm)):
            part = record_pcm[rep["record_sent"]:rep["record_sent"] + chunk]
            buf = ctypes.create_string_buffer(part, len(part))
            keep.append(buf)
            S.RecordChannel.send_data(ch, ctypes.addressof(buf), len(part), 0)
            rep["record_sent"] += len(part)
        return rep["record_sent"] < len(record_pcm)
    GLib.timeout_add(5, pump)

def on_channel(session, ch):
    name = type(ch).__name__
    rep["channels"].append(name)
    if isinstance(ch, S.MainChannel):
        return
    if isinstance(ch, S.PlaybackChannel):
        GObject.GObject.connect(ch, "playback-start", on_start)
        GObject.GObject.connect(ch, "playback-data", on_data)
        GObject.GObject.connect(ch, "playback-stop", on_stop)
        GObject.GObject.connect(ch, "notify::volume", on_volume)
        GObject.GObject.connect(ch, "notify::mute", on_mute)
    elif isinstance(ch, S.RecordChannel):
        GObject.GObject.connect(ch, "record-start", on_record_start)
    S.Channel.connect(ch)

session = S.Session()
session.props.uri = plan["uri"]
GObject.GObject.connect(session, "channel-new", on_channel)

def finish():
    session.disconnect()
    for i, s in enumerate(spans):
        path = "%s/playback-%d.raw" % (plan["out_dir"], i)
        open(path, "wb").write(bytes(s))
        rep["playback_files"].append(path)
    GLib.timeout_add(300, loop.quit)
    return False

def timeout():
    fail("timed out")
    finish()
    return False

if not session.connect():
    fail("connect failed")
else:
    GLib.timeout_add(int(plan["duration"] * 1000), finish)
    GLib.timeout_add(int(plan["duration"] * 1000) + 20000, timeout)
    loop.run()
print(json.dumps(rep))
sys.exit(1 if rep["errors"] else 0)
"#;

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("spice-rs-audio-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run the client for `duration` seconds; its report.
fn run_client(
    port: u16,
    dir: &Path,
    duration: f64,
    record_pcm: Option<&Path>,
) -> serde_json::Value {
    let script = dir.join("audio_client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let plan = serde_json::json!({
        "uri": format!("spice://127.0.0.1:{port}"),
        "duration": duration,
        "out_dir": dir.to_str().unwrap(),
        "record_pcm": record_pcm.map(|p| p.to_str().unwrap()),
    });
    let plan_path = dir.join("plan.json");
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    let out = Command::new(PYTHON)
        .arg(&script)
        .arg(&plan_path)
        .stderr(Stdio::inherit())
        .output()
        .expect("run the audio client");
    let text = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("client report is not JSON ({e}): {text}"));
    assert!(out.status.success(), "client failed: {report}");
    report
}

fn read_i16(path: &Path) -> Vec<i16> {
    pcm::bytes_to_interleaved(&std::fs::read(path).unwrap_or_default())
}

/// `seconds` of stereo PCM at `rate`: `left_hz` left, `right_hz` right, whole 10 ms frames
/// of 480 (spice-gtk sends only whole frames).
fn tone_pcm(rate: u32, seconds: f64, left_hz: f64, right_hz: f64) -> Vec<u8> {
    let n = ((rate as f64 * seconds) as usize).div_ceil(480) * 480;
    let mut out = Vec::with_capacity(n * 4);
    for i in 0..n {
        let t = i as f64 / rate as f64;
        let l = (t * left_hz * std::f64::consts::TAU).sin() * 9000.0;
        let r = (t * right_hz * std::f64::consts::TAU).sin() * 7000.0;
        out.extend_from_slice(&pcm::frame(l as i16, r as i16).to_le_bytes());
    }
    out
}

/// The events log's records for `device`, as (event, record).
fn audio_events(path: &Path, device: &str) -> Vec<serde_json::Value> {
    std::thread::sleep(Duration::from_millis(200));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .filter(|v| v["device"] == device)
        .collect()
}

#[test]
fn raw_playback_is_bit_exact_volume_and_mute_reach_the_client_and_raw_record_is_exact() {
    if !real_client_available() {
        return;
    }
    let dir = tempdir("raw");
    let events = dir.join("events.jsonl");
    let pcm_in = dir.join("record-in.raw");
    let sent = tone_pcm(44_100, 2.0, 523.0, 784.0);
    std::fs::write(&pcm_in, &sent).unwrap();
    let seed = SEED.to_string();
    let server = ServerProc::start(&[
        "--disable-ticketing",
        "--audio",
        "playback,record",
        "--audio-seed",
        &seed,
        "--record-rate",
        "44100",
        "--playback-compression",
        "off",
        "--playback-script",
        "0:start,2500:volume=20000/30000,3000:mute,3500:unmute,3700:volume=1000/2000",
        "--audio-dump",
        dir.to_str().unwrap(),
        "--events-log",
        events.to_str().unwrap(),
    ]);
    let report = run_client(server.port, &dir, 5.0, Some(&pcm_in));
    eprintln!(
        "raw session: starts {} stops {} data messages {} volume {} mute {} record {} sent {}",
        report["playback_starts"],
        report["playback_stops"],
        report["data_messages"],
        report["volume"],
        report["mute"],
        report["record_starts"],
        report["record_sent"]
    );
    drop(server);

    // Playback: S16, stereo, 48 kHz, raw bytes = a stretch of what the card generated.
    assert_eq!(
        report["playback_starts"],
        serde_json::json!([[1, 2, 48000]]),
        "playback-start"
    );
    let generated = std::fs::read(dir.join("playback.raw")).expect("the card's dump");
    let got = std::fs::read(report["playback_files"][0].as_str().unwrap()).unwrap();
    assert!(
        got.len() >= 48_000 * 4 * 2,
        "the client got {} bytes in 5 s",
        got.len()
    );
    let frame = 480 * 4;
    // The card hands over whole buffers, so the client's data starts at a buffer boundary. A
    // first buffer of silence matches many places: prefer the one the whole data matches.
    let starts: Vec<usize> = (0..generated.len().saturating_sub(got.len()) + 1)
        .step_by(4)
        .filter(|&o| generated[o..o + frame] == got[..frame])
        .collect();
    let off = starts
        .iter()
        .copied()
        .find(|&o| o % frame == 0 && generated[o..o + got.len()] == got[..])
        .or(starts.first().copied())
        .expect("the client's first data is not a stretch of the card's output");
    assert_eq!(off % frame, 0, "data starts inside a generated buffer");
    let same = generated[off..off + got.len()] == got[..];
    if !same {
        let first = (0..got.len())
            .find(|&i| generated[off + i] != got[i])
            .unwrap();
        panic!(
            "raw playback differs from the card's output at byte {first} of {} (frame {} after the client's first)",
            got.len(),
            first / 4
        );
    }
    eprintln!(
        "raw playback: {} bytes bit-exact from generated frame {}",
        got.len(),
        off / 4
    );

    // Volume and mute: the client's last values are the script's last; mute went on and off.
    let vols = report["volume"].as_array().unwrap();
    assert!(
        vols.contains(&serde_json::json!([20000, 30000])),
        "volume 20000/30000 never reached the client: {vols:?}"
    );
    assert_eq!(vols.last(), Some(&serde_json::json!([1000, 2000])));
    let mutes: Vec<bool> = report["mute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_bool().unwrap())
        .collect();
    let on = mutes
        .iter()
        .position(|&m| m)
        .expect("mute never reached the client");
    assert!(
        mutes[on..].contains(&false),
        "unmute never reached the client: {mutes:?}"
    );

    // Record: raw at 44100 Hz, the sink holds exactly the client's PCM.
    assert_eq!(
        report["record_starts"],
        serde_json::json!([[1, 2, 44100]]),
        "record-start"
    );
    assert_eq!(report["record_sent"].as_u64(), Some(sent.len() as u64));
    let received = std::fs::read(dir.join("record.raw")).unwrap_or_default();
    assert_eq!(
        received.len(),
        sent.len(),
        "the record sink got {} bytes, the client sent {}",
        received.len(),
        sent.len()
    );
    assert!(
        received == sent,
        "the record sink's PCM differs from the client's"
    );

    // The events log: both devices started; volume and mute logged; sample counts add up.
    let pb = audio_events(&events, "playback");
    assert_eq!(pb[0]["event"], "audio_start", "{:?}", pb[0]);
    assert_eq!(pb[0]["rate"], 48000);
    assert!(pb
        .iter()
        .any(|e| e["event"] == "audio_volume" && e["volume"] == serde_json::json!([20000, 30000])));
    assert!(pb
        .iter()
        .any(|e| e["event"] == "audio_mute" && e["mute"] == true));
    let last_total = pb
        .iter()
        .filter(|e| e["event"] == "audio_frames")
        .filter_map(|e| e["total"].as_u64())
        .next_back()
        .expect("per-second playback summaries");
    assert!(last_total * 4 <= generated.len() as u64);
    let rec = audio_events(&events, "record");
    assert_eq!(rec[0]["event"], "audio_start");
    assert_eq!(rec[0]["rate"], 44100);
}

/// The per-480-frame RMS of one channel.
fn envelope(ch: &[f64]) -> Vec<f64> {
    ch.chunks(480)
        .map(|c| (c.iter().map(|v| v * v).sum::<f64>() / c.len() as f64).sqrt())
        .collect()
}

/// Where `decoded` (Opus output of a stretch of `generated`) lines up: (frame offset into
/// `generated` in 480s, extra codec delay in samples of `decoded`, SNR dB left, right).
fn align(generated: &[i16], decoded: &[i16]) -> (usize, usize, f64, f64) {
    let (gl, dl) = (
        analysis::channel(generated, 0),
        analysis::channel(decoded, 0),
    );
    let (ge, de) = (envelope(&gl), envelope(&dl));
    assert!(de.len() >= 50 && ge.len() >= de.len(), "too little audio");
    let n = de.len() - 2;
    let coarse = (0..=ge.len() - n)
        .min_by(|&a, &b| {
            let e = |o: usize| (0..n).map(|k| (ge[o + k] - de[k]).abs()).sum::<f64>();
            e(a).total_cmp(&e(b))
        })
        .unwrap();
    let (gr, dr) = (
        analysis::channel(generated, 1),
        analysis::channel(decoded, 1),
    );
    let window = 24_000.min(dl.len() - 1000);
    let mut best = (0, 0, f64::MIN, f64::MIN);
    for c in coarse.saturating_sub(1)..=coarse + 1 {
        let start = c * 480;
        if start >= gl.len() {
            continue;
        }
        let lag = analysis::best_lag(
            &gl[start..(start + window).min(gl.len())],
            &dl[..window + 960],
            960,
        );
        let snr = |g: &[f64], d: &[f64]| {
            let m = (g.len() - start).min(d.len() - lag);
            analysis::snr_db(&g[start..start + m], &d[lag..lag + m], 0)
        };
        let (l, r) = (snr(&gl, &dl), snr(&gr, &dr));
        if l.min(r) > best.2.min(best.3) {
            best = (c, lag, l, r);
        }
    }
    // The same alignment, said with the smallest delay.
    while best.1 >= 480 {
        best.0 += 1;
        best.1 -= 480;
    }
    best
}

#[test]
fn opus_playback_keeps_each_tone_within_1_hz_and_20_db_and_opus_record_keeps_the_frequencies() {
    if !real_client_available() {
        return;
    }
    let dir = tempdir("opus");
    let events = dir.join("events.jsonl");
    let pcm_in = dir.join("record-in.raw");
    let sent = tone_pcm(48_000, 2.0, 440.0, 1234.0);
    std::fs::write(&pcm_in, &sent).unwrap();
    let seed = SEED.to_string();
    let server = ServerProc::start(&[
        "--disable-ticketing",
        "--audio",
        "playback,record",
        "--audio-seed",
        &seed,
        "--playback-script",
        "0:start,6000:stop,6300:start",
        "--audio-dump",
        dir.to_str().unwrap(),
        "--events-log",
        events.to_str().unwrap(),
    ]);
    let report = run_client(server.port, &dir, 7.5, Some(&pcm_in));
    eprintln!(
        "opus session: starts {} stops {} data messages {} record {} sent {}",
        report["playback_starts"],
        report["playback_stops"],
        report["data_messages"],
        report["record_starts"],
        report["record_sent"]
    );
    drop(server);

    // The scripted stop and start reach the client.
    assert_eq!(
        report["playback_starts"],
        serde_json::json!([[1, 2, 48000], [1, 2, 48000]]),
        "two playback-starts (S16, stereo, 48 kHz)"
    );
    assert!(
        report["playback_stops"].as_u64() >= Some(1),
        "no playback-stop"
    );

    // The first span: align the client's decoded PCM with the card's output.
    let generated = read_i16(&dir.join("playback.raw"));
    let decoded = read_i16(Path::new(report["playback_files"][0].as_str().unwrap()));
    let (frame_off, lag, snr_l, snr_r) = align(&generated, &decoded);
    eprintln!(
        "opus playback: {} decoded frames from generated frame {}, codec delay {lag} samples, SNR left {snr_l:.1} dB, right {snr_r:.1} dB",
        decoded.len() / 2,
        frame_off * 480
    );
    // Each tone the client heard whole: its dominant frequency on both channels.
    let start = (frame_off * 480) as u64;
    let end = start + (decoded.len() / 2 - lag) as u64;
    let margin = 960u64; // 20 ms each side: fades and the codec's transitions
    let (dl, dr) = (
        analysis::channel(&decoded, 0),
        analysis::channel(&decoded, 1),
    );
    let mut worst: f64 = 0.0;
    let mut checked = 0;
    for seg in Program::covering(SEED, 48_000, end) {
        let Sound::Tone { left_hz, right_hz } = seg.sound else {
            continue;
        };
        if seg.start < start || seg.end() > end {
            continue;
        }
        let a = (seg.start - start + margin) as usize + lag;
        let b = (seg.end() - start - margin) as usize + lag;
        for (ch, want) in [(&dl, left_hz), (&dr, right_hz)] {
            let f = analysis::dominant_frequency(&ch[a..b], 48_000).expect("a tone");
            let err = (f - want as f64).abs();
            eprintln!(
                "  tone {want} Hz at frame {}: decoded {f:.2} Hz (error {err:.3})",
                seg.start
            );
            worst = worst.max(err);
            assert!(err < 1.0, "tone {want} Hz decoded as {f:.2} Hz");
        }
        checked += 1;
    }
    eprintln!("opus playback: {checked} tones, worst frequency error {worst:.3} Hz");
    assert!(
        checked >= 2,
        "only {checked} whole tones reached the client"
    );
    assert!(
        snr_l >= 20.0 && snr_r >= 20.0,
        "Opus playback SNR {snr_l:.1}/{snr_r:.1} dB is under 20 dB"
    );

    // Record through Opus at 48 kHz: the sink holds the client's tones.
    assert_eq!(report["record_starts"], serde_json::json!([[1, 2, 48000]]));
    let received = read_i16(&dir.join("record.raw"));
    assert_eq!(
        received.len() * 2,
        sent.len(),
        "every Opus frame the client sent decodes to one 480-frame buffer"
    );
    let mid = &received[received.len() / 4..received.len() * 3 / 4];
    let fl = analysis::dominant_frequency(&analysis::channel(mid, 0), 48_000).unwrap();
    let fr = analysis::dominant_frequency(&analysis::channel(mid, 1), 48_000).unwrap();
    let sent_i16 = pcm::bytes_to_interleaved(&sent);
    let rec_snr = analysis::snr_db(
        &analysis::channel(&sent_i16, 0),
        &analysis::channel(&received, 0),
        960,
    );
    eprintln!("opus record: left {fl:.2} Hz, right {fr:.2} Hz, SNR left {rec_snr:.1} dB");
    assert!((fl - 440.0).abs() < 1.0, "record left {fl}");
    assert!((fr - 1234.0).abs() < 1.0, "record right {fr}");

    let pb = audio_events(&events, "playback");
    // (A server too busy to run the card for MAX_BACKLOG_MS makes it skip: `audio_late`.)
    let kinds: Vec<&str> = pb
        .iter()
        .filter_map(|e| e["event"].as_str())
        .filter(|k| !["audio_frames", "audio_late"].contains(k))
        .collect();
    assert_eq!(
        kinds,
        ["audio_start", "audio_stop", "audio_start"],
        "{pb:?}"
    );
    let skipped: u64 = pb
        .iter()
        .take_while(|e| e["event"] != "audio_stop")
        .filter(|e| e["event"] == "audio_late")
        .filter_map(|e| e["frames"].as_u64())
        .sum();
    let stop = pb.iter().find(|e| e["event"] == "audio_stop").unwrap();
    let frames = stop["frames"].as_u64().unwrap();
    let due = 6000 * 48 - skipped;
    assert!(
        frames <= due && frames + 480 > due,
        "the first span (6 s, {skipped} frames skipped) logged {frames} frames"
    );
}
