//! Sensor management protocol (0x15): descriptions (multi-part), readings (synchronous and
//! asynchronous with a delayed response), configuration, axis descriptions, trip points and
//! continuous-update notifications.

use alloc::vec::Vec;

use fwipc_transport_api::{Clock, Transport};

use super::agent::Scmi;
use super::common::{parse_word, Version};
use super::describe::{
    parse_list_page, parse_segmented_page, RETURNED_12_REMAINING_16, RETURNED_6_REMAINING_6,
};
use super::error::{self, Malformed};
use super::ids::{common, proto, sensor};
use super::multipart::Pager;
use super::wire::{join64, RangeAttrsWire, Reader, ReadingWire, SensorDescWire, ShortName};

/// PROTOCOL_ATTRIBUTES of the sensor protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SensorAttributes {
    /// Sensors the platform exposes.
    pub num_sensors: u16,
    /// Maximum outstanding asynchronous reads.
    pub max_pending: u8,
    /// Shared-memory sensor register area address (0 if none).
    pub reg_addr: u64,
    /// Its size.
    pub reg_size: u32,
}

/// Parse sensor PROTOCOL_ATTRIBUTES (16 bytes).
pub fn parse_attributes(r: &mut Reader<'_>) -> Result<SensorAttributes, Malformed> {
    let w = r.u32()?;
    Ok(SensorAttributes {
        num_sensors: w as u16,
        max_pending: (w >> 16) as u8,
        reg_addr: r.u64_pair()?,
        reg_size: r.u32()?,
    })
}

/// Range attributes of extended scalar sensors and axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeAttrs {
    /// Resolution word (value 26:0, exponent 31:27).
    pub resolution: u32,
    /// Minimum reading.
    pub min: i64,
    /// Maximum reading.
    pub max: i64,
}

impl RangeAttrs {
    fn from_wire(w: &RangeAttrsWire) -> Self {
        RangeAttrs {
            resolution: w.resolution.get(),
            min: join64(w.min_low.get(), w.min_high.get()) as i64,
            max: join64(w.max_low.get(), w.max_high.get()) as i64,
        }
    }
}

/// One sensor descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SensorDescriptor {
    /// Sensor id.
    pub id: u32,
    /// attributes_low (31 async read, 30 continuous-update notify, 14:10 timestamp exponent,
    /// 9 timestamped, 8 extended, 7:0 trip points).
    pub attributes_low: u32,
    /// attributes_high (31:22 update interval, 21:16 axis count, 15:11 unit exponent, 8 has
    /// axes, 7:0 unit).
    pub attributes_high: u32,
    /// Name.
    pub name: ShortName,
    /// Power in µW (extended attributes, protocol v3+).
    pub power: Option<u32>,
    /// Resolution and range (extended scalar sensors).
    pub range: Option<RangeAttrs>,
}

impl SensorDescriptor {
    /// Supports asynchronous reads (delayed response).
    pub const fn async_read(&self) -> bool {
        self.attributes_low & (1 << 31) != 0
    }
    /// Supports continuous-update notifications.
    pub const fn continuous_notify(&self) -> bool {
        self.attributes_low & (1 << 30) != 0
    }
    /// Readings carry timestamps.
    pub const fn timestamped(&self) -> bool {
        self.attributes_low & (1 << 9) != 0
    }
    /// Extended attributes present.
    pub const fn extended(&self) -> bool {
        self.attributes_low & (1 << 8) != 0
    }
    /// Number of trip points.
    pub const fn num_trip_points(&self) -> u8 {
        self.attributes_low as u8
    }
    /// Number of axes (0 for a scalar sensor).
    pub const fn num_axes(&self) -> u8 {
        if self.attributes_high & (1 << 8) != 0 {
            ((self.attributes_high >> 16) & 0x3F) as u8
        } else {
            0
        }
    }
    /// Unit (SCMI unit code, e.g. 89 = m/s²). A multi-axis sensor may report 0 (none) here and
    /// give each axis its own unit: see [`AxisDescriptor::unit`].
    pub const fn unit(&self) -> u8 {
        unit_of(self.attributes_high)
    }
    /// Signed decimal unit exponent (bits 15:11).
    pub const fn unit_exponent(&self) -> i8 {
        unit_exponent_of(self.attributes_high)
    }
}

/// The unit code of a sensor's or an axis's `attributes_high` (bits 7:0; the same layout in both
/// descriptors, DEN0056 4.7.2.5 and 4.7.2.11).
const fn unit_of(attributes_high: u32) -> u8 {
    attributes_high as u8
}

/// The signed decimal exponent of a sensor's or an axis's `attributes_high` (bits 15:11).
const fn unit_exponent_of(attributes_high: u32) -> i8 {
    let e = ((attributes_high >> 11) & 0x1F) as i8;
    (e << 3) >> 3
}

/// Parse one descriptor. `v3` enables the extended fields (Linux reads them only from protocol
/// version 3 on): power if attributes_low bit 8, plus resolution and range for scalar sensors.
pub fn parse_descriptor(r: &mut Reader<'_>, v3: bool) -> Result<SensorDescriptor, Malformed> {
    let w: SensorDescWire = r.read()?;
    let mut d = SensorDescriptor {
        id: w.id.get(),
        attributes_low: w.attributes_low.get(),
        attributes_high: w.attributes_high.get(),
        name: ShortName::parse(&w.name)?,
        power: None,
        range: None,
    };
    if v3 && d.extended() {
        d.power = Some(r.u32()?);
        if d.num_axes() == 0 {
            let ra: RangeAttrsWire = r.read()?;
            d.range = Some(RangeAttrs::from_wire(&ra));
        }
    }
    Ok(d)
}

/// Parse one SENSOR_DESCRIPTION_GET page: flags (returned 11:0 per docs/protocols/scmi.md §5
/// **(unverified)**; Linux reads 15:0, which agrees whenever bits 15:12 are zero; remaining 31:16),
/// then the descriptors, each passed to `f` after checking its id against `num_sensors`. Returns
/// (returned, remaining). `pager` checks the counts before any entry is consumed.
pub fn parse_description_page(
    r: &mut Reader<'_>,
    v3: bool,
    num_sensors: u32,
    pager: &mut Pager,
    f: &mut dyn FnMut(&SensorDescriptor),
) -> Result<(u32, u32), Malformed> {
    parse_list_page(r, pager, RETURNED_12_REMAINING_16, |r, _| {
        let d = parse_descriptor(r, v3)?;
        if d.id >= num_sensors {
            return Err(Malformed::OutOfRange);
        }
        f(&d);
        Ok(())
    })
}

/// One axis descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisDescriptor {
    /// Axis id.
    pub id: u32,
    /// attributes_low (bit 8: extended).
    pub attributes_low: u32,
    /// attributes_high (unit, exponent).
    pub attributes_high: u32,
    /// Name.
    pub name: ShortName,
    /// Resolution and range, if extended.
    pub range: Option<RangeAttrs>,
}

impl AxisDescriptor {
    /// This axis's unit (SCMI unit code, e.g. 89 = m/s²).
    pub const fn unit(&self) -> u8 {
        unit_of(self.attributes_high)
    }
    /// This axis's signed decimal unit exponent (bits 15:11).
    pub const fn unit_exponent(&self) -> i8 {
        unit_exponent_of(self.attributes_high)
    }
}

/// Parse one axis descriptor (28 bytes, + 20 if attributes_low bit 8).
pub fn parse_axis(r: &mut Reader<'_>) -> Result<AxisDescriptor, Malformed> {
    let w: SensorDescWire = r.read()?;
    let low = w.attributes_low.get();
    let range = if low & (1 << 8) != 0 {
        let ra: RangeAttrsWire = r.read()?;
        Some(RangeAttrs::from_wire(&ra))
    } else {
        None
    };
    Ok(AxisDescriptor {
        id: w.id.get(),
        attributes_low: low,
        attributes_high: w.attributes_high.get(),
        name: ShortName::parse(&w.name)?,
        range,
    })
}

/// Parse one SENSOR_AXIS_DESCRIPTION_GET page (returned 5:0, remaining 31:26).
pub fn parse_axis_page(
    r: &mut Reader<'_>,
    pager: &mut Pager,
    f: &mut dyn FnMut(&AxisDescriptor),
) -> Result<(u32, u32), Malformed> {
    parse_list_page(r, pager, RETURNED_6_REMAINING_6, |r, pager| {
        let a = parse_axis(r)?;
        // The total is known once `check` passed (advertised, or fixed by this first reply).
        if a.id >= pager.total().unwrap_or(0) {
            return Err(Malformed::OutOfRange);
        }
        f(&a);
        Ok(())
    })
}

/// What SENSOR_LIST_UPDATE_INTERVALS described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalDescription {
    /// `count` discrete intervals (each passed to the callback).
    Discrete {
        /// Number of intervals.
        count: u32,
    },
    /// A segmented range: (lowest, highest, step) raw interval words.
    Range {
        /// Lowest interval.
        min: u32,
        /// Highest interval.
        max: u32,
        /// Step.
        step: u32,
    },
}

/// One SENSOR_LIST_UPDATE_INTERVALS page: returned 11:0, bit 12 segmented (exactly 3 entries,
/// nothing remaining), remaining 31:16, then interval words (seconds 15:5 × 10^exponent 4:0).
pub fn parse_intervals_page(
    r: &mut Reader<'_>,
    pager: &mut Pager,
    f: &mut dyn FnMut(u32),
) -> Result<Result<IntervalDescription, (u32, u32)>, Malformed> {
    parse_segmented_page(
        r,
        pager,
        |r| r.u32(),
        |min, max, step| IntervalDescription::Range { min, max, step },
        f,
    )
}

/// One sensor value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SensorValue {
    /// Signed value, in the sensor's unit × 10^exponent.
    pub value: i64,
    /// Timestamp (0 if the sensor is not timestamped or the platform speaks v2).
    pub timestamp: u64,
}

/// Parse readings: either one 8-byte v2 value, or 16-byte v3 (value, timestamp) entries, one per
/// axis (one for a scalar sensor). The first `out.len()` are stored; returns how many the
/// platform sent.
pub fn parse_readings(r: &mut Reader<'_>, out: &mut [SensorValue]) -> Result<usize, Malformed> {
    let n = r.remaining();
    if n == 8 {
        let v = r.u64_pair()? as i64;
        if let Some(o) = out.first_mut() {
            *o = SensorValue {
                value: v,
                timestamp: 0,
            };
        }
        return Ok(1);
    }
    if n == 0 {
        return Err(Malformed::Truncated);
    }
    if n & 0xF != 0 {
        return Err(Malformed::BadLength);
    }
    let count = n / 16;
    for i in 0..count {
        let w: ReadingWire = r.read()?;
        if let Some(o) = out.get_mut(i) {
            *o = SensorValue {
                value: join64(w.value_low.get(), w.value_high.get()) as i64,
                timestamp: join64(w.ts_low.get(), w.ts_high.get()),
            };
        }
    }
    Ok(count)
}

/// Parse an asynchronous reading's delayed response body (after the status): sensor_id, then
/// readings. The id must be `expect`.
pub fn parse_async_readings(
    r: &mut Reader<'_>,
    expect: u32,
    out: &mut [SensorValue],
) -> Result<usize, Malformed> {
    let id = r.u32()?;
    if id != expect {
        return Err(Malformed::IdMismatch);
    }
    parse_readings(r, out)
}

/// Typed view of the sensor protocol. Obtain with [`Scmi::sensor`].
///
/// ```
/// # use fwipc_scmi_virtio::platform::{Platform, PlatformConfig, direct::DirectTransport};
/// # use fwipc_scmi_virtio::protocol::{Scmi, Config};
/// # use fwipc_transport_api::StdClock;
/// // Shaped like vhost-device-scmi with one `fake` accelerometer.
/// let platform = Platform::new(PlatformConfig::vhost_device_scmi_like(1));
/// let scmi = Scmi::new(DirectTransport::new(platform), StdClock::new(), Config::default()).unwrap();
/// let s = scmi.sensor();
/// let all = s.descriptions_vec().unwrap();
/// assert_eq!(all[0].num_axes(), 3);
/// s.set_enabled(0, true).unwrap();            // sensors start disabled
/// let mut axes = [Default::default(); 3];
/// assert_eq!(s.reading_axes(0, &mut axes).unwrap(), 3);
/// assert_eq!(axes[1].value - axes[0].value, 100); // axis i = counter + 100·i
/// ```
pub struct Sensor<'a, T: Transport, C: Clock> {
    scmi: &'a Scmi<T, C>,
}

impl<T: Transport, C: Clock> Scmi<T, C> {
    /// The sensor protocol.
    pub fn sensor(&self) -> Sensor<'_, T, C> {
        Sensor { scmi: self }
    }
}

impl<T: Transport, C: Clock> Sensor<'_, T, C> {
    /// PROTOCOL_VERSION.
    pub fn version(&self) -> error::Result<Version> {
        self.scmi.protocol_version(proto::SENSOR)
    }

    /// PROTOCOL_ATTRIBUTES.
    pub fn attributes(&self) -> error::Result<SensorAttributes> {
        self.scmi.cmd(
            proto::SENSOR,
            common::PROTOCOL_ATTRIBUTES,
            &[],
            parse_attributes,
        )
    }

    /// PROTOCOL_MESSAGE_ATTRIBUTES.
    pub fn message_attributes(&self, message: u8) -> error::Result<u32> {
        self.scmi.message_attributes(proto::SENSOR, message)
    }

    /// Every sensor descriptor, through bounded SENSOR_DESCRIPTION_GET rounds; `f` sees each.
    /// Returns the count. On error, the descriptors already passed to `f` were valid.
    pub fn descriptions(&self, mut f: impl FnMut(&SensorDescriptor)) -> error::Result<u32> {
        let v3 = self.version()?.major >= 3;
        let total = u32::from(self.attributes()?.num_sensors);
        let pager = Pager::new(Some(total), self.scmi.config().max_rounds);
        self.scmi.list_pages(
            proto::SENSOR,
            sensor::DESCRIPTION_GET,
            None,
            pager,
            |r, pager| parse_description_page(r, v3, total, pager, &mut f),
        )
    }

    /// Every sensor descriptor, collected (allocates; use at setup).
    pub fn descriptions_vec(&self) -> error::Result<Vec<SensorDescriptor>> {
        let mut v = Vec::new();
        self.descriptions(|d| v.push(*d))?;
        Ok(v)
    }

    /// SENSOR_READING_GET, synchronous: the first (or only) value.
    pub fn reading(&self, id: u32) -> error::Result<SensorValue> {
        let mut v = [SensorValue::default()];
        self.reading_axes(id, &mut v)?;
        Ok(v[0])
    }

    /// SENSOR_READING_GET, synchronous: one value per axis into `out`; returns how many the
    /// platform sent (only the first `out.len()` are stored). A disabled sensor is refused by
    /// the platform with `ScmiStatus::InvalidParameters`: enable it first ([`Sensor::set_enabled`]).
    pub fn reading_axes(&self, id: u32, out: &mut [SensorValue]) -> error::Result<usize> {
        self.scmi
            .cmd(proto::SENSOR, sensor::READING_GET, &[id, 0], |r| {
                parse_readings(r, out)
            })
    }

    /// SENSOR_READING_GET with the async flag: the immediate response, then the delayed response
    /// (matched on token + protocol + message id; that the delayed response reuses message id 6
    /// is **(unverified)** against DEN0056), whose sensor id is checked. Only valid for
    /// sensors advertising async reads, over a transport with notifications (P2A channels).
    pub fn reading_async(&self, id: u32, out: &mut [SensorValue]) -> error::Result<usize> {
        self.scmi
            .cmd_delayed(proto::SENSOR, sensor::READING_GET, &[id, 1], |r| {
                parse_async_readings(r, id, out)
            })
    }

    /// SENSOR_CONFIG_GET (bit 0: enabled).
    pub fn config_get(&self, id: u32) -> error::Result<u32> {
        self.scmi
            .cmd(proto::SENSOR, sensor::CONFIG_GET, &[id], parse_word)
    }

    /// SENSOR_CONFIG_SET.
    pub fn config_set(&self, id: u32, config: u32) -> error::Result<()> {
        self.scmi
            .cmd_status(proto::SENSOR, sensor::CONFIG_SET, &[id, config])
    }

    /// Enable or disable a sensor (CONFIG_SET bit 0 only, as vhost-device-scmi requires).
    pub fn set_enabled(&self, id: u32, enabled: bool) -> error::Result<()> {
        self.config_set(id, u32::from(enabled))
    }

    /// SENSOR_CONTINUOUS_UPDATE_NOTIFY: SENSOR_UPDATE notifications arrive through
    /// [`Scmi::pump`] to subscribers (see [`crate::protocol::notify::SensorUpdate`]).
    pub fn continuous_update_notify(&self, id: u32, enable: bool) -> error::Result<()> {
        self.scmi.cmd_status(
            proto::SENSOR,
            sensor::CONTINUOUS_UPDATE_NOTIFY,
            &[id, u32::from(enable)],
        )
    }

    /// SENSOR_TRIP_POINT_NOTIFY.
    pub fn trip_point_notify(&self, id: u32, enable: bool) -> error::Result<()> {
        self.scmi.cmd_status(
            proto::SENSOR,
            sensor::TRIP_POINT_NOTIFY,
            &[id, u32::from(enable)],
        )
    }

    /// SENSOR_TRIP_POINT_CONFIG: `ev_ctrl` bits 1:0 off/rising/falling/both, 11:4 trip id.
    pub fn trip_point_config(&self, id: u32, ev_ctrl: u32, value: i64) -> error::Result<()> {
        let (lo, hi) = super::wire::split64(value as u64);
        self.scmi.cmd_status(
            proto::SENSOR,
            sensor::TRIP_POINT_CONFIG,
            &[id, ev_ctrl, lo, hi],
        )
    }

    /// SENSOR_LIST_UPDATE_INTERVALS, every page: discrete intervals go to `f`.
    pub fn update_intervals(
        &self,
        id: u32,
        mut f: impl FnMut(u32),
    ) -> error::Result<IntervalDescription> {
        let pager = Pager::new(None, self.scmi.config().max_rounds);
        let done = self.scmi.describe_pages(
            proto::SENSOR,
            sensor::LIST_UPDATE_INTERVALS,
            Some(id),
            pager,
            |r, pager| parse_intervals_page(r, pager, &mut f),
        )?;
        Ok(done.unwrap_or_else(|count| IntervalDescription::Discrete { count }))
    }

    /// Every axis descriptor of sensor `id` through bounded SENSOR_AXIS_DESCRIPTION_GET rounds.
    /// `num_axes` is the descriptor's axis count (the total), if known.
    pub fn axis_descriptions(
        &self,
        id: u32,
        num_axes: Option<u32>,
        mut f: impl FnMut(&AxisDescriptor),
    ) -> error::Result<u32> {
        let pager = Pager::new(num_axes, self.scmi.config().max_rounds);
        self.scmi.list_pages(
            proto::SENSOR,
            sensor::AXIS_DESCRIPTION_GET,
            Some(id),
            pager,
            |r, pager| parse_axis_page(r, pager, &mut f),
        )
    }

    /// Every axis descriptor, collected (allocates; use at setup).
    pub fn axis_descriptions_vec(
        &self,
        id: u32,
        num_axes: Option<u32>,
    ) -> error::Result<Vec<AxisDescriptor>> {
        let mut v = Vec::new();
        self.axis_descriptions(id, num_axes, |a| v.push(*a))?;
        Ok(v)
    }
}
