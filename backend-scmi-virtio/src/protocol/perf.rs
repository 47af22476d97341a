//! Performance domain management (0x13): domain attributes, level descriptions (multi-part),
//! limits and levels, notifications.

use fwipc_transport_api::{Clock, Transport};

use super::agent::Scmi;
use super::common::{parse_word, Version};
use super::describe::{parse_list_page, RETURNED_16_REMAINING_16};
use super::error::{self, Malformed};
use super::ids::{common, perf, proto};
use super::multipart::Pager;
use super::wire::{PerfDomainWire, PerfLevelWire, Reader, ShortName};

/// PROTOCOL_ATTRIBUTES of the performance protocol (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerfProtocolAttributes {
    /// Domains.
    pub num_domains: u16,
    /// Flags (bit 0 power in mW, bit 1 µW).
    pub flags: u16,
    /// Statistics shared-memory address.
    pub stats_addr: u64,
    /// Its size.
    pub stats_size: u32,
}

/// Parse perf PROTOCOL_ATTRIBUTES.
pub fn parse_protocol_attributes(r: &mut Reader<'_>) -> Result<PerfProtocolAttributes, Malformed> {
    let w = r.u32()?;
    Ok(PerfProtocolAttributes {
        num_domains: w as u16,
        flags: (w >> 16) as u16,
        stats_addr: r.u64_pair()?,
        stats_size: r.u32()?,
    })
}

/// PERF_DOMAIN_ATTRIBUTES reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerfDomainAttributes {
    /// Flags (31 set limits, 30 set level, 29 limits notify, 28 level notify, 27 fastchannels).
    pub attributes: u32,
    /// Minimum time between level changes, µs.
    pub rate_limit_us: u32,
    /// Sustained frequency, kHz.
    pub sustained_freq_khz: u32,
    /// Sustained performance level.
    pub sustained_perf_level: u32,
    /// Name.
    pub name: ShortName,
}

/// Parse PERF_DOMAIN_ATTRIBUTES.
pub fn parse_domain_attributes(r: &mut Reader<'_>) -> Result<PerfDomainAttributes, Malformed> {
    let w: PerfDomainWire = r.read()?;
    Ok(PerfDomainAttributes {
        attributes: w.attributes.get(),
        rate_limit_us: w.rate_limit_us.get(),
        sustained_freq_khz: w.sustained_freq_khz.get(),
        sustained_perf_level: w.sustained_perf_level.get(),
        name: ShortName::parse(&w.name)?,
    })
}

/// One performance level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerfLevel {
    /// Level value.
    pub perf: u32,
    /// Power cost.
    pub power: u32,
    /// Transition latency, µs.
    pub latency_us: u16,
}

/// One PERF_DESCRIBE_LEVELS page: returned (low u16), remaining (high u16), 12-byte levels.
pub fn parse_levels_page(
    r: &mut Reader<'_>,
    pager: &mut Pager,
    f: &mut dyn FnMut(&PerfLevel),
) -> Result<(u32, u32), Malformed> {
    parse_list_page(r, pager, RETURNED_16_REMAINING_16, |r, _| {
        let w: PerfLevelWire = r.read()?;
        f(&PerfLevel {
            perf: w.perf.get(),
            power: w.power.get(),
            latency_us: w.latency_us.get() as u16,
        });
        Ok(())
    })
}

/// Parse PERF_LIMITS_GET: (max, min).
pub fn parse_limits(r: &mut Reader<'_>) -> Result<(u32, u32), Malformed> {
    Ok((r.u32()?, r.u32()?))
}

/// Typed view of the performance protocol. Obtain with [`Scmi::perf`].
pub struct Perf<'a, T: Transport, C: Clock> {
    scmi: &'a Scmi<T, C>,
}

impl<T: Transport, C: Clock> Scmi<T, C> {
    /// The performance protocol.
    pub fn perf(&self) -> Perf<'_, T, C> {
        Perf { scmi: self }
    }
}

impl<T: Transport, C: Clock> Perf<'_, T, C> {
    /// `*_NAME_GET`: the extended 64-byte name (when the attributes flag bit 26).
    pub fn extended_name(&self, id: u32) -> error::Result<super::wire::LongName> {
        self.scmi.extended_name(proto::PERF, perf::NAME_GET, id)
    }

    /// PROTOCOL_VERSION.
    pub fn version(&self) -> error::Result<Version> {
        self.scmi.protocol_version(proto::PERF)
    }

    /// PROTOCOL_ATTRIBUTES.
    pub fn protocol_attributes(&self) -> error::Result<PerfProtocolAttributes> {
        self.scmi.cmd(
            proto::PERF,
            common::PROTOCOL_ATTRIBUTES,
            &[],
            parse_protocol_attributes,
        )
    }

    /// PERF_DOMAIN_ATTRIBUTES.
    pub fn domain_attributes(&self, domain: u32) -> error::Result<PerfDomainAttributes> {
        self.scmi.cmd(
            proto::PERF,
            perf::DOMAIN_ATTRIBUTES,
            &[domain],
            parse_domain_attributes,
        )
    }

    /// PERF_DESCRIBE_LEVELS, every page; returns the count.
    pub fn describe_levels(
        &self,
        domain: u32,
        mut f: impl FnMut(&PerfLevel),
    ) -> error::Result<u32> {
        let pager = Pager::new(None, self.scmi.config().max_rounds);
        self.scmi.list_pages(
            proto::PERF,
            perf::DESCRIBE_LEVELS,
            Some(domain),
            pager,
            |r, pager| parse_levels_page(r, pager, &mut f),
        )
    }

    /// PERF_LIMITS_SET.
    pub fn limits_set(&self, domain: u32, max: u32, min: u32) -> error::Result<()> {
        self.scmi
            .cmd_status(proto::PERF, perf::LIMITS_SET, &[domain, max, min])
    }

    /// PERF_LIMITS_GET: (max, min).
    pub fn limits_get(&self, domain: u32) -> error::Result<(u32, u32)> {
        self.scmi
            .cmd(proto::PERF, perf::LIMITS_GET, &[domain], parse_limits)
    }

    /// PERF_LEVEL_SET.
    pub fn level_set(&self, domain: u32, level: u32) -> error::Result<()> {
        self.scmi
            .cmd_status(proto::PERF, perf::LEVEL_SET, &[domain, level])
    }

    /// PERF_LEVEL_GET.
    pub fn level_get(&self, domain: u32) -> error::Result<u32> {
        self.scmi
            .cmd(proto::PERF, perf::LEVEL_GET, &[domain], parse_word)
    }

    /// PERF_NOTIFY_LIMITS.
    pub fn notify_limits(&self, domain: u32, enable: bool) -> error::Result<()> {
        self.scmi.cmd_status(
            proto::PERF,
            perf::NOTIFY_LIMITS,
            &[domain, u32::from(enable)],
        )
    }

    /// PERF_NOTIFY_LEVEL.
    pub fn notify_level(&self, domain: u32, enable: bool) -> error::Result<()> {
        self.scmi.cmd_status(
            proto::PERF,
            perf::NOTIFY_LEVEL,
            &[domain, u32::from(enable)],
        )
    }
}

/// Run every parser of this module over `b`.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_all(b: &[u8]) {
    let _ = parse_protocol_attributes(&mut Reader::new(b));
    let _ = parse_domain_attributes(&mut Reader::new(b));
    let mut pager = Pager::new(None, 4);
    let _ = parse_levels_page(&mut Reader::new(b), &mut pager, &mut |_| {});
    let _ = parse_limits(&mut Reader::new(b));
}
