//! `cargo xtask capture`: record real-client captures. (Filled in by the captures work.)

#[derive(clap::Args)]
pub struct Args {
    /// Scenarios to record (all when none is named).
    pub scenarios: Vec<String>,
}

pub fn run(_a: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("capture is not built yet")
}
