//! `cargo xtask`: all project automation, one subcommand per chore. Each is a thin call into the
//! crates (or, for `ci` and `capture`, into the tools they drive).

use clap::{Parser, Subcommand};

mod bench;
mod capture;
mod ci;
mod conformance;
mod fuzz;
mod render;
mod sim;
mod transcript;
mod util;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "spice-rs automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every test CI runs (installs missing Debian packages when run as root).
    Ci(ci::Args),
    /// Run the conformance suite on the bundled corpus.
    Conformance(conformance::ConformanceArgs),
    /// Replay one capture against our server and report where it differs.
    Replay(conformance::ReplayArgs),
    /// Record real spice-gtk captures against reference servers into captures/corpus/.
    Capture(capture::Args),
    /// Print the typed transcript of a pcap capture.
    Transcript(transcript::Args),
    /// Render the final screen of a captured session to a PNG with the reference canvas.
    Render(render::Args),
    /// Run the deterministic simulator over seeds.
    Sim(sim::Args),
    /// Run the benchmarks and print their tables (codecs, sim, audio).
    Bench(bench::Args),
    /// Fuzz: build the fuzz crates on stable, seed, run targets, triage crashes.
    Fuzz(fuzz::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Ci(a) => ci::run(a),
        Cmd::Conformance(a) => conformance::conformance(a),
        Cmd::Replay(a) => conformance::replay(a),
        Cmd::Capture(a) => capture::run(a),
        Cmd::Transcript(a) => transcript::run(a),
        Cmd::Render(a) => render::run(a),
        Cmd::Sim(a) => sim::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Fuzz(a) => fuzz::run(a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
