//! The cursor channel: the cursor shape and position from the QXL cursor ring.
//!
//! Built so far: `init` with the current (no) cursor. Shapes, moves, hides, trails and the
//! cursor cache come with the QXL cursor ring.

use spice_proto::messages::cursor::{Cursor, CursorFlags, CursorInit};
use spice_proto::messages::CursorServer;
use spice_proto::types::Point16;

use crate::channel::core::{ChannelCore, ChannelError};
use crate::link::Linked;
use crate::server::{ChannelImpl, Shared};

/// One client's cursor channel.
pub struct CursorChannel {
    core: ChannelCore,
}

impl CursorChannel {
    pub(crate) fn new(
        mut core: ChannelCore,
        _linked: &Linked,
        _shared: &Shared,
        send_init: bool,
    ) -> Self {
        if send_init {
            core.send(&CursorServer::Init(CursorInit {
                position: Point16 { x: 0, y: 0 },
                trail_length: 0,
                trail_frequency: 0,
                visible: 0,
                cursor: Cursor {
                    flags: CursorFlags::EMPTY,
                    header: None,
                    data: Default::default(),
                },
            }));
        }
        CursorChannel { core }
    }

    pub fn core(&self) -> &ChannelCore {
        &self.core
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

    fn pump(&mut self, _shared: &mut Shared, _now_ms: u64) {}
}
