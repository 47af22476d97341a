//! The simulated platform's performance protocol (0x13).

use super::model::{object_index, Platform};
use super::reply::{self, word_reply, Out, Params};
use crate::header::Header;
use crate::protocol::describe::RETURNED_16_REMAINING_16;
use crate::protocol::ids::{common, perf, proto};
use crate::status::code;

impl Platform {
    fn perf_index(&self, id: u32) -> Result<usize, i32> {
        object_index(id, self.cfg.perf_domains.len())
    }

    fn perf_level_changed(&mut self, id: u32, level: u32) {
        let i = id as usize;
        if self.perf.get(i).is_some_and(|d| d.notify_level) {
            self.push_notification(proto::PERF, perf::N_LEVEL_CHANGED, |o| {
                o.u32(0)?;
                o.u32(id)?;
                o.u32(level)
            });
        }
    }

    pub(crate) fn perf(&mut self, h: &Header, p: Params<'_>, out: &mut Out<'_>) -> reply::Result {
        match h.message_id {
            common::PROTOCOL_VERSION => word_reply(p, out, 0x20000),
            common::PROTOCOL_ATTRIBUTES => {
                p.exact::<0>()?;
                out.u32(self.cfg.perf_domains.len().min(0xFFFF) as u32)?;
                out.u64(0)?;
                out.u32(0)
            }
            common::PROTOCOL_MESSAGE_ATTRIBUTES => self.msg_attrs(
                p,
                out,
                &[0, 1, 2, 3, 4, 5, 6, 7, 8, perf::NAME_GET],
                &[perf::NOTIFY_LIMITS, perf::NOTIFY_LEVEL],
            ),
            perf::DOMAIN_ATTRIBUTES => {
                let [id] = p.exact::<1>()?;
                let i = self.perf_index(id)?;
                let Some(d) = self.cfg.perf_domains.get(i) else {
                    return Err(code::NOT_FOUND);
                };
                let n = u32::from(self.cfg.p2a);
                out.u32(
                    (1 << 31) | (1 << 30) | (n << 29) | (n << 28) | Self::ext_name_bit(&d.name, 26),
                )?;
                out.u32(0)?;
                out.u32(d.sustained_freq_khz)?;
                out.u32(d.levels.iter().map(|l| l.0).max().unwrap_or(0))?;
                let name = d.name.clone();
                out.name16(&name)
            }
            perf::DESCRIBE_LEVELS => {
                let [id, first] = p.exact::<2>()?;
                let i = self.perf_index(id)?;
                let Some(d) = self.cfg.perf_domains.get(i) else {
                    return Err(code::NOT_FOUND);
                };
                self.write_page(out, first, &d.levels, RETURNED_16_REMAINING_16)
            }
            perf::LIMITS_SET => {
                let [id, max, min] = p.exact::<3>()?;
                let i = self.perf_index(id)?;
                if (max == 0 && min == 0) || min > max {
                    return Err(code::INVALID_PARAMETERS);
                }
                let (notify, level) = match self.perf.get_mut(i) {
                    Some(d) => {
                        d.max = max;
                        d.min = min;
                        let old = d.level;
                        d.level = d.level.clamp(min, max);
                        (d.notify_limits, (d.level != old).then_some(d.level))
                    }
                    None => return Err(code::NOT_FOUND),
                };
                if notify {
                    self.push_notification(proto::PERF, perf::N_LIMITS_CHANGED, |o| {
                        o.u32(0)?;
                        o.u32(id)?;
                        o.u32(max)?;
                        o.u32(min)
                    });
                }
                if let Some(l) = level {
                    self.perf_level_changed(id, l);
                }
                Ok(())
            }
            perf::LIMITS_GET => {
                let [id] = p.exact::<1>()?;
                let i = self.perf_index(id)?;
                let d = self.perf.get(i).copied().unwrap_or_default();
                out.u32(d.max)?;
                out.u32(d.min)
            }
            perf::LEVEL_SET => {
                let [id, level] = p.exact::<2>()?;
                let i = self.perf_index(id)?;
                let valid = self
                    .cfg
                    .perf_domains
                    .get(i)
                    .is_some_and(|d| d.levels.iter().any(|l| l.0 == level));
                let Some(d) = self.perf.get_mut(i) else {
                    return Err(code::NOT_FOUND);
                };
                if !valid || level > d.max || level < d.min {
                    return Err(code::OUT_OF_RANGE);
                }
                d.level = level;
                self.perf_level_changed(id, level);
                Ok(())
            }
            perf::NAME_GET => Self::name_get(p, out, &self.cfg.perf_domains, |d| &d.name),
            perf::LEVEL_GET => {
                let [id] = p.exact::<1>()?;
                let i = self.perf_index(id)?;
                out.u32(self.perf.get(i).map_or(0, |d| d.level))
            }
            perf::NOTIFY_LIMITS | perf::NOTIFY_LEVEL => {
                let level = h.message_id == perf::NOTIFY_LEVEL;
                self.set_notify(p, self.cfg.perf_domains.len(), |s, i| {
                    s.perf.get_mut(i).map(|d| {
                        if level {
                            &mut d.notify_level
                        } else {
                            &mut d.notify_limits
                        }
                    })
                })
            }
            _ => Err(code::NOT_SUPPORTED),
        }
    }
}
