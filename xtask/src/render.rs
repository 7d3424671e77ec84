//! `cargo xtask render FILE -o OUT.png [--session N] [--compare REF.png]`: the final primary
//! surface of a captured session, drawn by spice-proto's reference canvas from the display
//! channel's server messages.
//!
//! Output (stable): one line `session N: WxH, D draws, F stream frames, E errors` on stdout,
//! then one line per message the canvas could not apply (`frame F NAME: WHY`, first 32), and
//! with `--compare` a line `compare REF: P pixels differ (max channel difference M)` or
//! `compare REF: size WxH differs`.
//!
//! Exit code: 0 rendered (and equal to `--compare`), 1 rendered but some message could not be
//! applied or the comparison differs, 2 unreadable capture, no such session or no display.

use anyhow::{bail, Context};
use spice_captures::frames;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A pcap or pcapng capture.
    pub file: PathBuf,
    /// Where to write the PNG.
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,
    /// Which session (index, from 0, in the order `transcript` lists them); default: the last
    /// one with a display channel.
    #[arg(long, value_name = "N")]
    pub session: Option<usize>,
    /// Compare with this PNG (a client screenshot) and report the differing pixels.
    #[arg(long, value_name = "REF.png")]
    pub compare: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let t = spice_captures::load(&a.file)?;
    let r = frames::render(&t, a.session)?;
    let Some(primary) = &r.primary else {
        bail!("session {} never created a primary surface", r.session);
    };
    println!(
        "session {}: {}x{}, {} draws, {} stream frames, {} errors",
        r.session, primary.width, primary.height, r.stats.draws, r.stats.frames, r.error_count
    );
    for (frame, name, why) in &r.errors {
        println!("frame {frame} {name}: {why}");
    }
    let rgba = primary.to_rgba8();
    frames::write_png(&a.output, primary.width, primary.height, &rgba)
        .map_err(anyhow::Error::msg)
        .context("writing the PNG")?;
    let mut ok = r.error_count == 0;
    if let Some(reference) = &a.compare {
        let (w, h, want) = frames::read_png(reference).map_err(anyhow::Error::msg)?;
        if (w, h) != (primary.width, primary.height) {
            println!("compare {}: size {w}x{h} differs", reference.display());
            ok = false;
        } else {
            let (n, max) = frames::diff_rgba(&rgba, &want).unwrap_or((u64::MAX, 255));
            println!(
                "compare {}: {n} pixels differ (max channel difference {max})",
                reference.display()
            );
            ok &= n == 0;
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
