//! `cargo xtask bench codecs [--quick] [--write-images DIR] [--report]`, `cargo xtask bench sim
//! [--quick]` and `cargo xtask bench audio [--quick]`: run the criterion benchmarks (release)
//! and print their figures as ratios to in-run baselines.
//!
//! codecs: per image of `spice_proto::codec::images` and per codec, encode and decode MB/s
//! (input bytes, width × height × 4), compression ratio, memcpy MB/s of the same buffer in the
//! same run, encode/memcpy, and the C reference's encode/memcpy for the same kind of image
//! (measured outside the project: spice-common quic.c / lz.c, gcc 12 -O2; the project's perf
//! baselines) with ours over theirs. lz4_flex and zlib level 1 rows are in-run baselines.
//!
//! sim: the standard scenario (2 clients, 30 simulated seconds, all faults): simulated seconds
//! per wall second and seeds per minute.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Image codecs against memcpy, lz4_flex and zlib-1.
    Codecs {
        /// Fewer samples (a smoke run of about a minute).
        #[arg(long)]
        quick: bool,
        /// Write the image set as PNG files into DIR and exit.
        #[arg(long, value_name = "DIR")]
        write_images: Option<PathBuf>,
        /// Print the table from the last run's estimates without running the benchmarks.
        #[arg(long)]
        report: bool,
    },
    /// The simulator's speed on the standard scenario.
    Sim {
        #[arg(long)]
        quick: bool,
    },
    /// Opus encode and decode of 10 s of the fake sound card, as multiples of real time.
    Audio {
        /// Fewer samples (a smoke run).
        #[arg(long)]
        quick: bool,
    },
}

/// The C reference's encode/memcpy (perf baselines: spice-common de79bac8, gcc 12.2 -O2).
const C_REFERENCE: &[(&str, &str, f64, f64)] = &[
    // (image, codec, enc/memcpy, compression ratio)
    ("desktop", "quic", 0.128, 8.56),
    ("desktop", "lz", 0.214, 72.20),
    ("photo", "quic", 0.023, 2.26),
    ("photo", "lz", 0.033, 1.32),
    ("text", "quic", 0.023, 2.74),
    ("text", "lz", 0.045, 12.52),
    ("noise", "quic", 0.017, 1.33),
    ("noise", "lz", 0.019, 1.32),
];

fn cargo_bench(package: &str, bench: &str, quick: bool) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::util::root())
        .args(["bench", "-p", package, "--bench", bench, "--"]);
    if quick {
        cmd.arg("--quick");
    }
    let st = cmd.status().context("run cargo bench")?;
    if !st.success() {
        bail!("cargo bench failed");
    }
    Ok(())
}

/// Mean time per iteration in seconds, from criterion's estimates.
fn mean_s(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(v["mean"]["point_estimate"].as_f64()? / 1e9)
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.what {
        What::Codecs {
            quick,
            write_images,
            report,
        } => {
            if let Some(dir) = write_images {
                return write_set(&dir);
            }
            if !report {
                cargo_bench("spice-proto", "codecs", quick)?;
            }
            codecs_table()
        }
        What::Sim { quick } => {
            cargo_bench("spice-sim", "sim", quick)?;
            let root = crate::util::target_dir().join("criterion/sim");
            let t = mean_s(&root.join("standard")).context("no criterion estimate for sim")?;
            let sim_ms: f64 = std::fs::read_to_string(root.join("sim_ms.txt"))?
                .trim()
                .parse()?;
            println!("| scenario | simulated s | wall s per run | simulated s / wall s | seeds per minute |");
            println!("|---|---|---|---|---|");
            println!(
                "| 2 clients, 30 s, all faults (seed 0) | {:.1} | {:.3} | {:.0}x | {:.0} |",
                sim_ms / 1000.0,
                t,
                sim_ms / 1000.0 / t,
                60.0 / t
            );
            Ok(ExitCode::SUCCESS)
        }
        What::Audio { quick } => {
            cargo_bench("spice-fake-devices", "audio", quick)?;
            audio_table()
        }
    }
}

fn audio_table() -> anyhow::Result<ExitCode> {
    let root = crate::util::target_dir().join("criterion/audio");
    let stream: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("stream.json"))?)?;
    let seconds = stream["seconds"].as_f64().context("stream.json: seconds")?;
    let bytes = stream["compressed_bytes"].as_f64().unwrap_or(f64::NAN);
    let rt = |name: &str| {
        mean_s(&root.join(name))
            .map(|t| seconds / t)
            .with_context(|| format!("no criterion estimate for audio/{name}"))
    };
    let (enc, dec, raw) = (
        rt("opus_encode_10s")?,
        rt("opus_decode_10s")?,
        rt("raw_bytes_10s")?,
    );
    println!("| stream | Opus encode x real time | Opus decode x real time | Opus kbit/s | raw copy x real time |");
    println!("|---|---|---|---|---|");
    println!(
        "| fake sound card, seed 0, {seconds:.0} s, 48 kHz stereo | {enc:.0}x | {dec:.0}x | {:.0} | {raw:.0}x |",
        bytes * 8.0 / seconds / 1000.0
    );
    Ok(ExitCode::SUCCESS)
}

fn write_set(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir)?;
    for (name, img) in spice_proto::codec::images::bench_set() {
        let path = dir.join(format!("{name}.png"));
        let f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut enc = png::Encoder::new(f, img.width(), img.height());
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let rgb: Vec<u8> = img
            .data()
            .chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        enc.write_header()?.write_image_data(&rgb)?;
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn codecs_table() -> anyhow::Result<ExitCode> {
    let root = crate::util::target_dir().join("criterion");
    let sizes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("codecs/sizes.json"))?)?;
    println!("| image | codec | enc MB/s | dec MB/s | ratio | memcpy MB/s | enc/memcpy | C enc/memcpy (ratio) | ours/C |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, _) in spice_proto::codec::images::bench_set() {
        let dir = root.join(format!("codecs_{name}"));
        let bytes = sizes[name]["bytes"].as_f64().unwrap_or(0.0);
        let mbs = |f: &str| mean_s(&dir.join(f)).map(|t| bytes / t / 1e6);
        let Some(memcpy) = mbs("memcpy") else {
            continue;
        };
        for (codec, key) in [
            ("QUIC", "quic"),
            ("LZ", "lz"),
            ("GLZ", "glz"),
            ("lz4_flex", "lz4_flex"),
            ("zlib-1", "zlib1"),
        ] {
            let enc = mbs(&format!("{key}_enc"));
            let dec = mbs(&format!("{key}_dec"));
            let ratio = bytes / sizes[name][key].as_f64().unwrap_or(f64::NAN);
            let rel = enc.map(|e| e / memcpy);
            let c = C_REFERENCE
                .iter()
                .find(|(i, k, _, _)| *i == name && *k == key);
            let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
            println!(
                "| {name} | {codec} | {} | {} | {ratio:.2} | {memcpy:.0} | {} | {} | {} |",
                fmt(enc),
                fmt(dec),
                rel.map_or("-".into(), |r| format!("{r:.3}")),
                c.map_or("-".into(), |c| format!("{:.3} ({:.2})", c.2, c.3)),
                match (rel, c) {
                    (Some(r), Some(c)) => format!("{:.2}x", r / c.2),
                    _ => "-".into(),
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
