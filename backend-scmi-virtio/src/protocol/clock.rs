//! Clock management protocol (0x14): attributes, rate descriptions (multi-part, discrete or
//! range), rate get/set (synchronous or with a delayed response), enable, rate notifications.

use fwipc_transport_api::{Clock, Transport};

use super::agent::Scmi;
use super::common::Version;
use super::describe::parse_segmented_page;
use super::error::{self, Malformed};
use super::ids::{clock, common, proto};
use super::multipart::Pager;
use super::wire::{split64, AttrNameWire, Reader, ShortName};

/// PROTOCOL_ATTRIBUTES of the clock protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockProtocolAttributes {
    /// Clocks.
    pub num_clocks: u16,
    /// Maximum outstanding asynchronous rate changes.
    pub max_async_req: u8,
}

/// Parse clock PROTOCOL_ATTRIBUTES.
pub fn parse_protocol_attributes(r: &mut Reader<'_>) -> Result<ClockProtocolAttributes, Malformed> {
    let w = r.u32()?;
    Ok(ClockProtocolAttributes {
        num_clocks: w as u16,
        max_async_req: (w >> 16) as u8,
    })
}

/// CLOCK_ATTRIBUTES reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockAttributes {
    /// Raw attributes (0 enabled, 31 rate notify, 30 change-request notify, 29 ext. name).
    pub attributes: u32,
    /// Name.
    pub name: ShortName,
}

impl ClockAttributes {
    /// The clock is enabled.
    pub const fn enabled(&self) -> bool {
        self.attributes & 1 != 0
    }
    /// Supports rate-changed notifications.
    pub const fn rate_notify(&self) -> bool {
        self.attributes & (1 << 31) != 0
    }
}

/// Parse CLOCK_ATTRIBUTES.
pub fn parse_attributes(r: &mut Reader<'_>) -> Result<ClockAttributes, Malformed> {
    let w: AttrNameWire = r.read()?;
    Ok(ClockAttributes {
        attributes: w.attributes.get(),
        name: ShortName::parse(&w.name)?,
    })
}

/// What CLOCK_DESCRIBE_RATES described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDescription {
    /// `count` discrete rates (each passed to the callback).
    Discrete {
        /// Number of rates.
        count: u32,
    },
    /// A linear range.
    Range {
        /// Lowest rate in Hz.
        min: u64,
        /// Highest rate in Hz.
        max: u64,
        /// Step in Hz.
        step: u64,
    },
}

/// One CLOCK_DESCRIBE_RATES page: returned 11:0, bit 12 range, remaining 31:16, then (low, high)
/// rates. A range page must hold exactly 3 entries and nothing remaining. Returns the range, or
/// (returned, remaining) after passing each discrete rate to `f`.
pub fn parse_rates_page(
    r: &mut Reader<'_>,
    pager: &mut Pager,
    f: &mut dyn FnMut(u64),
) -> Result<Result<RateDescription, (u32, u32)>, Malformed> {
    parse_segmented_page(
        r,
        pager,
        |r| r.u64_pair(),
        |min, max, step| RateDescription::Range { min, max, step },
        f,
    )
}

/// Parse the rate-set delayed response body (clock id, rate low/high); the id must match.
pub fn parse_rate_complete(r: &mut Reader<'_>, expect: u32) -> Result<u64, Malformed> {
    if r.u32()? != expect {
        return Err(Malformed::IdMismatch);
    }
    r.u64_pair()
}

/// Typed view of the clock protocol. Obtain with [`Scmi::clock`].
pub struct ClockProto<'a, T: Transport, C: Clock> {
    scmi: &'a Scmi<T, C>,
}

impl<T: Transport, C: Clock> Scmi<T, C> {
    /// The clock protocol.
    pub fn clock(&self) -> ClockProto<'_, T, C> {
        ClockProto { scmi: self }
    }
}

impl<T: Transport, C: Clock> ClockProto<'_, T, C> {
    /// `*_NAME_GET`: the extended 64-byte name (when the attributes flag bit 29).
    pub fn extended_name(&self, id: u32) -> error::Result<super::wire::LongName> {
        self.scmi.extended_name(proto::CLOCK, clock::NAME_GET, id)
    }

    /// PROTOCOL_VERSION.
    pub fn version(&self) -> error::Result<Version> {
        self.scmi.protocol_version(proto::CLOCK)
    }

    /// PROTOCOL_ATTRIBUTES.
    pub fn protocol_attributes(&self) -> error::Result<ClockProtocolAttributes> {
        self.scmi.cmd(
            proto::CLOCK,
            common::PROTOCOL_ATTRIBUTES,
            &[],
            parse_protocol_attributes,
        )
    }

    /// CLOCK_ATTRIBUTES.
    pub fn attributes(&self, id: u32) -> error::Result<ClockAttributes> {
        self.scmi
            .cmd(proto::CLOCK, clock::ATTRIBUTES, &[id], parse_attributes)
    }

    /// CLOCK_DESCRIBE_RATES, every page: discrete rates go to `f`.
    pub fn describe_rates(
        &self,
        id: u32,
        mut f: impl FnMut(u64),
    ) -> error::Result<RateDescription> {
        let pager = Pager::new(None, self.scmi.config().max_rounds);
        let done = self.scmi.describe_pages(
            proto::CLOCK,
            clock::DESCRIBE_RATES,
            Some(id),
            pager,
            |r, pager| parse_rates_page(r, pager, &mut f),
        )?;
        Ok(done.unwrap_or_else(|count| RateDescription::Discrete { count }))
    }

    /// CLOCK_RATE_GET in Hz.
    pub fn rate_get(&self, id: u32) -> error::Result<u64> {
        self.scmi
            .cmd(proto::CLOCK, clock::RATE_GET, &[id], |r| r.u64_pair())
    }

    /// CLOCK_RATE_SET, synchronous. `flags` bits 2/3 select rounding (up / auto).
    pub fn rate_set(&self, id: u32, rate: u64, flags: u32) -> error::Result<()> {
        let (lo, hi) = split64(rate);
        self.scmi
            .cmd_status(proto::CLOCK, clock::RATE_SET, &[flags & !1, id, lo, hi])
    }

    /// CLOCK_RATE_SET with the async flag: waits for the delayed response and returns the rate
    /// the platform reports.
    pub fn rate_set_async(&self, id: u32, rate: u64, flags: u32) -> error::Result<u64> {
        let (lo, hi) = split64(rate);
        self.scmi.cmd_delayed(
            proto::CLOCK,
            clock::RATE_SET,
            &[(flags | 1) & !2, id, lo, hi],
            |r| parse_rate_complete(r, id),
        )
    }

    /// CLOCK_CONFIG_SET: enable or disable.
    pub fn set_enabled(&self, id: u32, enable: bool) -> error::Result<()> {
        self.scmi
            .cmd_status(proto::CLOCK, clock::CONFIG_SET, &[id, u32::from(enable)])
    }

    /// CLOCK_RATE_NOTIFY.
    pub fn rate_notify(&self, id: u32, enable: bool) -> error::Result<()> {
        self.scmi
            .cmd_status(proto::CLOCK, clock::RATE_NOTIFY, &[id, u32::from(enable)])
    }
}

/// Run every parser of this module over `b`.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_all(b: &[u8]) {
    let _ = parse_protocol_attributes(&mut Reader::new(b));
    let _ = parse_attributes(&mut Reader::new(b));
    let mut pager = Pager::new(None, 4);
    let _ = parse_rates_page(&mut Reader::new(b), &mut pager, &mut |_| {});
    let _ = parse_rate_complete(&mut Reader::new(b), 0);
}
