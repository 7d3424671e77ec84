//! Helpers the real-client tests share: reading spicy-screenshot's PPM and our `--snapshot`.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// A binary PPM (P6, maxval 255) as (width, height, RGB bytes).
pub fn read_ppm(path: &Path) -> (u32, u32, Vec<u8>) {
    let b = std::fs::read(path).expect("read the screenshot");
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b[i] == b'#' {
            while b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        while !b[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(String::from_utf8_lossy(&b[start..i]).into_owned());
    }
    assert_eq!(fields[0], "P6");
    let (w, h): (u32, u32) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    (w, h, b[i + 1..].to_vec())
}

/// Our `--snapshot` PNG as (width, height, RGB bytes).
pub fn snapshot_rgb(scene: &str, size: &str, dir: &Path) -> (u32, u32, Vec<u8>) {
    let out = dir.join(format!("{scene}.png"));
    let st = Command::new(env!("CARGO_BIN_EXE_spice-server"))
        .args(["--scene", scene, "--size", size, "--snapshot"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    let rgb: Vec<u8> = buf[..info.buffer_size()]
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, rgb)
}

/// Whether `tool --help` runs; `false` (after printing why) means skip.
pub fn tool_available(tool: &str, package: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but {tool} (package {package}) is missing");
        }
        eprintln!("skipped: {tool} not installed (apt-get install {package})");
    }
    ok
}
