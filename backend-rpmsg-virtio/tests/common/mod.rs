//! Setup shared by the integration tests over the simulated rings.

// Each test binary compiles this module; not every one uses every helper.
#![allow(dead_code)]

use std::time::Duration;

use fwipc_rpmsg_virtio::sim::RingDevice;
use fwipc_rpmsg_virtio::{VirtioLink, VirtioLinkConfig};
use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{call, Request, StdClock, Wait};
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

/// One polled 4-byte echo through the fixture's transport, checked.
pub fn echo_ok<F: Fixture>(fx: &F) {
    let mut out = [0u8; 4];
    let req = Request::new(fx.echo_target(), &[1, 2, 3, 4]).polled();
    let n = call(
        fx.transport(),
        &StdClock::new(),
        &req,
        &mut out,
        Duration::from_secs(5),
        Wait::Poll,
    )
    .expect("echo");
    assert_eq!(&out[..n], &[!1, !2, !3, !4]);
}
