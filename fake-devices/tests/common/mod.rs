//! Helpers the real-client tests share: the real client's availability, a running
//! `spice-server`, reading spicy-screenshot's PPM and our `--snapshot`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

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

pub const PYTHON: &str = "/usr/bin/python3";

/// Whether the real client is usable; `false` (after printing why) means skip.
pub fn real_client_available() -> bool {
    let ok = Command::new(PYTHON)
        .args([
            "-c",
            "import gi; gi.require_version('SpiceClientGLib', '2.0'); \
             from gi.repository import SpiceClientGLib",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI is set but SpiceClientGLib (python3-gi, gir1.2-spiceclientglib-2.0) is missing"
            );
        }
        eprintln!("skipped: SpiceClientGLib for {PYTHON} is not installed (apt-get install python3-gi gir1.2-spiceclientglib-2.0)");
    }
    ok
}

/// A running `spice-server`, killed on drop.
pub struct ServerProc {
    pub child: Child,
    pub port: u16,
}

/// The port a started `spice-server` prints on its first line (`listening on ADDR`).
pub fn listening_port(child: &mut Child) -> u16 {
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read spice-server's first line");
    line.trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

impl ServerProc {
    pub fn start(args: &[&str]) -> ServerProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spice-server"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start spice-server");
        let port = listening_port(&mut child);
        ServerProc { child, port }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
