//! spice-captures: real-client pcap captures of SPICE sessions (in `corpus/`) and the loader
//! that turns any capture into a typed [`Transcript`].
//!
//! The pipeline, one module per stage:
//! - [`pcap`]: pcap/pcapng files to frames (and a classic pcap writer for synthetic captures);
//! - [`net`]: link, IP and TCP headers to TCP segments;
//! - [`tcp`]: per-connection, per-direction stream reassembly with gaps reported;
//! - [`session`]: SPICE link stage, data framing and decoding, resynchronisation after gaps,
//!   grouping channels into sessions;
//! - [`transcript`]: the result types;
//! - [`frames`]: a session's display replayed into the reference canvas (its final screen).
//!
//! Entry points: [`load`] (a file) and [`parse`] (bytes). Nothing here panics on input or
//! touches the network; captures are read whole into memory.

pub mod frames;
#[doc(hidden)]
pub mod fuzzing;
pub mod net;
pub mod pcap;
pub mod render;
pub mod session;
pub mod tcp;
pub mod transcript;

pub use pcap::Timestamp;
pub use session::message_name;
pub use tcp::Origin;
pub use transcript::{
    Channel, Link, MessageRecord, NotSpice, OtherConnection, Problem, Session, Transcript,
};

use std::path::Path;

/// Why a capture could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a pcap or pcapng file: {0}")]
    NotACapture(String),
}

/// Read and decode a capture file.
pub fn load(path: impl AsRef<Path>) -> Result<Transcript, Error> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&bytes)
}

/// Decode a capture held in memory.
pub fn parse(bytes: &[u8]) -> Result<Transcript, Error> {
    let mut conns = tcp::Connections::new();
    let mut skipped = vec![];
    let capture = pcap::read_frames(bytes, |f| {
        let origin = Origin {
            frame: f.number,
            ts: f.ts,
        };
        match net::decode_frame(f.linktype, f.data) {
            Ok(p) => conns.push(&p, origin),
            Err(net::Skip::NotTcp) => {}
            Err(e) => skipped.push((f.number, format!("{e:?}"))),
        }
    })?;
    let mut channels = vec![];
    let mut other = vec![];
    for c in conns.finish() {
        match session::channel_of(c) {
            session::Classified::Channel(ch) => channels.push(*ch),
            session::Classified::Other(o) => other.push(o),
        }
    }
    Ok(Transcript {
        capture,
        sessions: session::group(channels),
        other_connections: other,
        skipped_frames: skipped,
    })
}
