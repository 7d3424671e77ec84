//! spice-conformance: replay captured SPICE sessions against our server and tell, channel by
//! channel, where it behaves unlike the reference server in the same capture.
//!
//! - [`replay`]: drive our server with a captured session's client side.
//! - [`compare`]: the equivalence policy (`conformance/POLICY.md`) and the verdicts.
//! - [`report`]: the table, and the Markdown, HTML and JUnit reports.
//!
//! Must not: touch the network or the wall clock (a replay is a function of the capture and
//! its options), or treat a capture it cannot fully replay as fatal (it says what it skipped).

pub mod audio;
pub mod compare;
pub mod replay;
pub mod report;
pub mod screen;

use std::path::{Path, PathBuf};

use compare::{ChannelVerdict, Status};
use replay::ReplayOptions;
use spice_server::server::Breakage;
use spice_server::ImageCompression;

/// What the corpus manifest says about one capture (the fields replay uses).
#[derive(Debug, Clone, Default)]
pub struct ManifestEntry {
    pub password: Option<String>,
    pub image_compression: Option<ImageCompression>,
    /// The reference's screen size (the fake display is set up to match).
    pub screen: Option<(u32, u32)>,
}

impl ManifestEntry {
    /// Read the entry for `pcap`'s file name from a `manifest.json` next to it, if any.
    pub fn for_capture(pcap: &Path) -> Option<ManifestEntry> {
        let dir = pcap.parent()?;
        let name = pcap.file_name()?.to_str()?;
        let text = std::fs::read_to_string(dir.join("manifest.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let e = v["captures"]
            .as_array()?
            .iter()
            .find(|e| e["pcap"].as_str() == Some(name))?;
        let options = &e["server"]["options"];
        // Xspice: {"SpiceImageCompression": "glz", ...}; QEMU: [..., "-spice", "...,image-compression=glz", ...].
        let image_compression = options["SpiceImageCompression"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                options
                    .as_array()?
                    .iter()
                    .filter_map(|a| a.as_str())
                    .find_map(|a| {
                        a.split(',')
                            .find_map(|kv| kv.strip_prefix("image-compression="))
                            .map(str::to_string)
                    })
            })
            .and_then(|c| c.parse().ok());
        let screen = e["screen"]
            .as_array()
            .and_then(|a| Some((a.first()?.as_u64()? as u32, a.get(1)?.as_u64()? as u32)));
        Some(ManifestEntry {
            password: e["password"].as_str().map(str::to_string),
            image_compression,
            screen,
        })
    }
}

/// The verdicts of one capture.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaptureReport {
    pub capture: String,
    pub path: PathBuf,
    /// Per session (in capture order), per channel.
    pub sessions: Vec<Vec<ChannelVerdict>>,
    /// Why nothing could be replayed, if so.
    pub error: Option<String>,
    /// The final primary surface of the last session with a display channel, drawn by the
    /// reference canvas from the captured server's messages and from ours.
    #[serde(skip)]
    pub screens: Option<Screens>,
}

/// The reference's and our final screens of one session.
#[derive(Debug, Clone)]
pub struct Screens {
    pub session: usize,
    pub reference: Option<spice_proto::canvas::Raster>,
    pub ours: Option<spice_proto::canvas::Raster>,
    /// Messages of our display stream the canvas could not draw (first few).
    pub our_errors: Vec<String>,
}

impl CaptureReport {
    pub fn status(&self) -> Status {
        if self.error.is_some() {
            return Status::Fails;
        }
        self.sessions
            .iter()
            .flatten()
            .map(|v| v.status)
            .max()
            .unwrap_or(Status::Pass)
    }

    pub fn verdicts(&self) -> impl Iterator<Item = &ChannelVerdict> {
        self.sessions.iter().flatten()
    }
}

/// Options of a conformance run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides the manifest's password (`replay --password`).
    pub password: Option<String>,
    /// Test-only: replay against a deliberately broken server.
    pub breakage: Option<Breakage>,
}

/// Replay and judge one capture.
pub fn run_capture(path: &Path, opts: &RunOptions) -> CaptureReport {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let t = match spice_captures::load(path) {
        Ok(t) => t,
        Err(e) => {
            return CaptureReport {
                capture: name,
                path: path.into(),
                sessions: vec![],
                error: Some(format!("cannot read the capture: {e}")),
                screens: None,
            }
        }
    };
    let entry = ManifestEntry::for_capture(path).unwrap_or_default();
    let ropts = ReplayOptions {
        password: opts.password.clone().or(entry.password),
        image_compression: entry.image_compression.unwrap_or_default(),
        breakage: opts.breakage,
        screen: entry.screen,
    };
    let t0 = t
        .channels()
        .map(|(_, c)| c.link.mess_at.ts.as_f64())
        .fold(f64::INFINITY, f64::min);
    let mut sessions = Vec::new();
    let shown = spice_captures::frames::display_sessions(&t).last().copied();
    let mut screens = None;
    for (index, s) in t.sessions.iter().enumerate() {
        let rep = replay::replay_session(s, t0, &ropts);
        if Some(index) == shown {
            screens = Some(render_screens(&t, index, &rep));
        }
        let main = s
            .channels
            .iter()
            .find(|c| c.channel_type == spice_proto::messages::ChannelType::Main);
        let modes = main
            .map(|m| compare::mouse_mode_timeline(m, t0))
            .unwrap_or_default();
        let mut verdicts = Vec::new();
        for (captured, ours) in s.channels.iter().zip(&rep.channels) {
            let mut v = compare::compare_channel(captured, ours);
            if captured.channel_type == spice_proto::messages::ChannelType::Display
                && Some(index) == shown
            {
                if let Some(sc) = &screens {
                    compare::judge_screens(&mut v, sc);
                }
            }
            if captured.channel_type == spice_proto::messages::ChannelType::Inputs
                && ours.result == Some(spice_proto::link::LinkError::Ok)
            {
                let expected = compare::expected_events(captured, &modes, t0);
                compare::compare_events(&mut v, &expected, &rep.events);
            }
            if captured.channel_type == spice_proto::messages::ChannelType::Record
                && ours.result == Some(spice_proto::link::LinkError::Ok)
            {
                if let Some(recorded) = &rep.recorded {
                    compare::compare_recorded(&mut v, captured, recorded);
                }
            }
            verdicts.push(v);
        }
        sessions.push(verdicts);
    }
    CaptureReport {
        capture: name,
        path: path.into(),
        sessions,
        error: None,
        screens,
    }
}

/// Draw the final screens of session `index`: the captured server's display messages and our
/// replay's, each through the reference canvas.
fn render_screens(
    t: &spice_captures::Transcript,
    index: usize,
    rep: &replay::SessionReplay,
) -> Screens {
    let reference = spice_captures::frames::render(t, Some(index))
        .ok()
        .and_then(|r| r.primary);
    let mut canvas = spice_proto::canvas::Canvas::default();
    let mut our_errors = Vec::new();
    let display = rep
        .channels
        .iter()
        .filter(|c| c.channel_type == spice_proto::messages::ChannelType::Display)
        .min_by_key(|c| c.channel_id);
    for r in display.map(|c| c.replies.as_slice()).unwrap_or_default() {
        if let Ok(spice_proto::AnyMessage::DisplayServer(m)) = &r.decoded {
            if let Err(e) = canvas.apply(m) {
                if our_errors.len() < 8 {
                    our_errors.push(format!("{}: {e}", r.name));
                }
            }
        }
    }
    Screens {
        session: index,
        reference,
        ours: canvas.primary().map(|s| s.raster.clone()),
        our_errors,
    }
}

/// The bundled corpus's captures, sorted.
pub fn corpus_captures(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    v.sort();
    Ok(v)
}

/// The repository's corpus directory.
pub fn default_corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../captures/corpus")
}

/// The text kept as a golden snapshot for a capture: per session and channel, the verdict and
/// the normalised sequence of our server's replies (session ids, keys, timings and ping ids
/// are not in it, so it changes only when behaviour does).
pub fn snapshot_text(r: &CaptureReport) -> String {
    let mut out = String::new();
    if let Some(e) = &r.error {
        out.push_str(&format!("error: {e}\n"));
    }
    for (i, s) in r.sessions.iter().enumerate() {
        out.push_str(&format!("session {}\n", i + 1));
        for v in s {
            out.push_str(&format!(
                "  {} {} ({} replies)\n    ours: {}\n",
                v.channel,
                v.status.as_str(),
                v.our_messages,
                v.our_sequence.join(" ")
            ));
            for f in &v.findings {
                out.push_str(&format!("    {}: {}\n", f.status.as_str(), f.text));
            }
        }
    }
    out
}

/// The content of an insta `.snap` file (after its metadata header), if it exists.
pub fn stored_snapshot(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = text.strip_prefix("---\n")?;
    let end = rest.find("\n---\n")?;
    Some(rest[end + 5..].to_string())
}

/// Where the golden snapshot of capture `name` lives.
pub fn snapshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("corpus__{name}.snap"))
}
