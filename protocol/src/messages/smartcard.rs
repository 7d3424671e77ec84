//! The smartcard channel: virtual smartcard (VSC) messages in both directions, each a header
//! (`type`, `reader_id`, `length`) and `length` bytes.
//!
//! This module owns the message envelope only; it does not interpret the VSC payload
//! (APDUs, ATRs, reader names).

use super::{BaseClient, BaseServer};
use crate::error::Result;
use crate::wire::{Bytes, Decode, Encode, Reader, Writer};
use crate::{channel_messages, wire_enum};

wire_enum! {
    /// `vsc_message_type`.
    pub enum VscMessageType: u32 {
        Init = 1 => "Init",
        Error = 2 => "Error",
        ReaderAdd = 3 => "ReaderAdd",
        ReaderRemove = 4 => "ReaderRemove",
        Atr = 5 => "ATR",
        CardRemove = 6 => "CardRemove",
        Apdu = 7 => "APDU",
        Flush = 8 => "Flush",
        FlushComplete = 9 => "FlushComplete",
    }
}

/// `data` in both directions (`SpiceMsgSmartcard` / `VSCMsgHeader`): type u32, reader_id
/// u32, length u32 (derived from `data`), then `data`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct SmartcardData {
    pub msg_type: VscMessageType,
    pub reader_id: u32,
    pub data: Bytes,
}

impl Encode for SmartcardData {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        self.msg_type.encode(w);
        w.u32(self.reader_id);
        w.u32(self.data.len() as u32);
        w.bytes(&self.data);
    }
}
impl Decode for SmartcardData {
    const MIN_SIZE: usize = 12;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let msg_type = VscMessageType::decode(r)?;
        let reader_id = r.u32("smartcard reader_id")?;
        let len = r.u32("smartcard length")?;
        Ok(SmartcardData {
            msg_type,
            reader_id,
            data: r.bytes(len as u64, "smartcard data")?.into(),
        })
    }
}

channel_messages! {
    /// Server → client messages of the smartcard channel.
    pub enum SmartcardServer(BaseServer) {
        101 => Data(SmartcardData) = "data",
    }
}

channel_messages! {
    /// Client → server messages of the smartcard channel.
    pub enum SmartcardClient(BaseClient) {
        101 => Data(SmartcardData) = "data",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Message;

    #[test]
    fn data_layout() {
        let m = SmartcardClient::Data(SmartcardData {
            msg_type: VscMessageType::Apdu,
            reader_id: 1,
            data: Bytes(vec![0xa0, 0xa4]),
        });
        let body = m.to_body();
        assert_eq!(body, [7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0xa0, 0xa4]);
        assert_eq!(SmartcardClient::decode(101, &body).unwrap(), m);
        // length beyond the body is an error.
        assert!(SmartcardServer::decode(101, &body[..13]).is_err());
    }
}
