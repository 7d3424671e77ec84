//! The one way spice-proto reads and writes wire structures.
//!
//! - [`Reader`] is a cursor over one message body that never reads past its end and resolves
//!   SPICE's pointers (32-bit offsets from the start of the body, 0 for null).
//! - [`Writer`] writes a body and lays out pointed-to data exactly as spice-common's marshaller
//!   does: every pointer target is appended after the body, in the order the pointers were
//!   written, and a target's own pointers queue behind everything already queued (breadth-first).
//!   A target that encodes to zero bytes leaves its pointer 0. This order is what spice-server's
//!   generated marshallers produce, so our bytes match the reference byte for byte.
//! - [`Encode`] / [`Decode`] are implemented by every structure; nothing parses by hand elsewhere.
//!
//! This module must not know about channels or messages.

use std::collections::VecDeque;

use crate::error::{DecodeError, Result};

/// Write a structure's wire form.
pub trait Encode {
    /// Append the wire form to `w`. Pointers inside are queued on `w` and resolved by
    /// [`Writer::finish`].
    fn encode<'a>(&'a self, w: &mut Writer<'a>);
}

/// Read a structure's wire form.
pub trait Decode: Sized {
    /// The smallest number of bytes one value occupies inline; decoders check
    /// `count * MIN_SIZE` against the bytes left before allocating for `count` values.
    const MIN_SIZE: usize;
    /// Read one value at the reader's position.
    fn decode(r: &mut Reader<'_>) -> Result<Self>;
}

/// A cursor over one message body (or any byte slice).
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    /// The whole message body: pointers are offsets into it.
    msg: &'a [u8],
    pos: usize,
    /// The reader may not go past `end` (`end <= msg.len()`).
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `msg`, which is also the base that pointers are relative to.
    pub fn new(msg: &'a [u8]) -> Self {
        Reader {
            msg,
            pos: 0,
            end: msg.len(),
        }
    }

    /// Bytes left before the end.
    pub fn left(&self) -> usize {
        self.end - self.pos
    }

    /// Position from the start of the message.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Take the next `n` bytes, or fail naming `what`.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if n > self.left() {
            return Err(DecodeError::MissingData {
                what,
                needed: n,
                left: self.left(),
            });
        }
        let s = &self.msg[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Take a fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Take everything up to the end.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.msg[self.pos..self.end];
        self.pos = self.end;
        s
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    pub fn i8(&mut self, what: &'static str) -> Result<i8> {
        Ok(self.u8(what)? as i8)
    }
    pub fn i16(&mut self, what: &'static str) -> Result<i16> {
        Ok(self.u16(what)? as i16)
    }
    pub fn i32(&mut self, what: &'static str) -> Result<i32> {
        Ok(self.u32(what)? as i32)
    }
    pub fn i64(&mut self, what: &'static str) -> Result<i64> {
        Ok(self.u64(what)? as i64)
    }

    /// Check that `count` values of at least `elem_size` bytes each can still be read, before
    /// anything is allocated for them.
    pub fn check_count(&self, count: u64, elem_size: usize, what: &'static str) -> Result<()> {
        let need = count.checked_mul(elem_size.max(1) as u64);
        match need {
            Some(n) if n <= self.left() as u64 => Ok(()),
            _ => Err(DecodeError::CountTooLarge {
                what,
                count,
                elem_size,
                left: self.left(),
            }),
        }
    }

    /// Read `count` values of `T` laid inline one after the other.
    pub fn vec<T: Decode>(&mut self, count: u64, what: &'static str) -> Result<Vec<T>> {
        self.check_count(count, T::MIN_SIZE, what)?;
        // `count` is now bounded by the bytes left (or by them over zero-sized elements, which
        // MIN_SIZE rules out), so this allocation is bounded by the input.
        let mut v = Vec::with_capacity(count as usize);
        for _ in 0..count {
            v.push(T::decode(self)?);
        }
        Ok(v)
    }

    /// Take `count` raw bytes as an owned vector.
    pub fn bytes(&mut self, count: u64, what: &'static str) -> Result<Vec<u8>> {
        self.check_count(count, 1, what)?;
        Ok(self.take(count as usize, what)?.to_vec())
    }

    /// A reader at `offset` from the start of the message, running to the message's end.
    pub fn at_offset(&self, offset: u32, what: &'static str) -> Result<Reader<'a>> {
        if offset as usize > self.msg.len() {
            return Err(DecodeError::BadOffset {
                what,
                offset,
                len: self.msg.len(),
            });
        }
        Ok(Reader {
            msg: self.msg,
            pos: offset as usize,
            end: self.msg.len(),
        })
    }

    /// Read a pointer (u32 offset) and the `T` it points to; `None` for a null pointer.
    pub fn ptr<T: Decode>(&mut self, what: &'static str) -> Result<Option<T>> {
        self.ptr_with(what, |r| T::decode(r))
    }

    /// Read a pointer that may not be null.
    pub fn ptr_nonnull<T: Decode>(&mut self, what: &'static str) -> Result<T> {
        self.ptr(what)?.ok_or(DecodeError::NullPointer { what })
    }

    /// Read a pointer and hand the reader at its target to `f`; `None` for null.
    pub fn ptr_with<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut Reader<'a>) -> Result<T>,
    ) -> Result<Option<T>> {
        let off = self.u32(what)?;
        if off == 0 {
            return Ok(None);
        }
        // A pointer's target starts inside the message, as the reference demarshaller requires
        // (an empty target is written as a null pointer, never as an offset at the end).
        if off as usize >= self.msg.len() {
            return Err(DecodeError::BadOffset {
                what,
                offset: off,
                len: self.msg.len(),
            });
        }
        let mut sub = self.at_offset(off, what)?;
        f(&mut sub).map(Some)
    }

    /// Fail if any byte is left.
    pub fn expect_end(&self, what: &'static str) -> Result<()> {
        match self.left() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingData { what, extra }),
        }
    }
}

/// Writes a message body and its pointer targets in the reference marshaller's layout.
pub struct Writer<'a> {
    buf: Vec<u8>,
    /// Where the body starts in `buf`: pointers are offsets from here.
    base: usize,
    /// Pointer slots (position in `buf`) and the targets still to write, in creation order.
    queue: VecDeque<(usize, &'a dyn Encode)>,
}

impl<'a> Default for Writer<'a> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Writer<'a> {
    /// A writer for a body that starts at offset 0.
    pub fn new() -> Self {
        Self::append_to(Vec::new())
    }

    /// A writer that appends a body to `buf` (which may already hold a header): pointers are
    /// relative to `buf.len()` at this call.
    pub fn append_to(buf: Vec<u8>) -> Self {
        Writer {
            base: buf.len(),
            buf,
            queue: VecDeque::new(),
        }
    }

    /// Bytes written to the body so far (pointer targets not yet included).
    pub fn len(&self) -> usize {
        self.buf.len() - self.base
    }

    /// Whether nothing was written after the base.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    pub fn i8(&mut self, v: i8) {
        self.u8(v as u8);
    }
    pub fn i16(&mut self, v: i16) {
        self.u16(v as u16);
    }
    pub fn i32(&mut self, v: i32) {
        self.u32(v as u32);
    }
    pub fn i64(&mut self, v: i64) {
        self.u64(v as u64);
    }

    /// Write a pointer to `target` (null for `None`); the target is laid out by
    /// [`finish`](Self::finish).
    pub fn ptr(&mut self, target: Option<&'a dyn Encode>) {
        let slot = self.buf.len();
        self.u32(0);
        if let Some(t) = target {
            self.queue.push_back((slot, t));
        }
    }

    /// Write every value of `items` inline.
    pub fn all<T: Encode>(&mut self, items: &'a [T]) {
        for i in items {
            i.encode(self);
        }
    }

    /// Write the queued pointer targets, fix up their pointers, and return the buffer.
    pub fn finish(mut self) -> Vec<u8> {
        while let Some((slot, target)) = self.queue.pop_front() {
            let start = self.buf.len();
            target.encode(&mut self);
            if self.buf.len() > start {
                let off = (start - self.base) as u32;
                self.buf[slot..slot + 4].copy_from_slice(&off.to_le_bytes());
            }
        }
        self.buf
    }
}

/// A sequence: every element inline.
impl<T: Encode> Encode for Vec<T> {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.all(self)
    }
}

/// Encode `v` as a complete body (with its pointer targets).
pub fn encode_to_vec<T: Encode + ?Sized>(v: &T) -> Vec<u8> {
    let mut w = Writer::new();
    v.encode(&mut w);
    w.finish()
}

/// Decode `T` from a complete body; bytes after it are allowed (as the reference demarshaller
/// allows them: pointer targets and newer fields may follow).
pub fn decode_from_slice<T: Decode>(b: &[u8]) -> Result<T> {
    T::decode(&mut Reader::new(b))
}

macro_rules! prim {
    ($($t:ty => $size:expr, $r:ident, $w:ident;)*) => {$(
        impl Encode for $t {
            fn encode<'a>(&'a self, w: &mut Writer<'a>) {
                w.$w(*self)
            }
        }
        impl Decode for $t {
            const MIN_SIZE: usize = $size;
            fn decode(r: &mut Reader<'_>) -> Result<Self> {
                r.$r(stringify!($t))
            }
        }
    )*};
}
prim! {
    u8 => 1, u8, u8;
    u16 => 2, u16, u16;
    u32 => 4, u32, u32;
    u64 => 8, u64, u64;
    i8 => 1, i8, i8;
    i16 => 2, i16, i16;
    i32 => 4, i32, i32;
    i64 => 8, i64, i64;
}

impl<const N: usize> Encode for [u8; N] {
    fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.bytes(self)
    }
}
impl<const N: usize> Decode for [u8; N] {
    const MIN_SIZE: usize = N;
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.array("byte array")
    }
}

/// Opaque bytes (image data, agent data, audio...). Its `Debug` shows the length and the first
/// bytes, so snapshots of decoded messages stay readable.
#[derive(Clone, PartialEq, Eq, Default, Hash, arbitrary::Arbitrary)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}
impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Self {
        Bytes(v.to_vec())
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 16;
        write!(f, "Bytes(len={}", self.0.len())?;
        if !self.0.is_empty() {
            write!(f, ", ")?;
            for b in self.0.iter().take(SHOWN) {
                write!(f, "{b:02x}")?;
            }
            if self.0.len() > SHOWN {
                // A short digest so snapshots still notice a change past the shown prefix.
                write!(f, "..fnv={:016x}", fnv1a(&self.0))?;
            }
        }
        write!(f, ")")
    }
}

/// FNV-1a 64: a tiny stable digest for `Debug` output and transcripts (not for security).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Define a wire enum: a Rust enum over a fixed-width integer with an `Unknown(raw)` arm, so a new
/// value is data, not an error. Generates `From` both ways, `name()`, `Encode`, `Decode` and
/// `Arbitrary` (through the raw integer, so generated values are canonical).
#[macro_export]
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $repr:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr => $vname:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this crate does not know.
            Unknown($repr),
        }

        impl $name {
            /// The raw wire value.
            pub const fn to_raw(self) -> $repr {
                match self {
                    $( $name::$variant => $value, )*
                    $name::Unknown(v) => v,
                }
            }
            /// The value for a raw wire value (`Unknown` if not known).
            #[allow(unreachable_patterns)]
            pub const fn from_raw(v: $repr) -> Self {
                match v {
                    $( x if x == $value => $name::$variant, )*
                    other => $name::Unknown(other),
                }
            }
            /// Write the value (by value: usable on temporaries).
            pub fn write(self, w: &mut $crate::wire::Writer<'_>) {
                w.bytes(&self.to_raw().to_le_bytes())
            }
            /// The name spice.proto gives this value ("unknown" if not known).
            pub const fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $vname, )*
                    $name::Unknown(_) => "unknown",
                }
            }
        }

        impl From<$repr> for $name {
            fn from(v: $repr) -> Self {
                Self::from_raw(v)
            }
        }
        impl From<$name> for $repr {
            fn from(v: $name) -> $repr {
                v.to_raw()
            }
        }
        impl $crate::wire::Encode for $name {
            fn encode<'a>(&'a self, w: &mut $crate::wire::Writer<'a>) {
                w.bytes(&self.to_raw().to_le_bytes())
            }
        }
        impl $crate::wire::Decode for $name {
            const MIN_SIZE: usize = core::mem::size_of::<$repr>();
            fn decode(r: &mut $crate::wire::Reader<'_>) -> $crate::error::Result<Self> {
                Ok(Self::from_raw(<$repr as $crate::wire::Decode>::decode(r)?))
            }
        }
        impl<'u> arbitrary::Arbitrary<'u> for $name {
            fn arbitrary(u: &mut arbitrary::Unstructured<'u>) -> arbitrary::Result<Self> {
                Ok(Self::from_raw(<$repr as arbitrary::Arbitrary>::arbitrary(u)?))
            }
        }
    };
}

/// Define a wire flags type: a transparent newtype over an integer with named bit constants.
/// Unknown bits are kept as they are. `Debug` names the known bits.
#[macro_export]
macro_rules! wire_flags {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident: $repr:ident {
            $( $(#[$fmeta:meta])* const $flag:ident = $value:expr; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default, arbitrary::Arbitrary)]
        $vis struct $name(pub $repr);

        #[allow(dead_code)]
        impl $name {
            $( $(#[$fmeta])* pub const $flag: $name = $name($value); )*
            /// No bit set.
            pub const EMPTY: $name = $name(0);
            /// Write the bits (by value: usable on temporaries).
            pub fn write(self, w: &mut $crate::wire::Writer<'_>) {
                w.bytes(&self.0.to_le_bytes())
            }
            /// The raw bits.
            pub const fn bits(self) -> $repr {
                self.0
            }
            /// Whether every bit of `other` is set.
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }
            /// Whether any bit of `other` is set.
            pub const fn intersects(self, other: $name) -> bool {
                self.0 & other.0 != 0
            }
            /// These bits with `other`'s set or cleared.
            pub const fn with(self, other: $name, on: bool) -> $name {
                if on { $name(self.0 | other.0) } else { $name(self.0 & !other.0) }
            }
            /// These bits without `other`'s.
            pub const fn without(self, other: $name) -> $name {
                $name(self.0 & !other.0)
            }
        }

        impl core::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, o: $name) -> $name {
                $name(self.0 | o.0)
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                let mut first = true;
                let mut rest = self.0;
                write!(f, "{}(", stringify!($name))?;
                $(
                    if $value != 0 && self.0 & $value == $value {
                        if !first { write!(f, " | ")?; }
                        write!(f, "{}", stringify!($flag))?;
                        first = false;
                        rest &= !$value;
                    }
                )*
                if rest != 0 {
                    if !first { write!(f, " | ")?; }
                    write!(f, "{:#x}", rest)?;
                    first = false;
                }
                if first { write!(f, "0")?; }
                write!(f, ")")
            }
        }

        impl $crate::wire::Encode for $name {
            fn encode<'a>(&'a self, w: &mut $crate::wire::Writer<'a>) {
                w.bytes(&self.0.to_le_bytes())
            }
        }
        impl $crate::wire::Decode for $name {
            const MIN_SIZE: usize = core::mem::size_of::<$repr>();
            fn decode(r: &mut $crate::wire::Reader<'_>) -> $crate::error::Result<Self> {
                Ok($name(<$repr as $crate::wire::Decode>::decode(r)?))
            }
        }
    };
}

/// Derive-like helper: `Encode` and `Decode` for a struct whose fields are all inline, written
/// in declaration order.
#[macro_export]
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $ty, )*
        }
        impl $crate::wire::Encode for $name {
            fn encode<'a>(&'a self, w: &mut $crate::wire::Writer<'a>) {
                $( $crate::wire::Encode::encode(&self.$field, w); )*
            }
        }
        impl $crate::wire::Decode for $name {
            const MIN_SIZE: usize = 0 $( + <$ty as $crate::wire::Decode>::MIN_SIZE )*;
            fn decode(r: &mut $crate::wire::Reader<'_>) -> $crate::error::Result<Self> {
                Ok($name { $( $field: <$ty as $crate::wire::Decode>::decode(r)?, )* })
            }
        }
    };
}

/// Arbitrary helpers for length-limited collections (counts on the wire are u8/u16/u32).
pub mod arb {
    use arbitrary::{Arbitrary, Result, Unstructured};

    /// A vector of at most `MAX` elements.
    pub fn vec_max<'u, T: Arbitrary<'u>, const MAX: usize>(
        u: &mut Unstructured<'u>,
    ) -> Result<Vec<T>> {
        let n = u.int_in_range(0..=MAX.min(64))?;
        (0..n).map(|_| T::arbitrary(u)).collect()
    }

    /// Bytes of at most `MAX` length.
    pub fn bytes_max<const MAX: usize>(u: &mut Unstructured<'_>) -> Result<super::Bytes> {
        let n = u.int_in_range(0..=MAX)?;
        Ok(super::Bytes(u.bytes(n.min(u.len()))?.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Two(u32, u32);
    impl Encode for Two {
        fn encode<'a>(&'a self, w: &mut Writer<'a>) {
            w.u32(self.0);
            w.u32(self.1);
        }
    }
    struct Holder {
        a: Option<Two>,
        b: Option<Two>,
        empty: Vec<u8>,
    }
    struct Raw<'b>(&'b [u8]);
    impl Encode for Raw<'_> {
        fn encode<'a>(&'a self, w: &mut Writer<'a>) {
            w.bytes(self.0)
        }
    }

    #[test]
    fn pointers_are_laid_out_in_creation_order_and_empty_targets_stay_null() {
        let h = Holder {
            a: Some(Two(1, 2)),
            b: Some(Two(3, 4)),
            empty: vec![],
        };
        let raw = Raw(&h.empty);
        let mut w = Writer::append_to(vec![0xee; 3]);
        w.u8(9);
        w.ptr(h.a.as_ref().map(|x| x as &dyn Encode));
        w.ptr(h.b.as_ref().map(|x| x as &dyn Encode));
        w.ptr(Some(&raw));
        w.ptr(None);
        let out = w.finish();
        let body = &out[3..];
        assert_eq!(body[0], 9);
        assert_eq!(u32::from_le_bytes(body[1..5].try_into().unwrap()), 17);
        assert_eq!(u32::from_le_bytes(body[5..9].try_into().unwrap()), 25);
        assert_eq!(u32::from_le_bytes(body[9..13].try_into().unwrap()), 0);
        assert_eq!(u32::from_le_bytes(body[13..17].try_into().unwrap()), 0);
        assert_eq!(
            &body[17..],
            &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0]
        );
    }

    #[test]
    fn reader_refuses_to_read_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert!(matches!(
            r.u32("x"),
            Err(DecodeError::MissingData {
                needed: 4,
                left: 3,
                ..
            })
        ));
        assert_eq!(r.u16("y").unwrap(), 0x0201);
        assert!(r.vec::<u32>(u64::MAX, "z").is_err());
        assert!(r.at_offset(4, "p").is_err());
        assert!(r.at_offset(3, "p").is_ok());
    }
}
