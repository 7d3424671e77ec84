//! Small structures shared by several channels: geometry, fixed-point numbers.

use crate::wire_struct;

wire_struct! {
    /// `Point`: two signed 32-bit coordinates.
    pub struct Point {
        pub x: i32,
        pub y: i32,
    }
}

wire_struct! {
    /// `Point16`: two signed 16-bit coordinates.
    pub struct Point16 {
        pub x: i16,
        pub y: i16,
    }
}

wire_struct! {
    /// `PointFix`: two 28.4 fixed-point coordinates.
    pub struct PointFix {
        pub x: i32,
        pub y: i32,
    }
}

wire_struct! {
    /// `Rect`: note SPICE's field order, top, left, bottom, right.
    pub struct Rect {
        pub top: i32,
        pub left: i32,
        pub bottom: i32,
        pub right: i32,
    }
}

impl Rect {
    /// A rectangle from its left/top corner and size.
    pub fn from_xywh(x: i32, y: i32, w: i32, h: i32) -> Rect {
        Rect {
            top: y,
            left: x,
            bottom: y.saturating_add(h),
            right: x.saturating_add(w),
        }
    }
    pub fn width(&self) -> i32 {
        self.right.saturating_sub(self.left)
    }
    pub fn height(&self) -> i32 {
        self.bottom.saturating_sub(self.top)
    }
    pub fn is_empty(&self) -> bool {
        self.width() <= 0 || self.height() <= 0
    }
}

wire_struct! {
    /// `Transform`: a 2x3 matrix of 16.16 fixed-point values (composite draws).
    pub struct Transform {
        pub t00: u32,
        pub t01: u32,
        pub t02: u32,
        pub t10: u32,
        pub t11: u32,
        pub t12: u32,
    }
}
