//! The display channel. (Being filled in.)

use super::{BaseClient, BaseServer};
use crate::channel_messages;

channel_messages! {
    /// Server → client messages of the display channel.
    pub enum DisplayServer(BaseServer) {}
}

channel_messages! {
    /// Client → server messages of the display channel.
    pub enum DisplayClient(BaseClient) {}
}
