//! Every input a fuzz target ever crashed on, replayed as an ordinary test: each file of
//! `fuzz/regressions/<target>/` runs through exactly the code the fuzz target runs
//! (`spice_server::fuzzing`). `cargo xtask fuzz --triage` adds the files; they are never removed.

#[test]
fn every_fuzz_regression_input_passes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    // whole_guest needs the fake QXL device: fake-devices/tests/fuzz_regressions.rs.
    match spice_proto::fuzzing::replay_regressions(
        &root,
        &["whole_guest"],
        spice_server::fuzzing::run,
    ) {
        Ok(ran) => eprintln!("{ran} regression inputs replayed"),
        Err(failed) => panic!("fuzz regressions failing: {failed:#?}"),
    }
}
