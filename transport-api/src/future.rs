//! The async face: a `Future` for a transfer's completion, on `core::task` only (any executor,
//! or none). Dropping it before completion cancels the transfer safely ([`TxOutcome::Cancelled`]):
//! the backend keeps any buffer the remote still owns.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use crate::clock::{Clock, Deadline};
use crate::transport::{Request, Ticket, Transport, TxOutcome};
use crate::{Error, Result};

/// Resolves to the reply length (copied into the caller's buffer) or an error.
pub struct CallFuture<'a, T: Transport + ?Sized, C: Clock + ?Sized> {
    t: &'a T,
    clock: &'a C,
    ticket: Option<Ticket>,
    deadline: Deadline,
    out: &'a mut [u8],
}

/// Send `req` and return a future for its reply. Errors from `send` (Busy, TooLarge...) are
/// returned at once.
pub fn call_async<'a, T: Transport + ?Sized, C: Clock + ?Sized>(
    t: &'a T,
    clock: &'a C,
    req: &Request<'_>,
    out: &'a mut [u8],
    timeout: Duration,
) -> Result<CallFuture<'a, T, C>> {
    let ticket = t.send(req)?;
    Ok(CallFuture {
        t,
        clock,
        ticket: Some(ticket),
        deadline: Deadline::after(clock, timeout),
        out,
    })
}

impl<T: Transport + ?Sized, C: Clock + ?Sized> CallFuture<'_, T, C> {
    fn finish(&mut self, outcome: TxOutcome) {
        if let Some(ticket) = self.ticket.take() {
            self.t.mark_txdone(ticket, outcome);
        }
    }

    fn fetch(&mut self) -> Result<usize> {
        let r = match &self.ticket {
            Some(ticket) => self.t.fetch_response(ticket, self.out),
            None => Err(Error::InvalidArgument),
        };
        self.finish(TxOutcome::Done);
        r
    }
}

impl<T: Transport + ?Sized, C: Clock + ?Sized> Future for CallFuture<'_, T, C> {
    type Output = Result<usize>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(ticket) = &this.ticket else {
            // Polled again after completion: a caller bug, reported rather than panicking.
            return Poll::Ready(Err(Error::InvalidArgument));
        };
        match this.t.poll_done(ticket) {
            Ok(true) => return Poll::Ready(this.fetch()),
            Ok(false) => {}
            Err(e) => {
                this.finish(TxOutcome::Cancelled);
                return Poll::Ready(Err(e));
            }
        }
        if this.deadline.expired(this.clock) {
            this.finish(TxOutcome::TimedOut);
            return Poll::Ready(Err(Error::Timeout));
        }
        if this.t.register_waker(ticket, cx.waker()) {
            // Completion may have raced the registration: check once more.
            if let Ok(true) = this.t.poll_done(ticket) {
                return Poll::Ready(this.fetch());
            }
        } else {
            // This transport cannot wake us: ask to be polled again (busy future).
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl<T: Transport + ?Sized, C: Clock + ?Sized> Drop for CallFuture<'_, T, C> {
    fn drop(&mut self) {
        self.finish(TxOutcome::Cancelled);
    }
}

/// Drive a future to completion on the current thread with a no-op waker by polling; for
/// bare-metal callers and tests without an executor.
pub fn block_on_polling<F: Future>(f: F) -> F::Output {
    let mut f = core::pin::pin!(f);
    let mut cx = Context::from_waker(core::task::Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        core::hint::spin_loop();
    }
}
