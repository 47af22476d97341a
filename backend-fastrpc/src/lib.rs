#![doc = include_str!("../README.md")]
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(unreachable_pub))]

extern crate alloc;

mod channel;
mod domain;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod mem;
mod packet;
mod reverse;
mod session;
#[cfg(feature = "sim")]
pub mod sim;
pub mod stubskel;
mod transport;
pub mod wire;

pub use channel::by_domain::Channels;
pub use channel::state::{Bank, ChannelConfig, MAX_SESSIONS, RX_BUDGET};
pub use channel::Channel;
pub use domain::Domain;
pub use error::{AeeError, FastRpcError, Result};
pub use mem::{zeroed_atomic_bytes, DmaHal, DmaRegion, SharedBuf};
pub use packet::PacketChannel;
pub use reverse::{Listener, ReverseService};
pub use session::{
    Arg, CallWait, InvokeFuture, InvokeTicket, PdKind, Session, ATTR_DEBUG, ATTR_UNSIGNED_MODULE,
    PD_ROOT, PD_SENSORS, PD_USER,
};
pub use transport::{target, FastRpcTransport};
pub use wire::scalars::Scalars;
