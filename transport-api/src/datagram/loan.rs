//! The zero-copy transmit loan.

use alloc::sync::Arc;

use crate::{Error, PoolBuf, Result};

/// Transmit buffers in memory the remote can reach (a virtqueue's driver-owned buffers), as a
/// backend loans them through [`TxLoan::shared`]. The memory is written only through this trait
/// (the backend's shared-memory accessors, never a Rust reference to it), and a loan dropped
/// unsent gives its buffer back through it.
pub trait SharedTxBufs: Send + Sync {
    /// Bytes the caller may write in each buffer.
    fn capacity(&self) -> usize;
    /// Copy `data` into buffer `idx` at `offset` (the loan checked `offset + data.len()` against
    /// [`SharedTxBufs::capacity`]).
    fn write(&self, idx: u32, offset: usize, data: &[u8]);
    /// The loan of buffer `idx` was dropped unsent: the buffer is free again.
    fn give_back(&self, idx: u32);
}

/// A loaned buffer of a [`SharedTxBufs`]; gives it back on drop unless sent.
struct SharedLoan {
    bufs: Arc<dyn SharedTxBufs>,
    idx: u32,
    len: usize,
    /// Cleared when the loan is handed to its backend for sending.
    armed: bool,
}

impl Drop for SharedLoan {
    fn drop(&mut self) {
        if self.armed {
            self.bufs.give_back(self.idx);
        }
    }
}

enum Backing {
    /// A private pool buffer.
    Pool(PoolBuf),
    /// A buffer the remote can reach.
    Shared(SharedLoan),
}

/// A transmit buffer loaned by [`crate::Datagram::loan`], written in place and consumed by
/// [`crate::Datagram::send_loan`].
///
/// Either a private pool buffer that no one else can reach while loaned (the remote sees it only
/// after the send), where [`TxLoan::with_mut`] hands out a plain `&mut [u8]`, or a backend's
/// transmit buffer in memory the remote can reach ([`TxLoan::is_shared`]: rpmsg's virtqueue
/// buffers), written only with [`TxLoan::write`]. [`TxLoan::write`] works on both. Sending moves
/// the loan into the transport: the type system, not a runtime check, stops the caller from
/// touching the buffer while the remote may read it. Dropping a loan unsent returns the buffer
/// to its pool.
#[must_use = "a loan holds a transmit buffer until sent or dropped"]
pub struct TxLoan {
    backing: Backing,
}

impl core::fmt::Debug for TxLoan {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TxLoan")
            .field("shared", &self.is_shared())
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl TxLoan {
    /// For backends: loan `buf`, which must be the only handle to its buffer (a fresh
    /// [`crate::MsgPool::alloc`]); `InvalidArgument` otherwise, so no clone can outlive the send.
    /// The length starts at 0.
    pub fn new(buf: PoolBuf) -> Result<Self> {
        if buf.users() != 1 {
            return Err(Error::InvalidArgument);
        }
        buf.set_len(0)?;
        Ok(TxLoan {
            backing: Backing::Pool(buf),
        })
    }

    /// For backends: loan buffer `idx` of `bufs`, which the backend has just taken off its free
    /// list (until [`TxLoan::into_shared`] or the drop gives it back, nobody else may use it).
    /// The length starts at 0.
    pub fn shared(bufs: Arc<dyn SharedTxBufs>, idx: u32) -> Self {
        TxLoan {
            backing: Backing::Shared(SharedLoan {
                bufs,
                idx,
                len: 0,
                armed: true,
            }),
        }
    }

    /// Whether the buffer lies in memory the remote can reach ([`TxLoan::with_mut`] then refuses
    /// with `NotSupported`; write with [`TxLoan::write`]).
    pub fn is_shared(&self) -> bool {
        matches!(self.backing, Backing::Shared(_))
    }

    /// Size of the buffer in bytes.
    pub fn capacity(&self) -> usize {
        match &self.backing {
            Backing::Pool(b) => b.capacity(),
            Backing::Shared(s) => s.bufs.capacity(),
        }
    }

    /// Bytes that will be sent.
    pub fn len(&self) -> usize {
        match &self.backing {
            Backing::Pool(b) => b.len(),
            Backing::Shared(s) => s.len,
        }
    }

    /// Whether nothing will be sent (a zero-length datagram).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Set how many bytes (from the start) will be sent; `TooLarge` beyond the capacity.
    pub fn set_len(&mut self, len: usize) -> Result<()> {
        match &mut self.backing {
            Backing::Pool(b) => b.set_len(len),
            Backing::Shared(s) if len > s.bufs.capacity() => Err(Error::TooLarge),
            Backing::Shared(s) => {
                s.len = len;
                Ok(())
            }
        }
    }

    /// Write `data` in place at `offset` (the length is not changed: see
    /// [`TxLoan::set_len`]); `TooLarge` if it does not fit the capacity.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        let end = offset.checked_add(data.len()).ok_or(Error::TooLarge)?;
        if end > self.capacity() {
            return Err(Error::TooLarge);
        }
        match &mut self.backing {
            Backing::Pool(b) => b.with_mut(|d| d[offset..end].copy_from_slice(data)),
            Backing::Shared(s) => s.bufs.write(s.idx, offset, data),
        }
        Ok(())
    }

    /// Write in place: `f` gets the whole buffer (capacity bytes) of a pool loan. A shared loan
    /// ([`TxLoan::is_shared`]) has no memory a Rust reference may point at: refused with
    /// `NotSupported` and `f` is not called; use [`TxLoan::write`].
    pub fn with_mut<R>(&mut self, f: impl FnOnce(&mut [u8]) -> R) -> Result<R> {
        match &self.backing {
            Backing::Pool(b) => Ok(b.with_mut(f)),
            Backing::Shared(_) => Err(Error::NotSupported),
        }
    }

    /// For backends, at send time: the pool buffer, with its length set; a shared loan is
    /// handed back.
    pub fn into_buf(self) -> core::result::Result<PoolBuf, TxLoan> {
        match self.backing {
            Backing::Pool(b) => Ok(b),
            backing @ Backing::Shared(_) => Err(TxLoan { backing }),
        }
    }

    /// For backends, at send time: `(index, length)` of a shared loan of `bufs`; the buffer is
    /// the backend's again (it publishes it or puts it back itself). A loan of anything else
    /// (a pool, another transport's buffers) is handed back.
    pub fn into_shared(
        self,
        bufs: &dyn SharedTxBufs,
    ) -> core::result::Result<(u32, usize), TxLoan> {
        match self.backing {
            Backing::Shared(mut s)
                if core::ptr::addr_eq(Arc::as_ptr(&s.bufs), bufs as *const dyn SharedTxBufs) =>
            {
                s.armed = false;
                Ok((s.idx, s.len))
            }
            backing => Err(TxLoan { backing }),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::MsgPool;

    #[test]
    fn only_an_unshared_buffer_can_be_loaned() {
        let p = MsgPool::new(2, 8).unwrap();
        let b = p.alloc().unwrap();
        let other = b.clone();
        assert_eq!(TxLoan::new(b).err(), Some(Error::InvalidArgument));
        drop(other);
        assert_eq!(p.free_count(), 2, "a refused loan still frees its buffer");
        let mut l = TxLoan::new(p.alloc().unwrap()).unwrap();
        l.with_mut(|d| d[..3].copy_from_slice(b"abc")).unwrap();
        l.set_len(3).unwrap();
        assert_eq!(l.set_len(9), Err(Error::TooLarge));
        let b = l.into_buf().unwrap();
        let mut out = [0u8; 8];
        assert_eq!(b.read_into(&mut out), 3);
        assert_eq!(&out[..3], b"abc");
    }

    #[test]
    fn dropping_a_loan_returns_the_buffer() {
        let p = MsgPool::new(1, 8).unwrap();
        let l = TxLoan::new(p.alloc().unwrap()).unwrap();
        assert_eq!(p.alloc().err(), Some(Error::Busy));
        drop(l);
        assert_eq!(p.free_count(), 1);
    }

    /// Shared buffers that record writes and give-backs (private memory standing in for a ring).
    struct Ring {
        data: std::sync::Mutex<[[u8; 8]; 2]>,
        given_back: std::sync::Mutex<std::vec::Vec<u32>>,
    }

    impl SharedTxBufs for Ring {
        fn capacity(&self) -> usize {
            8
        }
        fn write(&self, idx: u32, offset: usize, data: &[u8]) {
            self.data.lock().unwrap()[idx as usize][offset..offset + data.len()]
                .copy_from_slice(data);
        }
        fn give_back(&self, idx: u32) {
            self.given_back.lock().unwrap().push(idx);
        }
    }

    fn ring() -> Arc<Ring> {
        Arc::new(Ring {
            data: std::sync::Mutex::new([[0; 8]; 2]),
            given_back: std::sync::Mutex::new(std::vec::Vec::new()),
        })
    }

    #[test]
    fn a_shared_loan_is_written_through_its_buffers_and_given_back_unless_sent() {
        let r = ring();
        let mut l = TxLoan::shared(r.clone(), 1);
        assert!(l.is_shared());
        l.write(2, b"abc").unwrap();
        assert_eq!(l.write(6, b"abc"), Err(Error::TooLarge));
        assert_eq!(l.write(usize::MAX, b"a"), Err(Error::TooLarge));
        let mut called = false;
        assert_eq!(
            l.with_mut(|_| called = true),
            Err(Error::NotSupported),
            "no reference into shared memory"
        );
        assert!(!called, "the closure never sees shared memory");
        l.set_len(5).unwrap();
        assert_eq!(l.set_len(9), Err(Error::TooLarge));
        assert_eq!(&r.data.lock().unwrap()[1][..5], b"\0\0abc");
        // Not a pool loan, and not another ring's: handed back, still armed.
        let l = l.into_buf().unwrap_err();
        let other = ring();
        let l = l.into_shared(&*other).unwrap_err();
        assert_eq!(l.into_shared(&*r).unwrap(), (1, 5));
        assert!(
            r.given_back.lock().unwrap().is_empty(),
            "a sent loan is not given back"
        );
        drop(TxLoan::shared(r.clone(), 0));
        assert_eq!(*r.given_back.lock().unwrap(), [0]);
    }

    #[test]
    fn write_works_on_a_pool_loan_too() {
        let p = MsgPool::new(1, 8).unwrap();
        let mut l = TxLoan::new(p.alloc().unwrap()).unwrap();
        assert!(!l.is_shared());
        l.write(1, b"xy").unwrap();
        l.set_len(3).unwrap();
        let mut out = [0u8; 8];
        assert_eq!(l.into_buf().unwrap().read_into(&mut out), 3);
        assert_eq!(&out[..3], b"\0xy");
    }
}
