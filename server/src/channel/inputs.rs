//! The inputs channel: keys and lock-key state to the keyboard, mouse motion and buttons to
//! the mouse (server mouse mode) or the tablet (client mouse mode), motion acks, LED sync.
//!
//! Behaviour follows the reference's `InputsChannelClient::handle_message`:
//! - `key_down`/`key_up` carry up to four scancode bytes, least significant first; each
//!   non-zero byte is pushed until the first zero.
//! - the lock-key state is tracked as the reference tracks it ([`KbdState`]): a lock key's
//!   press toggles it; `key_modifiers` from a client pushes press+release of each lock key
//!   whose state differs (unless that key is held); either starts a 2-second watch after which
//!   the tracked state is sent to every client as `key_modifiers`. The keyboard's own LED
//!   changes (the guest's) replace the tracked state and are sent at once.
//! - motion (relative) reaches the mouse only in server mode; position (absolute) reaches the
//!   tablet only in client mode; wheel is a press of button up/down (dz -1/+1).
//! - every fourth motion or position is acknowledged with `mouse_motion_ack`.
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

/// `KEY_MODIFIERS_TTL`: how long after a lock-key change the state is sent to clients.
pub const KEY_MODIFIERS_TTL_MS: u64 = 2_000;

/// The lock-key state shared by every inputs channel (the reference keeps it in its one
/// `InputsChannel`).
#[derive(Debug, Default)]
pub(crate) struct KbdState {
    /// The lock keys' state as the server believes it.
    modifiers: KeyboardModifiers,
    /// Lock keys currently held down (their flags).
    pressed: u16,
    /// When to send the state to clients.
    watch_at_ms: Option<u64>,
    /// Bumped whenever the state must be sent; each channel sends when it sees a new value.
    generation: u64,
    /// The keyboard's LEDs when last looked at.
    last_leds: Option<KeyboardModifiers>,
}

impl KbdState {
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        self.watch_at_ms
    }

    pub(crate) fn handle_timeout(&mut self, now_ms: u64) {
        if self.watch_at_ms.is_some_and(|t| now_ms >= t) {
            self.watch_at_ms = None;
            self.generation += 1;
        }
    }

    fn watch(&mut self, now_ms: u64) {
        self.watch_at_ms = Some(now_ms + KEY_MODIFIERS_TTL_MS);
    }

    /// `sync_locks`: a lock key's press toggles the state (once per press).
    fn sync_locks(&mut self, byte: u8, now_ms: u64) {
        let flag = match byte & 0x7f {
            CAPS_LOCK => KeyboardModifiers::CAPS_LOCK.0,
            NUM_LOCK => KeyboardModifiers::NUM_LOCK.0,
            SCROLL_LOCK => KeyboardModifiers::SCROLL_LOCK.0,
            _ => 0,
        };
        if byte & RELEASE != 0 {
            self.pressed &= !flag;
        } else if flag != 0 && self.pressed & flag == 0 {
            self.modifiers.0 ^= flag;
            self.pressed |= flag;
            self.watch(now_ms);
        }
    }
}

/// Count one motion (or position); whether it completes a bunch that is acknowledged. The
/// counter wraps: a client may send more than 2^32 motions in a long session, and 2^32 is a
/// multiple of the bunch, so the cadence holds across the wrap.
fn count_motion(motions: &mut u32) -> bool {
    *motions = motions.wrapping_add(1);
    *motions % MOTION_ACK_BUNCH == 0
}

/// One client's inputs channel.
pub struct InputsChannel {
    core: ChannelCore,
    /// Motions and positions received (wrapping: only its value modulo the ack bunch counts).
    motions: u32,
    /// Motion acks owed but not yet queued (the output queue was full): sent when it has room,
    /// so a client that never reads cannot grow its own queue.
    acks_owed: u32,
    /// The [`KbdState`] generation last sent to this client.
    kbd_seen: u64,
    /// Test-only breakage state: key messages seen, a held-back position.
    keys_seen: u32,
    held: Option<spice_proto::messages::inputs::MousePosition>,
}

impl InputsChannel {
    pub(crate) fn new(mut core: ChannelCore, _linked: &Linked, shared: &Shared) -> Self {
        core.send(&InputsServer::Init(shared.kbd.modifiers));
        InputsChannel {
            core,
            motions: 0,
            acks_owed: 0,
            kbd_seen: shared.kbd.generation,
            keys_seen: 0,
            held: None,
        }
    }

    pub fn core(&self) -> &ChannelCore {
        &self.core
    }

    fn motion(&mut self) {
        if count_motion(&mut self.motions) {
            self.acks_owed = self.acks_owed.saturating_add(1);
            self.send_owed_acks();
        }
    }

    fn send_owed_acks(&mut self) {
        while self.acks_owed > 0 && self.core.can_send() {
            self.acks_owed -= 1;
            self.core.send(&InputsServer::MouseMotionAck);
        }
    }

    fn handle(
        &mut self,
        m: InputsClient,
        shared: &mut Shared,
        now_ms: u64,
    ) -> Result<(), ChannelError> {
        let client_mode = shared.mouse_mode == MouseMode::CLIENT;
        let m = match (shared.cfg.breakage, m) {
            (Some(Breakage::DropKey), InputsClient::KeyDown(c)) => {
                self.keys_seen += 1;
                if self.keys_seen == 1 {
                    return Ok(());
                }
                InputsClient::KeyDown(c)
            }
            (Some(Breakage::ReorderInputs), InputsClient::MousePosition(p)) => {
                match self.held.take() {
                    None if self.motions == 2 => {
                        self.held = Some(p);
                        self.motions = self.motions.wrapping_add(1);
                        return Ok(());
                    }
                    None => InputsClient::MousePosition(p),
                    Some(held) => {
                        self.handle_one(
                            InputsClient::MousePosition(p),
                            shared,
                            client_mode,
                            now_ms,
                        )?;
                        InputsClient::MousePosition(held)
                    }
                }
            }
            (_, m) => m,
        };
        self.handle_one(m, shared, client_mode, now_ms)
    }

    fn handle_one(
        &mut self,
        m: InputsClient,
        shared: &mut Shared,
        client_mode: bool,
        now_ms: u64,
    ) -> Result<(), ChannelError> {
        match m {
            InputsClient::KeyDown(code) | InputsClient::KeyUp(code) => {
                for b in code.to_le_bytes() {
                    if b == 0 {
                        break;
                    }
                    if let Some(k) = shared.keyboard.as_mut() {
                        k.push_scancode(b);
                    }
                    shared.kbd.sync_locks(b, now_ms);
                }
            }
            InputsClient::KeyScancode(bytes) => {
                for &b in bytes.iter() {
                    if let Some(k) = shared.keyboard.as_mut() {
                        k.push_scancode(b);
                    }
                    shared.kbd.sync_locks(b, now_ms);
                }
            }
            InputsClient::KeyModifiers(want) => {
                if let Some(k) = shared.keyboard.as_mut() {
                    let kbd = &mut shared.kbd;
                    for (flag, code) in [
                        (KeyboardModifiers::SCROLL_LOCK, SCROLL_LOCK),
                        (KeyboardModifiers::NUM_LOCK, NUM_LOCK),
                        (KeyboardModifiers::CAPS_LOCK, CAPS_LOCK),
                    ] {
                        if kbd.pressed & flag.0 == 0
                            && want.contains(flag) != kbd.modifiers.contains(flag)
                        {
                            k.push_scancode(code);
                            k.push_scancode(code | RELEASE);
                            kbd.modifiers.0 ^= flag.0;
                        }
                    }
                    kbd.watch(now_ms);
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
            self.handle(m, shared, now_ms)?;
        }
        Ok(())
    }

    fn pump(&mut self, shared: &mut Shared, _now_ms: u64) {
        self.send_owed_acks();
        // The guest changed the keyboard's LEDs (`spice_server_kbd_leds`): that is the state
        // now, sent at once.
        if let Some(k) = shared.keyboard.as_ref() {
            let leds = k.leds();
            let kbd = &mut shared.kbd;
            if kbd.last_leds != Some(leds) {
                if kbd.last_leds.is_some() {
                    kbd.modifiers = leds;
                    kbd.generation += 1;
                }
                kbd.last_leds = Some(leds);
            }
        }
        if self.kbd_seen != shared.kbd.generation && self.core.can_send() {
            self.kbd_seen = shared.kbd.generation;
            self.core
                .send(&InputsServer::KeyModifiers(shared.kbd.modifiers));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Security review 16: the counter overflowed (a debug panic) after 2^32 motions.
    #[test]
    fn motion_counter_wraps_and_keeps_acking_every_fourth() {
        let mut m = u32::MAX - 5;
        let acks: Vec<bool> = (0..12).map(|_| count_motion(&mut m)).collect();
        // u32::MAX - 4, u32::MAX - 3 (a multiple of 4), ..., u32::MAX, 0, ..., 6: acks on
        // u32::MAX - 3, on 0 (the wrap) and on 4.
        let due: Vec<usize> = acks
            .iter()
            .enumerate()
            .filter(|(_, a)| **a)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(due, vec![1, 5, 9]);
        assert_eq!(m, 6);
    }
}
