//! The waiting strategies and the async face, against the loopback reference backend.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use std::pin::Pin;

use fwipc_conformance::loopback::{LoopbackFixture, LoopbackTransport};
use fwipc_transport_api::fixture::{Fault, Fixture};
use fwipc_transport_api::{
    block_on_polling, call, call_async, yield_now, CallFuture, Completion, Error, Request,
    StdClock, ThreadParker, Transport, Wait,
};

fn echo_with(fx: &LoopbackFixture, wait: Wait<'_>) {
    let clock = StdClock::new();
    let mut out = [0u8; 8];
    let mut req = Request::new(fx.echo_target(), b"abcd");
    if fx.completion() == Completion::Polled {
        req = req.polled();
    }
    let n = call(
        fx.transport(),
        &clock,
        &req,
        &mut out,
        Duration::from_secs(5),
        wait,
    )
    .unwrap();
    assert_eq!(&out[..n], &[!b'a', !b'b', !b'c', !b'd']);
}

#[test]
fn every_wait_strategy_completes() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let fx = LoopbackFixture::setup(mode);
        let parker = ThreadParker::new();
        echo_with(&fx, Wait::Poll);
        echo_with(
            &fx,
            Wait::SpinThenYield {
                spins: 10,
                relax: &yield_now,
            },
        );
        echo_with(&fx, Wait::Completion(&parker));
    }
}

#[test]
fn every_wait_strategy_times_out_on_time() {
    let fx = LoopbackFixture::setup(Completion::Interrupt);
    fx.remote().set_fault(Fault::Drop);
    let parker = ThreadParker::new();
    let clock = StdClock::new();
    for wait in [
        Wait::Poll,
        Wait::SpinThenYield {
            spins: 10,
            relax: &yield_now,
        },
        Wait::Completion(&parker),
    ] {
        let start = std::time::Instant::now();
        let mut out = [0u8; 8];
        let r = call(
            fx.transport(),
            &clock,
            &Request::new(1, b"x"),
            &mut out,
            Duration::from_millis(30),
            wait,
        );
        assert_eq!(r, Err(Error::Timeout), "{wait:?}");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(30) && took < Duration::from_millis(500),
            "{wait:?} took {took:?}"
        );
    }
}

fn wait_received(fx: &LoopbackFixture, n: u64) {
    let start = std::time::Instant::now();
    while fx.remote().received() < n {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "request never reached the remote"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// An interrupt-mode pair whose remote holds every reply until released.
fn held_fixture() -> LoopbackFixture {
    let fx = LoopbackFixture::setup(Completion::Interrupt);
    fx.remote().set_fault(Fault::Hold);
    fx
}

/// A call whose request is sent; its future is not polled yet.
fn pending_call<'a>(
    fx: &'a LoopbackFixture,
    clock: &'a StdClock,
    payload: &[u8],
    out: &'a mut [u8],
) -> Pin<Box<CallFuture<'a, LoopbackTransport, StdClock>>> {
    let req = Request::new(fx.echo_target(), payload);
    Box::pin(call_async(fx.transport(), clock, &req, out, Duration::from_secs(5)).unwrap())
}

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// In interrupt mode the future registers its waker and is woken by the completion, not by
/// busy self-waking.
#[test]
fn future_is_woken_by_completion() {
    let fx = held_fixture();
    let clock = StdClock::new();
    let mut out = [0u8; 8];
    let mut fut = pending_call(&fx, &clock, b"wake", &mut out);
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        0,
        "pending future woke itself (busy)"
    );
    wait_received(&fx, 1);
    fx.remote().release();
    let start = std::time::Instant::now();
    while counter.0.load(Ordering::SeqCst) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "completion never woke the future"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(4)) => {}
        other => panic!("unexpected {other:?}"),
    }
}

/// Dropping a pending future cancels the transfer safely: the buffer stays remote-owned until the
/// late reply, which is then dropped and counted, and the pool ends full.
#[test]
fn dropping_a_pending_future_is_safe() {
    let fx = held_fixture();
    let clock = StdClock::new();
    let mut out = [0u8; 8];
    {
        let mut fut = pending_call(&fx, &clock, b"drop", &mut out);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
    let s = fx.transport().stats();
    assert_eq!(
        s.pool_free + 1,
        s.pool_capacity,
        "cancelled transfer's buffer must stay remote-owned"
    );
    wait_received(&fx, 1);
    fx.remote().set_fault(Fault::None);
    fx.remote().release();
    let start = std::time::Instant::now();
    loop {
        let s = fx.transport().stats();
        if s.late_replies == 1 && s.pool_free == s.pool_capacity {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "late reply not reclaimed: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // And the synchronous executor-free driver works.
    let mut out = [0u8; 8];
    let r = block_on_polling(
        call_async(
            fx.transport(),
            &clock,
            &Request::new(1, b"ok"),
            &mut out,
            Duration::from_secs(5),
        )
        .unwrap(),
    );
    assert_eq!(r, Ok(2));
}
