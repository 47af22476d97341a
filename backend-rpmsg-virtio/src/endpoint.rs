//! The local endpoint table (address allocation as Linux's `__rpmsg_create_ept`: an explicit
//! address is taken as asked, `ADDR_ANY` gets the lowest free one from
//! [`RESERVED_ADDRESSES`] up) and the table of services the
//! peer announced through the name service. Both have a fixed capacity chosen at setup: nothing
//! allocates afterwards, and a peer that announces without end fills the table and gets
//! `TableFull`, counted by the caller.

use alloc::vec::Vec;

use crate::addr::{ADDR_ANY, NS_ADDR, RESERVED_ADDRESSES, TRANSFER_ADDR_BASE};
use crate::error::RpmsgError;
use crate::frame::NsAnnounce;
use crate::name::Name;

/// One bound local endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub addr: u32,
    /// The name it was bound with (announced through the name service when asked).
    pub name: Name,
}

/// Local endpoints by address.
#[derive(Debug)]
pub struct EndpointTable {
    slots: Vec<Option<Endpoint>>,
}

impl EndpointTable {
    /// A table for at most `capacity` endpoints.
    pub fn new(capacity: usize) -> Self {
        let mut slots = Vec::with_capacity(capacity);
        slots.resize(capacity, None);
        EndpointTable { slots }
    }

    /// Bind `name` at `addr`, or at the lowest free dynamic address for [`ADDR_ANY`]. Returns
    /// the address. An explicit address may lie in the reserved range (fixed services), but not
    /// be the name service's own or in the per-transfer range (`BadAddress`).
    pub fn bind(&mut self, name: Name, addr: u32) -> Result<u32, RpmsgError> {
        let free = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(RpmsgError::TableFull)?;
        let addr = if addr == ADDR_ANY {
            self.lowest_free()?
        } else if addr >= TRANSFER_ADDR_BASE || addr == NS_ADDR {
            return Err(RpmsgError::BadAddress);
        } else if self.lookup(addr).is_some() {
            return Err(RpmsgError::AddressInUse);
        } else {
            addr
        };
        self.slots[free] = Some(Endpoint { addr, name });
        Ok(addr)
    }

    /// The lowest dynamic address not bound. The table is small (its capacity bounds the scan).
    fn lowest_free(&self) -> Result<u32, RpmsgError> {
        // Among capacity + 1 candidates at least one is free: the scan is bounded by the table.
        let last = RESERVED_ADDRESSES
            .saturating_add(self.slots.len() as u32)
            .min(TRANSFER_ADDR_BASE - 1);
        (RESERVED_ADDRESSES..=last)
            .find(|&a| self.lookup(a).is_none())
            .ok_or(RpmsgError::NoFreeAddress)
    }

    /// Unbind the endpoint at `addr`; returns it.
    pub fn unbind(&mut self, addr: u32) -> Result<Endpoint, RpmsgError> {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.is_some_and(|e| e.addr == addr))
            .ok_or(RpmsgError::NotBound)?;
        slot.take().ok_or(RpmsgError::NotBound)
    }

    /// The endpoint bound at `addr`.
    pub fn lookup(&self, addr: u32) -> Option<Endpoint> {
        self.slots
            .iter()
            .flatten()
            .find(|e| e.addr == addr)
            .copied()
    }

    /// The endpoint bound with `name`.
    pub fn by_name(&self, name: &Name) -> Option<Endpoint> {
        self.slots
            .iter()
            .flatten()
            .find(|e| e.name == *name)
            .copied()
    }

    /// Endpoints bound now.
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Whether no endpoint is bound.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Services the peer announced (name → its address), updated by name-service messages.
#[derive(Debug)]
pub struct RemoteServices {
    slots: Vec<Option<(Name, u32)>>,
}

impl RemoteServices {
    /// A table for at most `capacity` services.
    pub fn new(capacity: usize) -> Self {
        let mut slots = Vec::with_capacity(capacity);
        slots.resize(capacity, None);
        RemoteServices { slots }
    }

    /// Apply an announcement. Create adds the service (or moves it to the new address); destroy
    /// removes it only if name and address both match (a destroy for a service at another
    /// address is stale and ignored, returning `NotBound`).
    pub fn apply(&mut self, a: &NsAnnounce) -> Result<(), RpmsgError> {
        let pos = self
            .slots
            .iter()
            .position(|s| s.is_some_and(|(n, _)| n == a.name));
        if a.destroy {
            match pos {
                Some(i) if self.slots[i].is_some_and(|(_, addr)| addr == a.addr) => {
                    self.slots[i] = None;
                    Ok(())
                }
                _ => Err(RpmsgError::NotBound),
            }
        } else {
            let i = match pos {
                Some(i) => i,
                None => self
                    .slots
                    .iter()
                    .position(Option::is_none)
                    .ok_or(RpmsgError::TableFull)?,
            };
            self.slots[i] = Some((a.name, a.addr));
            Ok(())
        }
    }

    /// The address the peer announced for `name`.
    pub fn lookup(&self, name: &Name) -> Option<u32> {
        self.slots
            .iter()
            .flatten()
            .find(|(n, _)| n == name)
            .map(|&(_, a)| a)
    }

    /// Whether the peer announced a service at `addr`.
    pub fn has_addr(&self, addr: u32) -> bool {
        self.slots.iter().flatten().any(|&(_, a)| a == addr)
    }

    /// Forget every service (the peer was reset).
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn any_allocates_lowest_free_dynamic_address() {
        let mut t = EndpointTable::new(4);
        assert_eq!(t.bind(n("a"), ADDR_ANY), Ok(1024));
        assert_eq!(t.bind(n("b"), ADDR_ANY), Ok(1025));
        assert_eq!(t.unbind(1024).map(|e| e.name), Ok(n("a")));
        assert_eq!(t.bind(n("c"), ADDR_ANY), Ok(1024));
        assert_eq!(t.lookup(1025).map(|e| e.name), Some(n("b")));
        assert_eq!(t.by_name(&n("c")).map(|e| e.addr), Some(1024));
    }

    #[test]
    fn explicit_addresses_checked() {
        let mut t = EndpointTable::new(3);
        assert_eq!(t.bind(n("fixed"), 60), Ok(60));
        assert_eq!(t.bind(n("again"), 60), Err(RpmsgError::AddressInUse));
        assert_eq!(t.bind(n("ns"), NS_ADDR), Err(RpmsgError::BadAddress));
        assert_eq!(
            t.bind(n("xfer"), TRANSFER_ADDR_BASE),
            Err(RpmsgError::BadAddress)
        );
        assert_eq!(t.unbind(61), Err(RpmsgError::NotBound));
        // Explicit dynamic addresses are skipped by allocation.
        assert_eq!(t.bind(n("x"), 1024), Ok(1024));
        assert_eq!(t.bind(n("y"), ADDR_ANY), Ok(1025));
        assert_eq!(t.bind(n("z"), ADDR_ANY), Err(RpmsgError::TableFull));
        assert_eq!(t.len(), 3);
    }

    fn ann(name: &str, addr: u32, destroy: bool) -> NsAnnounce {
        NsAnnounce {
            name: n(name),
            addr,
            destroy,
        }
    }

    #[test]
    fn services_create_move_destroy() {
        let mut s = RemoteServices::new(2);
        assert_eq!(s.apply(&ann("echo", 1024, false)), Ok(()));
        assert_eq!(s.lookup(&n("echo")), Some(1024));
        // Re-announce at a new address moves it.
        assert_eq!(s.apply(&ann("echo", 1030, false)), Ok(()));
        assert_eq!(s.lookup(&n("echo")), Some(1030));
        assert!(!s.has_addr(1024));
        // A stale destroy (old address) is refused and changes nothing.
        assert_eq!(s.apply(&ann("echo", 1024, true)), Err(RpmsgError::NotBound));
        assert_eq!(s.lookup(&n("echo")), Some(1030));
        assert_eq!(s.apply(&ann("echo", 1030, true)), Ok(()));
        assert_eq!(s.lookup(&n("echo")), None);
    }

    #[test]
    fn services_table_is_bounded() {
        let mut s = RemoteServices::new(2);
        assert_eq!(s.apply(&ann("a", 1, false)), Ok(()));
        assert_eq!(s.apply(&ann("b", 2, false)), Ok(()));
        assert_eq!(s.apply(&ann("c", 3, false)), Err(RpmsgError::TableFull));
        s.clear();
        assert_eq!(s.apply(&ann("c", 3, false)), Ok(()));
    }
}
