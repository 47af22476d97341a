//! The virtio-scmi transport: [`ScmiVirtio`](crate::virtio::ScmiVirtio) drives a virtio-scmi
//! device (id 32) through any virtio-drivers `Transport` and `Hal`, and implements
//! [`fwipc_transport_api::Transport`].
//!
//! Files: `features.rs` (feature bits, queue indices), the hardened split virtqueue (from
//! `fwipc_virtio::ring`, shared by the virtio backends), `slot.rs` (SCMI's part of each message beside the shared `TransferTable`: the Linux poll state, the header the reply must echo, the shared addresses), `eventq.rs` (P2A
//! buffers), `config.rs`, `error.rs`, `stall.rs` (telling a stalled device from a slow one), `transport/` (`ScmiVirtio`: `setup.rs`, `transport_impl.rs` the `Transport` implementation, `drain.rs`, `recovery.rs`, `shutdown.rs`), `irq_gate.rs` (the
//! channel lock and the interrupt entry point `complete`, with the rule for embedders).
//! Device reset (bounded on the clock), feature negotiation and `DRIVER_OK` are the shared
//! `fwipc_virtio::negotiate`, as in the rpmsg backend.
//!
//! What it does better than Linux (docs/protocols/scmi.md §8): no global device (any number of
//! instances), every used id and length checked (typed error + counter, never a panic), replies
//! matched on the whole header (token + protocol + message + type), tokens and buffers of timed-out
//! messages quarantined until the device returns them, bounded teardown, polling that identifies
//! its message by identity (its poll state) and shares the ownership state machine (the
//! `TransferTable` every backend uses) with the interrupt path.
//!
//! The unsafe ring and DMA code runs clean under Miri (Stacked Borrows; the simulator maps
//! physical addresses to pointers, hence permissive provenance), e.g.:
//! `MIRIFLAGS="-Zmiri-permissive-provenance -Zmiri-disable-isolation" cargo +nightly miri test
//! -p fwipc-scmi-virtio --test virtio_basic --test virtio_lifecycle --test virtio_hostile`.

mod config;
mod error;
mod eventq;
mod features;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod irq_gate;
pub mod parse;
/// The hardened split ring, shared with the other virtio backends (`fwipc_virtio::ring`).
pub use fwipc_virtio::ring;
mod slot;
mod stall;
mod transport;

pub use config::{ScmiVirtioConfig, DEFAULT_MAX_MSG_SIZE, MAX_MESSAGES};
pub use error::ScmiVirtioError;
pub use features::{ScmiFeatures, CMDQ, EVENTQ, VIRTIO_ID_SCMI};
/// What one status read counts as when no clock is configured (see
/// [`ScmiVirtioConfig::reset_timeout`]).
pub use fwipc_virtio::negotiate::STATUS_READ_TIME;
pub use slot::PollStatus;
pub use transport::{
    ScmiVirtio, DGRAM_ENDPOINTS, DGRAM_RX_BUFS, IRQ_PASS_BUDGET, STATUS_POLL_PERIOD,
};
