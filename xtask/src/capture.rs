//! `cargo xtask capture [SCENARIO...]`: record the capture corpus in `captures/corpus/`.
//!
//! Each scenario starts a real reference server on loopback (Xspice = Xorg with the spiceqxl
//! driver and our own config from `xtask/scripts/xspice.conf.in`, or QEMU with SPICE), puts
//! deterministic content on its screen, records the loopback traffic with `dumpcap` (classic
//! pcap, port filter), runs a real spice-gtk client (`spicy-screenshot`, or the scripted
//! SpiceClientGLib client `xtask/scripts/spice_client.py`), and writes `NAME.pcap`, the client's
//! final screenshot `NAME.png` (what the real client decoded) and the scenario's entry in
//! `manifest.json`, including a summary of the capture as Wireshark's SPICE dissector reads it.
//!
//! Owns: the scenario list, process orchestration and cleanup, the manifest format. Must not:
//! run in CI (it records; CI only reads the corpus), touch anything but loopback, or leave a
//! process behind: every child runs in its own process group, and the group is killed when the
//! scenario ends, fails, or the command is interrupted (SIGINT/SIGTERM/SIGHUP).
//!
//! Regenerating is on purpose only: with no scenario named the command lists the scenarios and
//! does nothing; `--all` records every one. Only the named scenarios' files and manifest entries
//! are overwritten.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    /// Scenarios to record (see the list printed without arguments).
    pub scenarios: Vec<String>,
    /// Record every scenario.
    #[arg(long)]
    pub all: bool,
    /// Keep the work folder (configs, server and client logs) for debugging.
    #[arg(long)]
    pub keep: bool,
}

const XSPICE_CONF: &str = include_str!("../scripts/xspice.conf.in");
const CLIENT_PY: &str = "xtask/scripts/spice_client.py";
const PATTERN_PY: &str = "xtask/scripts/pattern.py";
/// Debian's python, which has python3-gi; the pyenv python first on PATH has not.
const PYTHON: &str = "/usr/bin/python3";
const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
const QEMU_PASSWORD: &str = "corpus-ticket";

/// What serves the screen.
enum Server {
    /// Xorg + spiceqxl. `options` become `Option` lines of the Device section.
    Xspice {
        options: Vec<(&'static str, &'static str)>,
        /// Feed a deterministic tone into a playback FIFO once the client is connected.
        audio: bool,
        /// Animate the picture window (video-like region) once the client is connected.
        animate: bool,
    },
    /// QEMU with every SPICE channel and a ticket.
    Qemu,
}

/// Which real client records the session.
enum Client {
    /// `spicy-screenshot`: connect, wait for the first screen update, write it, quit.
    Screenshot,
    /// `spice_client.py` with this plan (uri, password and screenshot path are added).
    Scripted(Value),
}

struct Scenario {
    name: &'static str,
    about: &'static str,
    server: Server,
    client: Client,
}

fn xspice(options: &[(&'static str, &'static str)]) -> Server {
    Server::Xspice {
        options: options.to_vec(),
        audio: false,
        animate: false,
    }
}

/// Typing into the xterm (the pointer starts inside it, and X focus follows the pointer).
fn typing(text: &str) -> Vec<Value> {
    vec![
        json!({"text": text, "delay": 0.1}),
        json!({"key": 0x1c, "delay": 0.1}),
    ]
}

fn scenarios() -> Vec<Scenario> {
    let mut v = Vec::new();
    // The desktop is drawn after the client connects, so the images of its draw commands
    // show the compression; the scripted client only watches.
    let watch = || json!({"sessions": [{"settle": 4.5, "steps": [], "linger": 0.5}]});
    for (name, setting, about) in [
        ("xspice-compression-off", "off", "uncompressed bitmaps"),
        ("xspice-compression-quic", "quic", "QUIC-compressed images"),
        ("xspice-compression-lz", "lz", "LZ-compressed images"),
        (
            "xspice-compression-glz",
            "glz",
            "GLZ-compressed images (shared dictionary)",
        ),
        (
            "xspice-compression-auto-lz",
            "auto_lz",
            "images compressed with auto_lz (LZ or QUIC by content)",
        ),
        (
            "xspice-compression-auto-glz",
            "auto_glz",
            "images compressed with auto_glz (GLZ or QUIC by content)",
        ),
    ] {
        let about: &'static str = Box::leak(
            format!(
                "The scripted client watches Xspice with SpiceImageCompression \"{setting}\" while the \
                 desktop appears (gradient picture, xlogo, xterm with fixed text on a solid root): \
                 its draw commands carry {about}."
            )
            .into_boxed_str(),
        );
        v.push(Scenario {
            name,
            about,
            server: xspice(&[("SpiceImageCompression", setting)]),
            client: Client::Scripted(watch()),
        });
    }
    v.push(Scenario {
        name: "xspice-jpeg-wan",
        about: "The scripted client watches Xspice with SpiceJpegWanCompression \"always\" and \
                SpiceImageCompression \"quic\" (JPEG replaces QUIC only) while the desktop appears: \
                lossy-allowed images arrive as JPEG_ALPHA (Xspice's bitmaps are RGBA), small ones as bitmaps.",
        server: xspice(&[("SpiceImageCompression", "quic"), ("SpiceJpegWanCompression", "always")]),
        client: Client::Scripted(watch()),
    });
    v.push(Scenario {
        name: "xspice-zlib-glz-wan",
        about:
            "The scripted client watches Xspice with SpiceZlibGlzWanCompression \"always\" (glz) \
                while the desktop appears: GLZ images are wrapped in zlib (ZLIB_GLZ_RGB).",
        server: xspice(&[
            ("SpiceImageCompression", "glz"),
            ("SpiceZlibGlzWanCompression", "always"),
        ]),
        client: Client::Scripted(watch()),
    });
    v.push(Scenario {
        name: "xspice-spicy-screenshot",
        about: "spicy-screenshot connects to Xspice (auto_glz) showing the finished desktop, receives \
                the primary surface and its first image, writes it and quits: the shortest complete \
                session.",
        server: xspice(&[("SpiceImageCompression", "auto_glz")]),
        client: Client::Screenshot,
    });
    let mut lz4_steps = vec![json!({"wait": 0.5})];
    lz4_steps.extend(typing("echo lz4 preferred"));
    v.push(Scenario {
        name: "xspice-lz4-preferred",
        about: "The scripted client asks the display channel for LZ4 (DISPLAY_PREFERRED_COMPRESSION 7, \
                sent before DISPLAY_INIT) on Xspice (auto_glz) while the desktop appears and types \
                into the xterm: the server honours it and images arrive as LZ4. Wireshark 4.0's \
                dissector loses the client's display stream after that 1-byte message (it counts no \
                later client display message); spice-captures decodes them.",
        server: xspice(&[("SpiceImageCompression", "auto_glz")]),
        client: Client::Scripted(json!({
            "preferred_compression": 7,
            "mouse_mode": "server",
            "sessions": [{"settle": 4.0, "steps": lz4_steps, "linger": 1.5}],
        })),
    });
    let mut input_steps = typing("echo Hello, SPICE!");
    input_steps.extend(typing("ls /nonexistent-dir"));
    for (dx, dy) in [
        (3, 0),
        (3, 0),
        (3, 2),
        (0, 3),
        (-2, 3),
        (-3, -1),
        (-3, -3),
        (2, -4),
    ] {
        input_steps.push(json!({"motion": [dx, dy], "delay": 0.08}));
    }
    input_steps.extend([
        json!({"button_press": 1, "delay": 0.2}),
        json!({"motion": [4, 0], "delay": 0.1}),
        json!({"motion": [4, 0], "delay": 0.1}),
        json!({"motion": [4, 1], "delay": 0.1}),
        json!({"button_release": 1, "delay": 0.1}),
        json!({"click": 3, "delay": 0.3}),
        json!({"click": 3, "delay": 0.3}),
        json!({"button_press": 2, "delay": 0.3}),
        json!({"button_release": 2, "delay": 0.1}),
        json!({"wheel": "up", "delay": 0.2}),
        json!({"wheel": "up", "delay": 0.1}),
        json!({"wheel": "down", "delay": 0.1}),
        json!({"wheel": "down", "delay": 0.1}),
        json!({"key_press": 0x1d, "delay": 0.2}),
        json!({"key": 0x26, "delay": 0.05}),
        json!({"key_release": 0x1d, "delay": 0.05}),
    ]);
    v.push(Scenario {
        name: "xspice-input-server-mouse",
        about: "The scripted client switches Xspice to server mouse mode and types two shell commands \
                into the xterm (key scancodes with shift), moves the mouse (relative motion), drags a \
                selection with the left button, clicks right and middle, turns the wheel up and down \
                and presses Ctrl+L; the server answers with screen updates, mouse-motion acks and key \
                modifiers. Xspice acks the relative motion but its X pointer does not move in server \
                mouse mode (only the tablet moves it), so the drag selects nothing. A 1 s 440 Hz tone \
                played through Xspice's playback FIFO adds playback traffic.",
        server: Server::Xspice {
            options: vec![("SpiceImageCompression", "auto_glz")],
            audio: true,
            animate: false,
        },
        client: Client::Scripted(json!({
            "mouse_mode": "server",
            "sessions": [{"settle": 4.0, "steps": input_steps, "linger": 2.5}],
        })),
    });
    // Client mouse mode (absolute positions): Xspice's X pointer follows the tablet, and every
    // change of the cursor shape under it is drawn (Xspice renders this cursor in software, see
    // the about text). Path: from
    // the xterm (I-beam) right onto the root window (left_ptr), up over the xlogo, left along
    // the top over the picture, and back down into the xterm.
    let mut cursor_steps = vec![json!({"wait": 0.3})];
    let path = [(320, 240), (620, 240), (560, 80), (100, 80), (320, 260)];
    for w in path.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        for i in 0..=20 {
            let x = x0 + (x1 - x0) * i / 20;
            let y = y0 + (y1 - y0) * i / 20;
            cursor_steps.push(json!({"position": [x, y], "delay": 0.04}));
        }
    }
    v.push(Scenario {
        name: "xspice-cursor",
        about: "The scripted client (client mouse mode, absolute positions) moves the pointer from \
                the xterm (I-beam cursor) across the root window (left_ptr cursor set by xsetroot), \
                over the xlogo and the picture and back. Xspice draws this pointer in software: the \
                shapes and moves arrive as screen updates (draw_copy), while the cursor channel only \
                gets its init, one cursor set and hides.",
        server: xspice(&[("SpiceImageCompression", "auto_glz")]),
        client: Client::Scripted(json!({
            "mouse_mode": "client",
            "sessions": [{"settle": 4.0, "steps": cursor_steps, "linger": 1.0}],
        })),
    });
    v.push(Scenario {
        name: "qemu-all-channels-password",
        about: "The scripted client logs in with a ticket (password) to QEMU with SPICE and every \
                channel (main, display, inputs, cursor, playback, record, usbredir; vdagent chardev \
                without an agent in the guest) and watches the SeaBIOS text screen, moving the \
                mouse and pressing a key (server mouse mode: SeaBIOS does not drive the USB tablet).",
        server: Server::Qemu,
        client: Client::Scripted(json!({
            "password": QEMU_PASSWORD,
            "sessions": [{"settle": 6.0, "steps": [
                {"motion": [4, 4], "delay": 0.2},
                {"motion": [-4, 2], "delay": 0.2},
                {"click": 1, "delay": 0.2},
                {"key": 0x39, "delay": 0.2},
            ], "linger": 2.0}],
        })),
    });
    v.push(Scenario {
        name: "xspice-video-stream",
        about: "A 160x120 picture window redraws a moving image 25 times a second for 4 s \
                (PutImage, like a video player) while the scripted client watches: the server \
                detects a video region and sends it as an MJPEG stream (stream_create, stream_data, \
                stream_destroy; the client sends stream reports). SpiceStreamingVideo is \"all\": with \
                \"filter\" this picture was not detected as video.",
        server: Server::Xspice {
            options: vec![("SpiceImageCompression", "auto_glz"), ("SpiceStreamingVideo", "all")],
            audio: false,
            animate: true,
        },
        client: Client::Scripted(json!({
            "sessions": [{"settle": 10.5, "steps": [], "linger": 1.0}],
        })),
    });
    let mut first = typing("echo first session");
    first.insert(0, json!({"wait": 0.3}));
    let second = typing("echo second session");
    v.push(Scenario {
        name: "xspice-reconnect",
        about:
            "The scripted client connects to Xspice, types a command into the xterm, disconnects, \
                and 1 s later connects again (a second full session with new channels) and types \
                another: two client sessions in one capture.",
        server: xspice(&[("SpiceImageCompression", "auto_glz")]),
        client: Client::Scripted(json!({
            "mouse_mode": "server",
            "reconnect_after": 1.0,
            "sessions": [
                {"settle": 4.0, "steps": first, "linger": 1.0},
                {"settle": 2.0, "steps": second, "linger": 1.0},
            ],
        })),
    });
    v
}

// --- interruption and child processes -----------------------------------------------------

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleep, waking early (with an error) when interrupted.
fn pause(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Every child started by a scenario, each the leader of its own process group. Dropping it
/// ends them all (SIGTERM to the group, then SIGKILL), newest first.
struct Procs {
    children: Vec<(String, Child)>,
    logs: PathBuf,
}

impl Procs {
    fn new(logs: &Path) -> Self {
        Procs {
            children: Vec::new(),
            logs: logs.to_path_buf(),
        }
    }

    /// Start `cmd` in a new process group with stdout/stderr in `NAME.log`.
    fn spawn(&mut self, name: &str, cmd: &mut Command) -> Result<()> {
        check_interrupted()?;
        let log = fs::File::create(self.logs.join(format!("{name}.log")))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        eprintln!("  [{name}] {}", util::describe(cmd));
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    fn child(&mut self, name: &str) -> Result<&mut Child> {
        match self.children.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => Ok(c),
            None => bail!("no process {name}"),
        }
    }

    /// Fail if a named child has exited already (a server that died).
    fn alive(&mut self, name: &str) -> Result<()> {
        if let Some(status) = self.child(name)?.try_wait()? {
            bail!(
                "{name} exited early with {status}; see {}/{name}.log",
                self.logs.display()
            );
        }
        Ok(())
    }

    /// Send `sig` to a child's group and wait (bounded) for it to exit.
    fn stop(&mut self, name: &str, sig: libc::c_int, within: Duration) -> Result<bool> {
        let idx = match self.children.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => bail!("no process {name}"),
        };
        let (_, mut child) = self.children.remove(idx);
        let done = end_group(&mut child, sig, within);
        Ok(done)
    }

    /// Wait for a child to exit by itself (bounded; interruptible). Returns its success.
    fn wait(&mut self, name: &str, within: Duration) -> Result<bool> {
        let end = Instant::now() + within;
        loop {
            if let Some(status) = self.child(name)?.try_wait()? {
                let idx = self
                    .children
                    .iter()
                    .position(|(n, _)| n == name)
                    .unwrap_or(0);
                self.children.remove(idx);
                return Ok(status.success());
            }
            if Instant::now() >= end {
                bail!(
                    "{name} did not finish within {within:?}; see {}/{name}.log",
                    self.logs.display()
                );
            }
            pause(Duration::from_millis(50))?;
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        while let Some((_, mut child)) = self.children.pop() {
            end_group(&mut child, libc::SIGTERM, Duration::from_secs(3));
        }
    }
}

/// Signal a child's process group, wait up to `within`, then SIGKILL the group. True if the
/// child exited before the SIGKILL.
fn end_group(child: &mut Child, sig: libc::c_int, within: Duration) -> bool {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: plain kill(2) on the group we created for this child.
    unsafe {
        libc::kill(-pgid, sig);
    }
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            // Members of the group may outlive the leader (xterm's shell): end them too.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();
    false
}

// --- environment ----------------------------------------------------------------------------

/// Install the Debian packages the scenarios need when something is missing.
fn ensure_tools() -> Result<()> {
    let mut missing: Vec<&str> = Vec::new();
    let checks: [(&str, bool); 12] = [
        ("xserver-xspice", Path::new("/usr/lib/xorg/modules/drivers/spiceqxl_drv.so").exists()),
        ("x11-xserver-utils", util::have("xsetroot")),
        ("x11-apps", util::have("xlogo")),
        ("xterm", util::have("xterm")),
        ("xfonts-base", Path::new("/usr/share/fonts/X11/misc/fonts.dir").exists()),
        ("spice-client-gtk", util::have("spicy-screenshot")),
        ("tshark", util::have("tshark") && util::have("dumpcap")),
        ("qemu-system-x86", util::have("qemu-system-x86_64")),
        ("python3-gi", python_ok("import gi")),
        ("gir1.2-spiceclientglib-2.0", python_ok(
            "import gi; gi.require_version('SpiceClientGLib', '2.0'); from gi.repository import SpiceClientGLib",
        )),
        ("python3-xlib", python_ok("import Xlib.display")),
        ("seabios", Path::new("/usr/share/seabios/bios-256k.bin").exists()),
    ];
    for (pkg, ok) in checks {
        if !ok {
            missing.push(pkg);
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "capture: installing missing packages: {}",
            missing.join(" ")
        );
        util::apt_install(&missing)?;
    }
    Ok(())
}

fn python_ok(code: &str) -> bool {
    Path::new(PYTHON).exists()
        && Command::new(PYTHON)
            .args(["-c", code])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
}

fn output(cmd: &mut Command) -> String {
    cmd.stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn deb_version(pkg: &str) -> String {
    let v = output(Command::new("dpkg-query").args(["-W", "-f", "${Version}", pkg]));
    if v.is_empty() {
        "unknown".into()
    } else {
        v
    }
}

/// A TCP port on 127.0.0.1 that is free now.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// An X display number with no server, lock or socket (from :40 up, away from desktops).
fn free_display() -> Result<u32> {
    for n in 40..200 {
        if !Path::new(&format!("/tmp/.X{n}-lock")).exists()
            && !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
        {
            return Ok(n);
        }
    }
    bail!("no free X display number in :40..:200")
}

/// Whether something listens on 127.0.0.1:port (from /proc/net/tcp, without connecting).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    let any = format!("00000000:{port:04X}");
    fs::read_to_string("/proc/net/tcp")
        .map(|t| {
            t.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && (f[1] == want || f[1] == any) && f[3] == "0A"
            })
        })
        .unwrap_or(false)
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> Result<bool>) -> Result<()> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if ok()? {
            return Ok(());
        }
        pause(Duration::from_millis(100))?;
    }
    bail!("timed out waiting for {what}")
}

// --- one scenario ---------------------------------------------------------------------------

struct Versions {
    xspice: String,
    spice_server: String,
    spice_gtk: String,
    qemu: String,
}

fn versions() -> Versions {
    let qemu = output(Command::new("qemu-system-x86_64").arg("--version"));
    Versions {
        xspice: deb_version("xserver-xspice"),
        spice_server: deb_version("libspice-server1"),
        spice_gtk: deb_version("libspice-client-glib-2.0-8"),
        qemu: qemu.lines().next().unwrap_or("unknown").to_string(),
    }
}

/// Run one scenario into `out` (the corpus folder); returns its manifest entry.
fn record(s: &Scenario, out: &Path, work: &Path, vers: &Versions) -> Result<Value> {
    let root = util::root();
    let port = free_port()?;
    let logs = work.join(s.name);
    fs::create_dir_all(&logs)?;
    let mut procs = Procs::new(&logs);
    let pcap_tmp = logs.join("capture.pcap");
    let ppm = logs.join("screen.ppm");
    let mut server_json;
    let mut desktop: Vec<String> = Vec::new();
    let mut password: Option<&str> = None;
    let screen: [u32; 2];
    let mut audio_thread = None;
    // X clients started once the scripted client is connected, so that their drawing reaches
    // it as draw commands (compressed as configured) rather than as the initial screen image.
    let mut late_desktop: Vec<(&str, Command)> = Vec::new();

    match &s.server {
        Server::Xspice {
            options,
            audio,
            animate,
        } => {
            let display = free_display()?;
            let mut opts: Vec<(String, String)> =
                vec![("SpiceDisableTicketing".into(), "True".into())];
            opts.extend(options.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            let fifo_dir = logs.join("audio");
            if *audio {
                fs::create_dir_all(&fifo_dir)?;
                opts.push((
                    "SpicePlaybackFIFODir".into(),
                    fifo_dir.display().to_string(),
                ));
            }
            let opt_lines: String = opts
                .iter()
                .map(|(k, v)| format!("    Option \"{k}\" \"{v}\"\n"))
                .collect();
            let conf = XSPICE_CONF
                .replace("@PORT@", &port.to_string())
                .replace("@WIDTH@", &WIDTH.to_string())
                .replace("@HEIGHT@", &HEIGHT.to_string())
                .replace("@OPTIONS@\n", &opt_lines);
            let conf_path = logs.join("xspice.conf");
            fs::write(&conf_path, &conf)?;
            let confdir = logs.join("xorg.conf.d");
            fs::create_dir_all(&confdir)?;
            procs.spawn(
                "xorg",
                Command::new("Xorg")
                    .args(["-noreset", "-nolisten", "tcp", "-config"])
                    .arg(&conf_path)
                    .arg("-configdir")
                    .arg(&confdir)
                    .arg("-logfile")
                    .arg(logs.join("Xorg.log"))
                    .arg(format!(":{display}")),
            )?;
            let sock = PathBuf::from(format!("/tmp/.X11-unix/X{display}"));
            wait_for("Xspice", Duration::from_secs(20), || {
                procs.alive("xorg")?;
                Ok(sock.exists() && listening(port))
            })?;
            let dpy = format!(":{display}");
            // Deterministic desktop: fixed positions, no window manager, no clock.
            let x = |prog: &str| {
                let mut c = Command::new(prog);
                c.env("DISPLAY", &dpy);
                c
            };
            let mut setroot = x("xsetroot");
            setroot.args(["-solid", "#3a6ea5", "-cursor_name", "left_ptr"]);
            desktop.push(util::describe(&setroot));
            util::run(&mut setroot)?;
            let mut pattern = x(PYTHON);
            pattern
                .arg(root.join(PATTERN_PY))
                .args(["--geometry", "160x120+20+20"]);
            if *animate {
                pattern.args(["--fps", "25", "--frames", "100", "--delay", "4"]);
            }
            desktop.push(util::describe(&pattern).replace(&root.display().to_string(), "."));
            let mut logo = x("xlogo");
            logo.args(["-geometry", "120x120+500+20"]);
            desktop.push(util::describe(&logo));
            let mut term = x("xterm");
            term.args([
                "-geometry", "50x10+170+180", "-fn", "fixed", "-bg", "white", "-fg", "black",
                "-e", "sh", "-c",
                "printf 'spice-rs capture corpus\\nline two: 0123456789\\n'; PS1='$ ' HOME=/tmp exec sh -i",
            ]);
            term.env("PS1", "$ ").env("ENV", "/dev/null");
            desktop.push(util::describe(&term));
            late_desktop = vec![("pattern", pattern), ("xlogo", logo), ("xterm", term)];
            if matches!(s.client, Client::Screenshot) {
                // spicy-screenshot takes the first screen it gets: draw everything before.
                for (name, mut cmd) in late_desktop.drain(..) {
                    procs.spawn(name, &mut cmd)?;
                }
                pause(Duration::from_millis(2500))?;
                procs.alive("xterm")?;
            }
            let mut options_json = serde_json::Map::new();
            for (k, v) in &opts {
                // The FIFO folder lives in the per-run work folder: record it generically.
                let v = v.replace(&logs.display().to_string(), "WORKDIR");
                options_json.insert(k.clone(), json!(v));
            }
            options_json.insert("SpiceAddr".into(), json!("127.0.0.1"));
            options_json.insert("SpicePort".into(), json!(port));
            options_json.insert("screen".into(), json!(format!("{WIDTH}x{HEIGHT} depth 24")));
            server_json = json!({
                "name": "Xspice (Xorg with the spiceqxl driver, config xtask/scripts/xspice.conf.in)",
                "version": format!("xserver-xspice {}, libspice-server1 {}", vers.xspice, vers.spice_server),
                "options": options_json,
            });
            if *audio {
                let fifo = fifo_dir.join("tone");
                let c = std::ffi::CString::new(fifo.display().to_string())?;
                // SAFETY: mkfifo(3) on a path we own.
                if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                    bail!("mkfifo {}", fifo.display());
                }
                server_json["audio"] = json!(
                    "1.0 s of a 440 Hz sine (amplitude 8000), S16LE stereo 48 kHz, written into the \
                     playback FIFO 3 s after the client starts"
                );
                audio_thread = Some(fifo);
            }
            screen = [WIDTH, HEIGHT];
        }
        Server::Qemu => {
            password = Some(QEMU_PASSWORD);
            let spice = format!(
                "port={port},addr=127.0.0.1,password={QEMU_PASSWORD},image-compression=auto_glz"
            );
            let args: Vec<String> = [
                "-machine",
                "pc",
                "-m",
                "128",
                "-nodefaults",
                "-vga",
                "qxl",
                "-display",
                "none",
                "-spice",
                &spice,
                "-audiodev",
                "spice,id=snd0",
                "-device",
                "intel-hda",
                "-device",
                "hda-duplex,audiodev=snd0",
                "-device",
                "qemu-xhci",
                "-device",
                "usb-tablet",
                "-chardev",
                "spicevmc,id=usbredir1,name=usbredir",
                "-device",
                "usb-redir,chardev=usbredir1",
                "-device",
                "virtio-serial",
                "-chardev",
                "spicevmc,id=vdagent,name=vdagent",
                "-device",
                "virtserialport,chardev=vdagent,name=com.redhat.spice.0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            procs.spawn("qemu", Command::new("qemu-system-x86_64").args(&args))?;
            wait_for("QEMU", Duration::from_secs(30), || {
                procs.alive("qemu")?;
                Ok(listening(port))
            })?;
            server_json = json!({
                "name": "QEMU (qemu-system-x86_64, SeaBIOS, no disk, TCG)",
                "version": format!("{}, libspice-server1 {}", vers.qemu, vers.spice_server),
                "options": args,
            });
            screen = [720, 400];
        }
    }

    // Capture.
    procs.spawn(
        "dumpcap",
        Command::new("dumpcap")
            .args([
                "-q",
                "-i",
                "lo",
                "-f",
                &format!("tcp port {port}"),
                "-P",
                "-w",
            ])
            .arg(&pcap_tmp),
    )?;
    wait_for("dumpcap", Duration::from_secs(15), || {
        procs.alive("dumpcap")?;
        Ok(fs::metadata(&pcap_tmp)
            .map(|m| m.len() >= 24)
            .unwrap_or(false))
    })?;
    pause(Duration::from_millis(700))?;

    // Client.
    let client_json;
    let mut steps = Value::Null;
    let mut client_report = Value::Null;
    match &s.client {
        Client::Screenshot => {
            procs.spawn(
                "client",
                Command::new("spicy-screenshot")
                    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-o"])
                    .arg(&ppm),
            )?;
            if !procs.wait("client", Duration::from_secs(60))? {
                bail!("spicy-screenshot failed; see {}/client.log", logs.display());
            }
            client_json = json!({
                "name": "spicy-screenshot",
                "version": format!("spice-gtk {}", vers.spice_gtk),
                "command": format!("spicy-screenshot -h 127.0.0.1 -p {port} -o NAME.ppm"),
            });
        }
        Client::Scripted(plan) => {
            let mut plan = plan.clone();
            plan["uri"] = json!(format!("spice://127.0.0.1:{port}"));
            plan["password"] = json!(password);
            plan["screenshot"] = json!(ppm.display().to_string());
            plan["timeout"] = json!(90);
            let plan_path = logs.join("plan.json");
            fs::write(&plan_path, serde_json::to_vec_pretty(&plan)?)?;
            let report_path = logs.join("client-report.json");
            let report_file = fs::File::create(&report_path)?;
            let err_file = fs::File::create(logs.join("client.log"))?;
            let mut cmd = Command::new(PYTHON);
            cmd.arg(root.join(CLIENT_PY)).arg(&plan_path);
            eprintln!("  [client] {}", util::describe(&cmd));
            let child = cmd
                .stdin(Stdio::null())
                .stdout(report_file)
                .stderr(err_file)
                .process_group(0)
                .spawn()
                .context("starting spice_client.py")?;
            procs.children.push(("client".into(), child));
            if !late_desktop.is_empty() {
                pause(Duration::from_millis(1500))?;
                for (name, mut cmd) in late_desktop.drain(..) {
                    procs.spawn(name, &mut cmd)?;
                }
            }
            if let Some(fifo) = audio_thread.take() {
                std::thread::spawn(move || feed_tone(&fifo, Duration::from_secs(3)));
            }
            let ok = procs.wait("client", Duration::from_secs(120))?;
            client_report =
                serde_json::from_str(&fs::read_to_string(&report_path)?).unwrap_or(Value::Null);
            if !ok {
                bail!("spice_client.py failed; see {}/client.log", logs.display());
            }
            steps = plan["sessions"].clone();
            let mut cj = json!({
                "name": "spice_client.py (scripted SpiceClientGLib client, xtask/scripts/spice_client.py)",
                "version": format!("spice-gtk {}, python3-gi {}", vers.spice_gtk, deb_version("python3-gi")),
            });
            for k in ["mouse_mode", "preferred_compression", "reconnect_after"] {
                if !plan[k].is_null() {
                    cj[k] = plan[k].clone();
                }
            }
            client_json = cj;
        }
    }
    pause(Duration::from_millis(700))?;
    // SIGINT makes dumpcap flush and close the file.
    if !procs.stop("dumpcap", libc::SIGINT, Duration::from_secs(10))? {
        bail!("dumpcap did not stop cleanly");
    }
    drop(procs);

    let pcap = out.join(format!("{}.pcap", s.name));
    let png = out.join(format!("{}.png", s.name));
    fs::copy(&pcap_tmp, &pcap)?;
    // dumpcap creates its file 0600; the corpus is plain readable data.
    fs::set_permissions(&pcap, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    let shot = ppm_to_png(&ppm, &png)?;
    let size = fs::metadata(&pcap)?.len();
    let tshark = tshark_summary(&pcap, port)?;
    Ok(json!({
        "name": s.name,
        "pcap": format!("{}.pcap", s.name),
        "screenshot": format!("{}.png", s.name),
        "bytes": size,
        "about": s.about,
        "server": server_json,
        "client": client_json,
        "port": port,
        "password": password,
        "screen": screen,
        "screenshot_size": shot,
        "desktop": desktop,
        "sessions": steps,
        "client_report": client_report,
        "tshark": tshark,
    }))
}

/// Write `secs` of a 440 Hz tone (S16LE stereo 48 kHz) into the FIFO after `after`, at about
/// real-time pace, then close it (the server then stops playback).
fn feed_tone(fifo: &Path, after: Duration) {
    std::thread::sleep(after);
    let Ok(mut f) = fs::OpenOptions::new().write(true).open(fifo) else {
        return;
    };
    let rate = 48_000usize;
    let chunk = rate / 50; // 20 ms
    let mut buf = Vec::with_capacity(chunk * 4);
    for c in 0..50 {
        buf.clear();
        for i in 0..chunk {
            let n = (c * chunk + i) as f64;
            let v = (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * n / rate as f64).sin()).round()
                as i16;
            buf.extend_from_slice(&v.to_le_bytes());
            buf.extend_from_slice(&v.to_le_bytes());
        }
        if f.write_all(&buf).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Convert a binary PPM (P6, maxval 255) to an RGB PNG; returns [width, height].
fn ppm_to_png(ppm: &Path, png_path: &Path) -> Result<[u32; 2]> {
    let data =
        fs::read(ppm).with_context(|| format!("client wrote no screenshot {}", ppm.display()))?;
    // Header: "P6", width, height, maxval, separated by whitespace, then one whitespace byte.
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < data.len() && data[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < data.len() && !data[i].is_ascii_whitespace() {
            i += 1;
        }
        if start == i {
            bail!("truncated PPM header in {}", ppm.display());
        }
        fields.push(String::from_utf8_lossy(&data[start..i]).into_owned());
    }
    i += 1;
    if fields[0] != "P6" || fields[3] != "255" {
        bail!("unsupported PPM {}: {:?}", ppm.display(), fields);
    }
    let w: u32 = fields[1].parse()?;
    let h: u32 = fields[2].parse()?;
    let need = w as usize * h as usize * 3;
    let pixels = data.get(i..i + need).context("PPM shorter than its size")?;
    let file = fs::File::create(png_path)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::High);
    let mut writer = enc.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok([w, h])
}

// --- tshark cross-check ---------------------------------------------------------------------

fn channel_name(t: u32) -> String {
    match t {
        1 => "main".into(),
        2 => "display".into(),
        3 => "inputs".into(),
        4 => "cursor".into(),
        5 => "playback".into(),
        6 => "record".into(),
        7 => "tunnel".into(),
        8 => "smartcard".into(),
        9 => "usbredir".into(),
        10 => "port".into(),
        11 => "webdav".into(),
        _ => format!("channel-{t}"),
    }
}

/// Message names from spice-protocol's enums.h: (channel, from server, first type, names in
/// type order separated by spaces).
#[rustfmt::skip]
const MESSAGE_NAMES: &[(&str, bool, u32, &str)] = &[
    ("", true, 1, "migrate migrate_data set_ack ping wait_for_channels disconnecting notify list"),
    ("", false, 1, "ack_sync ack pong migrate_flush_mark migrate_data disconnecting"),
    ("main", true, 101, "migrate_begin migrate_cancel init channels_list mouse_mode \
        multi_media_time agent_connected agent_disconnected agent_data agent_token \
        migrate_switch_host migrate_end name uuid agent_connected_tokens migrate_begin_seamless \
        migrate_dst_seamless_ack migrate_dst_seamless_nack"),
    ("main", false, 101, "client_info migrate_connected migrate_connect_error attach_channels \
        mouse_mode_request agent_start agent_data agent_token migrate_end migrate_dst_do_seamless \
        migrate_connected_seamless quality_indicator"),
    ("display", true, 101, "mode mark reset copy_bits inval_list inval_all_pixmaps inval_palette \
        inval_all_palettes"),
    ("display", true, 122, "stream_create stream_data stream_clip stream_destroy \
        stream_destroy_all"),
    ("display", true, 302, "draw_fill draw_opaque draw_copy draw_blend draw_blackness \
        draw_whiteness draw_invers draw_rop3 draw_stroke draw_text draw_transparent \
        draw_alpha_blend surface_create surface_destroy stream_data_sized monitors_config \
        draw_composite stream_activate_report gl_scanout_unix gl_draw quality_indicator"),
    ("display", false, 101, "init stream_report preferred_compression gl_draw_done \
        preferred_video_codec_type"),
    ("inputs", true, 101, "init key_modifiers"),
    ("inputs", true, 111, "mouse_motion_ack"),
    ("inputs", false, 101, "key_down key_up key_modifiers key_scancode"),
    ("inputs", false, 111, "mouse_motion mouse_position mouse_press mouse_release"),
    ("cursor", true, 101, "init reset set move hide trail inval_one inval_all"),
    ("playback", true, 101, "data mode start stop volume mute latency"),
    ("record", true, 101, "start stop volume mute"),
    ("record", false, 101, "data mode start_mark"),
    ("usbredir", true, 101, "data compressed_data"),
    ("usbredir", false, 101, "data compressed_data"),
    ("port", true, 101, "data compressed_data"),
    ("port", false, 101, "data compressed_data"),
    ("port", true, 201, "init event"),
    ("port", false, 201, "event"),
];

/// "name (type)" for a message of `channel` in one direction.
fn message_name(channel: &str, from_server: bool, t: u32) -> String {
    let base = t < 100;
    let name = MESSAGE_NAMES
        .iter()
        .filter(|(c, s, first, _)| {
            *s == from_server && t >= *first && (if base { c.is_empty() } else { *c == channel })
        })
        .find_map(|(_, _, first, names)| names.split_whitespace().nth((t - first) as usize));
    format!("{} ({t})", name.unwrap_or("unknown"))
}

fn image_type_name(t: u32) -> String {
    let n = match t {
        0 => "BITMAP",
        1 => "QUIC",
        100 => "LZ_PLT",
        101 => "LZ_RGB",
        102 => "GLZ_RGB",
        103 => "FROM_CACHE",
        104 => "SURFACE",
        105 => "JPEG",
        106 => "FROM_CACHE_LOSSLESS",
        107 => "ZLIB_GLZ_RGB",
        108 => "JPEG_ALPHA",
        109 => "LZ4",
        _ => "unknown",
    };
    format!("{n} ({t})")
}

/// Summarise a capture as Wireshark's SPICE dissector (an independent decoder) reads it:
/// TCP connections and their channel types, message counts per channel and direction, image
/// types seen.
fn tshark_summary(pcap: &Path, port: u16) -> Result<Value> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args([
            "-d",
            &format!("tcp.port=={port},spice"),
            "-Y",
            "spice",
            "-T",
            "fields",
        ])
        .args([
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
            "-E",
            "separator=/t",
        ])
        .args([
            "-e",
            "tcp.stream",
            "-e",
            "tcp.srcport",
            "-e",
            "spice.channel_type",
        ])
        .args(["-e", "spice.message_type", "-e", "spice.image_type"])
        .stderr(Stdio::null())
        .output()
        .context("running tshark")?;
    if !out.status.success() {
        bail!("tshark failed on {}", pcap.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut stream_channel: BTreeMap<u32, String> = BTreeMap::new();
    let mut messages: BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>> = BTreeMap::new();
    let mut images: BTreeMap<String, u64> = BTreeMap::new();
    let nums =
        |s: &str| -> Vec<u32> { s.split(',').filter_map(|x| x.trim().parse().ok()).collect() };
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 5 {
            continue;
        }
        let Ok(stream) = f[0].parse::<u32>() else {
            continue;
        };
        let from_server = f[1].parse::<u16>().ok() == Some(port);
        if let std::collections::btree_map::Entry::Vacant(e) = stream_channel.entry(stream) {
            // The first SPICE frame of a connection is the client's link message.
            match nums(f[2]).first() {
                Some(&c) if !from_server => {
                    e.insert(channel_name(c));
                    continue;
                }
                _ => {
                    e.insert("unlinked".into());
                }
            }
        }
        let ch = stream_channel[&stream].clone();
        let dir = if from_server { "server" } else { "client" };
        for t in nums(f[3]) {
            *messages
                .entry(ch.clone())
                .or_default()
                .entry(dir.into())
                .or_default()
                .entry(message_name(&ch, from_server, t))
                .or_default() += 1;
        }
        for t in nums(f[4]) {
            *images.entry(image_type_name(t)).or_default() += 1;
        }
    }
    let mut connections: BTreeMap<String, u64> = BTreeMap::new();
    for c in stream_channel.values() {
        *connections.entry(c.clone()).or_default() += 1;
    }
    Ok(json!({
        "command": format!(
            "tshark -r NAME.pcap -d tcp.port=={port},spice -Y spice -T fields -e tcp.stream \
             -e tcp.srcport -e spice.channel_type -e spice.message_type -e spice.image_type"
        ),
        "tshark_version": output(Command::new("tshark").arg("--version")).lines().next().unwrap_or(""),
        "connections": connections,
        "messages": messages,
        "image_types": images,
    }))
}

// --- manifest and entry point -----------------------------------------------------------

fn write_manifest(path: &Path, entries: Vec<Value>) -> Result<()> {
    let mut all: BTreeMap<String, Value> = BTreeMap::new();
    if let Ok(text) = fs::read_to_string(path) {
        let old: Value = serde_json::from_str(&text).context("reading manifest.json")?;
        for e in old["captures"].as_array().cloned().unwrap_or_default() {
            if let Some(n) = e["name"].as_str() {
                all.insert(n.to_string(), e);
            }
        }
    }
    for e in entries {
        if let Some(n) = e["name"].as_str() {
            all.insert(n.to_string(), e);
        }
    }
    let doc = json!({
        "about": "Captures of the real spice-gtk client against real SPICE servers on loopback, \
                  recorded by `cargo xtask capture` (xtask/src/capture.rs). One entry per capture: \
                  NAME.pcap (classic pcap), NAME.png (the client's final screenshot), how it was \
                  made, and what Wireshark's SPICE dissector sees in it.",
        "captures": all.into_values().collect::<Vec<_>>(),
    });
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    fs::write(path, text)?;
    Ok(())
}

pub fn run(a: Args) -> Result<ExitCode> {
    let all = scenarios();
    if a.scenarios.is_empty() && !a.all {
        println!("capture: records over existing corpus files, so name what to record (or --all):");
        for s in &all {
            println!(
                "  {:<30} {}",
                s.name,
                s.about.split(':').next().unwrap_or("")
            );
        }
        return Ok(ExitCode::from(2));
    }
    let chosen: Vec<&Scenario> = if a.all {
        all.iter().collect()
    } else {
        let mut v = Vec::new();
        for n in &a.scenarios {
            match all.iter().find(|s| s.name == n) {
                Some(s) => v.push(s),
                None => bail!("unknown scenario {n} (run without arguments for the list)"),
            }
        }
        v
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("capture needs root (Xorg, dumpcap on lo, apt-get)");
    }
    install_signal_handlers();
    ensure_tools()?;
    let vers = versions();
    let out = util::root().join("captures/corpus");
    fs::create_dir_all(&out)?;
    let work = std::env::temp_dir().join(format!("spice-capture-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let mut entries = Vec::new();
    let mut failed = Vec::new();
    for s in chosen {
        check_interrupted()?;
        eprintln!("capture: {}", s.name);
        match record(s, &out, &work, &vers) {
            Ok(e) => {
                eprintln!(
                    "capture: {} done: {} bytes, connections {}, images {}",
                    s.name, e["bytes"], e["tshark"]["connections"], e["tshark"]["image_types"]
                );
                entries.push(e);
            }
            Err(e) => {
                eprintln!("capture: {} FAILED: {e:#}", s.name);
                failed.push(s.name);
                if INTERRUPTED.load(Ordering::SeqCst) {
                    break;
                }
            }
        }
    }
    write_manifest(&out.join("manifest.json"), entries)?;
    if a.keep || !failed.is_empty() {
        eprintln!("capture: work folder kept: {}", work.display());
    } else {
        let _ = fs::remove_dir_all(&work);
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("capture: failed: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}
