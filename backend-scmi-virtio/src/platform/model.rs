//! The simulated platform: state, command dispatch, P2A queue, Base, System power and the fwipc
//! test protocol. The other protocols live in the files beside this one.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::config::{PlatformConfig, SensorConfig};
use super::reply::{self, word_reply, Out, Params};
use super::PlatformModel;
use crate::header::{Header, MsgType};
use crate::protocol::ids::{base, common, proto, system};
use crate::status::code;

/// Largest P2A message (header included) the platform queues.
pub const P2A_MSG_MAX: usize = 256;

/// One queued P2A message.
#[derive(Clone, Copy)]
pub(crate) struct P2aMsg {
    pub(crate) delayed: bool,
    pub(crate) len: usize,
    pub(crate) buf: [u8; P2A_MSG_MAX],
}

/// Counters of the simulated platform.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlatformStats {
    /// Commands handled.
    pub commands: u64,
    /// Commands answered with a non-SUCCESS status.
    pub errors: u64,
    /// Delayed responses queued.
    pub delayed_queued: u64,
    /// Notifications queued.
    pub notifications_queued: u64,
    /// Notifications dropped (queue full, or larger than the agent's buffer).
    pub notifications_dropped: u64,
    /// P2A messages handed out by `next_p2a`.
    pub p2a_sent: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SensorState {
    pub(crate) enabled: bool,
    pub(crate) notify: bool,
    pub(crate) trip_notify: bool,
    pub(crate) counter: u8,
    pub(crate) reads: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClockState {
    pub(crate) rate: u64,
    pub(crate) enabled: bool,
    pub(crate) notify: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PerfState {
    pub(crate) level: u32,
    pub(crate) max: u32,
    pub(crate) min: u32,
    pub(crate) notify_level: bool,
    pub(crate) notify_limits: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DomainState {
    pub(crate) state: u32,
    pub(crate) notify: bool,
    pub(crate) level: i32,
    pub(crate) config: u32,
}

/// The simulated SCMI platform. Build it from a [`PlatformConfig`]; it implements
/// [`PlatformModel`], so the simulated virtio device (or `platform::direct::DirectTransport`)
/// can host it. Never panics on any request bytes.
pub struct Platform {
    pub(crate) cfg: PlatformConfig,
    pub(crate) protocols: Vec<u8>,
    pub(crate) sensors: Vec<SensorState>,
    pub(crate) clocks: Vec<ClockState>,
    pub(crate) perf: Vec<PerfState>,
    pub(crate) power: Vec<DomainState>,
    pub(crate) resets: Vec<DomainState>,
    pub(crate) voltages: Vec<DomainState>,
    pub(crate) system_state: u32,
    pub(crate) system_notify: bool,
    pub(crate) error_notify: bool,
    pub(crate) p2a: VecDeque<P2aMsg>,
    pub(crate) hold_p2a: bool,
    pub(crate) stats: PlatformStats,
}

impl Platform {
    /// A platform as configured.
    pub fn new(cfg: PlatformConfig) -> Self {
        let mut protocols = Vec::new();
        let mut add = |on: bool, p: u8| {
            if on {
                protocols.push(p)
            }
        };
        add(!cfg.power_domains.is_empty(), proto::POWER);
        add(cfg.system_power, proto::SYSTEM);
        add(!cfg.perf_domains.is_empty(), proto::PERF);
        add(!cfg.clocks.is_empty(), proto::CLOCK);
        add(
            cfg.sensor_protocol || !cfg.sensors.is_empty(),
            proto::SENSOR,
        );
        add(!cfg.reset_domains.is_empty(), proto::RESET);
        add(!cfg.voltage_domains.is_empty(), proto::VOLTAGE);
        add(cfg.test_protocol, proto::FWIPC_TEST);
        for &p in &cfg.extra_protocols {
            if p != proto::BASE && !protocols.contains(&p) {
                protocols.push(p);
            }
        }
        let sensors = cfg
            .sensors
            .iter()
            .map(|s: &SensorConfig| SensorState {
                enabled: s.enabled,
                ..SensorState::default()
            })
            .collect();
        let clocks = cfg
            .clocks
            .iter()
            .map(|c| ClockState {
                rate: c.rate,
                enabled: c.enabled,
                notify: false,
            })
            .collect();
        let perf = cfg
            .perf_domains
            .iter()
            .map(|d| PerfState {
                level: d.level,
                max: d.levels.iter().map(|l| l.0).max().unwrap_or(0),
                min: d.levels.iter().map(|l| l.0).min().unwrap_or(0),
                ..PerfState::default()
            })
            .collect();
        let power = cfg
            .power_domains
            .iter()
            .map(|d| DomainState {
                state: d.state,
                ..DomainState::default()
            })
            .collect();
        let resets = cfg
            .reset_domains
            .iter()
            .map(|_| DomainState::default())
            .collect();
        let voltages = cfg
            .voltage_domains
            .iter()
            .map(|d| DomainState {
                level: d.level,
                config: crate::protocol::ids::voltage::CONFIG_ON,
                ..DomainState::default()
            })
            .collect();
        let cap = cfg.p2a_capacity;
        Platform {
            cfg,
            protocols,
            sensors,
            clocks,
            perf,
            power,
            resets,
            voltages,
            system_state: 3,
            system_notify: false,
            error_notify: false,
            p2a: VecDeque::with_capacity(cap),
            hold_p2a: false,
            stats: PlatformStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PlatformConfig {
        &self.cfg
    }

    /// Mutable quirks (misbehaviour knobs), e.g. to switch on "remaining = 1 forever".
    pub fn quirks_mut(&mut self) -> &mut super::config::Quirks {
        &mut self.cfg.quirks
    }

    /// Counters.
    pub fn stats(&self) -> PlatformStats {
        self.stats
    }

    /// Protocols implemented (Base excluded), in DISCOVER_LIST_PROTOCOLS order.
    pub fn protocols(&self) -> &[u8] {
        &self.protocols
    }

    /// P2A messages pending.
    pub fn pending_p2a(&self) -> usize {
        self.p2a.len()
    }

    /// Hold every P2A message (as if the eventq had no buffers) until released.
    pub fn set_hold_p2a(&mut self, hold: bool) {
        self.hold_p2a = hold;
    }

    /// Whether a sensor is currently enabled.
    pub fn sensor_enabled(&self, id: usize) -> Option<bool> {
        self.sensors.get(id).map(|s| s.enabled)
    }

    /// Whether a reset domain is held in reset.
    pub fn reset_asserted(&self, id: usize) -> Option<bool> {
        self.resets.get(id).map(|s| s.state != 0)
    }

    /// Raise a BASE_ERROR_EVENT (if enabled) with `reports` 64-bit error reports.
    pub fn raise_error_event(&mut self, fatal: bool, reports: &[u64]) -> bool {
        if !self.error_notify {
            return false;
        }
        let n = reports.len().min(0x3FF);
        let status = (u32::from(fatal) << 31) | n as u32;
        self.push_notification(proto::BASE, base::N_ERROR_EVENT, |o| {
            o.u32(0)?;
            o.u32(status)?;
            for r in reports.iter().take(n) {
                o.u64(*r)?;
            }
            Ok(())
        })
    }

    /// Queue a P2A message built by `body` (after the header). Notifications are dropped and
    /// counted when the queue is full or the body does not fit.
    pub(crate) fn push_p2a(
        &mut self,
        h: Header,
        body: impl FnOnce(&mut Out<'_>) -> reply::Result,
    ) -> bool {
        let delayed = h.msg_type == MsgType::DelayedResponse;
        if self.p2a.len() >= self.cfg.p2a_capacity {
            if !delayed {
                self.stats.notifications_dropped += 1;
            }
            return false;
        }
        let mut msg = P2aMsg {
            delayed,
            len: 0,
            buf: [0; P2A_MSG_MAX],
        };
        msg.buf[..4].copy_from_slice(&h.to_le_bytes());
        let mut out = Out::new(&mut msg.buf, 4);
        if body(&mut out).is_err() {
            if !delayed {
                self.stats.notifications_dropped += 1;
            }
            return false;
        }
        msg.len = out.len();
        self.p2a.push_back(msg);
        if delayed {
            self.stats.delayed_queued += 1;
        } else {
            self.stats.notifications_queued += 1;
        }
        true
    }

    /// Queue a notification (type 3, token 0).
    pub(crate) fn push_notification(
        &mut self,
        protocol: u8,
        message: u8,
        body: impl FnOnce(&mut Out<'_>) -> reply::Result,
    ) -> bool {
        let h = Header {
            message_id: message,
            msg_type: MsgType::Notification,
            protocol_id: protocol,
            token: 0,
        };
        self.push_p2a(h, body)
    }

    /// Queue a delayed response for command `h`: status SUCCESS, then `body`.
    pub(crate) fn push_delayed(
        &mut self,
        h: &Header,
        body: impl FnOnce(&mut Out<'_>) -> reply::Result,
    ) {
        let dh = Header {
            msg_type: MsgType::DelayedResponse,
            ..*h
        };
        self.push_p2a(dh, |o| {
            o.u32(0)?;
            body(o)
        });
    }

    /// Whether an asynchronous command can be accepted (P2A negotiated and room for its delayed
    /// response); BUSY when the queue is full, NOT_SUPPORTED without P2A.
    pub(crate) fn can_defer(&self) -> reply::Result {
        if !self.cfg.p2a {
            return Err(code::NOT_SUPPORTED);
        }
        if self.p2a.len() >= self.cfg.p2a_capacity {
            return Err(code::BUSY);
        }
        Ok(())
    }

    /// NOT_SUPPORTED unless P2A channels exist (notification enables, async requests).
    pub(crate) fn need_p2a(&self) -> reply::Result {
        if self.cfg.p2a {
            Ok(())
        } else {
            Err(code::NOT_SUPPORTED)
        }
    }

    /// PROTOCOL_MESSAGE_ATTRIBUTES: 0 for an implemented message, NOT_FOUND otherwise; messages
    /// in `p2a_only` are hidden without P2A channels (docs/protocols/scmi.md §1.1).
    pub(crate) fn msg_attrs(
        &self,
        p: Params<'_>,
        out: &mut Out<'_>,
        implemented: &[u8],
        p2a_only: &[u8],
    ) -> reply::Result {
        let [m] = p.exact::<1>()?;
        let m = u8::try_from(m).map_err(|_| code::NOT_FOUND)?;
        let known = implemented.contains(&m) || (self.cfg.p2a && p2a_only.contains(&m));
        if known {
            out.u32(0)
        } else {
            Err(code::NOT_FOUND)
        }
    }

    /// `*_NAME_GET` of the object the one parameter picks among `objects`: flags 0, the 64-byte
    /// name. NOT_FOUND for an id out of range.
    pub(crate) fn name_get<T>(
        p: Params<'_>,
        out: &mut Out<'_>,
        objects: &[T],
        name: fn(&T) -> &str,
    ) -> reply::Result {
        let [id] = p.exact::<1>()?;
        let i = object_index(id, objects.len())?;
        let name = objects.get(i).map(name).ok_or(code::NOT_FOUND)?;
        out.u32(0)?;
        out.name64(name)
    }

    /// A `*_NOTIFY` enable (parameters: object id below `n`, enable word): NOT_SUPPORTED without
    /// P2A channels, then bit 0 of the enable word goes to the flag `flag` picks for the object.
    pub(crate) fn set_notify(
        &mut self,
        p: Params<'_>,
        n: usize,
        flag: impl FnOnce(&mut Self, usize) -> Option<&mut bool>,
    ) -> reply::Result {
        self.need_p2a()?;
        let [id, en] = p.exact::<2>()?;
        let i = object_index(id, n)?;
        if let Some(f) = flag(self, i) {
            *f = en & 1 != 0;
        }
        Ok(())
    }

    /// Attribute bit `bit` if `name` needs the extended name (more than 15 bytes).
    pub(crate) fn ext_name_bit(name: &str, bit: u32) -> u32 {
        u32::from(name.len() > 15) << bit
    }

    /// Multi-part `remaining`, as the quirks say.
    pub(crate) fn remaining(&self, real: usize) -> usize {
        if self.cfg.quirks.remaining_forever {
            real.max(1)
        } else {
            real
        }
    }

    /// Whether the `short_listings_from` quirk ends the listing at start index `first`.
    pub(crate) fn listing_cut(&self, first: u32) -> bool {
        self.cfg
            .quirks
            .short_listings_from
            .is_some_and(|k| usize::try_from(first).is_ok_and(|f| f >= k))
    }

    /// Start index of a multi-part request. With `remaining_forever` a request past the end is
    /// answered with the last entry again (a platform that never ends the enumeration).
    pub(crate) fn start_index(&self, first: u32, total: usize) -> Result<usize, i32> {
        let first = usize::try_from(first).map_err(|_| code::INVALID_PARAMETERS)?;
        let first = if self.cfg.quirks.remaining_forever && total > 0 {
            first.min(total - 1)
        } else {
            first
        };
        if first >= total {
            return Err(code::INVALID_PARAMETERS);
        }
        Ok(first)
    }

    fn dispatch(&mut self, h: &Header, p: Params<'_>, out: &mut Out<'_>) -> reply::Result {
        if !self.protocols.contains(&h.protocol_id) && h.protocol_id != proto::BASE {
            return Err(code::NOT_SUPPORTED);
        }
        match h.protocol_id {
            proto::BASE => self.base(h, p, out),
            proto::SENSOR => self.sensor(h, p, out),
            proto::CLOCK => self.clock(h, p, out),
            proto::PERF => self.perf(h, p, out),
            proto::POWER => self.power(h, p, out),
            proto::RESET => self.reset(h, p, out),
            proto::VOLTAGE => self.voltage(h, p, out),
            proto::SYSTEM => self.system(h, p, out),
            proto::FWIPC_TEST if self.cfg.test_protocol => self.test_protocol(h, p, out),
            _ => self.extra_protocol(h, p, out),
        }
    }

    fn base(&mut self, h: &Header, p: Params<'_>, out: &mut Out<'_>) -> reply::Result {
        match h.message_id {
            common::PROTOCOL_VERSION => word_reply(p, out, self.cfg.base_version),
            common::PROTOCOL_ATTRIBUTES => {
                p.exact::<0>()?;
                let np = self.protocols.len().min(255) as u32;
                let na = self.cfg.agents.len().min(255) as u32;
                out.u32(np | (na << 8))
            }
            common::PROTOCOL_MESSAGE_ATTRIBUTES => {
                let mut imp: Vec<u8> = alloc::vec![0, 1, 2, 3, 5, 6];
                if self.cfg.sub_vendor.is_some() {
                    imp.push(base::DISCOVER_SUB_VENDOR);
                }
                if !self.cfg.agents.is_empty() {
                    imp.push(base::DISCOVER_AGENT);
                }
                self.msg_attrs(p, out, &imp, &[base::NOTIFY_ERRORS])
            }
            base::DISCOVER_VENDOR => {
                p.exact::<0>()?;
                let v = self.cfg.vendor.clone();
                out.name16(&v)
            }
            base::DISCOVER_SUB_VENDOR => {
                p.exact::<0>()?;
                match self.cfg.sub_vendor.clone() {
                    Some(s) => out.name16(&s),
                    None => Err(code::NOT_SUPPORTED),
                }
            }
            base::DISCOVER_IMPLEMENTATION_VERSION => {
                word_reply(p, out, self.cfg.implementation_version)
            }
            base::DISCOVER_LIST_PROTOCOLS => {
                let [skip] = p.exact::<1>()?;
                if self.listing_cut(skip) {
                    return out.u32(0);
                }
                let skip = usize::try_from(skip).map_err(|_| code::INVALID_PARAMETERS)?;
                let total = self.protocols.len();
                if skip > total {
                    return Err(code::INVALID_PARAMETERS);
                }
                let room_ids = out.room().saturating_sub(4) / 4 * 4;
                let n = super::reply::fit(
                    room_ids,
                    1,
                    total - skip,
                    self.cfg.quirks.max_entries_per_reply,
                );
                if n == 0 && total > skip {
                    return Err(code::COMMS_ERROR);
                }
                out.u32(n as u32)?;
                let mut words = [0u32; 64];
                for (i, id) in self.protocols.iter().skip(skip).take(n).enumerate() {
                    let w = if self.cfg.quirks.list_protocols_bad_packing {
                        i % 4
                    } else {
                        i / 4
                    };
                    if let Some(slot) = words.get_mut(w) {
                        *slot |= u32::from(*id) << ((i % 4) * 8);
                    }
                }
                for w in words.iter().take(n.div_ceil(4)) {
                    out.u32(*w)?;
                }
                Ok(())
            }
            base::DISCOVER_AGENT => {
                let [id] = p.exact::<1>()?;
                if self.cfg.agents.is_empty() {
                    return Err(code::NOT_SUPPORTED);
                }
                // 0xFFFF_FFFF asks about the calling agent (agent 1 here).
                let id = if id == u32::MAX { 1 } else { id };
                let name = if id == 0 {
                    alloc::string::String::from("platform")
                } else {
                    let i = usize::try_from(id - 1).map_err(|_| code::NOT_FOUND)?;
                    self.cfg.agents.get(i).cloned().ok_or(code::NOT_FOUND)?
                };
                out.u32(id)?;
                out.name16(&name)
            }
            base::NOTIFY_ERRORS => {
                self.need_p2a()?;
                let [en] = p.exact::<1>()?;
                self.error_notify = en & 1 != 0;
                Ok(())
            }
            _ => Err(code::NOT_SUPPORTED),
        }
    }

    /// A listed protocol with nothing but the common messages.
    fn extra_protocol(&mut self, h: &Header, p: Params<'_>, out: &mut Out<'_>) -> reply::Result {
        match h.message_id {
            common::PROTOCOL_VERSION => word_reply(p, out, 0x10000),
            common::PROTOCOL_ATTRIBUTES => word_reply(p, out, 0),
            common::PROTOCOL_MESSAGE_ATTRIBUTES => self.msg_attrs(p, out, &[0, 1, 2], &[]),
            _ => Err(code::NOT_SUPPORTED),
        }
    }

    fn system(&mut self, h: &Header, p: Params<'_>, out: &mut Out<'_>) -> reply::Result {
        match h.message_id {
            common::PROTOCOL_VERSION => word_reply(p, out, 0x10000),
            common::PROTOCOL_ATTRIBUTES => word_reply(p, out, 0),
            common::PROTOCOL_MESSAGE_ATTRIBUTES => {
                self.msg_attrs(p, out, &[0, 1, 2, 3, 4], &[system::STATE_NOTIFY])
            }
            system::STATE_SET => {
                let [flags, state] = p.exact::<2>()?;
                if state > 4 && state & (1 << 31) == 0 {
                    return Err(code::INVALID_PARAMETERS);
                }
                self.system_state = state;
                if self.system_notify {
                    self.push_notification(proto::SYSTEM, system::N_STATE_NOTIFIER, |o| {
                        o.u32(1)?;
                        o.u32(flags & 1)?;
                        o.u32(state)
                    });
                }
                Ok(())
            }
            system::STATE_GET => word_reply(p, out, self.system_state),
            system::STATE_NOTIFY => {
                self.need_p2a()?;
                let [en] = p.exact::<1>()?;
                self.system_notify = en & 1 != 0;
                Ok(())
            }
            _ => Err(code::NOT_SUPPORTED),
        }
    }

    fn test_protocol(&mut self, h: &Header, p: Params<'_>, out: &mut Out<'_>) -> reply::Result {
        match h.message_id {
            common::PROTOCOL_VERSION => word_reply(p, out, 0x10000),
            common::PROTOCOL_ATTRIBUTES => word_reply(p, out, 0),
            common::PROTOCOL_MESSAGE_ATTRIBUTES => {
                self.msg_attrs(p, out, &[0, 1, 2, super::FWIPC_TEST_ECHO], &[])
            }
            super::FWIPC_TEST_ECHO => {
                // Any length (not only whole words), up to the writable space.
                if p.bytes().len() > out.room() {
                    return Err(code::COMMS_ERROR);
                }
                for b in p.bytes() {
                    out.bytes(&[fwipc_transport_api_echo(*b)])?;
                }
                Ok(())
            }
            _ => Err(code::NOT_SUPPORTED),
        }
    }
}

/// Index of object `id` among `len` objects; NOT_FOUND past the end.
pub(crate) fn object_index(id: u32, len: usize) -> Result<usize, i32> {
    let i = usize::try_from(id).map_err(|_| code::NOT_FOUND)?;
    if i < len {
        Ok(i)
    } else {
        Err(code::NOT_FOUND)
    }
}

fn fwipc_transport_api_echo(b: u8) -> u8 {
    // Same rule as `fwipc_transport_api::fixture::echo_reply` (std-only there).
    !b
}

impl PlatformModel for Platform {
    fn handle_command(&mut self, req: &[u8], resp: &mut [u8]) -> usize {
        self.stats.commands += 1;
        if resp.len() < 8 {
            // Not even room for header + status: nothing sensible can be written.
            self.stats.errors += 1;
            return 0;
        }
        let hword = req.first_chunk::<4>().copied().unwrap_or([0; 4]);
        resp[..4].copy_from_slice(&hword);
        let result = if req.len() < 4 {
            Err(code::PROTOCOL_ERROR)
        } else {
            match Header::decode(u32::from_le_bytes(hword)) {
                Ok(h) if h.msg_type == MsgType::Command => {
                    let params = Params::new(req.get(4..).unwrap_or(&[]));
                    let mut out = Out::new(resp, 8);
                    let r = self.dispatch(&h, params, &mut out);
                    r.map(|()| out.len())
                }
                _ => Err(code::NOT_SUPPORTED),
            }
        };
        let (status, len) = match result {
            Ok(len) => (code::SUCCESS, len),
            Err(s) => {
                self.stats.errors += 1;
                (s, 8)
            }
        };
        resp[4..8].copy_from_slice(&status.to_le_bytes());
        len
    }

    fn next_p2a(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.hold_p2a {
            return None;
        }
        loop {
            let front = self.p2a.front()?;
            if front.len <= buf.len() {
                let n = front.len;
                buf[..n].copy_from_slice(&front.buf[..n]);
                self.p2a.pop_front();
                self.stats.p2a_sent += 1;
                return Some(n);
            }
            if front.delayed {
                // Delayed responses must be delivered: wait for a big enough buffer.
                return None;
            }
            self.p2a.pop_front();
            self.stats.notifications_dropped += 1;
        }
    }

    fn queue_notification(&mut self, protocol: u8, message: u8, payload: &[u8]) {
        self.push_notification(protocol, message, |o| o.bytes(payload));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::PlatformModel;

    fn call(p: &mut Platform, proto: u8, msg: u8, params: &[u32], space: usize) -> Vec<u8> {
        let mut req = Header::command(proto, msg, 5).to_le_bytes().to_vec();
        for w in params {
            req.extend_from_slice(&w.to_le_bytes());
        }
        let mut resp = alloc::vec![0u8; space];
        let n = p.handle_command(&req, &mut resp);
        resp.truncate(n);
        resp
    }

    #[test]
    fn header_echoed_and_status_only_on_error() {
        let mut p = Platform::new(PlatformConfig::full());
        let r = call(&mut p, 0x10, 0x3, &[], 136);
        assert_eq!(&r[..4], &Header::command(0x10, 3, 5).to_le_bytes());
        assert_eq!(&r[4..8], &[0; 4]);
        assert_eq!(&r[8..14], b"fwipc\0");
        let r = call(&mut p, 0x10, 0x7F, &[], 136);
        assert_eq!(r.len(), 8);
        assert_eq!(
            i32::from_le_bytes(r[4..8].try_into().unwrap()),
            code::NOT_SUPPORTED
        );
        let r = call(&mut p, 0x42, 0, &[], 136);
        assert_eq!(
            i32::from_le_bytes(r[4..8].try_into().unwrap()),
            code::NOT_SUPPORTED
        );
        // Less than header + status of writable space: nothing written.
        assert!(call(&mut p, 0x10, 0, &[], 7).is_empty());
    }

    #[test]
    fn list_protocols_packs_byte_i_mod_4_of_word_i_div_4() {
        let mut p = Platform::new(PlatformConfig::full());
        let r = call(&mut p, 0x10, 0x6, &[1], 136);
        let n = u32::from_le_bytes(r[8..12].try_into().unwrap());
        assert_eq!(n, 7);
        assert_eq!(&r[12..19], &p.protocols()[1..]);
        assert_eq!(r.len(), 12 + 8, "zero padded to whole words");
        assert_eq!(r[19], 0);
        let r = call(&mut p, 0x10, 0x6, &[9], 136);
        assert_eq!(
            i32::from_le_bytes(r[4..8].try_into().unwrap()),
            code::INVALID_PARAMETERS
        );
    }

    #[test]
    fn unit_exponent_is_in_the_descriptor_and_constant_sensors_never_drift() {
        let mut s = SensorConfig::scalar("soc", 2, 45_000);
        s.unit_exponent = -3;
        s.constant = true;
        let mut p = Platform::new(PlatformConfig {
            sensors: alloc::vec![s, SensorConfig::scalar("drifts", 2, 7)],
            ..PlatformConfig::default()
        });
        // SENSOR_DESCRIPTION_GET from 0: flags, then id, attributes_low, attributes_high.
        let r = call(&mut p, 0x15, 0x3, &[0], 136);
        let high = u32::from_le_bytes(r[20..24].try_into().unwrap());
        assert_eq!(high & 0xFF, 2);
        assert_eq!((high >> 11) & 0x1F, 0x1D, "-3 as 5-bit two's complement");
        for _ in 0..3 {
            let r = call(&mut p, 0x15, 0x6, &[0, 0], 136);
            assert_eq!(i64::from_le_bytes(r[8..16].try_into().unwrap()), 45_000);
        }
        let r = call(&mut p, 0x15, 0x6, &[1, 0], 136);
        assert_eq!(i64::from_le_bytes(r[8..16].try_into().unwrap()), 7);
        let r = call(&mut p, 0x15, 0x6, &[1, 0], 136);
        assert_eq!(i64::from_le_bytes(r[8..16].try_into().unwrap()), 8);
    }

    #[test]
    fn echo_inverts_any_length_up_to_the_space() {
        let mut p = Platform::new(PlatformConfig::default());
        let mut req = Header::command(0x81, 0x3, 1).to_le_bytes().to_vec();
        req.extend_from_slice(&[1, 2, 3]);
        let mut resp = [0u8; 11];
        assert_eq!(p.handle_command(&req, &mut resp), 11);
        assert_eq!(&resp[8..], &[!1u8, !2, !3]);
        let mut small = [0u8; 10];
        assert_eq!(p.handle_command(&req, &mut small), 8);
        assert_eq!(
            i32::from_le_bytes(small[4..8].try_into().unwrap()),
            code::COMMS_ERROR
        );
    }

    #[test]
    fn p2a_queue_is_bounded_and_delayed_responses_wait_for_room() {
        let mut p = Platform::new(PlatformConfig {
            p2a_capacity: 2,
            ..PlatformConfig::full()
        });
        p.queue_notification(0x81, 0, &[1; 100]);
        p.queue_notification(0x81, 0, &[2; 4]);
        p.queue_notification(0x81, 0, &[3; 4]);
        assert_eq!(p.stats().notifications_dropped, 1);
        // A full queue refuses an asynchronous command with BUSY.
        let r = call(&mut p, 0x15, 0x6, &[0, 1], 136);
        assert_eq!(i32::from_le_bytes(r[4..8].try_into().unwrap()), code::BUSY);
        // A notification larger than the buffer is dropped; the next one comes out.
        let mut buf = [0u8; 16];
        assert_eq!(p.next_p2a(&mut buf), Some(8));
        assert_eq!(p.stats().notifications_dropped, 2);
        assert_eq!(p.next_p2a(&mut buf), None);
        // Delayed responses stay queued until a big enough buffer comes.
        let r = call(&mut p, 0x15, 0x6, &[0, 1], 136);
        assert_eq!(r.len(), 8);
        assert_eq!(p.next_p2a(&mut buf[..8]), None);
        assert_eq!(p.pending_p2a(), 1);
        let mut big = [0u8; 64];
        let n = p.next_p2a(&mut big).unwrap();
        let h = Header::decode_bytes(&big[..n]).unwrap();
        assert_eq!(
            (h.msg_type, h.token, h.protocol_id, h.message_id),
            (MsgType::DelayedResponse, 5, 0x15, 6)
        );
    }
}
