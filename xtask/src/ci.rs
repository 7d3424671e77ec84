//! `cargo xtask ci`: everything CI checks, in the order a failure is cheapest to see.
//!
//! 1. The Debian packages the tests need (tshark, the real spice-gtk client and its GI bindings). As root they are
//!    installed when missing; otherwise the command stops and names them. Without `CI` set, a
//!    test that needs a missing tool skips with a printed reason instead.
//! 2. `cargo fmt --check`.
//! 3. `cargo clippy` on every target, warnings denied.
//! 4. `cargo test` on the whole workspace.
//! 5. Every fuzz target runs 10 s on its seeds (committed and derived from the captures and the
//!    QXL scenes; `cargo xtask fuzz --all --seconds 10 --seeds-only`, two at a time, each fuzz
//!    crate built once, on stable, installing cargo-fuzz if missing). A crash fails CI, naming
//!    the target and the input; `cargo xtask fuzz --triage INPUT` makes it a regression test.
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
    /// Skip the fuzz stage (quicker local runs; CI never skips it).
    #[arg(long)]
    pub no_fuzz: bool,
}

/// How to tell a Debian package is installed.
enum Probe {
    /// A program on PATH.
    Program(&'static str),
    /// A Python statement `/usr/bin/python3` runs without error.
    Python(&'static str),
}

/// Debian packages the test suite drives, with what shows each is there.
const PACKAGES: &[(&str, Probe)] = &[
    // The dissector cross-checks of captures (ours and the corpus).
    ("tshark", Probe::Program("tshark")),
    // The real client: spice-gtk through GObject introspection (scripted sessions against our
    // server) and spicy-screenshot (screens compared with the fake devices' framebuffers).
    ("python3-gi", Probe::Python("import gi")),
    (
        "gir1.2-spiceclientglib-2.0",
        Probe::Python(
            "import gi; gi.require_version('SpiceClientGLib', '2.0'); \
             from gi.repository import SpiceClientGLib",
        ),
    ),
    ("spice-client-gtk", Probe::Program("spicy-screenshot")),
];

fn present(p: &Probe) -> bool {
    match p {
        Probe::Program(name) => have(name),
        Probe::Python(code) => Command::new("/usr/bin/python3")
            .args(["-c", code])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
    }
}

/// Every fuzz target on its seeds for this long.
const FUZZ_SECONDS: u64 = 10;

/// Run every fuzz target [`FUZZ_SECONDS`] on its seeds; an error naming each crash.
fn fuzz_stage() -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let args = crate::fuzz::Args {
        targets: Vec::new(),
        all: true,
        minutes: None,
        seconds: Some(FUZZ_SECONDS),
        runs: None,
        list: false,
        triage: false,
        artifacts: Vec::new(),
        corpus_dir: None,
        jobs: Some(2),
        seeds_only: true,
        refresh_seeds: false,
    };
    let targets = crate::fuzz::all_targets()?;
    let outcomes =
        crate::fuzz::campaign(&targets, crate::fuzz::Limit::Seconds(FUZZ_SECONDS), &args)?;
    println!(
        "fuzz: {} targets, {} s each, stage took {:.0} s",
        outcomes.len(),
        FUZZ_SECONDS,
        t0.elapsed().as_secs_f64()
    );
    let crashed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.crashes.is_empty() || o.failed)
        .map(|o| {
            format!(
                "{} ({}; input {})",
                o.target,
                o.reason.as_deref().unwrap_or("fuzzer failed"),
                o.crashes
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    if !crashed.is_empty() {
        anyhow::bail!("fuzz targets crashed: {}", crashed.join("; "));
    }
    Ok(())
}

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
    let totals = run_tests(Command::new(&cargo).current_dir(&root).args([
        "test",
        "--workspace",
        "--no-fail-fast",
    ]))?;
    if !a.no_fuzz {
        fuzz_stage()?;
    }
    // The closing line CI reads: every test binary's counts added up.
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    run_ci(&a)?;
    Ok(ExitCode::SUCCESS)
}

/// Test counts summed over every `test result:` line cargo prints.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Add the counts of one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Run `cargo test`, echoing its output, and sum the results; error if it fails.
fn run_tests(cmd: &mut Command) -> anyhow::Result<Totals> {
    use std::io::BufRead;
    eprintln!("$ {}", crate::util::describe(cmd));
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn()?;
    let mut totals = Totals::default();
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            totals.add_line(&line);
        }
    }
    let status = child.wait()?;
    if !status.success() || totals.failed > 0 {
        println!(
            "tests: {} passed, {} failed, {} skipped",
            totals.passed, totals.failed, totals.ignored
        );
        anyhow::bail!("cargo test failed with {status}");
    }
    Ok(totals)
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
        .filter(|(_, probe)| !present(probe))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_cargo_result_lines() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 55 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.06s");
        t.add_line(
            "test result: FAILED. 1 passed; 2 failed; 3 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("running 3 tests");
        assert_eq!(
            t,
            Totals {
                passed: 56,
                failed: 2,
                ignored: 3
            }
        );
    }
}
