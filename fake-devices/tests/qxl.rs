//! The server with the fake QXL device, end to end in memory: a client linked from the start
//! receives the scene as draw messages (fills, copies from the pixmap cache, copy_bits, a
//! composed off-screen surface) and, drawn by the reference canvas, ends on exactly the
//! picture the device means; a client linking after the scene settled gets the same picture as
//! one image. Every QXL command is released exactly once, and the cursor channel carries the
//! shapes (the second use of a shape from the client's cursor cache), moves and the hide.

use std::collections::BTreeMap;

use spice_fake_devices::qxl::FakeQxl;
use spice_fake_devices::screen::SETTLE_MS;
use spice_proto::canvas::Canvas;
use spice_proto::header::{frame, Framer, HeaderKind};
use spice_proto::messages::base::{BaseClient, BaseServer};
use spice_proto::messages::cursor::CursorFlags;
use spice_proto::messages::display::DisplayInit;
use spice_proto::messages::{ChannelType, CursorServer, DisplayClient, DisplayServer, Message};
use spice_server::link::Ticketing;
use spice_server::testing::{drain, link, link_with_rest, Linked};
use spice_server::{Config, ImageCompression, Server};

fn server(compression: ImageCompression, scene: &str) -> Server {
    let mut s = Server::new(Config {
        ticketing: Ticketing::Password {
            password: "pw".into(),
            expires_at_ms: None,
        },
        fresh_key_per_link: false,
        image_compression: compression,
        seed: Some(7),
        ..Config::default()
    });
    s.set_link_key(spice_server::testing::fixed_key());
    s.display()
        .set_qxl(Box::new(FakeQxl::new(scene, 320, 240).unwrap()));
    s
}

/// A minimal client side of one channel: framing, acks, and the messages by name.
struct Client {
    link: Linked,
    framer: Framer,
    ack: Option<(u32, u32)>,
    names: BTreeMap<&'static str, u64>,
}

impl Client {
    fn new(link: Linked, rest: Vec<u8>) -> Client {
        let mut framer = Framer::new(HeaderKind::Mini);
        framer.push(&rest);
        Client {
            link,
            framer,
            ack: None,
            names: BTreeMap::new(),
        }
    }

    fn send(&self, s: &mut Server, msg_type: u16, body: &[u8], now: u64) {
        let mut b = Vec::new();
        frame(HeaderKind::Mini, 0, msg_type, body, &mut b);
        s.handle_bytes(self.link.conn, &b, now);
    }

    /// Channel messages received (base messages answered).
    fn poll(&mut self, s: &mut Server, now: u64) -> Vec<(u16, Vec<u8>)> {
        self.framer.push(&drain(s, self.link.conn));
        let mut out = Vec::new();
        loop {
            let m = match self.framer.next() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => panic!("framing: {e}"),
            };
            if let Some((w, left)) = self.ack.as_mut() {
                *left -= 1;
                if *left == 0 {
                    *left = *w;
                    let b = DisplayClient::Base(BaseClient::Ack);
                    self.send(s, b.msg_type(), &b.to_body(), now);
                }
            }
            match BaseServer::try_decode(m.header.msg_type, &m.body) {
                Some(Ok(BaseServer::SetAck(a))) => {
                    let b = DisplayClient::Base(BaseClient::AckSync(a.generation));
                    self.send(s, b.msg_type(), &b.to_body(), now);
                    self.ack = Some((a.window.max(1), a.window.max(1)));
                }
                Some(_) => {}
                None => out.push((m.header.msg_type, m.body.to_vec())),
            }
        }
        out
    }
}

struct Viewer {
    display: Client,
    cursor: Client,
    canvas: Canvas,
    errors: Vec<String>,
    cursor_msgs: Vec<CursorServer>,
}

fn connect(s: &mut Server, now: u64) -> Viewer {
    let (_main, session) = link(s, ChannelType::Main, 0, "pw", now).unwrap();
    let session = session.unwrap();
    let (d, _, d_rest) = link_with_rest(s, ChannelType::Display, session, "pw", now).unwrap();
    let (c, _, c_rest) = link_with_rest(s, ChannelType::Cursor, session, "pw", now).unwrap();
    let display = Client::new(d, d_rest);
    let init = DisplayClient::Init(DisplayInit {
        pixmap_cache_id: 1,
        pixmap_cache_size: 20 << 20,
        glz_dictionary_id: 1,
        glz_dictionary_window_size: 1 << 22,
    });
    display.send(s, init.msg_type(), &init.to_body(), now);
    Viewer {
        display,
        cursor: Client::new(c, c_rest),
        canvas: Canvas::default(),
        errors: Vec::new(),
        cursor_msgs: Vec::new(),
    }
}

impl Viewer {
    fn poll(&mut self, s: &mut Server, now: u64) {
        for (ty, body) in self.display.poll(s, now) {
            match DisplayServer::decode(ty, &body) {
                Ok(m) => {
                    *self.display.names.entry(m.name()).or_default() += 1;
                    if let Err(e) = self.canvas.apply(&m) {
                        self.errors.push(format!("{}: {e}", m.name()));
                    }
                }
                Err(e) => self.errors.push(format!("undecodable {ty}: {e}")),
            }
        }
        for (ty, body) in self.cursor.poll(s, now) {
            let m = CursorServer::decode(ty, &body).unwrap();
            *self.cursor.names.entry(m.name()).or_default() += 1;
            self.cursor_msgs.push(m);
        }
    }

    fn rgba(&self) -> Vec<u8> {
        self.canvas.primary().unwrap().raster.to_rgba8()
    }
}

fn run(compression: ImageCompression) {
    run_scene("qxl-desktop", compression)
}

fn run_scene(scene: &str, compression: ImageCompression) {
    let mut s = server(compression, scene);
    s.handle_timeout(0);
    let mut early = connect(&mut s, 0);
    // A client that reads only every 300 ms: its unsent drawables pile up, covered ones are
    // dropped, and it falls back to regions of the current screen.
    let mut slow = connect(&mut s, 0);
    let mut late = None;
    let mut t = 0;
    while t <= SETTLE_MS + 600 {
        s.handle_timeout(t);
        early.poll(&mut s, t);
        if t % 300 == 0 {
            slow.poll(&mut s, t);
        }
        if t == SETTLE_MS + 200 {
            late = Some(connect(&mut s, t));
        }
        if let Some(l) = late.as_mut() {
            l.poll(&mut s, t);
        }
        t += 5;
    }
    let late = late.unwrap();
    let want = FakeQxl::rgba_at(scene, 320, 240, SETTLE_MS).unwrap();
    // The server's own copy of the screen is the device's picture too.
    let server_px = s.display().rgba().unwrap();
    assert!(server_px
        .chunks(4)
        .zip(want.chunks(4))
        .all(|(a, b)| a[..3] == b[..3]));
    for (who, v) in [("early", &early), ("slow", &slow), ("late", &late)] {
        assert!(v.errors.is_empty(), "{compression:?} {who}: {:?}", v.errors);
        let got = v.rgba();
        let differ = got
            .chunks(4)
            .zip(want.chunks(4))
            .filter(|(a, b)| a[..3] != b[..3])
            .count();
        assert_eq!(differ, 0, "{compression:?} {who}: pixels differ");
    }
    if scene != "qxl-desktop" {
        return;
    }
    // The early client got the drawables themselves.
    let n = |name: &str| early.display.names.get(name).copied().unwrap_or(0);
    assert!(n("draw_fill") > 20, "{:?}", early.display.names);
    assert!(n("copy_bits") >= 10, "{:?}", early.display.names);
    assert!(n("draw_copy") >= 5, "{:?}", early.display.names);
    // The late one the settled screen as one image.
    assert_eq!(
        late.display.names.get("draw_copy").copied(),
        Some(1),
        "{:?}",
        late.display.names
    );
    // Every command released exactly once.
    let st = s.display().qxl_stats().unwrap().clone();
    assert_eq!(st.rejected, 0);
    assert_eq!(st.released, st.commands + st.cursor_commands);
    // Cursor: shapes, moves, hide; a shape sent again comes from the cache.
    let c = &early.cursor.names;
    assert!(c.get("set").copied().unwrap_or(0) >= 3, "{c:?}");
    assert!(c.get("move").copied().unwrap_or(0) >= 6, "{c:?}");
    assert_eq!(c.get("hide").copied(), Some(1), "{c:?}");
    let from_cache = early
        .cursor_msgs
        .iter()
        .filter(|m| matches!(m, CursorServer::Set(s) if s.cursor.flags.contains(CursorFlags::FROM_CACHE)))
        .count();
    assert!(from_cache >= 2, "{:?}", early.cursor_msgs.len());
    // The late client's cursor init carries the current shape.
    assert!(matches!(
        late.cursor_msgs.first(),
        Some(CursorServer::Init(i)) if i.cursor.header.is_some()
    ));
}

#[test]
fn qxl_scene_off() {
    run(ImageCompression::Off);
}

#[test]
fn qxl_scene_lz() {
    run(ImageCompression::Lz);
}

#[test]
fn qxl_scene_glz() {
    run(ImageCompression::Glz);
}

#[test]
fn qxl_scene_auto_glz() {
    run(ImageCompression::AutoGlz);
}

#[test]
fn qxl_scene_quic() {
    run(ImageCompression::Quic);
}

#[test]
fn qxl_every_drawable_kind() {
    run_scene("qxl-ops", ImageCompression::Off);
    run_scene("qxl-ops", ImageCompression::AutoGlz);
}

#[test]
fn client_monitor_requests_reach_the_qxl_device() {
    use spice_proto::agent::{
        AgentBody, MonConfig, Monitors, MonitorsConfig, MonitorsConfigFlags, VdAgentMessage,
    };
    use spice_proto::messages::MainClient;
    let mut s = Server::new(Config {
        ticketing: Ticketing::Password {
            password: "pw".into(),
            expires_at_ms: None,
        },
        fresh_key_per_link: false,
        seed: Some(7),
        ..Config::default()
    });
    s.set_link_key(spice_server::testing::fixed_key());
    let dev = FakeQxl::new("qxl-fills", 320, 240).unwrap();
    let audit = dev.audit();
    s.display().set_qxl(Box::new(dev));
    s.handle_timeout(0);
    let (main, _) = link(&mut s, ChannelType::Main, 0, "pw", 0).unwrap();
    let body = AgentBody::MonitorsConfig(MonitorsConfig {
        flags: MonitorsConfigFlags::EMPTY,
        monitors: Monitors::Plain(vec![MonConfig {
            height: 600,
            width: 800,
            depth: 32,
            x: 0,
            y: 0,
        }]),
    });
    for chunk in VdAgentMessage::from_body(&body).to_agent_data() {
        let m = MainClient::AgentData(spice_proto::wire::Bytes(chunk));
        let mut b = Vec::new();
        frame(HeaderKind::Mini, 0, m.msg_type(), &m.to_body(), &mut b);
        s.handle_bytes(main.conn, &b, 10);
    }
    assert_eq!(audit.borrow().monitor_requests, [(800, 600)]);
}

/// Hostile bytes on one client's display and cursor channels (truncated, oversized, unknown
/// types, bad bodies) close those channels, while another client connected at the same time
/// keeps receiving frames and ends on the device's picture.
#[test]
fn hostile_display_bytes_close_that_channel_and_the_other_client_keeps_its_frames() {
    let scene = "qxl-desktop";
    let hostile: [&[u8]; 4] = [
        // A display `init` cut short (then nothing).
        &[101, 0, 8, 0, 0, 0, 1, 2],
        // A header announcing a 64 MiB body.
        &[2, 0, 0, 0, 0, 4],
        // An unknown message type.
        &[0x39, 0x30, 3, 0, 0, 0, 1, 2, 3],
        // `preferred_compression` with an empty body.
        &[103, 0, 0, 0, 0, 0],
    ];
    for (i, bytes) in hostile.iter().enumerate() {
        let mut s = server(ImageCompression::AutoGlz, scene);
        s.handle_timeout(0);
        let mut good = connect(&mut s, 0);
        let bad = connect(&mut s, 0);
        let mut t = 0;
        while t <= SETTLE_MS + 300 {
            s.handle_timeout(t);
            good.poll(&mut s, t);
            if t == 200 {
                s.handle_bytes(bad.display.link.conn, bytes, t);
                s.handle_bytes(bad.cursor.link.conn, bytes, t);
            }
            let _ = drain(&mut s, bad.display.link.conn);
            let _ = drain(&mut s, bad.cursor.link.conn);
            t += 5;
        }
        if i != 0 {
            // A complete bad message closes the channel (a truncated one waits for more).
            assert!(s.is_finished(bad.display.link.conn), "case {i}: display");
            assert!(s.is_finished(bad.cursor.link.conn), "case {i}: cursor");
        }
        assert!(!s.is_finished(good.display.link.conn));
        let want = FakeQxl::rgba_at(scene, 320, 240, SETTLE_MS).unwrap();
        assert!(good.errors.is_empty(), "{:?}", good.errors);
        assert!(
            good.rgba()
                .chunks(4)
                .zip(want.chunks(4))
                .all(|(a, b)| a[..3] == b[..3]),
            "case {i}: the good client's screen"
        );
    }
}
