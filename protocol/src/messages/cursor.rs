//! The cursor channel. (Being filled in.)

use super::{BaseClient, BaseServer};
use crate::channel_messages;

channel_messages! {
    /// Server → client messages of the cursor channel.
    pub enum CursorServer(BaseServer) {}
}

channel_messages! {
    /// Client → server messages of the cursor channel.
    pub enum CursorClient(BaseClient) {}
}
