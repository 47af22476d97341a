//! The async face of the instance: futures for the blocking calls, on the same waiting rule
//! (`Vchiq::wait_step` in `waiting.rs`: ask the call's check, give up at the deadline, else poll
//! the instance once), woken by the poll loop through the instance's wakers (`wakers.rs`) when
//! something drives it. Built on `core::task` only: any executor, or
//! [`fwipc_transport_api::block_on_polling`] on bare metal.

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use fwipc_transport_api::Deadline;

use crate::engine::service::{BulkCompletion, ServiceHandle};
use crate::engine::vchiq::Vchiq;
use crate::error::{Result, VchiqError};

/// A blocking call of the instance as a future (made by [`Vchiq::wait_async`],
/// [`Vchiq::queue_message_async`], [`Vchiq::wait_bulk_async`]).
///
/// - **Waking**: when the instance is driven ([`Vchiq::set_poll_driven`]: a doorbell interrupt's
///   bottom half or a worker calls [`Vchiq::poll`] whenever the peer signals), a pending future
///   registers its task's waker with the instance and is woken by the next poll that did work
///   (a message delivered, a bulk completed, a slot recycled, a deferred event run) or by the
///   instance's death; it then runs its check again. A check that waits on something else (a
///   flag another local task sets without the peer's involvement) must be woken by whoever sets
///   it. When the instance is not driven, nothing else would ever poll it, so a pending future
///   has polled the instance once and asks to be polled again at once (a busy loop if nothing
///   else runs).
/// - **Deadline**: counted from the call that made the future and checked only when the future
///   is polled: the library has no timer, so nothing wakes a future *at* its deadline. A driven
///   future whose peer stays silent stays pending past its deadline until something polls it;
///   that poll resolves it with `Timeout`. Race it against the executor's own timer (dropping it
///   is fine, below) to bound the wait in wall-clock time.
/// - **Drop while pending** leaves the instance as a timed-out blocking call does: a message not
///   queued yet is simply not sent; a bulk transfer stays queued, its completion kept for
///   [`Vchiq::wait_bulk`], [`Vchiq::take_bulk_completion_tag`] or the close of the service
///   (which aborts it and hands the buffer back).
#[must_use = "futures do nothing unless polled"]
pub struct VchiqFuture<'v, F> {
    v: &'v Vchiq,
    deadline: Deadline,
    check: F,
}

impl<F> fmt::Debug for VchiqFuture<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VchiqFuture")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<T, F: FnMut() -> Option<Result<T>> + Unpin> Future for VchiqFuture<'_, F> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(r) = this.v.wait_step(&this.deadline, &mut this.check) {
            return Poll::Ready(r.map_err(|e| e.unwrap_or(VchiqError::Timeout)));
        }
        if !this.v.is_poll_driven() {
            // Nothing else polls the instance: ask to be polled again (and poll it then).
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.v.wakers.register(cx.waker());
        // A poll that finished between our check and the registration woke the list before we
        // were on it: look once more.
        match (this.check)() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

impl Vchiq {
    /// The async form of the instance's waiting rule: a future that resolves once `check`
    /// returns `Some`, polling the instance between tries; `Timeout` once `timeout` passed.
    /// For waits the typed forms below do not cover (a reply delivered to a service's
    /// callback, an open).
    pub fn wait_async<T, F>(&self, timeout: Duration, check: F) -> VchiqFuture<'_, F>
    where
        F: FnMut() -> Option<Result<T>> + Unpin,
    {
        VchiqFuture {
            v: self,
            deadline: self.deadline_after(timeout),
            check,
        }
    }

    /// The async form of [`Vchiq::queue_message_wait`]: queue `payload` on `h`, retrying on
    /// back-pressure until `timeout` (nothing queued then).
    pub fn queue_message_async<'a>(
        &'a self,
        h: ServiceHandle,
        payload: &'a [u8],
        timeout: Duration,
    ) -> VchiqFuture<'a, impl FnMut() -> Option<Result> + Unpin + 'a> {
        self.wait_async(timeout, move || match self.queue_message(h, payload) {
            Err(VchiqError::Retry) => None,
            r => Some(r),
        })
    }

    /// The async form of [`Vchiq::wait_bulk`]: the completion of the NoCallback transfer `tag`.
    /// `Timeout` once `timeout` passed, with the transfer still queued; dropping the future
    /// leaves it queued too (see [`VchiqFuture`]).
    pub fn wait_bulk_async(
        &self,
        h: ServiceHandle,
        tag: u64,
        timeout: Duration,
    ) -> VchiqFuture<'_, impl FnMut() -> Option<Result<BulkCompletion>> + Unpin + '_> {
        self.wait_async(timeout, move || self.bulk_check(h, tag))
    }
}

impl Vchiq {
    /// Declare whether something other than the instance's own futures calls [`Vchiq::poll`]
    /// whenever the peer signals (the doorbell interrupt's bottom half, a worker thread such as
    /// the simulator's). Driven (`true`), a pending [`VchiqFuture`](crate::VchiqFuture) registers
    /// its task's waker and sleeps until a poll that did work wakes it. Not driven (`false`, the
    /// default), nothing else would ever poll, so a pending future polls the instance itself and
    /// asks to be polled again at once (a busy future). Set it once, when the instance is wired
    /// to its interrupt or worker.
    pub fn set_poll_driven(&self, driven: bool) {
        self.wakers.set_driven(driven);
    }

    /// Whether [`Vchiq::set_poll_driven`] declared a driver.
    pub fn is_poll_driven(&self) -> bool {
        self.wakers.is_driven()
    }
}
