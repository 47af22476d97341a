#![deny(missing_docs)]
#![doc = include_str!("../README.md")]
#![cfg_attr(not(any(test, feature = "std")), no_std)]

extern crate alloc;

/// SCMI message header codec (32-bit LE: message id, type, protocol id, token).
pub mod header;
/// The SCMI platform's side of the protocols (used by the simulated platform): request → reply.
/// Feature `platform` (on with `sim`); not part of the no_std agent core.
#[cfg(feature = "platform")]
pub mod platform;
/// The SCMI protocol layer over any `fwipc_transport_api::Transport`: agent core and typed protocols.
pub mod protocol;
/// Simulated virtio-scmi device over shared memory (feature `sim`), and the conformance fixture
/// (feature `fixtures`).
#[cfg(feature = "sim")]
pub mod sim;
/// SCMI status codes and their mapping to errors.
pub mod status;
/// The virtio-scmi transport (cmdq/eventq on virtio-drivers).
pub mod virtio;
