//! The SCMI platform's side of the protocols: request bytes in, reply bytes out. Transport-free,
//! so the simulated virtio device (`crate::sim`) and any other simulator can host it.
//!
//! [`Platform`](crate::platform::Platform) is the simulated platform: Base, Sensor, Clock, Performance, Power, Reset,
//! Voltage, System power and the fwipc test protocol, configured by [`PlatformConfig`](crate::platform::PlatformConfig).
//! [`DirectTransport`](crate::platform::direct::DirectTransport) runs it behind a `Transport` without virtio: the quickest way to try
//! the typed agent, and what the protocol tests use (the whole stack, rings included, is
//! `crate::sim`).

mod clocks;
pub mod config;
pub mod direct;
mod model;
mod paginate;
mod perf;
mod power_reset_voltage;
mod reply;
mod sensors;

pub use config::{
    ClockConfig, ClockRates, PerfDomainConfig, PlatformConfig, PowerDomainConfig, Quirks,
    ResetDomainConfig, SensorConfig, VoltageDomainConfig, VoltageLevels,
};
pub use model::{Platform, PlatformStats, P2A_MSG_MAX};

/// The fwipc test protocol (vendor range 0x80..=0xFF) the simulated platform implements for the
/// conformance suite.
pub const FWIPC_TEST_PROTOCOL: u8 = crate::protocol::ids::proto::FWIPC_TEST;
/// ECHO in the fwipc test protocol: returns the parameters with every byte inverted.
pub const FWIPC_TEST_ECHO: u8 = crate::protocol::ids::test::ECHO;
/// Notification message id the fwipc test protocol uses for `RemoteControl::notify`.
pub const FWIPC_TEST_NOTIFY: u8 = crate::protocol::ids::test::N_NOTIFY;

/// An SCMI platform's message handling, independent of the transport.
pub trait PlatformModel: Send {
    /// Handle one A2P command. `req` is the 4-byte little-endian header plus parameters, as read
    /// from the device-readable buffer. Writes header + status + return values into `resp` (the
    /// device-writable space) and returns the number of bytes written (`<= resp.len()`). Never
    /// panics, whatever `req` holds.
    fn handle_command(&mut self, req: &[u8], resp: &mut [u8]) -> usize;

    /// The next pending P2A message (delayed response or notification: header + payload), written
    /// into `buf` if one is pending and fits; returns its length. A message that does not fit
    /// stays pending (delayed responses) or may be dropped and counted (notifications).
    fn next_p2a(&mut self, buf: &mut [u8]) -> Option<usize>;

    /// Queue an unsolicited notification (used by the conformance fixture's `notify` knob).
    fn queue_notification(&mut self, protocol: u8, message: u8, payload: &[u8]);
}
