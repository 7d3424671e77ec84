//! The cursor channel: the pointer's shape (`set`, `init`), position (`move`), visibility
//! and the client's shape cache (`inval_one`, `inval_all`).
//!
//! This module owns the cursor messages and the `Cursor` shape structure. It does not
//! interpret the shape's pixel data. The client sends only base messages on this channel.

use arbitrary::Arbitrary as _;

use super::{BaseClient, BaseServer};
use crate::error::Result;
use crate::types::Point16;
use crate::wire::{Bytes, Decode, Encode, Reader, Writer};
use crate::{channel_messages, wire_enum, wire_flags, wire_struct};

wire_enum! {
    /// `cursor_type`: the pixel format of a cursor shape.
    pub enum CursorType: u8 {
        Alpha = 0 => "alpha",
        Mono = 1 => "mono",
        Color4 = 2 => "color4",
        Color8 = 3 => "color8",
        Color16 = 4 => "color16",
        Color24 = 5 => "color24",
        Color32 = 6 => "color32",
    }
}

wire_flags! {
    /// `cursor_flags`. `NONE` ("no cursor") is not stored in [`Cursor::flags`]: it is derived
    /// from [`Cursor::header`] being `None`.
    pub struct CursorFlags: u16 {
        const NONE = 1 << 0;
        const CACHE_ME = 1 << 1;
        const FROM_CACHE = 1 << 2;
    }
}

wire_struct! {
    /// `CursorHeader` (17 bytes).
    pub struct CursorHeader {
        /// Cache key (0: not cacheable).
        pub unique: u64,
        pub cursor_type: CursorType,
        pub width: u16,
        pub height: u16,
        pub hot_spot_x: u16,
        pub hot_spot_y: u16,
    }
}

/// `Cursor`: flags, then a [`CursorHeader`] unless the `NONE` flag is set, then the shape's
/// data, which runs to the end of the message (`data[] @as_ptr`: a pointer in the C
/// structure, inline on the wire, appended after the fixed fields by spice-server).
///
/// Wire flags = `flags | NONE` when `header` is `None`; `flags` itself never holds `NONE`
/// (the encoder clears it, the decoder strips it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct Cursor {
    #[arbitrary(with = arb_flags_without_none)]
    pub flags: CursorFlags,
    /// `None`: no cursor (the `NONE` flag).
    pub header: Option<CursorHeader>,
    pub data: Bytes,
}

fn arb_flags_without_none(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<CursorFlags> {
    Ok(CursorFlags(u16::arbitrary(u)? & !CursorFlags::NONE.0))
}
impl Cursor {
    /// The flags as written on the wire.
    pub fn wire_flags(&self) -> CursorFlags {
        self.flags.with(CursorFlags::NONE, self.header.is_none())
    }
}

impl Encode for Cursor {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u16(self.wire_flags().bits());
        if let Some(h) = &self.header {
            h.encode(w);
        }
        w.bytes(&self.data);
    }
}
impl Decode for Cursor {
    const MIN_SIZE: usize = 2;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let flags = CursorFlags::decode(r)?;
        let header = if flags.contains(CursorFlags::NONE) {
            None
        } else {
            Some(CursorHeader::decode(r)?)
        };
        Ok(Cursor {
            flags: flags.without(CursorFlags::NONE),
            header,
            data: r.rest().into(),
        })
    }
}

wire_struct! {
    /// `init`: the cursor state when the channel connects.
    pub struct CursorInit {
        pub position: Point16,
        pub trail_length: u16,
        pub trail_frequency: u16,
        pub visible: u8,
        pub cursor: Cursor,
    }
}

wire_struct! {
    /// `set`: a new shape at a position.
    pub struct CursorSet {
        pub position: Point16,
        pub visible: u8,
        pub cursor: Cursor,
    }
}

wire_struct! {
    /// `trail`.
    pub struct CursorTrail {
        pub length: u16,
        pub frequency: u16,
    }
}

channel_messages! {
    /// Server → client messages of the cursor channel.
    pub enum CursorServer(BaseServer) {
        101 => Init(CursorInit) = "init",
        102 => Reset = "reset",
        103 => Set(CursorSet) = "set",
        /// `position`.
        104 => Move(Point16) = "move",
        105 => Hide = "hide",
        106 => Trail(CursorTrail) = "trail",
        /// `id` of the cached shape to drop (`SpiceMsgDisplayInvalOne`).
        107 => InvalOne(u64) = "inval_one",
        108 => InvalAll = "inval_all",
    }
}

channel_messages! {
    /// Client → server messages of the cursor channel (only base messages exist).
    pub enum CursorClient(BaseClient) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Message;

    #[test]
    fn set_with_a_shape() {
        let m = CursorServer::Set(CursorSet {
            position: Point16 { x: 10, y: -1 },
            visible: 1,
            cursor: Cursor {
                flags: CursorFlags::CACHE_ME,
                header: Some(CursorHeader {
                    unique: 0x0102_0304_0506_0708,
                    cursor_type: CursorType::Alpha,
                    width: 2,
                    height: 1,
                    hot_spot_x: 1,
                    hot_spot_y: 0,
                }),
                data: Bytes(vec![0xaa; 8]),
            },
        });
        let body = m.to_body();
        #[rustfmt::skip]
        let mut want = vec![
            10, 0, 0xff, 0xff, // position
            1,                 // visible
            2, 0,              // flags: CACHE_ME, no NONE
            8, 7, 6, 5, 4, 3, 2, 1, // unique
            0,                 // type alpha
            2, 0, 1, 0, 1, 0, 0, 0, // width, height, hot spot
        ];
        want.extend([0xaa; 8]);
        assert_eq!(body, want);
        assert_eq!(CursorServer::decode(103, &body).unwrap(), m);
    }

    #[test]
    fn set_without_a_cursor_has_no_header() {
        let m = CursorServer::Set(CursorSet {
            position: Point16 { x: 0, y: 0 },
            visible: 0,
            cursor: Cursor {
                flags: CursorFlags::EMPTY,
                header: None,
                data: Bytes::default(),
            },
        });
        assert_eq!(m.to_body(), [0, 0, 0, 0, 0, 1, 0]);
        // NONE with other bits: the header is still absent and NONE is not kept in flags.
        let d = CursorServer::decode(103, &[0, 0, 0, 0, 0, 5, 0]).unwrap();
        let CursorServer::Set(s) = d else {
            panic!("not set")
        };
        assert_eq!(s.cursor.flags, CursorFlags::FROM_CACHE);
        assert_eq!(s.cursor.header, None);
        // Without NONE a truncated header is an error.
        assert!(CursorServer::decode(103, &[0, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn init_layout() {
        let m = CursorServer::Init(CursorInit {
            position: Point16 { x: 1, y: 2 },
            trail_length: 3,
            trail_frequency: 4,
            visible: 1,
            cursor: Cursor {
                flags: CursorFlags::EMPTY,
                header: None,
                data: Bytes::default(),
            },
        });
        assert_eq!(m.to_body(), [1, 0, 2, 0, 3, 0, 4, 0, 1, 1, 0]);
        assert_eq!(
            CursorServer::InvalOne(9).to_body(),
            [9, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
