//! Power domain management (0x11): domain attributes, state set/get, state notifications.

use fwipc_transport_api::{Clock, Transport};

use super::agent::Scmi;
use super::common::{parse_word, Version};
use super::error::{self, Malformed};
use super::ids::{common, power, proto};
use super::wire::{AttrNameWire, Reader, ShortName};

/// PROTOCOL_ATTRIBUTES of the power protocol (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerProtocolAttributes {
    /// Domains.
    pub num_domains: u16,
    /// Statistics shared-memory address.
    pub stats_addr: u64,
    /// Its size.
    pub stats_size: u32,
}

/// Parse power PROTOCOL_ATTRIBUTES.
pub fn parse_protocol_attributes(r: &mut Reader<'_>) -> Result<PowerProtocolAttributes, Malformed> {
    let w = r.u32()?;
    Ok(PowerProtocolAttributes {
        num_domains: w as u16,
        stats_addr: r.u64_pair()?,
        stats_size: r.u32()?,
    })
}

/// POWER_DOMAIN_ATTRIBUTES reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerDomainAttributes {
    /// Flags (31 notify, 30 async, 29 sync, 27 ext. name).
    pub attributes: u32,
    /// Name.
    pub name: ShortName,
}

/// Parse POWER_DOMAIN_ATTRIBUTES.
pub fn parse_domain_attributes(r: &mut Reader<'_>) -> Result<PowerDomainAttributes, Malformed> {
    let w: AttrNameWire = r.read()?;
    Ok(PowerDomainAttributes {
        attributes: w.attributes.get(),
        name: ShortName::parse(&w.name)?,
    })
}

/// Typed view of the power domain protocol. Obtain with [`Scmi::power`].
pub struct Power<'a, T: Transport, C: Clock> {
    scmi: &'a Scmi<T, C>,
}

impl<T: Transport, C: Clock> Scmi<T, C> {
    /// The power domain protocol.
    pub fn power(&self) -> Power<'_, T, C> {
        Power { scmi: self }
    }
}

impl<T: Transport, C: Clock> Power<'_, T, C> {
    /// `*_NAME_GET`: the extended 64-byte name (when the attributes flag bit 27).
    pub fn extended_name(&self, id: u32) -> error::Result<super::wire::LongName> {
        self.scmi.extended_name(proto::POWER, power::NAME_GET, id)
    }

    /// PROTOCOL_VERSION.
    pub fn version(&self) -> error::Result<Version> {
        self.scmi.protocol_version(proto::POWER)
    }

    /// PROTOCOL_ATTRIBUTES.
    pub fn protocol_attributes(&self) -> error::Result<PowerProtocolAttributes> {
        self.scmi.cmd(
            proto::POWER,
            common::PROTOCOL_ATTRIBUTES,
            &[],
            parse_protocol_attributes,
        )
    }

    /// POWER_DOMAIN_ATTRIBUTES.
    pub fn domain_attributes(&self, domain: u32) -> error::Result<PowerDomainAttributes> {
        self.scmi.cmd(
            proto::POWER,
            power::DOMAIN_ATTRIBUTES,
            &[domain],
            parse_domain_attributes,
        )
    }

    /// POWER_STATE_SET (synchronous). Generic states: [`power::STATE_ON`], [`power::STATE_OFF`].
    pub fn state_set(&self, domain: u32, state: u32) -> error::Result<()> {
        self.scmi
            .cmd_status(proto::POWER, power::STATE_SET, &[0, domain, state])
    }

    /// POWER_STATE_GET.
    pub fn state_get(&self, domain: u32) -> error::Result<u32> {
        self.scmi
            .cmd(proto::POWER, power::STATE_GET, &[domain], parse_word)
    }

    /// POWER_STATE_NOTIFY.
    pub fn state_notify(&self, domain: u32, enable: bool) -> error::Result<()> {
        self.scmi.cmd_status(
            proto::POWER,
            power::STATE_NOTIFY,
            &[domain, u32::from(enable)],
        )
    }
}

/// Run every parser of this module over `b`.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_all(b: &[u8]) {
    let _ = parse_protocol_attributes(&mut Reader::new(b));
    let _ = parse_domain_attributes(&mut Reader::new(b));
}
