//! The VideoCore side of the VCHI services, as the simulator runs them (feature `sim`), and the
//! single-threaded simulator pair the VCHI clients are tested against.
//!
//! | file | holds |
//! |---|---|
//! | [`smem_server`] | the VideoCore side of `'SMEM'`: [`SmemServer`], its messages (alloc, free, lock, import, VC_MEM_REQUEST...) and replies; [`smem_server::SharedSmem`] shares one heap across sessions |
//! | `smem_memory` | the server's memory area (first-fit allocation with coalescing over real bytes) and its generational handle table |
//! | [`echo_server`] | the VideoCore `'echo'` test server as a pure state machine |
//! | [`func_server`] | the VideoCore `'func'` message/bulk script and the `'fun2'` guard-checking server |
//! | [`loopback`] | an in-process [`crate::vchi::BulkLink`] that drives a [`crate::vchi::VcService`] directly (unit tests, no slots) |
//! | [`pair`] | [`PolledPair`]: a slave + master pair over one region with the VideoCore services plugged in, polled from one thread (deterministic) or with a VideoCore thread |
//!
//! The ARM-side clients these servers answer live in [`crate::vchi`]. The servers are simulator
//! code: they may allocate per request.

pub mod echo_server;
pub mod func_server;
pub mod loopback;
pub mod pair;
mod smem_memory;
pub mod smem_server;

pub use pair::{PolledPair, POLLED_TIMEOUT};
pub use smem_server::SmemServer;
