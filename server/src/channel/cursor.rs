//! The cursor channel: the cursor shape and position from the QXL cursor ring.
//!
//! On link it sends `init` with the current cursor (position, trail, visibility, shape). Then
//! each change of the display's cursor goes out as `set`, `move`, `hide` or `trail`. Shapes
//! with a guest `unique` id are put in the client's cursor cache (`CACHE_ME`) the first time
//! and sent `FROM_CACHE` after that; when [`MAX_CACHED_CURSORS`] are cached the cache is
//! emptied with `inval_all` and starts again.
//!
//! Only while the channel core allows (`can_send`: ack window and output cap); what waits is
//! coalesced: the current state makes every earlier `set` obsolete, so a client with a `set`
//! among its unsent changes, or one that fell behind the display's cursor log, gets one `set`
//! of the current state (the newest shape only), and the trail if it changed. Moves, hides and
//! trails alone go one by one, as they came.
//!
//! Must not: queue anything past `can_send` but the `init` of a fresh channel (and the
//! `inval_all` that goes with a `set`); send one shape more than once per pump.

use std::collections::BTreeSet;

use spice_proto::messages::cursor::{
    Cursor, CursorFlags, CursorHeader, CursorInit, CursorSet, CursorTrail, CursorType,
};
use spice_proto::messages::CursorServer;

use crate::channel::core::{ChannelCore, ChannelError};
use crate::display::qxl::CursorState;
use crate::display::CursorUpdate;
use crate::link::Linked;
use crate::server::{ChannelImpl, Shared};

/// Shapes one client's cursor cache holds before it is emptied.
pub const MAX_CACHED_CURSORS: usize = 64;

/// One client's cursor channel.
pub struct CursorChannel {
    core: ChannelCore,
    seen: u64,
    cached: BTreeSet<u64>,
}

impl CursorChannel {
    pub(crate) fn new(
        core: ChannelCore,
        _linked: &Linked,
        shared: &Shared,
        send_init: bool,
    ) -> Self {
        let mut c = CursorChannel {
            core,
            seen: shared.display.next_cursor_seq(),
            cached: BTreeSet::new(),
        };
        if send_init {
            let st = shared.display.cursor().clone();
            let cursor = c.wire_cursor(&st);
            c.core.send(&CursorServer::Init(CursorInit {
                position: st.position.wire(),
                trail_length: st.trail.0,
                trail_frequency: st.trail.1,
                visible: u8::from(st.visible && st.shape.is_some()),
                cursor,
            }));
        }
        c
    }

    pub fn core(&self) -> &ChannelCore {
        &self.core
    }

    /// The shape of `st` as this client should get it (through its cache). May queue an
    /// `inval_all` first (when the cache is full).
    fn wire_cursor(&mut self, st: &CursorState) -> Cursor {
        let Some(shape) = &st.shape else {
            return Cursor {
                flags: CursorFlags::EMPTY,
                header: None,
                data: Default::default(),
            };
        };
        let h = &shape.header;
        let header = CursorHeader {
            unique: h.unique,
            cursor_type: CursorType::from_raw(h.cursor_type.min(255) as u8),
            width: h.width,
            height: h.height,
            hot_spot_x: h.hot_spot_x,
            hot_spot_y: h.hot_spot_y,
        };
        if h.unique != 0 && self.cached.contains(&h.unique) {
            return Cursor {
                flags: CursorFlags::FROM_CACHE,
                header: Some(header),
                data: Default::default(),
            };
        }
        let mut flags = CursorFlags::EMPTY;
        if h.unique != 0 {
            if self.cached.len() >= MAX_CACHED_CURSORS {
                self.core.send(&CursorServer::InvalAll);
                self.cached.clear();
            }
            self.cached.insert(h.unique);
            flags = CursorFlags::CACHE_ME;
        }
        Cursor {
            flags,
            header: Some(header),
            data: shape.data.clone().into(),
        }
    }

    fn trail(&mut self, (length, frequency): (u16, u16)) {
        self.core
            .send(&CursorServer::Trail(CursorTrail { length, frequency }));
    }

    /// Whether `st`'s shape would empty the client's cache (an `inval_all` goes first).
    fn needs_inval(&self, st: &CursorState) -> bool {
        st.shape.as_ref().is_some_and(|s| {
            let u = s.header.unique;
            u != 0 && !self.cached.contains(&u) && self.cached.len() >= MAX_CACHED_CURSORS
        })
    }

    /// Send `set` with the current state. Returns false (nothing but the cache's `inval_all`
    /// sent) when that filled the queue: the `set` waits for room.
    fn set(&mut self, st: &CursorState) -> bool {
        if self.needs_inval(st) {
            self.core.send(&CursorServer::InvalAll);
            self.cached.clear();
            if !self.core.can_send() {
                return false;
            }
        }
        let cursor = self.wire_cursor(st);
        self.core.send(&CursorServer::Set(CursorSet {
            position: st.position.wire(),
            visible: u8::from(st.visible),
            cursor,
        }));
        true
    }
}

impl ChannelImpl for CursorChannel {
    fn core_mut(&mut self) -> &mut ChannelCore {
        &mut self.core
    }

    fn handle_bytes(
        &mut self,
        data: &[u8],
        _shared: &mut Shared,
        now_ms: u64,
    ) -> Result<(), ChannelError> {
        if let Some(raw) = self.core.handle_bytes(data, now_ms)?.into_iter().next() {
            // The cursor channel has no client messages of its own.
            return Err(ChannelError::Protocol(format!(
                "unexpected cursor message type {}",
                raw.header.msg_type
            )));
        }
        Ok(())
    }

    fn pump(&mut self, shared: &mut Shared, _now_ms: u64) {
        let next = shared.display.next_cursor_seq();
        if self.seen >= next || !self.core.can_send() {
            return;
        }
        let st = shared.display.cursor();
        let Some(us) = shared.display.cursor_since(self.seen) else {
            // Behind the log: the current state, trail included.
            let st = st.clone();
            if !self.set(&st) {
                return;
            }
            if st.trail != (0, 0) {
                self.trail(st.trail);
            }
            self.seen = next;
            return;
        };
        if us.iter().any(|u| matches!(u, CursorUpdate::Set)) {
            // The current state replaces every earlier shape, position and visibility.
            let st = st.clone();
            if !self.set(&st) {
                return;
            }
            if us.iter().any(|u| matches!(u, CursorUpdate::Trail(..))) {
                self.trail(st.trail);
            }
            self.seen = next;
            return;
        }
        for u in us {
            if !self.core.can_send() {
                return;
            }
            match u {
                CursorUpdate::Set => {}
                CursorUpdate::Move(p) => self.core.send(&CursorServer::Move(p.wire())),
                CursorUpdate::Hide => self.core.send(&CursorServer::Hide),
                CursorUpdate::Trail(length, frequency) => self.trail((length, frequency)),
            }
            self.seen += 1;
        }
    }
}
