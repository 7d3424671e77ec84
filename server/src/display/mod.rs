//! The display side shared by all clients: the display device and the record of which screen
//! regions changed when.
//!
//! Built: the framebuffer display ([`crate::vdi::Framebuffer`]). Each change the device
//! reports is logged with a sequence number; every display channel takes the changes it has not
//! seen into its own dirty region and sends those regions from the device's current pixels.
//! The log is bounded ([`MAX_UPDATES`]): a client that falls further behind is sent the whole
//! screen again, so nothing grows with a slow client. The QXL command pipeline (rings in guest
//! memory, drawables, surfaces) is not built yet.
//!
//! Must not: know about channels or encodings; read a clock (time is passed in).

use std::collections::VecDeque;

use spice_proto::types::Rect;

use crate::server::ImageCompression;
use crate::vdi::Framebuffer;

/// How many changes are remembered for clients that are behind.
pub const MAX_UPDATES: usize = 256;

/// The display state shared by every display channel.
pub struct Display {
    compression: ImageCompression,
    device: Option<Box<dyn Framebuffer>>,
    /// (sequence number, rectangle), oldest first.
    updates: VecDeque<(u64, Rect)>,
    next_seq: u64,
    /// The last time the device was serviced: a device asking to be woken at or before it
    /// again is woken a millisecond later, so a misbehaving device cannot spin the server.
    last_ms: Option<u64>,
}

impl Display {
    pub(crate) fn new(compression: ImageCompression) -> Self {
        Display {
            compression,
            device: None,
            updates: VecDeque::new(),
            next_seq: 1,
            last_ms: None,
        }
    }

    /// Attach the framebuffer display device.
    pub fn set_framebuffer(&mut self, fb: Box<dyn Framebuffer>) {
        self.device = Some(fb);
    }

    /// The image compression setting.
    pub fn compression(&self) -> ImageCompression {
        self.compression
    }

    /// Whether a display device is attached (display and cursor channels exist).
    pub fn has_device(&self) -> bool {
        self.device.is_some()
    }

    /// The screen size, if there is a device.
    pub fn size(&self) -> Option<(u32, u32)> {
        self.device.as_ref().map(|d| d.size())
    }

    /// The device's pixels (B, G, R, X rows, top first).
    pub fn pixels(&self) -> Option<&[u8]> {
        self.device.as_ref().map(|d| d.pixels())
    }

    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        let t = self.device.as_ref().and_then(|d| d.next_wakeup())?;
        Some(match self.last_ms {
            Some(last) => t.max(last + 1),
            None => t,
        })
    }

    pub(crate) fn handle_timeout(&mut self, now_ms: u64) {
        let Some(d) = self.device.as_mut() else {
            return;
        };
        self.last_ms = Some(now_ms);
        let (w, h) = d.size();
        for r in d.update(now_ms) {
            // Keep only what lies on the screen: a device's bad rectangle must not become a
            // bad read later.
            let r = Rect {
                left: r.left.clamp(0, w as i32),
                top: r.top.clamp(0, h as i32),
                right: r.right.clamp(0, w as i32),
                bottom: r.bottom.clamp(0, h as i32),
            };
            if r.is_empty() {
                continue;
            }
            self.updates.push_back((self.next_seq, r));
            self.next_seq += 1;
            if self.updates.len() > MAX_UPDATES {
                self.updates.pop_front();
            }
        }
    }

    /// The sequence number the next change will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Changes from sequence `since` on; `None` if some of them were forgotten (send all).
    pub(crate) fn updates_since(&self, since: u64) -> Option<Vec<Rect>> {
        match self.updates.front() {
            Some(&(first, _)) if first > since => None,
            _ => Some(
                self.updates
                    .iter()
                    .filter(|(s, _)| *s >= since)
                    .map(|(_, r)| r.clone())
                    .collect(),
            ),
        }
    }
}
