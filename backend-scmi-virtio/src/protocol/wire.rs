//! Little-endian reading and writing of SCMI payloads: a bounds-checked reader over remote bytes,
//! a fixed-capacity parameter builder, NUL-terminated names, and the zerocopy layouts of fixed
//! reply parts (sizes asserted against docs/protocols/scmi.md §4).

use core::fmt;

use static_assertions::const_assert_eq;
use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::error::Malformed;

/// Bounds-checked cursor over bytes the platform sent. Every read either succeeds or returns
/// [`Malformed::Truncated`]; nothing indexes out of bounds.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Read from the start of `buf`.
    pub const fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet read.
    pub const fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The unread bytes.
    pub const fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Take `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.buf.len() {
            return Err(Malformed::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let (w, rest) = self
            .buf
            .split_first_chunk::<4>()
            .ok_or(Malformed::Truncated)?;
        self.buf = rest;
        Ok(u32::from_le_bytes(*w))
    }

    /// A little-endian i32.
    pub fn i32(&mut self) -> Result<i32, Malformed> {
        self.u32().map(|w| w as i32)
    }

    /// A 64-bit value sent as (low, high) words.
    pub fn u64_pair(&mut self) -> Result<u64, Malformed> {
        let lo = self.u32()?;
        let hi = self.u32()?;
        Ok(join64(lo, hi))
    }

    /// A fixed layout, copied out (no alignment requirement).
    pub fn read<T: FromBytes + KnownLayout + Immutable>(&mut self) -> Result<T, Malformed> {
        let (v, rest) = T::read_from_prefix(self.buf).map_err(|_| Malformed::Truncated)?;
        self.buf = rest;
        Ok(v)
    }
}

/// (low, high) → u64.
pub const fn join64(lo: u32, hi: u32) -> u64 {
    ((hi as u64) << 32) | lo as u64
}

/// u64 → (low, high).
pub const fn split64(v: u64) -> (u32, u32) {
    (v as u32, (v >> 32) as u32)
}

/// A NUL-terminated name from a fixed `N`-byte field (16 for short names, 64 for extended
/// ones). Construction rejects a field without a NUL.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name<const N: usize> {
    buf: [u8; N],
    len: u8,
}

/// A short (16-byte) name.
pub type ShortName = Name<16>;
/// An extended (64-byte) name.
pub type LongName = Name<64>;

impl<const N: usize> Name<N> {
    /// Parse an `N`-byte field. Bytes after the first NUL are ignored.
    pub fn parse(field: &[u8; N]) -> Result<Self, Malformed> {
        let len = field
            .iter()
            .position(|&b| b == 0)
            .ok_or(Malformed::BadName)?;
        let mut buf = [0u8; N];
        buf[..len].copy_from_slice(&field[..len]);
        Ok(Name {
            buf,
            len: u8::try_from(len).map_err(|_| Malformed::BadName)?,
        })
    }

    /// Read an `N`-byte name field from `r`.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        let b = r.bytes(N)?;
        let field: &[u8; N] = b.try_into().map_err(|_| Malformed::Truncated)?;
        Self::parse(field)
    }

    /// Build from a local string (platform side). Strings of `N` bytes or more are cut to
    /// `N - 1` bytes so the NUL always fits.
    pub fn from_str_truncated(s: &str) -> Self {
        let mut buf = [0u8; N];
        let n = s.len().min(N.saturating_sub(1));
        buf[..n].copy_from_slice(&s.as_bytes()[..n]);
        Name {
            buf,
            len: u8::try_from(n).unwrap_or(0),
        }
    }

    /// The bytes before the NUL.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The name as UTF-8, if it is.
    pub fn as_str(&self) -> Option<&str> {
        core::str::from_utf8(self.as_bytes()).ok()
    }

    /// The full NUL-padded field, as sent on the wire.
    pub const fn field(&self) -> &[u8; N] {
        &self.buf
    }
}

impl<const N: usize> Default for Name<N> {
    fn default() -> Self {
        Name {
            buf: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> PartialEq<str> for Name<N> {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> PartialEq<&str> for Name<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> fmt::Display for Name<N> {
    /// Non-printable bytes are escaped (`\xNN`); width, fill and alignment are honoured.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // At most 4 output bytes per name byte (`\xNN`); names are at most 64 bytes.
        let mut buf = [0u8; 256];
        let mut len = 0;
        for c in self.as_bytes().escape_ascii() {
            let Some(slot) = buf.get_mut(len) else { break };
            *slot = c;
            len += 1;
        }
        // `escape_ascii` yields only ASCII, so this never fails; fall back to nothing if it did.
        f.pad(core::str::from_utf8(buf.get(..len).unwrap_or_default()).unwrap_or_default())
    }
}

impl<const N: usize> fmt::Debug for Name<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Parameters of one command, little-endian words in a fixed stack buffer.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    buf: [u8; Params::MAX_BYTES],
    len: usize,
}

impl Params {
    /// Largest parameter block any typed command sends (clock RATE_SET: 4 words).
    pub const MAX_BYTES: usize = 32;

    /// No parameters.
    pub const fn new() -> Self {
        Params {
            buf: [0; Params::MAX_BYTES],
            len: 0,
        }
    }

    /// Parameters from words.
    pub fn words(ws: &[u32]) -> Self {
        let mut p = Params::new();
        for w in ws {
            p.push(*w);
        }
        p
    }

    /// Append a word. Typed commands never exceed [`Params::MAX_BYTES`]; an overflow is a bug
    /// in this crate, so it is logged and the word dropped rather than panicking.
    pub fn push(&mut self, w: u32) {
        match self.buf.get_mut(self.len..self.len + 4) {
            Some(dst) => {
                dst.copy_from_slice(&w.to_le_bytes());
                self.len += 4;
            }
            None => log::error!("scmi: parameter block overflow (bug)"),
        }
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

impl Default for Params {
    fn default() -> Self {
        Self::new()
    }
}

/// Sensor descriptor, fixed part (28 bytes): id, attributes_low, attributes_high, `name[16]`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SensorDescWire {
    /// Sensor id.
    pub id: U32,
    /// attributes_low.
    pub attributes_low: U32,
    /// attributes_high.
    pub attributes_high: U32,
    /// NUL-padded name.
    pub name: [u8; 16],
}
const_assert_eq!(core::mem::size_of::<SensorDescWire>(), 28);
const_assert_eq!(core::mem::offset_of!(SensorDescWire, name), 12);

/// Scalar extended attributes (20 bytes): resolution, min (low, high), max (low, high).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RangeAttrsWire {
    /// Resolution.
    pub resolution: U32,
    /// Minimum low word.
    pub min_low: U32,
    /// Minimum high word.
    pub min_high: U32,
    /// Maximum low word.
    pub max_low: U32,
    /// Maximum high word.
    pub max_high: U32,
}
const_assert_eq!(core::mem::size_of::<RangeAttrsWire>(), 20);

/// One reading (16 bytes, SCMI v3): value (low, high), timestamp (low, high).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ReadingWire {
    /// Value low word.
    pub value_low: U32,
    /// Value high word.
    pub value_high: U32,
    /// Timestamp low word.
    pub ts_low: U32,
    /// Timestamp high word.
    pub ts_high: U32,
}
const_assert_eq!(core::mem::size_of::<ReadingWire>(), 16);

/// Domain attributes shared by power, reset, clock and voltage (attributes word + `name[16]`).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AttrNameWire {
    /// Attribute flags.
    pub attributes: U32,
    /// NUL-padded name.
    pub name: [u8; 16],
}
const_assert_eq!(core::mem::size_of::<AttrNameWire>(), 20);

/// PERF_DOMAIN_ATTRIBUTES reply (32 bytes).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PerfDomainWire {
    /// Flags.
    pub attributes: U32,
    /// Rate limit in µs.
    pub rate_limit_us: U32,
    /// Sustained frequency in kHz.
    pub sustained_freq_khz: U32,
    /// Sustained performance level.
    pub sustained_perf_level: U32,
    /// NUL-padded name.
    pub name: [u8; 16],
}
const_assert_eq!(core::mem::size_of::<PerfDomainWire>(), 32);

/// One PERF_DESCRIBE_LEVELS entry (12 bytes).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PerfLevelWire {
    /// Performance level value.
    pub perf: U32,
    /// Power cost.
    pub power: U32,
    /// Transition latency in µs (low 16 bits; high 16 reserved).
    pub latency_us: U32,
}
const_assert_eq!(core::mem::size_of::<PerfLevelWire>(), 12);

/// RESET_DOMAIN_ATTRIBUTES reply (24 bytes).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ResetDomainWire {
    /// Flags.
    pub attributes: U32,
    /// Latency in µs (0xFFFF_FFFF unknown).
    pub latency_us: U32,
    /// NUL-padded name.
    pub name: [u8; 16],
}
const_assert_eq!(core::mem::size_of::<ResetDomainWire>(), 24);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_bounds() {
        let b = [1, 0, 0, 0, 2, 0, 0, 0, 3];
        let mut r = Reader::new(&b);
        assert_eq!(r.u64_pair(), Ok(0x2_0000_0001));
        assert_eq!(r.u32(), Err(Malformed::Truncated));
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.bytes(2), Err(Malformed::Truncated));
        assert_eq!(r.bytes(1), Ok(&[3u8][..]));
    }

    #[test]
    fn name_display_pads_and_escapes() {
        let n = ShortName::from_str_truncated("cpu");
        assert_eq!(format!("[{n:<6}]"), "[cpu   ]");
        assert_eq!(format!("[{n:>6}]"), "[   cpu]");
        assert_eq!(format!("[{n:*^7}]"), "[**cpu**]");
        let mut f = [0u8; 16];
        f[0] = b'a';
        f[1] = 0x07;
        let odd = ShortName::parse(&f).unwrap();
        assert_eq!(format!("{odd:<8}|"), "a\\x07   |");
        // The longest name, every byte escaped, still prints whole.
        let mut b = [0xffu8; 64];
        b[63] = 0;
        let long = LongName::parse(&b).unwrap();
        assert_eq!(format!("{long}").len(), 63 * 4);
    }

    #[test]
    fn names_need_a_nul() {
        let mut f = [b'a'; 16];
        assert_eq!(ShortName::parse(&f), Err(Malformed::BadName));
        f[8] = 0;
        f[9] = b'z';
        let n = ShortName::parse(&f).unwrap();
        assert_eq!(n, "aaaaaaaa");
        assert_eq!(n.as_str(), Some("aaaaaaaa"));
        let t = ShortName::from_str_truncated("0123456789abcdefXYZ");
        assert_eq!(t.as_bytes().len(), 15);
        assert_eq!(ShortName::parse(t.field()), Ok(t));
        let bin = ShortName::from_str_truncated("a\u{7f}");
        assert_eq!(std::format!("{bin}"), "a\\x7f");
    }

    #[test]
    fn params_encode_le() {
        let p = Params::words(&[1, 0x0403_0201]);
        assert_eq!(p.as_bytes(), &[1, 0, 0, 0, 1, 2, 3, 4]);
        let mut q = Params::new();
        for i in 0..20 {
            q.push(i);
        }
        assert_eq!(q.as_bytes().len(), Params::MAX_BYTES);
    }
}
