//! The playback channel. (Being filled in.)

use super::{BaseClient, BaseServer};
use crate::channel_messages;

channel_messages! {
    /// Server → client messages of the playback channel.
    pub enum PlaybackServer(BaseServer) {}
}

channel_messages! {
    /// Client → server messages of the playback channel.
    pub enum PlaybackClient(BaseClient) {}
}
