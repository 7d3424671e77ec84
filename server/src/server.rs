//! The server object: what `spice_server_init` / `spice_server_add_interface` /
//! `spice_server_add_client` are in libspice-server, as one sans-IO state machine.
//!
//! A VMM makes a [`Server`] from a [`Config`], gives it its devices ([`Server::set_keyboard`],
//! [`Server::set_qxl`], ...), and hands it connections: [`Server::connect`] for each accepted
//! stream, then [`Server::handle_bytes`] with what the client sent, [`Server::poll_transmit`]
//! for what to write, [`Server::handle_timeout`] when [`Server::poll_timeout`] says, and
//! [`Server::handle_closed`] when the peer went away. [`Server::is_finished`] says when the
//! server wants a connection closed (after its last bytes are written). The async shell in
//! [`crate::net`] does exactly this over any `AsyncRead + AsyncWrite`.
//!
//! Owns: the sessions (one per client, tying its channels together by connection id), each
//! connection's link stage and channel state machine, the devices, and the one seeded RNG that
//! makes link keys, session ids and ping ids.
//!
//! Must not: do IO, read the wall clock (time comes in as `now_ms`, the VMM's monotonic clock),
//! spawn threads, or iterate a `HashMap` (maps here are `BTreeMap`, so output is a function of
//! the inputs and the seed).

use std::collections::{BTreeMap, VecDeque};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use spice_proto::caps::{self, Caps};
use spice_proto::link::LinkError;
use spice_proto::messages::main::{ChannelId, MouseMode};
use spice_proto::messages::ChannelType;

use crate::channel::core::{ChannelCore, ChannelError, DEFAULT_OUTPUT_CAP};
use crate::channel::cursor::CursorChannel;
use crate::channel::display::DisplayChannel;
use crate::channel::inputs::InputsChannel;
use crate::channel::main::MainChannel;
use crate::link::{LinkEvent, Linked, ServerLink, TicketKey, Ticketing};
use crate::vdi::{Keyboard, Mouse, Tablet};

/// The image compression setting (`spice_server_set_image_compression`; QEMU's
/// `image-compression=`). Lz4 is used when the client asks for it with this set to any LZ mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageCompression {
    Off,
    Quic,
    Lz,
    Glz,
    AutoLz,
    #[default]
    AutoGlz,
    Lz4,
}

impl std::str::FromStr for ImageCompression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "off" => ImageCompression::Off,
            "quic" => ImageCompression::Quic,
            "lz" => ImageCompression::Lz,
            "glz" => ImageCompression::Glz,
            "auto_lz" | "auto-lz" => ImageCompression::AutoLz,
            "auto_glz" | "auto-glz" => ImageCompression::AutoGlz,
            "lz4" => ImageCompression::Lz4,
            _ => {
                return Err(format!(
                    "unknown image compression {s:?} (off, quic, lz, glz, auto_lz, auto_glz, lz4)"
                ))
            }
        })
    }
}

/// A deliberately wrong behaviour, switched on only to prove that the simulator's invariants
/// and the conformance harness catch it. Never set it in a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breakage {
    /// The inputs channel drops the first key press it receives.
    DropKey,
    /// The inputs channel swaps two consecutive absolute positions.
    ReorderInputs,
    /// The inputs channel offers the wrong capability (no `KEY_SCANCODE`, a stray bit instead).
    WrongCaps,
    /// Main's `init` reports the wrong current mouse mode.
    WrongMouseMode,
    /// The display channel never sends `mark` after the first screen.
    NoMark,
    /// The cursor channel never sends `init`.
    NoCursorInit,
    /// The QXL display never gives back the 10th command it takes (a leaked release).
    DropRelease,
}

impl Breakage {
    pub const ALL: [Breakage; 7] = [
        Breakage::DropKey,
        Breakage::ReorderInputs,
        Breakage::WrongCaps,
        Breakage::WrongMouseMode,
        Breakage::NoMark,
        Breakage::NoCursorInit,
        Breakage::DropRelease,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Breakage::DropKey => "drop-key",
            Breakage::ReorderInputs => "reorder-inputs",
            Breakage::WrongCaps => "wrong-caps",
            Breakage::WrongMouseMode => "wrong-mouse-mode",
            Breakage::NoMark => "no-mark",
            Breakage::NoCursorInit => "no-cursor-init",
            Breakage::DropRelease => "drop-release",
        }
    }
}

impl std::str::FromStr for Breakage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Breakage::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Breakage::ALL.iter().map(|b| b.name()).collect();
                format!("unknown breakage {s:?} ({})", names.join(", "))
            })
    }
}

/// How a server is set up. Everything a run depends on is here (with the devices and the
/// times passed in), so the same config and inputs give the same bytes.
#[derive(Debug, Clone)]
pub struct Config {
    pub ticketing: Ticketing,
    /// The VM name sent in `main.name` (clients with the `NAME_AND_UUID` cap).
    pub name: Option<String>,
    pub uuid: Option<[u8; 16]>,
    pub image_compression: ImageCompression,
    /// The cap on bytes queued for one channel connection.
    pub output_cap: usize,
    /// Seeds the RNG for link keys, session ids and ping ids.
    pub seed: u64,
    /// Make a fresh RSA key for every link, as the reference does (true), or one per server
    /// (false: much cheaper under simulation, but a ticket sniffed on one link then opens another).
    pub fresh_key_per_link: bool,
    /// Test-only: a deliberately broken behaviour ([`Breakage`]).
    pub breakage: Option<Breakage>,
    /// What a peer may make the server spend ([`crate::budget`]).
    pub budgets: crate::budget::Budgets,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ticketing: Ticketing::Disabled,
            name: None,
            uuid: None,
            image_compression: ImageCompression::default(),
            output_cap: DEFAULT_OUTPUT_CAP,
            seed: 0,
            fresh_key_per_link: true,
            breakage: None,
            budgets: Default::default(),
        }
    }
}

/// One client connection (a TCP stream), from link to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// The devices and state every channel of every session shares.
pub(crate) struct Shared {
    pub(crate) cfg: Config,
    pub(crate) keyboard: Option<Box<dyn Keyboard>>,
    pub(crate) mouse: Option<Box<dyn Mouse>>,
    pub(crate) tablet: Option<Box<dyn Tablet>>,
    pub(crate) display: crate::display::Display,
    /// The current mouse mode (global, as in the reference).
    pub(crate) mouse_mode: MouseMode,
    /// Set when the mouse mode changed; main channels announce it.
    pub(crate) mouse_mode_generation: u64,
    /// The lock-key state all inputs channels share.
    pub(crate) kbd: crate::channel::inputs::KbdState,
}

impl Shared {
    /// Modes the server can offer: client mode needs a tablet (no agent mouse yet).
    pub(crate) fn supported_mouse_modes(&self) -> MouseMode {
        if self.tablet.is_some() {
            MouseMode::SERVER | MouseMode::CLIENT
        } else {
            MouseMode::SERVER
        }
    }
}

/// One client: the channels linked with its connection id (the main channel is the
/// connection the session id was made for).
struct Session {
    channels: Vec<ConnId>,
}

enum State {
    Linking(Box<ServerLink>),
    Main(MainChannel),
    Inputs(InputsChannel),
    Display(Box<DisplayChannel>),
    Cursor(CursorChannel),
    /// The server is done with it: write what is left, then close.
    Closing,
}

/// A connection still in the link stage after this long is closed (a client that stalls or
/// vanishes mid-handshake must not hold a connection forever).
pub const LINK_TIMEOUT_MS: u64 = 30_000;

struct Conn {
    state: State,
    /// When it connected.
    since_ms: u64,
    session: Option<u32>,
    /// Bytes produced and not yet taken (link replies, the final error).
    out: VecDeque<Vec<u8>>,
}

/// A SPICE server: sessions, connections and devices.
pub struct Server {
    shared: Shared,
    rng: ChaCha20Rng,
    key: Option<TicketKey>,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: u64,
    sessions: BTreeMap<u32, Session>,
    now_ms: u64,
}

impl Server {
    pub fn new(cfg: Config) -> Server {
        let rng = ChaCha20Rng::seed_from_u64(cfg.seed);
        Server {
            shared: Shared {
                display: crate::display::Display::new(
                    cfg.image_compression,
                    cfg.breakage == Some(Breakage::DropRelease),
                    cfg.budgets.clone(),
                ),
                cfg,
                keyboard: None,
                mouse: None,
                tablet: None,
                mouse_mode: MouseMode::SERVER,
                mouse_mode_generation: 0,
                kbd: Default::default(),
            },
            rng,
            key: None,
            conns: BTreeMap::new(),
            next_conn: 1,
            sessions: BTreeMap::new(),
            now_ms: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.shared.cfg
    }

    /// Use `key` for every link (with `fresh_key_per_link: false`): lets tests, fuzz targets
    /// and the simulator skip RSA key generation.
    pub fn set_link_key(&mut self, key: TicketKey) {
        self.key = Some(key);
    }

    /// Change the password (or disable ticketing) for links that start from now on.
    pub fn set_ticketing(&mut self, t: Ticketing) {
        self.shared.cfg.ticketing = t;
    }

    pub fn set_keyboard(&mut self, k: Box<dyn Keyboard>) {
        self.shared.keyboard = Some(k);
    }

    pub fn set_mouse(&mut self, m: Box<dyn Mouse>) {
        self.shared.mouse = Some(m);
    }

    pub fn set_tablet(&mut self, t: Box<dyn Tablet>) {
        self.shared.tablet = Some(t);
    }

    /// The display side: attach the QXL device and read its state.
    pub fn display(&mut self) -> &mut crate::display::Display {
        &mut self.shared.display
    }

    /// The current mouse mode.
    pub fn mouse_mode(&self) -> MouseMode {
        self.shared.mouse_mode
    }

    /// The most bytes queued for any one connection right now.
    pub fn max_queued_bytes(&self) -> usize {
        self.conns
            .keys()
            .map(|&c| self.queued_bytes(c))
            .max()
            .unwrap_or(0)
    }

    /// Number of client sessions (a session lives as long as its main channel).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Connections the server holds, in any state.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Bytes queued for `conn` and not yet taken by [`poll_transmit`](Self::poll_transmit).
    pub fn queued_bytes(&self, conn: ConnId) -> usize {
        let Some(c) = self.conns.get(&conn) else {
            return 0;
        };
        c.out.iter().map(Vec::len).sum::<usize>()
            + match &c.state {
                State::Main(ch) => ch.core().queued_bytes(),
                State::Inputs(ch) => ch.core().queued_bytes(),
                State::Display(ch) => ch.core().queued_bytes(),
                State::Cursor(ch) => ch.core().queued_bytes(),
                State::Linking(_) | State::Closing => 0,
            }
    }

    /// A client connected: a new connection in the link stage.
    pub fn connect(&mut self, now_ms: u64) -> ConnId {
        self.now_ms = self.now_ms.max(now_ms);
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let link = ServerLink::new(self.shared.cfg.ticketing.clone());
        self.conns.insert(
            id,
            Conn {
                since_ms: now_ms,
                state: State::Linking(Box::new(link)),
                session: None,
                out: VecDeque::new(),
            },
        );
        tracing::debug!(%id, "connection");
        id
    }

    /// The client sent `data` on `conn`.
    pub fn handle_bytes(&mut self, conn: ConnId, data: &[u8], now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let now_ms = self.now_ms;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match &mut c.state {
            State::Linking(link) => {
                link.handle_bytes(data, now_ms);
                self.drive_link(conn);
            }
            State::Closing => {}
            _ => {
                let r = self.with_channel(conn, |ch, shared| ch.handle_bytes(data, shared, now_ms));
                if let Some(Err(e)) = r {
                    self.channel_failed(conn, e);
                }
            }
        }
        self.pump(now_ms);
    }

    /// The peer closed `conn` (or the stream failed): forget it. Closing a session's main
    /// channel ends the session and its other channels.
    pub fn handle_closed(&mut self, conn: ConnId, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.remove_conn(conn);
        self.pump(self.now_ms);
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t = self.shared.display.poll_timeout();
        if let Some(k) = self.shared.kbd.poll_timeout() {
            t = Some(t.map_or(k, |t| t.min(k)));
        }
        for c in self.conns.values() {
            let ct = match &c.state {
                State::Main(ch) => ch.poll_timeout(),
                State::Inputs(ch) => ch.core().poll_timeout(),
                State::Display(ch) => ch.poll_timeout(),
                State::Cursor(ch) => ch.core().poll_timeout(),
                State::Linking(_) => Some(c.since_ms + LINK_TIMEOUT_MS),
                State::Closing => None,
            };
            t = match (t, ct) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        t
    }

    /// Time passed: pings, device polling, frames.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let now_ms = self.now_ms;
        self.shared.kbd.handle_timeout(now_ms);
        self.shared.display.handle_timeout(now_ms);
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let linking_too_long = self.conns.get(&id).is_some_and(|c| {
                matches!(c.state, State::Linking(_)) && now_ms >= c.since_ms + LINK_TIMEOUT_MS
            });
            if linking_too_long {
                tracing::info!(conn = %id, "closing: link stage not finished in {LINK_TIMEOUT_MS} ms");
                self.drop_conn_output(id);
                continue;
            }
            let dead = self.with_channel(id, |ch, _| {
                ch.handle_timeout(now_ms);
                Ok(ch.core_mut().is_dead(now_ms))
            });
            if let Some(Ok(true)) = dead {
                let overflowed = self
                    .with_channel(id, |ch, _| Ok(ch.core_mut().overflowed()))
                    .is_some_and(|r| r.unwrap_or(false));
                if overflowed {
                    tracing::warn!(conn = %id, "closing: output_cap exceeded, the peer does not read");
                } else {
                    tracing::info!(conn = %id, "closing: no pong for {} ms, the peer is gone",
                        crate::channel::core::PONG_TIMEOUT_MS);
                }
                self.drop_conn_output(id);
            }
        }
        self.pump(now_ms);
    }

    /// The next bytes to write on `conn`, if any.
    pub fn poll_transmit(&mut self, conn: ConnId) -> Option<Vec<u8>> {
        let now_ms = self.now_ms;
        let c = self.conns.get_mut(&conn)?;
        if let Some(b) = c.out.pop_front() {
            return Some(b);
        }
        let b = match &mut c.state {
            State::Linking(l) => l.poll_transmit(),
            State::Main(ch) => ch.core_mut().poll_transmit(),
            State::Inputs(ch) => ch.core_mut().poll_transmit(),
            State::Cursor(ch) => ch.core_mut().poll_transmit(),
            State::Display(ch) => {
                let b = ch.core_mut().poll_transmit();
                if b.is_none() {
                    // Room again: let the display channel encode more.
                    ch.pump(&mut self.shared, now_ms);
                    ch.core_mut().poll_transmit()
                } else {
                    b
                }
            }
            State::Closing => None,
        };
        b
    }

    /// Whether the server is done with `conn`: the shell closes it once
    /// [`poll_transmit`](Self::poll_transmit) has nothing more. Unknown ids are finished.
    pub fn is_finished(&self, conn: ConnId) -> bool {
        match self.conns.get(&conn) {
            None => true,
            Some(c) => matches!(c.state, State::Closing) && c.out.is_empty(),
        }
    }

    /// Run the link stage's events for `conn`.
    fn drive_link(&mut self, conn: ConnId) {
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let State::Linking(link) = &mut c.state else {
                return;
            };
            while let Some(b) = link.poll_transmit() {
                c.out.push_back(b);
            }
            let Some(ev) = link.poll_event() else {
                return;
            };
            match ev {
                LinkEvent::Request(mess) => {
                    let Some(caps) = self.channel_caps(mess.channel_type, mess.channel_id) else {
                        tracing::info!(%conn, channel = ?mess.channel_type, id = mess.channel_id,
                            "link refused: no such channel");
                        if let Some(State::Linking(link)) =
                            self.conns.get_mut(&conn).map(|c| &mut c.state)
                        {
                            link.refuse(LinkError::ChannelNotAvailable, "no such channel");
                        }
                        continue;
                    };
                    let key = match self.link_key() {
                        Ok(k) => k,
                        Err(e) => {
                            tracing::error!(%conn, "{e}");
                            if let Some(State::Linking(link)) =
                                self.conns.get_mut(&conn).map(|c| &mut c.state)
                            {
                                link.refuse(LinkError::Error, e.to_string());
                            }
                            continue;
                        }
                    };
                    let now = self.now_ms;
                    if let Some(State::Linking(link)) =
                        self.conns.get_mut(&conn).map(|c| &mut c.state)
                    {
                        link.accept(caps, key, now);
                    }
                }
                LinkEvent::Authenticated(linked) => self.linked(conn, linked),
                LinkEvent::Failed { error, reason } => {
                    tracing::info!(%conn, ?error, "link failed: {reason}");
                    if let Some(c) = self.conns.get_mut(&conn) {
                        if let State::Linking(link) = &mut c.state {
                            while let Some(b) = link.poll_transmit() {
                                c.out.push_back(b);
                            }
                        }
                        c.state = State::Closing;
                    }
                    return;
                }
            }
        }
    }

    fn link_key(&mut self) -> Result<TicketKey, crate::link::KeyError> {
        if self.shared.cfg.fresh_key_per_link {
            return TicketKey::generate(&mut self.rng);
        }
        if self.key.is_none() {
            self.key = Some(TicketKey::generate(&mut self.rng)?);
        }
        Ok(self.key.clone().expect("set above"))
    }

    /// The capabilities of a channel this server has, or None.
    fn channel_caps(&self, ty: ChannelType, id: u8) -> Option<Caps> {
        let mut c = Caps::default();
        c.set_common(caps::common::MINI_HEADER);
        match (ty, id) {
            (ChannelType::Main, 0) => {
                c.set_channel(caps::main::NAME_AND_UUID);
                c.set_channel(caps::main::AGENT_CONNECTED_TOKENS);
            }
            (ChannelType::Inputs, 0) => {
                if self.shared.cfg.breakage == Some(Breakage::WrongCaps) {
                    c.set_channel(7);
                } else {
                    c.set_channel(caps::inputs::KEY_SCANCODE);
                }
            }
            (ChannelType::Display, 0) if self.shared.display.has_device() => {
                for cap in crate::channel::display::SERVER_CAPS {
                    c.set_channel(*cap);
                }
            }
            (ChannelType::Cursor, 0) if self.shared.display.has_device() => {}
            _ => return None,
        }
        Some(c)
    }

    /// The channels a client is told about in `channels_list` (all but main).
    pub(crate) fn channel_list(&self) -> Vec<ChannelId> {
        let mut v = Vec::new();
        if self.shared.display.has_device() {
            v.push(ChannelId {
                channel_type: ChannelType::Display,
                id: 0,
            });
        }
        v.push(ChannelId {
            channel_type: ChannelType::Inputs,
            id: 0,
        });
        if self.shared.display.has_device() {
            v.push(ChannelId {
                channel_type: ChannelType::Cursor,
                id: 0,
            });
        }
        v
    }

    /// The link stage authenticated `conn`: tie it to a session and start its channel.
    fn linked(&mut self, conn: ConnId, linked: Linked) {
        let now = self.now_ms;
        let ty = linked.mess.channel_type;
        let session_id = if ty == ChannelType::Main {
            // A new client. (A non-zero id on main is a migration target; not supported, so a
            // new session as well.)
            let mut id = 0;
            while id == 0 || self.sessions.contains_key(&id) {
                id = self.rng.next_u32();
            }
            self.sessions.insert(
                id,
                Session {
                    channels: Vec::new(),
                },
            );
            id
        } else {
            let id = linked.mess.connection_id;
            match self.sessions.get_mut(&id) {
                Some(s) => {
                    s.channels.push(conn);
                    id
                }
                None => {
                    tracing::info!(%conn, connection_id = id, "link refused: bad connection id");
                    self.finish_link(conn, LinkError::BadConnectionId);
                    return;
                }
            }
        };
        self.finish_link(conn, LinkError::Ok);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let leftover = match &mut c.state {
            State::Linking(l) => l.take_leftover(),
            _ => Vec::new(),
        };
        c.session = Some(session_id);
        // Seeds the channel's ping ids (a fresh unpredictable id per ping pair, so a client
        // that does not read cannot answer pings blindly to look alive).
        let ping_seed = self.rng.next_u64();
        let header = linked.header;
        let channel_list = self.channel_list();
        let state = match ty {
            ChannelType::Main => {
                let core = ChannelCore::new(header, false, ping_seed, now);
                State::Main(MainChannel::new(
                    core,
                    &linked,
                    session_id,
                    channel_list,
                    &self.shared,
                    now,
                ))
            }
            ChannelType::Inputs => {
                let core = ChannelCore::new(header, false, ping_seed, now);
                State::Inputs(InputsChannel::new(core, &linked, &self.shared))
            }
            ChannelType::Display => {
                let core = ChannelCore::new(header, true, ping_seed, now);
                State::Display(Box::new(DisplayChannel::new(
                    core,
                    &linked,
                    &mut self.shared,
                    now,
                )))
            }
            ChannelType::Cursor => {
                let core = ChannelCore::new(header, true, ping_seed, now);
                State::Cursor(CursorChannel::new(
                    core,
                    &linked,
                    &self.shared,
                    self.shared.cfg.breakage != Some(Breakage::NoCursorInit),
                ))
            }
            _ => State::Closing,
        };
        tracing::info!(%conn, channel = ?ty, session = session_id, "channel linked");
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = state;
        }
        let cap = self.shared.cfg.output_cap;
        self.with_channel(conn, |ch, _| {
            ch.core_mut().set_output_cap(cap);
            Ok(())
        });
        if !leftover.is_empty() {
            let r = self.with_channel(conn, |ch, shared| ch.handle_bytes(&leftover, shared, now));
            if let Some(Err(e)) = r {
                self.channel_failed(conn, e);
            }
        }
    }

    fn finish_link(&mut self, conn: ConnId, result: LinkError) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if let State::Linking(link) = &mut c.state {
                link.finish(result);
                while let Some(b) = link.poll_transmit() {
                    c.out.push_back(b);
                }
                if result != LinkError::Ok {
                    c.state = State::Closing;
                }
            }
        }
    }

    /// A channel's client misbehaved: close that connection only (a main channel takes its
    /// session with it, as the reference disconnects the client).
    fn channel_failed(&mut self, conn: ConnId, e: ChannelError) {
        let kind = self.conns.get(&conn).map_or("?", |c| match &c.state {
            State::Main(_) => "main",
            State::Inputs(_) => "inputs",
            State::Display(_) => "display",
            State::Cursor(_) => "cursor",
            State::Linking(_) => "link",
            State::Closing => "closing",
        });
        tracing::warn!(%conn, channel = kind, "closing channel: {e}");
        self.close_conn(conn);
    }

    /// Close `conn` without writing anything more (the peer is gone or stuck).
    fn drop_conn_output(&mut self, conn: ConnId) {
        self.close_conn(conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.out.clear();
        }
    }

    /// Stop serving `conn` (its queued channel output is dropped) and close it.
    fn close_conn(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let was_main = matches!(c.state, State::Main(_));
        if let State::Display(ch) = &mut c.state {
            ch.closed(&mut self.shared);
        }
        c.state = State::Closing;
        let session = c.session;
        if was_main {
            if let Some(s) = session.and_then(|s| self.sessions.remove(&s)) {
                for other in s.channels {
                    self.close_conn(other);
                }
            }
        }
    }

    fn remove_conn(&mut self, conn: ConnId) {
        self.close_conn(conn);
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(s) = c.session.and_then(|s| self.sessions.get_mut(&s)) {
                s.channels.retain(|&x| x != conn);
            }
            tracing::debug!(%conn, "connection closed");
        }
    }

    /// Let every channel produce what it can (device frames, mouse mode changes, LED changes).
    fn pump(&mut self, now_ms: u64) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.with_channel(id, |ch, shared| {
                ch.pump(shared, now_ms);
                Ok(())
            });
        }
    }

    /// Run `f` on `conn`'s channel, if it is in a channel state.
    fn with_channel<R>(
        &mut self,
        conn: ConnId,
        f: impl FnOnce(&mut dyn ChannelImpl, &mut Shared) -> Result<R, ChannelError>,
    ) -> Option<Result<R, ChannelError>> {
        let c = self.conns.get_mut(&conn)?;
        let ch: &mut dyn ChannelImpl = match &mut c.state {
            State::Main(ch) => ch,
            State::Inputs(ch) => ch,
            State::Display(ch) => ch.as_mut(),
            State::Cursor(ch) => ch,
            State::Linking(_) | State::Closing => return None,
        };
        Some(f(ch, &mut self.shared))
    }
}

/// What the server asks of each channel state machine.
pub(crate) trait ChannelImpl {
    fn core_mut(&mut self) -> &mut ChannelCore;
    /// Bytes from the client.
    fn handle_bytes(
        &mut self,
        data: &[u8],
        shared: &mut Shared,
        now_ms: u64,
    ) -> Result<(), ChannelError>;
    /// Time passed.
    fn handle_timeout(&mut self, now_ms: u64) {
        self.core_mut().handle_timeout(now_ms);
    }
    /// Produce what can be sent now.
    fn pump(&mut self, shared: &mut Shared, now_ms: u64);
}
