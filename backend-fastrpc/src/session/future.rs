//! The async face of a session: [`Session::invoke_async`] returns an [`InvokeFuture`], on the
//! same completion machinery as the blocking [`Session::invoke`] (the context's waker, woken by
//! the receive path when the DSP answers). Built on `core::task` only: any executor, or
//! [`fwipc_transport_api::block_on_polling`] on bare metal.
//!
//! - **Sending** happens in `invoke_async` itself: errors of [`Session::start`] (`Busy` when
//!   the contexts or the session's payload buffers are all taken, `TooLarge`...) are returned
//!   at once, not from the future.
//! - **Deadline**: the session's [`CallWait`](crate::CallWait) timeout, counted from
//!   `invoke_async`; a future polled after it ends in `Timeout` and the call is abandoned
//!   (counted as a timeout). The library has no timer: nothing wakes a future *at* its
//!   deadline, so an executor that should give up on a silent DSP races the future against its
//!   own timer (dropping it cancels the call, below) or keeps polling it.
//! - **Waking**: with a push-style link (completions by callback, [`Session::wakes`]) the
//!   future is woken by the DSP's answer; with a pull-style link it asks to be polled again at
//!   once (a busy future: the answer is only seen by polling).
//! - **Drop while pending** ends the call as `Cancelled` ([`Session::end`]): the context keeps
//!   its payload buffer and shared-buffer maps until the DSP answers or the session is torn
//!   down, so the DSP never writes into memory handed back to the pool.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use fwipc_transport_api::{Deadline, TxOutcome};

use super::{Arg, InvokeTicket, Session};
use crate::error::{FastRpcError, Result};

/// A call in flight as a future; resolves as [`Session::invoke`] returns, with the
/// out-buffers of its arguments filled. See [`Session::invoke_async`].
#[must_use = "a dropped InvokeFuture cancels its call"]
pub struct InvokeFuture<'s, 'a, 'b> {
    session: &'s Session,
    /// `None` once resolved; dropping the future earlier cancels the call.
    ticket: Option<InvokeTicket>,
    args: &'a mut [Arg<'b>],
    deadline: Deadline,
}

impl core::fmt::Debug for InvokeFuture<'_, '_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InvokeFuture")
            .field("ticket", &self.ticket)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Queue a call of `method` on `handle` and return a future for its completion (the async
    /// form of [`Session::invoke`]; see [`InvokeFuture`]). Errors of [`Session::start`] are
    /// returned at once.
    pub fn invoke_async<'s, 'a, 'b>(
        &'s self,
        handle: u32,
        method: u32,
        args: &'a mut [Arg<'b>],
    ) -> Result<InvokeFuture<'s, 'a, 'b>> {
        let t = self.start(handle, method, args, 0)?;
        Ok(InvokeFuture::started(self, t, args))
    }
}

impl<'s, 'a, 'b> InvokeFuture<'s, 'a, 'b> {
    /// The future of a call already queued as `t` (its deadline counted from now).
    pub(crate) fn started(session: &'s Session, t: InvokeTicket, args: &'a mut [Arg<'b>]) -> Self {
        InvokeFuture {
            session,
            ticket: Some(t),
            args,
            deadline: session.call_wait().deadline(),
        }
    }
}

impl InvokeFuture<'_, '_, '_> {
    /// End the call with the outcome of waiting: an answered call is completed (status, outs
    /// copied back, finished), a failed or timed-out one is abandoned.
    fn resolve(&mut self, waited: Result<()>) -> Poll<Result<()>> {
        let Some(t) = self.ticket.take() else {
            // Polled again after completion: a caller bug, reported rather than panicking.
            return Poll::Ready(Err(FastRpcError::InvalidArgument));
        };
        Poll::Ready(match waited {
            Ok(()) => self.session.complete_answered(t, self.args),
            Err(e) => {
                self.session.end(t, TxOutcome::after_wait(&Err(e.into())));
                Err(e)
            }
        })
    }
}

impl Future for InvokeFuture<'_, '_, '_> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let s = this.session;
        let Some(t) = &this.ticket else {
            return Poll::Ready(Err(FastRpcError::InvalidArgument));
        };
        match s.poll(t) {
            Ok(true) => return this.resolve(Ok(())),
            Ok(false) => {}
            Err(e) => return this.resolve(Err(e)),
        }
        if this.deadline.expired(s.call_wait().clock()) {
            return this.resolve(Err(FastRpcError::Timeout));
        }
        if s.wakes() && s.register_waker(t, cx.waker()).is_ok() {
            // The answer may have raced the registration: look once more.
            match s.poll(t) {
                Ok(true) => return this.resolve(Ok(())),
                Ok(false) => {}
                Err(e) => return this.resolve(Err(e)),
            }
        } else {
            // Nothing will wake us (pull-style link): ask to be polled again.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl Drop for InvokeFuture<'_, '_, '_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.session.end(t, TxOutcome::Cancelled);
        }
    }
}
