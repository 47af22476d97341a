//! The 32-bit scalars word `sc` (docs/protocols/fastrpc.md §3): attr 31..29, method 28..24,
//! in-buffers 23..16, out-buffers 15..8, in-handles 7..4, out-handles 3..0.

use crate::error::{FastRpcError, Result};

/// Largest method index that fits the 5-bit field; generated code sends methods ≥ 31 as 31 with
/// the real id in the first u32 of in-buffer 0 (docs/protocols/fastrpc.md §9).
pub const METHOD_ESCAPE: u32 = 31;
/// Largest in/out buffer count.
pub const MAX_BUFS: u32 = 255;
/// Largest in/out handle count.
pub const MAX_HANDLES: u32 = 15;

/// A scalars word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scalars(pub u32);

impl Scalars {
    /// `REMOTE_SCALARS_MAKEX`: masks each field and ORs it into place (out-of-range values are
    /// truncated, as in C). Prefer [`Scalars::new`], which refuses them.
    pub const fn makex(attr: u32, method: u32, ins: u32, outs: u32, inh: u32, outh: u32) -> Self {
        Scalars(
            ((attr & 0x7) << 29)
                | ((method & 0x1f) << 24)
                | ((ins & 0xff) << 16)
                | ((outs & 0xff) << 8)
                | ((inh & 0x0f) << 4)
                | (outh & 0x0f),
        )
    }

    /// Checked constructor with attr 0: `InvalidArgument` if any field exceeds its width.
    pub fn new(method: u32, ins: u32, outs: u32, inh: u32, outh: u32) -> Result<Self> {
        if method > METHOD_ESCAPE
            || ins > MAX_BUFS
            || outs > MAX_BUFS
            || inh > MAX_HANDLES
            || outh > MAX_HANDLES
        {
            return Err(FastRpcError::InvalidArgument);
        }
        Ok(Self::makex(0, method, ins, outs, inh, outh))
    }

    /// `REMOTE_SCALARS_METHOD_ATTR`.
    pub const fn attr(self) -> u32 {
        (self.0 >> 29) & 0x7
    }
    /// `REMOTE_SCALARS_METHOD`.
    pub const fn method(self) -> u32 {
        (self.0 >> 24) & 0x1f
    }
    /// `REMOTE_SCALARS_INBUFS`.
    pub const fn inbufs(self) -> usize {
        ((self.0 >> 16) & 0xff) as usize
    }
    /// `REMOTE_SCALARS_OUTBUFS`.
    pub const fn outbufs(self) -> usize {
        ((self.0 >> 8) & 0xff) as usize
    }
    /// `REMOTE_SCALARS_INHANDLES`.
    pub const fn inhandles(self) -> usize {
        ((self.0 >> 4) & 0x0f) as usize
    }
    /// `REMOTE_SCALARS_OUTHANDLES`.
    pub const fn outhandles(self) -> usize {
        (self.0 & 0x0f) as usize
    }
    /// In + out buffers (`nbufs` in the driver).
    pub const fn nbufs(self) -> usize {
        self.inbufs() + self.outbufs()
    }
    /// `REMOTE_SCALARS_LENGTH`: number of argument slots.
    pub const fn len(self) -> usize {
        self.nbufs() + self.inhandles() + self.outhandles()
    }
    /// Whether the call has no argument at all.
    pub const fn is_empty(self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values_from_the_notes() {
        // §7: attach 0x00010000, mmap 0x04020100, CREATE 0x06040000, MEM_MAP 0x0A030100.
        assert_eq!(Scalars::makex(0, 0, 1, 0, 0, 0).0, 0x0001_0000);
        assert_eq!(Scalars::makex(0, 4, 2, 1, 0, 0).0, 0x0402_0100);
        assert_eq!(Scalars::makex(0, 6, 4, 0, 0, 0).0, 0x0604_0000);
        assert_eq!(Scalars::makex(0, 10, 3, 1, 0, 0).0, 0x0A03_0100);
        // §9: adsp_listener_next2 = MAKEX(0,4,2,2,0,0).
        assert_eq!(Scalars::makex(0, 4, 2, 2, 0, 0).0, 0x0402_0200);
        // §5 worked example.
        let sc = Scalars::new(5, 2, 1, 1, 0).unwrap();
        assert_eq!(sc.0, 0x0502_0110);
        assert_eq!((sc.len(), sc.nbufs()), (4, 3));
    }

    #[test]
    fn checked_constructor_refuses_overflow() {
        assert!(Scalars::new(32, 0, 0, 0, 0).is_err());
        assert!(Scalars::new(0, 256, 0, 0, 0).is_err());
        assert!(Scalars::new(0, 0, 0, 16, 0).is_err());
        assert!(Scalars::new(0, 0, 0, 0, 16).is_err());
        assert!(Scalars::new(31, 255, 255, 15, 15).is_ok());
    }

    proptest! {
        #[test]
        fn roundtrip(attr in 0u32..8, m in 0u32..32, i in 0u32..256, o in 0u32..256,
                     ih in 0u32..16, oh in 0u32..16) {
            let sc = Scalars::makex(attr, m, i, o, ih, oh);
            prop_assert_eq!(sc.attr(), attr);
            prop_assert_eq!(sc.method(), m);
            prop_assert_eq!(sc.inbufs() as u32, i);
            prop_assert_eq!(sc.outbufs() as u32, o);
            prop_assert_eq!(sc.inhandles() as u32, ih);
            prop_assert_eq!(sc.outhandles() as u32, oh);
            prop_assert_eq!(sc.len() as u32, i + o + ih + oh);
        }

        #[test]
        fn decode_encode_is_identity(w in any::<u32>()) {
            let sc = Scalars(w);
            let back = Scalars::makex(sc.attr(), sc.method(), sc.inbufs() as u32,
                sc.outbufs() as u32, sc.inhandles() as u32, sc.outhandles() as u32);
            prop_assert_eq!(back, sc);
        }
    }
}
