//! Waiting for a transfer: poll, spin-then-yield, or completion (waker + park), all bounded by a
//! [`Deadline`]. [`crate::call`], the whole send → wait → fetch → mark_txdone cycle, is built on
//! it with [`crate::Transfer`].

use core::task::Waker;
use core::time::Duration;

use crate::clock::{Clock, Deadline};
use crate::transport::{Ticket, Transport};
use crate::{Error, Result};

/// Blocks the current execution context until woken or a timeout passes. The std implementation
/// is `ThreadParker` (feature `std`); on bare metal, a WFI/WFE loop with an interrupt-driven waker.
pub trait Parker {
    /// A waker that unblocks [`Parker::park_timeout`].
    fn waker(&self) -> &Waker;
    /// Block for at most `timeout` (spurious returns are fine).
    fn park_timeout(&self, timeout: Duration);
}

/// How to wait for a transfer.
#[derive(Clone, Copy)]
pub enum Wait<'a> {
    /// Busy-poll `poll_done` (atomic context, no scheduler).
    Poll,
    /// Poll `spins` times, then call `relax` between polls (`std::thread::yield_now`, WFE...).
    SpinThenYield {
        /// Busy polls before relaxing.
        spins: u32,
        /// Called between polls after the spin phase.
        relax: &'a dyn Fn(),
    },
    /// Register the parker's waker with the transport and park until woken. Falls back to
    /// short parks when the transport cannot wake.
    Completion(&'a dyn Parker),
}

impl core::fmt::Debug for Wait<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Wait::Poll => f.write_str("Poll"),
            Wait::SpinThenYield { spins, .. } => write!(f, "SpinThenYield({spins})"),
            Wait::Completion(_) => f.write_str("Completion"),
        }
    }
}

/// Wait until `ticket` is done or `deadline` passes. Does not consume the ticket.
pub fn wait_done<T: Transport + ?Sized>(
    t: &T,
    ticket: &Ticket,
    clock: &(impl Clock + ?Sized),
    deadline: Deadline,
    wait: Wait<'_>,
) -> Result<()> {
    let mut polls: u32 = 0;
    let mut registered = false;
    loop {
        if t.poll_done(ticket)? {
            return Ok(());
        }
        if deadline.expired(clock) {
            return Err(Error::Timeout);
        }
        polls = polls.saturating_add(1);
        match wait {
            Wait::Poll => core::hint::spin_loop(),
            Wait::SpinThenYield { spins, relax } => {
                if polls > spins {
                    relax()
                } else {
                    core::hint::spin_loop()
                }
            }
            Wait::Completion(parker) => {
                if !registered {
                    registered = t.register_waker(ticket, parker.waker());
                    // Re-check after registering: a completion between our poll and the
                    // registration would otherwise be a lost wake-up.
                    continue;
                }
                // A transport that wakes lets us sleep until the deadline; one that cannot
                // wake gets polled in short naps.
                let nap = if registered {
                    deadline.remaining(clock)
                } else {
                    Duration::from_micros(50)
                };
                parker.park_timeout(nap.min(Duration::from_millis(100)));
            }
        }
    }
}

/// The std [`Parker`]: parks the thread that created it.
#[cfg(feature = "std")]
pub struct ThreadParker {
    waker: Waker,
}

#[cfg(feature = "std")]
struct Unparker(std::thread::Thread);

#[cfg(feature = "std")]
impl std::task::Wake for Unparker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(feature = "std")]
impl ThreadParker {
    /// A parker for the current thread. Create it once per thread and reuse it: this allocates.
    pub fn new() -> Self {
        ThreadParker {
            waker: Waker::from(std::sync::Arc::new(Unparker(std::thread::current()))),
        }
    }
}

#[cfg(feature = "std")]
impl Default for ThreadParker {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "std")]
impl Parker for ThreadParker {
    fn waker(&self) -> &Waker {
        &self.waker
    }
    fn park_timeout(&self, timeout: Duration) {
        std::thread::park_timeout(timeout);
    }
}

/// `std::thread::yield_now`, for [`Wait::SpinThenYield`].
#[cfg(feature = "std")]
pub fn yield_now() {
    std::thread::yield_now()
}
