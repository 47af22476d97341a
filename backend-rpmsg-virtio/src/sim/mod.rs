//! The simulated rpmsg remote: a device-role [`Node`](crate::node::Node) on its own thread,
//! serving an echo endpoint it announces through the name service, with every conformance
//! fault knob; the in-memory buffer queues both sides reach through [`Link`](crate::Link); and
//! [`RingDevice`](crate::sim::RingDevice), a simulated rpmsg virtio device that walks the real
//! rings the driver's [`VirtioLink`](crate::VirtioLink) sets up.

mod dgram_peer;
mod fixture;
mod peer_log;
mod queues;
mod remote;
mod remote_end;
mod rewrite;
mod ring_device;

pub use fixture::{
    QueueLinks, RingDriver, RingLinks, RingTransport, RpmsgFixture, RpmsgFixtureOf,
    RpmsgRingFixture, SimLinks, SimTransport, ECHO_NAME,
};
pub use peer_log::PEER_ADDR;
pub use queues::{DeviceEnd, DriverEnd, Queues, QUEUE_BUFS};
pub use remote::SimRemote;
pub use remote_end::RemoteEnd;
pub use rewrite::{Rewrite, DOUBLE_FETCH};
pub use ring_device::{RingDevice, RING_QUEUE_MAX};
