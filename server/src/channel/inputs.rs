//! The inputs channel: keys and lock-key state to the keyboard, mouse motion and buttons to
//! the mouse (server mouse mode) or the tablet (client mouse mode), motion acks, LED sync.
//!
//! Behaviour follows the reference's `InputsChannelClient::handle_message`:
//! - `key_down`/`key_up` carry up to four scancode bytes, least significant first; each
//!   non-zero byte is pushed until the first zero.
//! - `key_modifiers` toggles scroll/num/caps lock by pushing press+release of the lock key
//!   when the client's state differs from the keyboard's LEDs.
//! - motion (relative) reaches the mouse only in server mode; position (absolute) reaches the
//!   tablet only in client mode; wheel is a press of button up/down (dz -1/+1).
//! - every fourth motion or position is acknowledged with `mouse_motion_ack`.
//! - the LED state is sent in `init` and as `key_modifiers` whenever the keyboard's changes.
//!
//! Button masks are passed to the devices in SPICE's layout (left 1, middle 2, right 4, up 8,
//! down 16); the reference converts to QEMU's layout inside its device glue, which is the VMM's
//! business here.

use spice_proto::messages::inputs::{KeyboardModifiers, MouseButton};
use spice_proto::messages::main::MouseMode;
use spice_proto::messages::{InputsClient, InputsServer, Message};

use crate::channel::core::{ChannelCore, ChannelError};
use crate::link::Linked;
use crate::server::{Breakage, ChannelImpl, Shared};

/// `SPICE_INPUT_MOTION_ACK_BUNCH`.
pub const MOTION_ACK_BUNCH: u32 = 4;
const SCROLL_LOCK: u8 = 0x46;
const NUM_LOCK: u8 = 0x45;
const CAPS_LOCK: u8 = 0x3a;
const RELEASE: u8 = 0x80;

/// One client's inputs channel.
pub struct InputsChannel {
    core: ChannelCore,
    motions: u32,
    /// The LED state last sent to this client.
    leds_sent: KeyboardModifiers,
    /// Test-only breakage state: key messages seen, a held-back position.
    keys_seen: u32,
    held: Option<spice_proto::messages::inputs::MousePosition>,
}

impl InputsChannel {
    pub(crate) fn new(mut core: ChannelCore, _linked: &Linked, shared: &Shared) -> Self {
        let leds = shared
            .keyboard
            .as_ref()
            .map_or(KeyboardModifiers::default(), |k| k.leds());
        core.send(&InputsServer::Init(leds));
        InputsChannel {
            core,
            motions: 0,
            leds_sent: leds,
            keys_seen: 0,
            held: None,
        }
    }

    pub fn core(&self) -> &ChannelCore {
        &self.core
    }

    fn motion(&mut self) {
        self.motions += 1;
        if self.motions % MOTION_ACK_BUNCH == 0 {
            self.core.send(&InputsServer::MouseMotionAck);
        }
    }

    fn handle(&mut self, m: InputsClient, shared: &mut Shared) -> Result<(), ChannelError> {
        let client_mode = shared.mouse_mode == MouseMode::CLIENT;
        let m = match (shared.cfg.breakage, m) {
            (Some(Breakage::DropKey), InputsClient::KeyDown(c)) => {
                self.keys_seen += 1;
                if self.keys_seen == 5 {
                    return Ok(());
                }
                InputsClient::KeyDown(c)
            }
            (Some(Breakage::ReorderInputs), InputsClient::MousePosition(p)) => {
                match self.held.take() {
                    None if self.motions == 2 => {
                        self.held = Some(p);
                        self.motions += 1;
                        return Ok(());
                    }
                    None => InputsClient::MousePosition(p),
                    Some(held) => {
                        self.handle_one(InputsClient::MousePosition(p), shared, client_mode)?;
                        InputsClient::MousePosition(held)
                    }
                }
            }
            (_, m) => m,
        };
        self.handle_one(m, shared, client_mode)
    }

    fn handle_one(
        &mut self,
        m: InputsClient,
        shared: &mut Shared,
        client_mode: bool,
    ) -> Result<(), ChannelError> {
        match m {
            InputsClient::KeyDown(code) | InputsClient::KeyUp(code) => {
                if let Some(k) = shared.keyboard.as_mut() {
                    for b in code.to_le_bytes() {
                        if b == 0 {
                            break;
                        }
                        k.push_scancode(b);
                    }
                }
            }
            InputsClient::KeyScancode(bytes) => {
                if let Some(k) = shared.keyboard.as_mut() {
                    for &b in bytes.iter() {
                        k.push_scancode(b);
                    }
                }
            }
            InputsClient::KeyModifiers(want) => {
                if let Some(k) = shared.keyboard.as_mut() {
                    let have = k.leds();
                    for (flag, code) in [
                        (KeyboardModifiers::SCROLL_LOCK, SCROLL_LOCK),
                        (KeyboardModifiers::NUM_LOCK, NUM_LOCK),
                        (KeyboardModifiers::CAPS_LOCK, CAPS_LOCK),
                    ] {
                        if want.contains(flag) != have.contains(flag) {
                            k.push_scancode(code);
                            k.push_scancode(code | RELEASE);
                        }
                    }
                }
            }
            InputsClient::MouseMotion(mm) => {
                self.motion();
                if !client_mode {
                    if let Some(mouse) = shared.mouse.as_mut() {
                        mouse.motion(mm.dx, mm.dy, 0, mm.buttons_state);
                    }
                }
            }
            InputsClient::MousePosition(p) => {
                self.motion();
                if client_mode {
                    if let Some(t) = shared.tablet.as_mut() {
                        t.position(p.x, p.y, p.display_id, p.buttons_state);
                    }
                }
            }
            InputsClient::MousePress(ev) => {
                let dz = match ev.button {
                    MouseButton::Up => -1,
                    MouseButton::Down => 1,
                    _ => 0,
                };
                if client_mode {
                    if let Some(t) = shared.tablet.as_mut() {
                        // The reference calls wheel() for every press in client mode (dz 0
                        // for ordinary buttons), carrying the new button state.
                        t.wheel(dz, ev.buttons_state);
                    }
                } else if let Some(mouse) = shared.mouse.as_mut() {
                    mouse.motion(0, 0, dz, ev.buttons_state);
                }
            }
            InputsClient::MouseRelease(ev) => {
                if client_mode {
                    if let Some(t) = shared.tablet.as_mut() {
                        t.buttons(ev.buttons_state);
                    }
                } else if let Some(mouse) = shared.mouse.as_mut() {
                    mouse.buttons(ev.buttons_state);
                }
            }
            InputsClient::Base(_) => {}
            InputsClient::Unknown { msg_type, .. } => {
                return Err(ChannelError::Protocol(format!(
                    "unknown inputs message type {msg_type}"
                )))
            }
        }
        Ok(())
    }
}

impl ChannelImpl for InputsChannel {
    fn core_mut(&mut self) -> &mut ChannelCore {
        &mut self.core
    }

    fn handle_bytes(
        &mut self,
        data: &[u8],
        shared: &mut Shared,
        now_ms: u64,
    ) -> Result<(), ChannelError> {
        for raw in self.core.handle_bytes(data, now_ms)? {
            let m = InputsClient::decode(raw.header.msg_type, &raw.body)?;
            self.handle(m, shared)?;
        }
        Ok(())
    }

    fn pump(&mut self, shared: &mut Shared, _now_ms: u64) {
        if let Some(k) = shared.keyboard.as_ref() {
            let leds = k.leds();
            if leds != self.leds_sent {
                self.leds_sent = leds;
                self.core.send(&InputsServer::KeyModifiers(leds));
            }
        }
    }
}
