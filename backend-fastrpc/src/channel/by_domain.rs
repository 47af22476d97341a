//! The set of channels of one system, one per DSP domain, looked up by a (possibly
//! user-supplied) domain id with the range checked (`>= FASTRPC_DEV_MAX` ⇒ `-ECHRNG`).

use crate::channel::Channel;
use crate::domain::{Domain, DOMAIN_COUNT};
use crate::error::{FastRpcError, Result};

/// One optional channel per domain.
#[derive(Default)]
pub struct Channels {
    chans: [Option<Channel>; DOMAIN_COUNT as usize],
}

impl Channels {
    /// No channels yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `ch` for its domain; `InvalidArgument` if that domain already has one (probe
    /// of a second node with the same label).
    pub fn add(&mut self, ch: Channel) -> Result<()> {
        let slot = &mut self.chans[ch.domain().id() as usize];
        if slot.is_some() {
            return Err(FastRpcError::InvalidArgument);
        }
        *slot = Some(ch);
        Ok(())
    }

    /// The channel of domain `id`: `BadDomain` out of range, `ChannelDown` if the domain has no
    /// channel (not probed, or removed).
    pub fn get(&self, id: u32) -> Result<&Channel> {
        let d = Domain::from_id(id)?;
        self.chans[d.id() as usize]
            .as_ref()
            .ok_or(FastRpcError::ChannelDown)
    }

    /// Remove the channel of `domain` (rpmsg remove); returns it.
    pub fn remove(&mut self, domain: Domain) -> Option<Channel> {
        self.chans[domain.id() as usize].take()
    }
}
