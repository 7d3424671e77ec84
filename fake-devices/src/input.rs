//! Fake keyboard, mouse and tablet: they record every event the server gives them, in order,
//! into one shared [`EventLog`], which the `spice-server` binary writes as JSON lines
//! (`--events-log`) and the simulator checks against what its clients sent. The fake sound
//! card ([`crate::audio`]) logs into the same log: its starts and stops, volume and mute
//! changes, and summaries of the samples it played or received (per second and per
//! start/stop span, never per frame).
//!
//! The keyboard behaves like a PS/2 keyboard whose guest acknowledges the lock keys: a
//! release of caps/num/scroll lock toggles the matching LED, which the server then reports to
//! clients.

use std::cell::RefCell;
use std::rc::Rc;

use serde::Serialize;
use spice_proto::messages::inputs::{KeyboardModifiers, MouseButtonMask};
use spice_server::vdi::{Keyboard, Mouse, Tablet};

/// One event a fake device received (or, for the sound card, made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum InputEvent {
    /// A scancode byte (`0xe0` prefixes extended keys; bit 7 is release).
    Scancode { byte: u8 },
    /// Relative motion (server mouse mode); `dz` is the wheel.
    Motion {
        dx: i32,
        dy: i32,
        dz: i32,
        buttons: u16,
    },
    /// Buttons changed (mouse).
    Buttons { buttons: u16 },
    /// Absolute position (client mouse mode).
    Position {
        x: u32,
        y: u32,
        display: u8,
        buttons: u16,
    },
    /// Wheel or button press on the tablet (`dz` 0 for a plain button press).
    Wheel { dz: i32, buttons: u16 },
    /// Buttons changed (tablet).
    TabletButtons { buttons: u16 },
    /// The tablet's coordinate space changed.
    LogicalSize { width: u32, height: u32 },
    /// The sound device started playing or capturing (`rate` Hz, `channels`).
    AudioStart { rate: u32, channels: u8 },
    /// The sound device stopped: the span since its start, in stereo frames, with the device
    /// times of the first and last frames of the span (`null` if none), and the device's
    /// total so far.
    AudioStop {
        frames: u64,
        first_ms: Option<u64>,
        last_ms: Option<u64>,
        total: u64,
    },
    /// A summary of about one second: the stereo frames handed over (playback) or received
    /// (record) in it, the device times of the first and last of them, and the total so far.
    AudioFrames {
        frames: u64,
        first_ms: u64,
        last_ms: u64,
        total: u64,
    },
    /// The device set its volume (one value per channel).
    AudioVolume { volume: Vec<u16> },
    /// The device muted (`true`) or unmuted.
    AudioMute { mute: bool },
    /// The device was run so late that it skipped `frames` stereo frames of its program
    /// (a sound card overrun: it catches up at most a bounded amount).
    AudioLate { frames: u64 },
}

/// Which device got an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Keyboard,
    Mouse,
    Tablet,
    /// The fake sound card's output ([`crate::audio::FakePlayback`]).
    Playback,
    /// The fake sound card's input ([`crate::audio::FakeRecord`]).
    Record,
}

/// An event with its device and the device clock's time when it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub seq: u64,
    pub t_ms: u64,
    pub device: Device,
    #[serde(flatten)]
    pub event: InputEvent,
}

/// Where logged records are also sent as they happen.
type Sink = Box<dyn FnMut(&Record)>;

#[derive(Default)]
struct LogInner {
    records: Vec<Record>,
    now_ms: u64,
    sink: Option<Sink>,
}

/// The shared, ordered log of input events (single-threaded, like the server's event loop).
#[derive(Clone, Default)]
pub struct EventLog(Rc<RefCell<LogInner>>);

impl EventLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// The time stamped on later events (the VMM's clock; set by whoever drives the server).
    pub fn set_now(&self, now_ms: u64) {
        self.0.borrow_mut().now_ms = now_ms;
    }

    /// Call `f` with every record as it is logged (the binary writes JSON lines from here).
    pub fn set_sink(&self, f: impl FnMut(&Record) + 'static) {
        self.0.borrow_mut().sink = Some(Box::new(f));
    }

    pub fn records(&self) -> Vec<Record> {
        self.0.borrow().records.clone()
    }

    pub fn len(&self) -> usize {
        self.0.borrow().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn push(&self, device: Device, event: InputEvent) {
        let mut inner = self.0.borrow_mut();
        let rec = Record {
            seq: inner.records.len() as u64,
            t_ms: inner.now_ms,
            device,
            event,
        };
        if let Some(sink) = inner.sink.as_mut() {
            sink(&rec);
        }
        inner.records.push(rec);
    }
}

/// Serialise a record as one JSON line (no trailing newline).
pub fn to_json_line(r: &Record) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

/// A keyboard that logs scancodes and keeps lock-key LEDs.
pub struct FakeKeyboard {
    log: EventLog,
    leds: KeyboardModifiers,
}

impl FakeKeyboard {
    pub fn new(log: EventLog) -> Self {
        FakeKeyboard {
            log,
            leds: KeyboardModifiers::EMPTY,
        }
    }
}

impl Keyboard for FakeKeyboard {
    fn push_scancode(&mut self, byte: u8) {
        self.log
            .push(Device::Keyboard, InputEvent::Scancode { byte });
        let toggle = match byte {
            0xba => KeyboardModifiers::CAPS_LOCK,
            0xc5 => KeyboardModifiers::NUM_LOCK,
            0xc6 => KeyboardModifiers::SCROLL_LOCK,
            _ => KeyboardModifiers::EMPTY,
        };
        self.leds = KeyboardModifiers(self.leds.0 ^ toggle.0);
    }

    fn leds(&self) -> KeyboardModifiers {
        self.leds
    }
}

/// A relative mouse that logs what it gets.
pub struct FakeMouse {
    log: EventLog,
}

impl FakeMouse {
    pub fn new(log: EventLog) -> Self {
        FakeMouse { log }
    }
}

impl Mouse for FakeMouse {
    fn motion(&mut self, dx: i32, dy: i32, dz: i32, buttons: MouseButtonMask) {
        self.log.push(
            Device::Mouse,
            InputEvent::Motion {
                dx,
                dy,
                dz,
                buttons: buttons.bits(),
            },
        );
    }

    fn buttons(&mut self, buttons: MouseButtonMask) {
        self.log.push(
            Device::Mouse,
            InputEvent::Buttons {
                buttons: buttons.bits(),
            },
        );
    }
}

/// An absolute tablet that logs what it gets.
pub struct FakeTablet {
    log: EventLog,
}

impl FakeTablet {
    pub fn new(log: EventLog) -> Self {
        FakeTablet { log }
    }
}

impl Tablet for FakeTablet {
    fn set_logical_size(&mut self, width: u32, height: u32) {
        self.log
            .push(Device::Tablet, InputEvent::LogicalSize { width, height });
    }

    fn position(&mut self, x: u32, y: u32, display: u8, buttons: MouseButtonMask) {
        self.log.push(
            Device::Tablet,
            InputEvent::Position {
                x,
                y,
                display,
                buttons: buttons.bits(),
            },
        );
    }

    fn wheel(&mut self, dz: i32, buttons: MouseButtonMask) {
        self.log.push(
            Device::Tablet,
            InputEvent::Wheel {
                dz,
                buttons: buttons.bits(),
            },
        );
    }

    fn buttons(&mut self, buttons: MouseButtonMask) {
        self.log.push(
            Device::Tablet,
            InputEvent::TabletButtons {
                buttons: buttons.bits(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_logged_in_order_and_caps_lock_toggles_leds() {
        let log = EventLog::new();
        let mut k = FakeKeyboard::new(log.clone());
        let mut t = FakeTablet::new(log.clone());
        log.set_now(5);
        k.push_scancode(0x3a);
        t.position(10, 20, 0, MouseButtonMask::LEFT);
        k.push_scancode(0xba);
        assert_eq!(k.leds(), KeyboardModifiers::CAPS_LOCK);
        let r = log.records();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].device, Device::Tablet);
        assert_eq!(
            to_json_line(&r[1]),
            r#"{"seq":1,"t_ms":5,"device":"tablet","event":"position","x":10,"y":20,"display":0,"buttons":1}"#
        );
    }
}
