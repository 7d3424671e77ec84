//! Every input the whole-guest fuzz target (server/fuzz `whole_guest`) ever crashed on,
//! replayed as an ordinary test: each file of server/fuzz/regressions/whole_guest/ runs through
//! exactly the target's code (`spice_fake_devices::fuzzing::whole_guest`). `cargo xtask fuzz
//! --triage` adds the files. The committed seeds run too (a smoke test of the target).

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_whole_guest_regression_and_seed_passes() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/fuzz");
    let mut failed = Vec::new();
    let mut ran = 0;
    for dir in ["regressions/whole_guest", "seeds/whole_guest"] {
        for file in inputs(&fuzz.join(dir)) {
            let data = std::fs::read(&file).unwrap();
            ran += 1;
            let ok = std::panic::catch_unwind(|| spice_fake_devices::fuzzing::whole_guest(&data))
                .is_ok();
            if !ok {
                failed.push(file.display().to_string());
            }
        }
    }
    eprintln!("{ran} whole_guest inputs replayed");
    assert!(failed.is_empty(), "whole_guest inputs failing: {failed:#?}");
}

/// The whole-guest harness is not vacuous: a guest's fills, a bitmap copy, a stroke, text and
/// cursor commands reach the fast client as display and cursor messages, and every command is
/// released.
#[test]
fn whole_guest_draws_reach_the_fast_client_and_every_command_is_released() {
    use spice_fake_devices::fuzzing::*;
    let draw = |kind: u8, src: Img| {
        Step::Draw(Box::new(Draw {
            surface: 0,
            kind,
            bbox: (4, 4, 40, 30),
            clip: Clip::None,
            effect: 0,
            src,
            src_area: (0, 0, 8, 8),
            brush: Brush::Solid(0x00ff_0000),
            mask: None,
            rop: 1 << 3,
            path: vec![(1 | 2, vec![(64, 64), (400, 300), (100, 400)])],
            line_width: 0,
            glyphs: vec![Glyph {
                pos: (10, 20),
                origin: (0, -8),
                w: 8,
                h: 8,
                bits: vec![0xaa; 8],
            }],
            glyph_bpp: 0,
            alpha: 255,
            flags: 0,
            colors: (0, 0x00ff_ffff),
            self_bitmap: None,
            surfaces_dest: [-1, -1, -1],
        }))
    };
    let bitmap = Img::Bitmap {
        format: 9, // 32-bit xRGB
        w: 8,
        h: 8,
        stride_pad: 0,
        flags: 1 << 2,
        palette: None,
        data: vec![0x40; 8 * 8 * 4],
        chunking: Chunking {
            split: 0,
            lie: 0,
            looped: false,
        },
        cache: None,
    };
    let guest = Guest {
        size: (48, 32),
        compression: 5,
        steps: vec![
            draw(1, Img::Pointer(0)),
            Step::Tick { ms: 20 },
            draw(3, bitmap),
            draw(10, Img::Pointer(0)),
            draw(11, Img::Pointer(0)),
            Step::CursorSet {
                shape: Img::Pointer(0),
                x: 5,
                y: 5,
                visible: true,
            },
            Step::CursorMove { x: 9, y: 9 },
            Step::Tick { ms: 20 },
        ],
    };
    let s = run_guest(&guest);
    eprintln!("{s:?}");
    assert_eq!(s.issued, 6, "{s:?}");
    assert_eq!(s.outstanding, 0, "{s:?}");
    assert!(s.display_messages >= 4, "{s:?}");
    assert!(s.cursor_messages >= 1, "{s:?}");
}
