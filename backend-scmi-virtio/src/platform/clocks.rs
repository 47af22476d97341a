//! The simulated platform's clock protocol (0x14).

use super::config::ClockRates;
use super::model::{object_index, Platform};
use super::paginate::write_segmented;
use super::reply::{self, word_reply, Out, Params};
use crate::header::Header;
use crate::protocol::describe::RETURNED_12_REMAINING_16;
use crate::protocol::ids::{clock, common, proto};
use crate::status::code;

impl Platform {
    fn clock_index(&self, id: u32) -> Result<usize, i32> {
        object_index(id, self.cfg.clocks.len())
    }

    /// The rate a RATE_SET of `rate` with `flags` (bit 2 round up, bit 3 round auto) selects.
    fn pick_rate(rates: &ClockRates, rate: u64, flags: u32) -> Result<u64, i32> {
        match rates {
            ClockRates::Discrete(v) => {
                if v.contains(&rate) {
                    return Ok(rate);
                }
                if flags & (1 << 3) != 0 {
                    v.iter()
                        .copied()
                        .min_by_key(|r| r.abs_diff(rate))
                        .ok_or(code::OUT_OF_RANGE)
                } else if flags & (1 << 2) != 0 {
                    v.iter()
                        .copied()
                        .filter(|r| *r >= rate)
                        .min()
                        .ok_or(code::OUT_OF_RANGE)
                } else {
                    v.iter()
                        .copied()
                        .filter(|r| *r <= rate)
                        .max()
                        .ok_or(code::OUT_OF_RANGE)
                }
            }
            ClockRates::Range { min, max, step } => {
                if rate < *min || rate > *max {
                    return Err(code::OUT_OF_RANGE);
                }
                let step = (*step).max(1);
                Ok(min + (rate - min) / step * step)
            }
        }
    }

    pub(crate) fn clock(&mut self, h: &Header, p: Params<'_>, out: &mut Out<'_>) -> reply::Result {
        match h.message_id {
            common::PROTOCOL_VERSION => word_reply(p, out, 0x20000),
            common::PROTOCOL_ATTRIBUTES => {
                p.exact::<0>()?;
                let max_async = if self.cfg.p2a { 4 } else { 0 };
                out.u32(self.cfg.clocks.len().min(0xFFFF) as u32 | (max_async << 16))
            }
            common::PROTOCOL_MESSAGE_ATTRIBUTES => self.msg_attrs(
                p,
                out,
                &[0, 1, 2, 3, 4, 5, 6, 7, clock::NAME_GET],
                &[clock::RATE_NOTIFY],
            ),
            clock::ATTRIBUTES => {
                let [id] = p.exact::<1>()?;
                let i = self.clock_index(id)?;
                let en = self.clocks.get(i).is_some_and(|c| c.enabled);
                let name = self
                    .cfg
                    .clocks
                    .get(i)
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                let attrs =
                    u32::from(en) | (u32::from(self.cfg.p2a) << 31) | Self::ext_name_bit(&name, 29);
                out.u32(attrs)?;
                out.name16(&name)
            }
            clock::DESCRIBE_RATES => {
                let [id, first] = p.exact::<2>()?;
                let i = self.clock_index(id)?;
                let Some(c) = self.cfg.clocks.get(i) else {
                    return Err(code::NOT_FOUND);
                };
                match &c.rates {
                    ClockRates::Range { min, max, step } => write_segmented(out, *min, *max, *step),
                    ClockRates::Discrete(v) => {
                        self.write_page(out, first, v, RETURNED_12_REMAINING_16)
                    }
                }
            }
            clock::RATE_SET => {
                let [flags, id, lo, hi] = p.exact::<4>()?;
                let i = self.clock_index(id)?;
                let asynchronous = flags & 1 != 0;
                let ignore_delayed = flags & 2 != 0;
                if asynchronous && !ignore_delayed {
                    self.can_defer()?;
                } else if asynchronous {
                    self.need_p2a()?;
                }
                let Some(c) = self.cfg.clocks.get(i) else {
                    return Err(code::NOT_FOUND);
                };
                let rate = Self::pick_rate(&c.rates, crate::protocol::wire::join64(lo, hi), flags)?;
                let notify = match self.clocks.get_mut(i) {
                    Some(st) => {
                        st.rate = rate;
                        st.notify
                    }
                    None => false,
                };
                if notify {
                    self.push_notification(proto::CLOCK, clock::N_RATE_CHANGED, |o| {
                        o.u32(0)?;
                        o.u32(id)?;
                        o.u64(rate)
                    });
                }
                if asynchronous && !ignore_delayed {
                    self.push_delayed(h, |o| {
                        o.u32(id)?;
                        o.u64(rate)
                    });
                }
                Ok(())
            }
            clock::NAME_GET => Self::name_get(p, out, &self.cfg.clocks, |c| &c.name),
            clock::RATE_GET => {
                let [id] = p.exact::<1>()?;
                let i = self.clock_index(id)?;
                out.u64(self.clocks.get(i).map_or(0, |c| c.rate))
            }
            clock::CONFIG_SET => {
                let [id, attrs] = p.exact::<2>()?;
                let i = self.clock_index(id)?;
                if attrs & !1 != 0 {
                    return Err(code::INVALID_PARAMETERS);
                }
                if let Some(c) = self.clocks.get_mut(i) {
                    c.enabled = attrs & 1 != 0;
                }
                Ok(())
            }
            clock::RATE_NOTIFY => self.set_notify(p, self.cfg.clocks.len(), |s, i| {
                s.clocks.get_mut(i).map(|c| &mut c.notify)
            }),
            _ => Err(code::NOT_SUPPORTED),
        }
    }
}
