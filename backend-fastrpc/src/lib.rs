//! # fwipc FastRPC backend
//!
//! The application-processor side of Qualcomm FastRPC over any datagram channel (rpmsg-like),
//! wire-accurate to the Linux driver (`fastrpc_msg`, `fastrpc_invoke_rsp`, the scalars word, the
//! payload layout), plus a declarative stub/skel generator and (feature `std`) a simulated DSP.
//!
//! Module map (a file per thing):
//! - [`scalars`]: the `sc` word codec; [`wire`]: byte-exact wire structs; [`layout`]: the payload
//!   layout engine; [`payload`]: the checked reader of payload metadata,
//! - [`mem`]: DSP-reachable memory (HAL trait) and shared buffers (the dma-buf role),
//! - [`packet`]: the datagram channel trait; [`domain`]: DSP domains; [`domains`]: the
//!   channel per domain, looked up by checked id,
//! - [`context`]: invoke contexts (bounded table, ids with generation, refcounted lifetime),
//! - [`channel`]: one channel per domain, its session table and receive path (`liveness`: the
//!   DSP-up flag and its sweep rule); [`session`]:
//!   a session (context bank) and the invoke API; [`procctl`]: remote process control,
//! - [`reverse`]: reverse RPC (listener, buffer packing),
//! - [`capability`]: GET_DSP_INFO (DSP attributes, cached per channel),
//! - [`transport`]: the `fwipc_transport_api::Transport` implementation,
//! - [`stubskel`]: the `fastrpc_interface!` generator,
//! - `sim` (std): the simulated DSP, bus and conformance fixture.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]

extern crate alloc;

mod call_wait;
pub mod capability;
pub mod channel;
pub mod context;
pub mod domain;
pub mod domains;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod layout;
mod liveness;
pub mod mem;
pub mod packet;
pub mod payload;
pub mod procctl;
pub mod reverse;
pub mod scalars;
pub mod session;
#[cfg(feature = "std")]
pub mod sim;
pub mod stubskel;
mod sync;
pub mod transport;
pub mod wire;

pub use call_wait::CallWait;
pub use channel::{Channel, ChannelConfig};
pub use domain::Domain;
pub use error::{AeeError, FastRpcError, Result};
pub use mem::{DmaHal, DmaRegion, SharedBuf};
pub use packet::PacketChannel;
pub use scalars::Scalars;
pub use session::{Arg, Session};
pub use transport::FastRpcTransport;
