//! Golden vectors: message bodies taken from real captures of spice-gtk against the reference
//! servers (Xspice / QEMU with libspice-server), one file per (channel, direction, type).
//!
//! Files are `tests/golden/{channel}-{dir}-{type}-{name}.bin`; `tests/golden/SOURCES.md` says
//! which capture, session and frame each came from (extracted with
//! `cargo xtask transcript FILE --dump-bodies DIR`). For each vector:
//! - it decodes on its channel and direction to the message its file name says (not `Unknown`);
//! - re-encoding gives the reference peer's bytes exactly (our marshaller layout is theirs);
//! - the decoded value matches its insta snapshot (`cargo insta review` after a deliberate change).

use std::collections::BTreeSet;
use std::path::Path;

use spice_proto::{decode, ChannelType, Direction};

/// The channels the reference stack here can show, each of which must have a vector.
const REQUIRED_CHANNELS: &[&str] = &[
    "main",
    "display",
    "inputs",
    "cursor",
    "playback",
    "record",
    "usbredir",
    "port",
    "webdav",
    "smartcard",
];

struct Vector {
    channel: ChannelType,
    dir: Direction,
    msg_type: u16,
    name: String,
    body: Vec<u8>,
}

fn channel_from_name(s: &str) -> Option<ChannelType> {
    (1..=11u8)
        .map(ChannelType::from_raw)
        .find(|c| c.name() == s)
}

fn parse(path: &Path) -> Vector {
    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
    let mut parts = stem.splitn(4, '-');
    let (Some(ch), Some(dir), Some(ty), Some(name)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("{stem}: expected CHANNEL-DIR-TYPE-NAME.bin");
    };
    Vector {
        channel: channel_from_name(ch).unwrap_or_else(|| panic!("{stem}: unknown channel {ch}")),
        dir: match dir {
            "s2c" => Direction::ServerToClient,
            "c2s" => Direction::ClientToServer,
            other => panic!("{stem}: bad direction {other}"),
        },
        msg_type: ty
            .parse()
            .unwrap_or_else(|_| panic!("{stem}: bad type {ty}")),
        name: name.to_string(),
        body: std::fs::read(path).unwrap(),
    }
}

fn golden_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn vectors() -> Vec<(std::path::PathBuf, Vector)> {
    let mut v: Vec<_> = std::fs::read_dir(golden_dir())
        .expect("tests/golden exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    v.sort();
    v.into_iter().map(|p| (p.clone(), parse(&p))).collect()
}

#[test]
fn golden_vectors_decode_and_re_encode_byte_exact() {
    insta::glob!("golden/*.bin", |path| {
        let v = parse(path);
        let m = decode(v.channel, v.dir, v.msg_type, &v.body)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(m.name(), v.name, "{}", path.display());
        assert!(!m.is_unknown(), "{}: decoded as unknown", path.display());
        assert_eq!(
            m.to_body(),
            v.body,
            "{}: re-encoding differs from the reference bytes",
            path.display()
        );
        insta::assert_debug_snapshot!(m);
    });
}

#[test]
fn every_channel_the_reference_stack_shows_has_a_golden_vector() {
    let have: BTreeSet<&str> = vectors().iter().map(|(_, v)| v.channel.name()).collect();
    let missing: Vec<_> = REQUIRED_CHANNELS
        .iter()
        .filter(|c| !have.contains(*c))
        .collect();
    assert!(
        missing.is_empty(),
        "channels without a golden vector: {missing:?}"
    );
    let sources = std::fs::read_to_string(golden_dir().join("SOURCES.md")).unwrap();
    for (path, _) in vectors() {
        let file = path.file_name().unwrap().to_string_lossy();
        assert!(
            sources.contains(&*file),
            "SOURCES.md does not say where {file} came from"
        );
    }
}
