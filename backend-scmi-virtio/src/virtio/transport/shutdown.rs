//! Tearing a channel down: [`Transport::shutdown`](fwipc_transport_api::Transport::shutdown) (also run on drop) and
//! [`ScmiVirtio::into_transport`].

use core::mem::ManuallyDrop;

use fwipc_transport_api::{Deadline, Error, Result};
use virtio_drivers::transport::Transport as VirtioTransport;
use virtio_drivers::Hal;

use super::{ScmiVirtio, State};
use crate::virtio::features::{CMDQ, EVENTQ};

impl<H: Hal, T: VirtioTransport> ScmiVirtio<H, T> {
    /// See [`Transport::shutdown`](fwipc_transport_api::Transport::shutdown): refuse new transfers, fail in-flight ones with `Shutdown`
    /// and wake their waiters, wait (bounded) for users to leave, reset the device, take every
    /// buffer back and free the queues.
    pub(in crate::virtio) fn shutdown_impl(&self) -> Result<()> {
        if !self.lc.begin_shutdown() {
            return Ok(());
        }
        // 1. Every transfer in flight ends with Shutdown; wake its waiter. Taking the channel
        //    lock is also the fence for `send`, `poll_done` and `register_waker`, which are
        //    admitted under it (`Lifecycle::admit_locked`) and not counted as users: one that
        //    holds it now finishes first, one that takes it after us is refused.
        {
            // The device keeps the buffers until the reset below takes them back.
            let mut st = self.lock();
            let State {
                table, deferred, ..
            } = &mut *st;
            table.fail_pending(Error::Shutdown, |w| deferred.push(w));
        }
        // 2. Wait (bounded) for the users to leave (the counted ones:
        //    `reset_device`, the interrupt pass, notifications and datagram endpoints).
        let waited = match &self.cfg.clock {
            Some(c) => {
                let d = Deadline::after(&**c, self.cfg.shutdown_timeout);
                self.lc.wait_idle(&**c, d, fwipc_transport_api::Wait::Poll)
            }
            None => {
                let mut n = 0u64;
                let limit = self.cfg.shutdown_spins;
                loop {
                    if self.lc.users() == 0 {
                        break Ok(());
                    }
                    n += 1;
                    if n >= limit {
                        log::warn!(
                            "virtio-scmi: shutdown: users still active after {limit} checks"
                        );
                        break Err(Error::Timeout);
                    }
                    core::hint::spin_loop();
                }
            }
        };
        // 3. Reset the device, take every buffer back, free the queues (or quarantine them if
        //    the reset is never confirmed). Done even if a user overstayed: every access is under
        //    the channel lock.
        let reset = {
            let mut st = self.lock();
            let reset = self.reset_and_reclaim(&mut st, Error::Shutdown);
            let State {
                transport,
                cmdq,
                eventq,
                ..
            } = &mut *st;
            if cmdq.is_some() {
                transport.queue_unset(CMDQ);
            }
            if eventq.is_some() {
                transport.queue_unset(EVENTQ);
            }
            *cmdq = None;
            *eventq = None;
            reset
        };
        reset.map_err(Error::from)?;
        waited
    }
}

impl<H: Hal, T: VirtioTransport> ScmiVirtio<H, T> {
    /// Shut the channel down (if not done yet: in-flight transfers end, the device is reset, every
    /// buffer is taken back, the queues are unset and their memory freed) and give the virtio
    /// transport back, e.g. to re-initialise the device with a new [`ScmiVirtio::new`] or to hand
    /// it to another driver. The device is left reset (status 0) with no queue configured, so it
    /// references none of this channel's memory. Taking `self` by value means no other user
    /// exists (an `Arc`-shared channel needs `Arc::try_unwrap` first), so the teardown wait ends
    /// at once.
    pub fn into_transport(mut self) -> T {
        let _ = self.shutdown_impl();
        let st = self.state.get_mut();
        st.released = true;
        // SAFETY: `released` was false until the line above (this is the only place that sets
        // it, and it consumes `self`), so the transport has not been taken or dropped; it is
        // taken exactly once here and `Drop` (which runs when `self` goes out of scope below)
        // skips it because `released` is now true. Nothing else reads it afterwards: the channel
        // is shut down and `self` is consumed.
        unsafe { ManuallyDrop::take(&mut st.transport) }
    }
}

impl<H: Hal, T: VirtioTransport> Drop for ScmiVirtio<H, T> {
    fn drop(&mut self) {
        // Idempotent: a no-op after an explicit shutdown. With `&mut self` there are no other
        // users, so the wait ends at once.
        let _ = self.shutdown_impl();
        let st = self.state.get_mut();
        if !st.released {
            // SAFETY: not released, so `into_transport` did not take it; this is the only drop,
            // and `self` (hence the state) is never used again. The device was reset and its
            // queues unset by `shutdown_impl` above, before the transport goes away.
            unsafe { ManuallyDrop::drop(&mut st.transport) };
        }
    }
}
