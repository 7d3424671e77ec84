//! spice-sim: deterministic whole-system simulation of spice-rs on turmoil.
//!
//! One run ([`run`]) builds a world from [`Options`]: a server host running the real
//! [`spice_server::Server`] behind the real async shell ([`spice_server::net::serve`]) with
//! the fake devices, and `clients` client hosts, each following a plan generated from the seed
//! ([`plan`]). Faults ([`Faults`]) come from the same seed: link latency and jitter, links held
//! and released, partitions, clients that crash mid-message, stop reading, or send hostile
//! bytes. Clients also play and record sound ([`audio`]) through the fake sound card; the
//! playback connections are flow-controlled ([`flow`]) so a client that stops reading is
//! seen by the server as it would be over real TCP. After the run the invariants are checked ([`invariants`]) and the run's transcript
//! (every byte each way, with simulated times) is hashed: same seed and options, same hash.
//!
//! Must not: read the wall clock, spawn threads, or take randomness from anywhere but the seed.

pub mod audio;
pub mod client;
pub mod flow;
pub mod invariants;
pub mod pcap;
pub mod plan;
pub mod screen;
pub mod world;

use std::str::FromStr;

pub use world::{run, Outcome};

/// The fault classes a run may inject; each can be switched on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    /// Per-link latency and jitter.
    pub latency: bool,
    /// A client's link held (nothing delivered) for a while, then released.
    pub hold: bool,
    /// A client's link partitioned (segments lost) for a while, then repaired.
    pub partition: bool,
    /// A client that vanishes at some point, possibly mid-message or mid-handshake.
    pub crash: bool,
    /// A client that stops reading for a while.
    pub stall: bool,
    /// A client that sends hostile bytes on one channel.
    pub hostile: bool,
    /// The display device that stops servicing the server for a while (then catches up).
    pub device: bool,
}

impl Faults {
    pub const NAMES: [&'static str; 7] = [
        "latency",
        "hold",
        "partition",
        "crash",
        "stall",
        "hostile",
        "device",
    ];

    pub fn all() -> Faults {
        Faults {
            latency: true,
            hold: true,
            partition: true,
            crash: true,
            stall: true,
            hostile: true,
            device: true,
        }
    }

    pub fn none() -> Faults {
        Faults::default()
    }

    /// Only the one named class.
    pub fn only(name: &str) -> Option<Faults> {
        let mut f = Faults::none();
        f.set(name, true).then_some(f)
    }

    fn set(&mut self, name: &str, on: bool) -> bool {
        let slot = match name {
            "latency" => &mut self.latency,
            "hold" => &mut self.hold,
            "partition" => &mut self.partition,
            "crash" => &mut self.crash,
            "stall" => &mut self.stall,
            "hostile" => &mut self.hostile,
            "device" => &mut self.device,
            _ => return false,
        };
        *slot = on;
        true
    }

    /// The switched-on classes, comma-separated (`none` if none).
    pub fn names(&self) -> String {
        let on: Vec<&str> = Self::NAMES
            .iter()
            .copied()
            .filter(|n| {
                let mut f = *self;
                // A class is on if switching it off changes the set.
                f.set(n, false);
                f != *self
            })
            .collect();
        if on.is_empty() {
            "none".into()
        } else {
            on.join(",")
        }
    }
}

impl FromStr for Faults {
    type Err = String;
    /// `all`, `none`, or a comma-separated list of class names (`latency,crash`); a class
    /// prefixed with `-` is switched off (`all,-partition`).
    fn from_str(s: &str) -> Result<Faults, String> {
        let mut f = Faults::none();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => f = Faults::all(),
                "none" => f = Faults::none(),
                _ => {
                    let (name, on) = match part.strip_prefix('-') {
                        Some(n) => (n, false),
                        None => (part, true),
                    };
                    if !f.set(name, on) {
                        return Err(format!(
                            "unknown fault class {name:?} (all, none, {})",
                            Self::NAMES.join(", ")
                        ));
                    }
                }
            }
        }
        Ok(f)
    }
}

/// Everything one run depends on.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub clients: u32,
    pub faults: Faults,
    /// Simulated seconds the clients act for (the run then lets the world go quiet).
    pub duration_s: u64,
    /// The server's per-connection output cap (small, so the cap is exercised).
    pub output_cap: usize,
    /// A deliberately broken server behaviour (to prove the invariants can fail).
    pub breakage: Option<spice_server::server::Breakage>,
    /// Keep every byte of the run in the outcome (for `--pcap`).
    pub keep_traffic: bool,
    /// The fake display's size (it plays the `qxl-desktop` or `desktop` scene).
    pub screen: (u32, u32),
    /// The display device of the server host.
    pub device: Device,
}

/// The display device a world's server host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The fake QXL device playing `qxl-desktop` (drawables in guest memory, rings, releases).
    #[default]
    Qxl,
    /// The fake framebuffer playing `desktop`.
    Framebuffer,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Qxl => "qxl",
            Device::Framebuffer => "fb",
        }
    }
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Device, String> {
        match s {
            "qxl" => Ok(Device::Qxl),
            "fb" | "framebuffer" => Ok(Device::Framebuffer),
            _ => Err(format!("unknown device {s:?} (qxl, fb)")),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 0,
            clients: 2,
            faults: Faults::all(),
            duration_s: 10,
            output_cap: 256 * 1024,
            breakage: None,
            keep_traffic: false,
            screen: (320, 240),
            device: Device::Qxl,
        }
    }
}

impl Options {
    /// The command line that reproduces this run.
    pub fn repro_command(&self) -> String {
        let mut s = format!(
            "cargo xtask sim --seed {} --clients {} --faults {} --duration {}",
            self.seed,
            self.clients,
            self.faults.names(),
            self.duration_s
        );
        if let Some(b) = &self.breakage {
            s.push_str(&format!(" --break {}", b.name()));
        }
        if self.device != Device::Qxl {
            s.push_str(&format!(" --device {}", self.device.name()));
        }
        s
    }
}
