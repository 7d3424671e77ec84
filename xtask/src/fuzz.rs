//! `cargo xtask fuzz`: the fuzz campaign, on the stable toolchain.
//!
//! - Finds cargo-fuzz (installs it with `cargo install cargo-fuzz --locked` when missing) and
//!   builds each fuzz crate once (`cargo fuzz build -O -a -s none`, `RUSTC_BOOTSTRAP=1`: the
//!   sanitizer-coverage flags are unstable, the toolchain is the stable one). No ASan: the code
//!   is safe Rust, so ASan finds nothing a panic would not, and costs ~2x in build and run time;
//!   debug assertions and overflow checks are on.
//! - Keeps corpora outside git: `target/fuzz-corpus/<crate>/<target>/` (or `--corpus-dir`).
//!   Each run also reads the committed seeds (`<crate>/fuzz/seeds/<target>/`) and seeds
//!   derived afresh into `target/fuzz-seeds/<crate>/<target>/`: message bodies per channel and
//!   direction, images per codec, link messages and framed streams from the capture corpus
//!   (captures/corpus/*.pcap), and the QXL commands of every fake-device scene.
//! - Prints per target: runs, runs/s, coverage (libFuzzer's cov and ft), corpus size, and new
//!   crashes (their artifacts, under `target/fuzz-artifacts/<crate>/<target>/`); exits 1 if a
//!   target crashed.
//! - `--triage` turns crash artifacts into regression inputs: each is copied to
//!   `<crate>/fuzz/regressions/<target>/<hash>.bin` (committed), which the crate's
//!   `fuzz_regressions` test replays through the same code as the target.
//!
//! Must not: write anything under version control except by `--triage` and `--refresh-seeds`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::util::{root, target_dir};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// A target to run (`NAME` or `CRATE/NAME`, e.g. `canvas_apply`, `server/qxl_parse`);
    /// repeatable.
    #[arg(long = "target", value_name = "T")]
    pub targets: Vec<String>,
    /// Run every target of every fuzz crate.
    #[arg(long)]
    pub all: bool,
    /// Minutes per target (with --runs: whichever comes first).
    #[arg(long, conflicts_with = "seconds")]
    pub minutes: Option<f64>,
    /// Seconds per target (with --runs: whichever comes first).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Runs (inputs executed) per target; with --minutes or --seconds, whichever comes first.
    #[arg(long)]
    pub runs: Option<u64>,
    /// List the targets (crate, name) and exit.
    #[arg(long)]
    pub list: bool,
    /// Turn crash artifacts into regression inputs: the files given, or every artifact under
    /// target/fuzz-artifacts/ (of the selected targets, if any are selected).
    #[arg(long)]
    pub triage: bool,
    /// Artifacts for `--triage`.
    #[arg(value_name = "ARTIFACT", requires = "triage")]
    pub artifacts: Vec<PathBuf>,
    /// Where corpora live (default target/fuzz-corpus); one folder per crate and target.
    #[arg(long, value_name = "DIR")]
    pub corpus_dir: Option<PathBuf>,
    /// Targets fuzzed at the same time (default: the number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Run only on the seeds, without the corpus kept from earlier runs (what CI does).
    #[arg(long)]
    pub seeds_only: bool,
    /// Rewrite the committed seed sets (<crate>/fuzz/seeds/) from the derived seeds: a few small
    /// inputs per target.
    #[arg(long, hide = true)]
    pub refresh_seeds: bool,
}

/// The fuzz crates: folder (relative to the root), the package whose tests replay its
/// regressions.
pub const CRATES: &[(&str, &str)] = &[
    ("protocol", "spice-proto"),
    ("captures", "spice-captures"),
    ("server", "spice-server"),
];

/// Targets whose regressions another package's test replays (it needs that package's code).
const REPLAYED_ELSEWHERE: &[(&str, &str)] = &[("whole_guest", "spice-fake-devices")];

/// One fuzz target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// The crate folder: "protocol", "captures" or "server".
    pub krate: &'static str,
    pub name: String,
}

impl Target {
    fn dir(&self) -> PathBuf {
        root().join(self.krate).join("fuzz")
    }
    fn seeds(&self) -> PathBuf {
        self.dir().join("seeds").join(&self.name)
    }
    fn regressions(&self) -> PathBuf {
        self.dir().join("regressions").join(&self.name)
    }
    fn derived(&self) -> PathBuf {
        target_dir()
            .join("fuzz-seeds")
            .join(self.krate)
            .join(&self.name)
    }
    fn artifacts(&self) -> PathBuf {
        target_dir()
            .join("fuzz-artifacts")
            .join(self.krate)
            .join(&self.name)
    }
    fn binary(&self) -> PathBuf {
        build_dir(self.krate)
            .join(host_triple())
            .join("release")
            .join(&self.name)
    }
    /// The test that replays this target's regressions.
    fn regression_test(&self) -> String {
        let pkg = REPLAYED_ELSEWHERE
            .iter()
            .find(|(t, _)| *t == self.name)
            .map(|(_, p)| *p)
            .or_else(|| {
                CRATES
                    .iter()
                    .find(|(c, _)| *c == self.krate)
                    .map(|(_, p)| *p)
            })
            .unwrap_or("?");
        format!("cargo test -p {pkg} --test fuzz_regressions")
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.krate, self.name)
    }
}

/// One target dir for the three fuzz crates: what they share (spice-proto, spice-server, ...)
/// is compiled once. (Target names are unique across the crates.)
fn build_dir(_krate: &str) -> PathBuf {
    target_dir().join("fuzz")
}

fn host_triple() -> &'static str {
    "x86_64-unknown-linux-gnu"
}

/// Every target of every fuzz crate, from the `[[bin]]` names of its Cargo.toml.
pub fn all_targets() -> anyhow::Result<Vec<Target>> {
    let mut v = Vec::new();
    for (krate, _) in CRATES {
        let manifest = root().join(krate).join("fuzz").join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let mut in_bin = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin {
                if let Some(name) = line.strip_prefix("name").map(|r| {
                    r.trim_start()
                        .trim_start_matches('=')
                        .trim()
                        .trim_matches('"')
                }) {
                    v.push(Target {
                        krate,
                        name: name.to_string(),
                    });
                }
            }
        }
    }
    let names: BTreeSet<&str> = v.iter().map(|t| t.name.as_str()).collect();
    if names.len() != v.len() {
        bail!("two fuzz crates have a target of the same name (they share one build folder)");
    }
    Ok(v)
}

fn select(a: &Args) -> anyhow::Result<Vec<Target>> {
    let all = all_targets()?;
    if a.all {
        return Ok(all);
    }
    let mut v = Vec::new();
    for want in &a.targets {
        let (k, n) = match want.split_once('/') {
            Some((k, n)) => (Some(k), n),
            None => (None, want.as_str()),
        };
        let t = all
            .iter()
            .find(|t| t.name == n && k.map_or(true, |k| k == t.krate))
            .with_context(|| format!("no fuzz target {want} (see --list)"))?;
        if !v.contains(t) {
            v.push(t.clone());
        }
    }
    Ok(v)
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.list {
        for t in all_targets()? {
            println!("{t}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.triage {
        triage(&a)?;
        return Ok(ExitCode::SUCCESS);
    }
    let targets = select(&a)?;
    if targets.is_empty() {
        bail!("nothing to fuzz: give --target T (repeatable) or --all (--list shows them)");
    }
    if a.refresh_seeds {
        refresh_seeds(&targets)?;
        return Ok(ExitCode::SUCCESS);
    }
    // A time and a run count together: whichever comes first (a campaign's "10 million runs,
    // or an hour where that cannot be reached").
    let seconds = match (a.minutes, a.seconds) {
        (Some(m), _) => Some((m * 60.0).round().max(1.0) as u64),
        (_, Some(s)) => Some(s.max(1)),
        _ => None,
    };
    let limit = match (seconds, a.runs) {
        (Some(s), Some(r)) => Limit::Both {
            seconds: s,
            runs: r,
        },
        (Some(s), None) => Limit::Seconds(s),
        (None, Some(r)) => Limit::Runs(r),
        (None, None) => Limit::Seconds(60),
    };
    let report = campaign(&targets, limit, &a)?;
    Ok(
        if report.iter().any(|r| !r.crashes.is_empty() || r.failed) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// How long each target runs.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Seconds(u64),
    Runs(u64),
    /// Whichever is reached first.
    Both {
        seconds: u64,
        runs: u64,
    },
}

/// What one target's run gave.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub target: String,
    pub runs: u64,
    pub secs: f64,
    pub cov: u64,
    pub ft: u64,
    pub corpus: u64,
    pub crashes: Vec<PathBuf>,
    /// The first line of the panic or libFuzzer's error, for the summary.
    pub reason: Option<String>,
    /// The fuzzer exited with an error and no artifact.
    pub failed: bool,
}

/// Build, seed and run `targets`; print the table; the outcomes.
pub fn campaign(targets: &[Target], limit: Limit, a: &Args) -> anyhow::Result<Vec<Outcome>> {
    let cargo_fuzz = ensure_cargo_fuzz()?;
    let crates: BTreeSet<&str> = targets.iter().map(|t| t.krate).collect();
    for k in &crates {
        let t0 = Instant::now();
        build(&cargo_fuzz, k)?;
        eprintln!("built {k}/fuzz in {:.0} s", t0.elapsed().as_secs_f64());
    }
    let t0 = Instant::now();
    let derived = derive_seeds(targets)?;
    eprintln!(
        "derived {} seeds from the capture corpus and the QXL scenes in {:.1} s",
        derived,
        t0.elapsed().as_secs_f64()
    );
    let corpus_root = a
        .corpus_dir
        .clone()
        .unwrap_or_else(|| target_dir().join("fuzz-corpus"));
    let logs = target_dir().join("fuzz-logs");
    std::fs::create_dir_all(&logs)?;
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    // Run `jobs` fuzzers at a time.
    let mut pending: Vec<Target> = targets.to_vec();
    pending.reverse();
    let mut running: Vec<(Target, std::process::Child, PathBuf, Instant)> = Vec::new();
    let mut outcomes = Vec::new();
    let scratch = target_dir().join("fuzz-scratch");
    while !pending.is_empty() || !running.is_empty() {
        while running.len() < jobs {
            let Some(t) = pending.pop() else { break };
            let corpus = if a.seeds_only {
                let d = scratch.join(t.krate).join(&t.name);
                let _ = std::fs::remove_dir_all(&d);
                d
            } else {
                corpus_root.join(t.krate).join(&t.name)
            };
            std::fs::create_dir_all(&corpus)?;
            std::fs::create_dir_all(t.artifacts())?;
            let log = logs.join(format!("{}-{}.log", t.krate, t.name));
            let mut cmd = Command::new(t.binary());
            cmd.arg(&corpus);
            for d in [t.seeds(), t.derived()] {
                if d.is_dir() {
                    cmd.arg(d);
                }
            }
            cmd.arg("-print_final_stats=1")
                .arg(format!("-artifact_prefix={}/", t.artifacts().display()))
                .arg("-timeout=10")
                .arg("-rss_limit_mb=2048")
                .arg("-malloc_limit_mb=1024")
                .arg("-close_fd_mask=1");
            match limit {
                Limit::Seconds(s) => cmd.arg(format!("-max_total_time={s}")),
                Limit::Runs(r) => cmd.arg(format!("-runs={r}")),
                Limit::Both { seconds, runs } => cmd
                    .arg(format!("-max_total_time={seconds}"))
                    .arg(format!("-runs={runs}")),
            };
            let f = std::fs::File::create(&log)?;
            cmd.stdout(Stdio::null()).stderr(f);
            eprintln!("fuzzing {t} ({})", crate::util::describe(&cmd));
            let child = cmd
                .spawn()
                .with_context(|| format!("running {}", t.binary().display()))?;
            running.push((t, child, log, Instant::now()));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut i = 0;
        while i < running.len() {
            if let Some(status) = running[i].1.try_wait()? {
                let (t, _, log, started) = running.swap_remove(i);
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let mut o = parse_log(&text);
                o.target = t.to_string();
                o.secs = started.elapsed().as_secs_f64();
                if !status.success() && o.crashes.is_empty() {
                    o.failed = true;
                }
                if !o.crashes.is_empty() || o.failed {
                    eprintln!(
                        "{t}: CRASH ({}), log: {}",
                        o.reason.as_deref().unwrap_or("?"),
                        log.display()
                    );
                    for c in &o.crashes {
                        eprintln!("  input: {}", c.display());
                    }
                }
                outcomes.push(o);
            } else {
                i += 1;
            }
        }
    }
    outcomes.sort_by(|a, b| a.target.cmp(&b.target));
    print_table(&outcomes);
    let crashed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !o.crashes.is_empty() || o.failed)
        .collect();
    for o in &crashed {
        println!(
            "CRASH {}: {} (inputs: {}); make it a regression test with: cargo xtask fuzz --triage {}",
            o.target,
            o.reason.as_deref().unwrap_or("fuzzer failed"),
            o.crashes
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            o.crashes
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(outcomes)
}

fn print_table(outcomes: &[Outcome]) {
    println!(
        "{:<28} {:>12} {:>10} {:>7} {:>7} {:>7} {:>8}  crashes",
        "target", "runs", "runs/s", "cov", "ft", "corpus", "secs"
    );
    for o in outcomes {
        println!(
            "{:<28} {:>12} {:>10.0} {:>7} {:>7} {:>7} {:>8.1}  {}",
            o.target,
            o.runs,
            o.runs as f64 / o.secs.max(0.001),
            o.cov,
            o.ft,
            o.corpus,
            o.secs,
            if o.failed && o.crashes.is_empty() {
                "fuzzer failed".to_string()
            } else {
                o.crashes.len().to_string()
            }
        );
    }
}

/// The numbers of a libFuzzer log: the last status line, the final stats, the artifacts.
pub fn parse_log(text: &str) -> Outcome {
    let mut o = Outcome::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('#') {
            let mut words = rest.split_whitespace();
            if let Some(n) = words.next().and_then(|n| n.parse().ok()) {
                o.runs = n;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            for w in words.windows(2) {
                match w[0] {
                    "cov:" => o.cov = w[1].parse().unwrap_or(o.cov),
                    "ft:" => o.ft = w[1].parse().unwrap_or(o.ft),
                    "corp:" => {
                        o.corpus = w[1]
                            .split('/')
                            .next()
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(o.corpus)
                    }
                    _ => {}
                }
            }
        } else if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            o.runs = n.trim().parse().unwrap_or(o.runs);
        } else if let Some(p) = line.split("Test unit written to ").nth(1).map(str::trim) {
            // Slow units are reported, not failures (a hang is a `timeout-` artifact).
            if !p.contains("slow-unit-") {
                o.crashes.push(PathBuf::from(p));
            }
        } else if line.contains("panicked at")
            && o.reason.as_deref().map_or(true, |r| r.starts_with("=="))
            || o.reason.is_none() && line.starts_with("==") && line.contains("ERROR: libFuzzer")
        {
            // The panic's line is the best reason; libFuzzer's error when there is none.
            o.reason = Some(line.to_string());
        }
    }
    o
}

/// cargo-fuzz on PATH (`cargo fuzz`), installed when missing.
fn ensure_cargo_fuzz() -> anyhow::Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let works = |c: &str| {
        Command::new(c)
            .args(["fuzz", "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works(&cargo) {
        eprintln!("cargo-fuzz is missing: installing it (cargo install cargo-fuzz --locked)");
        crate::util::run(Command::new(&cargo).args(["install", "cargo-fuzz", "--locked"]))?;
        if !works(&cargo) {
            bail!("cargo fuzz still does not run after installing cargo-fuzz");
        }
    }
    Ok(cargo)
}

/// Build every target of one fuzz crate: release, debug assertions and overflow checks, no
/// sanitizer, on the stable toolchain (RUSTC_BOOTSTRAP for the coverage flags).
fn build(cargo: &str, krate: &str) -> anyhow::Result<()> {
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root().join(krate))
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "build", "-O", "-a", "-s", "none", "--target-dir"])
        .arg(build_dir(krate));
    crate::util::run(&mut cmd).with_context(|| format!("building {krate}/fuzz"))
}

// ---------------------------------------------------------------------------------------------
// Triage.

/// A stable short name for an input: 64-bit FNV-1a, hex.
pub fn short_hash(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn triage(a: &Args) -> anyhow::Result<()> {
    let all = all_targets()?;
    let selected = if a.targets.is_empty() {
        all.clone()
    } else {
        select(a)?
    };
    let mut files: Vec<(PathBuf, Option<Target>)> = Vec::new();
    if a.artifacts.is_empty() {
        for t in &selected {
            if let Ok(rd) = std::fs::read_dir(t.artifacts()) {
                let mut v: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
                v.sort();
                files.extend(v.into_iter().map(|p| (p, Some(t.clone()))));
            }
        }
    } else {
        for p in &a.artifacts {
            // The target: --target when exactly one, else the artifact's folder name.
            let by_dir = p
                .parent()
                .and_then(|d| d.file_name())
                .and_then(|n| all.iter().find(|t| *n == *t.name));
            let t = if selected.len() == 1 && !a.targets.is_empty() {
                Some(selected[0].clone())
            } else {
                by_dir.cloned()
            };
            files.push((p.clone(), t));
        }
    }
    if files.is_empty() {
        println!("no crash artifacts to triage");
        return Ok(());
    }
    let mut tests = BTreeSet::new();
    for (p, t) in files {
        let Some(t) = t else {
            bail!(
                "{}: which target? (give --target T, or keep it in target/fuzz-artifacts/<crate>/<target>/)",
                p.display()
            );
        };
        let data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        let dir = t.regressions();
        std::fs::create_dir_all(&dir)?;
        let dest = dir.join(format!("{}.bin", short_hash(&data)));
        std::fs::write(&dest, &data)?;
        println!("{} -> {}", p.display(), dest.display());
        tests.insert(t.regression_test());
    }
    for t in tests {
        println!("replayed by: {t}");
    }
    println!("commit the new files; the test fails until the bug is fixed");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Seeds.

/// The fields of a structured input in the order `arbitrary` reads them, to lay out real data
/// (message bodies, images) as inputs of targets that read tuples and vectors.
#[derive(Debug, Clone)]
pub enum Field {
    /// Bytes read from the front (integers little endian, a bool as one byte).
    Fixed(Vec<u8>),
    /// A `&[u8]` that is not last: its length is read from the end of the data.
    Slice(Vec<u8>),
    /// A `Vec<u8>` that is not last: each byte after a continuation byte, then a stop byte.
    VecU8(Vec<u8>),
    /// The rest of the data (a `&[u8]` read last).
    Rest(Vec<u8>),
}

/// The bytes that `arbitrary` 1.x reads back as `fields`. (Checked against the crate in the
/// tests below.)
pub fn layout(fields: &[Field]) -> Vec<u8> {
    let mut front: Vec<Vec<u8>> = Vec::new();
    for f in fields {
        front.push(match f {
            Field::Fixed(b) | Field::Slice(b) | Field::Rest(b) => b.clone(),
            Field::VecU8(b) => {
                let mut v = Vec::with_capacity(b.len() * 2 + 1);
                for &x in b {
                    v.push(1);
                    v.push(x);
                }
                v.push(0);
                v
            }
        });
    }
    // The length suffixes of the slices: each is read from the end of what is left when the
    // slice is read, so the first slice's length is last.
    let mut suffix: Vec<u8> = Vec::new();
    for i in (0..fields.len()).rev() {
        let Field::Slice(b) = &fields[i] else {
            continue;
        };
        let ahead: usize = front[i..].iter().map(Vec::len).sum::<usize>() + suffix.len();
        let len = b.len() as u64;
        // `arbitrary_byte_size`: 1, 2 or 4 length bytes by how much data is left (`ahead`
        // plus the length bytes), the length in `0..=ahead`.
        let k = if ahead < 256 {
            1
        } else if ahead < 65_536 {
            2
        } else {
            4
        };
        let max = ahead as u64;
        // `int_in_range(0..=max)` reads big-endian bytes only while `max` has bits left.
        let mut n = 0;
        while n < k && (max >> (8 * n)) > 0 {
            n += 1;
        }
        let mut enc = vec![0u8; k];
        for (j, e) in enc.iter_mut().take(n).enumerate() {
            *e = (len >> (8 * (n - 1 - j))) as u8;
        }
        // Append: this slice is read before the later ones, so from nearer the end.
        suffix.extend_from_slice(&enc);
    }
    let mut out: Vec<u8> = front.concat();
    out.extend_from_slice(&suffix);
    out
}

/// Elements of a `Vec<T>` read by `arbitrary_take_rest`: a continuation byte before each.
fn take_rest_vec(elements: Vec<Vec<Field>>) -> Vec<Field> {
    let mut v = Vec::new();
    for e in elements {
        v.push(Field::Fixed(vec![1]));
        v.extend(e);
    }
    v
}

/// Seeds by target name.
type Seeds = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

fn add(seeds: &mut Seeds, target: &str, data: Vec<u8>) {
    let m = seeds.entry(target.to_string()).or_default();
    if m.len() < 400 {
        m.insert(short_hash(&data), data);
    }
}

/// Write the derived seeds of `targets` into target/fuzz-seeds/; how many.
fn derive_seeds(targets: &[Target]) -> anyhow::Result<usize> {
    let seeds = compute_seeds()?;
    let mut n = 0;
    for t in targets {
        let d = t.derived();
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d)?;
        for (h, data) in seeds.get(&t.name).into_iter().flatten() {
            std::fs::write(d.join(h), data)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Rewrite the committed seed sets: the smallest derived seeds of each target, up to 4 KiB.
fn refresh_seeds(targets: &[Target]) -> anyhow::Result<()> {
    let seeds = compute_seeds()?;
    for t in targets {
        let Some(m) = seeds.get(&t.name) else {
            continue;
        };
        let d = t.seeds();
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d)?;
        let mut v: Vec<(&String, &Vec<u8>)> = m.iter().collect();
        v.sort_by_key(|(h, d)| (d.len(), (*h).clone()));
        let (mut total, mut count) = (0, 0);
        for (h, data) in v {
            // A few KiB per target; at least the smallest seed when it is not too big.
            let room =
                count < 8 && total + data.len() <= 4096 || count == 0 && data.len() <= 16 << 10;
            if !room {
                continue;
            }
            std::fs::write(d.join(h), data)?;
            total += data.len();
            count += 1;
        }
        println!("{t}: {count} seeds, {total} bytes");
    }
    Ok(())
}

fn compute_seeds() -> anyhow::Result<Seeds> {
    let mut seeds = Seeds::new();
    corpus_seeds(&mut seeds)?;
    scene_seeds(&mut seeds);
    synthetic_seeds(&mut seeds);
    Ok(seeds)
}

/// Seeds from every capture of the corpus.
fn corpus_seeds(seeds: &mut Seeds) -> anyhow::Result<()> {
    use spice_proto::header::{frame, HeaderKind};
    use spice_proto::messages::ChannelType;
    use spice_proto::Direction;
    let dir = root().join("captures").join("corpus");
    let mut pcaps: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    pcaps.sort();
    for pcap in &pcaps {
        let raw = std::fs::read(pcap)?;
        add(
            seeds,
            "pcap_reader",
            raw[..raw.len().min(32 << 10)].to_vec(),
        );
        add(seeds, "pcap_reader", raw[..raw.len().min(2 << 10)].to_vec());
        let t = match spice_captures::parse(&raw) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("warning: {}: {e}", pcap.display());
                continue;
            }
        };
        // Bodies: a few of each (channel, direction, type).
        let mut per_type: BTreeMap<(String, u16), usize> = BTreeMap::new();
        let mut session_steps: BTreeMap<Option<u32>, Vec<Vec<Field>>> = BTreeMap::new();
        for (sid, c) in t.channels() {
            let chan = match c.channel_type {
                ChannelType::Usbredir | ChannelType::Webdav => "spicevmc",
                other => other.name(),
            };
            let link = &c.link;
            let mess = link.mess.to_bytes();
            add(seeds, "link", mess.clone());
            let mut body = Vec::new();
            link.mess.encode(&mut body);
            add(seeds, "link", body);
            if let Some(r) = &link.reply {
                let mut b = Vec::new();
                r.encode(&mut b);
                add(seeds, "link", b);
            }
            let mut auth_ticket = 1u32.to_le_bytes().to_vec();
            if let Some(tk) = &link.ticket {
                add(seeds, "link", tk.0.to_vec());
                auth_ticket.extend_from_slice(&tk.0);
            }
            let steps = vec![
                vec![
                    Field::Fixed(vec![0]),
                    Field::VecU8(mess.clone()),
                    Field::Fixed(vec![0, 0]),
                ],
                vec![
                    Field::Fixed(vec![0]),
                    Field::VecU8(auth_ticket.clone()),
                    Field::Fixed(vec![0, 0]),
                ],
            ];
            add(seeds, "link_stage", layout(&take_rest_vec(steps)));
            // The framed stream of the channel's first server messages (framer), and the
            // payloads of the connection (transcript, reassembler).
            let mut stream = Vec::new();
            let mut payloads: Vec<Vec<Field>> = vec![
                vec![Field::Fixed(vec![1, 0]), Field::VecU8(mess)],
                vec![
                    Field::Fixed(vec![0, 0]),
                    Field::VecU8(
                        link.reply
                            .as_ref()
                            .map(|r| r.to_bytes())
                            .unwrap_or_default(),
                    ),
                ],
                vec![Field::Fixed(vec![1, 0]), Field::VecU8(auth_ticket)],
                vec![
                    Field::Fixed(vec![0, 0]),
                    Field::VecU8(
                        (link.result.map_or(0, |r| r.to_raw()))
                            .to_le_bytes()
                            .to_vec(),
                    ),
                ],
            ];
            for m in c.messages.iter().take(48) {
                let mut framed = Vec::new();
                frame(c.header, m.serial, m.msg_type, &m.body, &mut framed);
                if m.dir == Direction::ServerToClient && stream.len() < 16 << 10 {
                    stream.extend_from_slice(&framed);
                }
                if payloads.len() < 24 && framed.len() < 8 << 10 {
                    payloads.push(vec![
                        Field::Fixed(vec![u8::from(m.dir == Direction::ClientToServer), 0]),
                        Field::VecU8(framed),
                    ]);
                }
            }
            let mini = u8::from(c.header == HeaderKind::Mini);
            add(
                seeds,
                "framer",
                layout(&[Field::Fixed(vec![mini, 0]), Field::Rest(stream)]),
            );
            add(
                seeds,
                "transcript",
                layout(&take_rest_vec(payloads.clone())),
            );
            let segs: Vec<Vec<Field>> = payloads
                .iter()
                .filter(|p| matches!(&p[0], Field::Fixed(b) if b[0] == 1))
                .scan(1000u32, |seq, p| {
                    let Field::VecU8(b) = &p[1] else { return None };
                    let s = *seq;
                    *seq = seq.wrapping_add(b.len() as u32);
                    Some(vec![
                        Field::Fixed(s.to_le_bytes().to_vec()),
                        Field::Fixed(vec![0x10]),
                        Field::VecU8(b.clone()),
                        Field::Fixed(vec![0]),
                    ])
                })
                .collect();
            add(seeds, "reassembler", layout(&take_rest_vec(segs)));
            for m in &c.messages {
                let side = match m.dir {
                    Direction::ServerToClient => "server",
                    Direction::ClientToServer => "client",
                };
                let target = format!("{chan}_{side}");
                let n = per_type.entry((target.clone(), m.msg_type)).or_default();
                if *n < 3 && m.body.len() <= 64 << 10 {
                    *n += 1;
                    let mut d = m.msg_type.to_le_bytes().to_vec();
                    d.extend_from_slice(&m.body);
                    add(seeds, &target, d);
                }
                if c.channel_type == ChannelType::Main && m.name == "agent_data" {
                    let sel = [Field::Fixed(vec![1, 1])];
                    let mut f = sel.to_vec();
                    f.extend(take_rest_vec(vec![vec![Field::Slice(m.body.clone())]]));
                    add(seeds, "agent", layout(&f));
                }
                if c.channel_type == ChannelType::Display && m.dir == Direction::ServerToClient {
                    images(seeds, &m.body);
                }
                if m.dir == Direction::ClientToServer
                    && matches!(c.channel_type, ChannelType::Main | ChannelType::Inputs)
                {
                    let steps = session_steps.entry(sid).or_default();
                    if steps.len() < 64 {
                        let mut framed = Vec::new();
                        frame(HeaderKind::Mini, 0, m.msg_type, &m.body, &mut framed);
                        steps.push(vec![
                            Field::Fixed(vec![u8::from(c.channel_type == ChannelType::Main)]),
                            Field::VecU8(framed),
                            Field::Fixed(vec![10, 0]),
                        ]);
                    }
                }
            }
        }
        for (_, steps) in session_steps {
            add(seeds, "linked_channels", layout(&take_rest_vec(steps)));
        }
    }
    Ok(())
}

/// Seeds the corpus has no material for: agent messages (the captures carry none).
fn synthetic_seeds(seeds: &mut Seeds) {
    use spice_proto::agent::{
        AgentBody, MonConfig, Monitors, MonitorsConfig, MonitorsConfigFlags, VdAgentMessage,
    };
    let mon = |w, h| MonConfig {
        height: h,
        width: w,
        depth: 32,
        x: 0,
        y: 0,
    };
    let body = AgentBody::MonitorsConfig(MonitorsConfig {
        flags: MonitorsConfigFlags::EMPTY,
        monitors: Monitors::Plain(vec![mon(800, 600), mon(1024, 768)]),
    });
    let pieces: Vec<Vec<Field>> = VdAgentMessage::from_body(&body)
        .to_agent_data()
        .into_iter()
        .map(|p| vec![Field::Slice(p)])
        .collect();
    let mut f = vec![Field::Fixed(vec![1, 1])];
    f.extend(take_rest_vec(pieces));
    add(seeds, "agent", layout(&f));
}

/// Images in a display message body, found by their descriptors, as decoder seeds.
fn images(seeds: &mut Seeds, b: &[u8]) {
    let u32_at =
        |i: usize| -> Option<u32> { Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?)) };
    let mut i = 0;
    while i + 26 <= b.len() {
        let ty = b[i + 8];
        let (Some(w), Some(h), Some(size)) = (u32_at(i + 10), u32_at(i + 14), u32_at(i + 18))
        else {
            break;
        };
        let plausible = (1..=8192).contains(&w) && (1..=8192).contains(&h);
        if !plausible {
            i += 1;
            continue;
        }
        let data = |at: usize, size: u32| b.get(at..at.checked_add(size as usize)?);
        let found = match ty {
            // QUIC: its magic.
            1 => data(i + 22, size)
                .filter(|d| d.starts_with(b"QUIC"))
                .map(|d| add(seeds, "quic_decode", d.to_vec())),
            // LZ_RGB, GLZ_RGB: the LZ magic "  ZL".
            101 => data(i + 22, size)
                .filter(|d| d.starts_with(b"  ZL"))
                .map(|d| add(seeds, "lz_decode", d.to_vec())),
            102 => data(i + 22, size)
                .filter(|d| d.starts_with(b"  ZL"))
                .map(|d| {
                    add(
                        seeds,
                        "glz_decode",
                        layout(&take_rest_vec(vec![vec![Field::VecU8(d.to_vec())]])),
                    )
                }),
            105 => data(i + 22, size)
                .filter(|d| d.starts_with(&[0xff, 0xd8]))
                .map(|d| add(seeds, "jpeg_decode", d.to_vec())),
            // JPEG_ALPHA: flags, jpeg_size, then the data (the JPEG, then the alpha as LZ):
            // the target's own layout, and the JPEG alone.
            108 => match (b.get(i + 18), u32_at(i + 19), u32_at(i + 23)) {
                (Some(&flags), Some(jpeg_size), Some(len)) => data(i + 27, len)
                    .filter(|d| d.starts_with(&[0xff, 0xd8]) && jpeg_size as usize <= d.len())
                    .map(|d| {
                        add(seeds, "jpeg_decode", d[..jpeg_size as usize].to_vec());
                        let mut v = vec![flags];
                        v.extend(jpeg_size.to_le_bytes());
                        v.extend_from_slice(d);
                        add(seeds, "jpeg_decode", v)
                    }),
                _ => None,
            },
            107 => u32_at(i + 22).and_then(|zsize| {
                data(i + 26, zsize)
                    .filter(|d| d.first() == Some(&0x78))
                    .map(|d| {
                        add(
                            seeds,
                            "zlib_glz_decode",
                            layout(&take_rest_vec(vec![vec![
                                Field::Fixed(size.to_le_bytes().to_vec()),
                                Field::VecU8(d.to_vec()),
                            ]])),
                        )
                    })
            }),
            109 if w <= 0xffff && h <= 0xffff => {
                data(i + 22, size).filter(|d| d.len() > 5).map(|d| {
                    let mut v = (w as u16).to_le_bytes().to_vec();
                    v.extend((h as u16).to_le_bytes());
                    v.extend_from_slice(d);
                    add(seeds, "lz4_decode", v)
                })
            }
            _ => None,
        };
        // Past the descriptor (images inside an image's data are seeds too).
        i += if found.is_some() { 22 } else { 1 };
    }
}

/// Seeds for `qxl_parse` from every fake-device scene: each command as the device wrote it,
/// with the guest memory it points into.
fn scene_seeds(seeds: &mut Seeds) {
    use spice_fake_devices::qxl::{FakeQxl, SCENES};
    use spice_server::fuzzing::{qxl_parse_input, QXL_SLOT_BASE, QXL_SLOT_MAX};
    use spice_server::vdi::QxlDevice;
    for scene in SCENES {
        let Some(mut dev) = FakeQxl::new(scene, 320, 240) else {
            continue;
        };
        let mut per_type: BTreeMap<u32, usize> = BTreeMap::new();
        let mut t = 0;
        while t <= spice_fake_devices::screen::SETTLE_MS {
            let _ = dev.run(t);
            while let Some(c) = dev.get_command().or_else(|| dev.get_cursor_command()) {
                let addr = c.cmd.data & (u64::MAX >> 16);
                let mut mem = vec![0u8; QXL_SLOT_MAX];
                // The slot from its base; what lies past the RAM reads as zeros.
                let _ = dev.memory().read(QXL_SLOT_BASE, &mut mem);
                let end = mem.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                mem.truncate(end);
                let n = per_type.entry(c.cmd.cmd_type).or_default();
                // Drawables are many: keep a handful of each scene, all of the rest.
                if *n < 12 && addr >= QXL_SLOT_BASE {
                    *n += 1;
                    add(
                        seeds,
                        "qxl_parse",
                        qxl_parse_input(c.cmd.cmd_type, addr, &mem),
                    );
                }
                let mut id = [0u8; 8];
                let _ = dev.memory().read(addr, &mut id);
                dev.release(u64::from_le_bytes(id), 0);
            }
            t += 50;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbitrary::{Arbitrary, Unstructured};

    fn read<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> T {
        T::arbitrary_take_rest(Unstructured::new(data)).unwrap()
    }

    #[test]
    fn layouts_read_back_as_the_fields() {
        let body: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let d = layout(&[
            Field::Fixed(7u16.to_le_bytes().to_vec()),
            Field::Rest(body.clone()),
        ]);
        assert_eq!(read::<(u16, &[u8])>(&d), (7, &body[..]));

        for n in [0usize, 1, 5, 200, 254, 255, 256, 300, 70_000] {
            let piece: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let mut f = vec![Field::Fixed(vec![1, 0])];
            f.extend(take_rest_vec(vec![
                vec![Field::Slice(piece.clone())],
                vec![Field::Slice(vec![9, 9, 9])],
            ]));
            let d = layout(&f);
            let (a, b, v) = read::<(bool, bool, Vec<&[u8]>)>(&d);
            assert!(a && !b);
            assert_eq!(v, vec![&piece[..], &[9, 9, 9][..]], "n = {n}");
        }

        let steps = take_rest_vec(vec![
            vec![
                Field::Fixed(vec![2]),
                Field::VecU8(vec![1, 2, 3]),
                Field::Fixed(vec![5, 1]),
            ],
            vec![
                Field::Fixed(vec![0]),
                Field::VecU8(body.clone()),
                Field::Fixed(vec![0, 0]),
            ],
        ]);
        let v = read::<Vec<(u8, Vec<u8>, u16)>>(&layout(&steps));
        assert_eq!(v, vec![(2, vec![1, 2, 3], 0x105), (0, body, 0)]);
    }

    #[test]
    fn libfuzzer_logs_give_runs_coverage_and_artifacts() {
        let log = "#588\tINITED cov: 1643 ft: 2434 corp: 544/24Kb exec/s: 0 rss: 28Mb\n\
                   #1000\tDONE   cov: 1644 ft: 2436 corp: 545/24Kb lim: 242 exec/s: 0 rss: 28Mb\n\
                   thread '<unnamed>' panicked at src/canvas/text.rs:10:5:\n\
                   ==1== ERROR: libFuzzer: deadly signal\n\
                   artifact_prefix='x/'; Test unit written to x/slow-unit-1\n\
                   artifact_prefix='x/'; Test unit written to x/crash-abc\n\
                   stat::number_of_executed_units: 1001\n";
        let o = parse_log(log);
        assert_eq!((o.runs, o.cov, o.ft, o.corpus), (1001, 1644, 2436, 545));
        assert_eq!(o.crashes, vec![PathBuf::from("x/crash-abc")]);
        assert!(o.reason.unwrap().contains("panicked at"));
    }
}
