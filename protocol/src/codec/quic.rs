//! QUIC: SPICE's lossless photographic codec (SFALIC-style adaptive Golomb coding), as
//! spice-common's quic.c defines it.
//!
//! Payload layout: a sequence of little-endian u32 words, read most significant bit first.
//! Header words: magic `"QUIC"` (0x43495551), version 0, image type (1 GRAY, 2 RGB16, 3 RGB24,
//! 4 RGB32, 5 RGBA), width, height. Then every row top to bottom: each channel of a pixel is
//! predicted from its left and upper neighbours, the residual is folded to an unsigned value and
//! Golomb-coded with a code chosen by a per-context bucket model that adapts every few pixels
//! (the interval drawn from a fixed pseudo-random table); runs of repeated pixels are coded with
//! an adaptive run-length (MELCODE) coder. The stream ends padded to a word, plus one zero word.
//!
//! Owns: [`encode`], byte-identical to the reference encoder for the same pixels and row
//! order, and [`decode`]. Does not: flip bottom-up bitmaps (the server feeds rows top-down
//! visually; build the [`Pixmap`] that way), or fall back when the output is larger than the
//! input (the reference server's choice, made by its caller).

use super::{CodecError, Limits, PixelFormat, Pixmap};

const CODEC: &str = "quic";
const MAGIC: u32 = 0x4349_5551;
const VERSION: u32 = 0;
/// The reference rejects images above this many pixels (512 Mi - 1).
const REFERENCE_MAX_PIXELS: u64 = 512 * 1024 * 1024 - 1;

/// QUIC image types (the header's third word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageType {
    Gray = 1,
    Rgb16 = 2,
    Rgb24 = 3,
    Rgb32 = 4,
    Rgba = 5,
}

impl ImageType {
    fn from_u32(v: u32) -> Option<ImageType> {
        Some(match v {
            1 => ImageType::Gray,
            2 => ImageType::Rgb16,
            3 => ImageType::Rgb24,
            4 => ImageType::Rgb32,
            5 => ImageType::Rgba,
            _ => return None,
        })
    }

    /// The pixel format [`decode`] produces for this type.
    pub fn pixel_format(self) -> PixelFormat {
        match self {
            ImageType::Gray => PixelFormat::Gray8,
            ImageType::Rgb16 => PixelFormat::Rgb16,
            ImageType::Rgb24 => PixelFormat::Rgb24,
            ImageType::Rgb32 => PixelFormat::Rgb32,
            ImageType::Rgba => PixelFormat::Rgba,
        }
    }

    /// The type [`encode`] uses for a pixel format, if QUIC can carry it.
    pub fn for_format(f: PixelFormat) -> Option<ImageType> {
        Some(match f {
            PixelFormat::Gray8 => ImageType::Gray,
            PixelFormat::Rgb16 => ImageType::Rgb16,
            PixelFormat::Rgb24 => ImageType::Rgb24,
            PixelFormat::Rgb32 => ImageType::Rgb32,
            PixelFormat::Rgba => ImageType::Rgba,
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Code families: Golomb code tables for 8 and 5 bits per channel, with a codeword length limit
// of 26 bits (values that would need longer Golomb codes get a fixed-length escape code).

const MAX_CODES: usize = 8;
const MAX_BUCKETS: usize = 8;
const CODEWORD_LIMIT: u32 = 26;

struct Family {
    bpc: u32,
    mask: u32,
    /// Per code `l`: how many values get a plain Golomb-Rice codeword.
    n_gr: [u32; MAX_CODES],
    /// Per code: length of the escape codeword.
    escape_len: [u32; MAX_CODES],
    /// Per code: a 32-bit window at most this large starts with an escape codeword.
    escape_window_max: [u32; MAX_CODES],
    /// Per code: bits of the escape codeword after its zero prefix.
    escape_suffix_len: [u32; MAX_CODES],
    /// `code_len[value][l]`.
    code_len: [[u8; MAX_CODES]; 256],
    /// `code[l << 8 | value]`: the codeword (without its leading zeros) `<< 32 | length`, so
    /// the encoder writes any value with one table load and no branch.
    code: [u64; MAX_CODES * 256],
    /// A folded residual (0, 1, 2, 3, ... for 0, -1, 1, -2, ...) back to the residual mod
    /// 2^bpc (zero past 2^bpc, as the reference's tables are).
    unfold: [u8; 256],
    /// Context value (a neighbour's folded residual) to model bucket.
    bucket_of: [u8; 256],
}

const fn low_bits(n: u32) -> u32 {
    if n >= 32 {
        u32::MAX
    } else {
        (1u32 << n) - 1
    }
}

const fn bits_to_hold(values: u32) -> u32 {
    // ceil(log2(values)), values >= 1
    if values <= 1 {
        0
    } else {
        32 - (values - 1).leading_zeros()
    }
}

const fn make_family(bpc: u32) -> Family {
    let mask = low_bits(bpc);
    let mut f = Family {
        bpc,
        mask,
        n_gr: [0; MAX_CODES],
        escape_len: [0; MAX_CODES],
        escape_window_max: [0; MAX_CODES],
        escape_suffix_len: [0; MAX_CODES],
        code_len: [[0; MAX_CODES]; 256],
        code: [0; MAX_CODES * 256],
        unfold: [0; 256],
        bucket_of: [0; 256],
    };
    let mut l = 0;
    while l < bpc {
        let mut prefix = CODEWORD_LIMIT - bpc;
        if prefix > low_bits(bpc - l) {
            prefix = low_bits(bpc - l);
        }
        let n_gr = prefix << l;
        let suffix = bits_to_hold(mask + 1 - n_gr);
        f.n_gr[l as usize] = n_gr;
        f.escape_suffix_len[l as usize] = suffix;
        f.escape_len[l as usize] = prefix + suffix;
        f.escape_window_max[l as usize] = low_bits(32 - prefix);
        let mut v = 0;
        while v < 256 {
            f.code_len[v as usize][l as usize] = if v < n_gr {
                ((v >> l) + l + 1) as u8
            } else {
                (prefix + suffix) as u8
            };
            // A Golomb-Rice codeword is `v >> l` zeros, a one, then the low `l` bits of `v`;
            // the escape is `prefix` zeros, then `v - n_gr` in `suffix` bits.
            let i = (l << 8 | v) as usize;
            if v < n_gr {
                let word = (1 << l) | (v & low_bits(l));
                f.code[i] = (word as u64) << 32 | ((v >> l) + l + 1) as u64;
            } else if v <= mask {
                f.code[i] = ((v - n_gr) as u64) << 32 | (prefix + suffix) as u64;
            }
            v += 1;
        }
        l += 1;
    }
    let mut s = 0;
    while s <= mask {
        f.unfold[s as usize] = if s & 1 == 1 {
            (mask - (s >> 1)) as u8
        } else {
            (s >> 1) as u8
        };
        s += 1;
    }
    // Buckets group context values 0 | 1-2 | 3-6 | 7-14 | ... (sizes doubling); a bucket
    // that would leave fewer levels after it than its own size takes the rest.
    let levels = mask + 1;
    let mut start = 0;
    let mut size = 1;
    let mut bucket = 0u8;
    loop {
        let mut end = start + size - 1;
        if end + size >= levels {
            end = levels - 1;
        }
        let mut v = start;
        while v <= end {
            f.bucket_of[v as usize] = bucket;
            v += 1;
        }
        if end == levels - 1 {
            break;
        }
        bucket += 1;
        start = end + 1;
        size *= 2;
    }
    // Context values past the levels (only from corrupt 5-bit streams) wrap, as the reference
    // masks them.
    let mut v = levels;
    while v < 256 {
        f.bucket_of[v as usize] = f.bucket_of[(v & mask) as usize];
        v += 1;
    }
    f
}

static FAMILY_8: Family = make_family(8);
static FAMILY_5: Family = make_family(5);

// ---------------------------------------------------------------------------------------------
// Adaptation state shared by the channels coded together.

const RANDOM: [u32; 256] = [
    0x02c57542, 0x35427717, 0x2f5a2153, 0x9244f155, 0x7bd26d07, 0x354c6052, 0x57329b28, 0x2993868e,
    0x6cd8808c, 0x147b46e0, 0x99db66af, 0xe32b4cac, 0x1b671264, 0x9d433486, 0x62a4c192, 0x06089a4b,
    0x9e3dce44, 0xdaabee13, 0x222425ea, 0xa46f331d, 0xcd589250, 0x8bb81d7f, 0xc8b736b9, 0x35948d33,
    0xd7ac7fd0, 0x5fbe2803, 0x2cfbc105, 0x013dbc4e, 0x7a37820f, 0x39f88e9e, 0xedd58794, 0xc5076689,
    0xfcada5a4, 0x64c2f46d, 0xb3ba3243, 0x8974b4f9, 0x5a05aebd, 0x20afcd00, 0x39e2b008, 0x88a18a45,
    0x600bde29, 0xf3971ace, 0xf37b0a6b, 0x7041495b, 0x70b707ab, 0x06beffbb, 0x4206051f, 0xe13c4ee3,
    0xc1a78327, 0x91aa067c, 0x8295f72a, 0x732917a6, 0x1d871b4d, 0x4048f136, 0xf1840e7e, 0x6a6048c1,
    0x696cb71a, 0x7ff501c3, 0x0fc6310b, 0x57e0f83d, 0x8cc26e74, 0x11a525a2, 0x946934c7, 0x7cd888f0,
    0x8f9d8604, 0x4f86e73b, 0x04520316, 0xdeeea20c, 0xf1def496, 0x67687288, 0xf540c5b2, 0x22401484,
    0x3478658a, 0xc2385746, 0x01979c2c, 0x5dad73c8, 0x0321f58b, 0xf0fedbee, 0x92826ddf, 0x284bec73,
    0x5b1a1975, 0x03df1e11, 0x20963e01, 0xa17cf12b, 0x740d776e, 0xa7a6bf3c, 0x01b5cce4, 0x1118aa76,
    0xfc6fac0a, 0xce927e9b, 0x00bf2567, 0x806f216c, 0xbca69056, 0x795bd3e9, 0xc9dc4557, 0x8929b6c2,
    0x789d52ec, 0x3f3fbf40, 0xb9197368, 0xa38c15b5, 0xc3b44fa8, 0xca8333b0, 0xb7e8d590, 0xbe807feb,
    0xbf5f8360, 0xd99e2f5c, 0x372928e1, 0x7c757c4c, 0x0db5b154, 0xc01ede02, 0x1fc86e78, 0x1f3985be,
    0xb4805c77, 0x00c880fa, 0x974c1b12, 0x35ab0214, 0xb2dc840d, 0x5b00ae37, 0xd313b026, 0xb260969d,
    0x7f4c8879, 0x1734c4d3, 0x49068631, 0xb9f6a021, 0x6b863e6f, 0xcee5debf, 0x29f8c9fb, 0x53dd6880,
    0x72b61223, 0x1f67a9fd, 0x0a0f6993, 0x13e59119, 0x11cca12e, 0xfe6b6766, 0x16b6effc, 0x97918fc4,
    0xc2b8a563, 0x94f2f741, 0x0bfa8c9a, 0xd1537ae8, 0xc1da349c, 0x873c60ca, 0x95005b85, 0x9b5c080e,
    0xbc8abbd9, 0xe1eab1d2, 0x6dac9070, 0x4ea9ebf1, 0xe0cf30d4, 0x1ef5bd7b, 0xd161043e, 0x5d2fa2e2,
    0xff5d3cae, 0x86ed9f87, 0x2aa1daa1, 0xbd731a34, 0x9e8f4b22, 0xb1c2c67a, 0xc21758c9, 0xa182215d,
    0xccb01948, 0x8d168df7, 0x04238cfe, 0x368c3dbc, 0x0aeadca5, 0xbad21c24, 0x0a71fee5, 0x9fc5d872,
    0x54c152c6, 0xfc329483, 0x6783384a, 0xeddb3e1c, 0x65f90e30, 0x884ad098, 0xce81675a, 0x4b372f7d,
    0x68bf9a39, 0x43445f1e, 0x40f8d8cb, 0x90d5acb6, 0x4cd07282, 0x349eeb06, 0x0c9d5332, 0x520b24ef,
    0x80020447, 0x67976491, 0x2f931ca3, 0xfe9b0535, 0xfcd30220, 0x61a9e6cc, 0xa487d8d7, 0x3f7c5dd1,
    0x7d0127c5, 0x48f51d15, 0x60dea871, 0xc9a91cb7, 0x58b53bb3, 0x9d5e0b2d, 0x624a78b4, 0x30dbee1b,
    0x9bdf22e7, 0x1df5c299, 0x2d5643a7, 0xf4dd35ff, 0x03ca8fd6, 0x53b47ed8, 0x6f2c19aa, 0xfeb0c1f4,
    0x49e54438, 0x2f2577e6, 0xbf876969, 0x72440ea9, 0xfa0bafb8, 0x74f5b3a0, 0x7dd357cd, 0x89ce1358,
    0x6ef2cdda, 0x1e7767f3, 0xa6be9fdb, 0x4f5f88f8, 0xba994a3a, 0x08ca6b65, 0xe0893818, 0x9e00a16a,
    0xf42bfc8f, 0x9972eedc, 0x749c8b51, 0x32c05f5e, 0xd706805f, 0x6bfbb7cf, 0xd9210a10, 0x31a1db97,
    0x923a9559, 0x37a7a1f6, 0x059f8861, 0xca493e62, 0x65157e81, 0x8f6467dd, 0xab85ff9f, 0x9331aff2,
    0x8616b9f5, 0xedbd5695, 0xee7e29b1, 0x313ac44f, 0xb903112f, 0x432ef649, 0xdc0a36c0, 0x61cf2bba,
    0x81474925, 0xa8b6c7ad, 0xee5931de, 0xb2f8158d, 0x59fb7409, 0x2e3dfaed, 0x9af25a3f, 0xe1fed4d5,
];

/// Counter-halving thresholds by wait-mask index (model evolution 3).
const HALVING_TRIGGER: [u32; 11] = [110, 550, 900, 800, 550, 400, 350, 250, 140, 160, 140];
/// The wait mask index stops growing here.
const WAIT_INDEX_MAX: u32 = 6;
/// Pixels coded at each wait mask index before moving to the next.
const WAIT_INDEX_SPAN: u32 = 2048;
/// Run coder: expected run length 2^RUN_ORDER[state].
const RUN_ORDER: [u32; 32] = [
    0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13,
    14, 15,
];

#[derive(Debug, Clone)]
struct State {
    /// Pixels left before the next model update.
    wait: u32,
    seed: u32,
    trigger: u32,
    wait_index: u32,
    wait_index_left: u32,
    run_state: usize,
}

impl State {
    fn new() -> State {
        State {
            wait: 0,
            seed: 0xff,
            trigger: HALVING_TRIGGER[0],
            wait_index: 0,
            wait_index_left: WAIT_INDEX_SPAN,
            run_state: 0,
        }
    }

    fn random(&mut self) -> u32 {
        self.seed = self.seed.wrapping_add(1);
        RANDOM[(self.seed & 0xff) as usize]
    }

    fn next_wait_index(&mut self) {
        self.wait_index += 1;
        self.trigger = HALVING_TRIGGER[(self.wait_index as usize).min(10)];
        self.wait_index_left = WAIT_INDEX_SPAN;
    }

    fn run_bits(&self) -> u32 {
        RUN_ORDER[self.run_state]
    }

    fn run_grow(&mut self) {
        if self.run_state < RUN_ORDER.len() - 1 {
            self.run_state += 1;
        }
    }

    fn run_shrink(&mut self) {
        self.run_state = self.run_state.saturating_sub(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Bit IO.

/// The encoder's bit sink: codewords go most significant bit first into a 64-bit accumulator
/// (pending bits left-aligned, fewer than 32 between calls); every [`BitWriter::put`] stores
/// the accumulator's top word at the write position and advances past it only once it is
/// full, so there is no data-dependent branch. The buffer is grown ahead of each row
/// ([`BitWriter::reserve`]), so the store never reallocates.
#[derive(Default)]
struct BitWriter {
    words: Vec<u32>,
    /// Whole words written.
    pos: usize,
    acc: u64,
    bits: u32,
}

impl BitWriter {
    fn new(capacity_bytes: usize) -> BitWriter {
        BitWriter {
            words: Vec::with_capacity(capacity_bytes / 4 + 16),
            pos: 0,
            acc: 0,
            bits: 0,
        }
    }

    /// Make room for `bytes` more bytes of output.
    fn reserve(&mut self, bytes: usize) {
        let need = self.pos + bytes / 4 + 2;
        if self.words.len() < need {
            // Amortised growth; only the new words are zeroed.
            self.words.resize(need, 0);
        }
    }

    /// Append the low `len` bits of `value` (`1 <= len <= 32`, `value < 2^len`).
    #[inline(always)]
    fn put(&mut self, value: u32, len: u32) {
        debug_assert!((1..=32).contains(&len) && (len == 32 || value >> len == 0));
        self.acc |= (value as u64) << (64 - self.bits - len);
        self.bits += len;
        if let Some(w) = self.words.get_mut(self.pos) {
            *w = (self.acc >> 32) as u32;
        }
        // 1 if the top word is complete, else 0.
        let full = self.bits >> 5;
        self.pos += full as usize;
        self.acc <<= 32 * full;
        self.bits &= 31;
    }

    /// Append codewords from [`Family::code`], in order.
    #[inline(always)]
    fn put_codes<const N: usize>(&mut self, codes: [u64; N]) {
        // The lengths (at most 26 each) add up in the low half without carrying.
        let total = codes.iter().fold(0u64, |t, &e| t.wrapping_add(e)) as u32;
        if N > 1 && total <= 32 {
            // They fit one call: join them.
            let v = (codes.iter()).fold(0u32, |v, &e| v << (e as u32 & 31) | (e >> 32) as u32);
            self.put(v, total);
        } else {
            for e in codes {
                self.put((e >> 32) as u32, e as u32);
            }
        }
    }

    fn ones(&mut self, mut n: u32) {
        while n >= 32 {
            self.put(u32::MAX, 32);
            n -= 32;
        }
        if n > 0 {
            self.put(low_bits(n), n);
        }
    }

    /// Pad the last word with zeros and append one zero word, as the reference does.
    fn finish(mut self) -> Vec<u8> {
        self.reserve(8);
        if self.bits > 0 {
            let pad = 32 - self.bits;
            self.put(0, pad);
        }
        self.put(0, 32);
        let mut out = vec![0u8; self.pos * 4];
        for (o, w) in out.chunks_exact_mut(4).zip(&self.words) {
            o.copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    /// The next bits, most significant first: `avail` of them, more than 32 between calls.
    acc: u64,
    avail: u32,
    /// Byte offset of the next word to load into `acc`.
    next: usize,
    /// Whole words of input, in bits.
    total: u64,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Result<BitReader<'a>, CodecError> {
        let total = (data.len() / 4) as u64 * 32;
        if total < 32 {
            return Err(CodecError::Truncated { codec: CODEC });
        }
        let mut r = BitReader {
            data,
            acc: 0,
            avail: 0,
            next: 0,
            total,
        };
        r.refill();
        r.refill();
        Ok(r)
    }

    /// Load word `next` (0 past the end; [`BitReader::check`] fails before those are read).
    #[inline(always)]
    fn refill(&mut self) {
        let w = match self.data.get(self.next..self.next + 4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0,
        };
        self.acc |= (w as u64) << (32 - self.avail);
        self.avail += 32;
        self.next += 4;
    }

    /// The next 32 bits.
    #[inline(always)]
    fn window(&self) -> u32 {
        (self.acc >> 32) as u32
    }

    /// Consume `n` bits (at most 32) without [`BitReader::check`]ing.
    #[inline(always)]
    fn skip(&mut self, n: u32) {
        self.acc <<= n;
        self.avail -= n;
        if self.avail <= 32 {
            self.refill();
        }
    }

    /// Like the reference, fail once the 32-bit look-ahead window extends past the last
    /// whole word.
    #[inline(always)]
    fn check(&self) -> Result<(), CodecError> {
        let pos = self.next as u64 * 8 - self.avail as u64;
        if pos + 32 > self.total {
            return Err(CodecError::Truncated { codec: CODEC });
        }
        Ok(())
    }

    /// Consume `n` bits (at most 32) and [`BitReader::check`].
    #[inline(always)]
    fn eat(&mut self, n: u32) -> Result<(), CodecError> {
        self.skip(n);
        self.check()
    }

    fn read32(&mut self) -> Result<u32, CodecError> {
        let v = self.window();
        self.eat(32)?;
        Ok(v)
    }
}

#[inline(always)]
fn golomb_decode(fam: &Family, l: u8, bits: u32) -> (u32, u32) {
    let l = l as u32 % MAX_CODES as u32;
    let li = l as usize;
    if bits > fam.escape_window_max[li] {
        let zeros = bits.leading_zeros();
        let len = zeros + 1 + l;
        ((zeros << l) | ((bits >> (32 - len)) & ((1 << l) - 1)), len)
    } else {
        let len = fam.escape_len[li];
        let suffix = (bits >> (32 - len)) & low_bits(fam.escape_suffix_len[li]);
        (fam.n_gr[li] + suffix, len)
    }
}

// ---------------------------------------------------------------------------------------------
// A group of channels coded together (RGB share one state; alpha and gray have their own).

/// The adaptive model of a group: per channel, the best code of each context bucket and the
/// code-length counters behind it, and the adaptation state.
struct Model<const N: usize> {
    fam: &'static Family,
    st: State,
    best: [[u8; MAX_BUCKETS]; N],
    counters: [[[u32; MAX_CODES]; MAX_BUCKETS]; N],
}

impl<const N: usize> Model<N> {
    fn new(fam: &'static Family) -> Self {
        let start = (fam.bpc - 1) as u8;
        Model {
            fam,
            st: State::new(),
            best: [[start; MAX_BUCKETS]; N],
            counters: [[[0; MAX_CODES]; MAX_BUCKETS]; N],
        }
    }

    /// Account for value `val` of channel `c` coded in context `ctx`, for a family of `BPC`
    /// bits (so that the loop over its codes unrolls).
    #[inline(always)]
    fn update_bpc<const BPC: u32>(&mut self, c: usize, ctx: u8, val: u8) {
        let bpc = BPC as usize;
        let fam = self.fam;
        let bucket = fam.bucket_of[ctx as usize] as usize % MAX_BUCKETS;
        let cnt = &mut self.counters[c][bucket];
        let lens = &fam.code_len[val as usize];
        let mut best = bpc - 1;
        cnt[best] = cnt[best].wrapping_add(lens[best] as u32);
        let mut best_len = cnt[best];
        for l in (0..bpc - 1).rev() {
            cnt[l] = cnt[l].wrapping_add(lens[l] as u32);
            if cnt[l] < best_len {
                best = l;
                best_len = cnt[l];
            }
        }
        self.best[c][bucket] = best as u8;
        if best_len > self.st.trigger {
            for v in &mut cnt[..bpc] {
                *v >>= 1;
            }
        }
    }

    /// Code a run of `run` pixels: a one for every 2^RUN_ORDER[state] pixels (the state
    /// growing after each), then a zero and the rest in RUN_ORDER[state] bits.
    #[inline(always)]
    fn encode_run(&mut self, w: &mut BitWriter, mut run: u32) {
        let mut hits = 0;
        while run >= 1 << self.st.run_bits() {
            hits += 1;
            run -= 1 << self.st.run_bits();
            self.st.run_grow();
        }
        let len = self.st.run_bits() + 1;
        if hits + len <= 32 {
            w.put(low_bits(hits) << len | run, hits + len);
        } else {
            w.ones(hits);
            w.put(run, len);
        }
        self.st.run_shrink();
    }
}

/// Split a row of `width` pixels into segments at wait-mask index changes and code each with
/// `seg(group, start, end, wait mask)`.
fn for_segments<G, E>(
    g: &mut G,
    st: fn(&mut G) -> &mut State,
    width: usize,
    mut seg: impl FnMut(&mut G, usize, usize, u32) -> Result<(), E>,
) -> Result<(), E> {
    let mut pos = 0usize;
    let mut left = width as u32;
    while st(g).wait_index < WAIT_INDEX_MAX && st(g).wait_index_left <= left {
        let n = st(g).wait_index_left;
        if n > 0 {
            let mask = low_bits(st(g).wait_index);
            seg(g, pos, pos + n as usize, mask)?;
            left -= n;
            pos += n as usize;
        }
        st(g).next_wait_index();
    }
    if left > 0 {
        let mask = low_bits(st(g).wait_index);
        seg(g, pos, pos + left as usize, mask)?;
        let s = st(g);
        if s.wait_index < WAIT_INDEX_MAX {
            s.wait_index_left -= left;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The decoder's side of a group: rows of packed pixels (as the encoder's, a channel a byte,
// see [`Selector::shift`]), so that prediction works on all channels at once and run
// detection is one compare per pixel.

/// Per-byte `floor((a + b) / 2)`.
#[inline(always)]
fn avg_bytes(a: u32, b: u32) -> u32 {
    (a & b) + (((a ^ b) & 0xfefe_fefe) >> 1)
}

struct DecGroup<const N: usize, const BPC: u32> {
    s: Selector<N, BPC>,
    /// Folded residuals of the current row, as [`EncGroup::ctx`].
    ctx: Vec<u32>,
    width: usize,
}

impl<const N: usize, const BPC: u32> DecGroup<N, BPC> {
    const FAM: &'static Family = if BPC == 5 { &FAMILY_5 } else { &FAMILY_8 };

    fn new(width: usize) -> Self {
        DecGroup {
            s: Selector::new(),
            ctx: vec![0; width + 1],
            width,
        }
    }

    /// Decode a row into `cur` (`prev`: the row above, none for the first).
    fn decode_row(
        &mut self,
        r: &mut BitReader,
        prev: Option<&[u32]>,
        cur: &mut [u32],
    ) -> Result<(), CodecError> {
        self.ctx[0] = if prev.is_none() { 0 } else { self.ctx[1] };
        let width = self.width;
        for_segments(
            self,
            |g| &mut g.s.m.st,
            width,
            |g, start, end, mask| match prev {
                Some(prev) => g.decode_segment::<false>(r, prev, cur, start, end, mask),
                None => g.decode_segment::<true>(r, &[], cur, start, end, mask),
            },
        )
    }

    /// Decode pixels `start..end` of a row. `FIRST`: the image's first row (predicted from
    /// the left only, no runs; `prev` is empty).
    fn decode_segment<const FIRST: bool>(
        &mut self,
        r: &mut BitReader,
        prev: &[u32],
        cur: &mut [u32],
        start: usize,
        end: usize,
        mask: u32,
    ) -> Result<(), CodecError> {
        let fam = Self::FAM;
        let mut ctx_row = core::mem::take(&mut self.ctx);
        let ctxs = &mut ctx_row[..=end];
        let cur = &mut cur[..end];
        let mut x = start;
        let mut stop = x + self.s.m.st.wait as usize;
        let mut run_index = 0;
        let mut ctx = ctxs[x];
        let result = loop {
            if x >= end {
                self.s.m.st.wait = (stop - end) as u32;
                break Ok(());
            }
            if !FIRST
                && x > 2
                && run_index != x
                && prev[x - 1] == prev[x]
                && cur[x - 1] == cur[x - 2]
            {
                run_index = x;
                let wait = stop - x;
                let run = match decode_run(&mut self.s.m.st, r, (end - x) as u64) {
                    Ok(run) => run as usize,
                    Err(e) => break Err(e),
                };
                let v = cur[x - 1];
                cur[x..x + run].fill(v);
                x += run;
                if x == end {
                    self.s.m.st.wait = wait as u32;
                    break Ok(());
                }
                stop = x + wait;
                ctx = ctxs[x];
                continue;
            }
            let pred = match (FIRST, x) {
                (true, 0) => 0,
                (true, _) => cur[x - 1],
                (false, 0) => prev[0],
                (false, _) => avg_bytes(cur[x - 1], prev[x]),
            };
            let (mut d, mut px) = (0, 0);
            for c in 0..N {
                let sh = Selector::<N, BPC>::shift(c);
                let (v, len) = golomb_decode(fam, self.s.code(c, ctx) as u8, r.window());
                let v = v as u8;
                d |= (v as u32) << sh;
                let value = (fam.unfold[v as usize] as u32 + ((pred >> sh) & 0xff)) & fam.mask;
                px |= value << sh;
                r.skip(len);
            }
            // Checked once a pixel: past the end, the window reads zeros until then.
            if let Err(e) = r.check() {
                break Err(e);
            }
            ctxs[x + 1] = d;
            cur[x] = px;
            if x == stop {
                self.s.update(ctx, d);
                stop = x + 1 + (self.s.m.st.random() & mask) as usize;
            }
            ctx = d;
            x += 1;
        };
        self.ctx = ctx_row;
        result
    }
}

/// Decode a run length (at most `max`): ones for every 2^RUN_ORDER[state] pixels (the state
/// growing after each), a zero, then the rest in RUN_ORDER[state] bits.
#[inline(always)]
fn decode_run(st: &mut State, r: &mut BitReader, max: u64) -> Result<u64, CodecError> {
    let mut run = 0u64;
    while r.window() >> 31 == 1 {
        run += 1 << st.run_bits();
        st.run_grow();
        r.eat(1)?;
        if run > max {
            return Err(CodecError::Corrupt {
                codec: CODEC,
                what: "run past the end of the row",
            });
        }
    }
    r.eat(1)?;
    let bits = st.run_bits();
    if bits > 0 {
        run += (r.window() >> (32 - bits)) as u64;
        r.eat(bits)?;
    }
    st.run_shrink();
    if run > max {
        return Err(CodecError::Corrupt {
            codec: CODEC,
            what: "run past the end of the row",
        });
    }
    Ok(run)
}

/// Write a decoded row of packed pixels (B, G, R in bytes 0, 1, 2) in `fmt`.
fn unpack_rgb(fmt: PixelFormat, px: &[u32], row: &mut [u8]) {
    match fmt {
        PixelFormat::Rgb16 => {
            for (o, &v) in row.chunks_exact_mut(2).zip(px) {
                let v = (v & 0x1f) | (v >> 8 & 0x1f) << 5 | (v >> 16 & 0x1f) << 10;
                o.copy_from_slice(&(v as u16).to_le_bytes());
            }
        }
        PixelFormat::Rgb24 => {
            for (o, &v) in row.chunks_exact_mut(3).zip(px) {
                o.copy_from_slice(&v.to_le_bytes()[..3]);
            }
        }
        _ => {
            // The X byte (or the alpha, written next) is 0.
            for (o, &v) in row.chunks_exact_mut(4).zip(px) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// Write one-channel pixels into byte `offset` of every `bpp`-byte pixel of a row.
fn unpack_byte(px: &[u32], offset: usize, bpp: usize, row: &mut [u8]) {
    for (o, &v) in row.chunks_exact_mut(bpp).zip(px) {
        o[offset] = v as u8;
    }
}

// ---------------------------------------------------------------------------------------------
// The encoder's side of a group. A row is bytes, `P` a pixel: for RGB, 4 (B, G, R and an
// ignored byte: 32BIT and RGBA rows are read in place, others are packed so); for one channel,
// 1. A pixel read as a little-endian number has channel `c` at bit [`EncGroup::shift`]`(c)`.
// A row is coded in two passes: the first computes every pixel's folded residuals (byte by
// byte) and whether a run may start there, in loops the compiler vectorises; the second walks
// the row in order, coding residuals and runs and adapting the model, which is the only part
// that has to be sequential.

/// A group's model with, per channel and context value, the code it selects kept up to date
/// (`sel[c][ctx] == m.best[c][bucket_of[ctx]]`), so that coding needs one lookup instead of
/// two.
/// Contexts and residuals are packed a channel a byte (see [`Selector::shift`]).
struct Selector<const N: usize, const BPC: u32> {
    m: Model<N>,
    sel: [[u8; 256]; N],
    /// The context values of each bucket: `bucket_of[v] == b` for `v` in `buckets[b]`.
    buckets: [core::ops::Range<usize>; MAX_BUCKETS],
}

impl<const N: usize, const BPC: u32> Selector<N, BPC> {
    const FAM: &'static Family = if BPC == 5 { &FAMILY_5 } else { &FAMILY_8 };

    fn new() -> Self {
        let fam = Self::FAM;
        let mut buckets: [core::ops::Range<usize>; MAX_BUCKETS] = Default::default();
        for v in 0..=fam.mask as usize {
            let b = &mut buckets[fam.bucket_of[v] as usize % MAX_BUCKETS];
            if b.start == b.end {
                *b = v..v + 1;
            } else {
                b.end = v + 1;
            }
        }
        let m = Model::new(fam);
        Selector {
            sel: [[m.best[0][0]; 256]; N],
            m,
            buckets,
        }
    }

    /// Bit position of channel `c` in a packed pixel (or context, or residuals): channels
    /// are coded R, G, B (c = 0, 1, 2), stored B first.
    #[inline(always)]
    fn shift(c: usize) -> u32 {
        8 * (N - 1 - c) as u32
    }

    /// The code of channel `c` in the packed context `ctx`. (Context values past the family's
    /// levels, from corrupt 5-bit streams, wrap as in [`Family::bucket_of`].)
    #[inline(always)]
    fn code(&self, c: usize, ctx: u32) -> usize {
        let v = (ctx >> Self::shift(c)) as u8 & low_bits(BPC) as u8;
        self.sel[c][v as usize] as usize % MAX_CODES
    }

    /// Adapt the model to a pixel with residuals `val` coded in context `ctx` (packed).
    fn update(&mut self, ctx: u32, val: u32) {
        for c in 0..N {
            let sh = Self::shift(c);
            let ctx = (ctx >> sh) as u8;
            let bucket = Self::FAM.bucket_of[ctx as usize] as usize % MAX_BUCKETS;
            let old = self.m.best[c][bucket];
            self.m.update_bpc::<BPC>(c, ctx, (val >> sh) as u8);
            let new = self.m.best[c][bucket];
            if new != old {
                let range = self.buckets[bucket].clone();
                self.sel[c][range].fill(new);
            }
        }
    }
}

/// The encoder's side of a group of `N` channels of `BPC` bits (8, or 5 for RGB16).
struct EncGroup<const N: usize, const BPC: u32> {
    s: Selector<N, BPC>,
    /// Folded residuals of the current row, packed like the pixels: `ctx[x + 1]` is pixel
    /// `x`'s; `ctx[0]` is the context of pixel 0 (0 on the first row, then pixel 0's of the
    /// row above). Positions inside runs keep the values of earlier rows, as the reference's.
    ctx: Vec<u32>,
    /// The current row's folded residuals, laid out like its pixels.
    res: Vec<u8>,
    /// Whether a run may start at each pixel of the current row (x > 2, the pixel above equals
    /// its left neighbour, and the two pixels before are equal).
    runs: Vec<bool>,
    width: usize,
}

impl<const N: usize, const BPC: u32> EncGroup<N, BPC> {
    const FAM: &'static Family = if BPC == 5 { &FAMILY_5 } else { &FAMILY_8 };
    /// Bytes a pixel.
    const P: usize = if N == 1 { 1 } else { 4 };
    /// The significant bits of a pixel read as a number.
    const PIXEL_MASK: u32 = low_bits(8 * N as u32);
    /// The family's mask, of a channel byte.
    const MASK: u8 = low_bits(BPC) as u8;

    fn new(width: usize) -> Self {
        EncGroup {
            s: Selector::new(),
            ctx: vec![0; width + 1],
            res: vec![0; width * Self::P],
            runs: vec![false; width],
            width,
        }
    }

    /// Pixel `x` of a row (or of residuals), as a number (more than its significant bits).
    #[inline(always)]
    fn at(row: &[u8], x: usize) -> u32 {
        if Self::P == 1 {
            row[x] as u32
        } else {
            le32(&row[4 * x..4 * x + 4])
        }
    }

    /// Fold a residual modulo 2^BPC: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ... (the inverse of
    /// [`Family::unfold`]).
    #[inline(always)]
    fn fold(s: u8) -> u8 {
        let s = s & Self::MASK;
        let neg = 0u8.wrapping_sub(s >> (BPC - 1)) & Self::MASK;
        ((s << 1) & Self::MASK) ^ neg
    }

    /// Fill `self.res` and `self.runs` for a row: `FIRST` (the image's first row) predicts
    /// from the left only and never starts runs; `prev` is then unused.
    fn residuals<const FIRST: bool>(&mut self, prev: &[u8], cur: &[u8]) {
        let (w, p) = (self.width, Self::P);
        let n = w * p;
        let (prev, cur, res) = (&prev[..n], &cur[..n], &mut self.res[..n]);
        // Pixel 0: predicted from above (0 on the first row).
        for i in 0..p.min(n) {
            let pred = if FIRST { 0 } else { prev[i] };
            res[i] = Self::fold(cur[i].wrapping_sub(pred));
        }
        // The others from the left, or the floor of the mean of left and above. Equal-length
        // slices, so the loop has no bounds checks and vectorises.
        if n > p {
            let (c, l, u, r) = (&cur[p..], &cur[..n - p], &prev[p..], &mut res[p..]);
            for i in 0..n - p {
                let pred = if FIRST {
                    l[i]
                } else {
                    (l[i] & u[i]) + ((l[i] ^ u[i]) >> 1)
                };
                r[i] = Self::fold(c[i].wrapping_sub(pred));
            }
        }
        let runs = &mut self.runs[..w];
        runs[..w.min(3)].fill(false);
        if FIRST || w <= 3 {
            runs.fill(false);
            return;
        }
        if p == 1 {
            run_starts_1(prev, cur, runs);
        } else {
            run_starts_4(prev, cur, runs);
        }
    }

    /// Code a row (`P` bytes a pixel; `prev` is the row above, none for the first).
    fn encode_row(&mut self, w: &mut BitWriter, prev: Option<&[u8]>, cur: &[u8]) {
        // Worst case: every value an escape of at most 26 bits, plus a run code per pixel.
        w.reserve(self.width * (4 * N + 4) + 16);
        self.ctx[0] = if prev.is_none() { 0 } else { self.ctx[1] };
        match prev {
            Some(prev) => self.residuals::<false>(prev, cur),
            None => self.residuals::<true>(cur, cur),
        }
        let width = self.width;
        let _ = for_segments::<_, ()>(
            self,
            |g| &mut g.s.m.st,
            width,
            |g, start, end, mask| {
                // The writer moves in and out by value, so that its state stays in registers
                // (through a reference, every store to the output or the context row could
                // alias it).
                let bw = core::mem::take(w);
                *w = g.encode_segment(bw, cur, start, end, mask);
                Ok(())
            },
        );
    }

    /// Code pixels `start..end` of a row (`self.res` and `self.runs` describe them).
    fn encode_segment(
        &mut self,
        mut w: BitWriter,
        cur: &[u8],
        start: usize,
        end: usize,
        mask: u32,
    ) -> BitWriter {
        // The row buffers are taken out of `self` while they are used, so that they are plain
        // local slices (no reloads of their pointers after every store).
        let (res, runs) = (
            core::mem::take(&mut self.res),
            core::mem::take(&mut self.runs),
        );
        let mut ctx_row = core::mem::take(&mut self.ctx);
        let (rs, runs_at, ctxs) = (&res[..end * Self::P], &runs[..end], &mut ctx_row[..=end]);
        let mut x = start;
        let mut stop = x + self.s.m.st.wait as usize;
        let mut run_index = 0;
        let mut ctx = ctxs[x];
        // Pixels to go before the next model update when the segment ends in a run.
        let mut run_wait = None;
        while x < end {
            if runs_at[x] && run_index != x {
                run_index = x;
                let wait = stop - x;
                // The run: pixels equal to the one before it.
                let v = Self::at(cur, x - 1) & Self::PIXEL_MASK;
                let n = run_length::<N>(&cur[x * Self::P..end * Self::P], v);
                x += n;
                self.s.m.encode_run(&mut w, n as u32);
                if x == end {
                    run_wait = Some(wait);
                    break;
                }
                stop = x + wait;
                ctx = ctxs[x];
                continue;
            }
            let d = Self::at(rs, x);
            ctxs[x + 1] = d;
            let codes: [u64; N] = core::array::from_fn(|c| {
                let d = (d >> Selector::<N, BPC>::shift(c)) as u8 as usize;
                Self::FAM.code[self.s.code(c, ctx) << 8 | d]
            });
            w.put_codes(codes);
            if x == stop {
                self.s.update(ctx, d);
                stop = x + 1 + (self.s.m.st.random() & mask) as usize;
            }
            ctx = d;
            x += 1;
        }
        self.s.m.st.wait = run_wait.unwrap_or_else(|| stop - end) as u32;
        (self.res, self.runs, self.ctx) = (res, runs, ctx_row);
        w
    }
}

/// `runs[x]` for x >= 3 of a row of 1-byte pixels: `prev[x - 1] == prev[x]` and
/// `cur[x - 2] == cur[x - 1]`.
fn run_starts_1(prev: &[u8], cur: &[u8], runs: &mut [bool]) {
    let (up, up_left, left, left2) = (&prev[3..], &prev[2..], &cur[2..], &cur[1..]);
    for (i, r) in runs[3..].iter_mut().enumerate() {
        *r = up[i] == up_left[i] && left[i] == left2[i];
    }
}

/// A 4-byte pixel as a number (in one load: built from single bytes, whose top byte is then
/// masked off, the compiler loads the three others one by one and stops vectorising).
#[inline(always)]
fn le32(p: &[u8]) -> u32 {
    u32::from_le_bytes(p[..4].try_into().unwrap_or_default())
}

/// [`run_starts_1`] for 4-byte pixels whose top byte is ignored.
fn run_starts_4(prev: &[u8], cur: &[u8], runs: &mut [bool]) {
    fn px(r: &[u8]) -> impl Iterator<Item = u32> + '_ {
        r.chunks_exact(4).map(|p| le32(p) & 0x00ff_ffff)
    }
    let it = (runs[3..].iter_mut())
        .zip(px(&prev[12..]))
        .zip(px(&prev[8..]))
        .zip(px(&cur[8..]))
        .zip(px(&cur[4..]));
    for ((((r, up), up_left), left), left2) in it {
        *r = up == up_left && left == left2;
    }
}

/// How many pixels at the start of `row` (1 byte a pixel if `N` is 1, else 4 with the top
/// byte ignored) equal `v`.
#[inline]
fn run_length<const N: usize>(row: &[u8], v: u32) -> usize {
    if N == 1 {
        let v = v as u8;
        let mut n = 0;
        for block in row.chunks_exact(16) {
            if block.iter().fold(0, |d, &p| d | (p ^ v)) != 0 {
                break;
            }
            n += 16;
        }
        return n + row[n..].iter().take_while(|&&p| p == v).count();
    }
    let differs = |p: &[u8]| (le32(p) ^ v) & 0x00ff_ffff;
    // Blocks of 8 pixels compared without early exit (so the compiler vectorises); in the
    // block where the run ends, a mask of the differing pixels gives its end without a
    // branch per pixel.
    let mut n = 0;
    for block in row.chunks_exact(32) {
        if block.chunks_exact(4).fold(0, |d, p| d | differs(p)) != 0 {
            let m = (block.chunks_exact(4).enumerate())
                .fold(0u32, |m, (i, p)| m | ((differs(p) != 0) as u32) << i);
            return n + m.trailing_zeros() as usize;
        }
        n += 8;
    }
    n + row[4 * n..]
        .chunks_exact(4)
        .take_while(|p| differs(p) == 0)
        .count()
}

/// Pack a row of RGB24 or RGB16 pixels as 32BIT's (B, G, R, 0; 5 bits a channel for RGB16).
fn pack_rgb(fmt: PixelFormat, row: &[u8], out: &mut [u8]) {
    match fmt {
        PixelFormat::Rgb16 => {
            for (o, p) in out.chunks_exact_mut(4).zip(row.chunks_exact(2)) {
                let v = u16::from_le_bytes([p[0], p[1]]);
                o.copy_from_slice(&[
                    v as u8 & 0x1f,
                    (v >> 5) as u8 & 0x1f,
                    (v >> 10) as u8 & 0x1f,
                    0,
                ]);
            }
        }
        _ => {
            for (o, p) in out.chunks_exact_mut(4).zip(row.chunks_exact(3)) {
                o.copy_from_slice(&[p[0], p[1], p[2], 0]);
            }
        }
    }
}

/// Byte `offset` of every `bpp`-byte pixel of a row.
fn pack_byte(row: &[u8], offset: usize, bpp: usize, out: &mut [u8]) {
    for (o, p) in out.iter_mut().zip(row.chunks_exact(bpp)) {
        *o = p[offset];
    }
}

// ---------------------------------------------------------------------------------------------
// Public API.

/// Compress `img` as the reference `quic_encode` does, rows in `img`'s order (row 0 first).
///
/// Returns the whole QUIC payload: the bytes a SPICE_IMAGE_TYPE_QUIC image carries after its
/// descriptor and `data_size` (`data_size` is this length, always a multiple of 4).
/// Formats: 32BIT (RGB32), RGBA, 24BIT (RGB24), 16BIT (RGB16), [`PixelFormat::Gray8`] (GRAY);
/// others are [`CodecError::UnsupportedFormat`]. Padding bytes (the X of 32BIT, bit 15 of 16BIT,
/// stride slack) do not affect the output.
pub fn encode(img: &Pixmap) -> Result<Vec<u8>, CodecError> {
    let ty = ImageType::for_format(img.format()).ok_or(CodecError::UnsupportedFormat {
        codec: CODEC,
        format: img.format(),
    })?;
    let (w, h) = (img.width(), img.height());
    if w > i32::MAX as u32 || h > i32::MAX as u32 {
        return Err(CodecError::InvalidSize {
            codec: CODEC,
            width: w,
            height: h,
        });
    }
    let width = w as usize;
    let mut out = BitWriter::new(img.data().len() / 4 + 64);
    out.reserve(20);
    for word in [MAGIC, VERSION, ty as u32, w, h] {
        out.put(word, 32);
    }
    match ty {
        ImageType::Rgb32 | ImageType::Rgba | ImageType::Rgb24 | ImageType::Rgb16 => {
            let mut rgb = EncGroup::<3, 8>::new(width);
            let mut rgb16 = EncGroup::<3, 5>::new(width);
            // 32BIT and RGBA rows are coded in place; the others are packed like them.
            let packed = !matches!(ty, ImageType::Rgb32 | ImageType::Rgba);
            let (mut prev, mut cur) = (vec![0u8; width * 4], vec![0u8; width * 4]);
            let mut alpha = (ty == ImageType::Rgba).then(|| {
                (
                    EncGroup::<1, 8>::new(width),
                    vec![0u8; width],
                    vec![0u8; width],
                )
            });
            for y in 0..h {
                let row = img.row(y);
                if packed {
                    pack_rgb(img.format(), row, &mut cur);
                    let above = (y > 0).then_some(&prev[..]);
                    if ty == ImageType::Rgb16 {
                        rgb16.encode_row(&mut out, above, &cur);
                    } else {
                        rgb.encode_row(&mut out, above, &cur);
                    }
                    core::mem::swap(&mut prev, &mut cur);
                } else {
                    let above = (y > 0).then(|| img.row(y - 1));
                    rgb.encode_row(&mut out, above, row);
                }
                if let Some((g, aprev, acur)) = &mut alpha {
                    pack_byte(row, 3, 4, acur);
                    g.encode_row(&mut out, (y > 0).then_some(&aprev[..]), acur);
                    core::mem::swap(aprev, acur);
                }
            }
        }
        ImageType::Gray => {
            let mut g = EncGroup::<1, 8>::new(width);
            for y in 0..h {
                let above = (y > 0).then(|| img.row(y - 1));
                g.encode_row(&mut out, above, img.row(y));
            }
        }
    }
    Ok(out.finish())
}

/// The header of a QUIC payload: type, width, height.
pub fn read_header(data: &[u8]) -> Result<(ImageType, u32, u32), CodecError> {
    let mut r = BitReader::new(data)?;
    read_header_from(&mut r)
}

fn read_header_from(r: &mut BitReader) -> Result<(ImageType, u32, u32), CodecError> {
    let magic = r.read32()?;
    if magic != MAGIC {
        return Err(CodecError::BadMagic {
            codec: CODEC,
            magic,
        });
    }
    let version = r.read32()?;
    if version != VERSION {
        return Err(CodecError::BadVersion {
            codec: CODEC,
            version,
        });
    }
    let raw_type = r.read32()?;
    let width = r.read32()?;
    let height = r.read32()?;
    let ty = ImageType::from_u32(raw_type).ok_or(CodecError::BadImageType {
        codec: CODEC,
        value: raw_type,
    })?;
    if width == 0 || height == 0 || width > i32::MAX as u32 || height > i32::MAX as u32 {
        return Err(CodecError::InvalidSize {
            codec: CODEC,
            width,
            height,
        });
    }
    Ok((ty, width, height))
}

/// [`decode_with`] with the default [`Limits`].
pub fn decode(data: &[u8]) -> Result<Pixmap, CodecError> {
    decode_with(data, &Limits::default())
}

/// Decompress a QUIC payload: the bytes a SPICE_IMAGE_TYPE_QUIC image carries after its
/// descriptor and `data_size` (the `data_size` bytes, chunks joined). Trailing bytes that do
/// not make a whole u32 word are ignored, as the reference does.
///
/// The result has the type's natural format (see [`ImageType::pixel_format`]) with the tightest
/// stride; the X byte of RGB32 and bit 15 of RGB16 are zero. (spice-gtk renders RGB24 and RGB16
/// as 32-bit; [`Pixmap::to_rgba8`] gives the same colours.)
pub fn decode_with(data: &[u8], limits: &Limits) -> Result<Pixmap, CodecError> {
    let mut r = BitReader::new(data)?;
    let (ty, w, h) = read_header_from(&mut r)?;
    let pixels = w as u64 * h as u64;
    // Every row codes at least one pixel in one bit and a run covers at most 2^15 pixels per
    // bit, so a row of w pixels needs at least w / 2^15 bits and the first row w bits.
    let bits = r.total;
    let possible = w as u64 <= bits && h as u64 <= bits && pixels <= bits.saturating_mul(1 << 15);
    let limit = limits.max_pixels.min(REFERENCE_MAX_PIXELS);
    if pixels > limit || !possible {
        return Err(CodecError::TooLarge {
            codec: CODEC,
            width: w,
            height: h,
            limit,
        });
    }
    let fmt = ty.pixel_format();
    let mut img = Pixmap::new(w, h, fmt, limit)?;
    let width = w as usize;
    let (mut prev, mut cur) = (vec![0u32; width], vec![0u32; width]);
    match ty {
        ImageType::Rgb32 | ImageType::Rgb24 | ImageType::Rgb16 | ImageType::Rgba => {
            let mut rgb = DecGroup::<3, 8>::new(width);
            let mut rgb16 = DecGroup::<3, 5>::new(width);
            let mut alpha = (ty == ImageType::Rgba).then(|| {
                (
                    DecGroup::<1, 8>::new(width),
                    vec![0u32; width],
                    vec![0u32; width],
                )
            });
            for y in 0..h {
                let above = (y > 0).then_some(&prev[..]);
                if ty == ImageType::Rgb16 {
                    rgb16.decode_row(&mut r, above, &mut cur)?;
                } else {
                    rgb.decode_row(&mut r, above, &mut cur)?;
                }
                let row = img.row_mut(y);
                unpack_rgb(fmt, &cur, row);
                core::mem::swap(&mut prev, &mut cur);
                if let Some((g, aprev, acur)) = &mut alpha {
                    g.decode_row(&mut r, (y > 0).then_some(&aprev[..]), acur)?;
                    unpack_byte(acur, 3, 4, row);
                    core::mem::swap(aprev, acur);
                }
            }
        }
        ImageType::Gray => {
            let mut g = DecGroup::<1, 8>::new(width);
            for y in 0..h {
                g.decode_row(&mut r, (y > 0).then_some(&prev[..]), &mut cur)?;
                unpack_byte(&cur, 0, 1, img.row_mut(y));
                core::mem::swap(&mut prev, &mut cur);
            }
        }
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FORMATS: [PixelFormat; 5] = [
        PixelFormat::Rgb32,
        PixelFormat::Rgba,
        PixelFormat::Rgb24,
        PixelFormat::Rgb16,
        PixelFormat::Gray8,
    ];

    /// Deterministic test picture: a patterned area, a flat band (runs), a noisy corner.
    fn golden_image(fmt: PixelFormat, w: u32, h: u32) -> Pixmap {
        let stride = fmt.row_bytes(w) as usize + 3;
        let mut data = vec![0u8; stride * h as usize];
        for y in 0..h as usize {
            for i in 0..stride {
                let x = i;
                data[y * stride + i] = if y % 5 == 2 {
                    0x5a
                } else {
                    ((x * 37 + y * 11) ^ (x * y)) as u8
                };
            }
        }
        Pixmap::from_data(w, h, fmt, stride, data).unwrap()
    }

    /// FNV-1a of the reference encoder's output for `golden_image(fmt, 29, 11)`, obtained by
    /// running spice-common's quic.c (built locally, not part of this repository) on the same
    /// pixels.
    const GOLDEN: [(PixelFormat, u64); 5] = [
        (PixelFormat::Rgb32, 0x084d2f2db3c9e36a),
        (PixelFormat::Rgba, 0x9d5101f1232833d9),
        (PixelFormat::Rgb24, 0xc20062efd742caff),
        (PixelFormat::Rgb16, 0xb08f476c923349ec),
        (PixelFormat::Gray8, 0x77e0791539a5e9d6),
    ];

    #[test]
    fn golden_vectors_match_reference() {
        for (fmt, hash) in GOLDEN {
            let enc = encode(&golden_image(fmt, 29, 11)).unwrap();
            assert_eq!(crate::wire::fnv1a(&enc), hash, "{fmt:?}");
        }
    }

    /// Significant bits of a pixel row (QUIC drops 32BIT's X byte and 16BIT's bit 15).
    fn significant(fmt: PixelFormat, row: &[u8]) -> Vec<u8> {
        match fmt {
            PixelFormat::Rgb32 => row.chunks(4).flat_map(|p| p[..3].to_vec()).collect(),
            PixelFormat::Rgb16 => row.chunks(2).flat_map(|p| [p[0], p[1] & 0x7f]).collect(),
            _ => row.to_vec(),
        }
    }

    fn arb_image() -> impl Strategy<Value = Pixmap> {
        (
            0..FORMATS.len(),
            1u32..40,
            1u32..6,
            0usize..4,
            any::<u64>(),
            0u8..4,
        )
            .prop_map(|(f, w, h, pad, seed, kind)| {
                let fmt = FORMATS[f];
                let stride = fmt.row_bytes(w) as usize + pad;
                let mut s = seed | 1;
                let data = (0..stride * h as usize)
                    .map(|i| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        match kind {
                            0 => s as u8,
                            1 => (s % 3) as u8,
                            2 => (i / 9) as u8,
                            _ => 7,
                        }
                    })
                    .collect();
                Pixmap::from_data(w, h, fmt, stride, data).unwrap()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn encode_decode_identity(img in arb_image()) {
            let enc = encode(&img).unwrap();
            prop_assert_eq!(enc.len() % 4, 0);
            let dec = decode(&enc).unwrap();
            prop_assert_eq!((dec.width(), dec.height(), dec.format()),
                            (img.width(), img.height(), img.format()));
            for y in 0..img.height() {
                prop_assert_eq!(significant(img.format(), img.row(y)),
                                significant(img.format(), dec.row(y)));
            }
            // Decoding is exact up to padding, so re-encoding gives the same bytes.
            prop_assert_eq!(encode(&dec).unwrap(), enc);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_with(&data, &Limits { max_pixels: 1 << 16 });
        }

        #[test]
        fn decode_never_panics_on_damaged_streams(
            img in arb_image(), pos in any::<usize>(), val in any::<u8>(), cut in any::<usize>()
        ) {
            let mut enc = encode(&img).unwrap();
            // Keep the header so the damage reaches the pixel coder.
            let i = 20 + pos % (enc.len() - 20);
            enc[i] ^= val | 1;
            let _ = decode_with(&enc, &Limits { max_pixels: 1 << 16 });
            enc.truncate(cut % (enc.len() + 1));
            let _ = decode_with(&enc, &Limits { max_pixels: 1 << 16 });
        }
    }

    #[test]
    fn wide_rows_cross_wait_index_segments() {
        // 5000 pixels a row crosses every 2048-pixel wait-index step within a row.
        for fmt in FORMATS {
            let img = golden_image(fmt, 5000, 3);
            let dec = decode(&encode(&img).unwrap()).unwrap();
            for y in 0..3 {
                assert_eq!(significant(fmt, img.row(y)), significant(fmt, dec.row(y)));
            }
        }
    }

    #[test]
    fn header_errors() {
        let enc = encode(&golden_image(PixelFormat::Rgb32, 3, 2)).unwrap();
        assert_eq!(read_header(&enc).unwrap(), (ImageType::Rgb32, 3, 2));
        let mut bad = enc.clone();
        bad[0] ^= 1;
        assert!(matches!(decode(&bad), Err(CodecError::BadMagic { .. })));
        let mut bad = enc.clone();
        bad[8] = 9;
        assert!(matches!(decode(&bad), Err(CodecError::BadImageType { .. })));
        let mut bad = enc.clone();
        bad[12..16].copy_from_slice(&0x10000u32.to_le_bytes());
        bad[16..20].copy_from_slice(&0x10000u32.to_le_bytes());
        assert!(matches!(decode(&bad), Err(CodecError::TooLarge { .. })));
        assert!(matches!(
            decode(&enc[..enc.len() - 8]),
            Err(CodecError::Truncated { .. })
        ));
        let pal = Pixmap::new(2, 2, PixelFormat::Pal8, 10).unwrap();
        assert!(matches!(
            encode(&pal),
            Err(CodecError::UnsupportedFormat { .. })
        ));
    }
}
