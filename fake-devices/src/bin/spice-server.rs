//! `spice-server`: a tiny VMM made of fake devices, served to real SPICE clients.
//!
//! ```text
//! spice-server --listen 127.0.0.1:5900 --disable-ticketing --events-log events.jsonl
//! ```
//! prints `listening on ADDR` once the socket is bound (with `:0`, the port the OS picked),
//! logs through `tracing` to stderr (`RUST_LOG` filters; default `info`), and runs until
//! Ctrl-C. Exit codes: 0 on a clean stop, 1 on a runtime error, 2 on bad arguments.
//!
//! With `--audio playback,record` it has a sound card too: a playback device playing a
//! seeded program of tones, chirps and silences (`--audio-seed`, `--audio-rate`,
//! `--playback-script`) and a record device keeping what clients send (`--record-rate`,
//! `--record-script`); `--audio-dump DIR` writes both streams as raw PCM while they flow.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use spice_fake_devices::audio::{FakePlayback, FakeRecord, Script};
use spice_fake_devices::input::{to_json_line, EventLog, FakeKeyboard, FakeMouse, FakeTablet};
use spice_fake_devices::qxl::FakeQxl;
use spice_fake_devices::screen::FakeScreen;
use spice_server::link::Ticketing;
use spice_server::vdi::{PlaybackCall, PlaybackDevice, RecordCall, RecordDevice};
use spice_server::{Config, ImageCompression, Server};

#[derive(Parser, Debug)]
#[command(
    name = "spice-server",
    version,
    about = "A SPICE server over fake devices"
)]
struct Args {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:5900")]
    listen: SocketAddr,
    /// The SPICE ticket clients must send.
    #[arg(long, conflicts_with = "disable_ticketing")]
    password: Option<String>,
    /// Accept clients without a password.
    #[arg(long)]
    disable_ticketing: bool,
    /// Image compression: off, quic, lz, glz, auto_lz, auto_glz, lz4.
    #[arg(long, default_value = "auto_glz")]
    image_compression: ImageCompression,
    /// Write every input event the fake devices receive to FILE, as JSON lines.
    #[arg(long, value_name = "FILE")]
    events_log: Option<PathBuf>,
    /// The scene the fake display plays: desktop, solid, text, photo, windows, animated (a
    /// framebuffer display), or qxl-desktop, qxl-fills, qxl-text, qxl-photo, qxl-window,
    /// qxl-surface, qxl-cursor (a QXL device: drawables in guest memory).
    #[arg(long, default_value = "desktop")]
    scene: String,
    /// The fake display's size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1024x768", value_parser = parse_size)]
    size: (u32, u32),
    /// Write the scene's framebuffer (as the fake display holds it once the scene has
    /// settled, or at --snapshot-at) to OUT.png and exit.
    #[arg(long, value_name = "OUT.png")]
    snapshot: Option<PathBuf>,
    /// The scene time of --snapshot, in ms (default: when the scene has settled).
    #[arg(long, value_name = "MS", requires = "snapshot")]
    snapshot_at: Option<u64>,
    /// The VM name clients show.
    #[arg(long, default_value = "spice-rs")]
    name: String,
    /// Seed of the server's RNG (link keys, session ids). Random unless given: a known seed
    /// makes the link keys predictable, so use it for reproducing runs only.
    #[arg(long)]
    seed: Option<u64>,
    /// The sound card's devices: playback (the guest's output, a seeded program of tones,
    /// chirps and silences), record (the guest's input, a sink that keeps what clients send),
    /// or both: `--audio playback,record`. None unless given.
    #[arg(long, value_name = "DEVICES", value_delimiter = ',')]
    audio: Vec<AudioDevice>,
    /// Seed of the playback program (the same seed plays the same samples).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "audio")]
    audio_seed: u64,
    /// The sound card's sample rate in Hz (8000..=192000; Opus is used only at 48000 and
    /// the other rates libopus runs at).
    #[arg(long, value_name = "HZ", default_value_t = 48_000,
          value_parser = clap::value_parser!(u32).range(8_000..=192_000))]
    audio_rate: u32,
    /// The record device's rate in Hz, if not --audio-rate (44100 makes clients send raw
    /// PCM: Opus does not run at it).
    #[arg(long, value_name = "HZ",
          value_parser = clap::value_parser!(u32).range(8_000..=192_000))]
    record_rate: Option<u32>,
    /// Compress playback with Opus for clients that can decode it (on, the reference's
    /// default) or always send raw PCM (off).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off,
          action = clap::ArgAction::Set)]
    playback_compression: bool,
    /// What the playback device does when, in ms after it first runs:
    /// `MS:ACTION[,MS:ACTION...]` with actions start, stop, mute, unmute, volume=L/R
    /// (0..=65535 each). Replaces the default `0:start`, e.g.
    /// `0:start,2000:volume=20000/30000,2500:mute,3000:unmute,4000:stop`.
    #[arg(
        long,
        value_name = "SCRIPT",
        default_value = "0:start",
        requires = "audio"
    )]
    playback_script: Script,
    /// The same for the record device (default `0:start`: capture from the start).
    #[arg(
        long,
        value_name = "SCRIPT",
        default_value = "0:start",
        requires = "audio"
    )]
    record_script: Script,
    /// Write the playback device's samples (DIR/playback.raw) and the record device's
    /// (DIR/record.raw) as raw S16LE stereo PCM while they flow.
    #[arg(long, value_name = "DIR", requires = "audio")]
    audio_dump: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum AudioDevice {
    Playback,
    Record,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("on or off".into()),
    }
}

/// A device whose samples are also appended to a file as they flow (`--audio-dump`).
struct Dump<D> {
    inner: D,
    out: BufWriter<File>,
}

impl<D> Dump<D> {
    fn write(&mut self, frames: &[u32]) {
        let _ = self
            .out
            .write_all(&spice_audio::pcm::frames_to_bytes(frames));
        // Flushed at once: tests read the file while we run.
        let _ = self.out.flush();
    }
}

impl<D: PlaybackDevice> PlaybackDevice for Dump<D> {
    fn rate(&self) -> u32 {
        self.inner.rate()
    }

    fn run(&mut self, now_ms: u64) -> Vec<PlaybackCall> {
        let calls = self.inner.run(now_ms);
        for c in &calls {
            if let PlaybackCall::Samples(f) = c {
                self.write(f);
            }
        }
        calls
    }

    fn next_wakeup(&self) -> Option<u64> {
        self.inner.next_wakeup()
    }
}

impl<D: RecordDevice> RecordDevice for Dump<D> {
    fn rate(&self) -> u32 {
        self.inner.rate()
    }

    fn run(&mut self, now_ms: u64) -> Vec<RecordCall> {
        self.inner.run(now_ms)
    }

    fn samples(&mut self, frames: &[u32]) {
        self.write(frames);
        self.inner.samples(frames);
    }

    fn next_wakeup(&self) -> Option<u64> {
        self.inner.next_wakeup()
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if !spice_fake_devices::screen::SCENES.contains(&args.scene.as_str())
        && !spice_fake_devices::qxl::SCENES.contains(&args.scene.as_str())
    {
        eprintln!(
            "spice-server: unknown scene {:?} ({}, {})",
            args.scene,
            spice_fake_devices::screen::SCENES.join(", "),
            spice_fake_devices::qxl::SCENES.join(", ")
        );
        return ExitCode::from(2);
    }
    if let Some(out) = &args.snapshot {
        return match snapshot(&args, out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("spice-server: {e}");
                ExitCode::from(1)
            }
        };
    }
    if args.password.is_none() && !args.disable_ticketing {
        eprintln!("spice-server: give --password PASSWORD or --disable-ticketing");
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spice-server: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> std::io::Result<()> {
    // The VM's UUID: from --seed when given, else random (the server seeds its own RNG from
    // the OS when `Config::seed` is None).
    let uuid_seed = match args.seed {
        Some(s) => s,
        None => {
            let mut b = [0u8; 8];
            getrandom::getrandom(&mut b).map_err(std::io::Error::other)?;
            u64::from_le_bytes(b)
        }
    };
    let cfg = Config {
        ticketing: match args.password.clone() {
            Some(password) => Ticketing::Password {
                password,
                expires_at_ms: None,
            },
            None => Ticketing::Disabled,
        },
        name: Some(args.name.clone()),
        uuid: Some(uuid_from_seed(uuid_seed)),
        image_compression: args.image_compression,
        playback_compression: args.playback_compression,
        seed: args.seed,
        ..Config::default()
    };
    let mut server = Server::new(cfg);

    let log = EventLog::new();
    if let Some(path) = &args.events_log {
        let mut out = BufWriter::new(File::create(path)?);
        log.set_sink(move |rec| {
            // One line per event, flushed at once: tests read the file while we run.
            let _ = writeln!(out, "{}", to_json_line(rec));
            let _ = out.flush();
        });
    }
    let (w, h) = args.size;
    if args.scene.starts_with("qxl-") {
        let dev = FakeQxl::new(&args.scene, w, h).ok_or_else(|| {
            std::io::Error::other("bad scene or size (QXL: 200x150 to 4096x4096)")
        })?;
        server.display().set_qxl(Box::new(dev));
    } else {
        let screen = FakeScreen::new(&args.scene, w, h)
            .ok_or_else(|| std::io::Error::other("bad scene or size"))?;
        server.display().set_framebuffer(Box::new(screen));
    }
    server.set_keyboard(Box::new(FakeKeyboard::new(log.clone())));
    server.set_mouse(Box::new(FakeMouse::new(log.clone())));
    server.set_tablet(Box::new(FakeTablet::new(log.clone())));
    if !args.audio.is_empty() {
        attach_audio(&mut server, &args, &log)?;
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        println!("listening on {addr}");
        std::io::stdout().flush()?;
        tracing::info!(%addr, "serving");
        let start = tokio::time::Instant::now();
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("stopping");
        };
        spice_server::net::serve(&mut server, listener, shutdown, |_| {
            log.set_now(start.elapsed().as_millis() as u64);
        })
        .await
    })
}

/// The sound card of `--audio`: devices that keep no history (a long run would grow
/// without bound; `--audio-dump` writes the samples instead).
fn attach_audio(server: &mut Server, args: &Args, log: &EventLog) -> std::io::Result<()> {
    let dump = |name: &str| -> std::io::Result<Option<BufWriter<File>>> {
        match &args.audio_dump {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                Ok(Some(BufWriter::new(File::create(dir.join(name))?)))
            }
            None => Ok(None),
        }
    };
    if args.audio.contains(&AudioDevice::Playback) {
        let dev = FakePlayback::new(args.audio_seed, log.clone())
            .with_rate(args.audio_rate)
            .with_script(args.playback_script.clone())
            .with_history_limit(0);
        match dump("playback.raw")? {
            Some(out) => server.set_playback_device(Box::new(Dump { inner: dev, out })),
            None => server.set_playback_device(Box::new(dev)),
        }
        tracing::info!(
            seed = args.audio_seed,
            rate = args.audio_rate,
            "playback device"
        );
    }
    if args.audio.contains(&AudioDevice::Record) {
        let rate = args.record_rate.unwrap_or(args.audio_rate);
        let dev = FakeRecord::new(log.clone())
            .with_rate(rate)
            .with_script(args.record_script.clone())
            .with_history_limit(0);
        match dump("record.raw")? {
            Some(out) => server.set_record_device(Box::new(Dump { inner: dev, out })),
            None => server.set_record_device(Box::new(dev)),
        }
        tracing::info!(rate, "record device");
    }
    Ok(())
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once('x').ok_or("size is WIDTHxHEIGHT")?;
    let w: u32 = w.parse().map_err(|_| "bad width")?;
    let h: u32 = h.parse().map_err(|_| "bad height")?;
    if !(64..=8192).contains(&w) || !(64..=8192).contains(&h) {
        return Err("width and height must be 64..=8192".into());
    }
    Ok((w, h))
}

/// `--snapshot`: the scene's framebuffer at its settled time (or `--snapshot-at`) as PNG.
fn snapshot(args: &Args, out: &std::path::Path) -> std::io::Result<()> {
    let (w, h) = args.size;
    let rgba = if args.scene.starts_with("qxl-") {
        let at = args
            .snapshot_at
            .unwrap_or(spice_fake_devices::screen::SETTLE_MS);
        FakeQxl::rgba_at(&args.scene, w, h, at).ok_or_else(|| std::io::Error::other("bad scene"))?
    } else {
        let probe =
            FakeScreen::new(&args.scene, w, h).ok_or_else(|| std::io::Error::other("bad scene"))?;
        let at = args
            .snapshot_at
            .or(probe.settled())
            .unwrap_or(spice_fake_devices::screen::SETTLE_MS);
        FakeScreen::rgba_at(&args.scene, w, h, at)
            .ok_or_else(|| std::io::Error::other("bad scene"))?
    };
    let file = BufWriter::new(File::create(out)?);
    let mut enc = png::Encoder::new(file, w, h);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header().map_err(std::io::Error::other)?;
    wr.write_image_data(&rgba).map_err(std::io::Error::other)?;
    wr.finish().map_err(std::io::Error::other)?;
    Ok(())
}

/// A stable UUID for this run (the reference gets QEMU's `-uuid`).
fn uuid_from_seed(seed: u64) -> [u8; 16] {
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&seed.to_le_bytes());
    u[8..].copy_from_slice(&seed.rotate_left(32).to_le_bytes());
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}
