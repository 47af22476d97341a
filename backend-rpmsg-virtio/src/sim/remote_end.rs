//! What the simulated remote needs from its side of the buffers beyond [`Link`]: raw injection
//! (garbage for hostile tests), the driver's interrupt handler, and the thread a driver send
//! wakes. Implemented by the in-memory queues' [`DeviceEnd`] and by the virtio device that walks
//! the real rings ([`RingDevice`](super::RingDevice)).

use fwipc_transport_api::fixture::RemoteWake;

use crate::link::Link;

use super::queues::DeviceEnd;
use super::rewrite::Rewrite;

/// The device's side of the buffers, as the simulated remote drives it.
pub trait RemoteEnd: Link + 'static {
    /// Hand `bytes` (at most one buffer's worth) to the driver as if the device had filled a
    /// receive buffer with them, without any check; raises the interrupt. `false` if the
    /// driver has no receive buffer for it.
    fn inject_to_driver(&self, bytes: &[u8]) -> bool;
    /// The driver's interrupt handler, run after the device hands the driver something.
    fn set_irq(&self, irq: Box<dyn Fn() + Send + Sync>);
    /// The thread to wake when the driver sends.
    fn set_device_thread(&self, t: std::thread::Thread);
    /// What a driver send wakes that thread through, for an end that unparks it on every send
    /// ([`RemoteWake`]): the remote takes each mode through it, so a send unparks it only
    /// while it may park. `None` for an end that kicks it instead (a ring device: its kicks are
    /// off while the remote polls, [`RemoteEnd::set_polling`]).
    fn remote_wake(&self) -> Option<&RemoteWake> {
        None
    }
    /// The double-fetch fault: the next `count` frames this end sends (not injected garbage)
    /// are rewritten with `r` right after they are published.
    fn rewrite_after_publish(&self, count: u8, r: Rewrite);
    /// The remote polls this end ([`SimMode::Spin`], or its idle steps in
    /// [`SimMode::Normal`] before it parks): a ring device asks the driver for no kicks
    /// meanwhile (as a busy-polling back-end does); `false` asks for them again. The remote
    /// looks at the end on every step whatever the kicks, and once more after `false`, so
    /// nothing posted in between waits for one. Nothing to do for an end without kicks.
    ///
    /// [`SimMode::Spin`]: fwipc_transport_api::fixture::SimMode::Spin
    /// [`SimMode::Normal`]: fwipc_transport_api::fixture::SimMode::Normal
    fn set_polling(&self, _on: bool) {}
}

impl RemoteEnd for DeviceEnd {
    fn inject_to_driver(&self, bytes: &[u8]) -> bool {
        self.0.inject_to_driver(bytes)
    }

    fn set_irq(&self, irq: Box<dyn Fn() + Send + Sync>) {
        self.0.set_irq(irq);
    }

    fn set_device_thread(&self, t: std::thread::Thread) {
        self.0.set_device_thread(t);
    }

    fn remote_wake(&self) -> Option<&RemoteWake> {
        Some(self.0.device_wake())
    }

    fn rewrite_after_publish(&self, count: u8, r: Rewrite) {
        self.0.rewriter.arm(count, r);
    }
}
