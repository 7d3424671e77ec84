//! Hostile bytes on a linked channel close that channel (or that client) and nothing else:
//! no panic, the other client's session and channels stay, and they keep being served.

use proptest::prelude::*;
use spice_proto::header::{frame, Framer, HeaderKind};
use spice_proto::messages::inputs::MousePosition;
use spice_proto::messages::{ChannelType, InputsClient, InputsServer, Message};
use spice_server::link::Ticketing;
use spice_server::testing::{drain, link};
use spice_server::{Config, Server};

fn server() -> Server {
    let mut s = Server::new(Config {
        ticketing: Ticketing::Password {
            password: "pw".into(),
            expires_at_ms: None,
        },
        fresh_key_per_link: false,
        seed: 3,
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
