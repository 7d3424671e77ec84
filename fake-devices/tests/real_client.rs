//! Our `spice-server` against the real spice-gtk client (SpiceClientGLib through python3-gi,
//! driven by `xtask/scripts/spice_client.py`).
//!
//! These need the Debian packages `gir1.2-spiceclientglib-2.0` and `python3-gi`. Without them
//! the tests print why and pass, unless `CI` is set: CI installs them, so there they must run.

mod common;
use common::{read_ppm, real_client_available, snapshot_rgb, tool_available, ServerProc, PYTHON};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Run the scripted client with `plan` (the `uri` is filled in); returns its JSON report and
/// whether it exited 0.
fn run_client(port: u16, mut plan: serde_json::Value, dir: &Path) -> (serde_json::Value, bool) {
    plan["uri"] = format!("spice://127.0.0.1:{port}").into();
    let plan_path = dir.join("plan.json");
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xtask/scripts/spice_client.py");
    let out = Command::new(PYTHON)
        .arg(&script)
        .arg(&plan_path)
        .stderr(Stdio::inherit())
        .output()
        .expect("run spice_client.py");
    let text = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!("client report is not JSON ({e}): {text}");
    });
    (report, out.status.success())
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("spice-rs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The events log as (device, event fields) without sequence numbers and times.
fn read_events(path: &Path) -> Vec<serde_json::Value> {
    // The server writes each line as the event happens; give the last ones a moment.
    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            let o = v.as_object_mut().unwrap();
            o.remove("seq");
            o.remove("t_ms");
            v
        })
        .collect()
}

fn key(byte: u8) -> serde_json::Value {
    serde_json::json!({"device": "keyboard", "event": "scancode", "byte": byte})
}

fn typed(down: &[u8], shift: bool) -> Vec<serde_json::Value> {
    let mut v = vec![];
    if shift {
        v.push(key(0x2a));
    }
    for &d in down {
        v.push(key(d));
        v.push(key(d | 0x80));
    }
    if shift {
        v.push(key(0xaa));
    }
    v
}

#[test]
fn scripted_session_reaches_the_devices_in_order_client_mouse_mode() {
    if !real_client_available() {
        return;
    }
    let dir = tempdir("events-client");
    let log = dir.join("events.jsonl");
    let server = ServerProc::start(&["--disable-ticketing", "--events-log", log.to_str().unwrap()]);
    let plan = serde_json::json!({
        "mouse_mode": "client", "timeout": 30,
        "sessions": [{"settle": 1.0, "linger": 0.5, "steps": [
            {"text": "Hi!"}, {"position": [100, 200]}, {"position": [101, 203]},
            {"click": 1}, {"click": 3}, {"wheel": "up"}, {"wheel": "down"}, {"key": 0x1c},
        ]}],
    });
    let (report, ok) = run_client(server.port, plan, &dir);
    assert!(ok, "client failed: {report}");
    assert_eq!(
        report["sessions"][0]["mouse_modes"]
            .as_array()
            .unwrap()
            .last()
            .unwrap(),
        "client"
    );
    let got = read_events(&log);
    let tablet = |event: &str, extra: serde_json::Value| {
        let mut v = serde_json::json!({"device": "tablet", "event": event});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let mut want = vec![];
    want.extend(typed(&[0x23], true)); // H
    want.extend(typed(&[0x17], false)); // i
    want.extend(typed(&[0x02], true)); // !
    want.push(tablet(
        "position",
        serde_json::json!({"x": 100, "y": 200, "display": 0, "buttons": 0}),
    ));
    want.push(tablet(
        "position",
        serde_json::json!({"x": 101, "y": 203, "display": 0, "buttons": 0}),
    ));
    // A press reaches the tablet as wheel(0, buttons) in the reference too; release as buttons.
    want.push(tablet("wheel", serde_json::json!({"dz": 0, "buttons": 1})));
    want.push(tablet("tablet_buttons", serde_json::json!({"buttons": 0})));
    want.push(tablet("wheel", serde_json::json!({"dz": 0, "buttons": 4})));
    want.push(tablet("tablet_buttons", serde_json::json!({"buttons": 0})));
    want.push(tablet("wheel", serde_json::json!({"dz": -1, "buttons": 0})));
    want.push(tablet("tablet_buttons", serde_json::json!({"buttons": 0})));
    want.push(tablet("wheel", serde_json::json!({"dz": 1, "buttons": 0})));
    want.push(tablet("tablet_buttons", serde_json::json!({"buttons": 0})));
    want.extend(typed(&[0x1c], false)); // Enter
    assert_eq!(got, want, "events log differs from the scripted input");
}

#[test]
fn scripted_session_reaches_the_devices_in_order_server_mouse_mode() {
    if !real_client_available() {
        return;
    }
    let dir = tempdir("events-server");
    let log = dir.join("events.jsonl");
    let server = ServerProc::start(&["--disable-ticketing", "--events-log", log.to_str().unwrap()]);
    let plan = serde_json::json!({
        "mouse_mode": "server", "timeout": 30,
        "sessions": [{"settle": 1.0, "linger": 0.5, "steps": [
            {"motion": [5, -3]}, {"button_press": 1}, {"motion": [7, 2]}, {"button_release": 1},
            {"wheel": "down"}, {"text": "ok"},
        ]}],
    });
    let (report, ok) = run_client(server.port, plan, &dir);
    assert!(ok, "client failed: {report}");
    let got = read_events(&log);
    let mouse = |event: &str, extra: serde_json::Value| {
        let mut v = serde_json::json!({"device": "mouse", "event": event});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let mut want = vec![
        mouse(
            "motion",
            serde_json::json!({"dx": 5, "dy": -3, "dz": 0, "buttons": 0}),
        ),
        mouse(
            "motion",
            serde_json::json!({"dx": 0, "dy": 0, "dz": 0, "buttons": 1}),
        ),
        mouse(
            "motion",
            serde_json::json!({"dx": 7, "dy": 2, "dz": 0, "buttons": 1}),
        ),
        mouse("buttons", serde_json::json!({"buttons": 0})),
        mouse(
            "motion",
            serde_json::json!({"dx": 0, "dy": 0, "dz": 1, "buttons": 0}),
        ),
        mouse("buttons", serde_json::json!({"buttons": 0})),
    ];
    want.extend(typed(&[0x18], false)); // o
    want.extend(typed(&[0x25], false)); // k
    assert_eq!(got, want, "events log differs from the scripted input");
}

#[test]
fn wrong_password_is_refused_and_the_right_one_connects() {
    if !real_client_available() {
        return;
    }
    let dir = tempdir("password");
    let server = ServerProc::start(&["--password", "s3cret"]);
    let plan = |pw: &str| {
        serde_json::json!({"password": pw, "timeout": 20,
            "sessions": [{"settle": 0.5, "linger": 0.2, "steps": []}]})
    };
    let (report, ok) = run_client(server.port, plan("wrong"), &dir);
    assert!(!ok, "a wrong password connected: {report}");
    let errors = report["errors"].to_string();
    assert!(
        errors.contains("error-auth"),
        "expected an auth error, got {errors}"
    );
    let (report, ok) = run_client(server.port, plan("s3cret"), &dir);
    assert!(ok, "the right password failed: {report}");
    let channels = report["sessions"][0]["channels"].to_string();
    assert!(channels.contains("inputs"), "no inputs channel: {channels}");
}

/// Whether dumpcap and tshark are usable; `false` (after printing why) means skip.
fn capture_tools_available() -> bool {
    let ok = ["dumpcap", "tshark"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but dumpcap/tshark (package tshark) is missing");
        }
        eprintln!("skipped: dumpcap/tshark not installed (apt-get install tshark)");
    }
    ok
}

#[test]
fn a_captured_session_with_our_server_decodes_in_our_transcript_and_in_tshark() {
    if !real_client_available() || !capture_tools_available() {
        return;
    }
    let dir = tempdir("capture");
    let pcap = dir.join("session.pcap");
    let server = ServerProc::start(&["--disable-ticketing"]);
    let mut dumpcap = Command::new("dumpcap")
        .args([
            "-q",
            "-i",
            "lo",
            "-f",
            &format!("tcp port {}", server.port),
            "-P",
            "-w",
        ])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dumpcap");
    let t0 = std::time::Instant::now();
    while std::fs::metadata(&pcap).map_or(0, |m| m.len()) < 24 {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "dumpcap did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(700));
    let plan = serde_json::json!({
        "mouse_mode": "client", "timeout": 30,
        "sessions": [{"settle": 1.5, "linger": 0.5, "steps": [
            {"text": "spice"}, {"position": [10, 10]}, {"click": 1}, {"wheel": "down"},
        ]}],
    });
    let (report, ok) = run_client(server.port, plan, &dir);
    assert!(ok, "client failed: {report}");
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-INT", &dumpcap.id().to_string()])
        .status();
    let _ = dumpcap.wait();

    let t = spice_captures::load(&pcap).expect("our loader reads the capture");
    assert_eq!(t.sessions.len(), 1, "one client session");
    let failures: Vec<String> = t
        .failures()
        .map(|(_, c, m)| format!("{:?} {} {}", c.channel_type, m.msg_type, m.name))
        .collect();
    assert!(
        failures.is_empty(),
        "messages that did not decode: {failures:?}"
    );
    for (_, c) in t.channels() {
        assert!(
            c.problems.is_empty(),
            "{:?}: {:?}",
            c.channel_type,
            c.problems
        );
    }
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&pcap)
        .args([
            "-d",
            &format!("tcp.port=={},spice", server.port),
            "-Y",
            "spice",
        ])
        .args(["-T", "fields", "-e", "frame.number", "-e", "_ws.malformed"])
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let malformed: Vec<&str> = text
        .lines()
        .filter(|l| l.split('\t').nth(1).is_some_and(|m| !m.is_empty()))
        .collect();
    assert!(
        text.lines().count() >= 10,
        "tshark saw too few SPICE frames:\n{text}"
    );
    assert!(
        malformed.is_empty(),
        "tshark: malformed SPICE frames {malformed:?}"
    );
}

/// Whether spicy-screenshot is installed; `false` (after printing why) means skip.
fn screenshot_tool_available() -> bool {
    tool_available("spicy-screenshot", "spice-client-gtk")
}

#[test]
fn spicy_screenshot_equals_our_snapshot_for_every_scene_and_lossless_compression() {
    if !screenshot_tool_available() {
        return;
    }
    let dir = tempdir("screens");
    let mut report = Vec::new();
    let cases: &[(&str, &str)] = &[
        ("desktop", "off"),
        ("desktop", "quic"),
        ("desktop", "lz"),
        ("desktop", "glz"),
        ("desktop", "auto_lz"),
        ("desktop", "auto_glz"),
        ("desktop", "lz4"),
        ("solid", "auto_glz"),
        ("text", "glz"),
        ("photo", "quic"),
        ("photo", "auto_lz"),
        ("windows", "lz"),
        // The QXL device: drawables in guest memory, the server's canvas.
        ("qxl-desktop", "off"),
        ("qxl-desktop", "lz"),
        ("qxl-desktop", "glz"),
        ("qxl-desktop", "auto_glz"),
        ("qxl-desktop", "quic"),
        ("qxl-desktop", "lz4"),
        ("qxl-text", "auto_lz"),
        ("qxl-surface", "glz"),
        ("qxl-ops", "off"),
    ];
    for (scene, comp) in cases {
        let size = "800x600";
        let want = snapshot_rgb(scene, size, &dir);
        let server = ServerProc::start(&[
            "--disable-ticketing",
            "--scene",
            scene,
            "--size",
            size,
            "--image-compression",
            comp,
        ]);
        // Let the scene settle (1.5 s of scene time) before the client looks.
        std::thread::sleep(Duration::from_millis(1_800));
        let shot = dir.join(format!("{scene}-{comp}.ppm"));
        let st = Command::new("spicy-screenshot")
            .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "-o"])
            .arg(&shot)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "spicy-screenshot failed for {scene}/{comp}");
        let got = read_ppm(&shot);
        assert_eq!((got.0, got.1), (want.0, want.1), "{scene}/{comp}: size");
        let differing = got
            .2
            .chunks_exact(3)
            .zip(want.2.chunks_exact(3))
            .filter(|(a, b)| a != b)
            .count();
        if let Some(i) = got
            .2
            .chunks_exact(3)
            .zip(want.2.chunks_exact(3))
            .position(|(a, b)| a != b)
        {
            let (x, y) = (i as u32 % want.0, i as u32 / want.0);
            eprintln!(
                "{scene}/{comp}: first difference at {x},{y}: spice-gtk {:?}, scene {:?}",
                &got.2[i * 3..i * 3 + 3],
                &want.2[i * 3..i * 3 + 3]
            );
        }
        report.push(format!("{scene}/{comp}: {differing} pixels differ"));
        assert_eq!(
            differing, 0,
            "{scene}/{comp}: spice-gtk's screen differs from the scene"
        );
    }
    eprintln!("{}", report.join("\n"));
}

/// A scripted client connected from the start watches `scene` (it receives every change as
/// it happens) and must end on the scene's settled frame.
fn watch(scene: &str, compressions: &[&str]) {
    if !real_client_available() {
        return;
    }
    let dir = tempdir(&format!("watch-{scene}"));
    for comp in compressions {
        let size = "640x480";
        let want = snapshot_rgb(scene, size, &dir);
        let server = ServerProc::start(&[
            "--disable-ticketing",
            "--scene",
            scene,
            "--size",
            size,
            "--image-compression",
            comp,
        ]);
        let shot = dir.join(format!("watch-{comp}.ppm"));
        // Connect at once: the scene is still changing; stay until well after it rests.
        let plan = serde_json::json!({
            "timeout": 30, "screenshot": shot.to_str().unwrap(),
            "sessions": [{"settle": 2.5, "linger": 0.5, "steps": []}],
        });
        let (report, ok) = run_client(server.port, plan, &dir);
        assert!(ok, "client failed: {report}");
        let got = read_ppm(&shot);
        assert_eq!((got.0, got.1), (want.0, want.1));
        let differing = got
            .2
            .chunks_exact(3)
            .zip(want.2.chunks_exact(3))
            .filter(|(a, b)| a != b)
            .count();
        eprintln!("watch {scene}/{comp}: {differing} pixels differ");

        assert_eq!(
            differing, 0,
            "{scene}/{comp}: the client's final screen differs"
        );
    }
}

#[test]
fn a_client_that_watches_the_scene_move_ends_with_the_settled_screen() {
    watch("desktop", &["glz", "auto_glz", "quic", "lz", "off"]);
}

/// The QXL scene reaches spice-gtk as draw messages (fills, copies with cached images and
/// palettes, copy_bits, a composed off-screen surface): its canvas must draw them to the
/// device's picture.
#[test]
fn a_client_that_watches_the_qxl_scene_ends_with_the_devices_picture() {
    watch(
        "qxl-desktop",
        &["glz", "auto_glz", "quic", "lz", "off", "lz4"],
    );
}

/// Every kind of drawable (opaque, blend, blackness, whiteness, invers, rop3, strokes, text,
/// transparent, alpha_blend, composite, masked, clipped and patterned fills) sent as draw
/// messages: spice-gtk's canvas draws them as spice-proto's reference canvas does.
#[test]
fn spice_gtk_draws_every_drawable_kind_as_our_canvas() {
    watch("qxl-ops", &["off", "glz"]);
}

/// The QXL cursor ring reaches spice-gtk: shapes (set, some from its cursor cache), moves and
/// the hide, as the scene plays them after the client connected.
#[test]
fn the_qxl_cursor_reaches_spice_gtk() {
    if !real_client_available() {
        return;
    }
    let dir = tempdir("cursor");
    let server = ServerProc::start(&[
        "--disable-ticketing",
        "--scene",
        "qxl-cursor",
        "--size",
        "640x480",
    ]);
    let plan = serde_json::json!({
        "timeout": 30,
        "sessions": [{"settle": 2.5, "linger": 0.2, "steps": []}],
    });
    let (report, ok) = run_client(server.port, plan, &dir);
    assert!(ok, "client failed: {report}");
    let c = &report["sessions"][0]["cursor"];
    eprintln!("cursor events in spice-gtk: {c}");
    // The scene: a shape at 0 ms (in init, or a set if the client came later), moves every
    // 100 ms to 600 ms, a new shape at 800 ms, a hide at 900 ms, shapes again at 1000 and
    // 1100 ms (both from the client's cache).
    assert!(c["set"].as_u64().unwrap_or(0) >= 3, "{c}");
    assert!(c["hide"].as_u64().unwrap_or(0) >= 1, "{c}");
}
