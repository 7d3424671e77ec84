//! The display side shared by all clients: the display device and the record of what changed
//! on the primary surface when, and the cursor.
//!
//! Two devices: a plain framebuffer ([`crate::vdi::Framebuffer`]: changes are rectangles, the
//! pixels are the device's) and the QXL device ([`qxl::QxlDisplay`]: changes are drawables,
//! executed on the server's copy of the surfaces, which is where pixels then come from). Each
//! change is logged with a sequence number; every display channel takes the changes it has not
//! seen, as draw messages while it keeps up, or as regions sent from the current pixels when
//! it does not. The log is bounded by count ([`MAX_UPDATES`]) and by the bytes of the
//! drawables it holds ([`Budgets::display_log_bytes`]): a client that falls further behind is
//! sent the whole screen again, so nothing grows with a slow client. With no display client
//! attached the log keeps no drawable at all (a client that attaches later starts from the
//! current surfaces).
//!
//! Must not: know about channels or encodings; read a clock (time is passed in).

pub mod qxl;

use std::collections::VecDeque;
use std::rc::Rc;

use spice_proto::codec::{PixelFormat, Pixmap};
use spice_proto::messages::DisplayServer;
use spice_proto::types::Rect;

use crate::budget::Budgets;
use crate::server::ImageCompression;
use crate::vdi::{Framebuffer, QxlDevice};
use qxl::{CursorState, Point16Value, QxlDisplay, QxlStats};

/// How many changes are remembered for clients that are behind.
pub const MAX_UPDATES: usize = 256;
/// How many cursor changes are remembered.
pub const MAX_CURSOR_UPDATES: usize = 64;

/// One change of the primary surface.
#[derive(Debug, Clone)]
pub struct Update {
    pub seq: u64,
    /// The area it changed (inside the surface).
    pub rect: Rect,
    /// The drawable that changed it (QXL), to send as is to clients that keep up.
    pub draw: Option<Rc<DisplayServer>>,
    /// The bytes `draw` holds ([`qxl::drawable_bytes`]; 0 without one).
    pub bytes: u64,
}

/// One change of the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorUpdate {
    /// Shape and/or position and visibility changed: send `set` with the current state.
    Set,
    Move(Point16Value),
    Hide,
    Trail(u16, u16),
}

enum Source {
    None,
    Framebuffer(Box<dyn Framebuffer>),
    Qxl(Box<QxlDisplay>),
}

/// The display state shared by every display channel.
pub struct Display {
    compression: ImageCompression,
    budgets: Budgets,
    /// Display channels attached (a drawable is only worth keeping for them).
    clients: usize,
    /// Bytes of the drawables in `updates`.
    held: u64,
    /// What the attached display channels report they hold (queued output, unsent drawables,
    /// GLZ dictionaries).
    client_bytes: u64,
    drop_release: bool,
    source: Source,
    updates: VecDeque<Update>,
    next_seq: u64,
    /// Bumped each time the primary surface is created or destroyed.
    primary_gen: u64,
    cursor: CursorState,
    cursor_log: VecDeque<(u64, CursorUpdate)>,
    next_cursor_seq: u64,
    /// Heads of the guest's monitors config (QXL), if it gave one.
    monitors: Option<Vec<spice_proto::display::Head>>,
    /// The last time the device was serviced: a device asking to be woken at or before it
    /// again is woken a millisecond later, so a misbehaving device cannot spin the server.
    last_ms: Option<u64>,
}

impl Display {
    /// `drop_release` is the test-only [`crate::server::Breakage::DropRelease`].
    pub(crate) fn new(compression: ImageCompression, drop_release: bool, budgets: Budgets) -> Self {
        Display {
            drop_release,
            compression,
            budgets,
            clients: 0,
            held: 0,
            client_bytes: 0,
            source: Source::None,
            updates: VecDeque::new(),
            next_seq: 1,
            primary_gen: 0,
            cursor: CursorState::default(),
            cursor_log: VecDeque::new(),
            next_cursor_seq: 1,
            monitors: None,
            last_ms: None,
        }
    }

    /// Attach the framebuffer display device.
    pub fn set_framebuffer(&mut self, fb: Box<dyn Framebuffer>) {
        self.source = Source::Framebuffer(fb);
        self.primary_gen += 1;
    }

    /// Attach a QXL display device (`spice_server_add_interface` of a `QXLInterface`).
    pub fn set_qxl(&mut self, dev: Box<dyn QxlDevice>) {
        let mut q = QxlDisplay::new(dev, self.budgets.canvas);
        if self.drop_release {
            q.drop_release = Some(10);
        }
        self.source = Source::Qxl(Box::new(q));
        self.primary_gen += 1;
    }

    /// The image compression setting.
    pub fn compression(&self) -> ImageCompression {
        self.compression
    }

    /// Whether a display device is attached (display and cursor channels exist).
    pub fn has_device(&self) -> bool {
        !matches!(self.source, Source::None)
    }

    /// Whether the device is QXL (it has a cursor ring).
    pub fn is_qxl(&self) -> bool {
        matches!(self.source, Source::Qxl(_))
    }

    /// The primary surface's size, if there is one.
    pub fn size(&self) -> Option<(u32, u32)> {
        match &self.source {
            Source::None => None,
            Source::Framebuffer(d) => Some(d.size()),
            Source::Qxl(q) => q.size(),
        }
    }

    /// Counts of the QXL device's commands, if it is one.
    pub fn qxl_stats(&self) -> Option<&QxlStats> {
        match &self.source {
            Source::Qxl(q) => Some(&q.stats),
            _ => None,
        }
    }

    /// Changes with each creation or destruction of the primary surface.
    pub fn primary_generation(&self) -> u64 {
        self.primary_gen
    }

    /// The rectangle `r` (inside the primary surface) of the current pixels, as 32-bit
    /// B, G, R, X rows.
    pub fn rect_pixmap(&self, r: &Rect) -> Option<Pixmap> {
        let (sw, sh) = self.size()?;
        if r.is_empty() || r.left < 0 || r.top < 0 || r.right as u32 > sw || r.bottom as u32 > sh {
            return None;
        }
        let (w, h) = (r.width() as usize, r.height() as usize);
        let mut data = Vec::with_capacity(w * h * 4);
        match &self.source {
            Source::None => return None,
            Source::Framebuffer(d) => {
                let pixels = d.pixels();
                let stride = sw as usize * 4;
                for y in r.top as usize..r.bottom as usize {
                    let start = y * stride + r.left as usize * 4;
                    data.extend_from_slice(pixels.get(start..start + w * 4)?);
                }
            }
            Source::Qxl(q) => {
                let p = q.primary()?;
                for y in r.top as usize..r.bottom as usize {
                    let start = y * sw as usize + r.left as usize;
                    for px in p.px.get(start..start + w)? {
                        let [b, g, rr, _] = px.to_le_bytes();
                        data.extend_from_slice(&[b, g, rr, 0]);
                    }
                }
            }
        }
        Pixmap::from_data(w as u32, h as u32, PixelFormat::Rgb32, w * 4, data).ok()
    }

    /// The whole primary surface as R, G, B, A rows (tests, snapshots).
    pub fn rgba(&self) -> Option<Vec<u8>> {
        let (w, h) = self.size()?;
        let p = self.rect_pixmap(&Rect::from_xywh(0, 0, w as i32, h as i32))?;
        Some(p.to_rgba8(&[]))
    }

    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        let t = match &self.source {
            Source::None => None,
            Source::Framebuffer(d) => d.next_wakeup(),
            Source::Qxl(q) => q.next_wakeup(),
        }?;
        Some(match self.last_ms {
            Some(last) => t.max(last + 1),
            None => t,
        })
    }

    /// The budgets the display enforces.
    pub(crate) fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// A display channel attached: drawables are worth keeping from now on.
    pub(crate) fn add_client(&mut self) {
        self.clients += 1;
    }

    /// A display channel went away.
    pub(crate) fn remove_client(&mut self) {
        self.clients = self.clients.saturating_sub(1);
        if self.clients == 0 {
            self.forget_drawables();
        }
    }

    /// A display channel's memory went from `old` to `new` bytes.
    pub(crate) fn client_memory(&mut self, old: u64, new: u64) {
        self.client_bytes = self.client_bytes.saturating_sub(old).saturating_add(new);
    }

    /// The bytes every attached display channel holds, as they last reported
    /// ([`crate::channel::display::DisplayChannel::memory`]).
    pub fn clients_bytes(&self) -> u64 {
        self.client_bytes
    }

    /// Display channels attached.
    pub fn clients(&self) -> usize {
        self.clients
    }

    /// Bytes of drawables the update log holds now.
    pub fn held_bytes(&self) -> u64 {
        self.held
    }

    /// Keep the areas of the logged changes, drop their drawables.
    fn forget_drawables(&mut self) {
        for u in &mut self.updates {
            u.draw = None;
            u.bytes = 0;
        }
        self.held = 0;
    }

    fn log(&mut self, rect: Rect, draw: Option<Rc<DisplayServer>>) {
        let mut draw = draw.filter(|_| self.clients > 0);
        let mut bytes = draw.as_deref().map_or(0, qxl::drawable_bytes);
        if bytes > self.budgets.display_log_bytes {
            tracing::debug!(
                bytes,
                limit = self.budgets.display_log_bytes,
                "display_log_bytes: a drawable larger than the log is kept as its area only"
            );
            draw = None;
            bytes = 0;
        }
        self.updates.push_back(Update {
            seq: self.next_seq,
            rect,
            draw,
            bytes,
        });
        self.held += bytes;
        self.next_seq += 1;
        while self.updates.len() > MAX_UPDATES || self.held > self.budgets.display_log_bytes {
            if self.held > self.budgets.display_log_bytes {
                tracing::debug!(
                    held = self.held,
                    limit = self.budgets.display_log_bytes,
                    "display_log_bytes: the oldest logged change forgotten"
                );
            }
            let Some(old) = self.updates.pop_front() else {
                break;
            };
            self.held -= old.bytes;
        }
    }

    fn log_cursor(&mut self, u: CursorUpdate) {
        self.cursor_log.push_back((self.next_cursor_seq, u));
        self.next_cursor_seq += 1;
        if self.cursor_log.len() > MAX_CURSOR_UPDATES {
            self.cursor_log.pop_front();
        }
    }

    pub(crate) fn handle_timeout(&mut self, now_ms: u64) {
        self.last_ms = Some(now_ms);
        match &mut self.source {
            Source::None => {}
            Source::Framebuffer(d) => {
                let (w, h) = d.size();
                let rects = d.update(now_ms);
                for r in rects {
                    // Keep only what lies on the screen: a device's bad rectangle must not
                    // become a bad read later.
                    let r = Rect {
                        left: r.left.clamp(0, w as i32),
                        top: r.top.clamp(0, h as i32),
                        right: r.right.clamp(0, w as i32),
                        bottom: r.bottom.clamp(0, h as i32),
                    };
                    if !r.is_empty() {
                        self.log(r, None);
                    }
                }
            }
            Source::Qxl(q) => {
                let out = q.service(now_ms, &self.budgets, self.clients > 0);
                if out.primary_changed {
                    self.primary_gen += 1;
                    self.updates.clear();
                    self.held = 0;
                }
                for (r, d) in out.draws {
                    self.log(r, d);
                }
                if let Some(heads) = out.monitors {
                    self.monitors = Some(
                        heads
                            .iter()
                            .map(|h| spice_proto::display::Head {
                                monitor_id: h.id,
                                surface_id: h.surface_id,
                                width: h.width,
                                height: h.height,
                                x: h.x,
                                y: h.y,
                                flags: h.flags,
                            })
                            .collect(),
                    );
                }
                for c in out.cursor {
                    self.cursor_command(c);
                }
            }
        }
    }

    fn cursor_command(&mut self, c: crate::qxl::CursorCommand) {
        use crate::qxl::CursorCommand as C;
        match c {
            C::Set {
                position,
                visible,
                shape,
            } => {
                self.cursor.position = Point16Value {
                    x: position.x,
                    y: position.y,
                };
                self.cursor.visible = visible;
                self.cursor.shape = shape.map(Rc::new);
                self.log_cursor(CursorUpdate::Set);
            }
            C::Move(p) => {
                let p = Point16Value { x: p.x, y: p.y };
                self.cursor.position = p;
                self.cursor.visible = true;
                self.log_cursor(CursorUpdate::Move(p));
            }
            C::Hide => {
                self.cursor.visible = false;
                self.log_cursor(CursorUpdate::Hide);
            }
            C::Trail { length, frequency } => {
                self.cursor.trail = (length, frequency);
                self.log_cursor(CursorUpdate::Trail(length, frequency));
            }
        }
    }

    /// The sequence number the next change will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Changes from sequence `since` on; `None` if some of them were forgotten (send all).
    pub(crate) fn updates_since(&self, since: u64) -> Option<Vec<Update>> {
        match self.updates.front() {
            Some(u) if u.seq > since => None,
            None if since < self.next_seq => None,
            _ => Some(
                self.updates
                    .iter()
                    .filter(|u| u.seq >= since)
                    .cloned()
                    .collect(),
            ),
        }
    }

    /// The cursor now.
    pub fn cursor(&self) -> &CursorState {
        &self.cursor
    }

    pub(crate) fn next_cursor_seq(&self) -> u64 {
        self.next_cursor_seq
    }

    /// Cursor changes from `since` on; `None` if some were forgotten (send the state).
    pub(crate) fn cursor_since(&self, since: u64) -> Option<Vec<CursorUpdate>> {
        match self.cursor_log.front() {
            Some(&(first, _)) if first > since => None,
            None if since < self.next_cursor_seq => None,
            _ => Some(
                self.cursor_log
                    .iter()
                    .filter(|(s, _)| *s >= since)
                    .map(|(_, u)| *u)
                    .collect(),
            ),
        }
    }

    /// A client's monitors request: to the QXL device, if it takes them (the reference passes
    /// them to the device the same way, or else to the agent).
    pub(crate) fn client_monitors_config(&mut self, monitors: &[crate::vdi::ClientMonitor]) {
        if let Source::Qxl(q) = &mut self.source {
            q.client_monitors_config(monitors);
        }
    }

    /// The guest's monitors, if it gave a config (QXL).
    pub fn monitors(&self) -> Option<&[spice_proto::display::Head]> {
        self.monitors.as_deref()
    }
}
