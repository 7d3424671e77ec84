//! The main channel. (Being filled in.)

use super::{BaseClient, BaseServer};
use crate::channel_messages;

channel_messages! {
    /// Server → client messages of the main channel.
    pub enum MainServer(BaseServer) {}
}

channel_messages! {
    /// Client → server messages of the main channel.
    pub enum MainClient(BaseClient) {}
}
