//! The conformance suite on the bundled corpus: golden snapshots of our server's normalised
//! replies per capture (review changes with `cargo insta review`), no channel fails, and the
//! harness can fail: each test-only breakage makes exactly its channel fail.

use spice_conformance::compare::Status;
use spice_conformance::{corpus_captures, default_corpus, run_capture, snapshot_text, RunOptions};
use spice_server::server::Breakage;

#[test]
fn corpus_replies_match_their_snapshots_and_nothing_fails() {
    let captures = corpus_captures(&default_corpus()).expect("corpus");
    assert!(captures.len() >= 10, "corpus missing");
    let mut failing = Vec::new();
    for path in &captures {
        let r = run_capture(path, &RunOptions::default());
        let name = r.capture.clone();
        insta::with_settings!({snapshot_suffix => "", prepend_module_to_snapshot => true}, {
            insta::assert_snapshot!(name.clone(), snapshot_text(&r));
        });
        // Both final screens are drawn (for the HTML report), ours without a canvas error.
        let sc = r
            .screens
            .as_ref()
            .expect("a session with a display channel");
        assert!(
            sc.reference.is_some() && sc.ours.is_some(),
            "{name}: screens"
        );
        assert!(sc.our_errors.is_empty(), "{name}: {:?}", sc.our_errors);
        for v in r.verdicts() {
            if v.status == Status::Fails {
                failing.push(format!("{name} {}: {:?}", v.channel, v.findings));
            }
        }
    }
    assert!(
        failing.is_empty(),
        "failing channels:\n{}",
        failing.join("\n")
    );
}

fn failing_channels(b: Option<Breakage>, capture: &str) -> Vec<String> {
    let path = default_corpus().join(capture);
    let r = run_capture(
        &path,
        &RunOptions {
            breakage: b,
            ..RunOptions::default()
        },
    );
    let mut v: Vec<String> = r
        .verdicts()
        .filter(|v| v.status == Status::Fails)
        .map(|v| v.channel.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn each_breakage_fails_exactly_its_channel() {
    let capture = "xspice-input-server-mouse.pcap";
    let baseline = failing_channels(None, capture);
    // Channels that fail with the breakage and pass (or only differ) without it.
    let newly = |b| -> Vec<String> {
        failing_channels(Some(b), capture)
            .into_iter()
            .filter(|c| !baseline.contains(c))
            .collect()
    };
    assert_eq!(newly(Breakage::DropKey), ["inputs:0"]);
    assert_eq!(newly(Breakage::WrongCaps), ["inputs:0"]);
    assert_eq!(newly(Breakage::WrongMouseMode), ["main:0"]);
    assert_eq!(newly(Breakage::NoMark), ["display:0"]);
    assert_eq!(newly(Breakage::NoCursorInit), ["cursor:0"]);
    // The playback rules: the 10th buffer silently lost changes the data count and the PCM.
    assert_eq!(newly(Breakage::DropPlaybackFrame), ["playback:0"]);
}
