//! The bodies of spice-proto's fuzz targets (protocol/fuzz), as plain functions of the raw
//! input bytes, so that the fuzz targets and the regression tests (tests/fuzz_regressions.rs,
//! which replays every input of `fuzz/regressions/<target>/`) run exactly the same code.
//!
//! Owns: the meaning of a fuzz input for each target (structured inputs are read from the bytes
//! with [`arbitrary`], exactly as `libfuzzer_sys::fuzz_target!` would). Must not: be used by
//! anything but fuzz targets and tests; a failed invariant here is a panic, on purpose.

use arbitrary::{Arbitrary, Unstructured};

use crate::agent::{BodyOptions, ChunkReader, Reassembler};
use crate::canvas::Canvas;
use crate::codec::{glz, jpeg, lz, lz4, quic, zlib_glz, Limits};
use crate::display::{SurfaceFlags, SurfaceFmt};
use crate::header::{Framer, HeaderKind};
use crate::link::*;
use crate::messages::display::SurfaceCreate;
use crate::messages::*;
use crate::Message;

/// Read `T` from the whole input as `fuzz_target!(|x: T| ..)` does (inputs shorter than `T`'s
/// minimum size are skipped), then run `f` on it.
pub fn with<'a, T: Arbitrary<'a>>(data: &'a [u8], f: impl FnOnce(T)) {
    if data.len() < T::size_hint(0).0 {
        return;
    }
    if let Ok(x) = T::arbitrary_take_rest(Unstructured::new(data)) {
        f(x);
    }
}

/// Replay every regression input under `root` (`<root>/<target>/<file>`, in name order; `.md`
/// notes are skipped) through `run` (a crate's `fuzzing::run`), except the targets `skip`
/// names. Returns how many inputs ran, or the inputs that panicked or name no target of `run`.
/// Every crate's `tests/fuzz_regressions.rs` is this one call.
pub fn replay_regressions(
    root: &std::path::Path,
    skip: &[&str],
    run: impl Fn(&str, &[u8]) -> bool + std::panic::RefUnwindSafe,
) -> Result<usize, Vec<String>> {
    fn sorted(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
    let mut ran = 0;
    let mut failed = Vec::new();
    for dir in sorted(root).into_iter().filter(|d| d.is_dir()) {
        let target = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(target) = target.filter(|t| !skip.contains(&t.as_str())) else {
            continue;
        };
        for file in sorted(&dir) {
            if !file.is_file() || file.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let data = std::fs::read(&file).unwrap_or_default();
            ran += 1;
            match std::panic::catch_unwind(|| run(&target, &data)) {
                Ok(true) => {}
                Ok(false) => failed.push(format!("{}: no fuzz target {target}", file.display())),
                Err(_) => failed.push(file.display().to_string()),
            }
        }
    }
    if failed.is_empty() {
        Ok(ran)
    } else {
        Err(failed)
    }
}

/// Every target's name, as in protocol/fuzz/Cargo.toml.
pub const TARGETS: &[&str] = &[
    "link",
    "framer",
    "main_server",
    "main_client",
    "display_server",
    "display_client",
    "inputs_server",
    "inputs_client",
    "cursor_server",
    "cursor_client",
    "playback_server",
    "playback_client",
    "record_server",
    "record_client",
    "smartcard_server",
    "smartcard_client",
    "spicevmc_server",
    "spicevmc_client",
    "port_server",
    "port_client",
    "agent",
    "quic_decode",
    "lz_decode",
    "glz_decode",
    "lz4_decode",
    "zlib_glz_decode",
    "jpeg_decode",
    "canvas_apply",
];

/// Run target `name` on `data`; `false` if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    let f: fn(&[u8]) = match name {
        "link" => link,
        "framer" => framer,
        "main_server" => main_server,
        "main_client" => main_client,
        "display_server" => display_server,
        "display_client" => display_client,
        "inputs_server" => inputs_server,
        "inputs_client" => inputs_client,
        "cursor_server" => cursor_server,
        "cursor_client" => cursor_client,
        "playback_server" => playback_server,
        "playback_client" => playback_client,
        "record_server" => record_server,
        "record_client" => record_client,
        "smartcard_server" => smartcard_server,
        "smartcard_client" => smartcard_client,
        "spicevmc_server" => spicevmc_server,
        "spicevmc_client" => spicevmc_client,
        "port_server" => port_server,
        "port_client" => port_client,
        "agent" => agent,
        "quic_decode" => quic_decode,
        "lz_decode" => lz_decode,
        "glz_decode" => glz_decode,
        "lz4_decode" => lz4_decode,
        "zlib_glz_decode" => zlib_glz_decode,
        "jpeg_decode" => jpeg_decode,
        "canvas_apply" => canvas_apply,
        _ => return false,
    };
    f(data);
    true
}

/// The link stage: header, link message, reply, auth selection, ticket and result decoders;
/// what decodes re-encodes to bytes that decode to the same value.
pub fn link(data: &[u8]) {
    if let Ok(h) = LinkHeader::decode(data) {
        let _ = h.check();
    }
    if let Ok(m) = LinkMess::decode(data) {
        let mut b = vec![];
        m.encode(&mut b);
        assert_eq!(LinkMess::decode(&b).as_ref(), Ok(&m));
    }
    if let Ok(r) = LinkReply::decode(data) {
        let mut b = vec![];
        r.encode(&mut b);
        assert_eq!(LinkReply::decode(&b).as_ref(), Ok(&r));
    }
    let _ = decode_auth_mechanism(data);
    let _ = EncryptedTicket::decode(data);
    let _ = decode_link_result(data);
}

/// The data-header framer over arbitrary streams cut at arbitrary points. Input: (mini header,
/// cut length, stream).
pub fn framer(data: &[u8]) {
    with(data, |(mini, cut, data): (bool, u8, &[u8])| {
        let kind = if mini {
            HeaderKind::Mini
        } else {
            HeaderKind::Full
        };
        let mut f = Framer::with_limit(kind, 1 << 16);
        for chunk in data.chunks(cut.max(1) as usize) {
            f.push(chunk);
            loop {
                match f.next() {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    });
}

/// Decoding an arbitrary body as `M` never panics, and what decodes re-encodes to bytes that
/// decode to the same message. Input: (message type, body).
fn round_trip<M: Message + PartialEq + std::fmt::Debug>(data: &[u8]) {
    with(data, |(msg_type, body): (u16, &[u8])| {
        if let Ok(m) = M::decode(msg_type, body) {
            let again = m.to_body();
            assert_eq!(M::decode(m.msg_type(), &again).as_ref(), Ok(&m));
        }
    });
}

macro_rules! channel_targets {
    ($($name:ident: $ty:ty),* $(,)?) => {$(
        #[doc = concat!("[`", stringify!($ty), "`] bodies: decode, re-encode, decode again. Input: (u16 type, body).")]
        pub fn $name(data: &[u8]) {
            round_trip::<$ty>(data)
        }
    )*};
}

channel_targets! {
    main_server: MainServer,
    main_client: MainClient,
    display_server: DisplayServer,
    display_client: DisplayClient,
    inputs_server: InputsServer,
    inputs_client: InputsClient,
    cursor_server: CursorServer,
    cursor_client: CursorClient,
    playback_server: PlaybackServer,
    playback_client: PlaybackClient,
    record_server: RecordServer,
    record_client: RecordClient,
    smartcard_server: SmartcardServer,
    smartcard_client: SmartcardClient,
    spicevmc_server: SpicevmcServer,
    spicevmc_client: SpicevmcClient,
    port_server: PortServer,
    port_client: PortClient,
}

/// vdagent: the reassembler (stream and strict rules), body decoding with every option set,
/// and the server-to-guest chunk reader, over arbitrary pieces. Input: (clipboard selection
/// cap, grab serial cap, pieces).
pub fn agent(data: &[u8]) {
    with(
        data,
        |(selection, serial, pieces): (bool, bool, Vec<&[u8]>)| {
            let opts = BodyOptions {
                clipboard_selection: selection,
                clipboard_grab_serial: serial,
            };
            let mut stream = Reassembler::new(1 << 20);
            let mut strict = Reassembler::strict(1 << 20);
            let mut chunks = ChunkReader::new();
            for p in &pieces {
                if let Ok(msgs) = stream.push(p) {
                    for m in msgs {
                        let _ = m.body(opts);
                    }
                }
                let _ = strict.push(p);
                let _ = chunks.push(p);
            }
        },
    );
}

/// The QUIC decoder on arbitrary bytes: an error or an image, never a panic or a huge
/// allocation (sizes are bounded by `Limits`).
pub fn quic_decode(data: &[u8]) {
    let _ = quic::decode(data);
}

/// The LZ decoder on arbitrary bytes.
pub fn lz_decode(data: &[u8]) {
    let _ = lz::decode(data);
}

/// The GLZ decoder on a sequence of arbitrary images sharing one window (references into
/// earlier images, missing or evicted ones included). Input: the images.
pub fn glz_decode(data: &[u8]) {
    with(data, |images: Vec<Vec<u8>>| {
        let mut d = glz::Decoder::new(Limits::default(), 1 << 20);
        for img in images.iter().take(8) {
            let _ = d.decode(img, &[0xff00_0000, 0x00ff_ffff]);
        }
    });
}

/// The LZ4 image decoder: the first four bytes give the descriptor's width and height (u16
/// little endian each), the rest is the payload. An error or an image, never a panic or a
/// huge allocation.
pub fn lz4_decode(data: &[u8]) {
    let [w0, w1, h0, h1, rest @ ..] = data else {
        return;
    };
    let w = u16::from_le_bytes([*w0, *w1]) as u32;
    let h = u16::from_le_bytes([*h0, *h1]) as u32;
    let _ = lz4::decode(rest, w, h, &Limits::default());
}

/// ZLIB_GLZ: a sequence of (glz_data_size, zlib data) images inflated and decoded through one
/// GLZ window. Input: the images.
pub fn zlib_glz_decode(data: &[u8]) {
    with(data, |images: Vec<(u32, Vec<u8>)>| {
        let limits = Limits::default();
        let mut d = glz::Decoder::new(limits, 1 << 20);
        for (size, data) in images.iter().take(8) {
            let _ = zlib_glz::decode(&mut d, data, *size, &[0xff00_0000, 0x00ff_ffff], &limits);
        }
    });
}

/// The JPEG and JPEG_ALPHA decoders on arbitrary bytes (for JPEG_ALPHA the first byte picks
/// TOP_DOWN and the next four are jpeg_size, little endian).
pub fn jpeg_decode(data: &[u8]) {
    let limits = Limits::default();
    let _ = jpeg::decode(data, &limits);
    if let [flags, a, b, c, d, rest @ ..] = data {
        let jpeg_size = u32::from_le_bytes([*a, *b, *c, *d]) % (rest.len() as u32 + 1);
        let _ = jpeg::decode_alpha(rest, jpeg_size, flags & 1 != 0, &limits);
    }
}

/// The reference canvas on up to 32 arbitrary display messages (a 64x48 primary surface,
/// small limits). Input: the messages, read one after the other with `arbitrary`.
pub fn canvas_apply(data: &[u8]) {
    let mut c = Canvas::new(Limits {
        max_pixels: 1 << 16,
    });
    let _ = c.apply(&DisplayServer::SurfaceCreate(SurfaceCreate {
        surface_id: 0,
        width: 64,
        height: 48,
        format: SurfaceFmt::Xrgb32,
        flags: SurfaceFlags::PRIMARY,
    }));
    let mut u = Unstructured::new(data);
    for _ in 0..32 {
        let Ok(m) = DisplayServer::arbitrary(&mut u) else {
            break;
        };
        let _ = c.apply(&m);
    }
}
