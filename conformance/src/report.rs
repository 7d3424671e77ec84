//! Reports: the terminal table, and `report.md`, `report.html` and `junit.xml` under the
//! output directory (`target/conformance/` for `cargo xtask conformance`).

use std::fmt::Write as _;
use std::path::Path;

use crate::compare::Status;
use crate::CaptureReport;

/// The table printed on the terminal: capture × channel with status and message counts.
pub fn table(reports: &[CaptureReport]) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "capture".into(),
        "channel".into(),
        "status".into(),
        "messages ref/ours".into(),
        "first finding".into(),
    ]];
    for r in reports {
        if let Some(e) = &r.error {
            rows.push([
                r.capture.clone(),
                "-".into(),
                "fails".into(),
                "-".into(),
                e.clone(),
            ]);
            continue;
        }
        let multi = r.sessions.len() > 1;
        for (i, s) in r.sessions.iter().enumerate() {
            for v in s {
                let ch = if multi {
                    format!("s{}/{}", i + 1, v.channel)
                } else {
                    v.channel.clone()
                };
                let first = v
                    .findings
                    .iter()
                    .max_by_key(|f| f.status)
                    .map(|f| shorten(&f.text, 90))
                    .unwrap_or_default();
                rows.push([
                    r.capture.clone(),
                    ch,
                    v.status.as_str().into(),
                    format!("{}/{}", v.reference_messages, v.our_messages),
                    first,
                ]);
            }
        }
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, r) in rows.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
        if n == 0 {
            let _ = writeln!(out, "{}", "-".repeat(widths.iter().sum::<usize>() + 8 + 14));
        }
    }
    out
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// Counts of channel verdicts: (pass, differs, fails).
pub fn totals(reports: &[CaptureReport]) -> (usize, usize, usize) {
    let mut t = (0, 0, 0);
    for r in reports {
        if r.error.is_some() {
            t.2 += 1;
        }
        for v in r.verdicts() {
            match v.status {
                Status::Pass => t.0 += 1,
                Status::Differs => t.1 += 1,
                Status::Fails => t.2 += 1,
            }
        }
    }
    t
}

pub fn markdown(reports: &[CaptureReport]) -> String {
    let (p, d, f) = totals(reports);
    let mut out = String::new();
    let _ = writeln!(out, "# spice-rs conformance report\n");
    let _ = writeln!(out, "{p} channels pass, {d} differ, {f} fail.\n");
    let _ = writeln!(out, "| capture | channel | status | messages ref/ours |");
    let _ = writeln!(out, "|---|---|---|---|");
    for r in reports {
        for (i, s) in r.sessions.iter().enumerate() {
            for v in s {
                let _ = writeln!(
                    out,
                    "| {} | {}{} | {} | {}/{} |",
                    r.capture,
                    if r.sessions.len() > 1 {
                        format!("s{}/", i + 1)
                    } else {
                        String::new()
                    },
                    v.channel,
                    v.status.as_str(),
                    v.reference_messages,
                    v.our_messages
                );
            }
        }
        if let Some(e) = &r.error {
            let _ = writeln!(out, "| {} | - | fails | {} |", r.capture, e);
        }
    }
    let _ = writeln!(out, "\n## Findings\n");
    for r in reports {
        let _ = writeln!(out, "### {}\n", r.capture);
        for v in r.verdicts() {
            if v.findings.is_empty() {
                continue;
            }
            let _ = writeln!(out, "- **{}** ({})", v.channel, v.status.as_str());
            for f in &v.findings {
                let _ = writeln!(out, "  - {}: {}", f.status.as_str(), f.text);
            }
        }
        let _ = writeln!(out);
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The HTML page; `frames` gives, per capture, the reference and our rendered frame (PNG paths
/// relative to the report) where both exist.
pub fn html(
    reports: &[CaptureReport],
    frames: &dyn Fn(&str) -> Option<(String, String)>,
) -> String {
    let (p, d, f) = totals(reports);
    let mut out = String::new();
    out.push_str("<!doctype html><meta charset=utf-8><title>spice-rs conformance</title>\n<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}.pass{background:#dfd}.differs{background:#ffd}.fails{background:#fdd}img{max-width:480px;border:1px solid #999}</style>\n");
    let _ = writeln!(
        out,
        "<h1>spice-rs conformance</h1><p>{p} channels pass, {d} differ, {f} fail.</p>"
    );
    for r in reports {
        let _ = writeln!(out, "<h2>{}</h2>", esc(&r.capture));
        if let Some(e) = &r.error {
            let _ = writeln!(out, "<p class=fails>{}</p>", esc(e));
        }
        out.push_str("<table><tr><th>channel</th><th>status</th><th>messages ref/ours</th><th>findings</th></tr>\n");
        for v in r.verdicts() {
            let findings: Vec<String> = v
                .findings
                .iter()
                .map(|f| format!("{}: {}", f.status.as_str(), esc(&f.text)))
                .collect();
            let _ = writeln!(
                out,
                "<tr class={s}><td>{}</td><td>{s}</td><td>{}/{}</td><td>{}</td></tr>",
                esc(&v.channel),
                v.reference_messages,
                v.our_messages,
                findings.join("<br>"),
                s = v.status.as_str()
            );
        }
        out.push_str("</table>\n");
        if let Some((reference, ours)) = frames(&r.capture) {
            let _ = writeln!(
                out,
                "<p>reference (left) and ours (right), final primary surface:</p><img src=\"{}\"> <img src=\"{}\">",
                esc(&reference),
                esc(&ours)
            );
        }
    }
    out
}

/// JUnit XML: one test suite per capture, one test case per channel; `fails` is a failure,
/// `differs` passes with the findings as system-out.
pub fn junit(reports: &[CaptureReport]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"spice-rs conformance\">\n",
    );
    for r in reports {
        let cases: Vec<_> = r.verdicts().collect();
        let failures = cases.iter().filter(|v| v.status == Status::Fails).count()
            + usize::from(r.error.is_some());
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\">",
            esc(&r.capture),
            cases.len().max(1)
        );
        if let Some(e) = &r.error {
            let _ = writeln!(
                out,
                "    <testcase name=\"replay\" classname=\"{}\"><failure message=\"{}\"/></testcase>",
                esc(&r.capture),
                esc(e)
            );
        }
        for v in cases {
            let text: Vec<String> = v
                .findings
                .iter()
                .map(|f| format!("{}: {}", f.status.as_str(), f.text))
                .collect();
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"{}\">",
                esc(&v.channel),
                esc(&r.capture)
            );
            if v.status == Status::Fails {
                let _ = write!(out, "<failure message=\"{}\"/>", esc(&text.join("; ")));
            } else if !text.is_empty() {
                let _ = write!(out, "<system-out>{}</system-out>", esc(&text.join("\n")));
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Write report.md, report.html and junit.xml into `dir`.
pub fn write_all(
    dir: &Path,
    reports: &[CaptureReport],
    frames: &dyn Fn(&str) -> Option<(String, String)>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.md"), markdown(reports))?;
    std::fs::write(dir.join("report.html"), html(reports, frames))?;
    std::fs::write(dir.join("junit.xml"), junit(reports))?;
    Ok(())
}
