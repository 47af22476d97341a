//! # fwipc transport API
//!
//! The core every fwipc backend stands on: the [`Transport`] trait (split-phase send →
//! [`Ticket`] → `poll_done` → `fetch_response` → `mark_txdone`, plus bulk transfers and
//! notifications), the refcounted [`MsgPool`], the monotonic [`TokenAllocator`], deadlines through
//! a [`Clock`], the channel [`Lifecycle`], and one [`Error`] enum.
//!
//! `#![no_std]` + `alloc`; the `std` feature adds the std clock, a thread parker, and the
//! conformance [`fixture`] traits.
//!
//! ```
//! use fwipc_transport_api::{MsgPool, Error};
//! let pool = MsgPool::new(2, 64).unwrap();
//! let a = pool.alloc().unwrap();
//! let remote_loan = a.lend(); // the remote co-owns the buffer now
//! drop(a);                    // we are done with it...
//! assert_eq!(pool.free_count(), 1); // ...but it is not reusable until the remote returns it
//! pool.reclaim(remote_loan).unwrap();
//! assert_eq!(pool.free_count(), 2);
//! let _x = pool.alloc().unwrap();
//! let _y = pool.alloc().unwrap();
//! assert_eq!(pool.alloc().unwrap_err(), Error::Busy);
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]

extern crate alloc;

mod clock;
mod error;
#[cfg(feature = "std")]
pub mod fixture;
mod future;
mod lifecycle;
mod pool;
mod stats;
mod sync;
mod token;
mod transport;
mod wait;

#[cfg(feature = "std")]
pub use clock::StdClock;
pub use clock::{Clock, Deadline, Instant, ManualClock};
pub use error::{errno, Error, ProtocolError, Result};
pub use future::{block_on_polling, call_async, CallFuture};
pub use lifecycle::{Lifecycle, UserGuard};
pub use pool::{MsgPool, PoolBuf};
pub use stats::{Counters, Stats};
pub use token::{Token, TokenAllocator};
pub use transport::{
    BulkDir, BulkRequest, BulkResult, Caps, Completion, Notification, Request, Ticket, Transport,
    TxOutcome,
};
pub use wait::{call, wait_done, Parker, Wait};
#[cfg(feature = "std")]
pub use wait::{yield_now, ThreadParker};
