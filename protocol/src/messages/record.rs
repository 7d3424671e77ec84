//! The record channel. (Being filled in.)

use super::{BaseClient, BaseServer};
use crate::channel_messages;

channel_messages! {
    /// Server → client messages of the record channel.
    pub enum RecordServer(BaseServer) {}
}

channel_messages! {
    /// Client → server messages of the record channel.
    pub enum RecordClient(BaseClient) {}
}
