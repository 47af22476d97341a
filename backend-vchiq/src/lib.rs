//! # backend-vchiq
//!
//! Raspberry Pi VCHIQ shared-memory slot protocol, both roles, services, bulk transfers, VCHI clients.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

/// VCHI clients on top of the core (SMEM shared-memory service, vc_mem query, vchiq_test services).
pub mod vchi;
