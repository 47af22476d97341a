//! The poll loop: one bounded pass over everything the peer (or a local caller) left pending.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::config::Role;
use crate::engine::counters::bump;
use crate::engine::vchiq::Vchiq;
use crate::shared::remote_event;
use crate::wire::layout::off;

impl Vchiq {
    /// Process everything pending: recycled slots, the peer's messages (handlers run here, with
    /// no lock held), the sync slot, bulk transfers (master), deferred callbacks. Non-blocking; call it from the
    /// doorbell interrupt's bottom half or a worker, or from a polling loop. Returns the units of
    /// work done.
    ///
    /// One poller at a time: a call that finds another thread polling returns 0 at once, and
    /// that thread is guaranteed to run another round for it before it returns (see
    /// `poll_gate`), so calling `poll` only from an interrupt's bottom half never leaves work
    /// until the next doorbell.
    ///
    /// Bounded: the peer writes `fired` and `tx_pos`, so it could keep a loop of "until nothing
    /// fired and nothing was parsed" busy for ever. One call runs at most [`POLL_MAX_ROUNDS`]
    /// rounds and parses at most [`POLL_MAX_MSGS`] messages. When it stops with work left it
    /// counts [`VchiqCounters::poll_budget_exhausted`](crate::VchiqCounters::poll_budget_exhausted), leaves our `trigger` fired (so a worker's
    /// [`Vchiq::prepare_sleep`] refuses to sleep) and calls the platform's `request_poll`, so the
    /// rest is done by the next call, never lost.
    pub fn poll(&self) -> usize {
        if !self.poll_gate.enter() {
            return 0;
        }
        let mut budget = PollBudget {
            rounds: POLL_MAX_ROUNDS,
            msgs: POLL_MAX_MSGS,
            exhausted: false,
        };
        let mut total = 0;
        loop {
            total += self.poll_rounds(&mut budget);
            if budget.exhausted {
                // Open the gate without consuming a pending request: it stays visible to
                // `prepare_sleep` and to the next `poll` (see `PollGate::leave_keep_request`).
                self.poll_gate.leave_keep_request();
                bump(&self.counters.poll_budget_exhausted);
                log::debug!(target: "vchiq", "{:?}: poll budget exhausted, work left for the next call", self.role);
                if let Some(e) = self.ev_words(self.local_off, off::TRIGGER) {
                    remote_event::signal_local(e);
                }
                self.platform.request_poll();
                break;
            }
            // `true`: a request arrived after our last round; we still hold the gate.
            if !self.poll_gate.leave() {
                break;
            }
        }
        if total > 0 {
            // Whatever a pending future waits on may have happened: let them look.
            self.wakers.wake_all();
        }
        total
    }

    /// `poll`'s loop, with the gate held. Stops with `budget.exhausted` set when a further round
    /// was due but the budget is spent.
    fn poll_rounds(&self, budget: &mut PollBudget) -> usize {
        // SAFETY: called only from `poll`, between a winning `poll_gate.enter()` and the
        // `leave` that opens the gate; nothing below reaches `poll_scratch` again.
        unsafe {
            self.poll_scratch
                .with(|scratch| self.poll_rounds_with(scratch, budget))
        }
    }

    /// [`Vchiq::poll_rounds`] with the poller's scratch buffer.
    fn poll_rounds_with(&self, scratch: &mut [u8], budget: &mut PollBudget) -> usize {
        let mut total = 0;
        // Our shared state's words, bounds-checked once for the call's rounds: each round takes
        // its four events and peeks at them again (eight event lookups per round).
        let local = self.state_words(self.local_off).unwrap_or(&[]);
        loop {
            if budget.rounds == 0 || budget.msgs == 0 {
                budget.exhausted = true;
                break;
            }
            budget.rounds -= 1;
            let again = self.poll_gate.take_request();
            let mut fired = false;
            let mut sync_released = false;
            for ev in LOCAL_EVENTS {
                if let Some(e) = Self::event_of(local, ev) {
                    let f = remote_event::take(e, &*self.platform);
                    sync_released |= f && ev == off::SYNC_RELEASE;
                    fired |= f;
                }
            }
            // The `inner` lock is taken once for the round's own steps, held from the free
            // queue into the stream's first parser step and from the stream's last one into the
            // bulks and the deferred events (plus once per message delivered and per control
            // message and deferred event): it is the round's largest cost when there is little
            // to do. The sync slot is looked at between the free queue and the stream, without
            // the lock, only when its msgid says a message is there.
            let mut g = self.inner.lock();
            if fired || again {
                // A handler's Retry (or a stall) is re-tried on the next event
                // (docs/protocols/vchiq.md §4: "the message stays in place and is re-parsed
                // on the next trigger").
                g.rx_stalled = false;
                // The peer released our sync slot: a sync-mode sender may go again.
                g.tx_freed |= sync_released;
            }
            let mut work = self.process_free_queue_locked(&mut g);
            if self.sync_slot_full() {
                drop(g);
                work += self.sync_poll(scratch);
                g = self.inner.lock();
            }
            let (parsed, mut g) = self.rx_poll(g, scratch, &mut budget.msgs);
            work += parsed;
            let pending = {
                if self.role == Role::Master {
                    work += self.master_process_bulks(&mut g);
                }
                Self::notify_tx_space(&mut g);
                !g.pending.is_empty()
            };
            drop(g);
            // An event deferred after this check is someone else's push, which requests its own
            // poll round (as one pushed just after `dispatch_pending` returned always did).
            if pending {
                work += self.dispatch_pending();
            }
            total += work;
            // Acquire: pairs with `mark_dead`'s Release; a dead instance stops polling once idle
            // (a late `false` costs one more round).
            if work == 0 && (!(again || fired) || self.dead.load(Ordering::Acquire)) {
                break;
            }
            // Another round only if one of our events fired since this round took them. Every
            // source of work raises one: the peer fires TRIGGER / RECYCLE / SYNC_* after it
            // publishes (docs/protocols/vchiq.md §3), local callers `kick` (a local TRIGGER and a
            // gate request, which `PollGate::leave` turns into another pass), and what a round's
            // own handlers queue (deferred events, TxSpace) is dispatched within the round. So a
            // round that took no event would find nothing; the peek replaces it with four loads.
            // A message budget spent mid-stream is the exception: the stream's event was taken,
            // so the next round is due (and the loop's head reports the budget exhausted).
            if budget.msgs != 0 && !Self::local_event_fired(local) {
                break;
            }
        }
        total
    }

    /// Whether any of our four events has fired (a peek: [`remote_event::take`] consumes it,
    /// with the barriers, in the next round); `local` is our shared state's words
    /// ([`Vchiq::state_words`]).
    fn local_event_fired(local: &[AtomicU32]) -> bool {
        LOCAL_EVENTS.iter().any(|&ev| {
            Self::event_of(local, ev)
                // Relaxed: only decides whether to run a round; the round's `take` is the
                // Acquire that orders the reads after it.
                .is_some_and(|e| e.fired.load(Ordering::Relaxed) != 0)
        })
    }
}

/// The events in our shared state that a poll round takes (docs/protocols/vchiq.md §3).
const LOCAL_EVENTS: [usize; 4] = [
    off::SYNC_TRIGGER,
    off::SYNC_RELEASE,
    off::TRIGGER,
    off::RECYCLE,
];

/// Rounds one [`Vchiq::poll`] call runs at most (each takes the four events, drains the free
/// queue, the sync slot, the peer's stream up to the message budget, and the deferred events).
pub const POLL_MAX_ROUNDS: usize = 64;

/// Messages of the peer's stream (PADDING included) one [`Vchiq::poll`] call parses at most. More
/// than a whole default window of the smallest messages (31 data slots × 512 eight-byte messages,
/// docs/protocols/vchiq.md §1), so a well-behaved peer's backlog is still drained in one call.
pub const POLL_MAX_MSGS: usize = 16384;

/// What is left of one `poll` call's budget.
struct PollBudget {
    rounds: usize,
    msgs: usize,
    exhausted: bool,
}
