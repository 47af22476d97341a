//! The simulated platform's sensor protocol (0x15), modelled on vhost-device-scmi 0.4 plus what
//! it lacks: pagination to the writable space, asynchronous reads, trip points.

use super::config::SensorConfig;
use super::model::Platform;
use super::reply::{self, word_reply, Out, Params};
use crate::header::Header;
use crate::protocol::describe::{RETURNED_12_REMAINING_16, RETURNED_6_REMAINING_6};
use crate::protocol::ids::{common, proto, sensor};
use crate::status::code;

impl Platform {
    fn sensor_cfg(&self, id: u32) -> Result<(usize, &SensorConfig), i32> {
        let i = usize::try_from(id).map_err(|_| code::NOT_FOUND)?;
        self.cfg
            .sensors
            .get(i)
            .map(|c| (i, c))
            .ok_or(code::NOT_FOUND)
    }

    fn v3(&self) -> bool {
        self.cfg.sensor_version >= 0x30000
    }

    fn descriptor_size(&self, c: &SensorConfig) -> usize {
        let mut n = 28;
        if self.v3() && c.extended {
            n += 4;
            if c.axes == 0 {
                n += 20;
            }
        }
        n
    }

    fn write_descriptor(&self, id: usize, c: &SensorConfig, out: &mut Out<'_>) -> reply::Result {
        let p2a = self.cfg.p2a;
        let low = (u32::from(c.async_read && p2a) << 31)
            | (u32::from(c.continuous_notify && p2a) << 30)
            | (u32::from(c.timestamped) << 9)
            | (u32::from(self.v3() && c.extended) << 8)
            | u32::from(c.trip_points);
        let high = if c.axes > 0 {
            (u32::from(c.axes.min(63)) << 16) | (1 << 8)
        } else {
            // Unit exponent: 5-bit two's complement in bits 15:11.
            (((c.unit_exponent as u32) & 0x1F) << 11) | u32::from(c.unit)
        };
        out.u32(id as u32)?;
        out.u32(low)?;
        out.u32(high)?;
        out.name16(&c.name)?;
        if self.v3() && c.extended {
            out.u32(1000)?; // power, µW
            if c.axes == 0 {
                out.u32(1)?; // resolution
                out.u64(c.value.wrapping_sub(1_000_000) as u64)?;
                out.u64(c.value.wrapping_add(1_000_000) as u64)?;
            }
        }
        Ok(())
    }

    /// Take one reading of sensor `i` (bumps its counter) and write it: v3 = 16 bytes per axis
    /// (one for a scalar), v2 = one 8-byte value.
    fn write_reading(&mut self, i: usize, out: &mut Out<'_>) -> reply::Result {
        let v3 = self.v3();
        let (axes, base, ts, constant) = match self.cfg.sensors.get(i) {
            Some(c) => (c.axes, c.value, c.timestamped, c.constant),
            None => return Err(code::NOT_FOUND),
        };
        let st = self.sensors.get_mut(i).ok_or(code::NOT_FOUND)?;
        // Like vhost-device-scmi's fake sensor: the first reading is counter 0, then it bumps.
        let counter = if constant { 0 } else { i64::from(st.counter) };
        st.counter = st.counter.wrapping_add(1);
        st.reads += 1;
        let stamp = if ts { st.reads } else { 0 };
        if !v3 {
            return out.u64(base.wrapping_add(counter) as u64);
        }
        for a in 0..axes.max(1) {
            let v = base.wrapping_add(counter).wrapping_add(100 * i64::from(a));
            out.u64(v as u64)?;
            out.u64(stamp)?;
        }
        Ok(())
    }

    /// Emit SENSOR_UPDATE for every enabled sensor with continuous updates switched on (the
    /// simulated "new data" event). Returns how many were queued.
    pub fn sensor_tick(&mut self) -> usize {
        let mut n = 0;
        for i in 0..self.sensors.len() {
            let on = self.sensors.get(i).is_some_and(|s| s.enabled && s.notify);
            if !on {
                continue;
            }
            let mut body = [0u8; super::model::P2A_MSG_MAX];
            let mut o = Out::new(&mut body, 0);
            if o.u32(0).is_err()
                || o.u32(i as u32).is_err()
                || self.write_reading(i, &mut o).is_err()
            {
                self.stats.notifications_dropped += 1;
                continue;
            }
            let len = o.len();
            let payload = body.get(..len).unwrap_or(&[]);
            if self.push_notification(proto::SENSOR, sensor::N_UPDATE, |x| x.bytes(payload)) {
                n += 1;
            }
        }
        n
    }

    /// Emit a SENSOR_TRIP_POINT_EVENT for `sensor` (if trip notifications are on).
    pub fn sensor_trip(&mut self, sensor_id: u32, trip_desc: u32) -> bool {
        let on = usize::try_from(sensor_id)
            .ok()
            .and_then(|i| self.sensors.get(i))
            .is_some_and(|s| s.trip_notify);
        on && self.push_notification(proto::SENSOR, sensor::N_TRIP_POINT_EVENT, |o| {
            o.u32(0)?;
            o.u32(sensor_id)?;
            o.u32(trip_desc)
        })
    }

    pub(crate) fn sensor(&mut self, h: &Header, p: Params<'_>, out: &mut Out<'_>) -> reply::Result {
        let n = self.cfg.sensors.len();
        match h.message_id {
            common::PROTOCOL_VERSION => word_reply(p, out, self.cfg.sensor_version),
            common::PROTOCOL_ATTRIBUTES => {
                p.exact::<0>()?;
                let any_async = self.cfg.p2a && self.cfg.sensors.iter().any(|s| s.async_read);
                out.u32(n.min(0xFFFF) as u32 | (u32::from(any_async) * 4) << 16)?;
                out.u64(0)?;
                out.u32(0)
            }
            common::PROTOCOL_MESSAGE_ATTRIBUTES => self.msg_attrs(
                p,
                out,
                &[0, 1, 2, 3, 5, 6, 7, 8, 9, 0xA],
                &[sensor::TRIP_POINT_NOTIFY, sensor::CONTINUOUS_UPDATE_NOTIFY],
            ),
            sensor::DESCRIPTION_GET => {
                let [first] = p.exact::<1>()?;
                if self.listing_cut(first) {
                    return out.u32(0);
                }
                let first = self.start_index(first, n)?;
                let flags_at = out.len();
                out.u32(0)?;
                let max = self.cfg.quirks.max_entries_per_reply;
                let mut returned = 0usize;
                for (i, c) in self.cfg.sensors.iter().enumerate().skip(first) {
                    if returned >= 0xFFF || (max != 0 && returned >= max) {
                        break;
                    }
                    if self.descriptor_size(c) > out.room() {
                        if self.cfg.quirks.no_pagination {
                            return Err(code::COMMS_ERROR);
                        }
                        break;
                    }
                    self.write_descriptor(i, c, out)?;
                    returned += 1;
                }
                if returned == 0 {
                    return Err(code::COMMS_ERROR);
                }
                let remaining = self.remaining(n - first - returned).min(0xFFFF);
                out.patch_u32(flags_at, returned as u32 | ((remaining as u32) << 16))
            }
            sensor::TRIP_POINT_NOTIFY => {
                self.need_p2a()?;
                let [id, ctl] = p.exact::<2>()?;
                let (i, c) = self.sensor_cfg(id)?;
                if c.trip_points == 0 {
                    return Err(code::NOT_SUPPORTED);
                }
                if let Some(s) = self.sensors.get_mut(i) {
                    s.trip_notify = ctl & 1 != 0;
                }
                Ok(())
            }
            sensor::TRIP_POINT_CONFIG => {
                let [id, ev_ctrl, _lo, _hi] = p.exact::<4>()?;
                let (_, c) = self.sensor_cfg(id)?;
                if (ev_ctrl >> 4) & 0xFF >= u32::from(c.trip_points) {
                    return Err(code::INVALID_PARAMETERS);
                }
                Ok(())
            }
            sensor::READING_GET => {
                let [id, flags] = p.exact::<2>()?;
                let (i, c) = self.sensor_cfg(id)?;
                let async_ok = c.async_read;
                if !self.sensors.get(i).is_some_and(|s| s.enabled) {
                    return Err(code::INVALID_PARAMETERS);
                }
                if flags & 1 == 0 {
                    return self.write_reading(i, out);
                }
                if !async_ok {
                    return Err(code::NOT_SUPPORTED);
                }
                self.can_defer()?;
                let mut body = [0u8; super::model::P2A_MSG_MAX];
                let mut o = Out::new(&mut body, 0);
                o.u32(id)?;
                self.write_reading(i, &mut o)?;
                let len = o.len();
                let payload = body.get(..len).unwrap_or(&[]);
                self.push_delayed(h, |x| x.bytes(payload));
                Ok(())
            }
            sensor::AXIS_DESCRIPTION_GET => {
                let [id, first] = p.exact::<2>()?;
                let (_, c) = self.sensor_cfg(id)?;
                let axes = usize::from(c.axes.min(63));
                if axes == 0 {
                    return Err(code::NOT_SUPPORTED);
                }
                let prefix = if c.unit == 89 { "acc" } else { "axis" };
                let unit = u32::from(c.unit);
                // 28-byte descriptors; at most 63 axes, so the 6-bit cap never cuts a page.
                for a in self.page_range(out, first, axes, 28, RETURNED_6_REMAINING_6)? {
                    out.u32(a as u32)?;
                    out.u32(0)?;
                    out.u32(unit)?;
                    let suffix = match a {
                        0 => "X",
                        1 => "Y",
                        2 => "Z",
                        _ => "N",
                    };
                    out.name16(&alloc::format!("{prefix}_{suffix}"))?;
                }
                Ok(())
            }
            sensor::LIST_UPDATE_INTERVALS => {
                let [id, first] = p.exact::<2>()?;
                let (_, c) = self.sensor_cfg(id)?;
                let total = c.update_intervals.len();
                if total == 0 {
                    return Err(code::NOT_SUPPORTED);
                }
                self.write_page(out, first, &c.update_intervals, RETURNED_12_REMAINING_16)
            }
            sensor::CONFIG_GET => {
                let [id] = p.exact::<1>()?;
                let (i, _) = self.sensor_cfg(id)?;
                out.u32(u32::from(self.sensors.get(i).is_some_and(|s| s.enabled)))
            }
            sensor::CONFIG_SET => {
                let [id, cfg] = p.exact::<2>()?;
                let (i, _) = self.sensor_cfg(id)?;
                if cfg & !1 != 0 {
                    return Err(code::NOT_SUPPORTED);
                }
                if let Some(s) = self.sensors.get_mut(i) {
                    s.enabled = cfg & 1 != 0;
                }
                Ok(())
            }
            sensor::CONTINUOUS_UPDATE_NOTIFY => {
                self.need_p2a()?;
                let [id, en] = p.exact::<2>()?;
                let (i, c) = self.sensor_cfg(id)?;
                if !c.continuous_notify {
                    return Err(code::NOT_SUPPORTED);
                }
                if en > 1 {
                    return Err(code::INVALID_PARAMETERS);
                }
                if let Some(s) = self.sensors.get_mut(i) {
                    s.notify = en == 1;
                }
                if self.cfg.quirks.notify_reply_extra_word {
                    out.u32(0)?;
                }
                Ok(())
            }
            _ => Err(code::NOT_SUPPORTED),
        }
    }
}
