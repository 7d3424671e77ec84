//! The base channel: messages every channel shares (types 1..=8 server → client, 1..=6 client →
//! server): flow control (`set_ack`/`ack`), `ping`/`pong`, migration, `notify`,
//! `disconnecting`, `wait_for_channels`, `list`.

use crate::error::Result;
use crate::link::LinkError;
use crate::wire::{Bytes, Decode, Encode, Reader, Writer};
use crate::{wire_enum, wire_flags, wire_struct};

wire_flags! {
    /// `migrate_flags`.
    pub struct MigrateFlags: u32 {
        const NEED_FLUSH = 1 << 0;
        const NEED_DATA_TRANSFER = 1 << 1;
    }
}

wire_enum! {
    /// `notify_severity`.
    pub enum NotifySeverity: u32 {
        Info = 0 => "info",
        Warn = 1 => "warn",
        Error = 2 => "error",
    }
}

wire_enum! {
    /// `notify_visibility`.
    pub enum NotifyVisibility: u32 {
        Low = 0 => "low",
        Medium = 1 => "medium",
        High = 2 => "high",
    }
}

wire_struct! {
    /// `set_ack`: the client acks every `window` messages, after first answering `ack_sync`
    /// with `generation`.
    pub struct SetAck {
        pub generation: u32,
        pub window: u32,
    }
}

/// `ping`: `data` pads the message for bandwidth measurement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct Ping {
    pub id: u32,
    pub timestamp: u64,
    pub data: Bytes,
}

impl Encode for Ping {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u32(self.id);
        w.u64(self.timestamp);
        w.bytes(&self.data);
    }
}
impl Decode for Ping {
    const MIN_SIZE: usize = 12;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Ping {
            id: r.u32("ping id")?,
            timestamp: r.u64("ping timestamp")?,
            data: r.rest().into(),
        })
    }
}

wire_struct! {
    /// `ChannelWait` / `WaitForChannel`: wait until `channel_type`/`channel_id` has processed
    /// `message_serial`.
    pub struct ChannelWait {
        pub channel_type: u8,
        pub channel_id: u8,
        pub message_serial: u64,
    }
}

/// `wait_for_channels` (also the body of display's `inval_all_pixmaps`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct WaitForChannels {
    #[arbitrary(with = crate::wire::arb::vec_max::<ChannelWait, 255>)]
    pub wait_list: Vec<ChannelWait>,
}

impl Encode for WaitForChannels {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        let n = self.wait_list.len().min(u8::MAX as usize);
        w.u8(n as u8);
        w.all(&self.wait_list[..n]);
    }
}
impl Decode for WaitForChannels {
    const MIN_SIZE: usize = 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let n = r.u8("wait_count")?;
        Ok(WaitForChannels {
            wait_list: r.vec(n as u64, "wait_list")?,
        })
    }
}

wire_struct! {
    /// `disconnecting` (both directions; `SpiceMsgDisconnect`).
    pub struct Disconnecting {
        pub time_stamp: u64,
        pub reason: LinkError,
    }
}

/// `notify`: a message for the user. `what` is an error, warning or info code.
///
/// spice-server writes `message_len` (the text's length) and then the text *with* its NUL
/// terminator; we do the same, and on decoding drop one NUL that follows the text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct Notify {
    pub time_stamp: u64,
    pub severity: NotifySeverity,
    pub visibility: NotifyVisibility,
    pub what: u32,
    pub message: Bytes,
}

impl Encode for Notify {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u64(self.time_stamp);
        self.severity.encode(w);
        self.visibility.encode(w);
        w.u32(self.what);
        w.u32(self.message.len() as u32);
        w.bytes(&self.message);
        w.u8(0);
    }
}
impl Decode for Notify {
    const MIN_SIZE: usize = 24;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let time_stamp = r.u64("notify time_stamp")?;
        let severity = NotifySeverity::decode(r)?;
        let visibility = NotifyVisibility::decode(r)?;
        let what = r.u32("notify what")?;
        let len = r.u32("notify message_len")?;
        let message = r.bytes(len as u64, "notify message")?.into();
        if r.left() > 0 {
            // The reference's NUL terminator (counted outside message_len).
            r.u8("notify NUL")?;
        }
        Ok(Notify {
            time_stamp,
            severity,
            visibility,
            what,
            message,
        })
    }
}

wire_struct! {
    /// `pong`: the client's answer to `ping`.
    pub struct Pong {
        pub id: u32,
        pub timestamp: u64,
    }
}

impl Encode for Bytes {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.bytes(&self.0)
    }
}
/// `Data`: the rest of the message.
impl Decode for Bytes {
    const MIN_SIZE: usize = 0;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(r.rest().into())
    }
}

/// Server → client messages every channel shares.
#[derive(Debug, Clone, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum BaseServer {
    /// 1 `migrate`.
    Migrate(MigrateFlags),
    /// 2 `migrate_data`.
    MigrateData(Bytes),
    /// 3 `set_ack`.
    SetAck(SetAck),
    /// 4 `ping`.
    Ping(Ping),
    /// 5 `wait_for_channels`.
    WaitForChannels(WaitForChannels),
    /// 6 `disconnecting`.
    Disconnecting(Disconnecting),
    /// 7 `notify`.
    Notify(Notify),
    /// 8 `list`: a `SpiceSubMessageList`, kept raw.
    List(Bytes),
}

impl BaseServer {
    /// Every base message type and its spice.proto name.
    pub const TYPES: &'static [(u16, &'static str)] = &[
        (1, "migrate"),
        (2, "migrate_data"),
        (3, "set_ack"),
        (4, "ping"),
        (5, "wait_for_channels"),
        (6, "disconnecting"),
        (7, "notify"),
        (8, "list"),
    ];

    pub fn msg_type(&self) -> u16 {
        match self {
            BaseServer::Migrate(_) => 1,
            BaseServer::MigrateData(_) => 2,
            BaseServer::SetAck(_) => 3,
            BaseServer::Ping(_) => 4,
            BaseServer::WaitForChannels(_) => 5,
            BaseServer::Disconnecting(_) => 6,
            BaseServer::Notify(_) => 7,
            BaseServer::List(_) => 8,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            BaseServer::Migrate(_) => "migrate",
            BaseServer::MigrateData(_) => "migrate_data",
            BaseServer::SetAck(_) => "set_ack",
            BaseServer::Ping(_) => "ping",
            BaseServer::WaitForChannels(_) => "wait_for_channels",
            BaseServer::Disconnecting(_) => "disconnecting",
            BaseServer::Notify(_) => "notify",
            BaseServer::List(_) => "list",
        }
    }

    pub fn encode_body<'a>(&'a self, w: &mut Writer<'a>) {
        match self {
            BaseServer::Migrate(m) => m.encode(w),
            BaseServer::MigrateData(m) | BaseServer::List(m) => m.encode(w),
            BaseServer::SetAck(m) => m.encode(w),
            BaseServer::Ping(m) => m.encode(w),
            BaseServer::WaitForChannels(m) => m.encode(w),
            BaseServer::Disconnecting(m) => m.encode(w),
            BaseServer::Notify(m) => m.encode(w),
        }
    }

    /// `None` if `msg_type` is not a base message.
    pub fn try_decode(msg_type: u16, body: &[u8]) -> Option<Result<Self>> {
        let r = &mut Reader::new(body);
        Some(match msg_type {
            1 => MigrateFlags::decode(r).map(BaseServer::Migrate),
            2 => Bytes::decode(r).map(BaseServer::MigrateData),
            3 => SetAck::decode(r).map(BaseServer::SetAck),
            4 => Ping::decode(r).map(BaseServer::Ping),
            5 => WaitForChannels::decode(r).map(BaseServer::WaitForChannels),
            6 => Disconnecting::decode(r).map(BaseServer::Disconnecting),
            7 => Notify::decode(r).map(BaseServer::Notify),
            8 => Bytes::decode(r).map(BaseServer::List),
            _ => return None,
        })
    }
}

/// Client → server messages every channel shares.
#[derive(Debug, Clone, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum BaseClient {
    /// 1 `ack_sync`: the generation of the `set_ack` being answered.
    AckSync(u32),
    /// 2 `ack`.
    Ack,
    /// 3 `pong`.
    Pong(Pong),
    /// 4 `migrate_flush_mark`.
    MigrateFlushMark,
    /// 5 `migrate_data`.
    MigrateData(Bytes),
    /// 6 `disconnecting`.
    Disconnecting(Disconnecting),
}

impl BaseClient {
    /// Every base message type and its spice.proto name.
    pub const TYPES: &'static [(u16, &'static str)] = &[
        (1, "ack_sync"),
        (2, "ack"),
        (3, "pong"),
        (4, "migrate_flush_mark"),
        (5, "migrate_data"),
        (6, "disconnecting"),
    ];

    pub fn msg_type(&self) -> u16 {
        match self {
            BaseClient::AckSync(_) => 1,
            BaseClient::Ack => 2,
            BaseClient::Pong(_) => 3,
            BaseClient::MigrateFlushMark => 4,
            BaseClient::MigrateData(_) => 5,
            BaseClient::Disconnecting(_) => 6,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            BaseClient::AckSync(_) => "ack_sync",
            BaseClient::Ack => "ack",
            BaseClient::Pong(_) => "pong",
            BaseClient::MigrateFlushMark => "migrate_flush_mark",
            BaseClient::MigrateData(_) => "migrate_data",
            BaseClient::Disconnecting(_) => "disconnecting",
        }
    }

    pub fn encode_body<'a>(&'a self, w: &mut Writer<'a>) {
        match self {
            BaseClient::AckSync(g) => w.u32(*g),
            BaseClient::Ack | BaseClient::MigrateFlushMark => {}
            BaseClient::Pong(m) => m.encode(w),
            BaseClient::MigrateData(m) => m.encode(w),
            BaseClient::Disconnecting(m) => m.encode(w),
        }
    }

    /// `None` if `msg_type` is not a base message.
    pub fn try_decode(msg_type: u16, body: &[u8]) -> Option<Result<Self>> {
        let r = &mut Reader::new(body);
        Some(match msg_type {
            1 => r.u32("ack_sync generation").map(BaseClient::AckSync),
            2 => Ok(BaseClient::Ack),
            3 => Pong::decode(r).map(BaseClient::Pong),
            4 => Ok(BaseClient::MigrateFlushMark),
            5 => Bytes::decode(r).map(BaseClient::MigrateData),
            6 => Disconnecting::decode(r).map(BaseClient::Disconnecting),
            _ => return None,
        })
    }
}
