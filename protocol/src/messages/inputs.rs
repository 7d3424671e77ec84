//! The inputs channel: keyboard scancodes and modifiers, mouse motion, position and buttons.

use super::{BaseClient, BaseServer};
use crate::wire::Bytes;
use crate::{channel_messages, wire_enum, wire_flags, wire_struct};

wire_flags! {
    /// `keyboard_modifier_flags`: lock-key LEDs.
    pub struct KeyboardModifiers: u16 {
        const SCROLL_LOCK = 1 << 0;
        const NUM_LOCK = 1 << 1;
        const CAPS_LOCK = 1 << 2;
    }
}

wire_enum! {
    /// `mouse_button`.
    pub enum MouseButton: u8 {
        Invalid = 0 => "invalid",
        Left = 1 => "left",
        Middle = 2 => "middle",
        Right = 3 => "right",
        Up = 4 => "up",
        Down = 5 => "down",
        Side = 6 => "side",
        Extra = 7 => "extra",
    }
}

wire_flags! {
    /// `mouse_button_mask`: the buttons held.
    pub struct MouseButtonMask: u16 {
        const LEFT = 1 << 0;
        const MIDDLE = 1 << 1;
        const RIGHT = 1 << 2;
        const UP = 1 << 3;
        const DOWN = 1 << 4;
        const SIDE = 1 << 5;
        const EXTRA = 1 << 6;
    }
}

/// Server and client send a motion ack every this many motion/position messages
/// (`SPICE_INPUT_MOTION_ACK_BUNCH`).
pub const MOTION_ACK_BUNCH: u32 = 4;

wire_struct! {
    /// `mouse_motion`: relative motion (server mouse mode).
    pub struct MouseMotion {
        pub dx: i32,
        pub dy: i32,
        pub buttons_state: MouseButtonMask,
    }
}

wire_struct! {
    /// `mouse_position`: absolute position on a display (client mouse mode).
    pub struct MousePosition {
        pub x: u32,
        pub y: u32,
        pub buttons_state: MouseButtonMask,
        pub display_id: u8,
    }
}

wire_struct! {
    /// `mouse_press` / `mouse_release`.
    pub struct MouseButtonEvent {
        pub button: MouseButton,
        pub buttons_state: MouseButtonMask,
    }
}

channel_messages! {
    /// Client → server messages of the inputs channel.
    pub enum InputsClient(BaseClient) {
        /// A PC/AT scancode pressed (extended codes as 0xe0 << 8 | code).
        101 => KeyDown(u32) = "key_down",
        102 => KeyUp(u32) = "key_up",
        103 => KeyModifiers(KeyboardModifiers) = "key_modifiers",
        /// Raw scancode bytes (`KEY_SCANCODE` cap).
        104 => KeyScancode(Bytes) = "key_scancode",
        111 => MouseMotion(MouseMotion) = "mouse_motion",
        112 => MousePosition(MousePosition) = "mouse_position",
        113 => MousePress(MouseButtonEvent) = "mouse_press",
        114 => MouseRelease(MouseButtonEvent) = "mouse_release",
    }
}

channel_messages! {
    /// Server → client messages of the inputs channel.
    pub enum InputsServer(BaseServer) {
        101 => Init(KeyboardModifiers) = "init",
        102 => KeyModifiers(KeyboardModifiers) = "key_modifiers",
        111 => MouseMotionAck = "mouse_motion_ack",
    }
}
