//! The channel lock and the interrupt-side entry point ([`ScmiVirtio::complete`]).
//!
//! # The rule for embedders
//!
//! Call [`ScmiVirtio::complete`] from the device's interrupt handler, with the other CPUs sending
//! and interrupts enabled everywhere else. It never waits for a lock: it records that the device
//! interrupted (`irq_pending`), then *tries* the channel lock. If the lock is free it runs the
//! interrupt pass itself; if any context holds it (the code this interrupt preempted on the same
//! CPU, or a sender on another CPU) it returns at once, and that holder runs the pass when it
//! releases the lock. So an interrupt can never deadlock against the code it interrupted, and no
//! lock needs to mask interrupts.
//!
//! Configure the device's interrupt **edge-triggered** (virtio-mmio on QEMU `virt` is, per its
//! device tree). A deferred pass acknowledges the device only when the lock holder runs it, so a
//! level-triggered line would stay asserted and re-enter the handler on the CPU whose preempted
//! code holds the lock, forever. With a level-triggered line, mask it in the interrupt controller
//! in the handler and unmask it once `complete` has returned on a CPU that ran the pass.
//!
//! This holds because every lock the interrupt pass takes is taken only under the channel lock:
//! the transfer table, with its message pool and token allocator, lives in the channel state and
//! has no entry locks of its own (`Exclusive`); it is reached only with the channel lock held
//! (send reserves under it, `mark_txdone` frees under it, `stats` counts under it).
//! Wakers of completed transfers run after the lock is released, in whichever context ran the pass
//! (possibly the interrupt handler): a waker used with an interrupt-driven channel must be callable
//! from interrupt context (`ThreadParker`, a WFE parker and executor wakers that only set a flag
//! and signal are).
//!
//! # Why no interrupt can be lost
//!
//! The interrupt side stores `irq_pending` and then tries the lock; a releasing holder unlocks and
//! then loads `irq_pending`. A `SeqCst` fence between the two steps on each side (a Dekker
//! handshake, see `docs/memory-ordering.md`) guarantees that at least one of them sees the other:
//! either the interrupt side finds the lock free and runs the pass, or the holder sees the flag and
//! re-takes the lock to run it.

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{fence, Ordering};

use virtio_drivers::transport::{DeviceStatus, InterruptStatus, Transport as VirtioTransport};
use virtio_drivers::Hal;

use super::transport::{ScmiVirtio, State, IRQ_PASS_BUDGET};

/// The channel lock held: derefs to the channel state. Dropping it runs any interrupt pass that
/// arrived meanwhile, then the wakers of completed transfers, outside the lock.
pub(super) struct ChanGuard<'a, H: Hal, T: VirtioTransport> {
    chan: &'a ScmiVirtio<H, T>,
    guard: Option<spin::MutexGuard<'a, State<H, T>>>,
}

impl<H: Hal, T: VirtioTransport> Deref for ChanGuard<'_, H, T> {
    type Target = State<H, T>;
    fn deref(&self) -> &State<H, T> {
        // The guard is `Some` from construction until `drop`.
        self.guard
            .as_deref()
            .expect("channel guard used after release")
    }
}

impl<H: Hal, T: VirtioTransport> DerefMut for ChanGuard<'_, H, T> {
    fn deref_mut(&mut self) -> &mut State<H, T> {
        self.guard
            .as_deref_mut()
            .expect("channel guard used after release")
    }
}

impl<H: Hal, T: VirtioTransport> Drop for ChanGuard<'_, H, T> {
    fn drop(&mut self) {
        if let Some(g) = self.guard.take() {
            self.chan.release(g);
        }
    }
}

impl<H: Hal, T: VirtioTransport> ScmiVirtio<H, T> {
    /// Take the channel lock (spinning). Never called from the interrupt path.
    pub(super) fn lock(&self) -> ChanGuard<'_, H, T> {
        ChanGuard {
            chan: self,
            guard: Some(self.state.lock()),
        }
    }

    /// The interrupt entry point: acknowledge the device's interrupt, take every returned cmdq
    /// chain and eventq buffer, record completions, and wake registered wakers. Cheap when nothing
    /// is pending.
    ///
    /// Call it from the embedder's IRQ handler (or a thread woken by it), with other CPUs sending
    /// and interrupts enabled everywhere else: it never waits for a lock. If the channel lock is
    /// held (by the code this interrupt preempted, or by another CPU) it records the interrupt and
    /// returns; the holder runs the pass when it releases the lock. Wakers of completed transfers
    /// may run inside this call, so wakers used with an interrupt-driven channel must be callable
    /// from interrupt context.
    ///
    /// Bounded whatever the device does: at most [`IRQ_PASS_BUDGET`] passes of at most one
    /// ring's worth of used entries per queue. What a device that keeps publishing leaves is
    /// flagged and taken by the next `complete()`, `poll_done` or other channel call, without
    /// waiting for another interrupt (none may come: see [`ScmiVirtio`]'s "Budgets").
    pub fn complete(&self) {
        // Release: the pass that consumes this request may run in another context (the lock
        // holder, on another CPU) and must see what this one saw before it got here, above all
        // the device's used-ring publication that delivered the interrupt: its Acquire swap
        // in `release` pairs with this store. With Relaxed, the loom model below finds a pass
        // that takes the request, reads a stale used index and strands the entry. The fence
        // below orders the store before the lock attempt.
        self.irq_pending.store(true, Ordering::Release);
        // SeqCst: the interrupt side of the Dekker handshake with `release` (store flag; fence;
        // try the lock) — either we find the lock free or its holder sees the flag.
        fence(Ordering::SeqCst);
        if let Some(g) = self.state.try_lock() {
            self.release(g);
        }
    }

    /// Release the channel lock: first run an interrupt pass that arrived while it was held, then
    /// hand the wakers of completed transfers out one by one, waking each with the lock dropped.
    /// If an interrupt or a waker is still pending after the lock is dropped, try to take it back;
    /// when another context holds it, that context finishes the job at its own release.
    ///
    /// Bounded: at most [`IRQ_PASS_BUDGET`] passes (each draining at most one ring's worth per
    /// queue) and one waker per completed transfer. A request still pending after the last pass
    /// (a device that keeps publishing or interrupting) stays flagged in `irq_pending` for the next
    /// release, `complete()` or `poll_done`, so it is delayed, never lost.
    #[inline]
    pub(super) fn release<'a>(&'a self, g: spin::MutexGuard<'a, State<H, T>>) {
        // The common release of a channel without interrupts (every release of a polled
        // round trip): no interrupt request to serve, no waker to hand out, and no handshake to
        // hold up, so the loop below would only unlock. Inlined, so such a release costs the
        // unlock and these three looks, not a call into the loop. Relaxed: as the loop's first
        // look (a request stored after it is one the next release or `poll_done` takes). The
        // wakers' look is a guard: without interrupts `register_waker` registers none.
        if !self.cfg.interrupts
            && !self.irq_pending.load(Ordering::Relaxed)
            && g.deferred.is_empty()
        {
            drop(g);
            return;
        }
        self.release_slow(g);
    }

    /// [`ScmiVirtio::release`]'s loop: the interrupt passes, the wakers, the handshake.
    #[inline(never)]
    fn release_slow<'a>(&'a self, mut g: spin::MutexGuard<'a, State<H, T>>) {
        let mut passes = 0usize;
        loop {
            // Relaxed load first: almost every release finds no request, and a plain load
            // costs no read-modify-write; a request it misses is one stored after it, which the
            // handshake below (fence, then load) catches. Acquire swap: consumes the request
            // exactly once and pairs with the Release store in `complete`, so the pass sees
            // what the interrupted context saw (the device's publication).
            if passes < IRQ_PASS_BUDGET
                && self.irq_pending.load(Ordering::Relaxed)
                && self.irq_pending.swap(false, Ordering::Acquire)
            {
                passes += 1;
                if self.irq_pass(&mut g) {
                    self.flag_backlog();
                }
            }
            let waker = g.deferred.pop();
            drop(g);
            let woke = waker.is_some();
            if let Some(w) = waker {
                w.wake();
            }
            // Without interrupts (`ScmiVirtioConfig::interrupts` false) nothing calls
            // `complete`, so there is no handshake to hold up: `poll_done` drains the cmdq
            // itself, and a flag left by a pass that met its budget is taken by the next
            // release's first look (or the next `complete()`, should one come after all). The
            // fence is the one full barrier of an uncontended release.
            let pass_due = self.cfg.interrupts && {
                // SeqCst: the holder side of the Dekker handshake with `complete` (unlock;
                // fence; load flag) — either we see its flag here or its `try_lock` saw the
                // lock free.
                fence(Ordering::SeqCst);
                // Relaxed: ordered by the fence above. Past the pass budget a pending request
                // is left flagged for the next caller (see above).
                passes < IRQ_PASS_BUDGET && self.irq_pending.load(Ordering::Relaxed)
            };
            if !woke && !pass_due {
                return;
            }
            match self.state.try_lock() {
                Some(next) => g = next,
                // The new holder runs the pass and the remaining wakers when it releases.
                None => return,
            }
        }
    }

    /// One interrupt pass under the channel lock: acknowledge, drain both queues (each bounded
    /// by its budget), and reset a device that asked for it. `true` if a drain met its budget.
    fn irq_pass(&self, st: &mut State<H, T>) -> bool {
        let guard = self.lc.acquire();
        let isr = st.transport.ack_interrupt();
        if guard.is_err() {
            return false;
        }
        // Both queues, whatever the first one left (`|`, not `||`).
        let backlog = self.drain_cmdq(st) | self.drain_eventq(st);
        if isr.contains(InterruptStatus::DEVICE_CONFIGURATION_INTERRUPT)
            && st
                .transport
                .get_status()
                .contains(DeviceStatus::DEVICE_NEEDS_RESET)
        {
            log::warn!("virtio-scmi: device needs reset; in-flight transfers cancelled");
            let _ = self.reset_locked(st);
            return false;
        }
        backlog
    }
}

/// Model check of the handshake between [`ScmiVirtio::complete`] and `release` (a Dekker pair,
/// see the module documentation): the orderings of this file replayed on loom atomics, with the
/// channel lock as a try-lock word (`spin::Mutex` is not loom-aware, and the pass reads device
/// rings, which loom cannot track). A device publishes a used entry and interrupts while a
/// sender holds the channel lock; whichever interleaving loom picks, an interrupt pass that sees
/// the entry must run before both sides are done. Removing either `fence(SeqCst)`, or making
/// `complete`'s store of `irq_pending` Relaxed, makes loom find the stranded interrupt.
/// `RUSTFLAGS="--cfg loom" cargo test -p fwipc-scmi-virtio --release --lib loom`
#[cfg(all(test, loom))]
mod loom_tests {
    use loom::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
    use loom::sync::Arc;

    /// The channel: its lock word, `irq_pending`, the device's used index and what the interrupt
    /// passes took (only under the lock).
    #[derive(Default)]
    struct Chan {
        locked: AtomicBool,
        irq_pending: AtomicBool,
        used: AtomicU32,
        taken: AtomicU32,
    }

    impl Chan {
        fn try_lock(&self) -> bool {
            // Acquire: as `spin::Mutex::try_lock`.
            self.locked
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        }

        fn lock(&self) {
            while !self.try_lock() {
                loom::thread::yield_now();
            }
        }

        /// `ScmiVirtio::complete`.
        fn complete(&self) {
            self.irq_pending.store(true, Ordering::Release);
            fence(Ordering::SeqCst);
            if self.try_lock() {
                self.release();
            }
        }

        /// `ScmiVirtio::release` without the budget and the deferred wakers.
        fn release(&self) {
            loop {
                if self.irq_pending.load(Ordering::Relaxed)
                    && self.irq_pending.swap(false, Ordering::Acquire)
                {
                    // The pass: read the used index (the device's Release publication).
                    let u = self.used.load(Ordering::Acquire);
                    self.taken.store(u, Ordering::Relaxed);
                }
                // Release: as `spin::Mutex`'s unlock.
                self.locked.store(false, Ordering::Release);
                fence(Ordering::SeqCst);
                if !self.irq_pending.load(Ordering::Relaxed) {
                    return;
                }
                if !self.try_lock() {
                    return;
                }
            }
        }
    }

    #[test]
    fn loom_interrupt_during_a_held_lock_is_never_stranded() {
        loom::model(|| {
            let chan = Arc::new(Chan::default());
            let device = {
                let chan = chan.clone();
                loom::thread::spawn(move || {
                    // The device publishes a used entry, then its interrupt runs `complete`.
                    chan.used.store(1, Ordering::Release);
                    chan.complete();
                })
            };
            // A sender: take the channel lock, work under it, release it.
            chan.lock();
            chan.release();
            device.join().unwrap();
            chan.lock();
            assert_eq!(
                chan.taken.load(Ordering::Relaxed),
                1,
                "the interrupt was stranded: no pass took the published entry"
            );
        });
    }
}
