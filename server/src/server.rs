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
//! Link keys: RSA-1024 generation takes tens of milliseconds, too long for an event loop that
//! serves every client. With `fresh_key_per_link` the server keeps a small pool of keys that
//! the embedder fills off its loop: [`Server::poll_key_request`] says when a key is wanted
//! (with a seed from the server's RNG), the embedder runs [`crate::link::KeyRequest::generate`]
//! on a worker and hands the key to [`Server::add_link_key`]. A link whose key is not ready
//! waits (its connection stays in the link stage, bounded by `max_linking` and
//! [`LINK_TIMEOUT_MS`]); other connections are served meanwhile. Each key serves one link.
//!
//! Budgets ([`crate::budget`]): a connection past `max_connections` or `max_linking` is closed
//! at once; a main link past `max_sessions` and a channel link past `max_channels_per_session`
//! get a link error. Each refusal logs the budget's name.
//!
//! Sound: the playback and record devices ([`Server::set_playback_device`],
//! [`Server::set_record_device`]) run on the timer like the display device; their calls go to
//! the one playback and the one record client (a newer link replaces the older, as
//! `set_peer_common` does), and the multimedia time ([`crate::channel::main::MmTime`]) passes
//! between main and playback as in `reds.cpp`. See [`crate::channel::playback`] and
//! [`crate::channel::record`].
//!
//! Panics: a panic in one connection's work (its link stage, its channel, the devices it
//! calls) closes that connection with an error log line; a panic in the devices' own
//! servicing (display, keyboard LEDs) drops that device state and closes the channels that
//! showed it. No public method unwinds: each is a panic boundary (the library is meant to be
//! embedded in a VMM, which a panic must never reach).
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
use crate::channel::playback::PlaybackChannel;
use crate::channel::record::RecordChannel;
use crate::link::{LinkEvent, Linked, ServerLink, TicketKey, Ticketing};
use crate::vdi::{
    Keyboard, Mouse, PlaybackCall, PlaybackDevice, RecordCall, RecordDevice, Tablet,
    AUDIO_FRAME_SAMPLES,
};

pub use crate::channel::playback::AudioStats;

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
    /// The playback channel silently skips one data buffer (the 10th it sends to a client).
    DropPlaybackFrame,
}

impl Breakage {
    pub const ALL: [Breakage; 8] = [
        Breakage::DropKey,
        Breakage::ReorderInputs,
        Breakage::WrongCaps,
        Breakage::WrongMouseMode,
        Breakage::NoMark,
        Breakage::NoCursorInit,
        Breakage::DropRelease,
        Breakage::DropPlaybackFrame,
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
            Breakage::DropPlaybackFrame => "drop-playback-frame",
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
    /// Seeds the RNG for link keys, session ids and ping ids. `None` (the default): seeded
    /// from the OS, so no two servers share keys or session ids. `Some(seed)`: deterministic,
    /// for the simulator, replays and tests only (whoever knows the seed can recompute every
    /// link key and so decrypt the tickets).
    pub seed: Option<u64>,
    /// Make a fresh RSA key for every link, as the reference does (true), or one per server
    /// (false: much cheaper under simulation, but a ticket sniffed on one link then opens another).
    pub fresh_key_per_link: bool,
    /// Compress playback for clients that can decode it (`spice_server_set_playback_compression`,
    /// QEMU's `playback-compression=`): Opus when the client has the `OPUS` capability and the
    /// device's rate allows, raw otherwise. Off: always raw. Default on, as the reference.
    pub playback_compression: bool,
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
            seed: None,
            fresh_key_per_link: true,
            playback_compression: true,
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
    /// The sound card's output and input, and the multimedia time kept with them.
    pub(crate) playback: crate::channel::playback::PlaybackState,
    pub(crate) record: crate::channel::record::RecordState,
    pub(crate) mm_time: crate::channel::main::MmTime,
    pub(crate) audio_stats: AudioStats,
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
    Playback(Box<PlaybackChannel>),
    Record(Box<RecordChannel>),
    /// The server is done with it: write what is left, then close.
    Closing,
}

/// A connection still in the link stage after this long is closed (a client that stalls or
/// vanishes mid-handshake must not hold a connection forever).
pub const LINK_TIMEOUT_MS: u64 = 30_000;

/// Fresh keys kept ready beyond the links waiting for one: enough for a client's usual burst
/// of channel links (main, display, inputs, cursor, audio, USB) without waiting.
const KEY_POOL_SPARE: usize = 8;
/// Key requests handed out and not yet answered, at most (the embedder's workers compete with
/// its event loop for CPU).
const MAX_KEY_REQUESTS: usize = 2;

/// A link waiting for its key.
struct KeyWaiter {
    conn: ConnId,
    caps: Caps,
    /// It links a channel of a session that exists.
    known_session: bool,
}

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
    /// The OS had no randomness for the seed: every link is refused (never a guessable key).
    rng_failed: bool,
    key: Option<TicketKey>,
    /// Fresh link keys ready for use (`fresh_key_per_link`), each used once.
    keys: VecDeque<TicketKey>,
    /// Key requests handed out by `poll_key_request` and not yet answered.
    keys_requested: usize,
    /// Links waiting for a key, with the capabilities to offer: the channels of existing
    /// sessions first (a storm of new links cannot name one: session ids are random), then in
    /// arrival order.
    key_waiters: VecDeque<KeyWaiter>,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: u64,
    sessions: BTreeMap<u32, Session>,
    now_ms: u64,
}

impl Server {
    pub fn new(cfg: Config) -> Server {
        let (rng, rng_failed) = match cfg.seed {
            Some(seed) => (ChaCha20Rng::seed_from_u64(seed), false),
            // rand_core's OsRng is getrandom (the OS's CSPRNG); ChaCha20 expands its seed.
            None => match ChaCha20Rng::from_rng(rand_chacha::rand_core::OsRng) {
                Ok(r) => (r, false),
                Err(e) => {
                    tracing::error!("no randomness from the OS ({e}): every link will be refused");
                    (ChaCha20Rng::from_seed([0; 32]), true)
                }
            },
        };
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
                playback: Default::default(),
                record: Default::default(),
                mm_time: Default::default(),
                audio_stats: AudioStats::default(),
            },
            rng,
            rng_failed,
            key: None,
            keys: VecDeque::new(),
            keys_requested: 0,
            key_waiters: VecDeque::new(),
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
    /// `expires_at_ms` is on the server's clock (the `now_ms` passed to every call); to give a
    /// lifetime instead, as `spice_server_set_ticket` does, use
    /// [`set_ticket`](Self::set_ticket).
    pub fn set_ticketing(&mut self, t: Ticketing) {
        self.shared.cfg.ticketing = t;
    }

    /// `spice_server_set_ticket`: set the password, valid for `lifetime_ms` from the server's
    /// current time (`None`: no expiry). The expiry is computed on the server's own clock, so
    /// it holds whatever epoch the embedder's `now_ms` counts from.
    pub fn set_ticket(&mut self, password: &str, lifetime_ms: Option<u64>) {
        let now = self.now_ms;
        self.shared.cfg.ticketing = Ticketing::Password {
            password: password.to_owned(),
            expires_at_ms: lifetime_ms.map(|l| now.saturating_add(l)),
        };
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

    /// Attach the sound card's output (`spice_server_add_interface` with a
    /// `SpicePlaybackInstance`, its rate from `spice_server_set_playback_rate`): the main
    /// channel's list offers playback (id 0), and the device runs on the server's timer
    /// ([`handle_timeout`](Self::handle_timeout), woken at its `next_wakeup`). Attach it
    /// before clients link: a linked client keeps the mode and rate it linked with.
    pub fn set_playback_device(&mut self, d: Box<dyn PlaybackDevice>) {
        self.boundary("set_playback_device", None, (), |s| {
            // A device replaced while playing stops first (its client is told).
            let now = s.now_ms;
            s.playback_call(PlaybackCall::Stop, now);
            s.shared.playback.rate = d.rate();
            s.shared.playback.device = Some(d);
        })
    }

    /// Attach the sound card's input (`SpiceRecordInstance`): the channel list offers record
    /// (id 0); decoded client audio goes to [`RecordDevice::samples`].
    pub fn set_record_device(&mut self, d: Box<dyn RecordDevice>) {
        self.boundary("set_record_device", None, (), |s| {
            s.record_call(RecordCall::Stop);
            s.shared.record.rate = d.rate();
            s.shared.record.device = Some(d);
        })
    }

    /// Audio counters (sent, dropped for slow clients, record frames delivered).
    pub fn audio_stats(&self) -> AudioStats {
        self.shared.audio_stats
    }

    /// Frames waiting in playback queues (all clients; at most one client plays at a time).
    pub fn playback_queued_frames(&self) -> usize {
        self.conns
            .values()
            .map(|c| match &c.state {
                State::Playback(ch) => ch.queued_frames(),
                _ => 0,
            })
            .sum()
    }

    /// `reds_set_client_mm_time_latency`: the latency (ms) media needs on the client (the
    /// reference's video streams report it). While no playback runs, a larger latency moves
    /// the client's multimedia time back (`multi_media_time`); during playback it is sent
    /// to the playback client as `latency` (if it has the `LATENCY` capability). Nothing in
    /// this server reports one yet (no video streams); the embedder may.
    pub fn set_mm_time_latency(&mut self, latency_ms: u32) {
        self.boundary("set_mm_time_latency", None, (), |s| {
            let now = s.now_ms;
            if s.shared.mm_time.enabled {
                if latency_ms > s.shared.mm_time.latency {
                    s.shared.mm_time.latency = latency_ms;
                    s.shared.mm_time.announce(now);
                }
            } else if let Some(conn) = s.shared.playback.client {
                s.with_playback(conn, |ch, _| ch.set_latency(latency_ms));
            }
            s.pump(now);
        })
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
                State::Playback(ch) => ch.core().queued_bytes(),
                State::Record(ch) => ch.core().queued_bytes(),
                State::Linking(_) | State::Closing => 0,
            }
    }

    /// A client connected: a new connection in the link stage. Past the `max_connections` or
    /// `max_linking` budget it is closed at once ([`is_finished`](Self::is_finished) is true).
    pub fn connect(&mut self, now_ms: u64) -> ConnId {
        self.now_ms = self.now_ms.max(now_ms);
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.boundary("connect", Some(id), (), |s| s.connect_inner(id, now_ms));
        id
    }

    fn connect_inner(&mut self, id: ConnId, now_ms: u64) {
        let b = &self.shared.cfg.budgets;
        let linking = self
            .conns
            .values()
            .filter(|c| matches!(c.state, State::Linking(_)))
            .count();
        let over = if self.conns.len() >= b.max_connections {
            Some(("max_connections", b.max_connections))
        } else if linking >= b.max_linking {
            Some(("max_linking", b.max_linking))
        } else {
            None
        };
        let state = match over {
            Some((budget, limit)) => {
                tracing::warn!(%id, "connection refused: budget {budget} ({limit}) reached");
                State::Closing
            }
            None => State::Linking(Box::new(ServerLink::new(self.shared.cfg.ticketing.clone()))),
        };
        self.conns.insert(
            id,
            Conn {
                since_ms: now_ms,
                state,
                session: None,
                out: VecDeque::new(),
            },
        );
        tracing::debug!(%id, "connection");
    }

    /// The client sent `data` on `conn`.
    pub fn handle_bytes(&mut self, conn: ConnId, data: &[u8], now_ms: u64) {
        self.boundary("handle_bytes", Some(conn), (), |s| {
            s.handle_bytes_inner(conn, data, now_ms)
        })
    }

    fn handle_bytes_inner(&mut self, conn: ConnId, data: &[u8], now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let now_ms = self.now_ms;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match &mut c.state {
            State::Linking(_) => {
                let r = catch(|| {
                    if let Some(State::Linking(link)) =
                        self.conns.get_mut(&conn).map(|c| &mut c.state)
                    {
                        link.handle_bytes(data, now_ms);
                    }
                    self.drive_link(conn);
                });
                if let Err(msg) = r {
                    self.conn_panicked(conn, "link", &msg);
                }
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
        self.boundary("handle_closed", Some(conn), (), |s| {
            s.now_ms = s.now_ms.max(now_ms);
            s.remove_conn(conn);
            s.pump(s.now_ms);
        });
        // Whatever happened above, the connection is forgotten.
        self.conns.remove(&conn);
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        match catch(|| self.poll_timeout_inner()) {
            Ok(t) => t,
            Err(msg) => {
                tracing::error!("panic in Server::poll_timeout: {msg}");
                Some(self.now_ms + 100)
            }
        }
    }

    fn poll_timeout_inner(&self) -> Option<u64> {
        let mut t = self.shared.display.poll_timeout();
        if let Some(k) = self.shared.kbd.poll_timeout() {
            t = Some(t.map_or(k, |t| t.min(k)));
        }
        let audio = [
            self.shared
                .playback
                .device
                .as_ref()
                .and_then(|d| d.next_wakeup()),
            self.shared
                .record
                .device
                .as_ref()
                .and_then(|d| d.next_wakeup()),
        ];
        for k in audio.into_iter().flatten() {
            t = Some(t.map_or(k, |t| t.min(k)));
        }
        for c in self.conns.values() {
            let ct = match &c.state {
                State::Main(ch) => ch.poll_timeout(),
                State::Inputs(ch) => ch.core().poll_timeout(),
                State::Display(ch) => ch.poll_timeout(),
                State::Cursor(ch) => ch.core().poll_timeout(),
                State::Playback(ch) => ch.core().poll_timeout(),
                State::Record(ch) => ch.core().poll_timeout(),
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
        self.boundary("handle_timeout", None, (), |s| {
            s.handle_timeout_inner(now_ms)
        })
    }

    fn handle_timeout_inner(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let now_ms = self.now_ms;
        if let Err(msg) = catch(|| self.shared.kbd.handle_timeout(now_ms)) {
            tracing::error!("panic in the keyboard state: {msg}; its state is reset");
            self.shared.kbd = Default::default();
        }
        if let Err(msg) = catch(|| self.shared.display.handle_timeout(now_ms)) {
            self.display_panicked(&msg);
        }
        self.run_audio(now_ms);
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
        self.boundary("poll_transmit", Some(conn), None, |s| {
            match catch(|| s.poll_transmit_inner(conn)) {
                Ok(b) => b,
                Err(msg) => {
                    let kind = s.kind(conn);
                    s.conn_panicked(conn, kind, &msg);
                    None
                }
            }
        })
    }

    /// A key for links, as [`poll_key_request`](Self::poll_key_request) asked: `Err` when it
    /// could not be made (logged; the oldest waiting link is refused).
    pub fn add_link_key(&mut self, key: Result<TicketKey, crate::link::KeyError>) {
        self.boundary("add_link_key", None, (), |s| {
            s.keys_requested = s.keys_requested.saturating_sub(1);
            match key {
                Ok(k) if s.shared.cfg.fresh_key_per_link => s.keys.push_back(k),
                Ok(k) => {
                    if s.key.is_none() {
                        s.key = Some(k);
                    }
                }
                Err(e) => {
                    tracing::error!("{e}");
                    if let Some(w) = s.key_waiters.pop_front() {
                        s.refuse_link(w.conn, LinkError::Error, &e.to_string());
                    }
                }
            }
            s.serve_key_waiters();
            s.pump(s.now_ms);
        })
    }

    /// A link key the server wants made, if any: run [`crate::link::KeyRequest::generate`]
    /// off the event loop and give the result to [`add_link_key`](Self::add_link_key). Call it
    /// after every other call until it returns `None`. At most two requests are outstanding;
    /// the server keeps a few keys ready beyond the links waiting for one (never more than
    /// `max_linking` of them).
    pub fn poll_key_request(&mut self) -> Option<crate::link::KeyRequest> {
        self.boundary("poll_key_request", None, None, |s| {
            if s.rng_failed || s.keys_requested >= MAX_KEY_REQUESTS {
                return None;
            }
            let wanted = if s.shared.cfg.fresh_key_per_link {
                (s.key_waiters.len() + KEY_POOL_SPARE)
                    .min(s.shared.cfg.budgets.max_linking + KEY_POOL_SPARE)
            } else {
                usize::from(s.key.is_none())
            };
            let have = if s.shared.cfg.fresh_key_per_link {
                s.keys.len()
            } else {
                0
            };
            if have + s.keys_requested >= wanted {
                return None;
            }
            s.keys_requested += 1;
            let mut seed = [0u8; 32];
            s.rng.fill_bytes(&mut seed);
            Some(crate::link::KeyRequest::new(seed))
        })
    }

    fn poll_transmit_inner(&mut self, conn: ConnId) -> Option<Vec<u8>> {
        let now_ms = self.now_ms;
        let c = self.conns.get_mut(&conn)?;
        if let Some(b) = c.out.pop_front() {
            return Some(b);
        }
        if let State::Linking(l) = &mut c.state {
            return l.poll_transmit();
        }
        self.with_channel(conn, |ch, shared| {
            if let Some(b) = ch.core_mut().poll_transmit() {
                return Ok(Some(b));
            }
            // Room again: let the channel produce what waited for it (display frames, a
            // cursor shape, motion acks, the channel list, a mouse mode change).
            ch.pump(shared, now_ms);
            Ok(ch.core_mut().poll_transmit())
        })
        .and_then(Result::ok)
        .flatten()
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
                    let max_sessions = self.shared.cfg.budgets.max_sessions;
                    if mess.channel_type == ChannelType::Main && self.sessions.len() >= max_sessions
                    {
                        // Checked again when it authenticates; refusing here saves the key.
                        tracing::warn!(%conn, "link refused: budget max_sessions ({max_sessions}) reached");
                        if let Some(State::Linking(link)) =
                            self.conns.get_mut(&conn).map(|c| &mut c.state)
                        {
                            link.refuse(LinkError::Error, "max_sessions");
                        }
                        continue;
                    }
                    if self.rng_failed {
                        tracing::error!(%conn, "link refused: no randomness for a link key");
                        if let Some(State::Linking(link)) =
                            self.conns.get_mut(&conn).map(|c| &mut c.state)
                        {
                            link.refuse(LinkError::Error, "no randomness");
                        }
                        continue;
                    }
                    // Wait for a key (served now if one is ready).
                    let known_session = mess.channel_type != ChannelType::Main
                        && self.sessions.contains_key(&mess.connection_id);
                    let at = if known_session {
                        self.key_waiters
                            .iter()
                            .position(|w| !w.known_session)
                            .unwrap_or(self.key_waiters.len())
                    } else {
                        self.key_waiters.len()
                    };
                    self.key_waiters.insert(
                        at,
                        KeyWaiter {
                            conn,
                            caps,
                            known_session,
                        },
                    );
                    self.serve_key_waiters();
                    return;
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

    /// A key for the next link, if one is ready: a fresh one from the pool, or the server's
    /// one key (without `fresh_key_per_link`).
    fn take_link_key(&mut self) -> Option<TicketKey> {
        if self.shared.cfg.fresh_key_per_link {
            self.keys.pop_front()
        } else {
            self.key.clone()
        }
    }

    /// Give ready keys to the links waiting for one, oldest first, and run their link stage on.
    fn serve_key_waiters(&mut self) {
        while let Some(conn) = self.key_waiters.front().map(|w| w.conn) {
            let waiting = matches!(
                self.conns.get(&conn).map(|c| &c.state),
                Some(State::Linking(l)) if !l.is_done()
            );
            if !waiting {
                self.key_waiters.pop_front();
                continue;
            }
            let Some(key) = self.take_link_key() else {
                return;
            };
            let Some(KeyWaiter { caps, .. }) = self.key_waiters.pop_front() else {
                return;
            };
            let now = self.now_ms;
            let r = catch(|| {
                if let Some(State::Linking(link)) = self.conns.get_mut(&conn).map(|c| &mut c.state)
                {
                    link.accept(caps, key, now);
                }
                self.drive_link(conn);
            });
            if let Err(msg) = r {
                self.conn_panicked(conn, "link", &msg);
            }
        }
    }

    /// Refuse a link waiting for its key (`Request` answered with an error reply).
    fn refuse_link(&mut self, conn: ConnId, error: LinkError, reason: &str) {
        if let Some(State::Linking(link)) = self.conns.get_mut(&conn).map(|c| &mut c.state) {
            link.refuse(error, reason.to_string());
        }
        self.drive_link(conn);
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
            (ChannelType::Playback, 0) if self.shared.playback.device.is_some() => {
                for cap in crate::channel::playback::server_caps(self.shared.playback.rate) {
                    c.set_channel(cap);
                }
            }
            (ChannelType::Record, 0) if self.shared.record.device.is_some() => {
                for cap in crate::channel::record::server_caps(self.shared.record.rate) {
                    c.set_channel(cap);
                }
            }
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
        if self.shared.playback.device.is_some() {
            v.push(ChannelId {
                channel_type: ChannelType::Playback,
                id: 0,
            });
        }
        if self.shared.record.device.is_some() {
            v.push(ChannelId {
                channel_type: ChannelType::Record,
                id: 0,
            });
        }
        v
    }

    /// The link stage authenticated `conn`: tie it to a session and start its channel.
    fn linked(&mut self, conn: ConnId, linked: Linked) {
        let now = self.now_ms;
        let ty = linked.mess.channel_type;
        let b = &self.shared.cfg.budgets;
        let (max_sessions, max_channels) = (b.max_sessions, b.max_channels_per_session);
        let session_id = if ty == ChannelType::Main {
            // A new client. (A non-zero id on main is a migration target; not supported, so a
            // new session as well.)
            if self.sessions.len() >= max_sessions {
                tracing::warn!(%conn, "link refused: budget max_sessions ({max_sessions}) reached");
                self.finish_link(conn, LinkError::Error);
                return;
            }
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
                Some(s) if s.channels.len() >= max_channels => {
                    tracing::warn!(%conn, session = id,
                        "link refused: budget max_channels_per_session ({max_channels}) reached");
                    self.finish_link(conn, LinkError::Error);
                    return;
                }
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
            ChannelType::Playback if self.shared.playback.device.is_some() => {
                // One playback client, as the reference (`set_peer_common`): a newer link
                // replaces the one before, whichever client it belongs to.
                if let Some(old) = self.shared.playback.client.take() {
                    tracing::info!(conn = %old, new = %conn,
                        "playback: a newer playback link replaces this one; closing it");
                    self.close_conn(old);
                }
                let core = ChannelCore::new(header, false, ping_seed, now);
                let ch = PlaybackChannel::new(core, &linked, &mut self.shared, now);
                if ch.is_active() {
                    // playback_channel_client_start: playback drives the client's clock.
                    self.shared.mm_time.disable();
                }
                self.shared.playback.client = Some(conn);
                State::Playback(Box::new(ch))
            }
            ChannelType::Record if self.shared.record.device.is_some() => {
                if let Some(old) = self.shared.record.client.take() {
                    tracing::info!(conn = %old, new = %conn,
                        "record: a newer record link replaces this one; closing it");
                    self.close_conn(old);
                }
                let core = ChannelCore::new(header, false, ping_seed, now);
                self.shared.record.client = Some(conn);
                State::Record(Box::new(RecordChannel::new(core, &linked, &self.shared)))
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
        let kind = self.kind(conn);
        tracing::warn!(%conn, channel = kind, "closing channel: {e}");
        self.close_conn(conn);
    }

    /// What `conn` is, for log lines.
    fn kind(&self, conn: ConnId) -> &'static str {
        self.conns.get(&conn).map_or("?", |c| match &c.state {
            State::Main(_) => "main",
            State::Inputs(_) => "inputs",
            State::Display(_) => "display",
            State::Cursor(_) => "cursor",
            State::Playback(_) => "playback",
            State::Record(_) => "record",
            State::Linking(_) => "link",
            State::Closing => "closing",
        })
    }

    /// Work for `conn` panicked: close it without writing more (its state may be half
    /// updated). Closing must not panic again: a second panic leaves it closed regardless.
    fn conn_panicked(&mut self, conn: ConnId, kind: &str, msg: &str) {
        tracing::error!(%conn, channel = kind, "closing connection: panic in its handling: {msg}");
        if catch(|| self.drop_conn_output(conn)).is_err() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.state = State::Closing;
                c.out.clear();
            }
        }
    }

    /// The display device's servicing panicked: the device is dropped (its state cannot be
    /// trusted) and the display and cursor channels that showed it are closed; inputs, main
    /// and everything else keep running.
    fn display_panicked(&mut self, msg: &str) {
        tracing::error!("panic in the display device's servicing: {msg}; the display device is removed and its channels closed");
        self.shared.display = crate::display::Display::new(
            self.shared.cfg.image_compression,
            self.shared.cfg.breakage == Some(Breakage::DropRelease),
            self.shared.cfg.budgets.clone(),
        );
        let shown: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Display(_) | State::Cursor(_)))
            .map(|(&id, _)| id)
            .collect();
        for id in shown {
            self.conn_panicked(id, "display device", msg);
        }
    }

    /// The panic boundary of a public method: run `f`; if it panics, log it, close `conn` (the
    /// connection the call was about, if any) and return `fallback`.
    fn boundary<R>(
        &mut self,
        what: &str,
        conn: Option<ConnId>,
        fallback: R,
        f: impl FnOnce(&mut Self) -> R,
    ) -> R {
        match catch(|| f(self)) {
            Ok(r) => r,
            Err(msg) => {
                tracing::error!("panic in Server::{what}: {msg}");
                if let Some(conn) = conn {
                    let kind = self.kind(conn);
                    self.conn_panicked(conn, kind, &msg);
                }
                fallback
            }
        }
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
        if let State::Playback(ch) = &c.state {
            if self.shared.playback.client == Some(conn) {
                self.shared.playback.client = None;
                if ch.is_active() {
                    // ~PlaybackChannelClient: the main channel takes the clock back.
                    self.shared.mm_time.enable(self.now_ms);
                }
            }
        }
        if matches!(c.state, State::Record(_)) && self.shared.record.client == Some(conn) {
            self.shared.record.client = None;
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
        self.key_waiters.retain(|w| w.conn != conn);
        if let Err(msg) = catch(|| self.close_conn(conn)) {
            tracing::error!(%conn, "panic while closing the connection: {msg}");
        }
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
        let kind = self.kind(conn);
        let c = self.conns.get_mut(&conn)?;
        let ch: &mut dyn ChannelImpl = match &mut c.state {
            State::Main(ch) => ch,
            State::Inputs(ch) => ch,
            State::Display(ch) => ch.as_mut(),
            State::Cursor(ch) => ch,
            State::Playback(ch) => ch.as_mut(),
            State::Record(ch) => ch.as_mut(),
            State::Linking(_) | State::Closing => return None,
        };
        let shared = &mut self.shared;
        match catch(|| f(ch, shared)) {
            Ok(r) => Some(r),
            Err(msg) => {
                self.conn_panicked(conn, kind, &msg);
                None
            }
        }
    }
}

impl Server {
    /// Run the sound card up to `now_ms` and act on its calls, as the reference's
    /// `spice_server_playback_*`/`spice_server_record_*` entry points do. A device that
    /// panics is removed (its channels closed); the rest goes on.
    fn run_audio(&mut self, now_ms: u64) {
        if let Some(dev) = self.shared.playback.device.as_mut() {
            match catch(|| dev.run(now_ms)) {
                Ok(calls) => {
                    for call in calls {
                        self.playback_call(call, now_ms);
                    }
                }
                Err(msg) => self.audio_panicked(true, &msg),
            }
        }
        if let Some(dev) = self.shared.record.device.as_mut() {
            match catch(|| dev.run(now_ms)) {
                Ok(calls) => {
                    for call in calls {
                        self.record_call(call);
                    }
                }
                Err(msg) => self.audio_panicked(false, &msg),
            }
        }
    }

    fn playback_call(&mut self, call: PlaybackCall, now_ms: u64) {
        let client = self.shared.playback.client;
        match call {
            PlaybackCall::Start => {
                if self.shared.playback.active {
                    return;
                }
                self.shared.playback.active = true;
                if let Some(conn) = client {
                    self.shared.mm_time.disable();
                    self.with_playback(conn, |ch, _| ch.device_start(now_ms));
                }
            }
            PlaybackCall::Stop => {
                if !self.shared.playback.active {
                    return;
                }
                self.shared.playback.active = false;
                if let Some(conn) = client {
                    self.shared.mm_time.enable(now_ms);
                    self.with_playback(conn, |ch, _| ch.device_stop());
                }
            }
            PlaybackCall::Samples(frames) => match client {
                Some(conn) if self.shared.playback.active => {
                    for buf in frames.chunks(AUDIO_FRAME_SAMPLES) {
                        self.with_playback(conn, |ch, shared| {
                            ch.device_samples(buf, shared, now_ms)
                        });
                    }
                }
                _ => {
                    self.shared.audio_stats.playback_frames_unheard += frames.len() as u64;
                }
            },
            PlaybackCall::Volume(v) => {
                self.shared.playback.volume = v.clone();
                if let Some(conn) = client {
                    self.with_playback(conn, |ch, _| ch.volume_changed(&v));
                }
            }
            PlaybackCall::Mute(m) => {
                self.shared.playback.mute = m;
                if let Some(conn) = client {
                    self.with_playback(conn, |ch, _| ch.mute_changed());
                }
            }
        }
    }

    fn record_call(&mut self, call: RecordCall) {
        let client = self.shared.record.client;
        let with = |s: &mut Self, f: &dyn Fn(&mut RecordChannel)| {
            if let Some(conn) = client {
                if let Some(State::Record(ch)) = s.conns.get_mut(&conn).map(|c| &mut c.state) {
                    f(ch);
                }
            }
        };
        match call {
            RecordCall::Start => {
                self.shared.record.active = true;
                with(self, &|ch| ch.device_start());
            }
            RecordCall::Stop => {
                self.shared.record.active = false;
                with(self, &|ch| ch.device_stop());
            }
            RecordCall::Volume(v) => {
                self.shared.record.volume = v.clone();
                with(self, &|ch| ch.volume_changed(&v));
            }
            RecordCall::Mute(m) => {
                self.shared.record.mute = m;
                with(self, &|ch| ch.mute_changed());
            }
        }
    }

    /// Run `f` on `conn`'s playback channel (a panic closes that connection).
    fn with_playback(&mut self, conn: ConnId, f: impl FnOnce(&mut PlaybackChannel, &mut Shared)) {
        let Some(State::Playback(ch)) = self.conns.get_mut(&conn).map(|c| &mut c.state) else {
            return;
        };
        let shared = &mut self.shared;
        if let Err(msg) = catch(|| f(ch, shared)) {
            self.conn_panicked(conn, "playback", &msg);
        }
    }

    /// A sound device's `run` panicked: it is removed and its channels closed.
    fn audio_panicked(&mut self, playback: bool, msg: &str) {
        let what = if playback { "playback" } else { "record" };
        tracing::error!(
            "panic in the {what} device: {msg}; the device is removed and its channel closed"
        );
        let conn = if playback {
            self.shared.playback.device = None;
            self.shared.playback.active = false;
            self.shared.playback.client
        } else {
            self.shared.record.device = None;
            self.shared.record.active = false;
            self.shared.record.client
        };
        if let Some(conn) = conn {
            self.conn_panicked(conn, what, msg);
        }
    }
}

/// Run `f`, turning a panic into `Err(its message)`. Callers decide what a panic closes.
fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into())
    })
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
