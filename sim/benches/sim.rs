//! The simulator's speed on the standard scenario: 2 clients, 30 simulated seconds, all
//! faults, seed 0. `cargo xtask bench sim` turns criterion's time per run into simulated
//! seconds per wall second and seeds per minute (it reads `sim_ms.txt`, written here, for the
//! run's simulated length).

use criterion::{criterion_group, criterion_main, Criterion};
use spice_sim::{run, Faults, Options};

fn standard() -> Options {
    Options {
        seed: 0,
        clients: 2,
        faults: Faults::all(),
        duration_s: 30,
        ..Options::default()
    }
}

fn bench(c: &mut Criterion) {
    let o = standard();
    let first = run(&o);
    assert!(first.passed(), "{:?}", first.violations);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion/sim");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("sim_ms.txt"), first.sim_ms.to_string());
    let mut g = c.benchmark_group("sim");
    g.sample_size(10);
    g.bench_function("standard", |b| b.iter(|| run(&o).hash));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
