//! Reading payload metadata (docs/protocols/fastrpc.md §5), as the DSP does on receipt and as the
//! AP does after the answer (the DSP may have rewritten lengths and the fd list). Every accessor is
//! bounds-checked and returns an error instead of panicking: the bytes are remote-writable. The
//! accessors only the DSP side needs (argument descriptors, dma handles, invoke bufs, pages) are
//! compiled for the simulator (feature `sim`), the fuzz entry points and tests.

use zerocopy::FromBytes;

use fwipc_transport_api::ProtocolError;

use crate::wire::scalars::Scalars;
#[cfg(any(test, feature = "sim", feature = "fuzzing"))]
use crate::wire::{InvokeBuf, PhyPage, RemoteBuf, RemoteDma};
use crate::wire::{MetaOffsets, MAX_FDLIST};

/// A checked view of a payload's metadata for scalars `sc`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MetaView<'a> {
    /// The argument count bounds the per-argument accessors, which only the DSP side reads.
    #[cfg_attr(not(any(test, feature = "sim", feature = "fuzzing")), allow(dead_code))]
    sc: Scalars,
    bytes: &'a [u8],
    off: MetaOffsets,
}

fn read<T: FromBytes>(bytes: &[u8], at: usize) -> Result<T, ProtocolError> {
    let tail = bytes.get(at..).ok_or(ProtocolError::Truncated)?;
    T::read_from_prefix(tail)
        .map(|(v, _)| v)
        .map_err(|_| ProtocolError::Truncated)
}

impl<'a> MetaView<'a> {
    /// `bytes` must hold at least `metalen(sc.len())` bytes.
    pub(crate) fn parse(sc: Scalars, bytes: &'a [u8]) -> Result<Self, ProtocolError> {
        let off = MetaOffsets::new(sc.len());
        if bytes.len() < off.end {
            return Err(ProtocolError::Truncated);
        }
        Ok(MetaView { sc, bytes, off })
    }

    #[cfg(any(test, feature = "sim", feature = "fuzzing"))]
    fn slot(&self, i: usize) -> Result<usize, ProtocolError> {
        if i < self.sc.len() {
            Ok(i)
        } else {
            Err(ProtocolError::OutOfRange)
        }
    }

    /// Remote arg `i` in buffer form.
    #[cfg(any(test, feature = "sim", feature = "fuzzing"))]
    pub(crate) fn rpra(&self, i: usize) -> Result<RemoteBuf, ProtocolError> {
        let i = self.slot(i)?;
        read(self.bytes, self.off.rpra + 16 * i)
    }

    /// Remote arg `i` in dma-handle form.
    #[cfg(any(test, feature = "sim", feature = "fuzzing"))]
    pub(crate) fn dma(&self, i: usize) -> Result<RemoteDma, ProtocolError> {
        let i = self.slot(i)?;
        read(self.bytes, self.off.rpra + 16 * i)
    }

    /// Invoke buf `i`.
    #[cfg(any(test, feature = "sim", feature = "fuzzing"))]
    pub(crate) fn list(&self, i: usize) -> Result<InvokeBuf, ProtocolError> {
        let i = self.slot(i)?;
        read(self.bytes, self.off.list + 8 * i)
    }

    /// Page entry `i`.
    #[cfg(any(test, feature = "sim", feature = "fuzzing"))]
    pub(crate) fn page(&self, i: usize) -> Result<PhyPage, ProtocolError> {
        let i = self.slot(i)?;
        read(self.bytes, self.off.pages + 16 * i)
    }

    /// The page entry a slot's invoke buf points at, checking `num` and `pgidx` are in range.
    #[cfg(any(test, feature = "sim", feature = "fuzzing"))]
    pub(crate) fn page_of(&self, i: usize) -> Result<Option<PhyPage>, ProtocolError> {
        let l = self.list(i)?;
        match l.num.get() {
            0 => Ok(None),
            1 => {
                let idx = l.pgidx.get() as usize;
                if idx >= self.sc.len() {
                    return Err(ProtocolError::OutOfRange);
                }
                self.page(idx).map(Some)
            }
            _ => Err(ProtocolError::OutOfRange),
        }
    }

    /// fd list entry `k` (< 16).
    pub(crate) fn fd(&self, k: usize) -> Result<u64, ProtocolError> {
        if k >= MAX_FDLIST {
            return Err(ProtocolError::OutOfRange);
        }
        read(self.bytes, self.off.fdlist + 8 * k)
    }

    /// The fd list up to its 0 terminator, capped at 16 entries; calls `f` per fd.
    pub(crate) fn for_each_fd(&self, mut f: impl FnMut(u64)) -> Result<usize, ProtocolError> {
        for k in 0..MAX_FDLIST {
            let fd = self.fd(k)?;
            if fd == 0 {
                return Ok(k);
            }
            f(fd);
        }
        Ok(MAX_FDLIST)
    }
}
