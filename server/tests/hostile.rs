//! Hostile bytes on a linked channel close that channel (or that client) and nothing else:
//! no panic, the other client's session and channels stay, and they keep being served.

use proptest::prelude::*;
use spice_proto::header::{frame, Framer, HeaderKind};
use spice_proto::messages::inputs::MousePosition;
use spice_proto::messages::{ChannelType, InputsClient, InputsServer, Message};
use spice_server::link::Ticketing;
use spice_server::testing::{drain, link};
use spice_server::{Budgets, Config, Server};

fn server() -> Server {
    let mut s = Server::new(Config {
        ticketing: Ticketing::Password {
            password: "pw".into(),
            expires_at_ms: None,
        },
        fresh_key_per_link: false,
        seed: Some(3),
        ..Config::default()
    });
    s.set_link_key(spice_server::testing::fixed_key());
    s
}

fn inputs_msg(m: &InputsClient) -> Vec<u8> {
    let mut b = Vec::new();
    frame(HeaderKind::Mini, 0, m.msg_type(), &m.to_body(), &mut b);
    b
}

fn count_motion_acks(bytes: &[u8]) -> usize {
    let mut f = Framer::new(HeaderKind::Mini);
    f.push(bytes);
    let mut n = 0;
    while let Ok(Some(m)) = f.next() {
        if InputsServer::decode(m.header.msg_type, &m.body) == Ok(InputsServer::MouseMotionAck) {
            n += 1;
        }
    }
    n
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn hostile_bytes_on_one_client_leave_the_other_served(
        target in 0usize..2,
        garbage in proptest::collection::vec(any::<u8>(), 0..300),
        chunk in 1usize..64,
    ) {
        let mut s = server();
        let (good_main, good_session) = link(&mut s, ChannelType::Main, 0, "pw", 0).unwrap();
        let good_session = good_session.unwrap();
        let (good_inputs, _) = link(&mut s, ChannelType::Inputs, good_session, "pw", 0).unwrap();
        let (bad_main, bad_session) = link(&mut s, ChannelType::Main, 0, "pw", 0).unwrap();
        let (bad_inputs, _) = link(&mut s, ChannelType::Inputs, bad_session.unwrap(), "pw", 0).unwrap();
        let victim = if target == 0 { bad_main.conn } else { bad_inputs.conn };
        for (i, c) in garbage.chunks(chunk).enumerate() {
            s.handle_bytes(victim, c, i as u64);
            drain(&mut s, victim);
        }
        s.handle_timeout(1_000);
        // The good client is untouched: both its channels are still served.
        prop_assert!(!s.is_finished(good_main.conn));
        prop_assert!(!s.is_finished(good_inputs.conn));
        drain(&mut s, good_inputs.conn);
        let mut acks_in = Vec::new();
        for i in 0..8u32 {
            acks_in.extend(inputs_msg(&InputsClient::MousePosition(MousePosition {
                x: i, y: i, buttons_state: Default::default(), display_id: 0,
            })));
        }
        s.handle_bytes(good_inputs.conn, &acks_in, 2_000);
        prop_assert_eq!(count_motion_acks(&drain(&mut s, good_inputs.conn)), 2);
    }
}

#[test]
fn a_bad_message_closes_only_its_channel_and_a_bad_main_closes_its_session() {
    let mut s = server();
    let (m1, sid1) = link(&mut s, ChannelType::Main, 0, "pw", 0).unwrap();
    let (i1, _) = link(&mut s, ChannelType::Inputs, sid1.unwrap(), "pw", 0).unwrap();
    let (m2, sid2) = link(&mut s, ChannelType::Main, 0, "pw", 0).unwrap();
    let (i2, _) = link(&mut s, ChannelType::Inputs, sid2.unwrap(), "pw", 0).unwrap();
    assert_eq!(s.session_count(), 2);
    // An unknown message type on client 1's inputs: that channel only.
    let mut b = Vec::new();
    frame(HeaderKind::Mini, 0, 9999, &[1, 2, 3], &mut b);
    s.handle_bytes(i1.conn, &b, 10);
    drain(&mut s, i1.conn);
    assert!(s.is_finished(i1.conn));
    assert!(!s.is_finished(m1.conn));
    assert_eq!(s.session_count(), 2);
    // A header claiming a 2 MiB body on client 2's main: over the client message limit, the
    // client goes before anything is buffered.
    let claim = (2u32 << 20).to_le_bytes();
    s.handle_bytes(
        m2.conn,
        &[101, 0, claim[0], claim[1], claim[2], claim[3]],
        20,
    );
    drain(&mut s, m2.conn);
    assert!(s.is_finished(m2.conn));
    assert!(s.is_finished(i2.conn));
    assert_eq!(s.session_count(), 1);
    assert!(!s.is_finished(m1.conn));
}

#[test]
fn a_wrong_password_gets_permission_denied_and_the_right_one_links() {
    let mut s = server();
    let e = link(&mut s, ChannelType::Main, 0, "nope", 0).unwrap_err();
    assert!(e.contains("PermissionDenied"), "{e}");
    assert!(link(&mut s, ChannelType::Main, 0, "pw", 0).is_ok());
    // Another session's id is required for non-main channels.
    let e = link(&mut s, ChannelType::Inputs, 12345, "pw", 0).unwrap_err();
    assert!(e.contains("BadConnectionId"), "{e}");
}

// ---- Budgets on connections, sessions and channels (findings 10 and 15) ----

fn server_with(budgets: Budgets) -> Server {
    let mut s = Server::new(Config {
        fresh_key_per_link: false,
        seed: Some(5),
        budgets,
        ..Config::default()
    });
    s.set_link_key(spice_server::testing::fixed_key());
    s
}

#[test]
fn connections_past_max_linking_and_max_connections_are_closed_at_once() {
    let mut s = server_with(Budgets {
        max_connections: 4,
        max_linking: 2,
        ..Budgets::default()
    });
    let a = s.connect(0);
    let b = s.connect(0);
    assert!(!s.is_finished(a) && !s.is_finished(b));
    // A third connection in the link stage: over max_linking, closed without a word.
    let c = s.connect(0);
    assert!(s.is_finished(c));
    assert_eq!(s.poll_transmit(c), None);
    s.handle_closed(c, 0);
    // Once linked, connections no longer count against max_linking, but against
    // max_connections.
    s.handle_closed(a, 0);
    s.handle_closed(b, 0);
    let (m, sid) = link(&mut s, ChannelType::Main, 0, "", 0).unwrap();
    let (i, _) = link(&mut s, ChannelType::Inputs, sid.unwrap(), "", 0).unwrap();
    let d = s.connect(0);
    let e = s.connect(0);
    assert!(!s.is_finished(d) && !s.is_finished(e));
    assert_eq!(s.connection_count(), 4);
    let f = s.connect(0);
    assert!(
        s.is_finished(f),
        "a fifth connection is over max_connections"
    );
    s.handle_closed(f, 0);
    // The storm ends: the budget is free again and a client links.
    s.handle_closed(d, 0);
    s.handle_closed(e, 0);
    assert!(!s.is_finished(m.conn) && !s.is_finished(i.conn));
    assert!(link(&mut s, ChannelType::Main, 0, "", 0).is_ok());
}

#[test]
fn a_main_link_past_max_sessions_gets_a_link_error_until_a_session_ends() {
    let mut s = server_with(Budgets {
        max_sessions: 2,
        ..Budgets::default()
    });
    let (m1, _) = link(&mut s, ChannelType::Main, 0, "", 0).unwrap();
    link(&mut s, ChannelType::Main, 0, "", 0).unwrap();
    let e = link(&mut s, ChannelType::Main, 0, "", 0).unwrap_err();
    assert!(e.contains("Error"), "{e}");
    assert_eq!(s.session_count(), 2);
    s.handle_closed(m1.conn, 0);
    assert!(link(&mut s, ChannelType::Main, 0, "", 0).is_ok());
    assert_eq!(s.session_count(), 2);
}

#[test]
fn a_channel_link_past_max_channels_per_session_gets_a_link_error() {
    let mut s = server_with(Budgets {
        max_channels_per_session: 3,
        ..Budgets::default()
    });
    let (_m, sid) = link(&mut s, ChannelType::Main, 0, "", 0).unwrap();
    let sid = sid.unwrap();
    let mut inputs: Vec<_> = (0..3)
        .map(|_| link(&mut s, ChannelType::Inputs, sid, "", 0).unwrap().0)
        .collect();
    let e = link(&mut s, ChannelType::Inputs, sid, "", 0).unwrap_err();
    assert!(e.contains("Error"), "{e}");
    // Another session is not affected, and a freed slot links again.
    let (_m2, sid2) = link(&mut s, ChannelType::Main, 0, "", 0).unwrap();
    assert!(link(&mut s, ChannelType::Inputs, sid2.unwrap(), "", 0).is_ok());
    s.handle_closed(inputs.pop().unwrap().conn, 0);
    assert!(link(&mut s, ChannelType::Inputs, sid, "", 0).is_ok());
}

// ---- The seed (finding 12) ----

fn first_key(cfg: Config) -> Vec<u8> {
    let mut s = Server::new(cfg);
    let req = s
        .poll_key_request()
        .expect("a fresh-key server asks for a key");
    req.generate().unwrap().public_der().to_vec()
}

fn first_session(seed: Option<u64>) -> u32 {
    let mut s = Server::new(Config {
        fresh_key_per_link: false,
        seed,
        ..Config::default()
    });
    s.set_link_key(spice_server::testing::fixed_key());
    link(&mut s, ChannelType::Main, 0, "", 0)
        .unwrap()
        .1
        .unwrap()
}

#[test]
fn default_servers_make_different_keys_and_sessions_and_an_explicit_seed_repeats() {
    assert_ne!(first_key(Config::default()), first_key(Config::default()));
    assert_ne!(first_session(None), first_session(None));
    let seeded = || Config {
        seed: Some(42),
        ..Config::default()
    };
    assert_eq!(first_key(seeded()), first_key(seeded()));
    assert_eq!(first_session(Some(42)), first_session(Some(42)));
}

// ---- Link keys off the event loop (finding 11) ----

#[test]
fn a_link_waits_for_its_key_without_holding_up_other_connections() {
    let mut s = Server::new(Config {
        seed: Some(9),
        ..Config::default()
    });
    // The pool asks for a bounded number of keys at once.
    let r1 = s.poll_key_request().unwrap();
    let r2 = s.poll_key_request().unwrap();
    assert!(s.poll_key_request().is_none());
    let a = s.connect(0);
    s.handle_bytes(a, &link_mess(ChannelType::Main, 0), 0);
    assert_eq!(drain(&mut s, a), b"", "no key yet: the link waits");
    // Another connection is served meanwhile (a bad header gets its error reply at once).
    let b = s.connect(0);
    s.handle_bytes(b, b"XXXX\x02\0\0\0\x02\0\0\0\x12\0\0\0", 0);
    assert!(!drain(&mut s, b).is_empty());
    assert!(s.is_finished(b));
    // Keys arrive: the waiting link gets its reply, with its own key.
    s.add_link_key(r1.generate());
    let reply_a = drain(&mut s, a);
    assert!(reply_a.len() > 16 + 162);
    let c = s.connect(0);
    s.handle_bytes(c, &link_mess(ChannelType::Main, 0), 0);
    s.add_link_key(r2.generate());
    let reply_c = drain(&mut s, c);
    assert!(reply_c.len() > 16 + 162);
    let key = |r: &[u8]| r[20..20 + 162].to_vec();
    assert_ne!(key(&reply_a), key(&reply_c), "each link has its own key");
    // A waiting link still times out.
    let d = s.connect(0);
    s.handle_bytes(d, &link_mess(ChannelType::Main, 0), 0);
    s.handle_timeout(spice_server::server::LINK_TIMEOUT_MS + 1);
    assert!(s.is_finished(d));
}

#[test]
fn a_known_sessions_channel_gets_its_key_before_a_storm_of_new_links() {
    let mut s = Server::new(Config {
        seed: Some(11),
        ..Config::default()
    });
    let (_main, sid) = link(&mut s, ChannelType::Main, 0, "", 0).unwrap();
    let sid = sid.unwrap();
    // New links take the ready keys, and the last ones wait.
    let storm: Vec<_> = (0..12)
        .map(|_| {
            let c = s.connect(0);
            s.handle_bytes(c, &link_mess(ChannelType::Main, 0), 0);
            c
        })
        .collect();
    let waiting: Vec<_> = storm
        .iter()
        .copied()
        .filter(|&c| drain(&mut s, c).is_empty())
        .collect();
    assert!(!waiting.is_empty());
    // The client's inputs channel arrives last but is served first.
    let inputs = s.connect(0);
    s.handle_bytes(inputs, &link_mess(ChannelType::Inputs, sid), 0);
    assert!(drain(&mut s, inputs).is_empty());
    let req = s.poll_key_request().unwrap();
    s.add_link_key(req.generate());
    assert!(
        !drain(&mut s, inputs).is_empty(),
        "the known session's link got the key"
    );
    assert!(waiting.iter().all(|&c| drain(&mut s, c).is_empty()));
}

fn link_mess(channel: ChannelType, connection_id: u32) -> Vec<u8> {
    use spice_proto::caps::{self, Caps};
    let mut c = Caps::default();
    c.set_common(caps::common::PROTOCOL_AUTH_SELECTION);
    c.set_common(caps::common::AUTH_SPICE);
    c.set_common(caps::common::MINI_HEADER);
    spice_proto::link::LinkMess {
        connection_id,
        channel_type: channel,
        channel_id: 0,
        caps: c,
    }
    .to_bytes()
}

// ---- Panic isolation ----

struct PanickingKeyboard;

impl spice_server::vdi::Keyboard for PanickingKeyboard {
    fn push_scancode(&mut self, _byte: u8) {
        panic!("test keyboard: push_scancode panics");
    }
    fn leds(&self) -> spice_proto::messages::inputs::KeyboardModifiers {
        Default::default()
    }
}

#[test]
fn a_panicking_keyboard_closes_only_the_inputs_channel_that_reached_it() {
    let mut s = server();
    s.set_keyboard(Box::new(PanickingKeyboard));
    let (m1, sid1) = link(&mut s, ChannelType::Main, 0, "pw", 0).unwrap();
    let (i1, _) = link(&mut s, ChannelType::Inputs, sid1.unwrap(), "pw", 0).unwrap();
    let (m2, sid2) = link(&mut s, ChannelType::Main, 0, "pw", 0).unwrap();
    let (i2, _) = link(&mut s, ChannelType::Inputs, sid2.unwrap(), "pw", 0).unwrap();
    drain(&mut s, i2.conn);
    // handle_bytes must not unwind into the caller.
    let key = inputs_msg(&InputsClient::KeyDown(0x1e));
    s.handle_bytes(i1.conn, &key, 10);
    drain(&mut s, i1.conn);
    assert!(
        s.is_finished(i1.conn),
        "the inputs channel whose key panicked is closed"
    );
    assert!(!s.is_finished(m1.conn), "its main channel stays");
    assert!(!s.is_finished(m2.conn) && !s.is_finished(i2.conn));
    s.handle_timeout(1_000);
    // The other client's inputs still work.
    let mut motion = Vec::new();
    for i in 0..8u32 {
        motion.extend(inputs_msg(&InputsClient::MousePosition(MousePosition {
            x: i,
            y: i,
            buttons_state: Default::default(),
            display_id: 0,
        })));
    }
    s.handle_bytes(i2.conn, &motion, 2_000);
    assert_eq!(count_motion_acks(&drain(&mut s, i2.conn)), 2);
}

/// A framebuffer that panics on its third update.
struct PanickingScreen {
    updates: u32,
    pixels: Vec<u8>,
}

impl spice_server::vdi::Framebuffer for PanickingScreen {
    fn size(&self) -> (u32, u32) {
        (64, 64)
    }
    fn update(&mut self, _now_ms: u64) -> Vec<spice_proto::types::Rect> {
        self.updates += 1;
        assert!(self.updates < 3, "test screen: update panics");
        Vec::new()
    }
    fn pixels(&self) -> &[u8] {
        &self.pixels
    }
    fn next_wakeup(&self) -> Option<u64> {
        None
    }
}

#[test]
fn a_panicking_display_device_is_removed_and_the_clients_stay() {
    let mut s = server();
    s.display().set_framebuffer(Box::new(PanickingScreen {
        updates: 0,
        pixels: vec![0; 64 * 64 * 4],
    }));
    s.handle_timeout(0);
    let (m, sid) = link(&mut s, ChannelType::Main, 0, "pw", 0).unwrap();
    let sid = sid.unwrap();
    let (d, _) = link(&mut s, ChannelType::Display, sid, "pw", 0).unwrap();
    let (i, _) = link(&mut s, ChannelType::Inputs, sid, "pw", 0).unwrap();
    s.handle_timeout(10);
    s.handle_timeout(20); // the third update panics: handle_timeout must not unwind
    drain(&mut s, d.conn);
    assert!(
        s.is_finished(d.conn),
        "the display channel of the broken device is closed"
    );
    assert!(!s.is_finished(m.conn) && !s.is_finished(i.conn));
    assert!(!s.display().has_device());
    // The server goes on: timers, new links (no display now), other channels.
    s.handle_timeout(5_000);
    assert!(link(&mut s, ChannelType::Display, sid, "pw", 5_000).is_err());
    assert!(link(&mut s, ChannelType::Main, 0, "pw", 5_000).is_ok());
}

// ---- The async shell frees sockets and survives accept errors (finding 10) ----

/// File descriptors this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Run `serve` on its own thread with a current-thread runtime; stop it by dropping the
/// returned sender; the thread returns the connections the server still held.
fn spawn_serve<L: spice_server::net::Listener + 'static>(
    make_server: impl FnOnce() -> Server + Send + 'static,
    listener: impl FnOnce() -> L + Send + 'static,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<usize>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let t = std::thread::spawn(move || {
        let mut server = make_server();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = listener();
            spice_server::net::serve(
                &mut server,
                l,
                async {
                    let _ = stopped.await;
                },
                |_| {},
            )
            .await
            .unwrap();
        });
        server.connection_count()
    });
    (stop, t)
}

#[test]
fn connections_the_server_closes_are_freed_while_their_peers_stay() {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let before = open_fds();
    let make = || {
        server_with(Budgets {
            max_linking: 2,
            ..Budgets::default()
        })
    };
    let (stop, t) = spawn_serve(make, move || {
        tokio::net::TcpListener::from_std(std_listener).unwrap()
    });
    // 40 idle connections that never close: 38 are over max_linking and refused.
    let clients: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let mut is_closed = vec![false; clients.len()];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while is_closed.iter().filter(|&&c| c).count() < 38 && std::time::Instant::now() < deadline {
        for (c, done) in clients.iter().zip(is_closed.iter_mut()) {
            if *done {
                continue;
            }
            c.set_read_timeout(Some(std::time::Duration::from_millis(20)))
                .unwrap();
            let mut b = [0u8; 16];
            *done = matches!(std::io::Read::read(&mut &*c, &mut b), Ok(0));
        }
    }
    let closed = is_closed.iter().filter(|&&c| c).count();
    assert_eq!(closed, 38, "the refused connections are closed");
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Our 40 client sockets, the 2 the server still holds, and a few of the runtime's own.
    let held = open_fds() - before;
    assert!(
        held <= 40 + 2 + 6,
        "the server still holds the sockets it closed: {held} descriptors for 40 clients"
    );
    drop(stop);
    assert!(t.join().unwrap() <= 2);
}

/// A listener whose accept always fails, as with no file descriptors left.
struct FailingListener(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl spice_server::net::Listener for FailingListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&mut self) -> std::io::Result<tokio::net::TcpStream> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(std::io::Error::from_raw_os_error(24)) // EMFILE
    }
}

/// A framebuffer that wants servicing every 20 ms and counts it.
struct TickingScreen(std::sync::Arc<std::sync::atomic::AtomicUsize>, Vec<u8>, u64);

impl spice_server::vdi::Framebuffer for TickingScreen {
    fn size(&self) -> (u32, u32) {
        (64, 64)
    }
    fn update(&mut self, now_ms: u64) -> Vec<spice_proto::types::Rect> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.2 = now_ms;
        Vec::new()
    }
    fn pixels(&self) -> &[u8] {
        &self.1
    }
    fn next_wakeup(&self) -> Option<u64> {
        Some(self.2 + 20)
    }
}

#[test]
fn accept_errors_back_off_and_timers_keep_running() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let accepts = Arc::new(AtomicUsize::new(0));
    let ticks = Arc::new(AtomicUsize::new(0));
    let tk = ticks.clone();
    let make = move || {
        let mut s = server();
        s.display()
            .set_framebuffer(Box::new(TickingScreen(tk, vec![0; 64 * 64 * 4], 0)));
        s
    };
    let a = accepts.clone();
    let (stop, t) = spawn_serve(make, move || FailingListener(a));
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    drop(stop);
    t.join().unwrap();
    let (accepts, ticks) = (
        accepts.load(Ordering::Relaxed),
        ticks.load(Ordering::Relaxed),
    );
    // 100, 200, 400, 800 ms pauses: a handful of attempts in 1.5 s, not a spin.
    assert!(accepts <= 8, "accept retried {accepts} times in 1.5 s");
    assert!(
        ticks >= 20,
        "the device was serviced only {ticks} times in 1.5 s"
    );
}
