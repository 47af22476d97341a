#![deny(missing_docs)]
#![doc = include_str!("../README.md")]
#![cfg_attr(not(any(test, feature = "std")), no_std)]

extern crate alloc;

pub mod addr;
pub mod endpoint;
pub mod error;
pub mod frame;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod hdr;
pub mod link;
pub mod name;
pub mod node;
pub mod ns_msg;
pub mod role;
/// The simulated remote (device role, running this crate's [`node::Node`]) and the conformance
/// fixture. Feature `sim`.
#[cfg(feature = "sim")]
pub mod sim;
pub mod transport;
pub mod virtio_link;
pub mod virtio_link_error;

pub use error::{RpmsgError, WireError};
pub use link::{Link, LinkError};
pub use transport::{RpmsgConfig, RpmsgTransport, DGRAM_RX_BUFS};
pub use virtio_link::{VirtioLink, VirtioLinkConfig};
pub use virtio_link_error::{LinkStats, VirtioLinkError};
