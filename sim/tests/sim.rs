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
        Breakage::DropPlaybackFrame,
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

#[test]
fn sound_flows_both_ways_and_is_judged() {
    // Without faults every client keeps up: playback connections get data in the mode their
    // caps ask for, and the recording client's frames reach the card.
    let mut raw = 0;
    let mut opus = 0;
    for seed in 0..3 {
        let out = run(&opts(seed, Faults::none()));
        assert!(out.passed(), "seed {seed}: {:?}", out.violations);
        assert!(
            out.generated_frames > 0,
            "seed {seed}: the card played nothing"
        );
        for l in &out.playback {
            if l.packets.is_empty() {
                continue;
            }
            match l.mode() {
                Some(spice_proto::messages::playback::AudioDataMode::Raw) => raw += 1,
                Some(spice_proto::messages::playback::AudioDataMode::Opus) => opus += 1,
                _ => {}
            }
        }
        let sent: usize = out.record.iter().map(|l| l.frames.len()).sum();
        assert!(
            sent > 0,
            "seed {seed}: no record data sent: {:?}",
            out.record
        );
        assert!(
            out.recorded_frames > 0,
            "seed {seed}: the card received no record data"
        );
        eprintln!(
            "seed {seed}: generated {} recorded {} sent {sent}; playback {:?}",
            out.generated_frames,
            out.recorded_frames,
            out.playback
                .iter()
                .map(|l| (
                    l.client,
                    l.mode().map(|m| m.name()),
                    l.packets.len(),
                    l.closed_by_server
                ))
                .collect::<Vec<_>>()
        );
    }
    assert!(raw > 0 && opus > 0, "raw {raw}, opus {opus}");
}

#[test]
fn a_dropped_playback_frame_is_caught_by_the_audio_invariant() {
    // The breakage loses one buffer per playback channel: the audio invariant (a client that
    // keeps up gets one contiguous run of the card's frames) is what must notice it.
    let mut o = opts(0, Faults::none());
    o.breakage = Some(Breakage::DropPlaybackFrame);
    let caught = (0..8).find_map(|seed| {
        o.seed = seed;
        let out = run(&o);
        (!out.passed()).then_some(out.violations)
    });
    let v = caught.expect("drop-playback-frame went unnoticed on seeds 0..8");
    assert!(
        v.iter().any(|x| x.contains("audio was lost")),
        "caught, but not by the audio invariant: {v:?}"
    );
}

#[test]
fn stalled_and_held_playback_readers_make_the_cap_work() {
    // A playback reader that stops reading (stall) or whose link is held fills its flow
    // window and the shell's write window; the server's queue then reaches its budget and
    // drops the oldest audio. The invariants (queued audio within the budget, nothing
    // invented or reordered) still hold. One client, so it keeps the playback channel (a
    // newer client's link would replace it).
    let mut dropped = 0;
    let mut max_queued = 0;
    for name in ["stall", "hold"] {
        for seed in 0..6 {
            let o = Options {
                clients: 1,
                ..opts(seed, Faults::only(name).unwrap())
            };
            let out = run(&o);
            assert!(out.passed(), "{}: {:?}", o.repro_command(), out.violations);
            dropped += out.stats.audio.playback_frames_dropped;
            max_queued = max_queued.max(out.stats.max_playback_queued);
        }
    }
    assert!(
        dropped > 0,
        "no playback frame was ever dropped: the cap was not exercised"
    );
    assert_eq!(
        max_queued,
        spice_server::Budgets::default().playback_queue_frames,
        "the queue should reach its budget, never more"
    );
}
