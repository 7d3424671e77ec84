//! A malicious guest against the display and cursor path: a QXL device whose guest memory and
//! rings are handcrafted here. Whatever the guest does, nothing panics, nothing loops, and what
//! the server holds and queues stays within the [`Budgets`] it was given.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use spice_proto::display::{ImageData, ImageFlags};
use spice_proto::header::{frame, Framer, HeaderKind};
use spice_proto::messages::base::BaseClient;
use spice_proto::messages::display::DisplayInit;
use spice_proto::messages::DisplayServer;
use spice_proto::messages::{ChannelType, DisplayClient, Message};
use spice_proto::qxl::{self, *};
use spice_server::link::Ticketing;
use spice_server::qxl::MemSlots;
use spice_server::testing::{drain, link, link_with_rest, Linked, Ram};
use spice_server::vdi::{GuestMemory, QxlCommandExt, QxlDevice, QxlEvent, QxlInitInfo};
use spice_server::{Budgets, Config, ConnId, ImageCompression, Server};

const SLOT: u32 = 1;
const GEN: u8 = 1;
const RAM_BASE: u64 = 0x10_0000;

/// Guest memory being written by the test, and the addresses it hands the device.
struct Guest {
    ram: Ram,
    slots: MemSlots,
}

impl Guest {
    fn new(len: usize) -> Guest {
        Guest {
            ram: Ram::new(RAM_BASE, len),
            slots: MemSlots::new(8, 8),
        }
    }

    /// Put `bytes` in guest memory; their guest (QXL physical) address.
    fn put(&mut self, bytes: &[u8]) -> u64 {
        let at = self.ram.put(bytes).expect("guest RAM full");
        self.slots.encode(SLOT, GEN, at)
    }

    fn drawable(&mut self, d: QxlDrawable) -> QxlCommandExt {
        let data = self.put(&d.to_bytes());
        ext(data, qxl::cmd::DRAW)
    }

    /// A solid fill of `bbox` (as the guest gives it: not checked against anything).
    fn fill(&mut self, bbox: QxlRect) -> QxlCommandExt {
        self.drawable(QxlDrawable {
            release_info: 1,
            draw_type: qxl::draw::FILL,
            bbox,
            surfaces_dest: [-1; 3],
            u: Raw::from_slice(
                &QxlFill {
                    brush: QxlBrush::solid(0x00ff_00ff),
                    rop_descriptor: 8,
                    mask: QxlQMask::default(),
                }
                .to_bytes(),
            ),
            ..Default::default()
        })
    }

    /// A top-down 32-bit bitmap of `w`x`h` in one chunk; its address.
    fn bitmap(&mut self, w: u32, h: u32) -> u64 {
        self.image(w, h, 0x1234, false)
    }

    /// [`Guest::bitmap`] with image id `id`, for the client's cache if `cache`.
    fn image(&mut self, w: u32, h: u32, id: u64, cache: bool) -> u64 {
        let mut chunk = QxlDataChunk {
            data_size: w * h * 4,
            prev_chunk: 0,
            next_chunk: 0,
        }
        .to_bytes();
        chunk.extend((0..w * h).flat_map(|i| (i.wrapping_mul(2_654_435_761)).to_le_bytes()));
        let data = self.put(&chunk);
        let img = QxlImage {
            descriptor: QxlImageDescriptor {
                id,
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
                    data,
                }
                .to_bytes(),
            ),
        };
        self.put(&img.to_bytes())
    }

    /// A copy of the whole bitmap at `img` (`w`x`h`) to the top left.
    fn copy(&mut self, img: u64, w: i32, h: i32) -> QxlCommandExt {
        self.copy_to(img, 0, 0, w, h)
    }

    /// A copy of the whole bitmap at `img` (`w`x`h`) to (`x`, `y`).
    fn copy_to(&mut self, img: u64, x: i32, y: i32, w: i32, h: i32) -> QxlCommandExt {
        self.drawable(QxlDrawable {
            release_info: 2,
            draw_type: qxl::draw::COPY,
            bbox: QxlRect::from_xywh(x, y, w, h),
            surfaces_dest: [-1; 3],
            u: Raw::from_slice(
                &QxlCopy {
                    src_bitmap: img,
                    src_area: QxlRect::from_xywh(0, 0, w, h),
                    rop_descriptor: 8,
                    scale_mode: 1,
                    mask: QxlQMask::default(),
                }
                .to_bytes(),
            ),
            ..Default::default()
        })
    }

    /// A cursor `set` with an alpha shape of `w`x`h` (exactly the data it needs).
    fn cursor_set(&mut self, w: u16, h: u16, unique: u64) -> QxlCommandExt {
        let n = w as u32 * h as u32 * 4;
        let mut shape = QxlCursor {
            header: QxlCursorHeader {
                unique,
                cursor_type: 0,
                width: w,
                height: h,
                hot_spot_x: 0,
                hot_spot_y: 0,
            },
            data_size: n,
        }
        .to_bytes();
        shape.extend(
            QxlDataChunk {
                data_size: n,
                prev_chunk: 0,
                next_chunk: 0,
            }
            .to_bytes(),
        );
        shape.extend(vec![0x80u8; n as usize]);
        let shape_at = self.put(&shape);
        let mut u = vec![1, 0, 1, 0, 1];
        u.extend(shape_at.to_le_bytes());
        let c = QxlCursorCmd {
            release_info: 3,
            cmd_type: qxl::cursor_cmd::SET,
            u: Raw::from_slice(&u),
            device_data: Raw::default(),
        };
        let data = self.put(&c.to_bytes());
        ext(data, qxl::cmd::CURSOR)
    }
}

fn ext(data: u64, cmd_type: u32) -> QxlCommandExt {
    QxlCommandExt {
        cmd: QxlCommand {
            data,
            cmd_type,
            padding: 0,
        },
        group_id: 0,
        flags: 0,
    }
}

/// The rings the test fills while the device is in the server.
#[derive(Default, Clone)]
struct Rings {
    cmds: Rc<RefCell<VecDeque<QxlCommandExt>>>,
    cursor: Rc<RefCell<VecDeque<QxlCommandExt>>>,
    released: Rc<Cell<u64>>,
}

impl Rings {
    fn push(&self, c: QxlCommandExt, n: usize) {
        self.cmds.borrow_mut().extend(std::iter::repeat(c).take(n));
    }

    fn push_cursor(&self, c: QxlCommandExt, n: usize) {
        self.cursor
            .borrow_mut()
            .extend(std::iter::repeat(c).take(n));
    }
}

/// The hostile device: a primary surface of `width`x`height`, the guest's memory, the rings.
struct HostileQxl {
    ram: Ram,
    width: u32,
    height: u32,
    started: bool,
    rings: Rings,
}

impl QxlDevice for HostileQxl {
    fn init_info(&self) -> QxlInitInfo {
        QxlInitInfo {
            num_memslots_groups: 1,
            num_memslots: 8,
            memslot_gen_bits: 8,
            memslot_id_bits: 8,
            n_surfaces: 16,
        }
    }

    fn memory(&self) -> &dyn GuestMemory {
        &self.ram
    }

    fn run(&mut self, _now_ms: u64) -> Vec<QxlEvent> {
        if std::mem::replace(&mut self.started, true) {
            return Vec::new();
        }
        vec![
            QxlEvent::AddMemSlot(self.ram.slot(SLOT, GEN)),
            QxlEvent::CreatePrimary(PrimarySurface {
                width: self.width,
                height: self.height,
                stride: (self.width * 4) as i32,
                format: 32,
                mouse_mode: 0,
                mem: 0,
            }),
        ]
    }

    fn get_command(&mut self) -> Option<QxlCommandExt> {
        self.rings.cmds.borrow_mut().pop_front()
    }

    fn get_cursor_command(&mut self) -> Option<QxlCommandExt> {
        self.rings.cursor.borrow_mut().pop_front()
    }

    fn release(&mut self, _id: u64, _group_id: u32) {
        self.rings.released.set(self.rings.released.get() + 1);
    }

    fn next_wakeup(&self) -> Option<u64> {
        None
    }
}

fn server(budgets: Budgets, compression: ImageCompression) -> Server {
    let mut s = Server::new(Config {
        ticketing: Ticketing::Password {
            password: "pw".into(),
            expires_at_ms: None,
        },
        fresh_key_per_link: false,
        image_compression: compression,
        budgets,
        ..Config::default()
    });
    s.set_link_key(spice_server::testing::fixed_key());
    s
}

/// Attach the device (its guest memory as written so far) and let it create its primary.
fn attach(s: &mut Server, g: Guest, (width, height): (u32, u32)) -> Rings {
    let rings = Rings::default();
    s.display().set_qxl(Box::new(HostileQxl {
        ram: g.ram,
        width,
        height,
        started: false,
        rings: rings.clone(),
    }));
    s.handle_timeout(1);
    rings
}

fn send(s: &mut Server, l: &Linked, m: &DisplayClient, now: u64) {
    let mut b = Vec::new();
    frame(HeaderKind::Mini, 0, m.msg_type(), &m.to_body(), &mut b);
    s.handle_bytes(l.conn, &b, now);
}

/// A client whose display channel sent `init` (asking for `glz_window` pixels).
fn display_client(s: &mut Server, now: u64, glz_window: i32) -> (Linked, Linked) {
    let (main, session) = link(s, ChannelType::Main, 0, "pw", now).unwrap();
    let (d, _, _) = link_with_rest(s, ChannelType::Display, session.unwrap(), "pw", now).unwrap();
    let init = DisplayClient::Init(DisplayInit {
        pixmap_cache_id: 1,
        pixmap_cache_size: 20 << 20,
        glz_dictionary_id: 1,
        glz_dictionary_window_size: glz_window,
    });
    send(s, &d, &init, now);
    (main, d)
}

/// Finding 1: a client that fell behind turns its unsent drawables into dirty regions. A
/// guest bbox of (0,0)-(1,i32::MAX) used to enter the region unclamped: the band arithmetic
/// overflowed (a panic in debug, an endless loop in release). Every rectangle is now clamped
/// to the surface on its way in, and bands are taken in O(1) each.
#[test]
fn a_lagging_client_and_a_guest_bbox_to_i32_max_neither_panic_nor_loop() {
    let mut g = Guest::new(1 << 20);
    // Fills of one-pixel columns reaching down to i32::MAX, each starting lower than the
    // one before in its column: none covers an earlier one, so none is dropped as hidden,
    // and the client falls behind.
    let tall: Vec<_> = (0..3)
        .flat_map(|top| (0..64).map(move |x| (top, x)))
        .map(|(top, x)| {
            g.fill(QxlRect {
                top,
                left: x,
                bottom: i32::MAX,
                right: x + 1,
            })
        })
        .collect();
    let wide = g.fill(QxlRect {
        top: i32::MIN,
        left: i32::MIN,
        bottom: i32::MAX,
        right: i32::MAX,
    });
    let mut s = server(Budgets::default(), ImageCompression::Off);
    let rings = attach(&mut s, g, (64, 64));
    let (_main, d) = display_client(&mut s, 2, 1 << 20);
    // The first screen goes out; the client reads it but never acks: the ack window closes
    // after a few dozen messages, and the rest of the burst falls behind.
    drain(&mut s, d.conn);
    for &t in &tall {
        rings.push(t, 1);
    }
    rings.push(wide, 1);
    s.handle_timeout(3);
    drain(&mut s, d.conn);
    // Now the client acks: the region is sent in bands of the 64x64 surface, not of 2^31 rows.
    for t in 0..8 {
        send(&mut s, &d, &DisplayClient::Base(BaseClient::Ack), 4 + t);
        s.handle_timeout(4 + t);
        let out = drain(&mut s, d.conn);
        assert!(
            out.len() < 1 << 20,
            "{} bytes for a 64x64 surface",
            out.len()
        );
    }
    assert!(!s.is_finished(d.conn));
    assert_eq!(s.display().qxl_stats().unwrap().rejected, 0);
}

/// Finding 2: a cursor `set` of a 512x512 shape (1 MiB, exactly what it needs) 64 times in
/// one tick used to queue the shape 64 times on every cursor channel (64 MiB over a 4 MiB
/// cap). The channel now sends only while `can_send`, and the current state once for all the
/// `set`s it missed.
#[test]
fn cursor_sets_are_coalesced_and_respect_the_output_cap() {
    let mut g = Guest::new(4 << 20);
    let big = g.cursor_set(512, 512, 0);
    let mut s = server(Budgets::default(), ImageCompression::Off);
    let rings = attach(&mut s, g, (64, 64));
    let (main, session) = link(&mut s, ChannelType::Main, 0, "pw", 2).unwrap();
    let (c, _, _) = link_with_rest(&mut s, ChannelType::Cursor, session.unwrap(), "pw", 2).unwrap();
    drain(&mut s, c.conn);
    rings.push_cursor(big, 64);
    s.handle_timeout(3);
    let queued = s.queued_bytes(c.conn);
    assert!(
        queued < (1 << 20) + 4096,
        "{queued} bytes queued on the cursor channel"
    );
    assert!(!s.is_finished(c.conn));
    assert!(!s.is_finished(main.conn));
    // A client that does not read: more sets never push its queue past the cap and one shape.
    for t in 0..8 {
        rings.push_cursor(big, 64);
        s.handle_timeout(4 + t);
        let q = s.queued_bytes(c.conn);
        assert!(q <= (4 << 20) + (1 << 20) + 4096, "{q} bytes queued");
    }
    assert!(!s.is_finished(c.conn));
    assert_eq!(rings.released.get(), 64 * 9);
}

/// Finding 3, no client: 256 drawables that all copy one 1 MiB guest bitmap used to leave
/// 256 MiB held by the display log. With no display client the log keeps no drawable.
#[test]
fn with_no_client_the_display_keeps_no_drawable() {
    let mut g = Guest::new(4 << 20);
    let img = g.bitmap(512, 512);
    let copy = g.copy(img, 512, 512);
    let mut s = server(Budgets::default(), ImageCompression::Off);
    let rings = attach(&mut s, g, (512, 512));
    rings.push(copy, 256);
    for t in 0..8 {
        s.handle_timeout(2 + t);
        assert_eq!(s.display().held_bytes(), 0);
    }
    assert_eq!(s.display().qxl_stats().unwrap().draws, 256);
}

/// Finding 3, a client that does not read: the log holds at most `display_log_bytes` of
/// drawables, the client at most `display_pending_bytes` unsent, and one tick copies at most
/// `qxl_tick_bytes` (plus the one command that crosses it) out of guest memory.
#[test]
fn drawables_held_and_copied_stay_within_their_byte_budgets() {
    let budgets = Budgets {
        display_log_bytes: 8 << 20,
        display_pending_bytes: 4 << 20,
        qxl_tick_bytes: 16 << 20,
        ..Budgets::default()
    };
    let mut g = Guest::new(4 << 20);
    let img = g.bitmap(512, 512);
    let copy = g.copy(img, 512, 512);
    let mut s = server(budgets.clone(), ImageCompression::Off);
    let rings = attach(&mut s, g, (512, 512));
    let (_main, d) = display_client(&mut s, 2, 1 << 20);
    rings.push(copy, 256);
    let mut taken = 0;
    for t in 0..20 {
        s.handle_timeout(3 + t);
        let stats = s.display().qxl_stats().unwrap().clone();
        // 1 MiB a command: at most 16 + 1 per tick.
        assert!(
            stats.commands - taken <= 17,
            "{} commands in one tick",
            stats.commands - taken
        );
        taken = stats.commands;
        assert!(s.display().held_bytes() <= budgets.display_log_bytes);
        let q = s.queued_bytes(d.conn) as u64;
        assert!(
            q <= (4 << 20) + (2 << 20),
            "{q} bytes queued for the display client"
        );
        assert!(s.display().clients_bytes() <= q + budgets.display_pending_bytes + (1 << 20));
    }
    assert_eq!(taken, 256);
    assert_eq!(rings.released.get(), 256);
    assert!(!s.is_finished(d.conn));
}

/// Finding 15: what 20 display clients that never read cost. Each may ask for a 2^25-pixel
/// GLZ window; the window is clamped to `glz_window_pixels` and the dictionary is made only
/// when a GLZ image is sent. Prints the bytes each client accounts.
#[test]
fn twenty_display_clients_that_never_read_hold_a_bounded_amount() {
    // (compression, whether the guest copies a bitmap, so that clients get a GLZ image)
    for (compression, with_image) in [
        (ImageCompression::Lz, true),
        (ImageCompression::AutoGlz, false),
        (ImageCompression::AutoGlz, true),
    ] {
        let budgets = Budgets {
            max_sessions: 32,
            ..Budgets::default()
        };
        let mut g = Guest::new(2 << 20);
        let fill = g.fill(QxlRect::from_xywh(0, 0, 1024, 768));
        let img = g.bitmap(256, 256);
        let copy = g.copy(img, 256, 256);
        let mut s = server(budgets.clone(), compression);
        let rings = attach(&mut s, g, (1024, 768));
        let mut conns: Vec<ConnId> = Vec::new();
        for i in 0..20 {
            let (_m, d) = display_client(&mut s, 2 + i, 1 << 25);
            conns.push(d.conn);
        }
        rings.push(fill, 10);
        if with_image {
            rings.push(copy, 10);
        }
        s.handle_timeout(100);
        let per_client = s.display().clients_bytes() / 20;
        eprintln!(
            "{compression:?} (guest bitmaps: {with_image}): 20 display clients that never read \
             account {per_client} bytes each; the display log holds {} bytes",
            s.display().held_bytes()
        );
        let glz = (8u64 << 20) + 4 * u64::from(budgets.glz_window_pixels);
        assert!(per_client <= (4 << 20) + (4 << 20) + glz);
        if compression == ImageCompression::Lz || !with_image {
            // No GLZ image sent (the first screen is made from the current pixels: LZ, as in
            // the reference): no dictionary.
            assert!(per_client < 1 << 20, "{per_client}");
        }
        assert!(conns.iter().all(|&c| !s.is_finished(c)));
    }
}

/// A guest that caches thousands of distinct 1x1 images: our mirror of the client's pixmap
/// cache (and so the client's cache) holds at most `pixmap_cache_entries` of them, whatever
/// pixel budget the client gave; the rest are evicted with `inval_list`.
#[test]
fn tiny_cached_images_are_bounded_by_entries_not_only_by_pixels() {
    let budgets = Budgets {
        pixmap_cache_entries: 16,
        ..Budgets::default()
    };
    let mut g = Guest::new(1 << 20);
    let copies: Vec<_> = (0..200)
        .map(|i| {
            let img = g.image(1, 1, 1000 + i as u64, true);
            g.copy_to(img, i % 64, i / 64, 1, 1)
        })
        .collect();
    let mut s = server(budgets, ImageCompression::Off);
    let rings = attach(&mut s, g, (64, 64));
    let (_main, d) = display_client(&mut s, 2, 1 << 20);
    let mut f = Framer::new(HeaderKind::Mini);
    let mut cached = std::collections::BTreeSet::new();
    let mut most = 0;
    for (t, chunk) in copies.chunks(10).enumerate() {
        for &c in chunk {
            rings.push(c, 1);
        }
        s.handle_timeout(3 + t as u64);
        f.push(&drain(&mut s, d.conn));
        while let Ok(Some(m)) = f.next() {
            match DisplayServer::decode(m.header.msg_type, &m.body) {
                Ok(DisplayServer::DrawCopy(c)) => {
                    let img = c.data.src_bitmap.expect("an image");
                    if img.flags.contains(ImageFlags::CACHE_ME) {
                        cached.insert(img.id);
                    } else if img.data == ImageData::FromCache {
                        assert!(cached.contains(&img.id), "{} not cached", img.id);
                    }
                }
                Ok(DisplayServer::InvalList(l)) => {
                    for r in l.resources {
                        cached.remove(&r.id);
                    }
                }
                _ => {}
            }
            most = most.max(cached.len());
        }
        send(
            &mut s,
            &d,
            &DisplayClient::Base(BaseClient::Ack),
            3 + t as u64,
        );
        send(
            &mut s,
            &d,
            &DisplayClient::Base(BaseClient::Ack),
            3 + t as u64,
        );
    }
    assert!(most <= 16, "{most} images cached");
    assert!(most >= 8, "{most}: the cache was used");
}
