//! "Steady-state send/receive paths allocate nothing": a counting global allocator counts the
//! allocations made *by this test's thread* while it runs echo round trips (and, in a second
//! test, datagram cycles) through the transport in polled mode (so the ARM side's whole receive path, slot handler included, runs on this
//! thread). The simulated VideoCore runs on its own thread and may allocate; it is not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{call, Completion, Request, StdClock, Transport, Wait};
use fwipc_transport_api::{Bind, Error, RxAction};
use fwipc_vchiq::sim::VchiqFixture;

struct Counting;

thread_local! {
    static COUNT: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the bookkeeping touches only const-initialised
// thread-locals (no allocation, no re-entrancy).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| {
            if c.get() {
                let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
            }
        });
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn echo_round_trips_allocate_nothing_on_the_caller() {
    let f = VchiqFixture::setup(Completion::Polled);
    let clock = StdClock::new();
    let mut out = vec![0u8; 4096];
    let req: Vec<u8> = (0..200u8).collect();
    let relax = || std::thread::yield_now();
    let wait = Wait::SpinThenYield {
        spins: 64,
        relax: &relax,
    };
    let mut round = || {
        let n = call(
            f.transport(),
            &clock,
            &Request::new(f.echo_target(), &req).polled(),
            &mut out,
            Duration::from_secs(5),
            wait,
        )
        .unwrap();
        assert_eq!(n, req.len());
        assert_eq!(out[7], !7);
    };
    // Warm up (first-use paths, slot recycling round the whole ring).
    for _ in 0..300 {
        round();
    }
    COUNT.with(|c| c.set(true));
    for _ in 0..500 {
        round();
    }
    COUNT.with(|c| c.set(false));
    let n = ALLOCS.with(|a| a.get());
    assert_eq!(n, 0, "{n} allocations on the send/receive path");
    let s = f.transport().stats();
    assert_eq!(s.pool_free, s.pool_capacity);
}

/// The datagram path on the caller's thread (polled mode: `poll_rx` runs the core's receive
/// path here): remote send, hold in `poll_rx`, `release_rx`, `send_to`, and a zero-copy
/// `loan` + `write` + `send_loan`.
#[test]
fn datagram_cycles_allocate_nothing_on_the_caller() {
    let f = VchiqFixture::setup(Completion::Polled);
    let (d, peer) = f.datagram().unwrap();
    let ep = d.bind(Bind::Any).unwrap();
    let payload = [0x5au8; 32];
    let cycle = || {
        loop {
            match peer.send(ep.addr(), &payload) {
                Ok(()) => break,
                Err(Error::Retry) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        let mut held = None;
        while held.is_none() {
            d.poll_rx(&ep, 1, &mut |rx| {
                held = Some(rx.hold);
                RxAction::Hold
            })
            .unwrap();
        }
        d.release_rx(held.unwrap()).unwrap();
        loop {
            match d.send_to(&ep, peer.addr(), &payload) {
                Ok(()) => break,
                Err(Error::Retry) => {
                    d.poll_rx(&ep, 0, &mut |_| RxAction::Release).unwrap();
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
        // Zero-copy: a slot loan written in place and sent.
        loop {
            match d.loan(&ep) {
                Ok(mut l) => {
                    l.write(0, &payload).unwrap();
                    l.set_len(payload.len()).unwrap();
                    d.send_loan(&ep, peer.addr(), l)
                        .map_err(|(e, _)| e)
                        .unwrap();
                    break;
                }
                Err(Error::Retry) => {
                    d.poll_rx(&ep, 0, &mut |_| RxAction::Release).unwrap();
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
    };
    for _ in 0..300 {
        cycle();
    }
    COUNT.with(|c| c.set(true));
    for _ in 0..500 {
        cycle();
    }
    COUNT.with(|c| c.set(false));
    let n = ALLOCS.with(|a| a.get());
    assert_eq!(n, 0, "{n} allocations on the datagram path");
    assert_eq!(d.datagram_stats().held, 0);
}
