//! vdagent: the reassembler (stream and strict rules), body decoding with every option set, and
//! the server-to-guest chunk reader, over arbitrary pieces.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spice_proto::agent::{BodyOptions, ChunkReader, Reassembler};

fuzz_target!(|input: (bool, bool, Vec<&[u8]>)| {
    let (selection, serial, pieces) = input;
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
});
