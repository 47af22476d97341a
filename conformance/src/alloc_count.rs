//! The steady-state allocation check every backend runs: a counting global allocator and 1000
//! full echo cycles (send → remote → poll_done/wait → fetch_response → mark_txdone) after a
//! warm-up. The allocator counts every thread, so the simulated remote is checked too.
//!
//! A backend's test binary installs the allocator and calls [`steady_state_allocs`]:
//!
//! ```ignore
//! use fwipc_conformance::alloc_count::{steady_state_allocs, CountingAlloc};
//! #[global_allocator]
//! static GLOBAL: CountingAlloc = CountingAlloc::new();
//! #[test]
//! fn steady_state_send_receive_allocates_nothing() {
//!     for mode in MyFixture::modes() {
//!         assert_eq!(steady_state_allocs::<MyFixture>(&GLOBAL, *mode), 0);
//!     }
//! }
//! ```
//!
//! Keep it the only test in its binary, so nothing else allocates while counting.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{
    call, yield_now, Bind, Completion, Error, Request, RxAction, StdClock, ThreadParker, Transport,
    Wait,
};

/// A global allocator that forwards to [`System`] and counts allocations while switched on.
#[derive(Debug)]
pub struct CountingAlloc {
    counting: AtomicBool,
    allocs: AtomicU64,
}

impl CountingAlloc {
    /// Not counting, count zero.
    pub const fn new() -> Self {
        CountingAlloc {
            counting: AtomicBool::new(false),
            allocs: AtomicU64::new(0),
        }
    }

    fn count(&self) {
        // Relaxed: a test counter; it is read after the measured work was joined with
        // (`call` returned, with the remote's reply).
        if self.counting.load(Ordering::Relaxed) {
            self.allocs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reset the count and start counting.
    pub fn start(&self) {
        self.allocs.store(0, Ordering::SeqCst);
        self.counting.store(true, Ordering::SeqCst);
    }

    /// Stop counting; the allocations since [`CountingAlloc::start`].
    pub fn stop(&self) -> u64 {
        self.counting.store(false, Ordering::SeqCst);
        self.allocs.load(Ordering::SeqCst)
    }
}

impl Default for CountingAlloc {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn cycles<F: Fixture>(fx: &F, n: usize, wait: Wait<'_>) {
    let clock = StdClock::new();
    let payload = [0x11u8; 48];
    let mut out = [0u8; 64];
    for _ in 0..n {
        let mut req = Request::new(fx.echo_target(), &payload);
        if fx.completion() == Completion::Polled {
            req = req.polled();
        }
        let len = call(
            fx.transport(),
            &clock,
            &req,
            &mut out,
            fx.reply_timeout(),
            wait,
        )
        .expect("echo");
        assert_eq!(len, payload.len());
        assert_eq!(out[0], !0x11);
    }
}

/// How the cycles wait: spin-then-yield in polled mode, a parker in interrupt mode.
fn wait_for(mode: Completion, parker: &ThreadParker) -> Wait<'_> {
    match mode {
        Completion::Polled => Wait::SpinThenYield {
            spins: 64,
            relax: &yield_now,
        },
        Completion::Interrupt => Wait::Completion(parker),
    }
}

/// Heap allocations (all threads) during 1000 echo cycles of a fresh `F` in `mode`, after 200
/// warm-up cycles (lazily created thread-locals, the first park...). Polled mode waits with
/// spin-then-yield, interrupt mode with a parker.
pub fn steady_state_allocs<F: Fixture>(alloc: &CountingAlloc, mode: Completion) -> u64 {
    let fx = F::setup(mode);
    let parker = ThreadParker::new();
    let wait = wait_for(mode, &parker);
    cycles(&fx, 200, wait);
    alloc.start();
    cycles(&fx, 1000, wait);
    let n = alloc.stop();
    let s = fx.transport().stats();
    assert!(
        s.completed >= 1200,
        "{}: cycles did not complete: {s:?}",
        F::NAME
    );
    n
}

/// Retry `f` (spinning, never sleeping: a sleep may allocate a timer) until it succeeds; panics
/// on an error other than back-pressure or after `limit` tries.
fn spin_until(what: &str, limit: u32, mut f: impl FnMut() -> fwipc_transport_api::Result<bool>) {
    for _ in 0..limit {
        match f() {
            Ok(true) => return,
            Ok(false) | Err(Error::Busy | Error::Retry) => yield_now(),
            Err(e) => panic!("{what}: {e}"),
        }
    }
    panic!("{what}: no progress");
}

/// Heap allocations (all threads) during 1000 datagram cycles of a fresh `F` in `mode`, after
/// 100 warm-up cycles: the remote sends one datagram, the local side holds it in `poll_rx` and
/// releases it, then (with `Caps::one_way`) sends one back with `send_to` and (with
/// `Caps::zero_copy`) one more through `loan` + `write` + `send_loan`. `None` if `F` has no
/// datagram side. What the remote received is read (and freed) between cycles, with counting
/// paused.
pub fn steady_state_datagram_allocs<F: Fixture>(
    alloc: &CountingAlloc,
    mode: Completion,
) -> Option<u64> {
    const LIMIT: u32 = 1_000_000;
    let fx = F::setup(mode);
    let (d, peer) = fx.datagram()?;
    let caps = fx.transport().caps();
    // Echo cycles first: the remote's thread is then up and past its first-use allocations
    // (a thread that is still starting allocates, and every thread is counted).
    let parker = ThreadParker::new();
    cycles(&fx, 200, wait_for(mode, &parker));
    let ep = d.bind(Bind::Any).expect("bind");
    let payload = [0x5au8; 32];
    let mut total = 0;
    for i in 0..1100 {
        if i >= 100 {
            alloc.start();
        }
        spin_until("remote send", LIMIT, || {
            peer.send(ep.addr(), &payload).map(|()| true)
        });
        let mut held = None;
        spin_until("poll_rx", LIMIT, || {
            d.poll_rx(&ep, 1, &mut |rx| {
                held = Some(rx.hold);
                RxAction::Hold
            })
            .map(|n| n == 1)
        });
        d.release_rx(held.expect("held")).expect("release");
        if caps.one_way {
            spin_until("send_to", LIMIT, || {
                d.send_to(&ep, peer.addr(), &payload).map(|()| true)
            });
        }
        if caps.zero_copy {
            spin_until("send_loan", LIMIT, || {
                let mut loan = d.loan(&ep)?;
                loan.write(0, &payload)?;
                loan.set_len(payload.len())?;
                d.send_loan(&ep, peer.addr(), loan)
                    .map(|()| true)
                    .map_err(|(e, _)| e)
            });
        }
        if i >= 100 {
            total += alloc.stop();
        }
        if i % 8 == 0 {
            drop(peer.take_received());
        }
    }
    let s = d.datagram_stats();
    let sends_per_cycle = u64::from(caps.one_way) + u64::from(caps.zero_copy);
    assert!(
        s.received >= 1100 && s.sent >= 1100 * sends_per_cycle && s.held == 0,
        "{}: datagram cycles did not complete: {s:?}",
        F::NAME
    );
    Some(total)
}
