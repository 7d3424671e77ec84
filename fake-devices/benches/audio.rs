//! Opus encode and decode of 10 s of the fake sound card's output (seed 0, 48 kHz stereo,
//! 1000 frames of 10 ms), the work the playback channel does per client and the record
//! channel per stream. `cargo xtask bench audio` turns criterion's time per 10 s into a
//! multiple of real time; it reads `audio/stream.json` (written here: seconds of audio,
//! frames and compressed bytes) for the stream's length and bitrate.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use spice_audio::opus::{OpusDecoder, OpusEncoder, FREQUENCY};
use spice_audio::pcm;
use spice_fake_devices::audio::FakePlayback;
use spice_fake_devices::input::EventLog;
use spice_server::vdi::{PlaybackCall, PlaybackDevice};

const SECONDS: u64 = 10;

/// 10 s of the fake card's buffers, as interleaved samples per 10 ms frame.
fn stream() -> Vec<Vec<i16>> {
    let mut dev = FakePlayback::new(0, EventLog::new());
    let mut frames = Vec::new();
    for t in (0..=SECONDS * 1000).step_by(10) {
        for call in dev.run(t) {
            if let PlaybackCall::Samples(f) = call {
                frames.push(pcm::frames_to_interleaved(&f));
            }
        }
    }
    frames.truncate((SECONDS * 100) as usize);
    frames
}

fn encode_all(frames: &[Vec<i16>]) -> Vec<Vec<u8>> {
    let mut enc = OpusEncoder::new(FREQUENCY).expect("encoder");
    frames
        .iter()
        .map(|f| enc.encode(f).expect("encode"))
        .collect()
}

fn bench(c: &mut Criterion) {
    let frames = stream();
    assert_eq!(frames.len() as u64, SECONDS * 100);
    let packets = encode_all(&frames);
    let bytes: usize = packets.iter().map(Vec::len).sum();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion/audio");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join("stream.json"),
        format!(
            "{{\"seconds\": {SECONDS}, \"frames\": {}, \"compressed_bytes\": {bytes}}}",
            frames.len()
        ),
    );
    let mut g = c.benchmark_group("audio");
    g.sample_size(10);
    g.bench_function("opus_encode_10s", |b| {
        b.iter(|| encode_all(black_box(&frames)).len())
    });
    g.bench_function("opus_decode_10s", |b| {
        b.iter(|| {
            let mut dec = OpusDecoder::new(FREQUENCY).expect("decoder");
            let mut n = 0;
            for p in black_box(&packets) {
                n += dec.decode(p).expect("decode").len();
            }
            n
        })
    });
    // The in-run baseline: the raw mode's work, frames to wire bytes.
    g.bench_function("raw_bytes_10s", |b| {
        b.iter(|| {
            black_box(&frames)
                .iter()
                .map(|f| pcm::frames_to_bytes(&pcm::interleaved_to_frames(f)).len())
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
