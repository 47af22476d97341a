//! The async face of the agent: SCMI commands as futures, on the transport's own completion
//! machinery ([`fwipc_transport_api::call_async`]: a waker registered with the transport and
//! woken by its completion path, e.g. `ScmiVirtio::complete` from an interrupt handler). No
//! executor dependency: any executor, or [`fwipc_transport_api::block_on_polling`] on bare metal.
//!
//! [`Scmi::futures`] hands out the view. [`ScmiFutures::command`] runs any command whose reply a
//! parser of this crate understands (every `parse_*` of the protocol modules is public); the
//! typed getters below are that call with the parser filled in, the same commands the
//! synchronous views send.
//!
//! - **Deadline**: each command future ends in `Timeout` [`Config::command_timeout`] after its
//!   first poll (an `async fn` starts running there).
//! - **A full transport**: when every message slot is in flight, `send` is refused with `Busy`;
//!   a command future then yields to the executor and tries again until its deadline. The
//!   transport has no "slot free" wake-up, so such a future is polled again at once: fine for
//!   a burst of futures on one executor, a busy loop if nothing else runs.
//! - **Drop while pending** cancels the transfer ([`fwipc_transport_api::TxOutcome::Cancelled`]):
//!   the transport keeps any buffer the platform still owns until it is returned.
//! - Delayed responses (asynchronous SCMI commands) have no future form yet; use the
//!   synchronous `Sensor::reading_async`.
//!
//!
//! ```
//! # use std::sync::Arc;
//! # use fwipc_scmi_virtio::platform::{Platform, PlatformConfig};
//! # use fwipc_scmi_virtio::protocol::{Config, Scmi};
//! # use fwipc_scmi_virtio::sim::{SimDevice, SimDeviceConfig, SimHal};
//! # use fwipc_scmi_virtio::virtio::{ScmiVirtio, ScmiVirtioConfig};
//! # use fwipc_transport_api::{block_on_polling, StdClock, Transport};
//! # let dev = SimDevice::start(SimDeviceConfig::default(), || {
//! #     Box::new(Platform::new(PlatformConfig::full()))
//! # });
//! # let vcfg = ScmiVirtioConfig { clock: Some(Arc::new(StdClock::new())), ..Default::default() };
//! # let virtio = ScmiVirtio::<SimHal, _>::new(dev.transport(), vcfg).unwrap();
//! // Polled completion: no interrupt path here, so the futures check for their replies when
//! // polled (an interrupt-driven agent's futures are woken by `ScmiVirtio::complete`).
//! let scmi = Scmi::new(virtio, StdClock::new(), Config::default().polled()).unwrap();
//! let f = scmi.futures();
//! let (vendor, temp) = block_on_polling(async { (f.vendor().await, f.sensor_reading(0).await) });
//! assert_eq!(vendor.unwrap(), "fwipc");
//! assert_eq!(temp.unwrap().value, 45_000);
//! # scmi.transport().shutdown().unwrap();
//! ```
//!
//! [`Config::command_timeout`]: super::Config::command_timeout

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use fwipc_transport_api::{call_async, Clock, Deadline, Error, Transport};

use super::agent::Scmi;
use super::agent::MAX_REPLY;
use super::base::parse_name;
use super::common::parse_word;
use super::error::{self, Malformed};
use super::ids::{base, clock, perf, power, proto, sensor, voltage};
use super::sensor::{parse_readings, SensorValue};
use super::wire::{Params, Reader, ShortName};
use crate::header::make_target;

/// The async view of an agent; see the [module docs](self).
#[derive(Debug)]
pub struct ScmiFutures<'a, T: Transport, C: Clock> {
    scmi: &'a Scmi<T, C>,
}

impl<T: Transport, C: Clock> Scmi<T, C> {
    /// The async face: the agent's commands as futures ([`ScmiFutures`]).
    pub fn futures(&self) -> ScmiFutures<'_, T, C> {
        ScmiFutures { scmi: self }
    }
}

/// Pending once, then ready: gives the executor's other futures a turn.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T: Transport, C: Clock> ScmiFutures<'_, T, C> {
    /// One command with raw parameter bytes; the return values after the status are copied into
    /// `resp` and their length returned. A non-SUCCESS status is `ScmiError::Status`.
    pub async fn command_raw(
        &self,
        protocol: u8,
        message: u8,
        params: &[u8],
        resp: &mut [u8],
    ) -> error::Result<usize> {
        let s = self.scmi;
        s.count_command();
        let req = s.request(make_target(protocol, message), params);
        let timeout = s.config().command_timeout;
        let deadline = Deadline::after(s.time_source(), timeout);
        loop {
            // The transport strips the status: a non-SUCCESS one arrives as `Error::Remote`.
            match call_async(s.transport(), s.time_source(), &req, &mut *resp, timeout) {
                Ok(reply) => return Ok(reply.await?),
                Err(Error::Busy) if !deadline.expired(s.time_source()) => YieldOnce(false).await,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// One command with `params` words, its return values parsed by `parse` (any `parse_*`
    /// function of the protocol modules, or the caller's own over [`Reader`]).
    pub async fn command<R>(
        &self,
        protocol: u8,
        message: u8,
        params: &[u32],
        parse: impl FnOnce(&mut Reader<'_>) -> Result<R, Malformed>,
    ) -> error::Result<R> {
        let p = Params::words(params);
        let mut buf = [0u8; MAX_REPLY];
        let n = self
            .command_raw(protocol, message, p.as_bytes(), &mut buf)
            .await?;
        self.scmi.parse(buf.get(..n).unwrap_or(&[]), parse)
    }

    /// BASE DISCOVER_VENDOR.
    pub async fn vendor(&self) -> error::Result<ShortName> {
        self.command(proto::BASE, base::DISCOVER_VENDOR, &[], parse_name)
            .await
    }

    /// SENSOR_READING_GET, synchronous reading: one value per axis into `out`; returns how many
    /// the platform sent (only the first `out.len()` are stored).
    pub async fn sensor_reading_axes(
        &self,
        id: u32,
        out: &mut [SensorValue],
    ) -> error::Result<usize> {
        self.command(proto::SENSOR, sensor::READING_GET, &[id, 0], |r| {
            parse_readings(r, out)
        })
        .await
    }

    /// SENSOR_READING_GET, the first axis.
    pub async fn sensor_reading(&self, id: u32) -> error::Result<SensorValue> {
        let mut v = [SensorValue::default()];
        self.sensor_reading_axes(id, &mut v).await?;
        Ok(v[0])
    }

    /// CLOCK_RATE_GET, in Hz.
    pub async fn clock_rate(&self, id: u32) -> error::Result<u64> {
        self.command(proto::CLOCK, clock::RATE_GET, &[id], |r| r.u64_pair())
            .await
    }

    /// PERFORMANCE_LEVEL_GET.
    pub async fn perf_level(&self, domain: u32) -> error::Result<u32> {
        self.command(proto::PERF, perf::LEVEL_GET, &[domain], parse_word)
            .await
    }

    /// POWER_STATE_GET.
    pub async fn power_state(&self, domain: u32) -> error::Result<u32> {
        self.command(proto::POWER, power::STATE_GET, &[domain], parse_word)
            .await
    }

    /// VOLTAGE_LEVEL_GET, in microvolts.
    pub async fn voltage_level(&self, domain: u32) -> error::Result<i32> {
        self.command(proto::VOLTAGE, voltage::LEVEL_GET, &[domain], |r| r.i32())
            .await
    }
}
