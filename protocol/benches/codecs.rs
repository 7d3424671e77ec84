//! Codec speed on the fixed image set (`spice_proto::codec::images`), with in-run baselines
//! on the same bytes: memcpy (the physical limit), lz4_flex and zlib level 1 (flate2).
//! `cargo xtask bench codecs` runs this and prints the table; the compressed sizes are written
//! to `target/criterion/codecs/sizes.json` for the ratios.

use std::hint::black_box;
use std::io::{Read, Write};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use spice_proto::codec::{glz, images, lz, quic, Limits};

fn zlib1(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(1));
    e.write_all(data).expect("in-memory write");
    e.finish().expect("in-memory finish")
}

fn unzlib(data: &[u8], n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    flate2::read::ZlibDecoder::new(data)
        .read_to_end(&mut out)
        .expect("valid zlib");
    out
}

fn bench(c: &mut Criterion) {
    let mut sizes = serde_like::Obj::default();
    for (name, img) in images::bench_set() {
        let raw = img.data().to_vec();
        let q = quic::encode(&img).expect("quic");
        let l = lz::encode(&img, true).expect("lz");
        let (_, g) = glz::Encoder::new(1 << 24)
            .expect("glz")
            .encode(&img, true)
            .expect("glz");
        let l4 = lz4_flex::compress_prepend_size(&raw);
        let z = zlib1(&raw);
        sizes.push(
            name,
            &[
                ("bytes", raw.len()),
                ("quic", q.len()),
                ("lz", l.len()),
                ("glz", g.len()),
                ("lz4_flex", l4.len()),
                ("zlib1", z.len()),
            ],
        );
        let mut grp = c.benchmark_group(format!("codecs/{name}"));
        grp.throughput(Throughput::Bytes(raw.len() as u64));
        grp.sample_size(10);
        grp.bench_function("memcpy", |b| {
            let mut dst = vec![0u8; raw.len()];
            b.iter(|| {
                dst.copy_from_slice(black_box(&raw));
                black_box(&dst);
            })
        });
        grp.bench_function("quic_enc", |b| b.iter(|| quic::encode(black_box(&img))));
        grp.bench_function("quic_dec", |b| b.iter(|| quic::decode(black_box(&q))));
        grp.bench_function("lz_enc", |b| b.iter(|| lz::encode(black_box(&img), true)));
        grp.bench_function("lz_dec", |b| b.iter(|| lz::decode(black_box(&l))));
        grp.bench_function("glz_enc", |b| {
            b.iter(|| {
                glz::Encoder::new(1 << 24)
                    .expect("glz")
                    .encode(black_box(&img), true)
            })
        });
        grp.bench_function("glz_dec", |b| {
            b.iter(|| glz::Decoder::new(Limits::default(), 1 << 24).decode(black_box(&g), &[]))
        });
        grp.bench_function("lz4_flex_enc", |b| {
            b.iter(|| lz4_flex::compress_prepend_size(black_box(&raw)))
        });
        grp.bench_function("lz4_flex_dec", |b| {
            b.iter(|| lz4_flex::decompress_size_prepended(black_box(&l4)))
        });
        grp.bench_function("zlib1_enc", |b| b.iter(|| zlib1(black_box(&raw))));
        grp.bench_function("zlib1_dec", |b| b.iter(|| unzlib(black_box(&z), raw.len())));
        grp.finish();
    }
    // Where criterion writes its estimates: CARGO_TARGET_DIR (inherited when set) or target/.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"));
    let dir = target.join("criterion/codecs");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("sizes.json"), sizes.finish());
}

/// A few lines of JSON writing, to keep serde out of this crate's dev-dependencies.
mod serde_like {
    #[derive(Default)]
    pub struct Obj(Vec<String>);

    impl Obj {
        pub fn push(&mut self, name: &str, fields: &[(&str, usize)]) {
            let f: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("\"{k}\": {v}"))
                .collect();
            self.0.push(format!("\"{name}\": {{{}}}", f.join(", ")));
        }
        pub fn finish(self) -> String {
            format!("{{{}}}\n", self.0.join(",\n"))
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
