//! The simulated platform's power (0x11), reset (0x16) and voltage (0x17) domain protocols.

use super::config::VoltageLevels;
use super::model::{object_index, Platform};
use super::paginate::write_segmented;
use super::reply::{self, word_reply, Out, Params};
use crate::header::Header;
use crate::protocol::describe::RETURNED_12_REMAINING_16;
use crate::protocol::ids::{common, power, proto, reset, voltage};
use crate::status::code;

impl Platform {
    pub(crate) fn power(&mut self, h: &Header, p: Params<'_>, out: &mut Out<'_>) -> reply::Result {
        let n = self.cfg.power_domains.len();
        match h.message_id {
            common::PROTOCOL_VERSION => word_reply(p, out, 0x20000),
            common::PROTOCOL_ATTRIBUTES => {
                p.exact::<0>()?;
                out.u32(n.min(0xFFFF) as u32)?;
                out.u64(0)?;
                out.u32(0)
            }
            common::PROTOCOL_MESSAGE_ATTRIBUTES => self.msg_attrs(
                p,
                out,
                &[0, 1, 2, 3, 4, 5, power::NAME_GET],
                &[power::STATE_NOTIFY],
            ),
            power::DOMAIN_ATTRIBUTES => {
                let [id] = p.exact::<1>()?;
                let i = object_index(id, n)?;
                let name = self
                    .cfg
                    .power_domains
                    .get(i)
                    .map(|d| d.name.clone())
                    .unwrap_or_default();
                out.u32(
                    (u32::from(self.cfg.p2a) << 31) | (1 << 29) | Self::ext_name_bit(&name, 27),
                )?;
                out.name16(&name)
            }
            power::STATE_SET => {
                let [flags, id, state] = p.exact::<3>()?;
                let i = object_index(id, n)?;
                if flags & 1 != 0 {
                    // Asynchronous power changes are not advertised (attributes bit 30 clear).
                    return Err(code::NOT_SUPPORTED);
                }
                let notify = match self.power.get_mut(i) {
                    Some(d) => {
                        d.state = state;
                        d.notify
                    }
                    None => false,
                };
                if notify {
                    self.push_notification(proto::POWER, power::N_STATE_CHANGED, |o| {
                        o.u32(0)?;
                        o.u32(id)?;
                        o.u32(state)
                    });
                }
                Ok(())
            }
            power::NAME_GET => Self::name_get(p, out, &self.cfg.power_domains, |d| &d.name),
            power::STATE_GET => {
                let [id] = p.exact::<1>()?;
                let i = object_index(id, n)?;
                out.u32(self.power.get(i).map_or(0, |d| d.state))
            }
            power::STATE_NOTIFY => {
                self.set_notify(p, n, |s, i| s.power.get_mut(i).map(|d| &mut d.notify))
            }
            _ => Err(code::NOT_SUPPORTED),
        }
    }

    pub(crate) fn reset(&mut self, h: &Header, p: Params<'_>, out: &mut Out<'_>) -> reply::Result {
        let n = self.cfg.reset_domains.len();
        match h.message_id {
            common::PROTOCOL_VERSION => word_reply(p, out, 0x10000),
            common::PROTOCOL_ATTRIBUTES => word_reply(p, out, n.min(0xFFFF) as u32),
            common::PROTOCOL_MESSAGE_ATTRIBUTES => {
                self.msg_attrs(p, out, &[0, 1, 2, 3, 4, reset::NAME_GET], &[reset::NOTIFY])
            }
            reset::DOMAIN_ATTRIBUTES => {
                let [id] = p.exact::<1>()?;
                let i = object_index(id, n)?;
                let Some(d) = self.cfg.reset_domains.get(i) else {
                    return Err(code::NOT_FOUND);
                };
                let p2a = u32::from(self.cfg.p2a);
                out.u32(
                    (u32::from(d.async_reset) * p2a) << 31
                        | (p2a << 30)
                        | Self::ext_name_bit(&d.name, 29),
                )?;
                out.u32(d.latency_us)?;
                let name = d.name.clone();
                out.name16(&name)
            }
            reset::RESET => {
                let [id, flags, state] = p.exact::<3>()?;
                let i = object_index(id, n)?;
                if flags & !7 != 0 || (state != 0 && state & (1 << 31) == 0) {
                    return Err(code::INVALID_PARAMETERS);
                }
                let asynchronous = flags & reset::FLAG_ASYNC != 0;
                if asynchronous {
                    if !self.cfg.reset_domains.get(i).is_some_and(|d| d.async_reset) {
                        return Err(code::NOT_SUPPORTED);
                    }
                    self.can_defer()?;
                }
                let autonomous = flags & reset::FLAG_AUTONOMOUS != 0;
                let assert = flags & reset::FLAG_ASSERT != 0;
                let notify = match self.resets.get_mut(i) {
                    Some(d) => {
                        d.state = u32::from(assert && !autonomous);
                        d.notify
                    }
                    None => false,
                };
                if notify && (autonomous || assert) {
                    self.push_notification(proto::RESET, reset::N_ISSUED, |o| {
                        o.u32(0)?;
                        o.u32(id)?;
                        o.u32(state)
                    });
                }
                if asynchronous {
                    self.push_delayed(h, |o| o.u32(id));
                }
                Ok(())
            }
            reset::NAME_GET => Self::name_get(p, out, &self.cfg.reset_domains, |d| &d.name),
            reset::NOTIFY => {
                self.set_notify(p, n, |s, i| s.resets.get_mut(i).map(|d| &mut d.notify))
            }
            _ => Err(code::NOT_SUPPORTED),
        }
    }

    fn voltage_valid(levels: &VoltageLevels, level: i32) -> bool {
        match levels {
            VoltageLevels::Discrete(v) => v.contains(&level),
            VoltageLevels::Range { min, max, step } => {
                level >= *min
                    && level <= *max
                    && (i64::from(level) - i64::from(*min)) % i64::from((*step).max(1)) == 0
            }
        }
    }

    pub(crate) fn voltage(
        &mut self,
        h: &Header,
        p: Params<'_>,
        out: &mut Out<'_>,
    ) -> reply::Result {
        let n = self.cfg.voltage_domains.len();
        match h.message_id {
            common::PROTOCOL_VERSION => word_reply(p, out, 0x10000),
            common::PROTOCOL_ATTRIBUTES => word_reply(p, out, n.min(0xFFFF) as u32),
            common::PROTOCOL_MESSAGE_ATTRIBUTES => {
                self.msg_attrs(p, out, &[0, 1, 2, 3, 4, 5, 6, 7, 8, voltage::NAME_GET], &[])
            }
            voltage::DOMAIN_ATTRIBUTES => {
                let [id] = p.exact::<1>()?;
                let i = object_index(id, n)?;
                let Some(d) = self.cfg.voltage_domains.get(i) else {
                    return Err(code::NOT_FOUND);
                };
                out.u32(
                    (u32::from(d.async_set && self.cfg.p2a) << 31)
                        | Self::ext_name_bit(&d.name, 30),
                )?;
                let name = d.name.clone();
                out.name16(&name)
            }
            voltage::DESCRIBE_LEVELS => {
                let [id, first] = p.exact::<2>()?;
                let i = object_index(id, n)?;
                let Some(d) = self.cfg.voltage_domains.get(i) else {
                    return Err(code::NOT_FOUND);
                };
                match &d.levels {
                    VoltageLevels::Range { min, max, step } => {
                        write_segmented(out, *min, *max, *step)
                    }
                    VoltageLevels::Discrete(v) => {
                        self.write_page(out, first, v, RETURNED_12_REMAINING_16)
                    }
                }
            }
            voltage::CONFIG_SET => {
                let [id, cfg] = p.exact::<2>()?;
                let i = object_index(id, n)?;
                if cfg & !0xF != 0 || (cfg != voltage::CONFIG_ON && cfg != voltage::CONFIG_OFF) {
                    return Err(code::INVALID_PARAMETERS);
                }
                if let Some(d) = self.voltages.get_mut(i) {
                    d.config = cfg;
                }
                Ok(())
            }
            voltage::CONFIG_GET => {
                let [id] = p.exact::<1>()?;
                let i = object_index(id, n)?;
                out.u32(self.voltages.get(i).map_or(0, |d| d.config))
            }
            voltage::LEVEL_SET => {
                let [id, flags, level] = p.exact::<3>()?;
                let i = object_index(id, n)?;
                let level = level as i32;
                let Some(d) = self.cfg.voltage_domains.get(i) else {
                    return Err(code::NOT_FOUND);
                };
                if !Self::voltage_valid(&d.levels, level) {
                    return Err(code::OUT_OF_RANGE);
                }
                let asynchronous = flags & 1 != 0;
                if asynchronous {
                    if !d.async_set {
                        return Err(code::NOT_SUPPORTED);
                    }
                    self.can_defer()?;
                }
                if let Some(s) = self.voltages.get_mut(i) {
                    s.level = level;
                }
                if asynchronous {
                    self.push_delayed(h, |o| {
                        o.u32(id)?;
                        o.i32(level)
                    });
                }
                Ok(())
            }
            voltage::NAME_GET => Self::name_get(p, out, &self.cfg.voltage_domains, |d| &d.name),
            voltage::LEVEL_GET => {
                let [id] = p.exact::<1>()?;
                let i = object_index(id, n)?;
                out.i32(self.voltages.get(i).map_or(0, |d| d.level))
            }
            _ => Err(code::NOT_SUPPORTED),
        }
    }
}
