//! The server side of the link stage, as a sans-IO state machine.
//!
//! Feed it the client's bytes ([`ServerLink::handle_bytes`]); take bytes to send from
//! [`ServerLink::poll_transmit`] and events from [`ServerLink::poll_event`]. It never touches a
//! socket or a clock: the time for ticket expiry is passed in.
//!
//! The exchange, as libspice-server runs it:
//! 1. `SpiceLinkHeader` (magic, version 2.x, size 18..=4096) and `SpiceLinkMess`.
//!    Errors are answered with a reply carrying the error code and a zeroed key, then closed.
//! 2. The owner is asked ([`LinkEvent::Request`]) whether the channel exists and with which
//!    capabilities; it answers [`ServerLink::accept`] or [`ServerLink::refuse`].
//! 3. `SpiceLinkReply` with a fresh RSA-1024 public key (SubjectPublicKeyInfo DER, 162 bytes).
//! 4. `SpiceLinkAuthMechanism` if the client has `PROTOCOL_AUTH_SELECTION` (only SPICE ticket
//!    auth is offered; anything else is `InvalidData`), then the 128-byte OAEP-SHA1 ticket.
//!    The ticket must decrypt even with ticketing disabled (the reference requires it too).
//! 5. [`LinkEvent::Authenticated`]: the owner checks the connection id and answers with
//!    [`ServerLink::finish`], which writes the 4-byte link result.
//!
//! Must not: know about sessions or channels beyond the link message, read the wall clock, or
//! generate randomness itself (the RNG is the caller's, so simulation is deterministic).

use std::collections::VecDeque;

use rsa::pkcs8::EncodePublicKey;
use rsa::{Oaep, RsaPrivateKey};
use spice_proto::caps::{self, Caps};
use spice_proto::header::HeaderKind;
use spice_proto::link::{
    AuthMechanism, LinkError, LinkHeader, LinkMess, LinkReply, ENCRYPTED_TICKET_BYTES, PUBKEY_BYTES,
};

/// How clients prove who they are.
#[derive(Clone, PartialEq, Eq)]
pub enum Ticketing {
    /// Any password (or none) is accepted (`--disable-ticketing`).
    Disabled,
    /// The password must match; `expires_at_ms`, if set, is compared with the `now_ms` the
    /// caller passes in.
    Password {
        password: String,
        expires_at_ms: Option<u64>,
    },
}

impl std::fmt::Debug for Ticketing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ticketing::Disabled => write!(f, "Disabled"),
            Ticketing::Password { expires_at_ms, .. } => {
                write!(
                    f,
                    "Password {{ password: <hidden>, expires_at_ms: {expires_at_ms:?} }}"
                )
            }
        }
    }
}

/// An RSA-1024 key pair for one link, with its public key in the wire form.
#[derive(Clone)]
pub struct TicketKey {
    private: RsaPrivateKey,
    public_der: [u8; PUBKEY_BYTES],
    /// Fuzz targets and tests only ([`TicketKey::memoized`]): tickets already decrypted, so
    /// that linking the same clients again costs no RSA work. `None` for every real key.
    memo: Option<std::sync::Arc<std::sync::Mutex<DecryptMemo>>>,
}

/// Ticket ciphertext to [`TicketKey::decrypt`]'s answer.
type DecryptMemo = std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Why a key could not be made (a bug or an exhausted RNG; logged, the link refused).
#[derive(Debug, Clone, thiserror::Error)]
#[error("ticket key: {0}")]
pub struct KeyError(String);

impl TicketKey {
    /// Generate a fresh key from `rng` (the reference makes one per link).
    pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> Result<Self, KeyError> {
        let private = RsaPrivateKey::new(rng, 1024).map_err(|e| KeyError(e.to_string()))?;
        let der = private
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| KeyError(e.to_string()))?;
        let bytes = der.as_bytes();
        let public_der: [u8; PUBKEY_BYTES] = bytes
            .try_into()
            .map_err(|_| KeyError(format!("public key DER is {} bytes", bytes.len())))?;
        Ok(TicketKey {
            private,
            public_der,
            memo: None,
        })
    }

    /// The 162 bytes sent in the link reply.
    pub fn public_der(&self) -> &[u8; PUBKEY_BYTES] {
        &self.public_der
    }

    /// This key (and its clones) remembering the tickets it decrypted: for fuzz targets that
    /// link the same clients for every input (the RSA work would dominate each run). Never for
    /// a real server: it keeps every ticket it saw (up to 256).
    #[doc(hidden)]
    pub fn memoized(mut self) -> Self {
        self.memo = Some(Default::default());
        self
    }

    /// Decrypt a client's ticket; the password without its NUL terminator.
    pub fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let Some(memo) = &self.memo else {
            return self.decrypt_now(ticket);
        };
        if let Some(known) = memo.lock().ok().and_then(|m| m.get(ticket).cloned()) {
            return known;
        }
        let pw = self.decrypt_now(ticket);
        if let Ok(mut m) = memo.lock() {
            if m.len() < 256 {
                m.insert(ticket.to_vec(), pw.clone());
            }
        }
        pw
    }

    fn decrypt_now(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let mut pw = self
            .private
            .decrypt(Oaep::new::<sha1::Sha1>(), ticket)
            .ok()?;
        if let Some(nul) = pw.iter().position(|&b| b == 0) {
            pw.truncate(nul);
        }
        Some(pw)
    }

    /// Encrypt a password for this key, as a client does (for tests and the simulated client).
    pub fn encrypt_for(
        public_der: &[u8],
        password: &str,
        rng: &mut impl rand_core::CryptoRngCore,
    ) -> Option<[u8; ENCRYPTED_TICKET_BYTES]> {
        use rsa::pkcs8::DecodePublicKey;
        let public = rsa::RsaPublicKey::from_public_key_der(public_der).ok()?;
        let mut msg = password.as_bytes().to_vec();
        msg.push(0);
        let ct = public.encrypt(rng, Oaep::new::<sha1::Sha1>(), &msg).ok()?;
        ct.try_into().ok()
    }
}

/// A request for one link key, made by [`crate::Server::poll_key_request`]: the embedder runs
/// [`KeyRequest::generate`] off its event loop (RSA-1024 generation takes tens of ms) and hands
/// the result to [`crate::Server::add_link_key`].
///
/// It carries a 32-byte seed drawn from the server's RNG, so the key is a function of the
/// server's seed (deterministic when the server is) and the worker needs no RNG of its own.
pub struct KeyRequest {
    seed: [u8; 32],
}

impl std::fmt::Debug for KeyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRequest {{ seed: <hidden> }}")
    }
}

impl KeyRequest {
    pub(crate) fn new(seed: [u8; 32]) -> Self {
        KeyRequest { seed }
    }

    /// Make the key (slow: run it on a worker thread, not the event loop).
    pub fn generate(self) -> Result<TicketKey, KeyError> {
        use rand_chacha::rand_core::SeedableRng;
        TicketKey::generate(&mut rand_chacha::ChaCha20Rng::from_seed(self.seed))
    }
}

/// What the link stage tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The client asked to link this channel: call [`ServerLink::accept`] with the channel's
    /// capabilities, or [`ServerLink::refuse`].
    Request(LinkMess),
    /// The client authenticated: check the connection id, then call [`ServerLink::finish`].
    Authenticated(Linked),
    /// The link failed; the error reply (if any) is queued. Close after sending it.
    Failed { error: LinkError, reason: String },
}

/// A linked channel: what the channel state machine needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    pub mess: LinkMess,
    /// The capabilities the server offered for this channel.
    pub server_caps: Caps,
    /// The data header both sides use from now on.
    pub header: HeaderKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Mess,
    AwaitAccept,
    AuthMechanism,
    Ticket,
    AwaitFinish,
    Done,
    Failed,
}

/// The server side of one connection's link stage.
pub struct ServerLink {
    state: State,
    ticketing: Ticketing,
    buf: Vec<u8>,
    header: Option<LinkHeader>,
    mess: Option<LinkMess>,
    server_caps: Caps,
    key: Option<TicketKey>,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<LinkEvent>,
}

impl ServerLink {
    pub fn new(ticketing: Ticketing) -> Self {
        ServerLink {
            state: State::Header,
            ticketing,
            buf: Vec::new(),
            header: None,
            mess: None,
            server_caps: Caps::default(),
            key: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Whether the link stage is over (successfully or not); bytes after it belong to the
    /// channel (see [`take_leftover`](Self::take_leftover)).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done | State::Failed)
    }

    /// Bytes received after the link stage ended (the client may pipeline its first messages).
    pub fn take_leftover(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Bytes to send, in order.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// Feed bytes from the client; `now_ms` is the core clock, for ticket expiry.
    pub fn handle_bytes(&mut self, data: &[u8], now_ms: u64) {
        if self.state == State::Failed {
            return;
        }
        self.buf.extend_from_slice(data);
        self.advance(now_ms);
    }

    fn fail(&mut self, error: LinkError, reason: impl Into<String>, reply: Reply) {
        match reply {
            Reply::WithKeyBlock => {
                let r = LinkReply {
                    error,
                    pub_key: [0; PUBKEY_BYTES],
                    caps: Caps::default(),
                };
                // The reference sends the fixed reply with zero caps counts and offset.
                let mut body = vec![];
                body.extend_from_slice(&r.error.to_raw().to_le_bytes());
                body.extend_from_slice(&r.pub_key);
                body.extend_from_slice(&[0; 12]);
                let mut out = vec![];
                LinkHeader::new(body.len() as u32).encode(&mut out);
                out.extend_from_slice(&body);
                self.out.push_back(out);
            }
            Reply::ResultCode => self.out.push_back(error.to_raw().to_le_bytes().to_vec()),
            Reply::Nothing => {}
        }
        self.state = State::Failed;
        self.buf.clear();
        self.events.push_back(LinkEvent::Failed {
            error,
            reason: reason.into(),
        });
    }

    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        if self.buf.len() < n {
            return None;
        }
        let rest = self.buf.split_off(n);
        Some(std::mem::replace(&mut self.buf, rest))
    }

    fn advance(&mut self, now_ms: u64) {
        loop {
            match self.state {
                State::Header => {
                    let Some(b) = self.take(LinkHeader::SIZE) else {
                        return;
                    };
                    let Ok(h) = LinkHeader::decode(&b) else {
                        return;
                    };
                    if let Err(e) = h.check() {
                        let reply = if e == LinkError::VersionMismatch && h.major_version == 0 {
                            Reply::Nothing
                        } else {
                            Reply::WithKeyBlock
                        };
                        return self.fail(e, format!("bad link header {h:?}"), reply);
                    }
                    self.header = Some(h);
                    self.state = State::Mess;
                }
                State::Mess => {
                    let size = self.header.map_or(0, |h| h.size as usize);
                    let Some(b) = self.take(size) else {
                        return;
                    };
                    match LinkMess::decode(&b) {
                        Ok(m) => {
                            self.mess = Some(m.clone());
                            self.state = State::AwaitAccept;
                            self.events.push_back(LinkEvent::Request(m));
                            return;
                        }
                        Err(e) => {
                            return self.fail(
                                LinkError::InvalidData,
                                format!("bad link message: {e}"),
                                Reply::WithKeyBlock,
                            )
                        }
                    }
                }
                State::AuthMechanism => {
                    let Some(b) = self.take(4) else {
                        return;
                    };
                    let mech = spice_proto::link::decode_auth_mechanism(&b);
                    if mech != Ok(AuthMechanism::Spice) {
                        return self.fail(
                            LinkError::InvalidData,
                            format!("unsupported auth mechanism {mech:?}"),
                            Reply::WithKeyBlock,
                        );
                    }
                    self.state = State::Ticket;
                }
                State::Ticket => {
                    let Some(b) = self.take(ENCRYPTED_TICKET_BYTES) else {
                        return;
                    };
                    self.check_ticket(&b, now_ms);
                    if self.state != State::Ticket {
                        return;
                    }
                }
                State::AwaitAccept | State::AwaitFinish | State::Done | State::Failed => return,
            }
        }
    }

    fn check_ticket(&mut self, ticket: &[u8], now_ms: u64) {
        let Some(pw) = self.key.as_ref().and_then(|k| k.decrypt(ticket)) else {
            return self.fail(
                LinkError::PermissionDenied,
                "ticket does not decrypt",
                Reply::ResultCode,
            );
        };
        self.key = None;
        if let Ticketing::Password {
            password,
            expires_at_ms,
        } = &self.ticketing
        {
            if password.is_empty() {
                return self.fail(
                    LinkError::PermissionDenied,
                    "ticketing enabled but no password set",
                    Reply::ResultCode,
                );
            }
            if expires_at_ms.is_some_and(|t| t < now_ms) {
                return self.fail(
                    LinkError::PermissionDenied,
                    "ticket expired",
                    Reply::ResultCode,
                );
            }
            // Constant time (for equal lengths): the comparison must not tell a client how
            // many leading bytes it guessed right.
            if !bool::from(subtle::ConstantTimeEq::ct_eq(&pw[..], password.as_bytes())) {
                return self.fail(
                    LinkError::PermissionDenied,
                    "invalid password",
                    Reply::ResultCode,
                );
            }
        }
        let Some(mess) = self.mess.clone() else {
            return;
        };
        let mini = self
            .server_caps
            .both_common(&mess.caps, caps::common::MINI_HEADER);
        self.state = State::AwaitFinish;
        self.events.push_back(LinkEvent::Authenticated(Linked {
            mess,
            server_caps: self.server_caps.clone(),
            header: if mini {
                HeaderKind::Mini
            } else {
                HeaderKind::Full
            },
        }));
    }

    /// Answer a [`LinkEvent::Request`]: the channel exists with these capabilities (the common
    /// auth caps are added here). `key` is this link's fresh ticket key.
    pub fn accept(&mut self, mut server_caps: Caps, key: TicketKey, now_ms: u64) {
        if self.state != State::AwaitAccept {
            return;
        }
        server_caps.set_common(caps::common::PROTOCOL_AUTH_SELECTION);
        server_caps.set_common(caps::common::AUTH_SPICE);
        let reply = LinkReply {
            error: LinkError::Ok,
            pub_key: *key.public_der(),
            caps: server_caps.clone(),
        };
        self.out.push_back(reply.to_bytes());
        self.server_caps = server_caps;
        self.key = Some(key);
        let selection = self
            .mess
            .as_ref()
            .is_some_and(|m| m.caps.has_common(caps::common::PROTOCOL_AUTH_SELECTION));
        self.state = if selection {
            State::AuthMechanism
        } else {
            State::Ticket
        };
        self.advance(now_ms);
    }

    /// Answer a [`LinkEvent::Request`]: no such channel. The reference closes without a reply
    /// for a non-main channel it does not have at this point; we answer
    /// `ChannelNotAvailable` in a link reply, which clients report more clearly.
    pub fn refuse(&mut self, error: LinkError, reason: impl Into<String>) {
        if self.state == State::AwaitAccept {
            self.fail(error, reason, Reply::WithKeyBlock);
        }
    }

    /// Answer [`LinkEvent::Authenticated`] with the link result (`Ok`, `BadConnectionId`,
    /// `ChannelNotAvailable`).
    pub fn finish(&mut self, result: LinkError) {
        if self.state != State::AwaitFinish {
            return;
        }
        if result == LinkError::Ok {
            self.out.push_back(result.to_raw().to_le_bytes().to_vec());
            self.state = State::Done;
        } else {
            self.fail(
                result,
                format!("link refused: {}", result.name()),
                Reply::ResultCode,
            );
        }
    }
}

enum Reply {
    /// A `SpiceLinkReply` carrying the error and a zeroed key.
    WithKeyBlock,
    /// The 4-byte link result.
    ResultCode,
    /// Close without a word.
    Nothing,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use spice_proto::messages::ChannelType;

    fn key(seed: u64) -> TicketKey {
        TicketKey::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed)).unwrap()
    }

    fn client_mess(selection: bool) -> LinkMess {
        let mut common = vec![caps::common::AUTH_SPICE, caps::common::MINI_HEADER];
        if selection {
            common.push(caps::common::PROTOCOL_AUTH_SELECTION);
        }
        LinkMess {
            connection_id: 0,
            channel_type: ChannelType::Main,
            channel_id: 0,
            caps: Caps::from_bits(&common, &[]),
        }
    }

    /// Run a link as a client would; the result code the client reads.
    fn link_with(ticketing: Ticketing, password: &str, selection: bool, now: u64) -> LinkError {
        let mut s = ServerLink::new(ticketing);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Feed the link message one byte at a time: framing must not care.
        for b in client_mess(selection).to_bytes() {
            s.handle_bytes(&[b], now);
        }
        let Some(LinkEvent::Request(m)) = s.poll_event() else {
            panic!("no request")
        };
        assert_eq!(m, client_mess(selection));
        s.accept(
            Caps::from_bits(&[caps::common::MINI_HEADER], &[]),
            key(1),
            now,
        );
        let reply_bytes = s.poll_transmit().unwrap();
        let reply = LinkReply::decode(&reply_bytes[16..]).unwrap();
        assert_eq!(reply.error, LinkError::Ok);
        assert!(reply.caps.has_common(caps::common::AUTH_SPICE));
        let ticket = TicketKey::encrypt_for(&reply.pub_key, password, &mut rng).unwrap();
        if selection {
            s.handle_bytes(&1u32.to_le_bytes(), now);
        }
        s.handle_bytes(&ticket, now);
        match s.poll_event() {
            Some(LinkEvent::Authenticated(l)) => {
                assert_eq!(l.header, HeaderKind::Mini);
                s.finish(LinkError::Ok);
            }
            Some(LinkEvent::Failed { .. }) => {}
            e => panic!("unexpected {e:?}"),
        }
        let result = s.poll_transmit().unwrap();
        spice_proto::link::decode_link_result(&result).unwrap()
    }

    #[test]
    fn tickets_are_checked_like_the_reference() {
        let pw = |p: &str, exp| Ticketing::Password {
            password: p.into(),
            expires_at_ms: exp,
        };
        assert_eq!(
            link_with(pw("s3cret", None), "s3cret", true, 0),
            LinkError::Ok
        );
        assert_eq!(
            link_with(pw("s3cret", None), "s3cret", false, 0),
            LinkError::Ok
        );
        assert_eq!(
            link_with(pw("s3cret", None), "wrong", true, 0),
            LinkError::PermissionDenied
        );
        assert_eq!(
            link_with(pw("s3cret", Some(10)), "s3cret", true, 11),
            LinkError::PermissionDenied
        );
        assert_eq!(link_with(Ticketing::Disabled, "", true, 0), LinkError::Ok);
        assert_eq!(
            link_with(Ticketing::Disabled, "anything", true, 0),
            LinkError::Ok
        );
    }

    #[test]
    fn bad_headers_get_the_reference_error_replies() {
        let mut s = ServerLink::new(Ticketing::Disabled);
        s.handle_bytes(b"XXXX\x02\0\0\0\x02\0\0\0\x12\0\0\0", 0);
        let out = s.poll_transmit().unwrap();
        assert_eq!(out.len(), 16 + LinkReply::FIXED_SIZE);
        assert_eq!(
            LinkReply::decode(&out[16..]).unwrap().error,
            LinkError::InvalidMagic
        );
        assert!(s.is_done());

        let mut s = ServerLink::new(Ticketing::Disabled);
        let mut h = vec![];
        LinkHeader::new(5000).encode(&mut h);
        s.handle_bytes(&h, 0);
        let out = s.poll_transmit().unwrap();
        assert_eq!(
            LinkReply::decode(&out[16..]).unwrap().error,
            LinkError::InvalidData
        );
    }

    #[test]
    fn public_key_is_162_bytes_of_spki_der() {
        let k = key(3);
        assert_eq!(k.public_der()[0], 0x30);
        assert_eq!(k.public_der().len(), 162);
    }
}
