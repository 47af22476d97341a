//! The async face: a `Future` for a transfer's completion, on `core::task` only (any executor,
//! or none). Dropping it before completion cancels the transfer safely ([`TxOutcome::Cancelled`],
//! through [`Transfer`]): the backend keeps any buffer the remote still owns.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use crate::clock::{Clock, Deadline};
use crate::transfer::Transfer;
use crate::transport::{Request, Transport, TxOutcome};
use crate::{Error, Result};

/// Resolves to the reply length (copied into the caller's buffer) or an error.
pub struct CallFuture<'a, T: Transport + ?Sized, C: Clock + ?Sized> {
    /// `None` once the future resolved; dropping it earlier cancels the transfer ([`Transfer`]).
    x: Option<Transfer<'a, T>>,
    clock: &'a C,
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
    let x = Transfer::send(t, req)?;
    Ok(CallFuture {
        x: Some(x),
        clock,
        deadline: Deadline::after(clock, timeout),
        out,
    })
}

impl<T: Transport + ?Sized, C: Clock + ?Sized> CallFuture<'_, T, C> {
    /// End the transfer with the outcome of waiting, fetching the reply if it arrived.
    fn resolve(&mut self, waited: Result<()>) -> Poll<Result<usize>> {
        let Some(x) = self.x.take() else {
            // Polled again after completion: a caller bug, reported rather than panicking.
            return Poll::Ready(Err(Error::InvalidArgument));
        };
        let r = waited.and_then(|()| x.fetch_response(self.out));
        x.finish(TxOutcome::after_wait(&waited));
        Poll::Ready(r)
    }
}

impl<T: Transport + ?Sized, C: Clock + ?Sized> Future for CallFuture<'_, T, C> {
    type Output = Result<usize>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(x) = &this.x else {
            return Poll::Ready(Err(Error::InvalidArgument));
        };
        match x.poll_done() {
            Ok(true) => return this.resolve(Ok(())),
            Ok(false) => {}
            Err(e) => return this.resolve(Err(e)),
        }
        if this.deadline.expired(this.clock) {
            return this.resolve(Err(Error::Timeout));
        }
        if x.register_waker(cx.waker()) {
            // Completion may have raced the registration: check once more.
            if let Ok(true) = x.poll_done() {
                return this.resolve(Ok(()));
            }
        } else {
            // This transport cannot wake us: ask to be polled again (busy future).
            cx.waker().wake_by_ref();
        }
        Poll::Pending
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
