//! The smartcard channel. (Being filled in.)

use super::{BaseClient, BaseServer};
use crate::channel_messages;

channel_messages! {
    /// Server → client messages of the smartcard channel.
    pub enum SmartcardServer(BaseServer) {}
}

channel_messages! {
    /// Client → server messages of the smartcard channel.
    pub enum SmartcardClient(BaseClient) {}
}
