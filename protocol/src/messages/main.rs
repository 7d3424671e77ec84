//! The main channel: session setup (`init`, `channels_list`, `name`, `uuid`), mouse modes, the
//! vdagent tunnel (`agent_*`; the bytes inside are [`crate::agent`]'s business) and migration.
//!
//! This module owns the main channel's message bodies and [`ZeroTerminated`], the pointed-to
//! C string that migration and port messages share. It does not interpret agent data.

use super::{BaseClient, BaseServer, ChannelType};
use crate::error::Result;
use crate::link::LinkError;
use crate::wire::{Bytes, Decode, Encode, Reader, Writer};
use crate::{channel_messages, wire_flags, wire_struct};

wire_flags! {
    /// `mouse_mode`: server mode (relative motion) and client mode (absolute positions).
    pub struct MouseMode: u16 {
        const SERVER = 1 << 0;
        const CLIENT = 1 << 1;
    }
}

/// A zero-terminated byte string behind a pointer, with its size in a separate field
/// (`uint8 *x[x_size] @zero_terminated`: `DstInfo`'s host and certificate subject, `port`'s
/// init name).
///
/// Holds the bytes *without* the terminating NUL. On the wire the size field is `len + 1` and
/// the target is the bytes followed by one NUL, as spice-server writes them
/// (`size = strlen(s) + 1`). Because the target is never empty, its pointer is never null.
///
/// Decoding takes `size` bytes at the target and drops one trailing NUL if there is one; a
/// target without one (which the reference client also accepts, reading it as a C string)
/// decodes to the same bytes and re-encodes with the NUL added.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, arbitrary::Arbitrary)]
pub struct ZeroTerminated(pub Bytes);

impl ZeroTerminated {
    /// The string `s` (which should not contain NUL).
    pub fn new(s: impl Into<Vec<u8>>) -> Self {
        ZeroTerminated(Bytes(s.into()))
    }

    /// The value of the size field: the bytes plus the NUL.
    pub fn wire_size(&self) -> u32 {
        u32::try_from(self.0.len().saturating_add(1)).unwrap_or(u32::MAX)
    }

    /// The bytes as text (lossy), up to the first NUL as a C reader sees them.
    pub fn to_string_lossy(&self) -> String {
        let s = self.0.as_slice();
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        String::from_utf8_lossy(s.get(..end).unwrap_or_default()).into_owned()
    }

    /// Read `size` bytes at `r` (the pointer's target).
    pub fn decode_sized(r: &mut Reader<'_>, size: u32, what: &'static str) -> Result<Self> {
        let mut v = r.bytes(size as u64, what)?;
        if v.last() == Some(&0) {
            v.pop();
        }
        Ok(ZeroTerminated(Bytes(v)))
    }
}

impl Encode for ZeroTerminated {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.bytes(&self.0);
        w.u8(0);
    }
}

/// `DstInfo` (`SpiceMigrationDstInfo`): where the client should connect for migration.
///
/// Wire: port u16, sport u16, host_size u32, host pointer, cert_subject_size u32,
/// cert_subject pointer; the host then the subject follow the body. The sizes are derived.
/// No subject is a size of 0 and a null pointer (spice-server's choice).
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct DstInfo {
    pub port: u16,
    pub sport: u16,
    /// The host (`@nonnull`).
    pub host: ZeroTerminated,
    pub cert_subject: Option<ZeroTerminated>,
}

impl Encode for DstInfo {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u16(self.port);
        w.u16(self.sport);
        w.u32(self.host.wire_size());
        w.ptr(Some(&self.host));
        w.u32(self.cert_subject.as_ref().map_or(0, |c| c.wire_size()));
        w.ptr(self.cert_subject.as_ref().map(|c| c as &dyn Encode));
    }
}
impl Decode for DstInfo {
    const MIN_SIZE: usize = 20;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let port = r.u16("dst_info port")?;
        let sport = r.u16("dst_info sport")?;
        let host_size = r.u32("dst_info host_size")?;
        let host = r
            .ptr_with("dst_info host_data", |t| {
                ZeroTerminated::decode_sized(t, host_size, "dst_info host_data")
            })?
            .ok_or(crate::DecodeError::NullPointer {
                what: "dst_info host_data",
            })?;
        let cert_size = r.u32("dst_info cert_subject_size")?;
        let cert_subject = r.ptr_with("dst_info cert_subject_data", |t| {
            ZeroTerminated::decode_sized(t, cert_size, "dst_info cert_subject_data")
        })?;
        Ok(DstInfo {
            port,
            sport,
            host,
            cert_subject,
        })
    }
}

wire_struct! {
    /// `init`: the first message on the main channel (32 bytes). The mouse modes are
    /// [`MouseMode`] bits widened to u32; `agent_connected` is 0 or 1.
    pub struct MainInit {
        pub session_id: u32,
        pub display_channels_hint: u32,
        pub supported_mouse_modes: u32,
        pub current_mouse_mode: u32,
        pub agent_connected: u32,
        pub agent_tokens: u32,
        pub multi_media_time: u32,
        pub ram_hint: u32,
    }
}

wire_struct! {
    /// `ChannelId`: one channel the client may connect.
    pub struct ChannelId {
        pub channel_type: ChannelType,
        pub id: u8,
    }
}

/// `channels_list` (`SpiceMsgChannels`): a u32 count, then that many [`ChannelId`]s.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct ChannelsList {
    pub channels: Vec<ChannelId>,
}

impl Encode for ChannelsList {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u32(self.channels.len() as u32);
        w.all(&self.channels);
    }
}
impl Decode for ChannelsList {
    const MIN_SIZE: usize = 4;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let n = r.u32("num_of_channels")?;
        Ok(ChannelsList {
            channels: r.vec(n as u64, "channels")?,
        })
    }
}

wire_struct! {
    /// `mouse_mode` (the message): the modes the server allows and the one in force.
    pub struct MainMouseMode {
        pub supported_modes: MouseMode,
        pub current_mode: MouseMode,
    }
}

/// `migrate_switch_host` (`SpiceMsgMainMigrationSwitchHost`): the same layout as
/// [`DstInfo`], but the host pointer may be null here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct MigrateSwitchHost {
    pub port: u16,
    pub sport: u16,
    pub host: Option<ZeroTerminated>,
    pub cert_subject: Option<ZeroTerminated>,
}

impl Encode for MigrateSwitchHost {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u16(self.port);
        w.u16(self.sport);
        w.u32(self.host.as_ref().map_or(0, |c| c.wire_size()));
        w.ptr(self.host.as_ref().map(|c| c as &dyn Encode));
        w.u32(self.cert_subject.as_ref().map_or(0, |c| c.wire_size()));
        w.ptr(self.cert_subject.as_ref().map(|c| c as &dyn Encode));
    }
}
impl Decode for MigrateSwitchHost {
    const MIN_SIZE: usize = 20;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let port = r.u16("switch_host port")?;
        let sport = r.u16("switch_host sport")?;
        let host_size = r.u32("switch_host host_size")?;
        let host = r.ptr_with("switch_host host_data", |t| {
            ZeroTerminated::decode_sized(t, host_size, "switch_host host_data")
        })?;
        let cert_size = r.u32("switch_host cert_subject_size")?;
        let cert_subject = r.ptr_with("switch_host cert_subject_data", |t| {
            ZeroTerminated::decode_sized(t, cert_size, "switch_host cert_subject_data")
        })?;
        Ok(MigrateSwitchHost {
            port,
            sport,
            host,
            cert_subject,
        })
    }
}

/// `name`: the VM's name, inline (`name_len` u32 then the bytes). spice.proto does not mark
/// it zero-terminated, so `name` holds exactly the `name_len` bytes of the wire, and
/// spice-server's include the NUL (`name_len = strlen + 1`); [`MainName::new`] adds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct MainName {
    pub name: Bytes,
}

impl MainName {
    /// The name `s` with the NUL spice-server sends.
    pub fn new(s: &str) -> Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        MainName { name: Bytes(v) }
    }
}

impl Encode for MainName {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u32(self.name.len() as u32);
        w.bytes(&self.name);
    }
}
impl Decode for MainName {
    const MIN_SIZE: usize = 4;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let n = r.u32("name_len")?;
        Ok(MainName {
            name: r.bytes(n as u64, "name")?.into(),
        })
    }
}

wire_struct! {
    /// `migrate_begin_seamless`.
    pub struct MigrateBeginSeamless {
        pub dst_info: DstInfo,
        pub src_mig_version: u32,
    }
}

channel_messages! {
    /// Server → client messages of the main channel.
    pub enum MainServer(BaseServer) {
        101 => MigrateBegin(DstInfo) = "migrate_begin",
        102 => MigrateCancel = "migrate_cancel",
        103 => Init(MainInit) = "init",
        104 => ChannelsList(ChannelsList) = "channels_list",
        105 => MouseMode(MainMouseMode) = "mouse_mode",
        /// The multimedia clock, in milliseconds.
        106 => MultiMediaTime(u32) = "multi_media_time",
        107 => AgentConnected = "agent_connected",
        /// `error_code`.
        108 => AgentDisconnected(LinkError) = "agent_disconnected",
        /// Bytes of the vdagent stream ([`crate::agent`]).
        109 => AgentData(Bytes) = "agent_data",
        /// `num_tokens`: more agent_data messages the client may send.
        110 => AgentToken(u32) = "agent_token",
        111 => MigrateSwitchHost(MigrateSwitchHost) = "migrate_switch_host",
        112 => MigrateEnd = "migrate_end",
        113 => Name(MainName) = "name",
        114 => Uuid([u8; 16]) = "uuid",
        /// `num_tokens`.
        115 => AgentConnectedTokens(u32) = "agent_connected_tokens",
        116 => MigrateBeginSeamless(MigrateBeginSeamless) = "migrate_begin_seamless",
        117 => MigrateDstSeamlessAck = "migrate_dst_seamless_ack",
        118 => MigrateDstSeamlessNack = "migrate_dst_seamless_nack",
    }
}

channel_messages! {
    /// Client → server messages of the main channel.
    pub enum MainClient(BaseClient) {
        /// `cache_size`.
        101 => ClientInfo(u64) = "client_info",
        102 => MigrateConnected = "migrate_connected",
        103 => MigrateConnectError = "migrate_connect_error",
        104 => AttachChannels = "attach_channels",
        /// `mode`.
        105 => MouseModeRequest(MouseMode) = "mouse_mode_request",
        /// `num_tokens`: agent_data messages the server may send.
        106 => AgentStart(u32) = "agent_start",
        /// Bytes of the vdagent stream ([`crate::agent`]).
        107 => AgentData(Bytes) = "agent_data",
        /// `num_tokens`.
        108 => AgentToken(u32) = "agent_token",
        109 => MigrateEnd = "migrate_end",
        /// `src_version`.
        110 => MigrateDstDoSeamless(u32) = "migrate_dst_do_seamless",
        111 => MigrateConnectedSeamless = "migrate_connected_seamless",
        112 => QualityIndicator(Bytes) = "quality_indicator",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Message;

    #[test]
    fn init_is_32_bytes_in_field_order() {
        let m = MainServer::Init(MainInit {
            session_id: 0x0403_0201,
            display_channels_hint: 1,
            supported_mouse_modes: 3,
            current_mouse_mode: 2,
            agent_connected: 1,
            agent_tokens: 10,
            multi_media_time: 0xaabb_ccdd,
            ram_hint: 0x0100_0000,
        });
        let body = m.to_body();
        #[rustfmt::skip]
        let want = [
            1, 2, 3, 4, 1, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0,
            1, 0, 0, 0, 10, 0, 0, 0, 0xdd, 0xcc, 0xbb, 0xaa, 0, 0, 0, 1,
        ];
        assert_eq!(body, want);
        assert_eq!(MainServer::decode(103, &body).unwrap(), m);
    }

    /// As `spice_marshall_msg_main_migrate_begin` with spice-server's sizes (strlen + 1): the
    /// 20-byte body, then the host and the subject with their NULs.
    #[test]
    fn migrate_begin_layout() {
        let m = MainServer::MigrateBegin(DstInfo {
            port: 5900,
            sport: 5901,
            host: ZeroTerminated::new("h1"),
            cert_subject: Some(ZeroTerminated::new("CN=x")),
        });
        let body = m.to_body();
        #[rustfmt::skip]
        let want = [
            0x0c, 0x17, 0x0d, 0x17, // port 5900, sport 5901
            3, 0, 0, 0, 20, 0, 0, 0, // host_size, host pointer
            5, 0, 0, 0, 23, 0, 0, 0, // cert_subject_size, pointer
            b'h', b'1', 0, b'C', b'N', b'=', b'x', 0,
        ];
        assert_eq!(body, want);
        assert_eq!(MainServer::decode(101, &body).unwrap(), m);

        // No subject: size 0 and a null pointer.
        let m = MainServer::MigrateBegin(DstInfo {
            port: 1,
            sport: 0,
            host: ZeroTerminated::new(""),
            cert_subject: None,
        });
        let body = m.to_body();
        let want = [
            1, 0, 0, 0, 1, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(body, want);
        assert_eq!(MainServer::decode(101, &body).unwrap(), m);

        // A null host is refused (`@nonnull`).
        let mut bad = want;
        bad[8] = 0;
        assert!(MainServer::decode(101, &bad).is_err());
    }

    #[test]
    fn seamless_version_follows_the_inline_dst_info() {
        let m = MainServer::MigrateBeginSeamless(MigrateBeginSeamless {
            dst_info: DstInfo {
                port: 0,
                sport: 0,
                host: ZeroTerminated::new("a"),
                cert_subject: None,
            },
            src_mig_version: 7,
        });
        let body = m.to_body();
        assert_eq!(body.len(), 24 + 2);
        assert_eq!(&body[8..12], &24u32.to_le_bytes());
        assert_eq!(&body[20..24], &7u32.to_le_bytes());
        assert_eq!(&body[24..], b"a\0");
    }

    #[test]
    fn channels_list_name_and_mouse_mode() {
        let m = MainServer::ChannelsList(ChannelsList {
            channels: vec![
                ChannelId {
                    channel_type: ChannelType::Display,
                    id: 0,
                },
                ChannelId {
                    channel_type: ChannelType::Inputs,
                    id: 0,
                },
            ],
        });
        assert_eq!(m.to_body(), [2, 0, 0, 0, 2, 0, 3, 0]);
        assert_eq!(
            MainServer::Name(MainName::new("vm")).to_body(),
            [3, 0, 0, 0, b'v', b'm', 0]
        );
        let mm = MainServer::MouseMode(MainMouseMode {
            supported_modes: MouseMode::SERVER | MouseMode::CLIENT,
            current_mode: MouseMode::CLIENT,
        });
        assert_eq!(mm.to_body(), [3, 0, 2, 0]);
        // A count larger than the body is an error, not an allocation.
        assert!(MainServer::decode(104, &[0xff, 0xff, 0xff, 0xff, 1, 0]).is_err());
    }

    #[test]
    fn client_messages() {
        assert_eq!(
            MainClient::ClientInfo(0x1122).to_body(),
            [0x22, 0x11, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            MainClient::MouseModeRequest(MouseMode::CLIENT).to_body(),
            [2, 0]
        );
        assert_eq!(MainClient::AgentStart(10).to_body(), [10, 0, 0, 0]);
        assert_eq!(
            MainClient::decode(107, &[1, 2, 3]).unwrap(),
            MainClient::AgentData(Bytes(vec![1, 2, 3]))
        );
    }
}
