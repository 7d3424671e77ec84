//! The vdagent protocol (`spice/vd_agent.h`): the messages the client and the guest agent
//! exchange through the main channel's `agent_data` and the guest's virtio-serial port.
//!
//! # Where the envelopes are on the wire
//!
//! - **Client ↔ server** (main channel `agent_data` bodies): a stream of [`VdAgentMessage`]s
//!   (20-byte header + `size` bytes), cut into pieces of at most [`VD_AGENT_MAX_DATA_SIZE`]
//!   (2048) bytes, one piece per `agent_data` message and one token per piece. Only a
//!   message's first piece carries its header; there is no [`VdiChunkHeader`] here.
//!   spice-gtk cuts every message this way ([`VdAgentMessage::to_agent_data`]), so a
//!   message never shares an `agent_data` with another, and spice-server insists on it: its
//!   `agent_msg_filter` refuses a piece over 2048 bytes, a first piece shorter than the
//!   header, a protocol other than [`VD_AGENT_PROTOCOL`] and a piece running past its
//!   message ([`Reassembler::strict`]). spice-gtk itself reads `agent_data` as a plain
//!   byte stream ([`Reassembler::new`]).
//! - **Server ↔ guest** (the agent's char device): a stream of [`VdiChunkHeader`]
//!   (`port`, `size`) + `size` bytes. spice-server wraps each client `agent_data` piece in
//!   one chunk with port [`VdiPort::Client`], and its own messages (mouse state, graphics
//!   device info) in one chunk each with port [`VdiPort::Server`] holding a whole message.
//!   Going the other way it cuts each client-port chunk's data into `agent_data` pieces of
//!   at most 2048 bytes ([`ChunkReader`]) and drops server-port chunks.
//!
//! This module owns these envelopes, the message type numbers, typed bodies of the common
//! messages ([`AgentBody`]) and the sans-IO reassembly. It does no IO, keeps no agent state
//! (capabilities, clipboard) and never allocates by a size it has not bounded.

use crate::error::{DecodeError, Result};
use crate::wire::{Bytes, Decode, Encode, Reader, Writer};
use crate::{wire_enum, wire_flags, wire_struct};

/// `VD_AGENT_PROTOCOL`: the only `protocol` value of [`VdAgentMessage`].
pub const VD_AGENT_PROTOCOL: u32 = 1;
/// `VD_AGENT_MAX_DATA_SIZE`: the largest `agent_data` piece (and char-device read buffer).
pub const VD_AGENT_MAX_DATA_SIZE: usize = 2048;
/// The size of a [`VdAgentMessage`] header.
pub const MESSAGE_HEADER_SIZE: usize = 20;
/// The size of a [`VdiChunkHeader`].
pub const CHUNK_HEADER_SIZE: usize = 8;

wire_enum! {
    /// `VDP_*_PORT`: who a chunk on the guest's char device is for.
    pub enum VdiPort: u32 {
        Client = 1 => "client",
        Server = 2 => "server",
    }
}

wire_struct! {
    /// `VDIChunkHeader`: frames the guest char-device stream (server ↔ guest only).
    pub struct VdiChunkHeader {
        pub port: VdiPort,
        pub size: u32,
    }
}

wire_enum! {
    /// `VD_AGENT_*` message types.
    pub enum AgentMessageType: u32 {
        MouseState = 1 => "mouse_state",
        MonitorsConfig = 2 => "monitors_config",
        Reply = 3 => "reply",
        Clipboard = 4 => "clipboard",
        DisplayConfig = 5 => "display_config",
        AnnounceCapabilities = 6 => "announce_capabilities",
        ClipboardGrab = 7 => "clipboard_grab",
        ClipboardRequest = 8 => "clipboard_request",
        ClipboardRelease = 9 => "clipboard_release",
        FileXferStart = 10 => "file_xfer_start",
        FileXferStatus = 11 => "file_xfer_status",
        FileXferData = 12 => "file_xfer_data",
        ClientDisconnected = 13 => "client_disconnected",
        MaxClipboard = 14 => "max_clipboard",
        AudioVolumeSync = 15 => "audio_volume_sync",
        GraphicsDeviceInfo = 16 => "graphics_device_info",
    }
}

wire_struct! {
    /// The 20-byte `VDAgentMessage` header alone.
    pub struct VdAgentMessageHeader {
        pub protocol: u32,
        pub msg_type: AgentMessageType,
        pub opaque: u64,
        pub size: u32,
    }
}

/// `VDAgentMessage`: header and data; `size` is derived from `data`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct VdAgentMessage {
    /// [`VD_AGENT_PROTOCOL`] in every valid message.
    pub protocol: u32,
    pub msg_type: AgentMessageType,
    /// Unused by current peers (0).
    pub opaque: u64,
    pub data: Bytes,
}

impl Encode for VdAgentMessage {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u32(self.protocol);
        w.u32(self.msg_type.to_raw());
        w.u64(self.opaque);
        w.u32(self.data.len() as u32);
        w.bytes(&self.data);
    }
}
impl Decode for VdAgentMessage {
    const MIN_SIZE: usize = MESSAGE_HEADER_SIZE;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let h = VdAgentMessageHeader::decode(r)?;
        Ok(VdAgentMessage {
            protocol: h.protocol,
            msg_type: h.msg_type,
            opaque: h.opaque,
            data: r.bytes(h.size as u64, "VDAgentMessage data")?.into(),
        })
    }
}

impl VdAgentMessage {
    /// A message with [`VD_AGENT_PROTOCOL`] and opaque 0 (as spice-gtk and the agents send).
    pub fn new(msg_type: AgentMessageType, data: Vec<u8>) -> Self {
        VdAgentMessage {
            protocol: VD_AGENT_PROTOCOL,
            msg_type,
            opaque: 0,
            data: Bytes(data),
        }
    }

    /// The message carrying `body`.
    pub fn from_body(body: &AgentBody) -> Self {
        Self::new(body.msg_type(), body.to_bytes())
    }

    /// Header and data as one byte vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::wire::encode_to_vec(self)
    }

    /// The header.
    pub fn header(&self) -> VdAgentMessageHeader {
        VdAgentMessageHeader {
            protocol: self.protocol,
            msg_type: self.msg_type,
            opaque: self.opaque,
            size: self.data.len() as u32,
        }
    }

    /// The `agent_data` bodies that carry this message, cut as spice-gtk cuts them: the
    /// header and data in pieces of [`VD_AGENT_MAX_DATA_SIZE`] bytes, the last one shorter.
    pub fn to_agent_data(&self) -> Vec<Vec<u8>> {
        self.to_bytes()
            .chunks(VD_AGENT_MAX_DATA_SIZE)
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// Decode the data as the body of its type.
    pub fn body(&self, opts: BodyOptions) -> Result<AgentBody> {
        AgentBody::decode(self.msg_type, &self.data, opts)
    }
}

/// Agent capability bit numbers (`VD_AGENT_CAP_*`).
pub mod cap {
    pub const MOUSE_STATE: u32 = 0;
    pub const MONITORS_CONFIG: u32 = 1;
    pub const REPLY: u32 = 2;
    pub const CLIPBOARD: u32 = 3;
    pub const DISPLAY_CONFIG: u32 = 4;
    pub const CLIPBOARD_BY_DEMAND: u32 = 5;
    pub const CLIPBOARD_SELECTION: u32 = 6;
    pub const SPARSE_MONITORS_CONFIG: u32 = 7;
    pub const GUEST_LINEEND_LF: u32 = 8;
    pub const GUEST_LINEEND_CRLF: u32 = 9;
    pub const MAX_CLIPBOARD: u32 = 10;
    pub const AUDIO_VOLUME_SYNC: u32 = 11;
    pub const MONITORS_CONFIG_POSITION: u32 = 12;
    pub const FILE_XFER_DISABLED: u32 = 13;
    pub const FILE_XFER_DETAILED_ERRORS: u32 = 14;
    pub const GRAPHICS_DEVICE_INFO: u32 = 15;
    pub const CLIPBOARD_NO_RELEASE_ON_REGRAB: u32 = 16;
    pub const CLIPBOARD_GRAB_SERIAL: u32 = 17;
}

/// Which optional fields the peer's announced capabilities put in clipboard bodies.
///
/// spice-gtk adds them when the *agent* announced the capability
/// (`test_agent_cap`): build this from the capabilities the other side announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, arbitrary::Arbitrary)]
pub struct BodyOptions {
    /// `VD_AGENT_CAP_CLIPBOARD_SELECTION`: clipboard messages start with a selection byte
    /// and 3 reserved bytes.
    pub clipboard_selection: bool,
    /// `VD_AGENT_CAP_CLIPBOARD_GRAB_SERIAL`: `clipboard_grab` has a serial after the
    /// selection.
    pub clipboard_grab_serial: bool,
}

impl BodyOptions {
    /// The options the capability words `caps` (an announce_capabilities body) imply.
    pub fn from_caps(caps: &[u32]) -> Self {
        BodyOptions {
            clipboard_selection: has_cap(caps, cap::CLIPBOARD_SELECTION),
            clipboard_grab_serial: has_cap(caps, cap::CLIPBOARD_GRAB_SERIAL),
        }
    }
}

/// `VD_AGENT_HAS_CAPABILITY`: whether bit `cap` is set in the words `caps`.
pub fn has_cap(caps: &[u32], cap: u32) -> bool {
    caps.get((cap / 32) as usize)
        .is_some_and(|w| w & (1 << (cap % 32)) != 0)
}

/// `VD_AGENT_SET_CAPABILITY`, growing `caps` as needed.
pub fn set_cap(caps: &mut Vec<u32>, cap: u32) {
    let i = (cap / 32) as usize;
    if caps.len() <= i {
        caps.resize(i + 1, 0);
    }
    if let Some(w) = caps.get_mut(i) {
        *w |= 1 << (cap % 32);
    }
}

wire_flags! {
    /// `VD_AGENT_*BUTTON_MASK` (note: bit 0 is unused, left is bit 1).
    pub struct AgentMouseButtons: u32 {
        const LEFT = 1 << 1;
        const MIDDLE = 1 << 2;
        const RIGHT = 1 << 3;
        const UP = 1 << 4;
        const DOWN = 1 << 5;
        const SIDE = 1 << 6;
        const EXTRA = 1 << 7;
    }
}

wire_struct! {
    /// `VDAgentMouseState` (server → agent, client mouse mode).
    pub struct MouseState {
        pub x: u32,
        pub y: u32,
        pub buttons: AgentMouseButtons,
        pub display_id: u8,
    }
}

wire_flags! {
    /// `VD_AGENT_CONFIG_MONITORS_FLAG_*`. `PHYSICAL_SIZE` is not stored in
    /// [`MonitorsConfig::flags`]: it is derived from [`Monitors::WithPhysicalSize`].
    pub struct MonitorsConfigFlags: u32 {
        const USE_POS = 1 << 0;
        const PHYSICAL_SIZE = 1 << 1;
    }
}

wire_struct! {
    /// `VDAgentMonConfig` (note the order: height first).
    pub struct MonConfig {
        pub height: u32,
        pub width: u32,
        pub depth: u32,
        pub x: i32,
        pub y: i32,
    }
}

wire_struct! {
    /// `VDAgentMonitorMM`: physical size in millimetres (height first).
    pub struct MonitorMm {
        pub height: u16,
        pub width: u16,
    }
}

/// A monitor with its physical size.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct MonitorWithSize {
    pub config: MonConfig,
    pub size: MonitorMm,
}

/// The monitors of a [`MonitorsConfig`]: with `PHYSICAL_SIZE`, the sizes follow all the
/// configs, one per monitor.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum Monitors {
    Plain(Vec<MonConfig>),
    WithPhysicalSize(Vec<MonitorWithSize>),
}

impl Monitors {
    pub fn len(&self) -> usize {
        match self {
            Monitors::Plain(v) => v.len(),
            Monitors::WithPhysicalSize(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `VDAgentMonitorsConfig`: num_of_monitors u32, flags u32, the configs, then (with
/// `PHYSICAL_SIZE`) the sizes. Bytes after them are ignored, as by the reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct MonitorsConfig {
    /// Without `PHYSICAL_SIZE` (see [`Monitors`]).
    #[arbitrary(with = arb_monitors_flags)]
    pub flags: MonitorsConfigFlags,
    pub monitors: Monitors,
}

fn arb_monitors_flags(
    u: &mut arbitrary::Unstructured<'_>,
) -> arbitrary::Result<MonitorsConfigFlags> {
    let raw: u32 = arbitrary::Arbitrary::arbitrary(u)?;
    Ok(MonitorsConfigFlags(
        raw & !MonitorsConfigFlags::PHYSICAL_SIZE.0,
    ))
}

impl Encode for MonitorsConfig {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u32(self.monitors.len() as u32);
        let with_size = matches!(self.monitors, Monitors::WithPhysicalSize(_));
        w.u32(
            self.flags
                .with(MonitorsConfigFlags::PHYSICAL_SIZE, with_size)
                .bits(),
        );
        match &self.monitors {
            Monitors::Plain(v) => w.all(v),
            Monitors::WithPhysicalSize(v) => {
                for m in v {
                    m.config.encode(w);
                }
                for m in v {
                    m.size.encode(w);
                }
            }
        }
    }
}
impl Decode for MonitorsConfig {
    const MIN_SIZE: usize = 8;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let n = r.u32("num_of_monitors")? as u64;
        let flags = MonitorsConfigFlags::decode(r)?;
        let monitors = if flags.contains(MonitorsConfigFlags::PHYSICAL_SIZE) {
            r.check_count(n, MonConfig::MIN_SIZE + MonitorMm::MIN_SIZE, "monitors")?;
            let configs: Vec<MonConfig> = r.vec(n, "monitors")?;
            let sizes: Vec<MonitorMm> = r.vec(n, "physical sizes")?;
            Monitors::WithPhysicalSize(
                configs
                    .into_iter()
                    .zip(sizes)
                    .map(|(config, size)| MonitorWithSize { config, size })
                    .collect(),
            )
        } else {
            Monitors::Plain(r.vec(n, "monitors")?)
        };
        Ok(MonitorsConfig {
            flags: flags.without(MonitorsConfigFlags::PHYSICAL_SIZE),
            monitors,
        })
    }
}

wire_enum! {
    /// `VD_AGENT_SUCCESS` / `VD_AGENT_ERROR`.
    pub enum ReplyError: u32 {
        Success = 1 => "success",
        Error = 2 => "error",
    }
}

wire_struct! {
    /// `VDAgentReply`: the agent's answer to `monitors_config` or `display_config`.
    pub struct Reply {
        /// The type of the message answered.
        pub msg_type: AgentMessageType,
        pub error: ReplyError,
    }
}

wire_flags! {
    /// `VD_AGENT_DISPLAY_CONFIG_FLAG_*`.
    pub struct DisplayConfigFlags: u32 {
        const DISABLE_WALLPAPER = 1 << 0;
        const DISABLE_FONT_SMOOTH = 1 << 1;
        const DISABLE_ANIMATION = 1 << 2;
        const SET_COLOR_DEPTH = 1 << 3;
    }
}

wire_struct! {
    /// `VDAgentDisplayConfig`.
    pub struct DisplayConfig {
        pub flags: DisplayConfigFlags,
        pub depth: u32,
    }
}

wire_enum! {
    /// `VD_AGENT_CLIPBOARD_*` data types.
    pub enum ClipboardType: u32 {
        None = 0 => "none",
        Utf8Text = 1 => "utf8_text",
        ImagePng = 2 => "image_png",
        ImageBmp = 3 => "image_bmp",
        ImageTiff = 4 => "image_tiff",
        ImageJpg = 5 => "image_jpg",
        FileList = 6 => "file_list",
    }
}

wire_enum! {
    /// `VD_AGENT_CLIPBOARD_SELECTION_*`.
    pub enum ClipboardSelection: u8 {
        Clipboard = 0 => "clipboard",
        Primary = 1 => "primary",
        Secondary = 2 => "secondary",
    }
}

/// Write the selection prefix (selection byte and 3 reserved zero bytes) if there is one.
fn put_selection(w: &mut Writer<'_>, s: Option<ClipboardSelection>) {
    if let Some(s) = s {
        w.u8(s.to_raw());
        w.bytes(&[0, 0, 0]);
    }
}

/// Read the selection prefix if the capability says there is one (reserved bytes ignored).
fn get_selection(r: &mut Reader<'_>, opts: BodyOptions) -> Result<Option<ClipboardSelection>> {
    if !opts.clipboard_selection {
        return Ok(None);
    }
    let s = ClipboardSelection::from_raw(r.u8("clipboard selection")?);
    r.take(3, "clipboard selection reserved")?;
    Ok(Some(s))
}

/// `VDAgentClipboard`: clipboard contents. `selection` is present iff
/// [`BodyOptions::clipboard_selection`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct Clipboard {
    pub selection: Option<ClipboardSelection>,
    pub clipboard_type: ClipboardType,
    pub data: Bytes,
}

/// `VDAgentClipboardGrab`: the types the grabbing side offers. `selection` and `serial`
/// are present iff the matching [`BodyOptions`] are set. The types run to the end of the
/// data; a partial last word is ignored, as by the reference (size / 4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct ClipboardGrab {
    pub selection: Option<ClipboardSelection>,
    pub serial: Option<u32>,
    pub types: Vec<ClipboardType>,
}

/// `VDAgentClipboardRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct ClipboardRequest {
    pub selection: Option<ClipboardSelection>,
    pub clipboard_type: ClipboardType,
}

/// `VDAgentClipboardRelease`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct ClipboardRelease {
    pub selection: Option<ClipboardSelection>,
}

/// `VDAgentAnnounceCapabilities`: `request` asks the other side to announce back; the
/// capability words run to the end (a partial last word is ignored, as by the reference).
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct AnnounceCapabilities {
    pub request: u32,
    pub caps: Vec<u32>,
}

impl AnnounceCapabilities {
    pub fn has(&self, cap: u32) -> bool {
        has_cap(&self.caps, cap)
    }
}

wire_enum! {
    /// `VD_AGENT_FILE_XFER_STATUS_*`.
    pub enum FileXferResult: u32 {
        CanSendData = 0 => "can_send_data",
        Cancelled = 1 => "cancelled",
        Error = 2 => "error",
        Success = 3 => "success",
        NotEnoughSpace = 4 => "not_enough_space",
        SessionLocked = 5 => "session_locked",
        VdagentNotConnected = 6 => "vdagent_not_connected",
        Disabled = 7 => "disabled",
    }
}

/// `VDAgentFileXferStartMessage`: the id, then the file's metadata (a GKeyFile text), raw.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct FileXferStart {
    pub id: u32,
    pub data: Bytes,
}

/// `VDAgentFileXferStatusMessage`: the id, the result, then detail bytes, raw.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct FileXferStatus {
    pub id: u32,
    pub result: FileXferResult,
    pub data: Bytes,
}

/// `VDAgentFileXferDataMessage`: the id, a u64 size (derived from `data`), then the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct FileXferData {
    pub id: u32,
    pub data: Bytes,
}

/// The typed body of a [`VdAgentMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum AgentBody {
    MouseState(MouseState),
    MonitorsConfig(MonitorsConfig),
    Reply(Reply),
    Clipboard(Clipboard),
    DisplayConfig(DisplayConfig),
    AnnounceCapabilities(AnnounceCapabilities),
    ClipboardGrab(ClipboardGrab),
    ClipboardRequest(ClipboardRequest),
    ClipboardRelease(ClipboardRelease),
    FileXferStart(FileXferStart),
    FileXferStatus(FileXferStatus),
    FileXferData(FileXferData),
    ClientDisconnected,
    /// `VDAgentMaxClipboard`: the largest clipboard the sender accepts (-1: no limit).
    MaxClipboard(i32),
    /// A type without a typed body here (`audio_volume_sync`, `graphics_device_info`, or an
    /// unknown number), kept raw. Never one of the typed types above.
    Unknown {
        #[arbitrary(with = arb_untyped)]
        msg_type: AgentMessageType,
        data: Bytes,
    },
}

fn arb_untyped(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<AgentMessageType> {
    let v: u32 = arbitrary::Arbitrary::arbitrary(u)?;
    Ok(AgentMessageType::from_raw(match v % 4 {
        0 => 15,
        1 => 16,
        2 => 0,
        _ => 17 + v / 4,
    }))
}

impl AgentBody {
    /// The message type this body is sent as.
    pub fn msg_type(&self) -> AgentMessageType {
        use AgentMessageType as T;
        match self {
            AgentBody::MouseState(_) => T::MouseState,
            AgentBody::MonitorsConfig(_) => T::MonitorsConfig,
            AgentBody::Reply(_) => T::Reply,
            AgentBody::Clipboard(_) => T::Clipboard,
            AgentBody::DisplayConfig(_) => T::DisplayConfig,
            AgentBody::AnnounceCapabilities(_) => T::AnnounceCapabilities,
            AgentBody::ClipboardGrab(_) => T::ClipboardGrab,
            AgentBody::ClipboardRequest(_) => T::ClipboardRequest,
            AgentBody::ClipboardRelease(_) => T::ClipboardRelease,
            AgentBody::FileXferStart(_) => T::FileXferStart,
            AgentBody::FileXferStatus(_) => T::FileXferStatus,
            AgentBody::FileXferData(_) => T::FileXferData,
            AgentBody::ClientDisconnected => T::ClientDisconnected,
            AgentBody::MaxClipboard(_) => T::MaxClipboard,
            AgentBody::Unknown { msg_type, .. } => *msg_type,
        }
    }

    /// The options a peer must have announced for this body to be read back as written.
    pub fn options_used(&self) -> BodyOptions {
        let (sel, serial) = match self {
            AgentBody::Clipboard(c) => (c.selection.is_some(), false),
            AgentBody::ClipboardGrab(g) => (g.selection.is_some(), g.serial.is_some()),
            AgentBody::ClipboardRequest(c) => (c.selection.is_some(), false),
            AgentBody::ClipboardRelease(c) => (c.selection.is_some(), false),
            _ => (false, false),
        };
        BodyOptions {
            clipboard_selection: sel,
            clipboard_grab_serial: serial,
        }
    }

    /// The message data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            AgentBody::MouseState(m) => m.encode(&mut w),
            AgentBody::MonitorsConfig(m) => m.encode(&mut w),
            AgentBody::Reply(m) => m.encode(&mut w),
            AgentBody::Clipboard(c) => {
                put_selection(&mut w, c.selection);
                c.clipboard_type.encode(&mut w);
                w.bytes(&c.data);
            }
            AgentBody::DisplayConfig(m) => m.encode(&mut w),
            AgentBody::AnnounceCapabilities(a) => {
                w.u32(a.request);
                w.all(&a.caps);
            }
            AgentBody::ClipboardGrab(g) => {
                put_selection(&mut w, g.selection);
                if let Some(s) = g.serial {
                    w.u32(s);
                }
                w.all(&g.types);
            }
            AgentBody::ClipboardRequest(c) => {
                put_selection(&mut w, c.selection);
                c.clipboard_type.encode(&mut w);
            }
            AgentBody::ClipboardRelease(c) => put_selection(&mut w, c.selection),
            AgentBody::FileXferStart(f) => {
                w.u32(f.id);
                w.bytes(&f.data);
            }
            AgentBody::FileXferStatus(f) => {
                w.u32(f.id);
                w.u32(f.result.to_raw());
                w.bytes(&f.data);
            }
            AgentBody::FileXferData(f) => {
                w.u32(f.id);
                w.u64(f.data.len() as u64);
                w.bytes(&f.data);
            }
            AgentBody::ClientDisconnected => {}
            AgentBody::MaxClipboard(m) => w.i32(*m),
            AgentBody::Unknown { data, .. } => w.bytes(data),
        }
        w.finish()
    }

    /// Decode the data of a message of type `msg_type`. Bytes after a fixed-size body are
    /// ignored (older and newer peers may send more); a body too short for its type is an
    /// error.
    pub fn decode(msg_type: AgentMessageType, data: &[u8], opts: BodyOptions) -> Result<Self> {
        use AgentMessageType as T;
        let r = &mut Reader::new(data);
        Ok(match msg_type {
            T::MouseState => AgentBody::MouseState(MouseState::decode(r)?),
            T::MonitorsConfig => AgentBody::MonitorsConfig(MonitorsConfig::decode(r)?),
            T::Reply => AgentBody::Reply(Reply::decode(r)?),
            T::Clipboard => {
                let selection = get_selection(r, opts)?;
                AgentBody::Clipboard(Clipboard {
                    selection,
                    clipboard_type: ClipboardType::decode(r)?,
                    data: r.rest().into(),
                })
            }
            T::DisplayConfig => AgentBody::DisplayConfig(DisplayConfig::decode(r)?),
            T::AnnounceCapabilities => {
                let request = r.u32("announce_capabilities request")?;
                let n = r.left() / 4;
                AgentBody::AnnounceCapabilities(AnnounceCapabilities {
                    request,
                    caps: r.vec(n as u64, "capabilities")?,
                })
            }
            T::ClipboardGrab => {
                let selection = get_selection(r, opts)?;
                let serial = if opts.clipboard_grab_serial {
                    Some(r.u32("clipboard_grab serial")?)
                } else {
                    None
                };
                let n = r.left() / 4;
                AgentBody::ClipboardGrab(ClipboardGrab {
                    selection,
                    serial,
                    types: r.vec(n as u64, "clipboard_grab types")?,
                })
            }
            T::ClipboardRequest => {
                let selection = get_selection(r, opts)?;
                AgentBody::ClipboardRequest(ClipboardRequest {
                    selection,
                    clipboard_type: ClipboardType::decode(r)?,
                })
            }
            T::ClipboardRelease => AgentBody::ClipboardRelease(ClipboardRelease {
                selection: get_selection(r, opts)?,
            }),
            T::FileXferStart => AgentBody::FileXferStart(FileXferStart {
                id: r.u32("file_xfer_start id")?,
                data: r.rest().into(),
            }),
            T::FileXferStatus => AgentBody::FileXferStatus(FileXferStatus {
                id: r.u32("file_xfer_status id")?,
                result: FileXferResult::decode(r)?,
                data: r.rest().into(),
            }),
            T::FileXferData => {
                let id = r.u32("file_xfer_data id")?;
                let size = r.u64("file_xfer_data size")?;
                AgentBody::FileXferData(FileXferData {
                    id,
                    data: r.bytes(size, "file_xfer_data data")?.into(),
                })
            }
            T::ClientDisconnected => AgentBody::ClientDisconnected,
            T::MaxClipboard => AgentBody::MaxClipboard(r.i32("max_clipboard max")?),
            T::AudioVolumeSync | T::GraphicsDeviceInfo | T::Unknown(_) => AgentBody::Unknown {
                msg_type,
                data: data.into(),
            },
        })
    }
}

/// Which rules a [`Reassembler`] holds `agent_data` pieces to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReassemblyRules {
    /// A plain byte stream: headers may be split, a piece may hold several messages
    /// (spice-gtk's reading of server `agent_data`).
    Stream,
    /// spice-server's `agent_msg_filter` rules for client `agent_data`: a piece is at most
    /// [`VD_AGENT_MAX_DATA_SIZE`] bytes, a message's first piece holds its whole header, the
    /// protocol is [`VD_AGENT_PROTOCOL`], and no piece runs past the end of its message.
    Strict,
}

/// Turns a sequence of `agent_data` bodies into whole [`VdAgentMessage`]s (sans-IO).
///
/// A message whose header claims more than `max_message_size` data bytes is an error when
/// its header arrives; data is buffered as it arrives, never allocated by the claimed size.
/// After an error the stream has lost sync: the caller should drop the agent connection
/// (spice-server disconnects the client); the reassembler is reset.
#[derive(Debug, Clone)]
pub struct Reassembler {
    rules: ReassemblyRules,
    max_message_size: u32,
    /// Bytes of the header read so far (while fewer than 20).
    header: Vec<u8>,
    /// The message whose data is being read.
    current: Option<(VdAgentMessageHeader, Vec<u8>)>,
}

impl Reassembler {
    /// A stream reassembler (spice-gtk's rules).
    pub fn new(max_message_size: u32) -> Self {
        Self::with_rules(ReassemblyRules::Stream, max_message_size)
    }

    /// A reassembler with spice-server's rules for client `agent_data`.
    pub fn strict(max_message_size: u32) -> Self {
        Self::with_rules(ReassemblyRules::Strict, max_message_size)
    }

    pub fn with_rules(rules: ReassemblyRules, max_message_size: u32) -> Self {
        Reassembler {
            rules,
            max_message_size,
            header: Vec::with_capacity(MESSAGE_HEADER_SIZE),
            current: None,
        }
    }

    /// Whether no message is partly read.
    pub fn is_idle(&self) -> bool {
        self.header.is_empty() && self.current.is_none()
    }

    fn reset(&mut self) {
        self.header.clear();
        self.current = None;
    }

    /// Feed one `agent_data` body; returns the messages it completed.
    pub fn push(&mut self, piece: &[u8]) -> Result<Vec<VdAgentMessage>> {
        let res = self.push_inner(piece);
        if res.is_err() {
            self.reset();
        }
        res
    }

    fn push_inner(&mut self, piece: &[u8]) -> Result<Vec<VdAgentMessage>> {
        let strict = self.rules == ReassemblyRules::Strict;
        if strict {
            if piece.len() > VD_AGENT_MAX_DATA_SIZE {
                return Err(DecodeError::TooLarge {
                    what: "agent_data",
                    size: piece.len() as u64,
                    limit: VD_AGENT_MAX_DATA_SIZE as u64,
                });
            }
            if self.current.is_none() && piece.len() < MESSAGE_HEADER_SIZE {
                return Err(DecodeError::MissingData {
                    what: "VDAgentMessage header",
                    needed: MESSAGE_HEADER_SIZE,
                    left: piece.len(),
                });
            }
        }
        let mut out = Vec::new();
        let mut rest = piece;
        loop {
            if self.current.is_none() {
                if rest.is_empty() {
                    break;
                }
                if strict && !out.is_empty() {
                    // A second message in one piece: the reference's "data exceeds size
                    // from header".
                    return Err(DecodeError::TrailingData {
                        what: "agent_data past the end of its message",
                        extra: rest.len(),
                    });
                }
                let want = MESSAGE_HEADER_SIZE - self.header.len();
                let n = want.min(rest.len());
                let (h, tail) = rest.split_at(n);
                self.header.extend_from_slice(h);
                rest = tail;
                if self.header.len() < MESSAGE_HEADER_SIZE {
                    break;
                }
                let header = VdAgentMessageHeader::decode(&mut Reader::new(&self.header))?;
                self.header.clear();
                if strict && header.protocol != VD_AGENT_PROTOCOL {
                    return Err(DecodeError::InvalidValue {
                        what: "VDAgentMessage protocol",
                        value: header.protocol as u64,
                    });
                }
                if header.size > self.max_message_size {
                    return Err(DecodeError::TooLarge {
                        what: "VDAgentMessage",
                        size: header.size as u64,
                        limit: self.max_message_size as u64,
                    });
                }
                // Bounded by the limit and by what this piece holds.
                let cap = (header.size as usize).min(rest.len());
                self.current = Some((header, Vec::with_capacity(cap)));
            }
            let Some((header, data)) = self.current.as_mut() else {
                break;
            };
            let want = header.size as usize - data.len();
            let n = want.min(rest.len());
            let (d, tail) = rest.split_at(n);
            data.extend_from_slice(d);
            rest = tail;
            if data.len() < header.size as usize {
                break;
            }
            if let Some((header, data)) = self.current.take() {
                out.push(VdAgentMessage {
                    protocol: header.protocol,
                    msg_type: header.msg_type,
                    opaque: header.opaque,
                    data: Bytes(data),
                });
            }
        }
        Ok(out)
    }
}

/// One piece of the guest's char-device stream, as spice-server reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DevicePiece {
    /// The port of the chunk the piece belongs to.
    pub port: VdiPort,
    /// At most [`VD_AGENT_MAX_DATA_SIZE`] bytes of the chunk's data: for
    /// [`VdiPort::Client`], one `agent_data` body to send to the client.
    pub data: Vec<u8>,
}

/// Cuts the guest char-device byte stream (`VDIChunkHeader` + data, ...) into pieces of at
/// most [`VD_AGENT_MAX_DATA_SIZE`] bytes per chunk, as spice-server's
/// `read_one_msg_from_device` does (sans-IO: feed bytes, get pieces).
///
/// A piece is emitted when it is full or its chunk ends. A chunk of size 0 yields nothing.
#[derive(Debug, Clone, Default)]
pub struct ChunkReader {
    header: Vec<u8>,
    /// The chunk being read: its port, data bytes still to come, the piece being filled.
    current: Option<(VdiPort, u32, Vec<u8>)>,
}

impl ChunkReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed device bytes; returns the completed pieces.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<DevicePiece> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let Some((port, left, piece)) = self.current.as_mut() else {
                let n = (CHUNK_HEADER_SIZE - self.header.len()).min(bytes.len());
                let (h, tail) = bytes.split_at(n);
                self.header.extend_from_slice(h);
                bytes = tail;
                if self.header.len() == CHUNK_HEADER_SIZE {
                    if let Ok(h) = VdiChunkHeader::decode(&mut Reader::new(&self.header)) {
                        if h.size > 0 {
                            let cap = (h.size as usize).min(VD_AGENT_MAX_DATA_SIZE);
                            self.current = Some((h.port, h.size, Vec::with_capacity(cap)));
                        }
                    }
                    self.header.clear();
                }
                continue;
            };
            let room = VD_AGENT_MAX_DATA_SIZE - piece.len();
            let n = room.min(*left as usize).min(bytes.len());
            let (d, tail) = bytes.split_at(n);
            piece.extend_from_slice(d);
            bytes = tail;
            *left -= n as u32;
            if piece.len() == VD_AGENT_MAX_DATA_SIZE || *left == 0 {
                out.push(DevicePiece {
                    port: *port,
                    data: std::mem::take(piece),
                });
                if *left == 0 {
                    self.current = None;
                }
            }
        }
        out
    }
}

/// Wrap one piece for the guest, as spice-server wraps each client `agent_data`: a
/// [`VdiChunkHeader`] with `port` and the piece's size, then the piece.
pub fn to_device_chunk(port: VdiPort, piece: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(CHUNK_HEADER_SIZE + piece.len());
    v.extend_from_slice(&port.to_raw().to_le_bytes());
    v.extend_from_slice(&(piece.len() as u32).to_le_bytes());
    v.extend_from_slice(piece);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbitrary::{Arbitrary, Unstructured};
    use proptest::prelude::*;

    fn msg(t: AgentMessageType, n: usize) -> VdAgentMessage {
        VdAgentMessage::new(t, (0..n).map(|i| i as u8).collect())
    }

    #[test]
    fn header_layout() {
        let m = VdAgentMessage {
            protocol: 1,
            msg_type: AgentMessageType::ClipboardGrab,
            opaque: 0x0102_0304_0506_0708,
            data: Bytes(vec![0xee]),
        };
        #[rustfmt::skip]
        let want = [
            1, 0, 0, 0, 7, 0, 0, 0,
            8, 7, 6, 5, 4, 3, 2, 1,
            1, 0, 0, 0, 0xee,
        ];
        assert_eq!(m.to_bytes(), want);
        assert_eq!(
            to_device_chunk(VdiPort::Client, &[9, 9]),
            [1, 0, 0, 0, 2, 0, 0, 0, 9, 9]
        );
    }

    /// spice-gtk's cut: a 5000-byte message is 20 + 5000 = 5020 bytes in pieces of 2048,
    /// 2048 and 924; only the first has a header.
    #[test]
    fn chunking_matches_spice_gtk() {
        let m = msg(AgentMessageType::Clipboard, 5000);
        let pieces = m.to_agent_data();
        let sizes: Vec<usize> = pieces.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2048, 2048, 924]);
        let mut r = Reassembler::strict(1 << 20);
        assert!(r.push(&pieces[0]).unwrap().is_empty());
        assert!(r.push(&pieces[1]).unwrap().is_empty());
        assert_eq!(r.push(&pieces[2]).unwrap(), vec![m]);
        assert!(r.is_idle());
        // A message that fits: one piece.
        assert_eq!(msg(AgentMessageType::Reply, 8).to_agent_data().len(), 1);
        assert_eq!(msg(AgentMessageType::Reply, 2028).to_agent_data().len(), 1);
        assert_eq!(msg(AgentMessageType::Reply, 2029).to_agent_data().len(), 2);
    }

    #[test]
    fn strict_rules_are_the_reference_filter() {
        let mut r = Reassembler::strict(1 << 20);
        // Header split across pieces.
        assert!(r.push(&[1, 0, 0, 0]).is_err());
        // Two messages in one piece.
        let mut two = msg(AgentMessageType::Reply, 8).to_bytes();
        two.extend(msg(AgentMessageType::Reply, 8).to_bytes());
        assert!(matches!(
            r.push(&two),
            Err(DecodeError::TrailingData { .. })
        ));
        // Wrong protocol.
        let mut bad = msg(AgentMessageType::Reply, 0);
        bad.protocol = 2;
        assert!(matches!(
            r.push(&bad.to_bytes()),
            Err(DecodeError::InvalidValue { value: 2, .. })
        ));
        // Oversized piece.
        assert!(r.push(&vec![0; 2049]).is_err());
        // The stream reader accepts the first two cases.
        let mut s = Reassembler::new(1 << 20);
        assert_eq!(s.push(&two).unwrap().len(), 2);
        let b = msg(AgentMessageType::Reply, 8).to_bytes();
        assert!(s.push(&b[..3]).unwrap().is_empty());
        assert_eq!(s.push(&b[3..]).unwrap().len(), 1);
    }

    #[test]
    fn a_huge_claimed_size_is_an_error_not_an_allocation() {
        let mut h = VdAgentMessageHeader {
            protocol: 1,
            msg_type: AgentMessageType::Clipboard,
            opaque: 0,
            size: u32::MAX,
        };
        let bytes = crate::wire::encode_to_vec(&h);
        let mut r = Reassembler::new(1 << 20);
        assert!(matches!(
            r.push(&bytes),
            Err(DecodeError::TooLarge {
                size: 0xffff_ffff,
                ..
            })
        ));
        assert!(r.is_idle());
        h.size = 1 << 20;
        assert!(r.push(&crate::wire::encode_to_vec(&h)).unwrap().is_empty());
        assert!(!r.is_idle());
    }

    #[test]
    fn clipboard_bodies_with_and_without_selection() {
        let grab = AgentBody::ClipboardGrab(ClipboardGrab {
            selection: Some(ClipboardSelection::Primary),
            serial: Some(5),
            types: vec![ClipboardType::Utf8Text, ClipboardType::ImagePng],
        });
        let b = grab.to_bytes();
        assert_eq!(b, [1, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]);
        let opts = BodyOptions {
            clipboard_selection: true,
            clipboard_grab_serial: true,
        };
        assert_eq!(
            AgentBody::decode(AgentMessageType::ClipboardGrab, &b, opts).unwrap(),
            grab
        );
        // The same bytes without the caps read as four types.
        let AgentBody::ClipboardGrab(g) =
            AgentBody::decode(AgentMessageType::ClipboardGrab, &b, BodyOptions::default()).unwrap()
        else {
            panic!("not a grab")
        };
        assert_eq!(g.types.len(), 4);
        let req = AgentBody::ClipboardRequest(ClipboardRequest {
            selection: None,
            clipboard_type: ClipboardType::Utf8Text,
        });
        assert_eq!(req.to_bytes(), [1, 0, 0, 0]);
        let caps = AgentBody::AnnounceCapabilities(AnnounceCapabilities {
            request: 1,
            caps: vec![(1 << cap::CLIPBOARD_SELECTION) | (1 << cap::CLIPBOARD_GRAB_SERIAL)],
        });
        let AgentBody::AnnounceCapabilities(a) = &caps else {
            unreachable!()
        };
        assert_eq!(BodyOptions::from_caps(&a.caps), opts);
        assert!(a.has(cap::CLIPBOARD_SELECTION) && !a.has(cap::REPLY) && !a.has(200));
    }

    #[test]
    fn monitors_config_physical_sizes_follow_all_configs() {
        let mc = MonConfig {
            height: 768,
            width: 1024,
            depth: 32,
            x: 0,
            y: 0,
        };
        let m = AgentBody::MonitorsConfig(MonitorsConfig {
            flags: MonitorsConfigFlags::USE_POS,
            monitors: Monitors::WithPhysicalSize(vec![
                MonitorWithSize {
                    config: mc.clone(),
                    size: MonitorMm {
                        height: 1,
                        width: 2,
                    },
                },
                MonitorWithSize {
                    config: mc,
                    size: MonitorMm {
                        height: 3,
                        width: 4,
                    },
                },
            ]),
        });
        let b = m.to_bytes();
        assert_eq!(b.len(), 8 + 2 * 20 + 2 * 4);
        assert_eq!(&b[..8], [2, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(&b[48..], [1, 0, 2, 0, 3, 0, 4, 0]);
        assert_eq!(
            AgentBody::decode(AgentMessageType::MonitorsConfig, &b, BodyOptions::default())
                .unwrap(),
            m
        );
        // A count the data cannot hold is an error.
        assert!(AgentBody::decode(
            AgentMessageType::MonitorsConfig,
            &[0xff, 0xff, 0, 0, 0, 0, 0, 0],
            BodyOptions::default()
        )
        .is_err());
    }

    #[test]
    fn device_chunks_are_cut_into_agent_data_pieces() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut stream = to_device_chunk(VdiPort::Client, &data);
        stream.extend(to_device_chunk(VdiPort::Server, &[1, 2, 3]));
        stream.extend(to_device_chunk(VdiPort::Client, &[]));
        let mut cr = ChunkReader::new();
        let mut pieces = Vec::new();
        for b in stream.chunks(333) {
            pieces.extend(cr.push(b));
        }
        let sizes: Vec<(VdiPort, usize)> = pieces.iter().map(|p| (p.port, p.data.len())).collect();
        assert_eq!(
            sizes,
            [
                (VdiPort::Client, 2048),
                (VdiPort::Client, 2048),
                (VdiPort::Client, 904),
                (VdiPort::Server, 3)
            ]
        );
        let joined: Vec<u8> = pieces[..3].iter().flat_map(|p| p.data.clone()).collect();
        assert_eq!(joined, data);
    }

    fn arb_messages(seed: &[u8]) -> Vec<VdAgentMessage> {
        let mut u = Unstructured::new(seed);
        let n = u.int_in_range(0..=6).unwrap_or(0);
        (0..n)
            .filter_map(|_| {
                let mut m = VdAgentMessage::arbitrary(&mut u).ok()?;
                m.protocol = VD_AGENT_PROTOCOL;
                // Some messages larger than one piece.
                if u.ratio(1, 4).unwrap_or(false) {
                    m.data = Bytes(vec![0x5a; 3000 + m.data.len()]);
                }
                Some(m)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any split of a valid stream yields the same messages.
        #[test]
        fn any_split_reassembles(
            seed in proptest::collection::vec(any::<u8>(), 0..2048),
            cuts in proptest::collection::vec(0usize..8000, 0..20),
        ) {
            let msgs = arb_messages(&seed);
            let stream: Vec<u8> = msgs.iter().flat_map(VdAgentMessage::to_bytes).collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.push(0);
            cuts.push(stream.len());
            cuts.sort_unstable();
            let mut r = Reassembler::new(1 << 20);
            let mut got = Vec::new();
            for w in cuts.windows(2) {
                got.extend(r.push(&stream[w[0]..w[1]]).unwrap());
            }
            prop_assert_eq!(got, msgs);
            prop_assert!(r.is_idle());
        }

        /// spice-gtk's cut of each message passes the strict (server) rules.
        #[test]
        fn spice_gtk_chunking_passes_the_strict_rules(
            seed in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let msgs = arb_messages(&seed);
            let mut r = Reassembler::strict(1 << 20);
            let mut got = Vec::new();
            for m in &msgs {
                for p in m.to_agent_data() {
                    got.extend(r.push(&p).unwrap());
                }
            }
            prop_assert_eq!(got, msgs);
        }

        /// Any split of a device stream yields the same pieces.
        #[test]
        fn device_stream_any_split(
            sizes in proptest::collection::vec(0usize..5000, 0..5),
            cuts in proptest::collection::vec(0usize..30000, 0..20),
        ) {
            let mut stream = Vec::new();
            for (i, s) in sizes.iter().enumerate() {
                stream.extend(to_device_chunk(VdiPort::Client, &vec![i as u8; *s]));
            }
            let whole = ChunkReader::new().push(&stream);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.push(0);
            cuts.push(stream.len());
            cuts.sort_unstable();
            let mut cr = ChunkReader::new();
            let mut got = Vec::new();
            for w in cuts.windows(2) {
                got.extend(cr.push(&stream[w[0]..w[1]]));
            }
            prop_assert_eq!(got, whole);
        }

        /// Body round trip with the options the body uses.
        #[test]
        fn body_round_trip(seed in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(body) = AgentBody::arbitrary(&mut Unstructured::new(&seed)) {
                let m = VdAgentMessage::from_body(&body);
                let back = m.body(body.options_used()).unwrap();
                prop_assert_eq!(&back, &body);
                prop_assert_eq!(back.to_bytes(), body.to_bytes());
            }
        }

        /// Decoding and reassembling garbage never panics.
        #[test]
        fn never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..512),
            ty in 0u32..20,
            opts in any::<(bool, bool)>(),
        ) {
            let opts = BodyOptions { clipboard_selection: opts.0, clipboard_grab_serial: opts.1 };
            let _ = AgentBody::decode(AgentMessageType::from_raw(ty), &data, opts);
            let _ = crate::wire::decode_from_slice::<VdAgentMessage>(&data);
            for rules in [ReassemblyRules::Stream, ReassemblyRules::Strict] {
                let mut r = Reassembler::with_rules(rules, 256);
                for piece in data.chunks(37) {
                    let _ = r.push(piece);
                }
            }
            let _ = ChunkReader::new().push(&data);
        }
    }
}
