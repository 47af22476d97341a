//! The simulated virtio-scmi device (feature `sim`) and the conformance fixture (feature
//! `fixtures`).
//!
//! * `hal.rs`: [`SimHal`] (identity-mapped DMA) and [`BounceHal`] (copies like a vhost-user
//!   memfd Hal).
//! * `device/`: [`SimDevice`] (device thread over the shared rings; `model.rs` what it does
//!   with them, `faults.rs` the fault knobs, `guest_mem.rs` its shared-memory accessors),
//!   [`SimTransport`] (its virtio-drivers `Transport`), its interrupt line (an [`IrqHandler`]
//!   the device thread runs, or an [`IrqLine`] a thread waits on).
//! * `echo_platform.rs`: [`EchoPlatform`], a minimal `PlatformModel` for bring-up.
//! * `fixture.rs`: [`ScmiFixture`] for the conformance suite.
//!
//! [`SimHal`]: crate::sim::SimHal
//! [`BounceHal`]: crate::sim::BounceHal
//! [`SimDevice`]: crate::sim::SimDevice
//! [`SimTransport`]: crate::sim::SimTransport
//! [`IrqLine`]: crate::sim::IrqLine
//! [`IrqHandler`]: crate::sim::IrqHandler
//! [`EchoPlatform`]: crate::sim::EchoPlatform
//! [`ScmiFixture`]: crate::sim::ScmiFixture

mod device;
mod echo_platform;
#[cfg(feature = "fixtures")]
mod fixture;
mod hal;

pub use device::{
    IrqHandler, IrqLine, PlatformFactory, SimDevice, SimDeviceConfig, SimTransport, DOUBLE_FETCH,
    PEER_NOTIFY_MESSAGE,
};
pub use echo_platform::EchoPlatform;
#[cfg(feature = "fixtures")]
pub use fixture::{default_platform, ScmiFixture, SimScmi};
pub use hal::{BounceHal, SimHal};

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Join `h`, waiting at most `timeout`: `Some(result)` if the thread finished, `None` (thread
/// detached, error logged) if it did not. Every thread the simulator and fixtures start is
/// stopped with this, so a wedged thread fails loudly instead of hanging the test binary.
pub fn join_bounded<T>(
    h: JoinHandle<T>,
    timeout: Duration,
    what: &str,
) -> Option<std::thread::Result<T>> {
    let start = Instant::now();
    while !h.is_finished() {
        if start.elapsed() >= timeout {
            log::error!("{what}: thread did not stop within {timeout:?}; detached");
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Some(h.join())
}
