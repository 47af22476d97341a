#![doc = include_str!("../README.md")]
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]

extern crate alloc;

mod backoff;
mod clock;
mod datagram;
mod error;
#[cfg(feature = "fixtures")]
pub mod fixture;
mod forward;
mod free_list;
mod future;
mod lifecycle;
#[cfg(any(test, feature = "fixtures"))]
mod line_layout;
mod pool;
pub mod shared_mem;
mod spinners;
mod stats;
pub mod sync;
mod timer;
mod token;
mod transfer;
mod transfer_table;
mod transport;
mod wait;

pub use backoff::{Backoff, SpinBudget};
#[cfg(feature = "std")]
pub use clock::StdClock;
pub use clock::{Clock, Deadline, Instant, ManualClock};
pub use datagram::{
    Bind, Datagram, DatagramCounters, DatagramStats, Endpoint, EndpointEvent, EndpointName,
    EndpointQueues, HoldTable, Rx, RxAction, RxHold, RxInfo, SharedTxBufs, TxLoan,
};
pub use error::{errno, Error, ProtocolError, Result};
pub use future::{block_on_polling, call_async, CallFuture};
pub use lifecycle::{Lifecycle, UserGuard};
pub use pool::{MsgPool, PoolBuf};
pub use spinners::Spinners;
pub use stats::{Counters, Stats};
pub use timer::{with_timer, Timer, WithTimer};
pub use token::{Token, TokenAllocator};
pub use transfer::{call, Transfer};
pub use transfer_table::{
    EntryPart, Exclusive, Generations, IdSource, Locking, ReplyOutcome, Shared, StartedTransfer,
    Tokens, TransferState, TransferTable,
};
pub use transport::{
    BulkDir, BulkRequest, BulkResult, Caps, Completion, Notification, Request, Ticket, Transport,
    TxOutcome,
};
pub use wait::{wait_done, wait_until, Parker, Wait};
#[cfg(feature = "std")]
pub use wait::{yield_now, ThreadParker};
