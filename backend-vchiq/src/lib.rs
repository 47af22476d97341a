//! # backend-vchiq
//!
//! Raspberry Pi VCHIQ shared-memory slot protocol, both roles, services, bulk transfers, VCHI clients.
//!
//! One core runs either role over a shared region and a doorbell ([`platform::Platform`]): the
//! ARM (slave) and the VideoCore (master). The simulator (`sim`, std) runs the master role of
//! the same code in its own thread, so every test exercises both halves of the protocol.
//!
//! Module map (a reader finds each piece by file name):
//! - [`consts`], [`layout`], [`header`]: wire constants, `#[repr(C)]` layouts with asserted
//!   sizes/offsets, the message header codec.
//! - [`region`]: bounds-checked atomic access to the shared region.
//! - [`remote_event`], [`recycle`]: the lock-free handshakes, loom-checked.
//! - [`platform`]: the embedder's doorbell / DMA glue.
//! - [`config`]: instance configuration, slot partitioning, region layout.
//! - `vchiq.rs` ([`Vchiq`]): the instance, init, connect, the poll loop.
//! - `tx.rs` / `rx.rs`: slots, quotas, padding, recycling / the slot handler and sync slot.
//! - `open_close.rs`: the service state machine; [`service`]: handles, handler trait, events.
//! - `bulk.rs`, [`pagelist`]: bulk transfers, pagelists and fragments.
//! - `teardown.rs`: shutdown.
//! - [`transport`]: the `fwipc_transport_api::Transport` over one service.
//! - [`error`]: the one error enum.
#![deny(missing_docs)]
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod bcm2835;
mod bulk;
pub mod config;
pub mod consts;
mod counters;
pub mod error;
pub mod frame;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod header;
mod init;
pub mod layout;
mod open_close;
pub mod pagelist;
pub mod platform;
mod poll;
mod poll_gate;
pub mod recycle;
pub mod region;
pub mod remote_event;
mod rx;
pub mod service;
#[cfg(feature = "sim")]
pub mod sim;
pub mod sync;
pub mod sync_slot;
mod teardown;
pub mod transport;
mod tx;
mod vchiq;
mod waiting;

pub use config::{Config, Role};
pub use counters::{VchiqCounters, VchiqStats};
pub use error::{VResult, VchiqError};
pub use platform::Platform;
pub use poll::{POLL_MAX_MSGS, POLL_MAX_ROUNDS};
pub use region::{OwnedRegion, Region};
pub use service::{
    BulkCompletion, BulkDir, BulkMode, Deliver, Event, Message, MessageToken, ServiceHandle,
    ServiceParams,
};
pub use vchiq::{ServiceCtx, ServiceHandler, Vchiq};
pub use waiting::WAIT_NAP;

/// VCHI clients on top of the core (SMEM shared-memory service, vc_mem query, vchiq_test services).
pub mod vchi;
