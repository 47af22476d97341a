//! Steady-state send/receive through the pool allocates nothing: a counting global allocator
//! watches 1000 full cycles (send → remote → poll_done/wait → fetch_response → mark_txdone) on the
//! loopback reference backend, in both completion modes, after a warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fwipc_conformance::loopback::LoopbackFixture;
use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{
    call, yield_now, Completion, Request, StdClock, ThreadParker, Transport, Wait,
};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Relaxed: a test counter; the test reads it after joining with the measured work.
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Relaxed: see `alloc`.
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn cycles(fx: &LoopbackFixture, n: usize, wait: Wait<'_>) {
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

/// One test function so nothing else runs (and allocates) in parallel while counting.
#[test]
fn steady_state_send_receive_allocates_nothing() {
    for mode in [Completion::Polled, Completion::Interrupt] {
        let fx = LoopbackFixture::setup(mode);
        let parker = ThreadParker::new();
        let wait = match mode {
            Completion::Polled => Wait::SpinThenYield {
                spins: 64,
                relax: &yield_now,
            },
            Completion::Interrupt => Wait::Completion(&parker),
        };
        cycles(&fx, 200, wait); // warm-up: lazily created thread-locals, first park, etc.
        ALLOCS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        cycles(&fx, 1000, wait);
        COUNTING.store(false, Ordering::SeqCst);
        let n = ALLOCS.load(Ordering::SeqCst);
        let s = fx.transport().stats();
        assert!(s.completed >= 1200, "cycles did not complete: {s:?}");
        assert_eq!(
            n, 0,
            "{n} heap allocations in 1000 steady-state cycles ({mode:?})"
        );
    }
}
