//! The data-header framer over arbitrary streams cut at arbitrary points.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spice_proto::header::{Framer, HeaderKind};

fuzz_target!(|input: (bool, u8, &[u8])| {
    let (mini, cut, data) = input;
    let kind = if mini { HeaderKind::Mini } else { HeaderKind::Full };
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
