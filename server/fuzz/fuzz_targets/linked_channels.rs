//! Arbitrary bytes on linked main and inputs channels of one client, while a second client is
//! linked: never a panic, and the second client's channels are never closed.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use spice_proto::messages::ChannelType;
use spice_server::link::TicketKey;
use spice_server::link::Ticketing;
use spice_server::testing::{drain, link};
use spice_server::{Config, Server};

/// One RSA key for every run (generating one per run would make the target crawl).
fn key() -> TicketKey {
    static KEY: OnceLock<TicketKey> = OnceLock::new();
    KEY.get_or_init(|| {
        use rand_chacha::rand_core::SeedableRng;
        TicketKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(1)).expect("key")
    })
    .clone()
}

fuzz_target!(|steps: Vec<(bool, Vec<u8>, u16)>| {
    let mut s = Server::new(Config {
        ticketing: Ticketing::Disabled,
        fresh_key_per_link: false,
        ..Config::default()
    });
    s.set_link_key(key());
    let Ok((good, Some(sid))) = link(&mut s, ChannelType::Main, 0, "", 0) else {
        return;
    };
    let Ok((good_in, _)) = link(&mut s, ChannelType::Inputs, sid, "", 0) else {
        return;
    };
    let Ok((bad, Some(bsid))) = link(&mut s, ChannelType::Main, 0, "", 0) else {
        return;
    };
    let Ok((bad_in, _)) = link(&mut s, ChannelType::Inputs, bsid, "", 0) else {
        return;
    };
    let mut now = 0u64;
    for (on_main, bytes, dt) in steps.iter().take(64) {
        now += u64::from(*dt % 1000);
        let c = if *on_main { bad.conn } else { bad_in.conn };
        s.handle_bytes(c, bytes, now);
        drain(&mut s, c);
        drain(&mut s, good.conn);
        drain(&mut s, good_in.conn);
        s.handle_timeout(now);
    }
    assert!(!s.is_finished(good.conn));
    assert!(!s.is_finished(good_in.conn));
});
