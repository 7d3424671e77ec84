//! Plain-text renderings of a [`Transcript`], shared by `cargo xtask transcript` and the corpus
//! snapshot tests. The format is stable (snapshots depend on it):
//!
//! Summary, [`summary`]:
//! ```text
//! capture: FORMAT, N frames[, warning: ...]
//! session ID|? (N channels)
//!   TYPE:ID CLIENT -> SERVER, frame F, HEADER header, link RESULT, N messages
//!     DIR NAME(TYPE) COUNT          one line per (direction, type), c2s first, by type
//!     problem: TEXT
//! other connection CLIENT -> SERVER, frame F: REASON
//! skipped frame F: REASON
//! ```
//! Messages, [`message_line`]: `FRAME TS session ID TYPE:ID DIR #SERIAL NAME(TYPE) SIZE` plus
//! ` unknown` or ` error: TEXT`.

use crate::transcript::{Channel, MessageRecord, Transcript};
use std::collections::BTreeMap;
use std::fmt::Write;

fn session_name(id: Option<u32>) -> String {
    id.map_or("?".into(), |i| i.to_string())
}

/// The header lines of one channel and its per-(direction, type) counts.
pub fn channel_summary(c: &Channel) -> String {
    let mut s = String::new();
    let link = match (&c.link.reply, c.link.result) {
        (_, Some(r)) => r.name().to_string(),
        (Some(r), None) => format!("reply {} (no result)", r.error.name()),
        (None, None) => "no reply".into(),
    };
    let header = match c.header {
        spice_proto::header::HeaderKind::Full => "full",
        spice_proto::header::HeaderKind::Mini => "mini",
    };
    let _ = writeln!(
        s,
        "  {}:{} {} -> {}, frame {}, {header} header, link {link}, {} messages",
        c.type_name(),
        c.channel_id,
        c.client,
        c.server,
        c.first.frame,
        c.messages.len()
    );
    let mut counts: BTreeMap<(u8, u16, &str), (usize, usize, usize)> = BTreeMap::new();
    for m in &c.messages {
        let dir = match m.dir {
            spice_proto::Direction::ClientToServer => 0,
            spice_proto::Direction::ServerToClient => 1,
        };
        let e = counts.entry((dir, m.msg_type, m.name)).or_default();
        e.0 += 1;
        if m.failed() {
            e.1 += 1;
        }
        if m.unknown() {
            e.2 += 1;
        }
    }
    for ((dir, t, name), (n, failed, _unknown)) in counts {
        let dir = if dir == 0 { "c2s" } else { "s2c" };
        let failed = if failed > 0 {
            format!(" ({failed} failed)")
        } else {
            String::new()
        };
        let _ = writeln!(s, "    {dir} {name}({t}) {n}{failed}");
    }
    for p in &c.problems {
        let _ = writeln!(s, "    problem: {p}");
    }
    s
}

/// The whole summary.
pub fn summary(t: &Transcript) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "capture: {}, {} frames",
        t.capture.format, t.capture.frames
    );
    for w in &t.capture.warnings {
        let _ = write!(s, ", warning: {w}");
    }
    s.push('\n');
    for sess in &t.sessions {
        let _ = writeln!(
            s,
            "session {} ({} channels)",
            session_name(sess.id),
            sess.channels.len()
        );
        for c in &sess.channels {
            s.push_str(&channel_summary(c));
        }
    }
    for o in &t.other_connections {
        let _ = writeln!(
            s,
            "other connection {} -> {}, frame {}: {}",
            o.client, o.server, o.first.frame, o.reason
        );
    }
    for (f, why) in &t.skipped_frames {
        let _ = writeln!(s, "skipped frame {f}: {why}");
    }
    s
}

/// One message as a line.
pub fn message_line(session: Option<u32>, c: &Channel, m: &MessageRecord) -> String {
    let mut s = format!(
        "{} {} session {} {}:{} {} #{} {}({}) {}",
        m.at.frame,
        m.at.ts,
        session_name(session),
        c.type_name(),
        c.channel_id,
        m.dir.short(),
        m.serial,
        m.name,
        m.msg_type,
        m.size
    );
    push_outcome(&mut s, m);
    s
}

/// " error: ..." for a message that failed to decode, " unknown" for an unknown type.
fn push_outcome(s: &mut String, m: &MessageRecord) {
    match &m.decoded {
        Err(e) => {
            let _ = write!(s, " error: {e}");
        }
        Ok(d) if d.is_unknown() => s.push_str(" unknown"),
        Ok(_) => {}
    }
}

/// The first `n` messages of every channel (for snapshots), without timestamps.
pub fn first_messages(t: &Transcript, n: usize) -> String {
    let mut s = String::new();
    for (sid, c) in t.channels() {
        let _ = writeln!(
            s,
            "{}:{} (session {})",
            c.type_name(),
            c.channel_id,
            session_name(sid)
        );
        for m in c.messages.iter().take(n) {
            let _ = write!(
                s,
                "  {} #{} {}({}) {}",
                m.dir.short(),
                m.serial,
                m.name,
                m.msg_type,
                m.size
            );
            push_outcome(&mut s, m);
            s.push('\n');
        }
    }
    s
}
