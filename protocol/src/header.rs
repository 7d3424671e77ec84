//! Data headers (after the link stage) and a sans-IO framer.
//!
//! Two header forms exist: the full `SpiceDataHeader` (serial u64, type u16, size u32, sub_list
//! u32: 18 bytes) and, when both sides have the `MINI_HEADER` common capability,
//! `SpiceMiniDataHeader` (type u16, size u32: 6 bytes). The size counts the body only.

use crate::error::{DecodeError, Result};
use crate::wire::Reader;

/// Which data header a channel uses, as negotiated in the link stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderKind {
    /// `SpiceDataHeader`, 18 bytes.
    Full,
    /// `SpiceMiniDataHeader`, 6 bytes.
    Mini,
}

impl HeaderKind {
    /// The header's size on the wire.
    pub const fn size(self) -> usize {
        match self {
            HeaderKind::Full => 18,
            HeaderKind::Mini => 6,
        }
    }
}

/// The default cap on one message body. Large enough for an uncompressed 4096x2160 32-bit
/// bitmap, small enough that a hostile peer cannot make us buffer gigabytes.
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 64 * 1024 * 1024;

/// A decoded data header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct DataHeader {
    /// The message serial; only the full header carries it (0 with the mini header).
    pub serial: u64,
    /// The message type.
    pub msg_type: u16,
    /// The body size in bytes.
    pub size: u32,
    /// Offset of a `SpiceSubMessageList` in the body, 0 for none (full header only).
    pub sub_list: u32,
}

impl DataHeader {
    /// Decode a header of `kind` from the first `kind.size()` bytes of `b`.
    pub fn decode(kind: HeaderKind, b: &[u8]) -> Result<DataHeader> {
        let mut r = Reader::new(b);
        Ok(match kind {
            HeaderKind::Full => DataHeader {
                serial: r.u64("data header serial")?,
                msg_type: r.u16("data header type")?,
                size: r.u32("data header size")?,
                sub_list: r.u32("data header sub_list")?,
            },
            HeaderKind::Mini => DataHeader {
                serial: 0,
                msg_type: r.u16("mini header type")?,
                size: r.u32("mini header size")?,
                sub_list: 0,
            },
        })
    }

    /// Append the header's wire form.
    pub fn encode(&self, kind: HeaderKind, out: &mut Vec<u8>) {
        match kind {
            HeaderKind::Full => {
                out.extend_from_slice(&self.serial.to_le_bytes());
                out.extend_from_slice(&self.msg_type.to_le_bytes());
                out.extend_from_slice(&self.size.to_le_bytes());
                out.extend_from_slice(&self.sub_list.to_le_bytes());
            }
            HeaderKind::Mini => {
                out.extend_from_slice(&self.msg_type.to_le_bytes());
                out.extend_from_slice(&self.size.to_le_bytes());
            }
        }
    }
}

/// Frame a message: header then body.
pub fn frame(kind: HeaderKind, serial: u64, msg_type: u16, body: &[u8], out: &mut Vec<u8>) {
    DataHeader {
        serial,
        msg_type,
        size: body.len() as u32,
        sub_list: 0,
    }
    .encode(kind, out);
    out.extend_from_slice(body);
}

/// One framed message cut out of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub header: DataHeader,
    pub body: Vec<u8>,
}

/// Cuts a byte stream into messages. Feed it bytes as they arrive, then call
/// [`next`](Framer::next) until it returns `Ok(None)`.
///
/// It buffers at most one header plus one body, and refuses a body over the limit before
/// buffering it.
#[derive(Debug, Clone)]
pub struct Framer {
    kind: HeaderKind,
    max_size: u32,
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    start: usize,
}

impl Framer {
    pub fn new(kind: HeaderKind) -> Self {
        Self::with_limit(kind, DEFAULT_MAX_MESSAGE_SIZE)
    }

    pub fn with_limit(kind: HeaderKind, max_size: u32) -> Self {
        Framer {
            kind,
            max_size,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Switch header kind (the link stage decides it).
    pub fn set_kind(&mut self, kind: HeaderKind) {
        self.kind = kind;
    }

    pub fn kind(&self) -> HeaderKind {
        self.kind
    }

    /// Bytes received and not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Take bytes from the stream.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or an error if the
    /// header announces a body over the limit (the stream cannot be trusted after that).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<RawMessage>> {
        let avail = &self.buf[self.start..];
        let hsize = self.kind.size();
        if avail.len() < hsize {
            return Ok(None);
        }
        let header = DataHeader::decode(self.kind, avail)?;
        if header.size > self.max_size {
            return Err(DecodeError::TooLarge {
                what: "message body",
                size: header.size as u64,
                limit: self.max_size as u64,
            });
        }
        let total = hsize + header.size as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let body = avail[hsize..total].to_vec();
        self.start += total;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(RawMessage { header, body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn header_round_trips(h in any::<(u64, u16, u32, u32)>()) {
            let full = DataHeader { serial: h.0, msg_type: h.1, size: h.2, sub_list: h.3 };
            let mut out = vec![];
            full.encode(HeaderKind::Full, &mut out);
            prop_assert_eq!(out.len(), 18);
            prop_assert_eq!(DataHeader::decode(HeaderKind::Full, &out).unwrap(), full);
            let mini = DataHeader { serial: 0, msg_type: h.1, size: h.2, sub_list: 0 };
            let mut out = vec![];
            mini.encode(HeaderKind::Mini, &mut out);
            prop_assert_eq!(out.len(), 6);
            prop_assert_eq!(DataHeader::decode(HeaderKind::Mini, &out).unwrap(), mini);
        }

        #[test]
        fn framer_gives_the_same_messages_whatever_the_chunking(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
            cut in 1usize..13,
        ) {
            let mut stream = vec![];
            for (i, b) in bodies.iter().enumerate() {
                frame(HeaderKind::Mini, 0, i as u16, b, &mut stream);
            }
            let mut f = Framer::new(HeaderKind::Mini);
            let mut got = vec![];
            for chunk in stream.chunks(cut) {
                f.push(chunk);
                while let Some(m) = f.next().unwrap() {
                    got.push(m.body);
                }
            }
            prop_assert_eq!(got, bodies);
            prop_assert_eq!(f.buffered(), 0);
        }

        #[test]
        fn framer_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut f = Framer::with_limit(HeaderKind::Full, 64);
            f.push(&data);
            while let Ok(Some(_)) = f.next() {}
        }
    }

    #[test]
    fn framer_refuses_oversized_bodies_before_buffering() {
        let mut f = Framer::with_limit(HeaderKind::Mini, 10);
        f.push(&[1, 0, 11, 0, 0, 0]);
        assert!(matches!(
            f.next(),
            Err(DecodeError::TooLarge { size: 11, .. })
        ));
    }
}
