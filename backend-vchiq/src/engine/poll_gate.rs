//! The single-poller gate of [`crate::Vchiq::poll`]: one thread runs the receive path at a time;
//! a thread that finds it busy leaves a "go round again" request. Local (ARM-only) memory, so
//! read-modify-writes are fine here (unlike on the shared region).
//!
//! The request must never be stranded: a loser that asks just after the holder's last check
//! would otherwise leave the work until the next doorbell (or a `prepare_sleep` that an
//! interrupt-driven embedder may never call). So "busy" and "again" are two bits of *one* word,
//! changed only by read-modify-writes: the loser's "again" and the holder's "open the gate" are
//! totally ordered in that word's modification order. Either the loser's update comes first, and
//! the holder's `leave` sees AGAIN and goes round again instead of opening, or the holder's comes
//! first, and the loser finds the gate open and takes it. No fence and no Dekker pair needed.
//! Model-checked in `loom_tests` (fails when `leave` opens the gate without looking at AGAIN).

use core::cell::UnsafeCell;

use crate::sync::{AtomicU32, Ordering};

const BUSY: u32 = 1;
const AGAIN: u32 = 2;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct PollGate {
    state: AtomicU32,
}

impl PollGate {
    pub(crate) fn new() -> Self {
        PollGate {
            state: AtomicU32::new(0),
        }
    }

    /// Ask for a poll round (whoever polls next, or the running poller, does it). Returns
    /// whether a poller held the gate when the request landed: then that poller serves it
    /// (its `leave` finds AGAIN in the same word and goes round again, or it stopped at its
    /// budget with [`PollGate::leave_keep_request`] and asks the platform for a poll itself),
    /// so the caller need not ask for one. `false`: nobody is polling, someone must.
    pub(crate) fn request(&self) -> bool {
        // Release: what the requester did before (e.g. `kick`'s local signal) is visible to the
        // poller whose `take_request` (AcqRel) reads the bit.
        self.state.fetch_or(AGAIN, Ordering::Release) & BUSY != 0
    }

    /// Whether a round was requested and not yet started (the worker must not sleep).
    pub(crate) fn requested(&self) -> bool {
        // Acquire: pairs with `request`.
        self.state.load(Ordering::Acquire) & AGAIN != 0
    }

    /// Consume the request at the start of a round (gate held).
    pub(crate) fn take_request(&self) -> bool {
        // A load first: most rounds find no request, and a load is not a read-modify-write.
        // Acquire: pairs with the requester's Release when it sees the bit. A request that lands
        // after this load is no different from one landing after the `fetch_and` below: `leave`
        // reports it (or the holder's next round takes it).
        if self.state.load(Ordering::Acquire) & AGAIN == 0 {
            return false;
        }
        // AcqRel: consume exactly once; Acquire pairs with the requester's Release.
        self.state.fetch_and(!AGAIN, Ordering::AcqRel) & AGAIN != 0
    }

    /// Become the poller (`true`), or record a request for the running one (`false`: it is
    /// guaranteed to run another round for us).
    pub(crate) fn enter(&self) -> bool {
        // Relaxed: only a first guess for the compare-exchange loop.
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let won = cur & BUSY == 0;
            let new = if won { cur | BUSY } else { cur | AGAIN };
            // AcqRel on success: Acquire (winning) orders us after the previous holder's
            // Release in `leave`; Release (losing) publishes what we did before to the holder.
            // Relaxed on failure: we retry with the value read.
            match self
                .state
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return won,
                Err(v) => cur = v,
            }
        }
    }

    /// Open the gate without consuming a pending request (the poller stopped at its budget with
    /// work left): AGAIN stays set, so [`PollGate::requested`] keeps a worker from sleeping and
    /// the next `enter` runs the requested round. Nothing is stranded: the request is still in
    /// the word, only no longer served by this poller.
    pub(crate) fn leave_keep_request(&self) {
        // Release: our rounds happen-before the next holder's Acquire in `enter` (as in `leave`).
        self.state.fetch_and(!BUSY, Ordering::Release);
    }

    /// End a pass. `true`: a request arrived (AGAIN is set), the caller still holds the gate and
    /// must run another round; `false`: the gate is open.
    pub(crate) fn leave(&self) -> bool {
        // Relaxed: only a first guess for the compare-exchange loop.
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            if cur & AGAIN != 0 {
                return true;
            }
            // Release: our rounds happen-before the next holder's Acquire in `enter`. Relaxed
            // on failure: retry with the value read (a request may just have arrived).
            match self.state.compare_exchange_weak(
                cur,
                cur & !BUSY,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return false,
                Err(v) => cur = v,
            }
        }
    }
}

/// Data only the gate's holder touches (the poller's scratch buffer). The gate orders one
/// holder's use before the next one's as a lock would (the Release of [`PollGate::leave`] /
/// [`PollGate::leave_keep_request`] pairs with the Acquire of the next winning
/// [`PollGate::enter`]), so the data needs no lock of its own: a lock here would cost one more
/// read-modify-write per `poll` and could never be contended.
pub(crate) struct GateCell<T>(UnsafeCell<T>);

// SAFETY: the value is reached only through `GateCell::with`, whose caller holds the gate: one
// thread at a time, each use ordered after the last by the gate's Release/Acquire pair. `T: Send`
// because the value moves between the threads that hold the gate in turn.
unsafe impl<T: Send> Sync for GateCell<T> {}

impl<T> GateCell<T> {
    pub(crate) fn new(value: T) -> Self {
        GateCell(UnsafeCell::new(value))
    }

    /// Run `f` on the value.
    ///
    /// # Safety
    ///
    /// The caller holds the gate of the [`PollGate`] this cell belongs to (its `enter` returned
    /// `true` and it has not left since), and does not call `with` again from inside `f`.
    pub(crate) unsafe fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: the caller's contract: the only holder of the gate, so no other reference to
        // the value exists, and the gate's Acquire ordered the last holder's writes before ours.
        f(unsafe { &mut *self.0.get() })
    }
}

impl<T> core::fmt::Debug for GateCell<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("GateCell")
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The interleaving of review point 4: the holder has made its last check and found nothing;
    /// a second poller arrives, loses the gate and returns. The holder's `leave` must report the
    /// request, and the holder (entering again) consumes it.
    #[test]
    fn loser_request_is_seen_after_the_last_round() {
        let g = PollGate::new();
        assert!(g.enter());
        assert!(!g.take_request(), "holder's last round: nothing requested");
        assert!(!g.enter(), "second poller loses the gate");
        assert!(g.requested());
        assert!(
            g.leave(),
            "the holder must see the stranded request and go again"
        );
        assert!(!g.enter(), "still held by the first poller");
        assert!(g.take_request());
        assert!(!g.leave(), "consumed: the gate opens");
        assert!(!g.requested());
        assert!(g.enter(), "open again");
        assert!(!g.leave());
    }

    /// `request` says whether a poller held the gate (it serves the request) or nobody did (the
    /// caller must have one run: `Vchiq::kick` asks the platform only then).
    #[test]
    fn request_reports_whether_a_poller_will_serve_it() {
        let g = PollGate::new();
        assert!(!g.request(), "nobody polling");
        assert!(g.enter());
        assert!(g.take_request());
        assert!(g.request(), "the holder serves it");
        assert!(g.leave(), "and goes round again for it");
        assert!(g.take_request());
        assert!(!g.leave());
        assert!(!g.request(), "the gate is open again");
    }

    /// A poller that stops at its budget opens the gate but keeps a loser's request pending for
    /// the next poller (and for `prepare_sleep`).
    #[test]
    fn leave_keep_request_opens_the_gate_and_keeps_the_request() {
        let g = PollGate::new();
        assert!(g.enter());
        assert!(!g.enter(), "loser records a request");
        g.leave_keep_request();
        assert!(g.requested(), "the request survives the budgeted exit");
        assert!(g.enter(), "the gate is open");
        assert!(g.take_request(), "the next poller serves it");
        assert!(!g.leave());
    }

    /// The poller's scratch buffer has no lock of its own ([`GateCell`]): the gate must order one
    /// holder's use before the next one's. Two threads poll in turn, each writing the buffer
    /// non-atomically while it holds the gate; no increment may be lost, and under Miri (CI)
    /// the race detector fails this test if `enter`/`leave` stop ordering the holders.
    #[test]
    fn the_gate_orders_its_holders_uses_of_the_scratch_cell() {
        use std::sync::Arc;
        const ROUNDS: u32 = if cfg!(miri) { 50 } else { 20_000 };
        let shared = Arc::new((PollGate::new(), GateCell::new([0u32; 2])));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let (gate, cell) = &*shared;
                    let mut won = 0u32;
                    for _ in 0..ROUNDS {
                        if !gate.enter() {
                            continue;
                        }
                        loop {
                            gate.take_request();
                            // SAFETY: between a winning `enter` and the `leave` that opens.
                            unsafe { cell.with(|v| v[0] += 1) };
                            won += 1;
                            if !gate.leave() {
                                break;
                            }
                        }
                    }
                    won
                })
            })
            .collect();
        let won: u32 = workers.into_iter().map(|w| w.join().expect("poller")).sum();
        let (gate, cell) = &*shared;
        assert!(gate.enter());
        // SAFETY: the gate is held and the workers are gone.
        assert_eq!(unsafe { cell.with(|v| v[0]) }, won);
        assert!(!gate.leave());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicU32;
    use loom::sync::Arc;

    /// The poll loop of `Vchiq::poll` reduced to the gate: a round takes the request, then
    /// consumes the work if it is there; it ends when it found neither.
    fn poll(g: &PollGate, work: &AtomicU32, done: &AtomicU32) {
        if !g.enter() {
            return;
        }
        loop {
            loop {
                let again = g.take_request();
                // Acquire: pairs with the producer's Release (the "peer's tx_pos").
                let found = work.load(Ordering::Acquire) == 1;
                if found {
                    work.store(0, Ordering::Relaxed);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                if !found && !again {
                    break;
                }
            }
            if !g.leave() {
                break;
            }
        }
    }

    /// A poller racing a producer that publishes work and then polls: after both return, the
    /// work was done (nobody left it for a doorbell that never comes).
    #[test]
    fn loom_poll_gate_no_stranded_request() {
        loom::model(|| {
            let sh = Arc::new((PollGate::new(), AtomicU32::new(0), AtomicU32::new(0)));
            let s2 = sh.clone();
            let producer = loom::thread::spawn(move || {
                s2.1.store(1, Ordering::Release);
                poll(&s2.0, &s2.1, &s2.2);
            });
            poll(&sh.0, &sh.1, &sh.2);
            producer.join().unwrap();
            assert_eq!(
                sh.2.load(Ordering::Relaxed),
                1,
                "work left until the next doorbell"
            );
        });
    }
}
