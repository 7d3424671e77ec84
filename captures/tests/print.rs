//! A developer aid: `SPICE_CAPTURE=FILE cargo test -p spice-captures --test print -- --nocapture`
//! prints the summary and first messages of any capture (the same text as `cargo xtask
//! transcript`, without needing the xtask binary). Does nothing without the variable.

#[test]
fn print_capture_from_env() {
    let Some(path) = std::env::var_os("SPICE_CAPTURE") else {
        return;
    };
    let t = spice_captures::load(&path).expect("capture loads");
    print!("{}", spice_captures::render::summary(&t));
    print!("{}", spice_captures::render::first_messages(&t, 8));
}
