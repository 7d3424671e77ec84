//! Every input a fuzz target ever crashed on, replayed as an ordinary test: each file of
//! `fuzz/regressions/<target>/` runs through exactly the code the fuzz target runs
//! (`spice_proto::fuzzing`). `cargo xtask fuzz --triage` adds the files; they are never removed.

use std::path::Path;

#[test]
fn every_fuzz_regression_input_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let Ok(dirs) = std::fs::read_dir(&root) else {
        return; // No regression input yet.
    };
    let mut dirs: Vec<_> = dirs.filter_map(Result::ok).map(|e| e.path()).collect();
    dirs.sort();
    let mut ran = 0;
    let mut failed = Vec::new();
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            spice_proto::fuzzing::TARGETS.contains(&target.as_str()),
            "{}: no fuzz target {target}",
            dir.display()
        );
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && !p.extension().is_some_and(|e| e == "md"))
            .collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            ran += 1;
            let ok = std::panic::catch_unwind(|| spice_proto::fuzzing::run(&target, &data)).is_ok();
            if !ok {
                failed.push(file.display().to_string());
            }
        }
    }
    eprintln!("{ran} regression inputs replayed");
    assert!(failed.is_empty(), "fuzz regressions failing: {failed:#?}");
}
