//! The one error type of spice-proto.
//!
//! Every decoder returns [`DecodeError`]: it says what was being read and what was wrong, so a
//! server can log one clear line and close the channel that sent it.

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before `what` could be read.
    #[error("truncated: {what} needs {needed} bytes, {left} left")]
    MissingData {
        what: &'static str,
        needed: usize,
        left: usize,
    },
    /// A count says more elements than the bytes left can hold.
    #[error("{what}: count {count} of {elem_size}-byte elements exceeds the {left} bytes left")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        elem_size: usize,
        left: usize,
    },
    /// A pointer (an offset inside the message) points outside it.
    #[error("{what}: offset {offset} is outside the {len}-byte message")]
    BadOffset {
        what: &'static str,
        offset: u32,
        len: usize,
    },
    /// A pointer that may not be null was null.
    #[error("{what}: null pointer where one is required")]
    NullPointer { what: &'static str },
    /// A field holds a value the structure cannot be parsed with (for example an unknown switch
    /// discriminant).
    #[error("{what}: invalid value {value}")]
    InvalidValue { what: &'static str, value: u64 },
    /// A message or structure is larger than the configured limit.
    #[error("{what}: size {size} exceeds the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    /// Bytes remained after a structure that must fill its input exactly.
    #[error("{what}: {extra} trailing bytes")]
    TrailingData { what: &'static str, extra: usize },
    /// The link header's magic was not "REDQ".
    #[error("bad link magic {0:#010x}")]
    BadMagic(u32),
}

/// Result alias of this crate.
pub type Result<T, E = DecodeError> = core::result::Result<T, E>;
