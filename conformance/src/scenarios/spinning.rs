//! `Transport::spinning` for a transport that acts on the hint: while a caller spins on its
//! reply no interrupt handler runs (the spinner takes its reply in `poll_done`), and when the
//! last spinner stops, what arrived meanwhile is taken at once, completing and waking every
//! transfer as the interrupt would have.
//!
//! Not in [`crate::suite`]: the hint is optional, and a transport that ignores it (the default)
//! is conformant. A backend that acts on it runs this from its own tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{Fixture, SimMode};
use fwipc_transport_api::{Completion, Request, Transport, TxOutcome};

use super::Verdict;

/// Counts its wakes.
#[derive(Default)]
struct Count(AtomicUsize);

impl Count {
    fn get(&self) -> usize {
        // Acquire: pairs with the Release increment, on whichever thread ran the interrupt.
        self.0.load(Ordering::Acquire)
    }
}

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        // Release: the wake is seen after the completion that caused it.
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// A waker counting into a fresh `Count`.
fn counter() -> (Arc<Count>, Waker) {
    let c = Arc::new(Count::default());
    (c.clone(), Waker::from(c))
}

/// In interrupt mode, stepped (the remote runs only when stepped): a caller spins on transfer
/// `a` while transfer `b` waits with a waker. The remote answers both and no interrupt handler
/// runs (`b`'s waker does not). A second spinner joining and leaving changes nothing. When the
/// last spinner stops, `b`'s reply is taken and its waker runs; a reply after that interrupts
/// again (its waker runs without anyone polling). Not applicable to a fixture without
/// interrupt mode or without a stepped remote.
pub fn spinning_holds_interrupts<F: Fixture>() -> Verdict {
    if !F::modes().contains(&Completion::Interrupt) {
        return Verdict::NotApplicable("no interrupt mode");
    }
    let fx = F::setup(Completion::Interrupt);
    let t = fx.transport();
    if !fx.remote().set_sim_mode(SimMode::Stepped) {
        return Verdict::NotApplicable("no stepped remote");
    }
    let a = t.send(&Request::new(fx.echo_target(), &[1])).unwrap();
    let b = t.send(&Request::new(fx.echo_target(), &[2])).unwrap();
    let (woken, waker) = counter();
    assert!(t.register_waker(&b, &waker), "{}: no waker taken", F::NAME);

    t.spinning(&a, true);
    while fx.remote().step() {}
    // An interrupt, had one been raised, may run on another thread: give it time to.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        woken.get(),
        0,
        "{}: an interrupt while a caller spins",
        F::NAME
    );

    // A second spinner joins and leaves: the first still spins.
    t.spinning(&b, true);
    t.spinning(&b, false);
    assert_eq!(woken.get(), 0, "{}: a spinner is left", F::NAME);

    t.spinning(&a, false);
    assert_eq!(woken.get(), 1, "{}: the waiter was not woken", F::NAME);
    let mut out = [0u8; 8];
    for (tk, sent) in [(a, 1u8), (b, 2u8)] {
        assert_eq!(t.poll_done(&tk), Ok(true), "{}", F::NAME);
        assert_eq!(t.fetch_response(&tk, &mut out), Ok(1), "{}", F::NAME);
        assert_eq!(out[0], !sent, "{}", F::NAME);
        t.mark_txdone(tk, TxOutcome::Done);
    }

    // Interrupts are back: the next reply's waker runs with nobody polling.
    let c = t.send(&Request::new(fx.echo_target(), &[3])).unwrap();
    let (woken, waker) = counter();
    assert!(t.register_waker(&c, &waker), "{}: no waker taken", F::NAME);
    while fx.remote().step() {}
    let start = Instant::now();
    while woken.get() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}: no interrupt after the spin",
            F::NAME
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(t.poll_done(&c), Ok(true), "{}", F::NAME);
    t.mark_txdone(c, TxOutcome::Done);
    fx.remote().set_sim_mode(SimMode::Normal);
    Verdict::Pass
}
