//! The target-independent part of the bare-metal guest, as a library so it can be unit-tested on
//! the host (`cargo test --manifest-path guest-aarch64/Cargo.toml --lib --target
//! x86_64-unknown-linux-gnu`): the polled-mode adapter. The virtio-mmio transport, device-tree
//! discovery, `Hal`, clock and parker come from the `fwipc-virtio` crate.
#![cfg_attr(not(test), no_std)]

pub mod polled;
