//! The spicevmc channels (usbredir: raw device data, optionally LZ4-compressed) and the port
//! channels (port, webdav), which add `init` and `event`.
//!
//! This module owns these four enums and [`CompressedData`]. It does not decompress
//! (see [`crate::codec`]) and does not interpret usbredir or webdav payloads.

use super::main::ZeroTerminated;
use super::{BaseClient, BaseServer};
use crate::error::{DecodeError, Result};
use crate::wire::{Bytes, Decode, Encode, Reader, Writer};
use crate::{channel_messages, wire_enum};

wire_enum! {
    /// `data_compression_type`.
    pub enum DataCompressionType: u8 {
        None = 0 => "none",
        Lz4 = 1 => "lz4",
    }
}

/// How [`CompressedData::data`] is compressed: the `type` switch of `CompressedData`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum Compression {
    /// `NONE`: no size field follows the type.
    None,
    /// `LZ4`: the size of the data once decompressed follows the type.
    Lz4 { uncompressed_size: u32 },
}

/// `CompressedData` (`compressed_data`, both directions): type u8, `uncompressed_size` u32
/// unless the type is `NONE`, then the compressed bytes to the end of the message
/// (`@as_ptr`, inline on the wire).
///
/// The reference demarshaller reads a size for any type but `NONE`, and spice-server then
/// refuses every type but LZ4; a type other than `NONE` or `LZ4` is an
/// [`DecodeError::InvalidValue`] here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct CompressedData {
    pub compression: Compression,
    pub data: Bytes,
}

impl Encode for CompressedData {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        match self.compression {
            Compression::None => DataCompressionType::None.encode(w),
            Compression::Lz4 { uncompressed_size } => {
                DataCompressionType::Lz4.encode(w);
                w.u32(uncompressed_size);
            }
        }
        w.bytes(&self.data);
    }
}
impl Decode for CompressedData {
    const MIN_SIZE: usize = 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let compression = match DataCompressionType::decode(r)? {
            DataCompressionType::None => Compression::None,
            DataCompressionType::Lz4 => Compression::Lz4 {
                uncompressed_size: r.u32("compressed_data uncompressed_size")?,
            },
            DataCompressionType::Unknown(v) => {
                return Err(DecodeError::InvalidValue {
                    what: "compressed_data type",
                    value: v as u64,
                })
            }
        };
        Ok(CompressedData {
            compression,
            data: r.rest().into(),
        })
    }
}

wire_enum! {
    /// `SPICE_PORT_EVENT_*` (the `event` byte of port messages).
    pub enum PortEvent: u8 {
        Opened = 0 => "opened",
        Closed = 1 => "closed",
        Break = 2 => "break",
    }
}

/// Port `init`: the port's name and whether the guest side is open.
///
/// Wire: name_size u32 (`len + 1`), name pointer (never null), opened u8; the name and its
/// NUL follow the 9-byte body, as `spicevmc_red_channel_send_port_init` writes them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct PortInit {
    pub name: ZeroTerminated,
    pub opened: u8,
}

impl Encode for PortInit {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u32(self.name.wire_size());
        w.ptr(Some(&self.name));
        w.u8(self.opened);
    }
}
impl Decode for PortInit {
    const MIN_SIZE: usize = 9;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let size = r.u32("port init name_size")?;
        let name = r
            .ptr_with("port init name", |t| {
                ZeroTerminated::decode_sized(t, size, "port init name")
            })?
            .ok_or(DecodeError::NullPointer {
                what: "port init name",
            })?;
        Ok(PortInit {
            name,
            opened: r.u8("port init opened")?,
        })
    }
}

channel_messages! {
    /// Server → client messages of a spicevmc channel (usbredir).
    pub enum SpicevmcServer(BaseServer) {
        101 => Data(Bytes) = "data",
        102 => CompressedData(CompressedData) = "compressed_data",
    }
}

channel_messages! {
    /// Client → server messages of a spicevmc channel (usbredir).
    pub enum SpicevmcClient(BaseClient) {
        101 => Data(Bytes) = "data",
        102 => CompressedData(CompressedData) = "compressed_data",
    }
}

channel_messages! {
    /// Server → client messages of the port and webdav channels.
    pub enum PortServer(BaseServer) {
        101 => Data(Bytes) = "data",
        102 => CompressedData(CompressedData) = "compressed_data",
        201 => Init(PortInit) = "init",
        202 => Event(PortEvent) = "event",
    }
}

channel_messages! {
    /// Client → server messages of the port and webdav channels.
    pub enum PortClient(BaseClient) {
        101 => Data(Bytes) = "data",
        102 => CompressedData(CompressedData) = "compressed_data",
        201 => Event(PortEvent) = "event",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Message;

    #[test]
    fn port_init_points_past_the_body_at_the_name_and_its_nul() {
        let m = PortServer::Init(PortInit {
            name: ZeroTerminated::new("org.qemu.x"),
            opened: 1,
        });
        let body = m.to_body();
        let mut want = vec![11, 0, 0, 0, 9, 0, 0, 0, 1];
        want.extend_from_slice(b"org.qemu.x\0");
        assert_eq!(body, want);
        assert_eq!(PortServer::decode(201, &body).unwrap(), m);
        // Null name pointer: refused (`@nonnull`).
        assert!(PortServer::decode(201, &[0, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        // Pointer past the end: refused.
        assert!(PortServer::decode(201, &[1, 0, 0, 0, 40, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn compressed_data_size_field_only_for_lz4() {
        let none = SpicevmcClient::CompressedData(CompressedData {
            compression: Compression::None,
            data: Bytes(vec![7]),
        });
        assert_eq!(none.to_body(), [0, 7]);
        let lz4 = SpicevmcServer::CompressedData(CompressedData {
            compression: Compression::Lz4 {
                uncompressed_size: 300,
            },
            data: Bytes(vec![1, 2]),
        });
        assert_eq!(lz4.to_body(), [1, 0x2c, 1, 0, 0, 1, 2]);
        assert_eq!(SpicevmcServer::decode(102, &lz4.to_body()).unwrap(), lz4);
        assert!(matches!(
            SpicevmcServer::decode(102, &[2, 0, 0, 0, 0]),
            Err(DecodeError::InvalidValue { value: 2, .. })
        ));
    }

    #[test]
    fn port_events_and_numbers() {
        assert_eq!(PortClient::Event(PortEvent::Opened).msg_type(), 201);
        assert_eq!(PortServer::Event(PortEvent::Break).msg_type(), 202);
        assert_eq!(PortServer::Event(PortEvent::Break).to_body(), [2]);
    }
}
