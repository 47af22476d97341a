//! The simulated rpmsg remote: a device-role [`Node`](crate::node::Node) on its own thread,
//! serving an echo endpoint it announces through the name service, with every conformance
//! fault knob; and the in-memory buffer queues both sides reach through [`Link`](crate::Link).

mod dgram_peer;
mod fixture;
mod peer_log;
mod queues;
mod remote;

pub use fixture::{RpmsgFixture, SimTransport, ECHO_NAME};
pub use peer_log::PEER_ADDR;
pub use queues::{DeviceEnd, DriverEnd, Queues, QUEUE_BUFS};
pub use remote::SimRemote;
