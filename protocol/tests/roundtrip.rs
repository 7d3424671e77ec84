//! Round trips and robustness for every message of every channel and direction.
//!
//! - `decode(encode(m)) == m` and `encode(decode(b)) == b` for messages generated with
//!   `arbitrary` (proptest drives the bytes, so failures shrink);
//! - every message type of every enum is generated and round-tripped at least once (coverage is
//!   checked, not hoped for);
//! - decoding arbitrary bytes as any type on any channel and direction never panics.

use arbitrary::{Arbitrary, Unstructured};
use proptest::prelude::*;
use spice_proto::messages::*;
use spice_proto::{decode, ChannelType, Direction, Message};

/// Generate a message from `data`, round-trip it both ways; the name of the message, or `None`
/// if `data` did not make a message.
fn round_trip<M: Message + for<'u> Arbitrary<'u>>(data: &[u8]) -> Option<&'static str> {
    let m = M::arbitrary(&mut Unstructured::new(data)).ok()?;
    let body = m.to_body();
    let back = match M::decode(m.msg_type(), &body) {
        Ok(back) => back,
        Err(e) => panic!(
            "{} ({}) does not decode: {e}\n{m:#?}",
            m.name(),
            m.msg_type()
        ),
    };
    assert_eq!(back, m, "decode(encode(m)) != m for {}", m.name());
    assert_eq!(
        back.to_body(),
        body,
        "encode(decode(b)) != b for {}",
        m.name()
    );
    Some(m.name())
}

/// A tiny deterministic generator for the coverage loop (no wall clock, no OS randomness).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Round-trip random messages until every type in `all` was seen (or fail naming the missing).
fn cover<M: Message + for<'u> Arbitrary<'u>>(
    all: &[(u16, &'static str)],
    base: &[(u16, &'static str)],
) {
    let mut missing: std::collections::BTreeSet<&str> =
        all.iter().chain(base).map(|(_, n)| *n).collect();
    missing.insert("unknown");
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    for i in 0..200_000u32 {
        if missing.is_empty() {
            return;
        }
        let len = [8usize, 64, 512, 4096][(i % 4) as usize];
        let data = rng.bytes(len);
        if let Some(name) = round_trip::<M>(&data) {
            missing.remove(name);
        }
    }
    panic!("message types never generated: {missing:?}");
}

macro_rules! per_enum {
    ($( $m:ident : $base:ident, $chan:expr, $dir:expr ; )*) => {
        #[allow(non_snake_case)]
        mod coverage {
            use super::*;
            $(
                #[test]
                fn $m() {
                    cover::<$m>($m::TYPES, $base::TYPES);
                }
            )*
        }

        #[allow(non_snake_case)]
        mod props {
            use super::*;
            proptest! {
                #![proptest_config(ProptestConfig::with_cases(256))]
                $(
                    #[test]
                    fn $m(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
                        round_trip::<$m>(&data);
                    }
                )*
            }
        }

        #[allow(non_snake_case)]
        mod never_panics {
            use super::*;
            proptest! {
                #![proptest_config(ProptestConfig::with_cases(256))]
                $(
                    #[test]
                    fn $m(data in proptest::collection::vec(any::<u8>(), 0..256), pick in any::<u16>()) {
                        // Every known type (and a random one) on this channel and direction.
                        let types: Vec<u16> = $m::TYPES.iter().chain($base::TYPES).map(|t| t.0)
                            .chain([pick]).collect();
                        for ty in types {
                            if let Ok(m) = decode($chan, $dir, ty, &data) {
                                prop_assert_eq!(m.msg_type(), ty);
                            }
                        }
                    }
                )*
            }
        }
    };
}

use ChannelType as C;
use Direction::{ClientToServer as C2S, ServerToClient as S2C};
per_enum! {
    MainServer: BaseServer, C::Main, S2C;
    MainClient: BaseClient, C::Main, C2S;
    DisplayServer: BaseServer, C::Display, S2C;
    DisplayClient: BaseClient, C::Display, C2S;
    InputsServer: BaseServer, C::Inputs, S2C;
    InputsClient: BaseClient, C::Inputs, C2S;
    CursorServer: BaseServer, C::Cursor, S2C;
    CursorClient: BaseClient, C::Cursor, C2S;
    PlaybackServer: BaseServer, C::Playback, S2C;
    PlaybackClient: BaseClient, C::Playback, C2S;
    RecordServer: BaseServer, C::Record, S2C;
    RecordClient: BaseClient, C::Record, C2S;
    SmartcardServer: BaseServer, C::Smartcard, S2C;
    SmartcardClient: BaseClient, C::Smartcard, C2S;
    SpicevmcServer: BaseServer, C::Usbredir, S2C;
    SpicevmcClient: BaseClient, C::Usbredir, C2S;
    PortServer: BaseServer, C::Port, S2C;
    PortClient: BaseClient, C::Port, C2S;
}

#[test]
fn unknown_types_are_data_not_errors() {
    let m = decode(C::Display, S2C, 4242, &[1, 2, 3]).unwrap();
    assert!(m.is_unknown());
    assert_eq!(m.to_body(), vec![1, 2, 3]);
    let m = decode(C::Tunnel, C2S, 101, &[9]).unwrap();
    assert!(m.is_unknown());
}

/// Every message spice.proto defines is here: the counts of channel-specific messages per
/// channel and direction, as spice.proto (spice-common) declares them (base messages, 8 server
/// and 6 client, are shared by all; spice.proto's `base_last` marker is not a message). Port
/// and webdav have the spicevmc messages plus their own.
#[test]
fn every_spice_proto_message_is_covered() {
    let ours = [
        ("base server", BaseServer::TYPES.len(), 8),
        ("base client", BaseClient::TYPES.len(), 6),
        ("main server", MainServer::TYPES.len(), 18),
        ("main client", MainClient::TYPES.len(), 12),
        ("display server", DisplayServer::TYPES.len(), 34),
        ("display client", DisplayClient::TYPES.len(), 5),
        ("inputs server", InputsServer::TYPES.len(), 3),
        ("inputs client", InputsClient::TYPES.len(), 8),
        ("cursor server", CursorServer::TYPES.len(), 8),
        ("cursor client", CursorClient::TYPES.len(), 0),
        ("playback server", PlaybackServer::TYPES.len(), 7),
        ("playback client", PlaybackClient::TYPES.len(), 0),
        ("record server", RecordServer::TYPES.len(), 4),
        ("record client", RecordClient::TYPES.len(), 3),
        ("smartcard server", SmartcardServer::TYPES.len(), 1),
        ("smartcard client", SmartcardClient::TYPES.len(), 1),
        ("spicevmc server", SpicevmcServer::TYPES.len(), 2),
        ("spicevmc client", SpicevmcClient::TYPES.len(), 2),
        ("port server", PortServer::TYPES.len(), 2 + 2),
        ("port client", PortClient::TYPES.len(), 2 + 1),
    ];
    for (what, got, spice_proto) in ours {
        assert_eq!(
            got, spice_proto,
            "{what}: {got} messages, spice.proto has {spice_proto}"
        );
    }
}
