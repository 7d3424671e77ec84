//! Spicevmc channels (usbredir) and the port channels (port, webdav). (Being filled in.)

use super::{BaseClient, BaseServer};
use crate::channel_messages;

channel_messages! {
    pub enum SpicevmcServer(BaseServer) {}
}
channel_messages! {
    pub enum SpicevmcClient(BaseClient) {}
}
channel_messages! {
    pub enum PortServer(BaseServer) {}
}
channel_messages! {
    pub enum PortClient(BaseClient) {}
}
