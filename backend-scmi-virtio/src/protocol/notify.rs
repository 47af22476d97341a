//! Typed notification bodies (the bytes after the header). Fixed-size notifications must have
//! exactly their specified length (docs/protocols/scmi.md §8 item 3).
//!
//! ```
//! use fwipc_scmi_virtio::header::Header;
//! use fwipc_scmi_virtio::protocol::{notify::Notification, Event};
//! // vhost-device-scmi's SENSOR_UPDATE for a 3-axis sensor (docs/protocols/virtio.md §2).
//! let words = [0u32, 0, 0, 0, 0, 0, 100, 0, 0, 0, 200, 0, 0, 0];
//! let body: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
//! let ev = Event { header: Header::decode(0x5701).unwrap(), payload: &body };
//! match Notification::decode(&ev).unwrap() {
//!     Notification::SensorUpdate(u) => {
//!         assert_eq!((u.sensor_id, u.count), (0, 3));
//!         assert_eq!(u.value(&body, 2).unwrap().value, 200);
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```

use super::error::Malformed;
use super::ids::{base, clock, perf, power, proto, reset, sensor, system};
use super::p2a::Event;
use super::sensor::{parse_readings, SensorValue};
use super::wire::Reader;

/// SENSOR_UPDATE: agent, sensor and `count` 16-byte readings (one per axis, one if scalar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SensorUpdate {
    /// Agent id.
    pub agent_id: u32,
    /// Sensor id.
    pub sensor_id: u32,
    /// Number of readings in the body.
    pub count: usize,
}

impl SensorUpdate {
    /// Reading `i` from the notification body `payload` this was decoded from.
    pub fn value(&self, payload: &[u8], i: usize) -> Option<SensorValue> {
        let start = 8usize.checked_add(i.checked_mul(16)?)?;
        let b = payload.get(start..start.checked_add(16)?)?;
        let mut v = [SensorValue::default()];
        parse_readings(&mut Reader::new(b), &mut v).ok()?;
        Some(v[0])
    }
}

/// A decoded notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notification {
    /// Sensor SENSOR_TRIP_POINT_EVENT (12 bytes).
    TripPoint {
        /// Agent id.
        agent_id: u32,
        /// Sensor id.
        sensor_id: u32,
        /// Trip point descriptor.
        desc: u32,
    },
    /// Sensor SENSOR_UPDATE.
    SensorUpdate(SensorUpdate),
    /// Power POWER_STATE_CHANGED (12 bytes).
    PowerStateChanged {
        /// Agent id.
        agent_id: u32,
        /// Domain id.
        domain_id: u32,
        /// New state.
        state: u32,
    },
    /// Performance LIMITS_CHANGED (16 bytes).
    PerfLimitsChanged {
        /// Agent id.
        agent_id: u32,
        /// Domain id.
        domain_id: u32,
        /// Maximum.
        range_max: u32,
        /// Minimum.
        range_min: u32,
    },
    /// Performance LEVEL_CHANGED (12 bytes).
    PerfLevelChanged {
        /// Agent id.
        agent_id: u32,
        /// Domain id.
        domain_id: u32,
        /// New level.
        level: u32,
    },
    /// Clock RATE_CHANGED (16 bytes; field order **(unverified)**).
    ClockRateChanged {
        /// Agent id.
        agent_id: u32,
        /// Clock id.
        clock_id: u32,
        /// New rate in Hz.
        rate: u64,
    },
    /// Reset RESET_ISSUED (12 bytes).
    ResetIssued {
        /// Agent id.
        agent_id: u32,
        /// Domain id.
        domain_id: u32,
        /// Reset state.
        reset_state: u32,
    },
    /// System power SYSTEM_POWER_STATE_NOTIFIER (12 bytes; a 16-byte form with a timeout word
    /// from newer versions is accepted, **(unverified)**).
    SystemPower {
        /// Agent id.
        agent_id: u32,
        /// Flags (bit 0 graceful).
        flags: u32,
        /// System state (0 shutdown, 1 cold reset, 2 warm reset, 3 power up, 4 suspend).
        system_state: u32,
        /// Timeout, if sent.
        timeout: Option<u32>,
    },
    /// Base BASE_ERROR_EVENT: agent, error status (bit 31 fatal, 9:0 count), `count` u64
    /// reports following.
    BaseError {
        /// Agent id.
        agent_id: u32,
        /// Error status word.
        error_status: u32,
    },
    /// Any other protocol/message (vendor protocols, the fwipc test protocol): the raw body is
    /// in the event.
    Other,
}

fn exact<const N: usize>(p: &[u8]) -> Result<[u32; N], Malformed> {
    if p.len() != N * 4 {
        return Err(if p.len() < N * 4 {
            Malformed::Truncated
        } else {
            Malformed::BadLength
        });
    }
    let mut r = Reader::new(p);
    let mut out = [0u32; N];
    for o in out.iter_mut() {
        *o = r.u32()?;
    }
    Ok(out)
}

impl Notification {
    /// Decode a notification event by protocol and message id.
    pub fn decode(ev: &Event<'_>) -> Result<Notification, Malformed> {
        Self::decode_body(ev.header.protocol_id, ev.header.message_id, ev.payload)
    }

    /// Decode a body given its protocol and message id.
    pub fn decode_body(protocol: u8, message: u8, p: &[u8]) -> Result<Notification, Malformed> {
        Ok(match (protocol, message) {
            (proto::SENSOR, sensor::N_TRIP_POINT_EVENT) => {
                let [agent_id, sensor_id, desc] = exact::<3>(p)?;
                Notification::TripPoint {
                    agent_id,
                    sensor_id,
                    desc,
                }
            }
            (proto::SENSOR, sensor::N_UPDATE) => {
                let mut r = Reader::new(p);
                let agent_id = r.u32()?;
                let sensor_id = r.u32()?;
                let rest = r.remaining();
                if rest == 0 {
                    return Err(Malformed::Truncated);
                }
                if rest & 0xF != 0 {
                    return Err(Malformed::BadLength);
                }
                Notification::SensorUpdate(SensorUpdate {
                    agent_id,
                    sensor_id,
                    count: rest / 16,
                })
            }
            (proto::POWER, power::N_STATE_CHANGED) => {
                let [agent_id, domain_id, state] = exact::<3>(p)?;
                Notification::PowerStateChanged {
                    agent_id,
                    domain_id,
                    state,
                }
            }
            (proto::PERF, perf::N_LIMITS_CHANGED) => {
                let [agent_id, domain_id, range_max, range_min] = exact::<4>(p)?;
                Notification::PerfLimitsChanged {
                    agent_id,
                    domain_id,
                    range_max,
                    range_min,
                }
            }
            (proto::PERF, perf::N_LEVEL_CHANGED) => {
                let [agent_id, domain_id, level] = exact::<3>(p)?;
                Notification::PerfLevelChanged {
                    agent_id,
                    domain_id,
                    level,
                }
            }
            (proto::CLOCK, clock::N_RATE_CHANGED) => {
                let [agent_id, clock_id, lo, hi] = exact::<4>(p)?;
                Notification::ClockRateChanged {
                    agent_id,
                    clock_id,
                    rate: super::wire::join64(lo, hi),
                }
            }
            (proto::RESET, reset::N_ISSUED) => {
                let [agent_id, domain_id, reset_state] = exact::<3>(p)?;
                Notification::ResetIssued {
                    agent_id,
                    domain_id,
                    reset_state,
                }
            }
            (proto::SYSTEM, system::N_STATE_NOTIFIER) => {
                if p.len() == 16 {
                    let [agent_id, flags, system_state, t] = exact::<4>(p)?;
                    Notification::SystemPower {
                        agent_id,
                        flags,
                        system_state,
                        timeout: Some(t),
                    }
                } else {
                    let [agent_id, flags, system_state] = exact::<3>(p)?;
                    Notification::SystemPower {
                        agent_id,
                        flags,
                        system_state,
                        timeout: None,
                    }
                }
            }
            (proto::BASE, base::N_ERROR_EVENT) => {
                let mut r = Reader::new(p);
                let agent_id = r.u32()?;
                let error_status = r.u32()?;
                let count = (error_status & 0x3FF) as usize;
                if r.remaining() != count * 8 {
                    return Err(if r.remaining() < count * 8 {
                        Malformed::Truncated
                    } else {
                        Malformed::BadLength
                    });
                }
                Notification::BaseError {
                    agent_id,
                    error_status,
                }
            }
            _ => Notification::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[u32]) -> alloc::vec::Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn fixed_sizes_are_exact() {
        let b = words(&[0, 2, 5]);
        assert_eq!(
            Notification::decode_body(proto::RESET, 0, &b),
            Ok(Notification::ResetIssued {
                agent_id: 0,
                domain_id: 2,
                reset_state: 5
            })
        );
        assert_eq!(
            Notification::decode_body(proto::RESET, 0, &b[..11]),
            Err(Malformed::Truncated)
        );
        let long = words(&[0, 2, 5, 6]);
        assert_eq!(
            Notification::decode_body(proto::RESET, 0, &long),
            Err(Malformed::BadLength)
        );
        assert_eq!(
            Notification::decode_body(proto::SENSOR, 1, &words(&[0, 1, 2])),
            Err(Malformed::BadLength)
        );
        assert_eq!(
            Notification::decode_body(proto::BASE, 0, &words(&[1, 1, 7, 0])),
            Ok(Notification::BaseError {
                agent_id: 1,
                error_status: 1
            }),
        );
        assert_eq!(
            Notification::decode_body(proto::BASE, 0, &words(&[1, 3, 7, 0])),
            Err(Malformed::Truncated),
        );
    }
}
