//! The simulated virtio-scmi device and the conformance fixture (std only).
//!
//! * `hal.rs`: [`SimHal`] (identity-mapped DMA) and [`BounceHal`] (copies like a vhost-user
//!   memfd Hal).
//! * `device.rs`: [`SimDevice`] (device thread over the shared rings, fault knobs),
//!   [`SimTransport`] (its virtio-drivers `Transport`), [`IrqLine`].
//! * `echo.rs`: [`EchoPlatform`], a minimal `PlatformModel` for bring-up.
//! * `fixture.rs`: [`ScmiFixture`] for the conformance suite.

mod device;
mod echo;
mod fixture;
mod hal;

pub use device::{IrqLine, PlatformFactory, SimDevice, SimDeviceConfig, SimTransport};
pub use echo::EchoPlatform;
pub use fixture::{default_platform, ScmiFixture, SimScmi};
pub use hal::{BounceHal, SimHal};
