use super::*;
use crate::testing::Ram;

const SLOT: u32 = 1;
const GEN: u8 = 3;

fn setup() -> (MemSlots, Ram) {
    let mut slots = MemSlots::new(8, 8);
    let ram = Ram::new(0x1_0000, 1 << 20);
    slots.add(ram.slot(SLOT, GEN));
    (slots, ram)
}

fn reader<'a>(slots: &'a MemSlots, ram: &'a Ram) -> Reader<'a> {
    Reader {
        slots,
        mem: ram,
        group: 0,
        budget: Budget {
            bytes: DEFAULT_COMMAND_BYTES,
        },
    }
}

fn phys(slots: &MemSlots, addr: u64) -> u64 {
    slots.encode(SLOT, GEN, addr)
}

/// A chunked 32-bit bitmap image of `w`x`h` pixels of `color`; returns its guest address.
fn put_bitmap(slots: &MemSlots, ram: &mut Ram, w: u32, h: u32, color: u32, cache: bool) -> u64 {
    let pixels: Vec<u8> = (0..w * h).flat_map(|_| color.to_le_bytes()).collect();
    let mut chunk = QxlDataChunk {
        data_size: pixels.len() as u32,
        prev_chunk: 0,
        next_chunk: 0,
    }
    .to_bytes();
    chunk.extend(&pixels);
    let data = ram.put(&chunk).unwrap();
    let img = QxlImage {
        descriptor: QxlImageDescriptor {
            id: 0x77,
            image_type: 0,
            flags: if cache { qxl::image_flags::CACHE } else { 0 },
            width: w,
            height: h,
        },
        u: Raw::from_slice(
            &QxlBitmap {
                format: 8,
                flags: qxl::image_flags::BITMAP_TOP_DOWN,
                x: w,
                y: h,
                stride: w * 4,
                palette: 0,
                data: phys(slots, data),
            }
            .to_bytes(),
        ),
    };
    phys(slots, ram.put(&img.to_bytes()).unwrap())
}

fn drawable(slots: &MemSlots, ram: &mut Ram, d: QxlDrawable) -> QxlCommand {
    QxlCommand {
        data: phys(slots, ram.put(&d.to_bytes()).unwrap()),
        cmd_type: qxl::cmd::DRAW,
        padding: 0,
    }
}

#[test]
fn translate_checks_slot_generation_and_range() {
    let (slots, _ram) = setup();
    let ok = slots.encode(SLOT, GEN, 0x1_0000);
    assert_eq!(slots.translate(0, ok, 16), Ok(0x1_0000));
    assert!(matches!(
        slots.translate(0, slots.encode(2, GEN, 0x1_0000), 1),
        Err(QxlError::BadSlot { .. })
    ));
    assert!(matches!(
        slots.translate(0, slots.encode(SLOT, GEN + 1, 0x1_0000), 1),
        Err(QxlError::BadGeneration { .. })
    ));
    assert!(matches!(
        slots.translate(0, slots.encode(SLOT, GEN, 0x1_0000 + (1 << 20) - 4), 8),
        Err(QxlError::OutOfRange { .. })
    ));
    assert!(matches!(
        slots.translate(0, slots.encode(SLOT, GEN, 0xfff0), 32),
        Err(QxlError::OutOfRange { .. })
    ));
    // Overflow of offset + length.
    assert!(slots.translate(0, ok, u64::MAX).is_err());
    // Another group.
    assert!(slots.translate(1, ok, 1).is_err());
}

#[test]
fn a_copy_drawable_parses_into_draw_copy() {
    let (slots, mut ram) = setup();
    let img = put_bitmap(&slots, &mut ram, 3, 2, 0x00ff_0000, true);
    let cmd = drawable(
        &slots,
        &mut ram,
        QxlDrawable {
            release_info: 42,
            surface_id: 0,
            draw_type: qxl::draw::COPY,
            bbox: QxlRect::from_xywh(10, 20, 3, 2),
            surfaces_dest: [-1; 3],
            u: Raw::from_slice(
                &QxlCopy {
                    src_bitmap: img,
                    src_area: QxlRect::from_xywh(0, 0, 3, 2),
                    rop_descriptor: Ropd::OP_PUT.0,
                    scale_mode: 1,
                    mask: QxlQMask::default(),
                }
                .to_bytes(),
            ),
            ..Default::default()
        },
    );
    let c = parse(&mut reader(&slots, &ram), &cmd, 0).unwrap();
    let Command::Draw {
        release,
        surface_id,
        msg: DisplayServer::DrawCopy(d),
    } = c
    else {
        panic!("{c:?}")
    };
    assert_eq!((release, surface_id), (42, 0));
    assert_eq!(d.base.bbox, Rect::from_xywh(10, 20, 3, 2));
    let img = d.data.src_bitmap.unwrap();
    assert_eq!(img.id, 0x77);
    assert!(img.flags.contains(ImageFlags::CACHE_ME));
    let ImageData::Bitmap(b) = img.data else {
        panic!()
    };
    assert_eq!((b.x, b.y, b.stride), (3, 2, 12));
    assert_eq!(&b.data[..4], &[0, 0, 0xff, 0]);
}

#[test]
fn hostile_drawables_are_rejected() {
    let (slots, mut ram) = setup();
    // A circular chunk list.
    let chunk_at = ram.alloc(QxlDataChunk::SIZE + 4).unwrap();
    let looped = QxlDataChunk {
        data_size: 4,
        prev_chunk: 0,
        next_chunk: phys(&slots, chunk_at),
    };
    ram.write(chunk_at, &looped.to_bytes());
    let img = QxlImage {
        descriptor: QxlImageDescriptor {
            id: 1,
            image_type: 0,
            flags: 0,
            width: 1000,
            height: 1000,
        },
        u: Raw::from_slice(
            &QxlBitmap {
                format: 8,
                flags: 0,
                x: 1000,
                y: 1000,
                stride: 4000,
                palette: 0,
                data: phys(&slots, chunk_at),
            }
            .to_bytes(),
        ),
    };
    let img_at = phys(&slots, ram.put(&img.to_bytes()).unwrap());
    let copy = |src| QxlDrawable {
        draw_type: qxl::draw::COPY,
        bbox: QxlRect::from_xywh(0, 0, 10, 10),
        u: Raw::from_slice(
            &QxlCopy {
                src_bitmap: src,
                src_area: QxlRect::from_xywh(0, 0, 10, 10),
                rop_descriptor: 8,
                scale_mode: 1,
                mask: QxlQMask::default(),
            }
            .to_bytes(),
        ),
        ..Default::default()
    };
    let cmd = drawable(&slots, &mut ram, copy(img_at));
    let e = parse(&mut reader(&slots, &ram), &cmd, 0).unwrap_err();
    assert!(
        matches!(e, QxlError::TooManyChunks(_) | QxlError::Inconsistent(_)),
        "{e}"
    );
    // An image pointer outside every slot.
    let cmd = drawable(&slots, &mut ram, copy(slots.encode(SLOT, GEN, 0x9999_9999)));
    assert!(matches!(
        parse(&mut reader(&slots, &ram), &cmd, 0),
        Err(QxlError::OutOfRange { .. })
    ));
    // A stride shorter than a row.
    let mut bad = img;
    bad.u = Raw::from_slice(
        &QxlBitmap {
            format: 8,
            flags: qxl::image_flags::BITMAP_DIRECT,
            x: 4,
            y: 1,
            stride: 8,
            palette: 0,
            data: phys(&slots, chunk_at),
        }
        .to_bytes(),
    );
    bad.descriptor.width = 4;
    bad.descriptor.height = 1;
    let at = phys(&slots, ram.put(&bad.to_bytes()).unwrap());
    let cmd = drawable(&slots, &mut ram, copy(at));
    assert_eq!(
        parse(&mut reader(&slots, &ram), &cmd, 0).unwrap_err(),
        QxlError::Inconsistent("bitmap stride")
    );
    // A huge bitmap is refused by the budget before anything is allocated.
    let mut huge = img;
    huge.u = Raw::from_slice(
        &QxlBitmap {
            format: 8,
            flags: qxl::image_flags::BITMAP_DIRECT,
            x: 60_000,
            y: 60_000,
            stride: 240_000,
            palette: 0,
            data: phys(&slots, chunk_at),
        }
        .to_bytes(),
    );
    huge.descriptor.width = 60_000;
    huge.descriptor.height = 60_000;
    let at = phys(&slots, ram.put(&huge.to_bytes()).unwrap());
    let cmd = drawable(&slots, &mut ram, copy(at));
    assert!(matches!(
        parse(&mut reader(&slots, &ram), &cmd, 0),
        Err(QxlError::TooMuchData(_))
    ));
    // Unknown command and drawable types.
    let c = QxlCommand {
        data: cmd.data,
        cmd_type: 99,
        padding: 0,
    };
    assert!(parse(&mut reader(&slots, &ram), &c, 0).is_err());
}

#[test]
fn clip_rects_and_cursor_shapes() {
    let (slots, mut ram) = setup();
    let rects = [
        QxlRect::from_xywh(0, 0, 1, 1),
        QxlRect::from_xywh(2, 2, 1, 1),
    ];
    let mut b = QxlClipRects { num_rects: 2 }.to_bytes();
    b.extend(
        QxlDataChunk {
            data_size: 32,
            prev_chunk: 0,
            next_chunk: 0,
        }
        .to_bytes(),
    );
    for r in &rects {
        b.extend(r.to_bytes());
    }
    let clip_at = phys(&slots, ram.put(&b).unwrap());
    let d = QxlDrawable {
        draw_type: qxl::draw::FILL,
        bbox: QxlRect::from_xywh(0, 0, 4, 4),
        clip: QxlClip {
            clip_type: 1,
            data: clip_at,
        },
        u: Raw::from_slice(
            &QxlFill {
                brush: QxlBrush::solid(0xff),
                rop_descriptor: 8,
                mask: QxlQMask::default(),
            }
            .to_bytes(),
        ),
        ..Default::default()
    };
    let cmd = drawable(&slots, &mut ram, d);
    let Command::Draw {
        msg: DisplayServer::DrawFill(f),
        ..
    } = parse(&mut reader(&slots, &ram), &cmd, 0).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        f.base.clip,
        Clip::Rects(vec![
            Rect::from_xywh(0, 0, 1, 1),
            Rect::from_xywh(2, 2, 1, 1)
        ])
    );
    // A cursor set with a 2x2 alpha shape.
    let mut shape = QxlCursor {
        header: QxlCursorHeader {
            unique: 5,
            cursor_type: 0,
            width: 2,
            height: 2,
            hot_spot_x: 1,
            hot_spot_y: 1,
        },
        data_size: 16,
    }
    .to_bytes();
    shape.extend(
        QxlDataChunk {
            data_size: 16,
            prev_chunk: 0,
            next_chunk: 0,
        }
        .to_bytes(),
    );
    shape.extend([0xffu8; 16]);
    let shape_at = phys(&slots, ram.put(&shape).unwrap());
    let mut u = vec![];
    u.extend(3i16.to_le_bytes());
    u.extend(4i16.to_le_bytes());
    u.push(1);
    u.extend(shape_at.to_le_bytes());
    let c = QxlCursorCmd {
        release_info: 9,
        cmd_type: qxl::cursor_cmd::SET,
        u: Raw::from_slice(&u),
        device_data: Raw::default(),
    };
    let cmd = QxlCommand {
        data: phys(&slots, ram.put(&c.to_bytes()).unwrap()),
        cmd_type: qxl::cmd::CURSOR,
        padding: 0,
    };
    let Command::Cursor {
        release: 9,
        cmd:
            CursorCommand::Set {
                position,
                visible: true,
                shape: Some(s),
            },
    } = parse(&mut reader(&slots, &ram), &cmd, 0).unwrap()
    else {
        panic!()
    };
    assert_eq!((position.x, position.y), (3, 4));
    assert_eq!((s.header.unique, s.data.len()), (5, 16));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Random guest memory and random commands: parsing returns, never panics, and never
        /// copies more than the budget.
        #[test]
        fn random_guest_memory_never_panics(
            mem in proptest::collection::vec(any::<u8>(), 4096),
            cmds in proptest::collection::vec((any::<u16>(), 0u32..7, any::<u32>()), 1..8),
        ) {
            let mut slots = MemSlots::new(8, 8);
            let mut ram = Ram::new(0x1000, 4096);
            ram.bytes.copy_from_slice(&mem);
            slots.add(ram.slot(SLOT, GEN));
            for (off, ty, flags) in cmds {
                let c = QxlCommand {
                    data: slots.encode(SLOT, GEN, 0x1000 + off as u64 % 4096),
                    cmd_type: ty,
                    padding: 0,
                };
                let mut r = Reader {
                    slots: &slots,
                    mem: &ram,
                    group: 0,
                    budget: Budget { bytes: 1 << 16 },
                };
                let _ = parse(&mut r, &c, flags & 1);
                prop_assert!(r.budget.bytes <= 1 << 16);
            }
        }
    }
}

#[test]
fn generations_wider_than_a_byte_are_compared_in_full() {
    // 12 generation bits: a generation that agrees with the slot's only in its low byte is a
    // stale address (it used to be truncated to u8 and accepted).
    let mut slots = MemSlots::new(8, 12);
    let ram = Ram::new(0x1_0000, 4096);
    slots.add(ram.slot(SLOT, GEN));
    let id_shift = 64 - 8;
    let gen_shift = id_shift - 12;
    let addr = |generation: u64| ((SLOT as u64) << id_shift) | (generation << gen_shift) | 0x1_0000;
    assert_eq!(slots.translate(0, addr(GEN as u64), 4), Ok(0x1_0000));
    assert!(matches!(
        slots.translate(0, addr(0x100 | GEN as u64), 4),
        Err(QxlError::BadGeneration {
            got: 0x103,
            want: 3,
            ..
        })
    ));
}

/// A cursor `set` command with a shape of `ty`, `w`x`h` and `data_len` bytes of data (in one
/// chunk) whose header claims `data_size`.
fn cursor_set(
    slots: &MemSlots,
    ram: &mut Ram,
    ty: u16,
    (w, h): (u16, u16),
    data_size: u32,
    data_len: usize,
) -> QxlCommand {
    let mut shape = QxlCursor {
        header: QxlCursorHeader {
            unique: 0,
            cursor_type: ty,
            width: w,
            height: h,
            hot_spot_x: 0,
            hot_spot_y: 0,
        },
        data_size,
    }
    .to_bytes();
    shape.extend(
        QxlDataChunk {
            data_size: data_len as u32,
            prev_chunk: 0,
            next_chunk: 0,
        }
        .to_bytes(),
    );
    shape.extend(vec![0x5au8; data_len]);
    let shape_at = phys(slots, ram.put(&shape).unwrap());
    let mut u = vec![0u8; 5];
    u.extend(shape_at.to_le_bytes());
    let c = QxlCursorCmd {
        release_info: 1,
        cmd_type: qxl::cursor_cmd::SET,
        u: Raw::from_slice(&u),
        device_data: Raw::default(),
    };
    QxlCommand {
        data: phys(slots, ram.put(&c.to_bytes()).unwrap()),
        cmd_type: qxl::cmd::CURSOR,
        padding: 0,
    }
}

#[test]
fn cursor_data_must_be_exactly_what_the_shape_needs() {
    let (slots, mut ram) = setup();
    // A 2x2 alpha shape carrying 512 KiB: within the command budget, but 32 000 times what
    // the shape needs; every client would be sent all of it.
    let cmd = cursor_set(&slots, &mut ram, 0, (2, 2), 512 << 10, 512 << 10);
    assert!(matches!(
        parse(&mut reader(&slots, &ram), &cmd, 0),
        Err(QxlError::CursorDataSize {
            got: 524_288,
            want: 16,
            ..
        })
    ));
    // Too little is refused too (clients read what the shape needs).
    let cmd = cursor_set(&slots, &mut ram, 0, (4, 4), 32, 32);
    assert!(matches!(
        parse(&mut reader(&slots, &ram), &cmd, 0),
        Err(QxlError::CursorDataSize { want: 64, .. })
    ));
    // An unknown cursor type.
    let cmd = cursor_set(&slots, &mut ram, 9, (4, 4), 64, 64);
    assert!(matches!(
        parse(&mut reader(&slots, &ram), &cmd, 0),
        Err(QxlError::BadValue {
            what: "cursor type",
            ..
        })
    ));
    // Exact sizes of each type parse: alpha, mono (AND and XOR masks), 4-bit with palette.
    for (ty, (w, h), n) in [
        (0u16, (3u16, 5u16), 60usize),
        (1, (9, 2), 8),
        (2, (3, 2), 4 + 64 + 2),
    ] {
        let cmd = cursor_set(&slots, &mut ram, ty, (w, h), n as u32, n);
        let Ok(Command::Cursor {
            cmd: CursorCommand::Set { shape: Some(s), .. },
            ..
        }) = parse(&mut reader(&slots, &ram), &cmd, 0)
        else {
            panic!("type {ty} {w}x{h} with {n} bytes")
        };
        assert_eq!(s.data.len(), n);
    }
}
