//! The screen of a captured session: the display channel's server messages replayed, in
//! order, into spice-proto's reference [`Canvas`], as the captured client drew them.
//!
//! `cargo xtask render FILE -o OUT.png [--session N]` and the corpus render tests use this.

use spice_proto::canvas::{Canvas, CanvasStats, Raster};
use spice_proto::messages::{AnyMessage, ChannelType, Direction};

use crate::Transcript;

/// What rendering one session's display channel gave.
#[derive(Debug)]
pub struct Rendered {
    /// Index of the session in [`Transcript::sessions`].
    pub session: usize,
    /// The final primary surface, if the session created one.
    pub primary: Option<Raster>,
    pub stats: CanvasStats,
    /// Messages the canvas could not apply: (capture frame, message name, why), first 32.
    pub errors: Vec<(u64, &'static str, String)>,
    /// How many messages failed in all.
    pub error_count: u64,
    /// Messages of the channel that did not decode (and so were not drawn).
    pub undecoded: u64,
}

/// Why a session cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the capture has no session {0} (it has {1})")]
    NoSuchSession(usize, usize),
    #[error("no session of the capture has a display channel")]
    NoDisplay,
}

/// The sessions that have a display channel, by index.
pub fn display_sessions(t: &Transcript) -> Vec<usize> {
    t.sessions
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.channels
                .iter()
                .any(|c| c.channel_type == ChannelType::Display)
        })
        .map(|(i, _)| i)
        .collect()
}

/// Render display channel 0 of session `session` (an index into [`Transcript::sessions`]),
/// or of the last session that has a display channel.
pub fn render(t: &Transcript, session: Option<usize>) -> Result<Rendered, RenderError> {
    let index = match session {
        Some(i) if i < t.sessions.len() => i,
        Some(i) => return Err(RenderError::NoSuchSession(i, t.sessions.len())),
        None => *display_sessions(t).last().ok_or(RenderError::NoDisplay)?,
    };
    let s = &t.sessions[index];
    let ch = s
        .channels
        .iter()
        .filter(|c| c.channel_type == ChannelType::Display)
        .min_by_key(|c| c.channel_id)
        .ok_or(RenderError::NoDisplay)?;
    let mut canvas = Canvas::default();
    let mut errors = Vec::new();
    let mut error_count = 0;
    let mut undecoded = 0;
    for m in &ch.messages {
        if m.dir != Direction::ServerToClient {
            continue;
        }
        let msg = match &m.decoded {
            Ok(AnyMessage::DisplayServer(d)) => d,
            _ => {
                undecoded += 1;
                continue;
            }
        };
        if let Err(e) = canvas.apply(msg) {
            error_count += 1;
            if errors.len() < 32 {
                errors.push((m.at.frame, m.name, e.to_string()));
            }
        }
    }
    Ok(Rendered {
        session: index,
        primary: canvas.primary().map(|s| s.raster.clone()),
        stats: canvas.stats.clone(),
        errors,
        error_count,
        undecoded,
    })
}

/// Compare two RGB(A) images of the same size: (pixels that differ, largest channel
/// difference). Alpha is ignored. `None` if the sizes differ.
pub fn diff_rgba(a: &[u8], b: &[u8]) -> Option<(u64, u8)> {
    if a.len() != b.len() {
        return None;
    }
    let mut n = 0;
    let mut max = 0u8;
    for (p, q) in a.chunks_exact(4).zip(b.chunks_exact(4)) {
        let d = (0..3).map(|i| p[i].abs_diff(q[i])).max().unwrap_or(0);
        if d > 0 {
            n += 1;
            max = max.max(d);
        }
    }
    Some((n, max))
}

/// Read a PNG (8-bit RGB, RGBA, gray or palette) as (width, height, RGBA bytes).
pub fn read_png(path: &std::path::Path) -> Result<(u32, u32, Vec<u8>), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec
        .read_info()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    buf.truncate(info.buffer_size());
    let rgba: Vec<u8> = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g, 255]).collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        png::ColorType::Indexed => return Err(format!("{}: palette not expanded", path.display())),
    };
    Ok((info.width, info.height, rgba))
}

/// Write RGBA bytes as an 8-bit RGB PNG (alpha dropped, as the client's screenshots are).
pub fn write_png(
    path: &std::path::Path,
    width: u32,
    height: u32,
    rgba: &[u8],
) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let rgb: Vec<u8> = rgba
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    let mut w = enc
        .write_header()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    w.write_image_data(&rgb)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    w.finish().map_err(|e| format!("{}: {e}", path.display()))
}
