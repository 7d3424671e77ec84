//! The display channel: surfaces and draw commands from the QXL device to one client, with
//! image compression, caches and a byte-bounded queue.
//!
//! Built so far: the link-time capabilities and the channel plumbing. The drawing pipeline
//! comes with the display issue work (see [`crate::display`]).

use spice_proto::caps;
use spice_proto::messages::{DisplayClient, Message};

use crate::channel::core::{ChannelCore, ChannelError};
use crate::link::Linked;
use crate::server::{ChannelImpl, Shared};

/// The display capabilities this server offers.
pub const SERVER_CAPS: &[u32] = &[
    caps::display::SIZED_STREAM,
    caps::display::MONITORS_CONFIG,
    caps::display::COMPOSITE,
    caps::display::A8_SURFACE,
    caps::display::STREAM_REPORT,
    caps::display::LZ4_COMPRESSION,
    caps::display::PREF_COMPRESSION,
    caps::display::MULTI_CODEC,
    caps::display::CODEC_MJPEG,
    caps::display::PREF_VIDEO_CODEC_TYPE,
];

/// One client's display channel.
pub struct DisplayChannel {
    core: ChannelCore,
}

impl DisplayChannel {
    pub(crate) fn new(
        core: ChannelCore,
        _linked: &Linked,
        _shared: &mut Shared,
        _now_ms: u64,
    ) -> Self {
        DisplayChannel { core }
    }

    pub fn core(&self) -> &ChannelCore {
        &self.core
    }

    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        self.core.poll_timeout()
    }

    /// The connection is gone: give back what this client held.
    pub(crate) fn closed(&mut self, _shared: &mut Shared) {}
}

impl ChannelImpl for DisplayChannel {
    fn core_mut(&mut self) -> &mut ChannelCore {
        &mut self.core
    }

    fn handle_bytes(
        &mut self,
        data: &[u8],
        _shared: &mut Shared,
        now_ms: u64,
    ) -> Result<(), ChannelError> {
        for raw in self.core.handle_bytes(data, now_ms)? {
            let m = DisplayClient::decode(raw.header.msg_type, &raw.body)?;
            if let DisplayClient::Unknown { msg_type, .. } = m {
                return Err(ChannelError::Protocol(format!(
                    "unknown display message type {msg_type}"
                )));
            }
        }
        Ok(())
    }

    fn pump(&mut self, _shared: &mut Shared, _now_ms: u64) {}
}
