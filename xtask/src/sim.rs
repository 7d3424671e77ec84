//! `cargo xtask sim`: sweep seeds through the deterministic simulator.
//!
//! ```text
//! cargo xtask sim --seeds 1000 [--start S] [--clients K] [--faults all|none|LIST] [--duration SECS]
//!                 [--partition k/n] [--device qxl|fb]
//! cargo xtask sim --seed S [--hash] [--pcap OUT.pcap]
//! ```
//! A sweep shows a progress bar on stderr, prints one reproducing command per failing seed,
//! and ends with `N passed, M failed`; it exits 1 if any seed failed. `--seed S --hash` prints
//! the run's transcript hash (hex) on stdout and nothing else. Bad arguments exit 2.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use spice_server::server::Breakage;
use spice_sim::{Faults, Options};

#[derive(clap::Args)]
pub struct Args {
    /// Number of seeds to sweep.
    #[arg(long, conflicts_with = "seed")]
    seeds: Option<u64>,
    /// First seed of the sweep.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// With --seed: print only the run's transcript hash.
    #[arg(long, requires = "seed")]
    hash: bool,
    /// With --seed: write the simulated traffic as a pcap file.
    #[arg(long, requires = "seed", value_name = "OUT.pcap")]
    pcap: Option<std::path::PathBuf>,
    /// Simulated clients per run.
    #[arg(long, default_value_t = 2)]
    clients: u32,
    /// Fault classes: all, none, or a list (latency,hold,partition,crash,stall,hostile,device;
    /// -x removes).
    #[arg(long, default_value = "all")]
    faults: Faults,
    /// Simulated seconds the clients act for.
    #[arg(long = "duration", default_value_t = 10)]
    duration_s: u64,
    /// Run only every n-th seed starting at the k-th (0-based): `--partition 2/4`.
    #[arg(long, value_name = "k/n")]
    partition: Option<String>,
    /// Test-only: run a deliberately broken server (see `cargo xtask conformance --help`).
    #[arg(long = "break", value_name = "NAME")]
    breakage: Option<Breakage>,
    /// The server's display device: qxl (the fake QXL device) or fb (the fake framebuffer).
    #[arg(long, default_value = "qxl")]
    device: spice_sim::Device,
}

fn parse_partition(s: &str) -> anyhow::Result<(u64, u64)> {
    let (k, n) = s.split_once('/').context("--partition takes k/n")?;
    let (k, n): (u64, u64) = (k.parse()?, n.parse()?);
    if n == 0 || k >= n {
        bail!("--partition {s}: need 0 <= k < n");
    }
    Ok((k, n))
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let base = Options {
        clients: a.clients,
        faults: a.faults,
        duration_s: a.duration_s,
        breakage: a.breakage,
        device: a.device,
        ..Options::default()
    };
    if let Some(seed) = a.seed {
        let opts = Options {
            seed,
            keep_traffic: a.pcap.is_some(),
            ..base
        };
        let out = spice_sim::run(&opts);
        if let Some(path) = &a.pcap {
            let mut f = std::fs::File::create(path)
                .with_context(|| format!("create {}", path.display()))?;
            spice_sim::pcap::write(&out.chunks, &mut f)?;
        }
        if a.hash {
            println!("{:016x}", out.hash);
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "seed {seed}: {} ({} simulated ms, {} bytes, {} input events, hash {:016x})",
            if out.passed() { "passed" } else { "FAILED" },
            out.sim_ms,
            out.bytes,
            out.events,
            out.hash
        );
        for v in &out.violations {
            println!("  {v}");
        }
        return Ok(if out.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let n = a.seeds.unwrap_or(100);
    let (k, every) = match &a.partition {
        Some(p) => parse_partition(p)?,
        None => (0, 1),
    };
    let seeds: Vec<u64> = (a.start..a.start + n).filter(|s| s % every == k).collect();
    let tty = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut sim_ms = 0u64;
    for (i, &seed) in seeds.iter().enumerate() {
        let opts = Options {
            seed,
            ..base.clone()
        };
        let out = spice_sim::run(&opts);
        sim_ms += out.sim_ms;
        if out.passed() {
            passed += 1;
        } else {
            failed += 1;
            if tty {
                eprint!("\r\x1b[K");
            }
            println!("seed {seed} FAILED: {}", out.violations.join("; "));
            println!("  reproduce: {}", opts.repro_command());
        }
        progress(tty, i + 1, seeds.len(), failed);
    }
    if tty {
        eprintln!();
    }
    let wall = started.elapsed().as_secs_f64();
    eprintln!(
        "{} seeds in {:.1} s wall, {:.0} simulated s ({:.0}x real time)",
        seeds.len(),
        wall,
        sim_ms as f64 / 1000.0,
        sim_ms as f64 / 1000.0 / wall.max(1e-9)
    );
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn progress(tty: bool, done: usize, total: usize, failed: u64) {
    const WIDTH: usize = 30;
    if tty {
        let filled = done * WIDTH / total.max(1);
        eprint!(
            "\r[{}{}] {done}/{total} seeds, {failed} failed",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled)
        );
        let _ = std::io::stderr().flush();
    } else if done % 100 == 0 || done == total {
        eprintln!("{done}/{total} seeds, {failed} failed");
    }
}
