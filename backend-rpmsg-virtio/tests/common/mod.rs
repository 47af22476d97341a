//! Setup shared by the integration tests over the simulated rings.

// Each test binary compiles this module; not every one uses every helper.
#![allow(dead_code)]

use fwipc_rpmsg_virtio::sim::RingDevice;
use fwipc_rpmsg_virtio::{VirtioLink, VirtioLinkConfig};
use fwipc_transport_api::StdClock;
use fwipc_virtio::hal::IdentityHal;
use fwipc_virtio::sim_device::SimTransport;

/// The driver's link over the simulated device's rings.
pub type RingLink = VirtioLink<IdentityHal, SimTransport, StdClock>;

/// A simulated ring device (with `VIRTIO_F_EVENT_IDX` offered or not) and the driver's link
/// over it, configured by `cfg`; no remote thread: the test steps the device itself.
pub fn ring_link_with(event_idx: bool, cfg: VirtioLinkConfig) -> (RingLink, RingDevice) {
    let dev = RingDevice::new(event_idx);
    let link = VirtioLink::new(dev.transport(), StdClock::new(), cfg).unwrap();
    (link, dev)
}

/// [`ring_link_with`] with `EVENT_IDX` and the default configuration.
pub fn ring_link() -> (RingLink, RingDevice) {
    ring_link_with(true, VirtioLinkConfig::default())
}
