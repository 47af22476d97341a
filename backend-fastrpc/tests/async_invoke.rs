//! The async face of a session (`Session::invoke_async`) under a real executor
//! (`futures::executor`), against the simulated DSP.

use std::task::{Context, Waker};
use std::time::Duration;

use fwipc_fastrpc::sim::fixture::SimSystem;
use fwipc_fastrpc::sim::objects::ECHO_HANDLE;
use fwipc_fastrpc::{Arg, ChannelConfig, Session};
use fwipc_transport_api::fixture::Fault;
use fwipc_transport_api::{block_on_polling, Completion};

mod common;
use common::wait_for;
use fwipc_transport_api::fixture::with_watchdog;

/// The echo object's raw method: each out byte is the complement of the in byte.
const ECHO: u32 = 2;
/// Futures in flight at once: more than the default pools hold, so the pools are sized for it.
const N: u32 = 128;

fn config() -> ChannelConfig {
    let mut c = SimSystem::default_config();
    c.contexts = 200;
    c.payloads_per_session = N as usize;
    c
}

/// A payload of its own for call `i`: a mixed-up reply fails the check.
fn payload(i: u32) -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&i.to_le_bytes());
    p[4..].copy_from_slice(&(i.wrapping_mul(0x9e37_79b9)).to_le_bytes());
    p
}

/// `N` invoke futures joined on one executor; each checks its own reply.
fn run_concurrent(s: &Session) {
    let futs = (0..N).map(|i| async move {
        let inp = payload(i);
        let mut out = [0u8; 8];
        let mut args = [Arg::In(&inp), Arg::Out(&mut out)];
        s.invoke_async(ECHO_HANDLE, ECHO, &mut args)
            .unwrap_or_else(|e| panic!("future {i}: send: {e:?}"))
            .await
            .unwrap_or_else(|e| panic!("future {i}: {e:?}"));
        let want = inp.map(|b| !b);
        assert_eq!(out, want, "future {i} got another call's reply");
    });
    futures::executor::block_on(futures::future::join_all(futs));
}

#[test]
fn async_invoke_128_concurrent_futures_every_reply_checked() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        with_watchdog(move || {
            let sys = SimSystem::new(config(), mode);
            let s = sys.attached_session();
            assert_eq!(s.wakes(), mode == Completion::Interrupt);
            let before = sys.channel.stats();
            run_concurrent(&s);
            let st = sys.channel.stats();
            assert_eq!(st.completed - before.completed, u64::from(N), "{mode:?}");
            assert_eq!((st.timed_out, st.protocol_errors), (0, 0), "{mode:?}");
            assert_eq!(st.pool_free, st.pool_capacity, "{mode:?}: contexts leaked");
            assert_eq!(s.payload_free(), s.payload_capacity(), "{mode:?}");
        });
    }
}

/// A DSP error arrives typed, as from the blocking `invoke`; a held call times out at the
/// session's timeout and is abandoned (counted), its buffers kept until the late answer.
#[test]
fn async_invoke_errors_and_timeout_match_the_blocking_call() {
    with_watchdog(|| {
        let sys = SimSystem::new(config(), Completion::Interrupt);
        let s = sys.attached_session();
        let want = s.invoke(0x99, ECHO, &mut [Arg::In(b"abcd")]).unwrap_err();
        let got = futures::executor::block_on(
            s.invoke_async(0x99, ECHO, &mut [Arg::In(b"abcd")]).unwrap(),
        );
        assert_eq!(got, Err(want));

        let short = s.with_wait(sys.wait().with_timeout(Duration::from_millis(50)));
        sys.dsp.set_fault(Fault::Hold);
        let mut out = [0u8; 4];
        let mut args = [Arg::In(b"wxyz"), Arg::Out(&mut out)];
        // Nothing wakes a future at its deadline (the library has no timer): poll it until then.
        let r = block_on_polling(short.invoke_async(ECHO_HANDLE, ECHO, &mut args).unwrap());
        assert_eq!(r, Err(fwipc_fastrpc::FastRpcError::Timeout));
        assert_eq!(sys.channel.stats().timed_out, 1);
        assert_eq!(
            s.payload_free(),
            s.payload_capacity() - 1,
            "freed before the DSP answered"
        );
        wait_for(|| sys.dsp.held() == 1);
        sys.dsp.set_fault(Fault::None);
        sys.dsp.release();
        let st = sys.channel.stats();
        assert_eq!((st.late_replies, st.pool_free), (1, st.pool_capacity));
        assert_eq!(s.payload_free(), s.payload_capacity());
    });
}

/// Futures dropped while their calls are held by the DSP cancel them: the contexts keep their
/// payload buffers until the DSP answers (it may still write them), then everything is back,
/// nothing is counted as a timeout, and the session keeps working.
#[test]
fn async_invoke_drop_while_pending_keeps_buffers_until_answered_then_frees_all() {
    use std::future::Future;
    with_watchdog(|| {
        let sys = SimSystem::new(config(), Completion::Interrupt);
        let s = sys.attached_session();
        let cap = s.payload_capacity();
        sys.dsp.set_fault(Fault::Hold);
        let mut outs = vec![[0u8; 8]; 100];
        for (i, out) in outs.iter_mut().enumerate() {
            let inp = payload(i as u32);
            let mut args = [Arg::In(&inp), Arg::Out(out)];
            let mut fut = Box::pin(s.invoke_async(ECHO_HANDLE, ECHO, &mut args).unwrap());
            assert!(fut
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending());
            drop(fut);
        }
        assert_eq!(
            s.payload_free(),
            cap - 100,
            "cancelled calls keep their payloads"
        );
        assert_eq!(sys.channel.zombie_contexts(), 100);
        // The DSP thread takes the messages off the link in its own time: all 100 held first.
        wait_for(|| sys.dsp.held() == 100);
        sys.dsp.set_fault(Fault::None);
        sys.dsp.release();
        let st = sys.channel.stats(); // reaps the late answers
        assert_eq!(st.late_replies, 100);
        assert_eq!(st.timed_out, 0, "a cancel is not a timeout");
        assert_eq!(
            st.pool_free, st.pool_capacity,
            "a cancelled call leaked its context"
        );
        assert_eq!(sys.channel.zombie_contexts(), 0);
        assert_eq!(s.payload_free(), cap, "a cancelled call leaked its payload");
        assert!(
            outs.iter().all(|o| *o == [0u8; 8]),
            "a cancelled call's out-buffer was written"
        );
        run_concurrent(&s);
    });
}

/// With the optional timer hook (`fwipc_transport_api::with_timer`), a future whose DSP stays
/// silent is woken at its deadline by the caller's timer and resolves `Timeout` on time under a
/// real executor, instead of staying pending until something polls it.
#[test]
fn async_invoke_with_a_timer_times_out_on_time_under_an_executor() {
    use fwipc_transport_api::{with_timer, Clock, Deadline, Instant, StdClock, Timer};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// One thread per alarm: sleeps until the instant on the system's clock, then wakes.
    struct ThreadTimer(Arc<StdClock>);
    impl Timer for ThreadTimer {
        fn wake_at(&self, at: Instant, waker: &Waker) {
            let (clock, waker) = (self.0.clone(), waker.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Deadline::at(at).remaining(&*clock));
                waker.wake();
            });
        }
    }

    /// Counts the polls of the future it wraps.
    struct Counted<'c, F>(F, &'c AtomicUsize);
    impl<F: std::future::Future + Unpin> std::future::Future for Counted<'_, F> {
        type Output = F::Output;
        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> std::task::Poll<F::Output> {
            // Relaxed: a count read after the future resolved, on the same thread.
            self.1.fetch_add(1, Ordering::Relaxed);
            std::pin::Pin::new(&mut self.0).poll(cx)
        }
    }

    with_watchdog(|| {
        let sys = SimSystem::new(config(), Completion::Interrupt);
        let timeout = Duration::from_millis(100);
        let s = sys.attached_session();
        let short = s.with_wait(sys.wait().with_timeout(timeout));
        sys.dsp.set_fault(Fault::Hold);
        let timer = ThreadTimer(sys.clock.clone());
        let mut out = [0u8; 4];
        let mut args = [Arg::In(b"wxyz"), Arg::Out(&mut out)];
        let start = std::time::Instant::now();
        let call = short.invoke_async(ECHO_HANDLE, ECHO, &mut args).unwrap();
        // The future's own deadline was taken in `invoke_async`: this one is not earlier.
        let deadline = Deadline::after(&*sys.clock, timeout);
        let polls = AtomicUsize::new(0);
        let r = futures::executor::block_on(Counted(with_timer(call, &timer, deadline), &polls));
        let took = start.elapsed();
        assert_eq!(r, Err(fwipc_fastrpc::FastRpcError::Timeout));
        assert!(took >= timeout, "timed out early ({took:?})");
        // Relaxed: see `Counted`.
        let polls = polls.load(Ordering::Relaxed);
        assert!(
            polls <= 3,
            "{polls} polls: woken by the timer, not polled in a loop"
        );
        assert_eq!(sys.channel.stats().timed_out, 1);
        assert!(sys.clock.now() >= deadline.instant());
        sys.dsp.set_fault(Fault::None);
        sys.dsp.release();
    });
}
