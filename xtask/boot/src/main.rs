//! `cargo xtask ARGS` runs this first (the alias in `.cargo/config.toml`). The workspace links
//! system C libraries (libopus, through pkg-config), so `xtask` itself cannot build on a fresh
//! Debian machine until their `-dev` packages are there. This program has no dependencies: it
//! checks for them, installs them with apt-get when run as root (or names the command to run
//! and exits 1), then runs `cargo run --package xtask -- ARGS` in its place (same arguments,
//! environment and exit code).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// How to tell a package is installed.
type Probe = fn() -> bool;

/// Debian packages the workspace needs to build, each with how to tell it is there.
const BUILD_PACKAGES: &[(&str, Probe)] = &[
    ("pkg-config", || have("pkg-config")),
    ("libopus-dev", || {
        Command::new("pkg-config")
            .args(["--exists", "opus"])
            .status()
            .is_ok_and(|s| s.success())
    }),
];

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn apt_install(packages: &[&str]) -> bool {
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    ok(Command::new("apt-get").args(["update", "-qq"]))
        && ok(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages))
}

fn main() {
    let missing: Vec<&str> = BUILD_PACKAGES
        .iter()
        .filter(|(_, present)| !present())
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        let list = missing.join(" ");
        if is_root() && Path::new("/usr/bin/apt-get").exists() {
            eprintln!("xtask: installing the Debian packages the build needs: {list}");
            if !apt_install(&missing) {
                eprintln!("xtask: apt-get install -y {list} failed");
                std::process::exit(1);
            }
        } else {
            eprintln!(
                "xtask: the build needs these Debian packages: {list}\n  install them with: sudo apt-get install -y {list}"
            );
            std::process::exit(1);
        }
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let err = Command::new(cargo)
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!("xtask: could not run cargo: {err}");
    std::process::exit(1);
}
