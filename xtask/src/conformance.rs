//! `cargo xtask conformance` and `cargo xtask replay FILE`: replay captures against our
//! server, print the capture × channel table, write the reports.
//!
//! `conformance` runs the bundled corpus (captures/corpus), writes
//! `target/conformance/{report.md,report.html,junit.xml}` and, per capture, the final screen
//! drawn from the reference's and from our display messages (`frames/NAME-reference.png`,
//! `frames/NAME-ours.png`, side by side in the HTML page), checks each capture's normalised
//! replies against its golden snapshot (conformance/tests/snapshots), and exits 1 if any
//! channel fails or any snapshot changed (review with `cargo insta review` after
//! `cargo test -p spice-conformance`). `replay` does the same for one capture a user brings
//! (no snapshot); what cannot be replayed is reported, not fatal. Bad arguments exit 2.

use std::path::PathBuf;
use std::process::ExitCode;

use spice_conformance::compare::Status;
use spice_conformance::{report, CaptureReport, RunOptions};
use spice_server::server::Breakage;

#[derive(clap::Args)]
pub struct ConformanceArgs {
    /// The capture directory (default: the bundled corpus).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Where the reports go (default: target/conformance).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Test-only: replay against a deliberately broken server
    /// (drop-key, reorder-inputs, wrong-caps, wrong-mouse-mode, no-mark, no-cursor-init,
    /// drop-playback-frame).
    #[arg(long = "break", value_name = "NAME")]
    breakage: Option<Breakage>,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// A pcap or pcapng capture of a SPICE client session.
    file: PathBuf,
    /// The ticket the captured client used (default: from a manifest.json next to the file).
    #[arg(long)]
    password: Option<String>,
    /// Where the reports go (default: target/conformance/replay).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Write each capture's reference and our final screens as PNG under `out/frames/`; the
/// capture names that have both.
fn write_frames(
    reports: &[CaptureReport],
    out: &std::path::Path,
) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let dir = out.join("frames");
    std::fs::create_dir_all(&dir)?;
    let mut written = std::collections::BTreeSet::new();
    for r in reports {
        let Some(sc) = &r.screens else { continue };
        let (Some(reference), Some(ours)) = (&sc.reference, &sc.ours) else {
            continue;
        };
        for (which, raster) in [("reference", reference), ("ours", ours)] {
            let path = dir.join(format!("{}-{which}.png", r.capture));
            spice_captures::frames::write_png(
                &path,
                raster.width,
                raster.height,
                &raster.to_rgba8(),
            )
            .map_err(anyhow::Error::msg)?;
        }
        written.insert(r.capture.clone());
    }
    Ok(written)
}

fn finish(
    reports: &[CaptureReport],
    out: &std::path::Path,
) -> anyhow::Result<(usize, usize, usize)> {
    print!("{}", report::table(reports));
    let written = write_frames(reports, out)?;
    let frames = |capture: &str| {
        written.contains(capture).then(|| {
            (
                format!("frames/{capture}-reference.png"),
                format!("frames/{capture}-ours.png"),
            )
        })
    };
    report::write_all(out, reports, &frames)?;
    let (p, d, f) = report::totals(reports);
    println!(
        "reports: {}/report.md, report.html, junit.xml",
        out.display()
    );
    Ok((p, d, f))
}

pub fn conformance(a: ConformanceArgs) -> anyhow::Result<ExitCode> {
    let bundled = a.corpus.is_none();
    let dir = a.corpus.unwrap_or_else(spice_conformance::default_corpus);
    let out = a
        .out
        .unwrap_or_else(|| crate::util::root().join("target/conformance"));
    let captures = spice_conformance::corpus_captures(&dir)?;
    if captures.is_empty() {
        anyhow::bail!("no captures in {}", dir.display());
    }
    let opts = RunOptions {
        breakage: a.breakage,
        ..RunOptions::default()
    };
    let reports: Vec<CaptureReport> = captures
        .iter()
        .map(|p| spice_conformance::run_capture(p, &opts))
        .collect();
    let (p, d, f) = finish(&reports, &out)?;
    let mut changed = Vec::new();
    if bundled && a.breakage.is_none() {
        for r in &reports {
            let path = spice_conformance::snapshot_path(&r.capture);
            let now = spice_conformance::snapshot_text(r);
            match spice_conformance::stored_snapshot(&path) {
                Some(stored) if stored.trim_end() == now.trim_end() => {}
                Some(_) => changed.push(format!("{} (changed)", r.capture)),
                None => changed.push(format!("{} (no snapshot)", r.capture)),
            }
        }
    }
    println!("{p} channels pass, {d} differ, {f} fail");
    if !changed.is_empty() {
        println!(
            "snapshots not matching (run `cargo test -p spice-conformance` then `cargo insta review`): {}",
            changed.join(", ")
        );
    }
    Ok(if f == 0 && changed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn replay(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let out = a
        .out
        .unwrap_or_else(|| crate::util::root().join("target/conformance/replay"));
    let r = spice_conformance::run_capture(
        &a.file,
        &RunOptions {
            password: a.password,
            ..RunOptions::default()
        },
    );
    let status = r.status();
    let (p, d, f) = finish(std::slice::from_ref(&r), &out)?;
    for v in r.verdicts() {
        for fd in &v.findings {
            println!("{} {}: {}", v.channel, fd.status.as_str(), fd.text);
        }
    }
    println!("{p} channels pass, {d} differ, {f} fail");
    Ok(if status == Status::Fails {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
