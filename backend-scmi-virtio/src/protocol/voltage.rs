//! Voltage domain management (0x17): domain attributes, level descriptions (multi-part or
//! segmented), configuration, levels (synchronous or with a delayed response).

use fwipc_transport_api::{Clock, Transport};

use super::agent::Scmi;
use super::common::{parse_word, Version};
use super::describe::parse_segmented_page;
use super::error::{self, Malformed};
use super::ids::{common, proto, voltage};
use super::multipart::Pager;
use super::wire::{AttrNameWire, Reader, ShortName};

/// VOLTAGE_DOMAIN_ATTRIBUTES reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoltageDomainAttributes {
    /// Flags (31 async level set, 30 ext. name).
    pub attributes: u32,
    /// Name.
    pub name: ShortName,
}

/// Parse VOLTAGE_DOMAIN_ATTRIBUTES.
pub fn parse_domain_attributes(r: &mut Reader<'_>) -> Result<VoltageDomainAttributes, Malformed> {
    let w: AttrNameWire = r.read()?;
    Ok(VoltageDomainAttributes {
        attributes: w.attributes.get(),
        name: ShortName::parse(&w.name)?,
    })
}

/// Parse the number of domains (PROTOCOL_ATTRIBUTES bits 15:0).
pub fn parse_num_domains(r: &mut Reader<'_>) -> Result<u16, Malformed> {
    r.u32().map(|w| w as u16)
}

/// What VOLTAGE_DESCRIBE_LEVELS described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelDescription {
    /// `count` discrete levels (each passed to the callback).
    Discrete {
        /// Number of levels.
        count: u32,
    },
    /// A linear range in µV.
    Range {
        /// Lowest level.
        min: i32,
        /// Highest level.
        max: i32,
        /// Step.
        step: i32,
    },
}

/// One VOLTAGE_DESCRIBE_LEVELS page: returned 11:0, bit 12 segmented (exactly 3 returned, 0
/// remaining), remaining 31:16, then s32 µV levels.
pub fn parse_levels_page(
    r: &mut Reader<'_>,
    pager: &mut Pager,
    f: &mut dyn FnMut(i32),
) -> Result<Result<LevelDescription, (u32, u32)>, Malformed> {
    parse_segmented_page(
        r,
        pager,
        |r| r.i32(),
        |min, max, step| LevelDescription::Range { min, max, step },
        f,
    )
}

/// Parse the level-set delayed response body (domain, level); the domain must match.
pub fn parse_level_complete(r: &mut Reader<'_>, expect: u32) -> Result<i32, Malformed> {
    if r.u32()? != expect {
        return Err(Malformed::IdMismatch);
    }
    r.i32()
}

/// Typed view of the voltage protocol. Obtain with [`Scmi::voltage`].
pub struct Voltage<'a, T: Transport, C: Clock> {
    scmi: &'a Scmi<T, C>,
}

impl<T: Transport, C: Clock> Scmi<T, C> {
    /// The voltage domain protocol.
    pub fn voltage(&self) -> Voltage<'_, T, C> {
        Voltage { scmi: self }
    }
}

impl<T: Transport, C: Clock> Voltage<'_, T, C> {
    /// `*_NAME_GET`: the extended 64-byte name (when the attributes flag bit 30).
    pub fn extended_name(&self, id: u32) -> error::Result<super::wire::LongName> {
        self.scmi
            .extended_name(proto::VOLTAGE, voltage::NAME_GET, id)
    }

    /// PROTOCOL_VERSION.
    pub fn version(&self) -> error::Result<Version> {
        self.scmi.protocol_version(proto::VOLTAGE)
    }

    /// Number of voltage domains.
    pub fn num_domains(&self) -> error::Result<u16> {
        self.scmi.cmd(
            proto::VOLTAGE,
            common::PROTOCOL_ATTRIBUTES,
            &[],
            parse_num_domains,
        )
    }

    /// VOLTAGE_DOMAIN_ATTRIBUTES.
    pub fn domain_attributes(&self, domain: u32) -> error::Result<VoltageDomainAttributes> {
        self.scmi.cmd(
            proto::VOLTAGE,
            voltage::DOMAIN_ATTRIBUTES,
            &[domain],
            parse_domain_attributes,
        )
    }

    /// VOLTAGE_DESCRIBE_LEVELS, every page: discrete levels go to `f`.
    pub fn describe_levels(
        &self,
        domain: u32,
        mut f: impl FnMut(i32),
    ) -> error::Result<LevelDescription> {
        let pager = Pager::new(None, self.scmi.config().max_rounds);
        let done = self.scmi.describe_pages(
            proto::VOLTAGE,
            voltage::DESCRIBE_LEVELS,
            Some(domain),
            pager,
            |r, pager| parse_levels_page(r, pager, &mut f),
        )?;
        Ok(done.unwrap_or_else(|count| LevelDescription::Discrete { count }))
    }

    /// VOLTAGE_CONFIG_SET ([`voltage::CONFIG_ON`] / [`voltage::CONFIG_OFF`]).
    pub fn config_set(&self, domain: u32, config: u32) -> error::Result<()> {
        self.scmi
            .cmd_status(proto::VOLTAGE, voltage::CONFIG_SET, &[domain, config])
    }

    /// VOLTAGE_CONFIG_GET.
    pub fn config_get(&self, domain: u32) -> error::Result<u32> {
        self.scmi
            .cmd(proto::VOLTAGE, voltage::CONFIG_GET, &[domain], parse_word)
    }

    /// VOLTAGE_LEVEL_SET, synchronous, in µV.
    pub fn level_set(&self, domain: u32, level_uv: i32) -> error::Result<()> {
        self.scmi.cmd_status(
            proto::VOLTAGE,
            voltage::LEVEL_SET,
            &[domain, 0, level_uv as u32],
        )
    }

    /// VOLTAGE_LEVEL_SET with the async flag; returns the level the delayed response reports.
    pub fn level_set_async(&self, domain: u32, level_uv: i32) -> error::Result<i32> {
        self.scmi.cmd_delayed(
            proto::VOLTAGE,
            voltage::LEVEL_SET,
            &[domain, 1, level_uv as u32],
            |r| parse_level_complete(r, domain),
        )
    }

    /// VOLTAGE_LEVEL_GET in µV.
    pub fn level_get(&self, domain: u32) -> error::Result<i32> {
        self.scmi
            .cmd(proto::VOLTAGE, voltage::LEVEL_GET, &[domain], |r| r.i32())
    }
}

/// Run every parser of this module over `b`.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_all(b: &[u8]) {
    let _ = parse_domain_attributes(&mut Reader::new(b));
    let _ = parse_num_domains(&mut Reader::new(b));
    let mut pager = Pager::new(None, 4);
    let _ = parse_levels_page(&mut Reader::new(b), &mut pager, &mut |_| {});
    let _ = parse_level_complete(&mut Reader::new(b), 0);
}
