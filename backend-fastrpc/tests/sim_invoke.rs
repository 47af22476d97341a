//! End-to-end tests against the simulated DSP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use fwipc_fastrpc::error::aee;
use fwipc_fastrpc::sim::dsp::{CallInfo, DspObject};
use fwipc_fastrpc::sim::fixture::SimSystem;
use fwipc_fastrpc::sim::objects::ECHO_HANDLE;
use fwipc_fastrpc::sim::FastRpcFixture;
use fwipc_fastrpc::target;
use fwipc_fastrpc::{Arg, FastRpcError};
use fwipc_transport_api::fixture::{Fault, Fixture};
use fwipc_transport_api::{call, Completion, Request, StdClock, Transport, Wait};

fn yield_wait() -> Wait<'static> {
    Wait::SpinThenYield {
        spins: 10,
        relax: &std::thread::yield_now,
    }
}

#[test]
fn echo_roundtrip_both_modes() {
    for &mode in FastRpcFixture::modes() {
        let f = FastRpcFixture::setup(mode);
        let t = f.transport();
        let clock = StdClock::new();
        for len in [0usize, 1, 4, 127, 128, 129, 1000, 1024] {
            let req: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let mut out = vec![0u8; 1024];
            let n = call(
                t,
                &clock,
                &Request::new(f.echo_target(), &req),
                &mut out,
                Duration::from_secs(2),
                yield_wait(),
            )
            .unwrap();
            assert_eq!(n, len);
            assert!(out[..n].iter().zip(&req).all(|(o, i)| *o == !*i));
        }
        let s = t.stats();
        assert_eq!(s.completed, 9, "8 echoes + the attach");
        assert_eq!(s.pool_free, s.pool_capacity);
        assert_eq!(f.remote().received(), 9, "8 echoes + the attach");
    }
}

#[test]
fn too_large_and_unknown_handle() {
    let f = FastRpcFixture::setup(Completion::Interrupt);
    let t = f.transport();
    let big = vec![0u8; 1025];
    assert_eq!(
        t.send(&Request::new(f.echo_target(), &big)).err(),
        Some(fwipc_transport_api::Error::TooLarge)
    );
    let clock = StdClock::new();
    let mut out = [0u8; 8];
    let r = call(
        t,
        &clock,
        &Request::new(target(0x99, 2), b"abcd"),
        &mut out,
        Duration::from_secs(2),
        yield_wait(),
    );
    assert_eq!(
        r,
        Err(fwipc_transport_api::Error::Remote(aee::dsp(
            aee::EINVHANDLE
        )))
    );
    // A user invoke on the init handle is refused locally.
    assert_eq!(
        t.send(&Request::new(target(1, 0), b"abcd")).err(),
        Some(fwipc_transport_api::Error::InvalidArgument)
    );
}

/// Must-show: a timed-out invoke keeps its buffers (payload and a shared buffer passed by
/// handle) mapped until the simulated DSP finally answers; then they are freed.
#[test]
fn timed_out_invoke_keeps_buffers_until_late_reply() {
    let sys = common::interrupt_system();
    struct Sum;
    impl DspObject for Sum {
        fn invoke(&mut self, c: &CallInfo, ins: &[Vec<u8>], outs: &mut [Vec<u8>]) -> i32 {
            assert_eq!(c.in_fds.len(), 1);
            let s: u32 = ins[0].iter().map(|b| u32::from(*b)).sum();
            outs[0].copy_from_slice(&s.to_le_bytes());
            0
        }
    }
    sys.dsp.add_object(0x40, Box::new(Sum));
    let s = sys.attached_session();
    let shared = s.alloc_shared(8192).unwrap();
    shared.write(0, b"shared data").unwrap();
    let bus_addr = shared.bus_addr();
    let cap = s.payload_capacity();
    assert!(sys.bus.is_mapped(bus_addr, 8192));

    sys.dsp.set_fault(Fault::Hold);
    let mut out = [0u8; 4];
    let r = s
        .with_wait(sys.wait().with_timeout(Duration::from_millis(30)))
        .invoke(
            0x40,
            3,
            &mut [
                Arg::In(&[1, 2, 3]),
                Arg::Out(&mut out),
                Arg::InHandle {
                    buf: &shared,
                    offset: 0,
                    len: 11,
                },
            ],
        );
    assert_eq!(r, Err(FastRpcError::Timeout));
    // The caller has given up and drops its own handle to the shared buffer...
    drop(shared);
    // ...but the context still owns it and its payload: both stay mapped for the DSP.
    assert!(
        sys.bus.is_mapped(bus_addr, 8192),
        "shared buffer unmapped early"
    );
    assert_eq!(s.payload_free(), cap - 1, "payload freed early");
    assert_eq!(sys.channel.zombie_contexts(), 1);
    let before = sys.channel.stats();
    assert_eq!(before.timed_out, 1);

    // The DSP finally executes the call: it reads the payload and the shared buffer and
    // writes the out-buffer; every access must hit mapped memory.
    let faults = sys.bus.faults();
    sys.dsp.set_fault(Fault::None);
    sys.dsp.release();
    assert_eq!(sys.bus.faults(), faults, "DSP touched unmapped memory");
    let st = sys.channel.stats(); // reaps the late completion
    assert_eq!(st.late_replies, 1);
    assert_eq!(sys.channel.zombie_contexts(), 0);
    assert_eq!(s.payload_free(), cap);
    assert!(
        !sys.bus.is_mapped(bus_addr, 1),
        "shared buffer still mapped"
    );
    assert_eq!(st.pool_free, st.pool_capacity);
}

#[test]
fn reset_fails_inflight_and_recovers() {
    let f = FastRpcFixture::setup(Completion::Interrupt);
    let t = f.transport();
    f.remote().set_fault(Fault::Hold);
    let tk = t.send(&Request::new(f.echo_target(), b"1234")).unwrap();
    assert_eq!(t.poll_done(&tk), Ok(false));
    f.remote().reset_remote();
    assert_eq!(t.poll_done(&tk), Err(fwipc_transport_api::Error::Cancelled));
    t.mark_txdone(tk, fwipc_transport_api::TxOutcome::Cancelled);
    f.remote().set_fault(Fault::None);
    let clock = StdClock::new();
    let mut out = [0u8; 4];
    let n = call(
        t,
        &clock,
        &Request::new(f.echo_target(), b"abcd"),
        &mut out,
        Duration::from_secs(2),
        yield_wait(),
    )
    .unwrap();
    assert_eq!(n, 4);
    let s = t.stats();
    assert_eq!(s.pool_free, s.pool_capacity);
}

#[test]
fn two_systems_side_by_side() {
    let a = FastRpcFixture::setup(Completion::Interrupt);
    let b = FastRpcFixture::setup(Completion::Polled);
    let clock = StdClock::new();
    let ts: Vec<_> = [&a, &b]
        .iter()
        .map(|f| {
            let mut out = [0u8; 4];
            call(
                f.transport(),
                &clock,
                &Request::new(f.echo_target(), b"wxyz"),
                &mut out,
                Duration::from_secs(2),
                yield_wait(),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(ts, vec![4, 4]);
    assert_eq!(a.remote().take_seen_tags().len(), 1);
    assert_eq!(b.remote().take_seen_tags().len(), 1);
    let _ = Arc::new(0);
    let _ = ECHO_HANDLE;
}

/// The generated calculator stub talks to the generated skel on the simulated DSP.
#[test]
fn generated_calculator_through_the_dsp() {
    use fwipc_fastrpc::sim::objects::calculator::CalculatorStub;
    use fwipc_fastrpc::sim::objects::CALC_HANDLE;
    let sys = SimSystem::new(SimSystem::default_config(), Completion::Polled);
    let s = sys.attached_session();
    let calc = CalculatorStub {
        invoker: &s,
        handle: CALC_HANDLE,
    };
    let vals: Vec<u8> = [1u32, 2, 3, 0xffff_ffff]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(calc.sum(&vals).unwrap(), (0x1_0000_0005,));
    assert_eq!(calc.max(-3, -9).unwrap(), (-3,));
    let mut dst = [0u8; 5];
    assert_eq!(calc.xor(0x0f, b"abcde", &mut dst).unwrap(), (5,));
    assert_eq!(
        &dst,
        &[b'a' ^ 15, b'b' ^ 15, b'c' ^ 15, b'd' ^ 15, b'e' ^ 15]
    );
    let mut reply = [0u8; 3];
    assert_eq!(calc.echo_far(77, b"xyz", &mut reply).unwrap(), (77,));
    assert_eq!(&reply, b"xyz");
    // The DSP's typed errors come back as AEE codes.
    assert_eq!(
        calc.sum(&[1, 2, 3]),
        Err(FastRpcError::Aee(fwipc_fastrpc::AeeError(aee::dsp(
            aee::EBADPARM
        ))))
    );
    let mut small = [0u8; 1];
    assert_eq!(
        calc.xor(0, b"ab", &mut small).unwrap_err(),
        FastRpcError::Aee(fwipc_fastrpc::AeeError(aee::dsp(aee::EBUFFERTOOSMALL)))
    );
    let st = s.stats();
    assert_eq!(st.pool_free, st.pool_capacity);
}

/// docs/protocols/fastrpc.md §12.6: a retry by the same thread with the same scalars resumes the
/// abandoned call instead of sending it again (which would run the method twice).
#[test]
fn interrupted_call_is_resumed_not_resent() {
    use fwipc_fastrpc::sim::objects::CALC_HANDLE;
    let sys = common::interrupt_system();
    let s = sys.attached_session();
    // calculator.max(a, b): primIn {a, b} 8 B, primROut {m} 4 B; method 3.
    let mut pin = [0u8; 8];
    pin[..4].copy_from_slice(&5i32.to_le_bytes());
    pin[4..].copy_from_slice(&9i32.to_le_bytes());
    sys.dsp.set_fault(Fault::Hold);
    let mut out = [0u8; 4];
    let r = s
        .with_wait(sys.wait().with_timeout(Duration::from_millis(20)))
        .invoke_resumable(CALC_HANDLE, 3, &mut [Arg::In(&pin), Arg::Out(&mut out)], 7);
    assert_eq!(r, Err(FastRpcError::Timeout));
    let sent = sys.dsp.received();
    // Retry while the DSP still holds it: resumed, not re-sent; times out again.
    let r = s
        .with_wait(sys.wait().with_timeout(Duration::from_millis(20)))
        .invoke_resumable(CALC_HANDLE, 3, &mut [Arg::In(&pin), Arg::Out(&mut out)], 7);
    assert_eq!(r, Err(FastRpcError::Timeout));
    assert_eq!(sys.dsp.received(), sent, "the retry re-sent the call");
    // The DSP finally answers; the original thread's retry collects that answer.
    sys.dsp.set_fault(Fault::None);
    sys.dsp.release();
    let mut out3 = [0u8; 4];
    s.invoke_resumable(CALC_HANDLE, 3, &mut [Arg::In(&pin), Arg::Out(&mut out3)], 7)
        .unwrap();
    assert_eq!(i32::from_le_bytes(out3), 9);
    assert_eq!(sys.dsp.received(), sent, "collected without re-sending");
    // Another thread's call of the same method is a new call.
    let mut out2 = [0u8; 4];
    s.invoke_resumable(CALC_HANDLE, 3, &mut [Arg::In(&pin), Arg::Out(&mut out2)], 8)
        .unwrap();
    assert_eq!(sys.dsp.received(), sent + 1);
    let st = s.stats();
    assert_eq!(st.pool_free, st.pool_capacity);
}

/// docs/protocols/fastrpc.md §12.7: when the DSP goes away, pending calls finish at once with a
/// reset error and new calls fail immediately until it is back.
#[test]
fn channel_death_fails_fast() {
    let sys = common::interrupt_system();
    let s = sys.attached_session();
    sys.dsp.set_fault(Fault::Drop);
    let mut out = [0u8; 4];
    let t = s
        .start(ECHO_HANDLE, 2, &[Arg::In(b"abcd"), Arg::Out(&mut out)], 0)
        .unwrap();
    let start = std::time::Instant::now();
    sys.channel.remote_down();
    assert_eq!(s.poll(&t), Err(FastRpcError::RemoteReset));
    assert!(start.elapsed() < Duration::from_millis(100));
    s.finish(t);
    assert_eq!(
        s.start(ECHO_HANDLE, 2, &[Arg::In(b"abcd"), Arg::Out(&mut out)], 0)
            .err(),
        Some(FastRpcError::ChannelDown)
    );
    let st = s.stats();
    assert_eq!(st.pool_free, st.pool_capacity, "failed call released");
    sys.channel.remote_up();
    sys.dsp.set_fault(Fault::None);
    s.invoke(ECHO_HANDLE, 2, &mut [Arg::In(b"abcd"), Arg::Out(&mut out)])
        .unwrap();
    assert_eq!(out, [!b'a', !b'b', !b'c', !b'd']);
}

/// Several clients (sessions) on one channel at once, each from its own thread.
#[test]
fn several_clients_concurrently() {
    use fwipc_fastrpc::sim::objects::calculator::CalculatorStub;
    use fwipc_fastrpc::sim::objects::CALC_HANDLE;
    let sys = common::interrupt_system();
    let sessions: Vec<_> = (0..4).map(|_| sys.attached_session()).collect();
    std::thread::scope(|sc| {
        for (k, s) in sessions.iter().enumerate() {
            let wait = sys.wait().with_timeout(Duration::from_secs(5));
            sc.spawn(move || {
                let calc = CalculatorStub {
                    invoker: s.with_wait(wait),
                    handle: CALC_HANDLE,
                };
                for i in 0..100i32 {
                    let a = i * 4 + k as i32;
                    assert_eq!(calc.max(a, 200).unwrap(), (a.max(200),));
                }
            });
        }
    });
    let st = sys.channel.stats();
    assert_eq!(st.completed, 4 + 400);
    assert_eq!(st.pool_free, st.pool_capacity, "all contexts back");
    for s in sessions {
        s.close().unwrap();
    }
    assert_eq!(
        sys.dsp.process_count(),
        0,
        "close released every DSP process"
    );
}

/// Dropping a session releases its contexts, including ones whose tickets were never finished
/// and ones the DSP still holds (teardown), without leaking the session slot.
#[test]
fn session_drop_releases_everything() {
    let sys = common::interrupt_system();
    let s = sys.attached_session();
    sys.dsp.set_fault(Fault::Drop);
    let mut out = [0u8; 4];
    let t1 = s
        .start(ECHO_HANDLE, 2, &[Arg::In(b"abcd"), Arg::Out(&mut out)], 0)
        .unwrap();
    let t2 = s
        .start(ECHO_HANDLE, 2, &[Arg::In(b"efgh"), Arg::Out(&mut out)], 0)
        .unwrap();
    s.abandon(t2);
    let regions = sys.bus.mapped_regions();
    let before = sys.channel.stats();
    assert_eq!(before.pool_free, before.pool_capacity - 2);
    drop(s);
    let after = sys.channel.stats();
    assert_eq!(after.pool_free, after.pool_capacity);
    assert_eq!(sys.channel.sessions_in_use(), 0);
    assert_eq!(
        sys.bus.mapped_regions(),
        regions - 16,
        "the session's 16 payload buffers are unmapped"
    );
    let _stale = t1; // a stale ticket is inert
}

/// A session configured with `Wait::Completion` parks until the DSP's answer wakes it (interrupt
/// mode), and still gives up at its timeout when the DSP holds the call.
#[test]
fn completion_wait_parks_until_answered_and_times_out_when_held() {
    use fwipc_fastrpc::CallWait;
    use fwipc_transport_api::ThreadParker;
    let sys = common::interrupt_system();
    // A `Wait<'static>` parker for this thread (a test leaks one; a program keeps one per thread).
    let parker: &'static ThreadParker = Box::leak(Box::new(ThreadParker::new()));
    let s = sys.open_session().unwrap().with_wait(CallWait::new(
        sys.clock.clone(),
        Duration::from_millis(300),
        Wait::Completion(parker),
    ));
    assert!(s.wakes(), "interrupt mode: completions wake the waiter");
    s.attach().unwrap();
    let mut out = [0u8; 3];
    s.invoke(ECHO_HANDLE, 2, &mut [Arg::In(b"xyz"), Arg::Out(&mut out)])
        .unwrap();
    assert_eq!(out, [!b'x', !b'y', !b'z']);

    sys.dsp.set_fault(Fault::Hold);
    let t0 = std::time::Instant::now();
    let r = s.invoke(ECHO_HANDLE, 2, &mut [Arg::In(b"xyz"), Arg::Out(&mut out)]);
    let waited = t0.elapsed();
    assert_eq!(r, Err(FastRpcError::Timeout));
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "gave up after {waited:?}, not at the 300 ms timeout"
    );
    sys.dsp.set_fault(Fault::None);
    sys.dsp.release();
}

/// `Session::end` is the one rule that ends a call: `TimedOut` abandons it and counts a timeout,
/// `Cancelled` abandons it without counting one, `Done` finishes it; an abandoned call keeps its
/// payload buffer until the DSP answers.
#[test]
fn end_counts_timeouts_only_and_keeps_abandoned_buffers() {
    use fwipc_transport_api::TxOutcome;
    let sys = common::interrupt_system();
    let s = sys.attached_session();
    let cap = s.payload_capacity();
    sys.dsp.set_fault(Fault::Hold);
    let mut out = [0u8; 4];
    let a = s
        .start(ECHO_HANDLE, 2, &[Arg::In(b"aaaa"), Arg::Out(&mut out)], 0)
        .unwrap();
    let b = s
        .start(ECHO_HANDLE, 2, &[Arg::In(b"bbbb"), Arg::Out(&mut out)], 0)
        .unwrap();
    let before = s.stats().timed_out;
    s.end(a, TxOutcome::Cancelled);
    assert_eq!(s.stats().timed_out, before, "a cancel is not a timeout");
    s.end(b, TxOutcome::TimedOut);
    assert_eq!(s.stats().timed_out, before + 1);
    assert_eq!(
        s.payload_free(),
        cap - 2,
        "abandoned calls keep their payloads"
    );
    sys.dsp.set_fault(Fault::None);
    sys.dsp.release();
    // Both late answers arrive; the next reap releases what the abandoned calls held.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while s.payload_free() != cap && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(s.payload_free(), cap);
    let c = s
        .start(ECHO_HANDLE, 2, &[Arg::In(b"cccc"), Arg::Out(&mut out)], 0)
        .unwrap();
    while !s.poll(&c).unwrap() {
        std::thread::yield_now();
    }
    s.end(c, TxOutcome::Done);
    assert_eq!(s.payload_free(), cap);
    assert_eq!(s.stats().timed_out, before + 1);
}

/// A bulk ended with `mark_txdone` instead of `take_bulk` gives its staging slot back (the
/// transport's bulk slots are few): bulks ended that way, then ordinary calls, then more bulks,
/// never run out of slots. Fails if ending a transfer skips the bulk bookkeeping.
#[test]
fn bulks_ended_without_take_give_their_slot_back() {
    use fwipc_transport_api::{BulkDir, BulkRequest, TxOutcome};
    let f = FastRpcFixture::setup(Completion::Polled);
    let t = f.transport();
    let clock = StdClock::new();
    let bulk_then_end = || {
        let req = BulkRequest {
            target: f.echo_target(),
            dir: BulkDir::Transmit,
            buf: vec![0x5a; 256],
            offset: 0,
            len: 256,
        };
        let ticket = t.bulk(req).map_err(|(e, _)| e).expect("a free bulk slot");
        common::wait_for(|| t.poll_done(&ticket).unwrap_or(true));
        assert_eq!(t.poll_done(&ticket), Ok(true), "the bulk finished");
        t.mark_txdone(ticket, TxOutcome::Cancelled);
    };
    for round in 0..3 {
        for _ in 0..4 {
            bulk_then_end();
        }
        let mut out = [0u8; 8];
        let n = call(
            t,
            &clock,
            &Request::new(f.echo_target(), b"between"),
            &mut out,
            Duration::from_secs(2),
            yield_wait(),
        )
        .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        // The echo object answers each byte inverted.
        let back: Vec<u8> = out[..n].iter().map(|b| !b).collect();
        assert_eq!(back, b"between");
    }
}
