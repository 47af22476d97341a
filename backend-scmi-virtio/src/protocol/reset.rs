//! Reset domain management (0x16): domain attributes, reset (assert, de-assert, autonomous,
//! asynchronous with a delayed response), notifications.

use fwipc_transport_api::{Clock, Transport};

use super::agent::Scmi;
use super::common::Version;
use super::error::{self, Malformed};
use super::ids::{common, proto, reset};
use super::wire::{Reader, ResetDomainWire, ShortName};

/// RESET_DOMAIN_ATTRIBUTES reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetDomainAttributes {
    /// Flags (31 async, 30 notify, 29 ext. name).
    pub attributes: u32,
    /// Latency in µs (`u32::MAX` = unknown).
    pub latency_us: u32,
    /// Name.
    pub name: ShortName,
}

impl ResetDomainAttributes {
    /// Supports asynchronous resets.
    pub const fn async_reset(&self) -> bool {
        self.attributes & (1 << 31) != 0
    }
}

/// Parse RESET_DOMAIN_ATTRIBUTES.
pub fn parse_domain_attributes(r: &mut Reader<'_>) -> Result<ResetDomainAttributes, Malformed> {
    let w: ResetDomainWire = r.read()?;
    Ok(ResetDomainAttributes {
        attributes: w.attributes.get(),
        latency_us: w.latency_us.get(),
        name: ShortName::parse(&w.name)?,
    })
}

/// Parse the number of domains (PROTOCOL_ATTRIBUTES bits 15:0).
pub fn parse_num_domains(r: &mut Reader<'_>) -> Result<u16, Malformed> {
    r.u32().map(|w| w as u16)
}

/// Parse the RESET_COMPLETE delayed response body: domain id, which must match.
pub fn parse_complete(r: &mut Reader<'_>, expect: u32) -> Result<(), Malformed> {
    if r.u32()? != expect {
        return Err(Malformed::IdMismatch);
    }
    Ok(())
}

/// Typed view of the reset protocol. Obtain with [`Scmi::reset`].
pub struct Reset<'a, T: Transport, C: Clock> {
    scmi: &'a Scmi<T, C>,
}

impl<T: Transport, C: Clock> Scmi<T, C> {
    /// The reset domain protocol.
    pub fn reset(&self) -> Reset<'_, T, C> {
        Reset { scmi: self }
    }
}

impl<T: Transport, C: Clock> Reset<'_, T, C> {
    /// `*_NAME_GET`: the extended 64-byte name (when the attributes flag bit 29).
    pub fn extended_name(&self, id: u32) -> error::Result<super::wire::LongName> {
        self.scmi.extended_name(proto::RESET, reset::NAME_GET, id)
    }

    /// PROTOCOL_VERSION.
    pub fn version(&self) -> error::Result<Version> {
        self.scmi.protocol_version(proto::RESET)
    }

    /// Number of reset domains.
    pub fn num_domains(&self) -> error::Result<u16> {
        self.scmi.cmd(
            proto::RESET,
            common::PROTOCOL_ATTRIBUTES,
            &[],
            parse_num_domains,
        )
    }

    /// RESET_DOMAIN_ATTRIBUTES.
    pub fn domain_attributes(&self, domain: u32) -> error::Result<ResetDomainAttributes> {
        self.scmi.cmd(
            proto::RESET,
            reset::DOMAIN_ATTRIBUTES,
            &[domain],
            parse_domain_attributes,
        )
    }

    /// RESET with explicit `flags` (without [`reset::FLAG_ASYNC`]) and `reset_state`
    /// (0 = architectural cold reset).
    pub fn reset(&self, domain: u32, flags: u32, reset_state: u32) -> error::Result<()> {
        self.scmi.cmd_status(
            proto::RESET,
            reset::RESET,
            &[domain, flags & !reset::FLAG_ASYNC, reset_state],
        )
    }

    /// Assert the reset line.
    pub fn assert(&self, domain: u32) -> error::Result<()> {
        self.reset(domain, reset::FLAG_ASSERT, 0)
    }

    /// De-assert the reset line.
    pub fn deassert(&self, domain: u32) -> error::Result<()> {
        self.reset(domain, 0, 0)
    }

    /// Autonomous reset, asynchronously: waits for RESET_COMPLETE (delayed response).
    pub fn reset_async(&self, domain: u32, reset_state: u32) -> error::Result<()> {
        self.scmi.cmd_delayed(
            proto::RESET,
            reset::RESET,
            &[
                domain,
                reset::FLAG_AUTONOMOUS | reset::FLAG_ASYNC,
                reset_state,
            ],
            |r| parse_complete(r, domain),
        )
    }

    /// RESET_NOTIFY.
    pub fn notify(&self, domain: u32, enable: bool) -> error::Result<()> {
        self.scmi
            .cmd_status(proto::RESET, reset::NOTIFY, &[domain, u32::from(enable)])
    }
}

/// Run every parser of this module over `b`.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_all(b: &[u8]) {
    let _ = parse_domain_attributes(&mut Reader::new(b));
    let _ = parse_num_domains(&mut Reader::new(b));
    let _ = parse_complete(&mut Reader::new(b), 0);
}
