//! [`Transfer`]: a transfer in flight that cannot be forgotten, and [`call`], the whole
//! send → wait → fetch → finish cycle on it. Dropping a `Transfer` without [`Transfer::finish`]
//! ends it as [`TxOutcome::Cancelled`], so an early return, a `?` or a panic between `send` and
//! `mark_txdone` never leaks the pool buffer and the token.

use core::time::Duration;

use crate::clock::{Clock, Deadline};
use crate::transport::{Request, Ticket, Transport, TxOutcome};
use crate::wait::{wait_done, Wait};
use crate::Result;

/// A sent transfer and the transport it belongs to; ends the transfer exactly once.
///
/// ```
/// # use fwipc_transport_api::{Request, Result, Transport, Transfer, TxOutcome};
/// fn send_and_forget<T: Transport>(t: &T, target: u32) -> Result<()> {
///     let x = Transfer::send(t, &Request::new(target, b"hi").polled())?;
///     if !x.poll_done()? {
///         return Ok(()); // dropped: ended as Cancelled, the backend keeps what the remote owns
///     }
///     x.finish(TxOutcome::Done);
///     Ok(())
/// }
/// ```
#[must_use = "dropping a transfer cancels it; wait for it and `finish` it"]
pub struct Transfer<'t, T: Transport + ?Sized> {
    t: &'t T,
    /// `Some` until the transfer is ended (by `finish`, `into_ticket` or `drop`).
    ticket: Option<Ticket>,
}

impl<T: Transport + ?Sized> core::fmt::Debug for Transfer<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Transfer")
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

impl<'t, T: Transport + ?Sized> Transfer<'t, T> {
    /// Send `req` on `t`. Errors from `send` (`Busy`, `TooLarge`, `Shutdown`...) are returned as
    /// they are; nothing is in flight then.
    pub fn send(t: &'t T, req: &Request<'_>) -> Result<Self> {
        let ticket = t.send(req)?;
        Ok(Transfer {
            t,
            ticket: Some(ticket),
        })
    }

    /// Take over a ticket from [`Transport::send`] or [`Transport::bulk`].
    pub fn from_ticket(t: &'t T, ticket: Ticket) -> Self {
        Transfer {
            t,
            ticket: Some(ticket),
        }
    }

    /// The ticket, for the [`Transport`] calls this type does not wrap.
    pub fn ticket(&self) -> &Ticket {
        // `Some` from construction until the transfer is consumed (`finish`, `into_ticket`).
        self.ticket.as_ref().unwrap_or_else(|| unreachable!())
    }

    /// [`Transport::poll_done`] for this transfer.
    pub fn poll_done(&self) -> Result<bool> {
        self.t.poll_done(self.ticket())
    }

    /// Wait until the transfer is done or `deadline` passes ([`wait_done`]).
    pub fn wait(
        &self,
        clock: &(impl Clock + ?Sized),
        deadline: Deadline,
        wait: Wait<'_>,
    ) -> Result<()> {
        wait_done(self.t, self.ticket(), clock, deadline, wait)
    }

    /// [`Transport::register_waker`] for this transfer.
    pub fn register_waker(&self, waker: &core::task::Waker) -> bool {
        self.t.register_waker(self.ticket(), waker)
    }

    /// [`Transport::fetch_response`] for this transfer.
    pub fn fetch_response(&self, out: &mut [u8]) -> Result<usize> {
        self.t.fetch_response(self.ticket(), out)
    }

    /// End the transfer ([`Transport::mark_txdone`]). Use [`TxOutcome::after_wait`] to pick the
    /// outcome from what waiting returned.
    pub fn finish(mut self, outcome: TxOutcome) {
        if let Some(ticket) = self.ticket.take() {
            self.t.mark_txdone(ticket, outcome);
        }
    }

    /// Give the ticket back without ending the transfer: the caller now owes the
    /// [`Transport::mark_txdone`].
    pub fn into_ticket(mut self) -> Ticket {
        self.ticket.take().unwrap_or_else(|| unreachable!())
    }
}

impl<T: Transport + ?Sized> Drop for Transfer<'_, T> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.t.mark_txdone(ticket, TxOutcome::Cancelled);
        }
    }
}

/// Send `req`, wait for the reply within `timeout`, copy it into `resp`, and finish the transfer.
/// On timeout the transfer is marked [`TxOutcome::TimedOut`], so the backend keeps its buffer
/// until the remote returns it.
pub fn call<T: Transport + ?Sized>(
    t: &T,
    clock: &(impl Clock + ?Sized),
    req: &Request<'_>,
    resp: &mut [u8],
    timeout: Duration,
    wait: Wait<'_>,
) -> Result<usize> {
    let x = Transfer::send(t, req)?;
    let waited = x.wait(clock, Deadline::after(clock, timeout), wait);
    let r = waited.and_then(|()| x.fetch_response(resp));
    x.finish(TxOutcome::after_wait(&waited));
    r
}
