#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

#[cfg(all(feature = "aarch64", target_arch = "aarch64"))]
pub mod aarch64;
pub mod bounce;
#[cfg(feature = "sim")]
pub mod device_ring;
#[cfg(feature = "mmio")]
pub mod discovery;
mod error;
pub mod hal;
#[cfg(feature = "mmio")]
pub mod mmio;
pub mod negotiate;
pub mod parker;
#[cfg(feature = "ring")]
pub mod ring;
#[cfg(feature = "sim")]
pub mod sim_device;

pub use error::{Error, Result};
