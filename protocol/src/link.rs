//! The link stage: what a client and server exchange on a fresh channel connection before data
//! headers start.
//!
//! 1. client → server: [`LinkHeader`] + [`LinkMess`] (connection id, channel, capabilities);
//! 2. server → client: [`LinkHeader`] + [`LinkReply`] (error code, 162-byte RSA public key in
//!    SubjectPublicKeyInfo DER, capabilities);
//! 3. client → server: [`AuthMechanism`] if both have `PROTOCOL_AUTH_SELECTION`, then for SPICE
//!    ticket auth the 128-byte RSA-OAEP(SHA-1) encrypted password;
//! 4. server → client: a `u32` [`LinkError`] (the link result).

use crate::caps::Caps;
use crate::error::{DecodeError, Result};
use crate::messages::ChannelType;
use crate::wire::Reader;
use crate::wire_enum;

/// "REDQ", little-endian.
pub const SPICE_MAGIC: u32 = u32::from_le_bytes(*b"REDQ");
pub const VERSION_MAJOR: u32 = 2;
pub const VERSION_MINOR: u32 = 2;
/// `SPICE_TICKET_PUBKEY_BYTES`: a 1024-bit key's SubjectPublicKeyInfo DER.
pub const PUBKEY_BYTES: usize = 162;
/// The encrypted ticket's size (one RSA-1024 block).
pub const ENCRYPTED_TICKET_BYTES: usize = 128;
/// `SPICE_MAX_PASSWORD_LENGTH`.
pub const MAX_PASSWORD_LENGTH: usize = 60;
/// Link messages are small; a larger one is refused (`InvalidData`) before it is buffered. The
/// reference server's limit.
pub const MAX_LINK_MESSAGE_SIZE: u32 = 4096;
/// The most capability words of each kind a link message may carry (the reference's limit).
pub const MAX_CAPS_WORDS: u32 = 1024;

wire_enum! {
    /// `link_err`: the result of a link, also carried by `disconnecting` and
    /// `agent_disconnected`.
    pub enum LinkError: u32 {
        Ok = 0 => "ok",
        Error = 1 => "error",
        InvalidMagic = 2 => "invalid_magic",
        InvalidData = 3 => "invalid_data",
        VersionMismatch = 4 => "version_mismatch",
        NeedSecured = 5 => "need_secured",
        NeedUnsecured = 6 => "need_unsecured",
        PermissionDenied = 7 => "permission_denied",
        BadConnectionId = 8 => "bad_connection_id",
        ChannelNotAvailable = 9 => "channel_not_available",
    }
}

wire_enum! {
    /// `SPICE_AUTH_MECHANISM_*`.
    pub enum AuthMechanism: u32 {
        Spice = 1 => "spice",
        Sasl = 2 => "sasl",
    }
}

/// `SpiceLinkHeader`: 16 bytes in front of every link-stage message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct LinkHeader {
    pub magic: u32,
    pub major_version: u32,
    pub minor_version: u32,
    /// Size of the message that follows.
    pub size: u32,
}

impl LinkHeader {
    pub const SIZE: usize = 16;

    /// A header of the current version for a message of `size` bytes.
    pub fn new(size: u32) -> Self {
        LinkHeader {
            magic: SPICE_MAGIC,
            major_version: VERSION_MAJOR,
            minor_version: VERSION_MINOR,
            size,
        }
    }

    /// Decode, checking only that 16 bytes are there. Use [`check`](Self::check) to validate.
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b);
        Ok(LinkHeader {
            magic: r.u32("link header magic")?,
            major_version: r.u32("link header major")?,
            minor_version: r.u32("link header minor")?,
            size: r.u32("link header size")?,
        })
    }

    /// The link error a server answers this header with, if any, as the reference does: bad
    /// magic `InvalidMagic`, a major version other than 2 `VersionMismatch`, a message size
    /// below `SpiceLinkMess` or over 4096 bytes `InvalidData`.
    pub fn check(&self) -> Result<(), LinkError> {
        if self.magic != SPICE_MAGIC {
            return Err(LinkError::InvalidMagic);
        }
        if self.major_version != VERSION_MAJOR {
            return Err(LinkError::VersionMismatch);
        }
        if self.size > MAX_LINK_MESSAGE_SIZE || (self.size as usize) < LinkMess::FIXED_SIZE {
            return Err(LinkError::InvalidData);
        }
        Ok(())
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        for v in [
            self.magic,
            self.major_version,
            self.minor_version,
            self.size,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn read_caps(b: &[u8], num_common: u32, num_channel: u32, offset: u32) -> Result<Caps> {
    let r = Reader::new(b);
    let mut r = r.at_offset(offset, "caps_offset")?;
    let common = r.vec::<u32>(num_common as u64, "common caps")?;
    let channel = r.vec::<u32>(num_channel as u64, "channel caps")?;
    Ok(Caps { common, channel })
}

/// `SpiceLinkMess`: the client's request to link a channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct LinkMess {
    /// 0 for the main channel of a new session, else the session id from main's init.
    pub connection_id: u32,
    pub channel_type: ChannelType,
    pub channel_id: u8,
    pub caps: Caps,
}

impl LinkMess {
    /// Size of the fixed part; capabilities follow at `caps_offset` (18 from spice-gtk).
    pub const FIXED_SIZE: usize = 18;

    /// Decode the message that follows a [`LinkHeader`] (exactly `header.size` bytes).
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b);
        let connection_id = r.u32("connection_id")?;
        let channel_type = ChannelType::from_raw(r.u8("channel_type")?);
        let channel_id = r.u8("channel_id")?;
        let num_common = r.u32("num_common_caps")?;
        let num_channel = r.u32("num_channel_caps")?;
        let offset = r.u32("caps_offset")?;
        if num_common > MAX_CAPS_WORDS || num_channel > MAX_CAPS_WORDS {
            return Err(DecodeError::TooLarge {
                what: "link capabilities",
                size: num_common.max(num_channel) as u64,
                limit: MAX_CAPS_WORDS as u64,
            });
        }
        if (num_common > 0 || num_channel > 0) && (offset as usize) < Self::FIXED_SIZE {
            return Err(DecodeError::BadOffset {
                what: "caps_offset inside the fixed part",
                offset,
                len: b.len(),
            });
        }
        Ok(LinkMess {
            connection_id,
            channel_type,
            channel_id,
            caps: read_caps(b, num_common, num_channel, offset)?,
        })
    }

    /// The message without its link header.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.connection_id.to_le_bytes());
        out.push(self.channel_type.to_raw());
        out.push(self.channel_id);
        self.caps
            .encode_counts_and_offset(Self::FIXED_SIZE as u32, out);
        self.caps.encode_words(out);
    }

    /// Header and message, as a client sends them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = vec![];
        self.encode(&mut body);
        let mut out = vec![];
        LinkHeader::new(body.len() as u32).encode(&mut out);
        out.extend_from_slice(&body);
        out
    }
}

/// `SpiceLinkReply`: the server's answer, with its public key for ticket encryption.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinkReply {
    pub error: LinkError,
    /// SubjectPublicKeyInfo DER of the server's RSA-1024 key (zeros when no ticketing key).
    pub pub_key: [u8; PUBKEY_BYTES],
    pub caps: Caps,
}

impl<'u> arbitrary::Arbitrary<'u> for LinkReply {
    fn arbitrary(u: &mut arbitrary::Unstructured<'u>) -> arbitrary::Result<Self> {
        let mut pub_key = [0u8; PUBKEY_BYTES];
        u.fill_buffer(&mut pub_key)?;
        Ok(LinkReply {
            error: u.arbitrary()?,
            pub_key,
            caps: u.arbitrary()?,
        })
    }
}

impl LinkReply {
    /// Size of the fixed part; spice-server puts the capabilities right after it.
    pub const FIXED_SIZE: usize = 4 + PUBKEY_BYTES + 12;

    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b);
        let error = LinkError::from_raw(r.u32("link reply error")?);
        let pub_key = r.array::<PUBKEY_BYTES>("link reply pub_key")?;
        let num_common = r.u32("num_common_caps")?;
        let num_channel = r.u32("num_channel_caps")?;
        let offset = r.u32("caps_offset")?;
        Ok(LinkReply {
            error,
            pub_key,
            caps: read_caps(b, num_common, num_channel, offset)?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.error.to_raw().to_le_bytes());
        out.extend_from_slice(&self.pub_key);
        self.caps
            .encode_counts_and_offset(Self::FIXED_SIZE as u32, out);
        self.caps.encode_words(out);
    }

    /// Header and message, as a server sends them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = vec![];
        self.encode(&mut body);
        let mut out = vec![];
        LinkHeader::new(body.len() as u32).encode(&mut out);
        out.extend_from_slice(&body);
        out
    }
}

/// The client's ticket: 128 bytes of RSA-OAEP(SHA-1) ciphertext of the NUL-terminated password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EncryptedTicket(pub [u8; ENCRYPTED_TICKET_BYTES]);

impl std::fmt::Debug for EncryptedTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EncryptedTicket({:?})",
            crate::wire::Bytes(self.0.to_vec())
        )
    }
}

impl EncryptedTicket {
    pub fn decode(b: &[u8]) -> Result<Self> {
        Ok(EncryptedTicket(Reader::new(b).array("encrypted ticket")?))
    }
}

/// Decode a link result (4 bytes).
pub fn decode_link_result(b: &[u8]) -> Result<LinkError> {
    Ok(LinkError::from_raw(Reader::new(b).u32("link result")?))
}

/// Decode an auth mechanism selection (4 bytes).
pub fn decode_auth_mechanism(b: &[u8]) -> Result<AuthMechanism> {
    Ok(AuthMechanism::from_raw(
        Reader::new(b).u32("auth mechanism")?,
    ))
}

/// Check that a link-stage message was not followed by more bytes than its header said.
pub fn check_size(header: &LinkHeader, body_len: usize) -> Result<()> {
    if body_len != header.size as usize {
        return Err(DecodeError::InvalidValue {
            what: "link message size",
            value: body_len as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb<T: for<'u> arbitrary::Arbitrary<'u>>(data: &[u8]) -> Option<T> {
        T::arbitrary(&mut arbitrary::Unstructured::new(data)).ok()
    }

    proptest! {
        #[test]
        fn link_mess_round_trips(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Some(m) = arb::<LinkMess>(&data) {
                let mut b = vec![];
                m.encode(&mut b);
                let d = LinkMess::decode(&b).unwrap();
                prop_assert_eq!(&d, &m);
                let mut b2 = vec![];
                d.encode(&mut b2);
                prop_assert_eq!(b2, b);
            }
        }

        #[test]
        fn link_reply_round_trips(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Some(m) = arb::<LinkReply>(&data) {
                let mut b = vec![];
                m.encode(&mut b);
                let d = LinkReply::decode(&b).unwrap();
                prop_assert_eq!(&d, &m);
            }
        }

        #[test]
        fn link_decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = LinkHeader::decode(&data).map(|h| h.check());
            let _ = LinkMess::decode(&data);
            let _ = LinkReply::decode(&data);
            let _ = EncryptedTicket::decode(&data);
            let _ = decode_link_result(&data);
        }
    }

    #[test]
    fn header_check_gives_the_reference_error_codes() {
        let mut h = LinkHeader::new(30);
        assert_eq!(h.check(), Ok(()));
        h.major_version = 1;
        assert_eq!(h.check(), Err(LinkError::VersionMismatch));
        h.magic = 0;
        assert_eq!(h.check(), Err(LinkError::InvalidMagic));
        let h = LinkHeader::new(MAX_LINK_MESSAGE_SIZE + 1);
        assert_eq!(h.check(), Err(LinkError::InvalidData));
    }
}
