//! Arbitrary bytes, in arbitrary pieces and at arbitrary times, on fresh connections: the link
//! stage must answer or close, never panic, and never keep a connection past its timeout.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use spice_server::link::TicketKey;
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

fuzz_target!(|steps: Vec<(u8, Vec<u8>, u16)>| {
    let mut s = Server::new(Config {
        fresh_key_per_link: false,
        ..Config::default()
    });
    s.set_link_key(key());
    let conns: Vec<_> = (0..3).map(|_| s.connect(0)).collect();
    let mut now = 0u64;
    for (which, bytes, dt) in steps.iter().take(64) {
        now += u64::from(*dt);
        let c = conns[usize::from(*which) % conns.len()];
        s.handle_bytes(c, bytes, now);
        while s.poll_transmit(c).is_some() {}
        s.handle_timeout(now);
    }
    s.handle_timeout(now + 60_000);
    for c in conns {
        while s.poll_transmit(c).is_some() {}
        assert!(s.is_finished(c) || s.session_count() > 0);
    }
});
