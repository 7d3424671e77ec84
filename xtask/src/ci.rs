//! `cargo xtask ci`: everything CI checks. (Being written.)

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_a: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("ci is not built yet")
}
