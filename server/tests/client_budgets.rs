//! An authenticated client (or anyone, with ticketing disabled) cannot make the server spend
//! without bound: agent data goes through the bounded reassembler under spice-server's rules,
//! every reply counts against the connection's output cap, and a client that does not read is
//! closed rather than buffered for. Security review findings 13, 14 and 16, and the agent
//! monitors-config class of issue 18.

use spice_proto::agent::{AgentMessageType, VdAgentMessageHeader, VD_AGENT_PROTOCOL};
use spice_proto::header::{frame, HeaderKind};
use spice_proto::messages::inputs::{MouseButtonMask, MouseMotion};
use spice_proto::messages::main::MouseMode;
use spice_proto::messages::{ChannelType, InputsClient, InputsServer, MainClient, Message};
use spice_server::channel::core::FORCED_OUTPUT_SLACK;
use spice_server::testing::{drain, link, Linked};
use spice_server::{Config, Server};

fn server() -> Server {
    let mut s = Server::new(Config {
        fresh_key_per_link: false,
        ..Config::default()
    });
    s.set_link_key(spice_server::testing::fixed_key());
    s
}

fn msg<M: Message>(m: &M) -> Vec<u8> {
    let mut b = Vec::new();
    frame(HeaderKind::Mini, 0, m.msg_type(), &m.to_body(), &mut b);
    b
}

fn agent_header(msg_type: AgentMessageType, size: u32) -> Vec<u8> {
    spice_proto::wire::encode_to_vec(&VdAgentMessageHeader {
        protocol: VD_AGENT_PROTOCOL,
        msg_type,
        opaque: 0,
        size,
    })
}

fn agent_data(piece: Vec<u8>) -> Vec<u8> {
    msg(&MainClient::AgentData(spice_proto::wire::Bytes(piece)))
}

/// A client with main (and inputs) linked.
fn client(s: &mut Server) -> (Linked, Linked) {
    let (main, sid) = link(s, ChannelType::Main, 0, "", 0).unwrap();
    let (inputs, _) = link(s, ChannelType::Inputs, sid.unwrap(), "", 0).unwrap();
    (main, inputs)
}

fn open(s: &Server, l: Linked) -> bool {
    !s.is_finished(l.conn)
}

/// Finding 13: agent data was reassembled by splitting the buffer once per message
/// (quadratic). It now goes through spice-proto's bounded `Reassembler` with the reference's
/// rules: one piece of 1 MiB of empty agent headers breaks them (a piece is at most 2048 bytes
/// and holds one message) and closes that client only.
#[test]
fn a_mebibyte_of_agent_headers_in_one_piece_closes_that_client_only() {
    let mut s = server();
    let (good, _) = client(&mut s);
    let (bad, bad_inputs) = client(&mut s);
    let piece: Vec<u8> = (0..(1 << 20) / 20)
        .flat_map(|_| agent_header(AgentMessageType::ClipboardRelease, 0))
        .collect();
    s.handle_bytes(bad.conn, &agent_data(piece), 10);
    drain(&mut s, bad.conn);
    drain(&mut s, bad_inputs.conn);
    assert!(
        !open(&s, bad),
        "the client breaking the agent protocol is closed"
    );
    assert!(
        !open(&s, bad_inputs),
        "its session goes with its main channel"
    );
    assert!(open(&s, good));
}

/// Finding 13, the well-formed side: many agent messages, each in its own piece, are read in
/// linear work and keep the client connected.
#[test]
fn many_small_agent_messages_are_accepted() {
    let mut s = server();
    let (c, _) = client(&mut s);
    let one = agent_data(agent_header(AgentMessageType::ClipboardRelease, 0));
    let stream: Vec<u8> = (0..20_000).flat_map(|_| one.iter().copied()).collect();
    s.handle_bytes(c.conn, &stream, 10);
    drain(&mut s, c.conn);
    assert!(open(&s, c));
}

/// An agent message whose header claims more than the server reassembles is refused when its
/// header arrives: nothing is allocated by the claimed size.
#[test]
fn an_agent_message_claiming_four_gibibytes_is_refused_by_its_header() {
    let mut s = server();
    let (c, _) = client(&mut s);
    let mut piece = agent_header(AgentMessageType::Clipboard, u32::MAX);
    piece.extend_from_slice(&[0; 100]);
    s.handle_bytes(c.conn, &agent_data(piece), 10);
    drain(&mut s, c.conn);
    assert!(!open(&s, c));
}

/// Issue 18's class "an agent monitors config with a huge count": the count claims 2^32-1
/// monitors, the message carries two. Nothing is allocated by the count, no panic, and the
/// client stays (the reference drops such a config).
#[test]
fn an_agent_monitors_config_with_a_huge_count_is_harmless() {
    let mut s = server();
    let (c, _) = client(&mut s);
    let mut body = u32::MAX.to_le_bytes().to_vec(); // num_of_monitors
    body.extend_from_slice(&0u32.to_le_bytes()); // flags
    for _ in 0..2 {
        for v in [600u32, 800, 32, 0, 0] {
            body.extend_from_slice(&v.to_le_bytes());
        }
    }
    let mut piece = agent_header(AgentMessageType::MonitorsConfig, body.len() as u32);
    piece.extend_from_slice(&body);
    s.handle_bytes(c.conn, &agent_data(piece), 10);
    drain(&mut s, c.conn);
    assert!(open(&s, c));
}

fn motion() -> Vec<u8> {
    msg(&InputsClient::MouseMotion(MouseMotion {
        dx: 1,
        dy: 1,
        buttons_state: MouseButtonMask::default(),
    }))
}

/// Finding 14: motion acks bypassed the output cap, so a client sending motions and never
/// reading grew its own queue without bound. Acks now wait for room; the queue stays under the
/// cap plus the slack for messages that cannot wait.
#[test]
fn motion_acks_to_a_client_that_never_reads_stay_under_the_cap() {
    const CAP: usize = 64 * 1024;
    let mut s = Server::new(Config {
        fresh_key_per_link: false,
        output_cap: CAP,
        ..Config::default()
    });
    s.set_link_key(spice_server::testing::fixed_key());
    let (main, inputs) = client(&mut s);
    let batch: Vec<u8> = (0..10_000).flat_map(|_| motion()).collect();
    for i in 0..100 {
        s.handle_bytes(inputs.conn, &batch, 10 + i);
    }
    // One million motions: 250,000 acks owed, 1.5 MB if queued; the 64 KiB cap holds.
    assert!(s.queued_bytes(inputs.conn) <= CAP + FORCED_OUTPUT_SLACK);
    assert!(open(&s, inputs));
    assert!(open(&s, main));
    // Every ack owed goes out once the client reads again (the server pumps the channel
    // when its queue drains), in order and exactly once: one per 4 motions.
    let out = drain(&mut s, inputs.conn);
    let mut f = spice_proto::header::Framer::new(HeaderKind::Mini);
    f.push(&out);
    let mut acks = 0;
    while let Ok(Some(m)) = f.next() {
        if InputsServer::decode(m.header.msg_type, &m.body) == Ok(InputsServer::MouseMotionAck) {
            acks += 1;
        }
    }
    assert_eq!(acks, 1_000_000 / 4);
}

/// Finding 14: a mouse-mode change queued a message on every main channel regardless of the
/// cap; a client toggling the mode grew every other client's queue. Now a change is sent when
/// there is room, once, however often it changed meanwhile.
#[test]
fn mouse_mode_flapping_does_not_grow_other_clients_queues() {
    struct Tab;
    impl spice_server::vdi::Tablet for Tab {
        fn set_logical_size(&mut self, _: u32, _: u32) {}
        fn position(&mut self, _: u32, _: u32, _: u8, _: MouseButtonMask) {}
        fn wheel(&mut self, _: i32, _: MouseButtonMask) {}
        fn buttons(&mut self, _: MouseButtonMask) {}
    }
    const CAP: usize = 64 * 1024;
    let mut s = Server::new(Config {
        fresh_key_per_link: false,
        output_cap: CAP,
        ..Config::default()
    });
    s.set_link_key(spice_server::testing::fixed_key());
    s.set_tablet(Box::new(Tab));
    let (victim, _) = client(&mut s);
    let (flapper, _) = client(&mut s);
    let client_mode = msg(&MainClient::MouseModeRequest(MouseMode::CLIENT));
    let server_mode = msg(&MainClient::MouseModeRequest(MouseMode::SERVER));
    let before = s.queued_bytes(victim.conn);
    for i in 0..50_000u64 {
        let m = if i % 2 == 0 {
            &client_mode
        } else {
            &server_mode
        };
        s.handle_bytes(flapper.conn, m, 10 + i / 100);
    }
    // Each change is one message while the victim's queue has room: at most the 64 KiB cap
    // plus one message, never 50,000 messages (about 700 KB) beyond it.
    assert!(s.queued_bytes(victim.conn) <= CAP + FORCED_OUTPUT_SLACK);
    assert!(s.queued_bytes(victim.conn) >= before);
    // And the victim, which did nothing wrong, is not closed as a client that does not read.
    s.handle_timeout(1_000);
    assert!(open(&s, victim));
}
