//! `cargo xtask transcript FILE [--json]`. (Filled in by the captures work.)

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A pcap or pcapng file.
    pub file: PathBuf,
    /// One JSON object per message instead of the human summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_a: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("transcript is not built yet")
}

/// Decode every capture of the bundled corpus; failure if any message fails to decode.
pub fn check_corpus() -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("the corpus loader is not built yet")
}
