//! # backend-scmi-virtio
//!
//! Arm SCMI agent over a virtio-scmi device (device id 32), on the `virtio-drivers` crate, plus the
//! SCMI protocols on top and a simulated SCMI platform.
//!
//! Layers: [`virtio::ScmiVirtio`] is the transport (a `fwipc_transport_api::Transport` over any
//! virtio-drivers `Transport` + `Hal`: bare-metal MMIO, vhost-user, the simulator);
//! [`protocol::Scmi`] is the agent over any fwipc transport; [`platform`] is the platform side
//! the simulator ([`sim`], std only) hosts behind a simulated virtio device.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

/// SCMI message header codec (32-bit LE: message id, type, protocol id, token).
pub mod header;
/// The SCMI platform's side of the protocols (used by the simulated platform): request → reply.
pub mod platform;
/// The SCMI protocol layer over any `fwipc_transport_api::Transport`: agent core and typed protocols.
pub mod protocol;
/// Simulated virtio-scmi device over shared memory, and the conformance fixture.
#[cfg(feature = "std")]
pub mod sim;
/// SCMI status codes and their mapping to errors.
pub mod status;
/// The virtio-scmi transport (cmdq/eventq on virtio-drivers).
pub mod virtio;
