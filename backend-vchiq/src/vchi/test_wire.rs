//! `vchiq_test` wire formats (docs/protocols/vchiq.md §8): the echo server's message magics, the
//! 40-byte `test_params` CONFIG body, the 16-byte fun2 sub-test message, and the data patterns both
//! sides generate and verify.

use alloc::vec::Vec;

use static_assertions::const_assert_eq;
use zerocopy::little_endian::I32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use fwipc_transport_api::ProtocolError;

/// First word of every echo-server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum EchoMagic {
    /// Error (never sent by a correct client).
    Error = 0,
    /// No reply.
    OneWay = 1,
    /// 0-byte reply.
    Async = 2,
    /// `""` (1-byte NUL) reply.
    Sync = 3,
    /// CONFIG: a [`TestParams`] follows; `""` reply.
    Config = 4,
    /// The whole message is echoed.
    Echo = 5,
}

impl EchoMagic {
    /// Decode.
    pub const fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            0 => Self::Error,
            1 => Self::OneWay,
            2 => Self::Async,
            3 => Self::Sync,
            4 => Self::Config,
            5 => Self::Echo,
            _ => return None,
        })
    }

    /// The 4-byte message that is just this magic.
    pub fn bytes(self) -> [u8; 4] {
        (self as i32).to_le_bytes()
    }
}

/// The SYNC / CONFIG reply: the C string `""`, i.e. one NUL byte.
pub const SYNC_REPLY: &[u8] = b"\0";

/// `test_params` (10 × s32 = 40 bytes), the body of CONFIG. The magic word is the first field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct TestParams {
    /// [`EchoMagic::Config`].
    pub magic: I32,
    /// Bulk block size.
    pub blocksize: I32,
    /// Iterations (bulk blocks the server receives).
    pub iters: I32,
    /// Verify data.
    pub verify: I32,
    /// Server echoes each block back by bulk transmit.
    pub echo: I32,
    /// Alignment modulus (32 or 4096).
    pub align_size: I32,
    /// Client buffer alignment.
    pub client_align: I32,
    /// Server buffer alignment.
    pub server_align: I32,
    /// Client message quota.
    pub client_message_quota: I32,
    /// Server message quota.
    pub server_message_quota: I32,
}
const_assert_eq!(core::mem::size_of::<TestParams>(), 40);
const_assert_eq!(core::mem::offset_of!(TestParams, server_align), 28);

impl TestParams {
    /// A CONFIG for `iters` bulk blocks of `blocksize`, echoed.
    pub fn bulk(blocksize: u32, iters: u32, echo: bool) -> Self {
        let i = |v: i64| I32::new(v.clamp(i32::MIN as i64, i32::MAX as i64) as i32);
        TestParams {
            magic: I32::new(EchoMagic::Config as i32),
            blocksize: i(blocksize.into()),
            iters: i(iters.into()),
            verify: I32::new(1),
            echo: I32::new(echo as i32),
            align_size: I32::new(32),
            client_align: I32::new(0),
            server_align: I32::new(0),
            client_message_quota: I32::new(0),
            server_message_quota: I32::new(0),
        }
    }

    /// Parse a CONFIG message (the magic must say CONFIG; longer messages are accepted).
    pub fn parse(msg: &[u8]) -> Result<Self, ProtocolError> {
        let (p, _) = TestParams::read_from_prefix(msg).map_err(|_| ProtocolError::Truncated)?;
        if p.magic.get() != EchoMagic::Config as i32 {
            return Err(ProtocolError::BadHeader);
        }
        if p.blocksize.get() < 0 || p.iters.get() < 0 {
            return Err(ProtocolError::OutOfRange);
        }
        Ok(p)
    }
}

/// The fun2 sub-test message `{datalen, server_align, align, index}` (16 bytes; the old server
/// reads only the first word, so a peer must accept ≥ 4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Fun2Params {
    /// Bytes of the bulk transfer.
    pub datalen: I32,
    /// Offset of the server's receive buffer from a 32-byte boundary (< 4096).
    pub server_align: I32,
    /// The client's receive-buffer alignment.
    pub align: I32,
    /// Sub-test index.
    pub index: I32,
}
const_assert_eq!(core::mem::size_of::<Fun2Params>(), 16);

/// The largest fun2 transfer (sizes 64..8192 doubling).
pub const FUN2_MAX_LEN: i32 = 8192;
/// The guard size on each side of a fun2 buffer.
pub const GUARD: usize = 32;

impl Fun2Params {
    /// Parse; only `datalen` is required (old clients send 4 bytes), missing fields read as 0.
    pub fn parse(msg: &[u8]) -> Result<Self, ProtocolError> {
        if msg.len() < 4 {
            return Err(ProtocolError::Truncated);
        }
        let mut full = [0u8; 16];
        let n = msg.len().min(16);
        full[..n].copy_from_slice(&msg[..n]);
        let (p, _) = Fun2Params::read_from_prefix(&full).map_err(|_| ProtocolError::Truncated)?;
        if !(0..=FUN2_MAX_LEN).contains(&p.datalen.get())
            || !(0..4096).contains(&p.server_align.get())
        {
            return Err(ProtocolError::OutOfRange);
        }
        Ok(p)
    }
}

/// The fun2 payload: `byte[i] = (i % 32 == 0) ? i / 32 : i` (truncated to a byte), last byte 0.
pub fn fun2_pattern(len: usize, out: &mut [u8]) {
    for (i, b) in out[..len].iter_mut().enumerate() {
        *b = if i % 32 == 0 { (i / 32) as u8 } else { i as u8 };
    }
    if len > 0 {
        out[len - 1] = 0;
    }
}

/// The bulk-test pattern of buffer `buf_index`: little-endian words `((0x80|i) << 24) + j`, the
/// tail of a block that is not a multiple of 4 taken from the next word.
pub fn bulk_pattern(buf_index: u32, out: &mut [u8]) {
    for (j, chunk) in out.chunks_mut(4).enumerate() {
        let w = ((0x80 | buf_index) << 24).wrapping_add(j as u32);
        chunk.copy_from_slice(&w.to_le_bytes()[..chunk.len()]);
    }
}

/// The ctrl-test message of iteration `iter`: ECHO magic, then bytes `(iter + i) as u8`.
pub fn ctrl_message(iter: u32, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(len.max(4));
    m.extend_from_slice(&EchoMagic::Echo.bytes());
    m.extend((4..len.max(4)).map(|i| (iter as usize + i) as u8));
    m
}

/// First byte offset where `got` differs from `want`, or `None` (a length difference counts at
/// the shorter length).
pub fn first_mismatch(got: &[u8], want: &[u8]) -> Option<usize> {
    got.iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .or((got.len() != want.len()).then(|| got.len().min(want.len())))
}

/// Page size that fun2 alignments are taken modulo.
pub const PAGE: usize = 4096;

/// A receive buffer whose `len`-byte data window starts at an address ≡ `align` (mod 4096), as
/// vchiq_test places it, with 32-byte 0xFF guards on both sides (0xFE in the byte adjacent to
/// the data, which vchiq_test writes to pull the edge cache lines in).
pub struct GuardedBuf {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl GuardedBuf {
    /// Build one; the data window starts filled with 0x00 (never the pattern, so a transfer that
    /// writes nothing is caught). `align` is taken modulo 4096.
    pub fn new(len: usize, align: usize) -> Self {
        let align = align % PAGE;
        let mut buf = alloc::vec![0xFFu8; GUARD + 2 * PAGE + len + GUARD];
        let base = buf.as_ptr() as usize;
        // The first start ≥ GUARD whose address is ≡ align (mod 4096).
        let start = GUARD + (align + 2 * PAGE - (base + GUARD) % PAGE) % PAGE;
        buf[start..start + len].fill(0);
        buf[start - 1] = 0xFE;
        buf[start + len] = 0xFE;
        GuardedBuf { buf, start, len }
    }

    /// The data window.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The data window, mutable (the bulk receive target).
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// `Ok` if the 32-byte guards are intact; otherwise the offset (relative to the window
    /// start, negative = before it) of the first damaged guard byte.
    pub fn check_guards(&self) -> Result<(), isize> {
        let s = self.start;
        let e = s + self.len;
        for i in s - GUARD..s {
            let want = if i == s - 1 { 0xFE } else { 0xFF };
            if self.buf[i] != want {
                return Err(i as isize - s as isize);
            }
        }
        for i in e..e + GUARD {
            let want = if i == e { 0xFE } else { 0xFF };
            if self.buf[i] != want {
                return Err(i as isize - s as isize);
            }
        }
        Ok(())
    }
}

/// The 4-element message of Part B step 3 of the `'func'` script, concatenated (26 bytes).
pub const FUNC_MSG: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn config_is_40_bytes_and_stride_48() {
        let p = TestParams::bulk(1024, 10, true);
        assert_eq!(p.as_bytes().len(), 40);
        assert_eq!(&p.as_bytes()[..4], &4i32.to_le_bytes());
        // A CONFIG message takes a 48-byte stride in the slot (header 8 + 40,
        // docs/protocols/vchiq.md §10).
        assert_eq!((p.as_bytes().len() + 8).div_ceil(8) * 8, 48);
    }

    #[test]
    fn patterns_match_the_notes() {
        let mut b = [0u8; 70];
        fun2_pattern(70, &mut b);
        assert_eq!(
            (b[0], b[1], b[31], b[32], b[33], b[64], b[69]),
            (0, 1, 31, 1, 33, 2, 0)
        );
        let mut w = [0u8; 10];
        bulk_pattern(1, &mut w);
        assert_eq!(&w[..4], &0x8100_0000u32.to_le_bytes());
        assert_eq!(&w[4..8], &0x8100_0001u32.to_le_bytes());
        assert_eq!(&w[8..10], &0x8100_0002u32.to_le_bytes()[..2]);
    }

    #[test]
    fn guarded_window_has_the_requested_page_offset() {
        for align in [0, 1, 2, 16, 31, 4064, 4095] {
            let g = GuardedBuf::new(100, align);
            assert_eq!(g.data().as_ptr() as usize % PAGE, align);
            assert_eq!(g.check_guards(), Ok(()));
        }
    }

    #[test]
    fn guards_detect_edge_damage() {
        let mut g = GuardedBuf::new(10, 3);
        assert_eq!(g.check_guards(), Ok(()));
        g.data_mut().fill(7);
        assert_eq!(g.check_guards(), Ok(()));
        g.buf[g.start + 10] = 0;
        assert_eq!(g.check_guards(), Err(10));
        let mut g = GuardedBuf::new(10, 0);
        g.buf[g.start - 1] = 0;
        assert_eq!(g.check_guards(), Err(-1));
    }

    proptest! {
        #[test]
        fn test_params_round_trip(bs in 0i32..1 << 20, it in 0i32..1000, echo: bool, extra in proptest::collection::vec(any::<u8>(), 0..8)) {
            let p = TestParams::bulk(bs as u32, it as u32, echo);
            let mut m = p.as_bytes().to_vec();
            m.extend(extra);
            prop_assert_eq!(TestParams::parse(&m), Ok(p));
            prop_assert!(TestParams::parse(&m[..39]).is_err());
        }

        #[test]
        fn fun2_params_round_trip(len in 0i32..=8192, sa in 0i32..4096, a: i32, idx: i32, cut in 4usize..=16) {
            let p = Fun2Params { datalen: I32::new(len), server_align: I32::new(sa), align: I32::new(a), index: I32::new(idx) };
            prop_assert_eq!(Fun2Params::parse(p.as_bytes()), Ok(p));
            let short = Fun2Params::parse(&p.as_bytes()[..cut]).unwrap();
            prop_assert_eq!(short.datalen.get(), len);
        }

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = TestParams::parse(&bytes);
            let _ = Fun2Params::parse(&bytes);
        }
    }
}
