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
