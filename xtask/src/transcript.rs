//! `cargo xtask transcript FILE [--json] [--dump-bodies DIR]`: the typed transcript of a pcap
//! or pcapng capture (decoded by spice-captures).
//!
//! Output (stable; scripts and the corpus tests rely on it):
//! - default: the summary of `spice_captures::render::summary` (capture line; per session, per
//!   channel: addresses, link result, header kind, then `DIR NAME(TYPE) COUNT` lines and
//!   problems; then non-SPICE connections), a blank line, then one line per message from
//!   `spice_captures::render::message_line`: `FRAME TS session ID TYPE:ID DIR #SERIAL
//!   NAME(TYPE) SIZE [unknown | error: TEXT]`, channel by channel.
//! - `--json`: one JSON object per message per line, in the same order, with keys
//!   `session` (number or null), `channel` (type name, e.g. "display"), `channel_id`,
//!   `dir` ("c2s"/"s2c"), `type` (number), `name`, `size`, `serial`, `ts` (seconds, float),
//!   `frame`, `unknown` (bool) and `error` (string or null). Summary and problems go to stderr.
//! - `--dump-bodies DIR`: writes the first body of each distinct (channel, dir, type) to
//!   `DIR/{channel}-{dir}-{type}-{name}.bin` and `DIR/SOURCES.md` (capture, frame, timestamp,
//!   session, channel of each), the raw material of spice-proto's golden vectors.
//!
//! Exit code: 0, or 1 if any message failed to decode (unknown types are not failures), or 2 if
//! the file could not be read.

use anyhow::Context;
use spice_captures::{render, Transcript};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A pcap or pcapng file.
    pub file: PathBuf,
    /// One JSON object per message instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Write the first body of each (channel, direction, type) into this folder.
    #[arg(long, value_name = "DIR")]
    pub dump_bodies: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let t = spice_captures::load(&a.file)?;
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if a.json {
        eprint!("{}", render::summary(&t));
        for (sid, c) in t.channels() {
            for m in &c.messages {
                let v = serde_json::json!({
                    "session": sid,
                    "channel": c.type_name(),
                    "channel_id": c.channel_id,
                    "dir": m.dir.short(),
                    "type": m.msg_type,
                    "name": m.name,
                    "size": m.size,
                    "serial": m.serial,
                    "ts": m.at.ts.as_f64(),
                    "frame": m.at.frame,
                    "unknown": m.unknown(),
                    "error": m.decoded.as_ref().err().map(|e| e.to_string()),
                });
                writeln!(out, "{v}")?;
            }
        }
    } else {
        write!(out, "{}", render::summary(&t))?;
        writeln!(out)?;
        for (sid, c) in t.channels() {
            for m in &c.messages {
                writeln!(out, "{}", render::message_line(sid, c, m))?;
            }
        }
    }
    out.flush()?;
    if let Some(dir) = &a.dump_bodies {
        let n = dump_bodies(&t, &a.file, dir)?;
        eprintln!("wrote {n} bodies to {}", dir.display());
    }
    let failed = t.failures().count();
    if failed > 0 {
        eprintln!("{failed} messages failed to decode");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Write the first body of each distinct (channel, dir, type); returns how many.
fn dump_bodies(t: &Transcript, file: &Path, dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut seen = BTreeMap::new();
    for (sid, c) in t.channels() {
        for m in &c.messages {
            let key = (c.type_name(), m.dir.short(), m.msg_type);
            if seen.contains_key(&key) {
                continue;
            }
            let name = format!(
                "{}-{}-{}-{}.bin",
                c.type_name(),
                m.dir.short(),
                m.msg_type,
                m.name
            );
            std::fs::write(dir.join(&name), &m.body)?;
            let line = format!(
                "| {name} | {} | {} | {} | {} | {}:{} | {} |",
                file.display(),
                m.at.frame,
                m.at.ts,
                sid.map_or("?".into(), |s| s.to_string()),
                c.type_name(),
                c.channel_id,
                if m.failed() { "decode failed" } else { "" }
            );
            seen.insert(key, line);
        }
    }
    let mut md = String::from(
        "# Message bodies and where they came from\n\n\
         Written by `cargo xtask transcript FILE --dump-bodies DIR`: the first body of each \
         (channel, direction, type).\n\n\
         | file | capture | frame | timestamp | session | channel | note |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for line in seen.values() {
        md.push_str(line);
        md.push('\n');
    }
    std::fs::write(dir.join("SOURCES.md"), md)?;
    Ok(seen.len())
}
