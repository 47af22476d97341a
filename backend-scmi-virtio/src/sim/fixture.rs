//! [`ScmiFixture`]: the conformance fixture, a [`ScmiVirtio`] driving a [`SimDevice`] that hosts
//! the SCMI platform; in interrupt mode the device delivers its interrupt line to
//! [`ScmiVirtio::complete`] on its own thread.

use std::sync::Arc;
use std::time::Duration;

use fwipc_transport_api::fixture::{DatagramPeer, Fixture, RemoteControl};
use fwipc_transport_api::{Completion, Datagram, StdClock, Transport};

use super::device::{SimDevice, SimDeviceConfig, SimTransport};
use super::hal::SimHal;
use crate::header::make_target;
use crate::platform::{
    Platform, PlatformConfig, PlatformModel, FWIPC_TEST_ECHO, FWIPC_TEST_PROTOCOL,
};
use crate::virtio::{ScmiVirtio, ScmiVirtioConfig};

/// The transport type the fixture tests.
pub type SimScmi = ScmiVirtio<SimHal, SimTransport>;

/// The platform model the fixture's device hosts: the crate's simulated SCMI [`Platform`]
/// (Base + the fwipc test protocol with ECHO and notifications), with room for 256 pending P2A
/// messages.
pub fn default_platform() -> Box<dyn PlatformModel> {
    Box::new(Platform::new(PlatformConfig {
        p2a_capacity: 256,
        ..PlatformConfig::default()
    }))
}

/// A [`ScmiVirtio`] over a simulated virtio-scmi device.
pub struct ScmiFixture {
    // Field order matters for drop: interrupt delivery stops first (in `Drop`), then the
    // transport shuts down, then the device thread stops.
    virtio: Arc<SimScmi>,
    dev: SimDevice,
    mode: Completion,
}

impl core::fmt::Debug for ScmiFixture {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ScmiFixture")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ScmiFixture {
    /// Default fixture sizes: a 256-entry cmdq (128 messages), 128-byte messages.
    pub const DEFAULT_CMDQ: u32 = 256;

    /// A fixture with an explicit cmdq size and device config.
    pub fn with_config(mode: Completion, cmdq_size: u32, dev_cfg: SimDeviceConfig) -> Self {
        Self::with_platform(mode, cmdq_size, dev_cfg, default_platform)
    }

    /// A fixture whose device hosts the platforms `factory` builds (at start and at every
    /// `reset_remote`).
    pub fn with_platform(
        mode: Completion,
        cmdq_size: u32,
        dev_cfg: SimDeviceConfig,
        factory: impl Fn() -> Box<dyn PlatformModel> + Send + Sync + 'static,
    ) -> Self {
        let dev = SimDevice::start(dev_cfg, factory);
        let cfg = ScmiVirtioConfig {
            cmdq_size: Some(cmdq_size),
            eventq_size: Some(64),
            clock: Some(Arc::new(StdClock::new())),
            shutdown_timeout: Duration::from_secs(2),
            // Polled, nothing calls `complete` (no interrupt handler is set below).
            interrupts: mode == Completion::Interrupt,
            ..ScmiVirtioConfig::default()
        };
        let virtio = Arc::new(ScmiVirtio::new(dev.transport(), cfg).expect("virtio-scmi setup"));
        if mode == Completion::Interrupt {
            // The device runs the driver's interrupt entry point itself, right after raising the
            // line (caller -> device thread -> caller, no interrupt thread between). A weak
            // handle: the device must not keep the transport alive (it holds the device's
            // transport in turn).
            let weak = Arc::downgrade(&virtio);
            dev.set_irq_handler(Some(Box::new(move || {
                if let Some(v) = weak.upgrade() {
                    v.complete();
                }
            })));
        }
        ScmiFixture { virtio, dev, mode }
    }

    /// The simulated device (extra knobs beyond [`RemoteControl`]).
    pub fn device(&self) -> &SimDevice {
        &self.dev
    }

    /// The transport as a shareable handle.
    pub fn virtio(&self) -> &Arc<SimScmi> {
        &self.virtio
    }
}

impl Drop for ScmiFixture {
    fn drop(&mut self) {
        // Returns once a delivery in progress has finished: from here on the device thread
        // never touches the transport.
        self.dev.set_irq_handler(None);
        let _ = self.virtio.shutdown();
    }
}

impl Fixture for ScmiFixture {
    type T = SimScmi;
    const NAME: &'static str = "scmi-virtio";

    fn setup(completion: Completion) -> Self {
        Self::with_config(completion, Self::DEFAULT_CMDQ, SimDeviceConfig::default())
    }

    fn modes() -> &'static [Completion] {
        &[Completion::Interrupt, Completion::Polled]
    }

    fn transport(&self) -> &Self::T {
        &self.virtio
    }

    fn echo_target(&self) -> u32 {
        make_target(FWIPC_TEST_PROTOCOL, FWIPC_TEST_ECHO)
    }

    fn completion(&self) -> Completion {
        self.mode
    }

    fn remote(&self) -> &dyn RemoteControl {
        &self.dev
    }

    /// Receive-only endpoints of P2A messages; the device emits notifications
    /// ([`SimDevice::emit_notification`]).
    fn datagram(&self) -> Option<(&dyn Datagram, &dyn DatagramPeer)> {
        Some((&*self.virtio, &self.dev))
    }
}
