#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![cfg_attr(not(any(test, feature = "std")), no_std)]

extern crate alloc;

// Layers, bottom up (see "Layout of the crate" above):
// wire/ (formats and parsers of remote input) -> shared/ (handshakes on the shared region) ->
// engine/ (the protocol engine: one `Vchiq` per region and role) -> transport.rs, vchi/ (what a
// user talks to) -> sim/ (the simulated VideoCore, feature `sim`).
pub mod bcm2835;
pub mod config;
mod engine;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod platform;
mod shared;
#[cfg(feature = "sim")]
pub mod sim;
pub(crate) mod sync;
pub mod transport;
pub mod vchi;
mod wire;

pub use config::{Config, Role};
pub use engine::counters::{VchiqCounters, VchiqStats};
pub use engine::futures::VchiqFuture;
pub use engine::poll::{POLL_MAX_MSGS, POLL_MAX_ROUNDS};
pub use engine::service::{
    BulkCompletion, BulkDir, BulkMode, Deliver, Event, Message, MessageToken, ServiceHandle,
    ServiceParams,
};
pub use engine::vchiq::{ServiceCtx, ServiceHandler, Vchiq};
pub use engine::waiting::WAIT_NAP;
pub use error::{Result, VchiqError};
pub use platform::Platform;
pub use shared::region::{OwnedRegion, Region};
pub use transport::VchiqTransport;
/// Service handles, parameters, the events a handler receives and what it answers (all also at
/// the crate root).
pub mod service {
    pub use crate::engine::service::*;
}
pub use wire::{consts, frame};
