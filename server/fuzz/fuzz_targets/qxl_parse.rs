//! QXL commands over arbitrary guest memory: one 64 KiB slot filled with the input, commands
//! of every type pointing anywhere in it (and outside).
#![no_main]
use libfuzzer_sys::fuzz_target;
use spice_proto::qxl::QxlCommand;
use spice_server::qxl::{parse, Budget, MemSlots, Reader};
use spice_server::testing::Ram;

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (head, body) = data.split_at(16);
    let mut ram = Ram::new(0x10000, 1 << 16);
    let n = body.len().min(1 << 16);
    ram.bytes[..n].copy_from_slice(&body[..n]);
    let mut slots = MemSlots::new(8, 8);
    slots.add(ram.slot(1, 1));
    for c in head.chunks_exact(4) {
        let off = u16::from_le_bytes([c[0], c[1]]) as u64;
        let cmd = QxlCommand {
            data: slots.encode(1, c[2] & 1, 0x10000 + off),
            cmd_type: (c[3] % 7) as u32,
            padding: 0,
        };
        let mut r = Reader {
            slots: &slots,
            mem: &ram,
            group: 0,
            budget: Budget { bytes: 1 << 20 },
        };
        let _ = parse(&mut r, &cmd, (c[3] >> 7) as u32);
    }
});
