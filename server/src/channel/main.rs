//! The main channel: session start (`init`, `name`, `uuid`), the channel list, mouse mode
//! requests, the bandwidth test, and (later) agent data.
//!
//! The multimedia time: `init` carries the server's mm time less [`MM_TIME_DELTA`];
//! `multi_media_time` follows [`MmTime`] (playback stopping re-announces it, as
//! `reds_enable_mm_time` does).
//!
//! What the reference sends, in order, on a new main channel (spice-gtk ↔ QEMU capture):
//! `init`, `name`, `uuid` (if the client has `NAME_AND_UUID`), a warm-up and a latency ping
//! (empty), then on the latency pong a 256000-byte ping to measure bandwidth; `channels_list`
//! answers `attach_channels`; the periodic ping pair follows from the channel core.
//!
//! Must not: reach devices other than through [`Shared`]; do IO.

use spice_proto::caps;
use spice_proto::messages::main::{
    ChannelId, ChannelsList, MainInit, MainMouseMode, MainName, MouseMode,
};
use spice_proto::messages::{MainClient, MainServer, Message};

use crate::channel::core::{ChannelCore, ChannelError};
use crate::link::Linked;
use crate::server::{ChannelImpl, Shared};

/// `NET_TEST_BYTES`: the payload of the bandwidth ping.
pub const NET_TEST_BYTES: usize = 256_000;
/// The agent token window the reference announces (`REDS_AGENT_WINDOW_SIZE`).
pub const AGENT_TOKENS: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetTest {
    /// Warm-up and latency pings are out.
    Warmup,
    Latency {
        sent_ms: u64,
    },
    /// The latency is known; the bandwidth ping goes out when the output queue has room.
    RateDue {
        latency_ms: u64,
    },
    Rate {
        sent_ms: u64,
        latency_ms: u64,
    },
    Done,
}

/// One client's main channel.
pub struct MainChannel {
    core: ChannelCore,
    session_id: u32,
    net_ping_id: u32,
    net: NetTest,
    /// Bits per second measured by the bandwidth test.
    bitrate: Option<u64>,
    channel_list: Vec<ChannelId>,
    list_wanted: bool,
    mouse_mode_seen: u64,
    mm_time_seen: u64,
    /// Agent data from the client, reassembled into `VDAgentMessage`s under spice-server's
    /// rules (bounded: a message larger than [`MAX_AGENT_MESSAGE`] is refused by its header).
    agent_in: spice_proto::agent::Reassembler,
}

/// `MM_TIME_DELTA`: how far behind the server's multimedia time the client's clock is set
/// (main `init`, and `multi_media_time` while the main channel owns the clock), so that
/// timestamped media has that long to arrive.
pub const MM_TIME_DELTA: u32 = 400;

/// The multimedia time (`reds_get_mm_time`, `reds_enable_mm_time`/`reds_disable_mm_time`):
/// the server's `now_ms` as a wrapping `u32` (never the wall clock). While no playback
/// client is playing, the main channel keeps the client's clock (`init`, then
/// `multi_media_time` whenever it is re-announced: playback stopped, or the latency grew);
/// while one plays, the playback timestamps drive the client's clock and main stays quiet.
#[derive(Debug, Clone)]
pub struct MmTime {
    /// The main channel owns the clock (no playback running).
    pub(crate) enabled: bool,
    /// `mm_time_latency`: what `multi_media_time` subtracts.
    pub(crate) latency: u32,
    /// Bumped at each announcement; main channels send `multi_media_time` when theirs differs.
    pub(crate) generation: u64,
    /// The value announced last.
    pub(crate) announced: u32,
}

impl Default for MmTime {
    fn default() -> Self {
        // reds_enable_mm_time at server start (nothing to announce to yet).
        MmTime {
            enabled: true,
            latency: MM_TIME_DELTA,
            generation: 0,
            announced: 0,
        }
    }
}

impl MmTime {
    /// The multimedia time at server time `now_ms`.
    pub(crate) fn at(now_ms: u64) -> u32 {
        now_ms as u32
    }

    /// `reds_enable_mm_time`: main owns the clock again; announce it.
    pub(crate) fn enable(&mut self, now_ms: u64) {
        self.enabled = true;
        self.latency = MM_TIME_DELTA;
        self.announce(now_ms);
    }

    /// `reds_disable_mm_time`: playback drives the client's clock.
    pub(crate) fn disable(&mut self) {
        self.enabled = false;
    }

    /// `reds_send_mm_time`.
    pub(crate) fn announce(&mut self, now_ms: u64) {
        self.generation += 1;
        self.announced = Self::at(now_ms).wrapping_sub(self.latency);
    }
}

/// The largest agent message the server reassembles: a client announcing more breaks the
/// agent protocol and is disconnected, as the reference does.
pub const MAX_AGENT_MESSAGE: u32 = 1 << 16;

impl MainChannel {
    pub(crate) fn new(
        mut core: ChannelCore,
        linked: &Linked,
        session_id: u32,
        channel_list: Vec<ChannelId>,
        shared: &Shared,
        now_ms: u64,
    ) -> Self {
        let display = u32::from(shared.display.has_device());
        core.send(&MainServer::Init(MainInit {
            session_id,
            display_channels_hint: display,
            supported_mouse_modes: u32::from(shared.supported_mouse_modes().bits()),
            current_mouse_mode: if shared.cfg.breakage
                == Some(crate::server::Breakage::WrongMouseMode)
            {
                u32::from(MouseMode::CLIENT.bits())
            } else {
                u32::from(shared.mouse_mode.bits())
            },
            agent_connected: 0,
            agent_tokens: AGENT_TOKENS,
            multi_media_time: MmTime::at(now_ms).wrapping_sub(MM_TIME_DELTA),
            ram_hint: 0,
        }));
        if linked.mess.caps.has_channel(caps::main::NAME_AND_UUID) {
            if let Some(name) = &shared.cfg.name {
                core.send(&MainServer::Name(MainName::new(name)));
            }
            if let Some(uuid) = shared.cfg.uuid {
                core.send(&MainServer::Uuid(uuid));
            }
        }
        let net_ping_id = core.private_ping_id();
        core.send_ping(net_ping_id, 0, now_ms);
        core.send_ping(net_ping_id, 0, now_ms);
        MainChannel {
            core,
            session_id,
            net_ping_id,
            net: NetTest::Warmup,
            bitrate: None,
            channel_list,
            list_wanted: false,
            mouse_mode_seen: shared.mouse_mode_generation,
            mm_time_seen: shared.mm_time.generation,
            agent_in: spice_proto::agent::Reassembler::strict(MAX_AGENT_MESSAGE),
        }
    }

    pub fn core(&self) -> &ChannelCore {
        &self.core
    }

    /// Reassemble agent messages. The server reads one itself, as the reference does: the
    /// client's `monitors_config` goes to a QXL device that takes it (the guest may then
    /// resize); the rest is for an agent, and none is attached, so it is dropped. Agent data
    /// that breaks the protocol (spice-server's `agent_msg_filter` rules) closes the channel.
    fn agent_data(&mut self, bytes: &[u8], shared: &mut Shared) -> Result<(), ChannelError> {
        use spice_proto::agent::{AgentBody, BodyOptions, Monitors};
        let msgs = self.agent_in.push(bytes).map_err(|e| {
            ChannelError::Protocol(format!("agent data: {e} (limit {MAX_AGENT_MESSAGE} bytes)"))
        })?;
        for m in msgs {
            if let Ok(AgentBody::MonitorsConfig(c)) = m.body(BodyOptions::default()) {
                // At most 16 heads are read, whatever count the client claims.
                let heads: Vec<crate::vdi::ClientMonitor> = match &c.monitors {
                    Monitors::Plain(v) => v.iter().take(16).cloned().collect::<Vec<_>>(),
                    Monitors::WithPhysicalSize(v) => {
                        v.iter().take(16).map(|m| m.config.clone()).collect()
                    }
                }
                .iter()
                .enumerate()
                .map(|(i, m)| crate::vdi::ClientMonitor {
                    id: i as u32,
                    x: m.x,
                    y: m.y,
                    width: m.width,
                    height: m.height,
                })
                .collect();
                shared.display.client_monitors_config(&heads);
            }
        }
        Ok(())
    }

    pub fn session_id(&self) -> u32 {
        self.session_id
    }

    /// The bandwidth the test measured, in bits per second.
    pub fn bitrate(&self) -> Option<u64> {
        self.bitrate
    }

    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        self.core.poll_timeout()
    }

    fn net_pongs(&mut self) {
        for (pong, at) in self.core.take_pongs() {
            if pong.id != self.net_ping_id {
                tracing::debug!(id = pong.id, "pong for an unknown ping");
                continue;
            }
            let sent_ms = pong.timestamp / 1_000_000;
            self.net = match self.net {
                NetTest::Warmup => NetTest::Latency { sent_ms },
                NetTest::Latency { .. } => NetTest::RateDue {
                    latency_ms: at.saturating_sub(sent_ms),
                },
                NetTest::Rate {
                    sent_ms,
                    latency_ms,
                } => {
                    let elapsed = at.saturating_sub(sent_ms).saturating_sub(latency_ms).max(1);
                    let bps = (NET_TEST_BYTES as u64 * 8 * 1000) / elapsed;
                    tracing::debug!(session = self.session_id, bps, latency_ms, "net test");
                    self.bitrate = Some(bps);
                    NetTest::Done
                }
                s @ (NetTest::RateDue { .. } | NetTest::Done) => s,
            };
        }
    }

    fn handle(&mut self, m: MainClient, shared: &mut Shared) -> Result<(), ChannelError> {
        match m {
            MainClient::AttachChannels => self.list_wanted = true,
            MainClient::MouseModeRequest(mode) => {
                let want = if mode == MouseMode::CLIENT {
                    if shared.supported_mouse_modes().contains(MouseMode::CLIENT) {
                        Some(MouseMode::CLIENT)
                    } else {
                        tracing::info!(
                            session = self.session_id,
                            "client mouse mode refused: no tablet"
                        );
                        None
                    }
                } else if mode == MouseMode::SERVER {
                    Some(MouseMode::SERVER)
                } else {
                    tracing::info!(?mode, "unsupported mouse mode request");
                    None
                };
                if let Some(want) = want {
                    if want != shared.mouse_mode {
                        shared.mouse_mode = want;
                        shared.mouse_mode_generation += 1;
                    }
                }
            }
            MainClient::ClientInfo(_) | MainClient::QualityIndicator(_) => {}
            MainClient::AgentData(d) => self.agent_data(&d.0, shared)?,
            MainClient::AgentStart(_) | MainClient::AgentToken(_) => {
                // No agent is attached: the reference drops agent traffic then too.
            }
            MainClient::MigrateConnected
            | MainClient::MigrateConnectError
            | MainClient::MigrateEnd
            | MainClient::MigrateDstDoSeamless(_)
            | MainClient::MigrateConnectedSeamless => {
                tracing::info!(
                    session = self.session_id,
                    msg = m.name(),
                    "migration is not supported; ignored"
                );
            }
            MainClient::Base(_) => {}
            MainClient::Unknown { msg_type, .. } => {
                return Err(ChannelError::Protocol(format!(
                    "unknown main message type {msg_type}"
                )))
            }
        }
        Ok(())
    }
}

impl ChannelImpl for MainChannel {
    fn core_mut(&mut self) -> &mut ChannelCore {
        &mut self.core
    }

    fn handle_bytes(
        &mut self,
        data: &[u8],
        shared: &mut Shared,
        now_ms: u64,
    ) -> Result<(), ChannelError> {
        let msgs = self.core.handle_bytes(data, now_ms)?;
        self.net_pongs();
        for raw in msgs {
            let m = MainClient::decode(raw.header.msg_type, &raw.body)?;
            self.handle(m, shared)?;
        }
        Ok(())
    }

    /// What waits for room in the output queue: the bandwidth ping, the channel list and a
    /// mouse mode change (each sent once, however often it was asked for meanwhile).
    fn pump(&mut self, shared: &mut Shared, now_ms: u64) {
        if let NetTest::RateDue { latency_ms } = self.net {
            if !self.core.can_send() {
                return;
            }
            self.core
                .send_ping(self.net_ping_id, NET_TEST_BYTES, now_ms);
            self.net = NetTest::Rate {
                sent_ms: now_ms,
                latency_ms,
            };
        }
        if self.list_wanted && self.core.can_send() {
            self.list_wanted = false;
            self.core.send(&MainServer::ChannelsList(ChannelsList {
                channels: self.channel_list.clone(),
            }));
        }
        if self.mouse_mode_seen != shared.mouse_mode_generation && self.core.can_send() {
            self.mouse_mode_seen = shared.mouse_mode_generation;
            self.core.send(&MainServer::MouseMode(MainMouseMode {
                supported_modes: shared.supported_mouse_modes(),
                current_mode: shared.mouse_mode,
            }));
        }
        if self.mm_time_seen != shared.mm_time.generation && self.core.can_send() {
            self.mm_time_seen = shared.mm_time.generation;
            self.core
                .send(&MainServer::MultiMediaTime(shared.mm_time.announced));
        }
    }
}
