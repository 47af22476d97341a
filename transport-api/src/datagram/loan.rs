//! The zero-copy transmit loan.

use crate::{Error, PoolBuf, Result};

/// A transmit buffer loaned by [`crate::Datagram::loan`], written in place and consumed by
/// [`crate::Datagram::send_loan`].
///
/// The buffer is a private pool buffer that no one else can reach while loaned (the remote sees
/// it only after the send), so [`TxLoan::with_mut`] hands out a plain `&mut [u8]`. Sending moves
/// the loan into the transport: the type system, not a runtime check, stops the caller from
/// touching the buffer while the remote may read it. Dropping a loan unsent returns the buffer
/// to its pool.
#[must_use = "a loan holds a transmit buffer until sent or dropped"]
#[derive(Debug)]
pub struct TxLoan {
    buf: PoolBuf,
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
        Ok(TxLoan { buf })
    }

    /// Size of the buffer in bytes.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes that will be sent.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing will be sent (a zero-length datagram).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Set how many bytes (from the start) will be sent; `TooLarge` beyond the capacity.
    pub fn set_len(&mut self, len: usize) -> Result<()> {
        self.buf.set_len(len)
    }

    /// Write in place: `f` gets the whole buffer (capacity bytes).
    pub fn with_mut<R>(&mut self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        self.buf.with_mut(f)
    }

    /// For backends, at send time: the buffer, with its length set.
    pub fn into_buf(self) -> PoolBuf {
        self.buf
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
        l.with_mut(|d| d[..3].copy_from_slice(b"abc"));
        l.set_len(3).unwrap();
        assert_eq!(l.set_len(9), Err(Error::TooLarge));
        let b = l.into_buf();
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
}
