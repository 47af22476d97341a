//! The target-independent parts of the bare-metal guest, as a library so they can be unit-tested
//! on the host (`cargo test --manifest-path guest-aarch64/Cargo.toml --lib --target
//! x86_64-unknown-linux-gnu`): the modern virtio-mmio transport and the polled-mode adapter. The
//! guest binary (`src/main.rs`) uses them from here.
#![cfg_attr(not(test), no_std)]

pub mod mmio;
pub mod polled;
