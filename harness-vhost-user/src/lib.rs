//! # harness-vhost-user
//!
//! A hosted (std) test harness that plays the VMM for a virtio driver, so fwipc's `no_std` SCMI
//! backend runs unmodified against a real vhost-user SCMI device (`vhost-device-scmi`):
//!
//! - [`GuestMemory`]: guest RAM in a memfd at a non-zero guest-physical base, shared with the
//!   daemon through VHOST_USER_SET_MEM_TABLE.
//! - [`MemfdHal`]: the `virtio_drivers::Hal` over it (DMA pages from the memfd; `share` bounces
//!   driver buffers into it).
//! - [`VhostUserTransport`]: a `virtio_drivers::transport::Transport` that is a vhost-user
//!   front-end (crate `vhost`), with kick/call eventfds.
//! - [`Interrupts`]/[`IrqThread`]: wait on the call eventfds and run an interrupt handler.
//! - [`Daemon`]: spawns and reaps one daemon per test.
//!
//! ```no_run
//! use std::time::Duration;
//! use harness_vhost_user::{shared_memory, Daemon, VhostUserTransport};
//! let daemon = Daemon::spawn(&["acc0"], Duration::from_secs(5)).unwrap();
//! let transport =
//!     VhostUserTransport::connect(daemon.socket(), shared_memory(), Duration::from_secs(5))
//!         .unwrap();
//! // hand `transport` (and `MemfdHal` as the `Hal`) to a virtio driver
//! # drop(transport);
//! ```

mod daemon;
mod guest_memory;
mod hal;
mod interrupts;
mod vhost_user_transport;

pub use daemon::{
    daemon_required, find_daemon, Daemon, DaemonError, DAEMON_ENV, DEFAULT_DAEMON_PATH,
};
pub use guest_memory::{GuestMemory, PAGE_SIZE};
pub use hal::{
    shared_memory, MemfdHal, MemoryPool, SharedPool, SHARED_POOL_GPA_BASE, SHARED_POOL_SIZE,
};
pub use interrupts::{Interrupts, IrqThread};
pub use vhost_user_transport::{
    VhostUserTransport, VhostUserTransportError, DEFAULT_MAX_QUEUE_SIZE, VIRTIO_ID_SCMI,
};
