//! remote_event signalling (docs/protocols/vchiq.md §3): a non-counting `{armed, fired}` flag pair
//! living in the shared state of the side that waits on it. Many events share one doorbell per
//! direction.
//!
//! The three operations below are the whole protocol; each ordering says why it is there. They are
//! generic over [`Word`] and [`Barriers`] so the loom model (`loom_tests`) checks exactly this
//! code; in production the barriers are the platform's (`dsb` toward a real VideoCore).

use crate::sync::{Barriers, Ordering, Word};

/// One remote event's two words.
pub struct EventRef<'a, W: Word> {
    /// Set by the waiter before sleeping.
    pub armed: &'a W,
    /// Set by the signaller.
    pub fired: &'a W,
}

impl<W: Word> Clone for EventRef<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W: Word> Copy for EventRef<'_, W> {}

/// Signaller side: publish `fired`, then ring `ring` if the waiter is armed.
pub fn signal<W: Word, B: Barriers + ?Sized>(ev: EventRef<'_, W>, bar: &B, ring: impl FnOnce()) {
    // wmb (docs/protocols/vchiq.md §3 barrier 2, for the VideoCore): the Release below orders our
    // earlier stores only for observers in our coherence domain; the platform's write barrier (`dsb
    // st`) makes them visible to a bus master outside it before `fired`.
    bar.wmb();
    // Release (docs/protocols/vchiq.md §3 barrier 2, the signaller's leading wmb): the payload, the
    // header and tx_pos written before this call become visible no later than `fired = 1`, so a
    // waiter that Acquire-reads `fired` sees them.
    ev.fired.store(1, Ordering::Release);
    // SeqCst fence (docs/protocols/vchiq.md §3 barrier 1, the Dekker pair with `arm`): StoreLoad
    // between our `fired = 1` and our read of `armed`. Together with the waiter's fence between
    // `armed = 1` and its re-read of `fired`, either the waiter sees fired (and does not sleep) or
    // we see armed (and ring). Without it both loads can read stale values: a lost wake-up. `mb` is
    // `fence(SeqCst)` hosted and `dsb sy` toward a VideoCore (Linux's `dsb(sy)` here); it also
    // completes every earlier store before the doorbell write below.
    bar.mb();
    // Relaxed: ordered by the fence above; we only decide whether to ring.
    if ev.armed.load(Ordering::Relaxed) != 0 {
        ring();
    }
}

/// Waiter side, before sleeping: arm the event. Returns `true` if the caller may sleep (the event
/// had not fired), `false` if it fired meanwhile (do not sleep; run [`take`] and process).
pub fn arm<W: Word, B: Barriers + ?Sized>(ev: EventRef<'_, W>, bar: &B) -> bool {
    // Acquire: if it already fired, what the signaller published before is visible.
    if ev.fired.load(Ordering::Acquire) != 0 {
        return false;
    }
    // Relaxed store; the fence below orders it before the re-check.
    ev.armed.store(1, Ordering::Relaxed);
    // SeqCst fence (docs/protocols/vchiq.md §3 barrier 1, waiter half): StoreLoad between `armed =
    // 1` and the re-read of `fired`; pairs with the fence in `signal`. `dsb sy` toward a VideoCore.
    bar.mb();
    // Acquire: pairs with the signaller's Release store of `fired`.
    ev.fired.load(Ordering::Acquire) == 0
}

/// Waiter side, after waking: clear `armed`. Only the thread that armed (the one that sleeps on
/// the doorbell) may disarm; a thread that merely polls must not, or the sleeper would miss its
/// next doorbell.
pub fn disarm<W: Word>(ev: EventRef<'_, W>) {
    // Relaxed: a performance hint only (docs/protocols/vchiq.md §3 barrier 3): tells the peer
    // promptly that ringing is pointless; a stale `armed = 1` costs one spurious doorbell, never a
    // lost one.
    ev.armed.store(0, Ordering::Relaxed);
}

/// Consume the event (any thread that processes the queues). Returns whether it had fired. The
/// caller then reads tx_pos / the slots.
///
/// Plain load/store plus a fence, no read-modify-write: the words live in memory that is Normal
/// non-cacheable on the ARM, where exclusive (LDXR/STXR) accesses are not reliably supported
/// (Linux uses plain accesses there too).
pub fn take<W: Word, B: Barriers + ?Sized>(ev: EventRef<'_, W>, bar: &B) -> bool {
    // Acquire (docs/protocols/vchiq.md §3 barrier 4): pairs with the signaller's Release store of
    // `fired`; the data it published is visible to our later reads.
    if ev.fired.load(Ordering::Acquire) == 0 {
        return false;
    }
    ev.fired.store(0, Ordering::Relaxed);
    // SeqCst fence (docs/protocols/vchiq.md §3 gap (a)): clearing `fired` then reading tx_pos/slots
    // is a store then loads; mainline's rmb does not order StoreLoad. With the signaller's fence
    // after its `fired = 1`: either its fence is first, and our reads below see everything it
    // published before (the new tx_pos), or ours is first, and its `fired = 1` lands after our `0`
    // in modification order (it stays set and we run again). No signal is lost either way. `mb` is
    // also docs/protocols/vchiq.md §3 barrier 4 (the rmb after the wait) toward a VideoCore: `dsb
    // sy` there.
    bar.mb();
    true
}

/// Local signal (request_poll, sync_release at init): set `fired` without ringing.
pub fn signal_local<W: Word>(ev: EventRef<'_, W>) {
    // Release: the state published before is visible to whoever takes the event.
    ev.fired.store(1, Ordering::Release);
}

#[cfg(all(test, not(loom)))]
pub(crate) mod tests {
    use super::*;
    use crate::sync::Fences;
    use core::cell::RefCell;
    use core::sync::atomic::AtomicU32;

    #[test]
    fn ring_only_when_armed() {
        let (a, f) = (AtomicU32::new(0), AtomicU32::new(0));
        let ev = EventRef {
            armed: &a,
            fired: &f,
        };
        let mut rung = 0;
        signal(ev, &Fences, || rung += 1);
        assert_eq!(rung, 0, "not armed: no doorbell");
        assert!(!arm(ev, &Fences), "already fired: must not sleep");
        assert!(take(ev, &Fences));
        assert!(!take(ev, &Fences), "non-counting");
        assert!(arm(ev, &Fences));
        signal(ev, &Fences, || rung += 1);
        assert_eq!(rung, 1);
        assert!(take(ev, &Fences));
        assert_eq!(a.load(Ordering::Relaxed), 1, "only the sleeper disarms");
        disarm(ev);
        assert_eq!(a.load(Ordering::Relaxed), 0);
    }

    /// What a shared word or a barrier did, in program order.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Op {
        Load(&'static str),
        Store(&'static str, u32),
        Wmb,
        Rmb,
        Mb,
        Ring,
    }

    /// A word that logs its accesses into a shared log (single-threaded tests).
    pub(crate) struct LogWord<'a> {
        pub name: &'static str,
        pub v: AtomicU32,
        pub log: &'a RefCell<Vec<Op>>,
    }
    impl Word for LogWord<'_> {
        fn load(&self, o: Ordering) -> u32 {
            self.log.borrow_mut().push(Op::Load(self.name));
            self.v.load(o)
        }
        fn store(&self, v: u32, o: Ordering) {
            self.log.borrow_mut().push(Op::Store(self.name, v));
            self.v.store(v, o)
        }
    }
    /// Barriers that log themselves.
    pub(crate) struct LogBarriers<'a>(pub &'a RefCell<Vec<Op>>);
    impl Barriers for LogBarriers<'_> {
        fn wmb(&self) {
            self.0.borrow_mut().push(Op::Wmb);
        }
        fn rmb(&self) {
            self.0.borrow_mut().push(Op::Rmb);
        }
        fn mb(&self) {
            self.0.borrow_mut().push(Op::Mb);
        }
    }

    /// The peer-facing barriers sit exactly where docs/protocols/vchiq.md §3 (and Linux's
    /// `dsb(sy)`) puts them: signal = wmb, `fired = 1`, mb, read `armed`, ring; arm = `armed = 1`,
    /// mb, re-read `fired`; take = read `fired`, `fired = 0`, mb (before the caller reads tx_pos).
    #[test]
    fn barriers_in_protocol_order() {
        let log = RefCell::new(Vec::new());
        let w = |name| LogWord {
            name,
            v: AtomicU32::new(0),
            log: &log,
        };
        let (armed, fired) = (w("armed"), w("fired"));
        let ev = EventRef {
            armed: &armed,
            fired: &fired,
        };
        let bar = LogBarriers(&log);
        assert!(arm(ev, &bar));
        assert_eq!(
            log.take(),
            [
                Op::Load("fired"),
                Op::Store("armed", 1),
                Op::Mb,
                Op::Load("fired")
            ]
        );
        signal(ev, &bar, || log.borrow_mut().push(Op::Ring));
        assert_eq!(
            log.take(),
            [
                Op::Wmb,
                Op::Store("fired", 1),
                Op::Mb,
                Op::Load("armed"),
                Op::Ring
            ]
        );
        assert!(take(ev, &bar));
        assert_eq!(
            log.take(),
            [Op::Load("fired"), Op::Store("fired", 0), Op::Mb]
        );
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Fences;
    use loom::sync::atomic::AtomicU32;
    use loom::sync::Arc;

    /// The handshake never loses a wake-up: a waiter that decides to sleep without having seen
    /// the data is always rung; a waiter that sees `fired` also sees the data.
    #[test]
    fn loom_remote_event_no_lost_wakeup() {
        loom::model(|| {
            let words = Arc::new((AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)));
            let bell = Arc::new(AtomicU32::new(0));
            let (w2, b2) = (words.clone(), bell.clone());
            let signaller = loom::thread::spawn(move || {
                // The "tx_pos" publication.
                w2.2.store(1, Ordering::Relaxed);
                signal(
                    EventRef {
                        armed: &w2.0,
                        fired: &w2.1,
                    },
                    &Fences,
                    || b2.store(1, Ordering::Release),
                );
            });
            let ev = EventRef {
                armed: &words.0,
                fired: &words.1,
            };
            let mut slept = false;
            take(ev, &Fences);
            if words.2.load(Ordering::Acquire) == 0 {
                if arm(ev, &Fences) {
                    slept = true;
                } else {
                    assert!(take(ev, &Fences));
                    assert_eq!(words.2.load(Ordering::Acquire), 1, "fired seen, data not");
                }
            }
            signaller.join().unwrap();
            if slept {
                assert_eq!(bell.load(Ordering::Acquire), 1, "lost wake-up");
            }
        });
    }
}
