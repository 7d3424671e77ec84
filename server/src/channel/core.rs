//! What every channel connection does the same way, as libspice-server's `RedChannelClient`
//! does it: framing, serials, `set_ack`/`ack` flow control, latency pings, and a byte-bounded
//! output queue.
//!
//! A channel state machine owns one [`ChannelCore`]. It feeds the core the client's bytes and
//! gets back the messages that are not base messages; it encodes its own messages through
//! [`ChannelCore::send`] only while [`ChannelCore::can_send`] says the window and the byte cap
//! allow (keeping what it could not send as abstract items it can still drop or merge: that is
//! how a slow client gets fewer, newer frames instead of an unbounded queue).
//!
//! Must not: know any channel's own messages, read a clock (time is passed in, in milliseconds
//! of the server's monotonic clock), or do IO.

use std::collections::VecDeque;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spice_proto::header::{frame, Framer, HeaderKind, RawMessage};
use spice_proto::messages::base::{Ping, SetAck};
use spice_proto::messages::{BaseClient, BaseServer, Message, FIRST_CHANNEL_MESSAGE};
use spice_proto::DecodeError;

/// `NARROW_CLIENT_ACK_WINDOW`: the ack window the reference gives display and cursor clients.
pub const ACK_WINDOW: u32 = 20;
/// `PING_TEST_IDLE_NET_TIMEOUT_MS`: the first ping pair goes out this long after linking.
pub const FIRST_PING_MS: u64 = 100;
/// `PING_TEST_TIMEOUT_MS`: later ping pairs, after each latency measurement.
pub const PING_INTERVAL_MS: u64 = 15_000;
/// A peer that has not answered a ping for this long is gone (its TCP stream may be half-open:
/// the reference relies on TCP keepalive for this; a sans-IO core decides it here, so it also
/// holds under simulation).
pub const PONG_TIMEOUT_MS: u64 = 30_000;
/// The largest message a client may send: a header announcing more closes the channel before
/// anything is buffered. Client messages are small (the largest are agent and usbredir data
/// chunks, tens of KiB), so a hostile client cannot make the server hold more than this per
/// connection.
pub const MAX_CLIENT_MESSAGE: u32 = 1024 * 1024;
/// The default cap on bytes queued for one channel connection.
pub const DEFAULT_OUTPUT_CAP: usize = 4 * 1024 * 1024;
/// Bytes a channel may queue past its output cap for messages that cannot wait (pings, an
/// error): a channel whose queue grows further is not reading, and is closed
/// ([`ChannelCore::overflowed`]). Every message kind counts against the cap; only these few
/// may be queued once it is reached.
pub const FORCED_OUTPUT_SLACK: usize = 64 * 1024;

/// Why a channel connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The client sent bytes that are not a valid message.
    #[error("bad message from client: {0}")]
    Decode(#[from] DecodeError),
    /// The client sent a valid message that makes no sense here.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PingState {
    /// Waiting for the timer.
    Timer { at_ms: u64 },
    /// The pair is out; the first pong (warm-up) is ignored.
    Warmup,
    /// The second pong measures the round trip.
    Latency,
}

#[derive(Debug, Clone)]
struct Acks {
    generation: u32,
    client_generation: u32,
    window: u32,
    /// Messages sent since the last ack (wrapping like the reference's `uint32_t`).
    messages_window: u32,
}

/// The shared part of one channel connection.
#[derive(Debug)]
pub struct ChannelCore {
    kind: HeaderKind,
    framer: Framer,
    /// Serial of the last message sent (full headers carry it; the first message is 1).
    serial: u64,
    acks: Option<Acks>,
    ping: PingState,
    /// The id of the outstanding ping pair: a new one per pair, from `ping_rng`.
    ping_id: u32,
    /// Makes ping ids (seeded by the server's RNG; the client never sees the seed). Core ping
    /// ids are even, [`ChannelCore::private_ping_id`]s odd, so the two never collide.
    ping_rng: ChaCha8Rng,
    /// When the outstanding ping pair went out.
    ping_sent_ms: u64,
    roundtrip_ms: Option<u64>,
    /// Pongs answering pings the channel sent itself ([`ChannelCore::send_ping`]), with the
    /// time they arrived.
    other_pongs: Vec<(spice_proto::messages::base::Pong, u64)>,
    out: VecDeque<Vec<u8>>,
    out_bytes: usize,
    output_cap: usize,
    /// Set when the queue grew past `output_cap + FORCED_OUTPUT_SLACK`: the client is not
    /// reading; the server closes the connection.
    overflowed: bool,
}

impl ChannelCore {
    /// A core for a freshly linked channel. `handle_acks` is true for display and cursor (as
    /// in the reference); such a core queues `set_ack` at once. `ping_seed` must come from the
    /// server's RNG: it seeds the ping ids.
    pub fn new(kind: HeaderKind, handle_acks: bool, ping_seed: u64, now_ms: u64) -> Self {
        let ping_rng = ChaCha8Rng::seed_from_u64(ping_seed);
        let mut c = ChannelCore {
            kind,
            framer: Framer::with_limit(kind, MAX_CLIENT_MESSAGE),
            serial: 0,
            acks: None,
            ping: PingState::Timer {
                at_ms: now_ms + FIRST_PING_MS,
            },
            ping_id: 0,
            ping_rng,
            ping_sent_ms: now_ms,
            roundtrip_ms: None,
            other_pongs: Vec::new(),
            out: VecDeque::new(),
            out_bytes: 0,
            output_cap: DEFAULT_OUTPUT_CAP,
            overflowed: false,
        };
        if handle_acks {
            c.acks = Some(Acks {
                generation: 1,
                client_generation: u32::MAX,
                window: ACK_WINDOW,
                messages_window: 0,
            });
            let set_ack = BaseServer::SetAck(SetAck {
                generation: 1,
                window: ACK_WINDOW,
            });
            c.push(set_ack.msg_type(), &encode_base(&set_ack));
            // set_ack itself does not count against the window (the reference resets it after).
            if let Some(a) = c.acks.as_mut() {
                a.messages_window = 0;
            }
        }
        c
    }

    /// Set the cap on queued output bytes.
    pub fn set_output_cap(&mut self, bytes: usize) {
        self.output_cap = bytes;
    }

    /// The header kind in use.
    pub fn header_kind(&self) -> HeaderKind {
        self.kind
    }

    /// The smallest round trip measured by pings, if any yet.
    pub fn roundtrip_ms(&self) -> Option<u64> {
        self.roundtrip_ms
    }

    /// Whether the client has fallen more than two windows behind in acks.
    pub fn waiting_for_ack(&self) -> bool {
        self.acks
            .as_ref()
            .is_some_and(|a| a.messages_window > a.window * 2)
    }

    /// Whether the channel may encode another message now: the ack window is open and the
    /// output queue is under its cap.
    pub fn can_send(&self) -> bool {
        !self.waiting_for_ack() && self.out_bytes < self.output_cap
    }

    /// Bytes queued and not yet taken by the shell.
    pub fn queued_bytes(&self) -> usize {
        self.out_bytes
    }

    /// Whether the client let its queue grow past the cap and the slack for messages that
    /// cannot wait: it is not reading, and the connection must be closed.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// A fresh, unpredictable ping id for a ping of the channel's own
    /// ([`send_ping`](Self::send_ping)); never equal to one the core uses.
    pub fn private_ping_id(&mut self) -> u32 {
        self.ping_rng.next_u32() | 1
    }

    fn push(&mut self, msg_type: u16, body: &[u8]) {
        if self.overflowed {
            // Already condemned: queue nothing more.
            return;
        }
        if self.out_bytes >= self.output_cap
            && self.out_bytes + self.kind.size() + body.len()
                > self.output_cap + FORCED_OUTPUT_SLACK
        {
            tracing::warn!(
                queued = self.out_bytes,
                cap = self.output_cap,
                msg_type,
                "output_cap: the client does not read; closing the channel"
            );
            self.overflowed = true;
            return;
        }
        self.serial += 1;
        let mut out = Vec::with_capacity(self.kind.size() + body.len());
        frame(self.kind, self.serial, msg_type, body, &mut out);
        self.out_bytes += out.len();
        self.out.push_back(out);
        if let Some(a) = self.acks.as_mut() {
            a.messages_window = a.messages_window.wrapping_add(1);
        }
    }

    /// Queue a message. Callers check [`can_send`](Self::can_send) first for anything that can
    /// wait; only messages that cannot wait (pings, a reply owed now) may be sent regardless,
    /// and those only up to [`FORCED_OUTPUT_SLACK`] past the cap, after which the channel is
    /// [`overflowed`](Self::overflowed).
    pub fn send<M: Message>(&mut self, m: &M) {
        self.push(m.msg_type(), &m.to_body());
    }

    /// Send a ping of the channel's own (the main channel's bandwidth test): `id` must differ
    /// from the core's ping id; its pong is returned by [`take_pongs`](Self::take_pongs).
    pub fn send_ping(&mut self, id: u32, data_len: usize, now_ms: u64) {
        let ping = BaseServer::Ping(Ping {
            id,
            timestamp: now_ms.saturating_mul(1_000_000),
            data: vec![0; data_len].into(),
        });
        self.push(ping.msg_type(), &encode_base(&ping));
    }

    /// Pongs for pings sent with [`send_ping`](Self::send_ping), with their arrival times.
    pub fn take_pongs(&mut self) -> Vec<(spice_proto::messages::base::Pong, u64)> {
        std::mem::take(&mut self.other_pongs)
    }

    /// Bytes to write to the client, in order.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let b = self.out.pop_front()?;
        self.out_bytes -= b.len();
        Some(b)
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.overflowed {
            // Close it now.
            return Some(0);
        }
        match self.ping {
            PingState::Timer { at_ms } => Some(at_ms),
            _ => Some(self.ping_sent_ms + PONG_TIMEOUT_MS),
        }
    }

    /// Whether the peer has not answered a ping for [`PONG_TIMEOUT_MS`], or stopped reading
    /// ([`overflowed`](Self::overflowed)): close the connection.
    pub fn is_dead(&self, now_ms: u64) -> bool {
        self.overflowed
            || (!matches!(self.ping, PingState::Timer { .. })
                && now_ms >= self.ping_sent_ms + PONG_TIMEOUT_MS)
    }

    /// Time passed: send the ping pair when due.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if let PingState::Timer { at_ms } = self.ping {
            if now_ms >= at_ms {
                self.ping = PingState::Warmup;
                // Every pair gets a new id: a pong must echo what the client read.
                self.ping_id = self.ping_rng.next_u32() & !1;
                self.ping_sent_ms = now_ms;
                for _ in 0..2 {
                    let ping = BaseServer::Ping(Ping {
                        id: self.ping_id,
                        timestamp: now_ms.saturating_mul(1_000_000),
                        data: Default::default(),
                    });
                    self.push(ping.msg_type(), &encode_base(&ping));
                }
            }
        }
    }

    /// Take bytes from the client. Base messages are handled here; the channel's own messages
    /// (type 101 and up) are returned for the channel to decode.
    pub fn handle_bytes(
        &mut self,
        data: &[u8],
        now_ms: u64,
    ) -> Result<Vec<RawMessage>, ChannelError> {
        self.framer.push(data);
        let mut mine = Vec::new();
        while let Some(m) = self.framer.next()? {
            if m.header.msg_type >= FIRST_CHANNEL_MESSAGE {
                mine.push(m);
                continue;
            }
            match BaseClient::try_decode(m.header.msg_type, &m.body) {
                Some(Ok(b)) => self.handle_base(b, now_ms),
                Some(Err(e)) => return Err(e.into()),
                None => {
                    return Err(ChannelError::Protocol(format!(
                        "unknown base message type {}",
                        m.header.msg_type
                    )))
                }
            }
        }
        Ok(mine)
    }

    fn handle_base(&mut self, m: BaseClient, now_ms: u64) {
        match m {
            BaseClient::AckSync(generation) => {
                if let Some(a) = self.acks.as_mut() {
                    a.client_generation = generation;
                }
            }
            BaseClient::Ack => {
                if let Some(a) = self.acks.as_mut() {
                    if a.client_generation == a.generation {
                        a.messages_window = a.messages_window.wrapping_sub(a.window);
                    }
                }
            }
            BaseClient::Pong(p) => {
                if p.id != self.ping_id {
                    if self.other_pongs.len() < 64 {
                        self.other_pongs.push((p, now_ms));
                    }
                    return;
                }
                match self.ping {
                    PingState::Warmup => self.ping = PingState::Latency,
                    PingState::Latency => {
                        let sent_ms = p.timestamp / 1_000_000;
                        let rtt = now_ms.saturating_sub(sent_ms);
                        self.roundtrip_ms = Some(self.roundtrip_ms.map_or(rtt, |r| r.min(rtt)));
                        self.ping = PingState::Timer {
                            at_ms: now_ms + PING_INTERVAL_MS,
                        };
                    }
                    PingState::Timer { .. } => {
                        tracing::debug!("unexpected pong");
                    }
                }
            }
            BaseClient::Disconnecting(_)
            | BaseClient::MigrateFlushMark
            | BaseClient::MigrateData(_) => {}
        }
    }
}

fn encode_base(m: &BaseServer) -> Vec<u8> {
    let mut w = spice_proto::Writer::new();
    m.encode_body(&mut w);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use spice_proto::header::{DataHeader, Framer};
    use spice_proto::messages::base::Pong;
    use spice_proto::messages::InputsServer;

    /// Messages a client would read from everything the core queued.
    fn drain(core: &mut ChannelCore) -> Vec<(u64, BaseServer)> {
        let mut f = Framer::new(core.header_kind());
        while let Some(b) = core.poll_transmit() {
            f.push(&b);
        }
        let mut v = vec![];
        while let Some(m) = f.next().unwrap() {
            if let Some(Ok(b)) = BaseServer::try_decode(m.header.msg_type, &m.body) {
                v.push((m.header.serial, b));
            }
        }
        v
    }

    fn client(kind: HeaderKind, m: &BaseClient) -> Vec<u8> {
        let mut w = spice_proto::Writer::new();
        m.encode_body(&mut w);
        let body = w.finish();
        let mut out = vec![];
        DataHeader {
            serial: 1,
            msg_type: m.msg_type(),
            size: body.len() as u32,
            sub_list: 0,
        }
        .encode(kind, &mut out);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn ack_window_closes_after_two_windows_and_reopens_on_ack() {
        let mut c = ChannelCore::new(HeaderKind::Full, true, 7, 0);
        let first = drain(&mut c);
        assert_eq!(
            first,
            vec![(
                1,
                BaseServer::SetAck(SetAck {
                    generation: 1,
                    window: ACK_WINDOW
                })
            )]
        );
        let mut sent = 0;
        while c.can_send() {
            c.send(&InputsServer::MouseMotionAck);
            sent += 1;
        }
        assert_eq!(sent, ACK_WINDOW * 2 + 1);
        // An ack before ack_sync does not count (wrong generation).
        c.handle_bytes(&client(HeaderKind::Full, &BaseClient::Ack), 0)
            .unwrap();
        assert!(!c.can_send());
        c.handle_bytes(&client(HeaderKind::Full, &BaseClient::AckSync(1)), 0)
            .unwrap();
        c.handle_bytes(&client(HeaderKind::Full, &BaseClient::Ack), 0)
            .unwrap();
        assert!(c.can_send());
    }

    fn ping_ids(pings: &[(u64, BaseServer)]) -> Vec<u32> {
        pings
            .iter()
            .filter_map(|(_, m)| match m {
                BaseServer::Ping(p) => Some(p.id),
                _ => None,
            })
            .collect()
    }

    fn pong(kind: HeaderKind, id: u32, at_ms: u64) -> Vec<u8> {
        client(
            kind,
            &BaseClient::Pong(Pong {
                id,
                timestamp: at_ms * 1_000_000,
            }),
        )
    }

    #[test]
    fn ping_pair_after_100ms_then_latency_then_every_15s() {
        let mut c = ChannelCore::new(HeaderKind::Mini, false, 42, 1000);
        assert_eq!(c.poll_timeout(), Some(1100));
        c.handle_timeout(1099);
        assert!(drain(&mut c).is_empty());
        c.handle_timeout(1100);
        let ids = ping_ids(&drain(&mut c));
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], ids[1], "one id per pair");
        c.handle_bytes(&pong(HeaderKind::Mini, ids[0], 1100), 1105)
            .unwrap();
        assert_eq!(c.roundtrip_ms(), None, "the first pong is the warm-up");
        c.handle_bytes(&pong(HeaderKind::Mini, ids[0], 1100), 1107)
            .unwrap();
        assert_eq!(c.roundtrip_ms(), Some(7));
        assert_eq!(c.poll_timeout(), Some(1107 + PING_INTERVAL_MS));
    }

    /// Security review 14: with one ping id per channel, a client that never reads could
    /// answer pings blindly and stay alive forever. Each pair now has a new id.
    #[test]
    fn blind_pongs_do_not_keep_a_silent_client_alive() {
        let mut c = ChannelCore::new(HeaderKind::Mini, false, 9, 0);
        c.handle_timeout(FIRST_PING_MS);
        let first = ping_ids(&drain(&mut c))[0];
        c.handle_bytes(&pong(HeaderKind::Mini, first, 100), 110)
            .unwrap();
        c.handle_bytes(&pong(HeaderKind::Mini, first, 100), 111)
            .unwrap();
        let next_at = c.poll_timeout().unwrap();
        c.handle_timeout(next_at);
        // The client does not read the new pair; it replays the id it learned.
        c.handle_bytes(&pong(HeaderKind::Mini, first, next_at), next_at + 1)
            .unwrap();
        c.handle_bytes(&pong(HeaderKind::Mini, first, next_at), next_at + 2)
            .unwrap();
        assert!(c.is_dead(next_at + PONG_TIMEOUT_MS));
        let second = ping_ids(&drain(&mut c))[0];
        assert_ne!(first, second);
        assert_eq!(second & 1, 0);
        assert_eq!(c.private_ping_id() & 1, 1);
    }

    /// Security review 14: messages queued regardless of `can_send` (pings, replies) are
    /// bounded too: past the cap and its slack the channel is condemned, not grown.
    #[test]
    fn forced_output_past_the_cap_overflows_the_channel() {
        let mut c = ChannelCore::new(HeaderKind::Mini, false, 1, 0);
        c.set_output_cap(1000);
        for _ in 0..1_000_000 {
            c.send(&InputsServer::MouseMotionAck);
        }
        assert!(c.overflowed());
        assert!(c.queued_bytes() <= 1000 + FORCED_OUTPUT_SLACK);
        assert!(c.is_dead(0));
        assert_eq!(c.poll_timeout(), Some(0));
    }

    #[test]
    fn output_is_bounded_by_the_cap() {
        let mut c = ChannelCore::new(HeaderKind::Mini, false, 1, 0);
        c.set_output_cap(100);
        let mut n = 0;
        while c.can_send() {
            c.send(&InputsServer::MouseMotionAck);
            n += 1;
        }
        assert!(c.queued_bytes() >= 100 && c.queued_bytes() < 100 + 6);
        assert_eq!(n, 17);
        c.poll_transmit();
        assert!(c.can_send());
    }

    #[test]
    fn bad_bytes_are_a_typed_error() {
        let mut c = ChannelCore::new(HeaderKind::Mini, false, 1, 0);
        // pong with a short body
        let e = c.handle_bytes(&[3, 0, 2, 0, 0, 0, 1, 2], 0).unwrap_err();
        assert!(matches!(e, ChannelError::Decode(_)));
        let mut c = ChannelCore::new(HeaderKind::Mini, false, 1, 0);
        let e = c.handle_bytes(&[50, 0, 0, 0, 0, 0], 0).unwrap_err();
        assert!(matches!(e, ChannelError::Protocol(_)));
        // Channel messages are passed on.
        let got = c.handle_bytes(&[101, 0, 1, 0, 0, 0, 9], 0).unwrap();
        assert_eq!(got[0].body, vec![9]);
    }
}
