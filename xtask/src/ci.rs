//! `cargo xtask ci`: everything CI checks, in the order a failure is cheapest to see.
//!
//! 1. The Debian packages the tests need (tshark for the dissector cross-check). As root they are
//!    installed when missing; otherwise the command stops and names them. Without `CI` set, a
//!    test that needs a missing tool skips with a printed reason instead.
//! 2. `cargo fmt --check`.
//! 3. `cargo clippy` on every target, warnings denied.
//! 4. `cargo test` on the whole workspace.
//! 5. The fuzz targets compile (`cargo check` of each fuzz crate; running them needs nightly and
//!    cargo-fuzz: `cargo fuzz run TARGET` inside protocol/ or captures/).
//!
//! `.ci/run` calls exactly this command; nothing here may hide a failure.

use std::process::{Command, ExitCode};

use crate::util::{have, root, run as sh};

#[derive(clap::Args)]
pub struct Args {
    /// Skip installing missing Debian packages (tests needing them skip locally, fail under CI).
    #[arg(long)]
    pub no_install: bool,
    /// Skip clippy (quicker local runs; CI never skips it).
    #[arg(long)]
    pub no_clippy: bool,
}

/// Debian packages the test suite drives, with the program that shows each is there.
const PACKAGES: &[(&str, &str)] = &[("tshark", "tshark")];

/// The fuzz crates, excluded from the workspace (they need their own profile for cargo-fuzz).
const FUZZ_CRATES: &[&str] = &["protocol/fuzz", "captures/fuzz"];

pub fn run_ci(a: &Args) -> anyhow::Result<()> {
    let root = root();
    ensure_packages(a.no_install)?;

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    sh(Command::new(&cargo)
        .current_dir(&root)
        .args(["fmt", "--all", "--", "--check"]))?;
    if !a.no_clippy {
        sh(Command::new(&cargo).current_dir(&root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    sh(Command::new(&cargo)
        .current_dir(&root)
        .args(["test", "--workspace", "--no-fail-fast"]))?;
    for krate in FUZZ_CRATES {
        let manifest = root.join(krate).join("Cargo.toml");
        if manifest.exists() {
            sh(Command::new(&cargo)
                .current_dir(&root)
                .arg("check")
                .arg("--quiet")
                .arg("--manifest-path")
                .arg(&manifest)
                .arg("--target-dir")
                .arg(root.join("target").join("fuzz-check")))?;
        }
    }
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    run_ci(&a)?;
    println!("xtask ci: all checks passed");
    Ok(ExitCode::SUCCESS)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Install (as root) or name the missing Debian packages.
fn ensure_packages(no_install: bool) -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, program)| !have(program))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let under_ci = std::env::var_os("CI").is_some();
    if no_install || !is_root() {
        let msg = format!(
            "missing Debian packages: {} (install with: apt-get install -y {})",
            missing.join(" "),
            missing.join(" ")
        );
        if under_ci {
            anyhow::bail!(msg);
        }
        eprintln!("warning: {msg}; tests that need them will skip");
        return Ok(());
    }
    crate::util::apt_install(&missing)
}
