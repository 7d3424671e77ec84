//! The reference canvas against the real client: every corpus capture's display channel,
//! replayed into `spice_proto::canvas::Canvas` (`cargo xtask render`), gives the screenshot
//! spice-gtk took at the end of that capture, pixel for pixel for lossless sessions.
//!
//! Sessions where the server sent JPEG images or MJPEG stream frames are compared within a
//! stated error: our JPEG decoder (the `zune-jpeg` crate) and spice-gtk's libjpeg-turbo round
//! their IDCT and colour conversion differently, and spice-gtk scales stream frames with
//! pixman. The error allowed: at most 5% of the pixels differ, by at most 16 in any channel,
//! and 0.1 on average over all channels of all pixels (measured: xspice-jpeg-wan 2.9% of the
//! pixels, at most 7, 0.024 on average; xspice-video-stream ends on lossless content: 0).

use std::path::PathBuf;

use spice_captures::frames;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Lossy captures: (name, largest share of differing pixels, largest channel difference,
/// largest mean absolute channel error over all pixels).
const LOSSY: &[(&str, f64, u8, f64)] = &[
    ("xspice-jpeg-wan", 0.05, 16, 0.1),
    ("xspice-video-stream", 0.05, 16, 0.1),
];

#[test]
fn every_capture_renders_to_its_screenshot() {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(corpus().join("manifest.json")).unwrap())
            .unwrap();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for entry in manifest["captures"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        let pcap = corpus().join(entry["pcap"].as_str().unwrap());
        let shot = corpus().join(entry["screenshot"].as_str().unwrap());
        let t = spice_captures::load(&pcap).unwrap();
        let r = frames::render(&t, None).unwrap();
        let primary = r.primary.as_ref().expect("a primary surface");
        let got = primary.to_rgba8();
        let (w, h, want) = frames::read_png(&shot).unwrap();
        assert_eq!((w, h), (primary.width, primary.height), "{name}: size");
        let (n, max) = frames::diff_rgba(&got, &want).unwrap();
        let total: u64 = got
            .chunks_exact(4)
            .zip(want.chunks_exact(4))
            .map(|(p, q)| (0..3).map(|i| p[i].abs_diff(q[i]) as u64).sum::<u64>())
            .sum();
        let mean = total as f64 / (w as f64 * h as f64 * 3.0);
        let share = n as f64 / (w as f64 * h as f64);
        report.push(format!(
            "{name}: {} draws, {} frames, {} errors, {n} pixels differ ({:.3}%), max {max}, mean {mean:.4}",
            r.stats.draws,
            r.stats.frames,
            r.error_count,
            share * 100.0
        ));
        if r.error_count != 0 {
            failures.push(format!("{name}: canvas errors {:?}", r.errors));
        }
        let lossy = LOSSY.iter().find(|l| l.0 == name);
        if let Some(&(_, max_share, max_channel, max_mean)) = lossy {
            if share > max_share || max > max_channel || mean > max_mean {
                failures.push(format!(
                    "{name}: {share:.4} of pixels differ (allowed {max_share}), by up to {max} (allowed {max_channel}), mean error {mean:.4} (allowed {max_mean})"
                ));
            }
        } else if n != 0 {
            failures.push(format!("{name}: {n} pixels differ, max {max}"));
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
