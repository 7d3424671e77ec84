//! The simulator on a fixed seed set: every fault class passes, runs are deterministic, and a
//! deliberately broken server is caught.

use spice_server::server::Breakage;
use spice_sim::{run, Faults, Options};

fn opts(seed: u64, faults: Faults) -> Options {
    Options {
        seed,
        clients: 3,
        faults,
        duration_s: 6,
        ..Options::default()
    }
}

fn assert_passes(o: &Options) {
    let out = run(o);
    assert!(
        out.passed(),
        "{}\nfailed: {:#?}\nreports: {:#?}",
        o.repro_command(),
        out.violations,
        out.reports
    );
    assert!(out.events > 0, "no input reached the devices");
}

#[test]
fn no_faults_passes() {
    for seed in 0..3 {
        assert_passes(&opts(seed, Faults::none()));
    }
}

#[test]
fn clients_screens_are_compared_with_the_device_and_match() {
    let out = run(&opts(4, Faults::none()));
    assert!(out.passed(), "{:?}", out.violations);
    let compared: Vec<_> = out
        .reports
        .iter()
        .filter_map(|r| r.screen_matches)
        .collect();
    assert!(
        !compared.is_empty(),
        "no client's screen was compared: {:#?}",
        out.reports
    );
    assert!(compared.iter().all(|m| *m), "{:#?}", out.reports);
    assert!(
        out.reports.iter().all(|r| r.draws > 0),
        "a client got no frames"
    );
}

#[test]
fn every_fault_class_passes_on_its_own() {
    for name in Faults::NAMES {
        for seed in 0..3 {
            assert_passes(&opts(seed, Faults::only(name).unwrap()));
        }
    }
}

#[test]
fn all_faults_pass() {
    for seed in 0..4 {
        assert_passes(&opts(seed, Faults::all()));
    }
}

#[test]
fn same_seed_same_hash_different_seed_different_hash() {
    let a = run(&opts(7, Faults::all()));
    let b = run(&opts(7, Faults::all()));
    let c = run(&opts(8, Faults::all()));
    assert_eq!(a.hash, b.hash, "the same seed gave different transcripts");
    assert_eq!(a.bytes, b.bytes);
    assert_ne!(a.hash, c.hash, "different seeds gave the same transcript");
}

#[test]
fn a_broken_server_is_caught() {
    for b in [
        Breakage::DropKey,
        Breakage::ReorderInputs,
        Breakage::DropRelease,
    ] {
        let caught = (0..8).find(|&seed| {
            let mut o = opts(seed, Faults::none());
            o.breakage = Some(b);
            !run(&o).passed()
        });
        assert!(
            caught.is_some(),
            "breakage {} went unnoticed on seeds 0..8",
            b.name()
        );
    }
}

#[test]
fn the_framebuffer_device_still_passes() {
    for seed in 0..2 {
        let mut o = opts(seed, Faults::all());
        o.device = spice_sim::Device::Framebuffer;
        assert_passes(&o);
    }
}

#[test]
fn a_stalled_qxl_ring_is_drained_and_every_command_released_once() {
    // The device fault stops the server from taking commands for a while: the guest fills
    // the ring and waits. Afterwards the screens still end on the scene and nothing leaks.
    for seed in 0..3 {
        let out = run(&opts(seed, Faults::only("device").unwrap()));
        assert!(out.passed(), "seed {seed}: {:?}", out.violations);
        assert!(
            out.reports.iter().any(|r| r.screen_matches == Some(true)),
            "seed {seed}: no screen compared: {:#?}",
            out.reports
        );
    }
}
