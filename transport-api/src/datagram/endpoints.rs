//! The local endpoint table with each endpoint's receive queue: what every backend's
//! [`crate::Datagram`] binds, checks handles against, and queues received datagrams on.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::Endpoint;
use crate::sync::Lock;
use crate::{Error, PoolBuf, Result};

struct Slot {
    generation: u32,
    /// The bound address; `None` when the slot is free.
    addr: Option<u32>,
    /// Received datagrams: (source address, buffer).
    queue: VecDeque<(u32, PoolBuf)>,
}

/// Fixed-capacity endpoint slots, each with a receive queue, allocated at setup. A slot's
/// generation changes at every bind, so an [`Endpoint`] handle of an unbound endpoint is refused
/// even after its slot was reused. Queue lengths need no bound of their own: every queued
/// buffer comes from the backend's fixed receive pool.
pub struct EndpointQueues {
    slots: Lock<Vec<Slot>>,
}

impl core::fmt::Debug for EndpointQueues {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EndpointQueues").finish_non_exhaustive()
    }
}

impl EndpointQueues {
    /// Room for `endpoints` endpoints, each queue with room for `depth` datagrams reserved
    /// (the receive pool's size).
    pub fn new(endpoints: usize, depth: usize) -> Self {
        EndpointQueues {
            slots: Lock::new(
                (0..endpoints)
                    .map(|_| Slot {
                        generation: 0,
                        addr: None,
                        queue: VecDeque::with_capacity(depth),
                    })
                    .collect(),
            ),
        }
    }

    /// Whether an endpoint is bound at `addr`.
    pub fn is_bound(&self, addr: u32) -> bool {
        self.slots.lock().iter().any(|s| s.addr == Some(addr))
    }

    /// Bind an endpoint at `addr`: `InvalidArgument` if one is bound there already, `Busy` when
    /// every slot is taken.
    pub fn bind(&self, addr: u32) -> Result<Endpoint> {
        let mut slots = self.slots.lock();
        if slots.iter().any(|s| s.addr == Some(addr)) {
            return Err(Error::InvalidArgument);
        }
        let (i, s) = slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.addr.is_none())
            .ok_or(Error::Busy)?;
        s.generation = s.generation.wrapping_add(1);
        s.addr = Some(addr);
        Ok(Endpoint::new(i as u32, s.generation, addr))
    }

    fn slot<'a>(slots: &'a mut [Slot], ep: &Endpoint) -> Result<&'a mut Slot> {
        match slots.get_mut(ep.index() as usize) {
            Some(s) if s.generation == ep.generation() && s.addr == Some(ep.addr()) => Ok(s),
            _ => Err(Error::InvalidArgument),
        }
    }

    /// `InvalidArgument` unless `ep` is bound (and not a stale handle).
    pub fn check(&self, ep: &Endpoint) -> Result<()> {
        Self::slot(&mut self.slots.lock(), ep).map(|_| ())
    }

    /// Unbind `ep`; its queued datagrams are dropped (their buffers go back to their pool).
    pub fn unbind(&self, ep: &Endpoint) -> Result<()> {
        let queued: Vec<_> = {
            let mut slots = self.slots.lock();
            let s = Self::slot(&mut slots, ep)?;
            s.addr = None;
            s.queue.drain(..).collect()
        };
        drop(queued);
        Ok(())
    }

    /// Queue a datagram from `src` on the endpoint bound at `dst`; gives the buffer back if none
    /// is bound there.
    pub fn push(&self, dst: u32, src: u32, buf: PoolBuf) -> core::result::Result<(), PoolBuf> {
        let mut slots = self.slots.lock();
        match slots.iter_mut().find(|s| s.addr == Some(dst)) {
            Some(s) => {
                s.queue.push_back((src, buf));
                Ok(())
            }
            None => Err(buf),
        }
    }

    /// The oldest datagram queued on `ep`; `InvalidArgument` if `ep` is not bound.
    pub fn pop(&self, ep: &Endpoint) -> Result<Option<(u32, PoolBuf)>> {
        Ok(Self::slot(&mut self.slots.lock(), ep)?.queue.pop_front())
    }

    /// Unbind everything and drop every queued datagram (shutdown).
    pub fn clear(&self) {
        let mut drained = Vec::new();
        for s in self.slots.lock().iter_mut() {
            s.addr = None;
            drained.extend(s.queue.drain(..));
        }
        drop(drained);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::MsgPool;

    #[test]
    fn bind_push_pop_unbind_and_stale_handles() {
        let p = MsgPool::new(4, 8).unwrap();
        let t = EndpointQueues::new(2, 4);
        let a = t.bind(10).unwrap();
        assert_eq!(t.bind(10).err(), Some(Error::InvalidArgument));
        let b = t.bind(11).unwrap();
        assert_eq!(t.bind(12).err(), Some(Error::Busy));
        t.push(10, 1, p.alloc().unwrap()).unwrap();
        t.push(10, 2, p.alloc().unwrap()).unwrap();
        assert!(t.push(99, 3, p.alloc().unwrap()).is_err());
        assert_eq!(t.pop(&a).unwrap().map(|m| m.0), Some(1));
        assert_eq!(t.pop(&b).unwrap().map(|m| m.0), None);
        let stale = Endpoint::new(a.index(), a.generation(), a.addr());
        t.unbind(&a).unwrap();
        assert_eq!(p.free_count(), 4, "unbind dropped the queued datagram");
        let c = t.bind(13).unwrap();
        assert_eq!(c.index(), stale.index(), "the slot is reused");
        assert_eq!(t.check(&stale), Err(Error::InvalidArgument));
        assert_eq!(t.pop(&stale).err(), Some(Error::InvalidArgument));
        t.clear();
        assert!(!t.is_bound(11) && !t.is_bound(13));
    }
}
