//! The async face of generated stubs (`AsyncStub`, over `Session` as an `AsyncInvoker`) under a
//! real executor (`futures::executor`), against the generated calculator skeleton on the
//! simulated DSP.

use std::task::{Context, Waker};

use futures::executor::block_on;

use fwipc_fastrpc::error::aee;
use fwipc_fastrpc::sim::fixture::SimSystem;
use fwipc_fastrpc::sim::objects::{calculator, CALC_HANDLE};
use fwipc_fastrpc::{AeeError, ChannelConfig, FastRpcError, Session};
use fwipc_transport_api::fixture::Fault;
use fwipc_transport_api::Completion;

mod common;
use common::wait_for;
use fwipc_transport_api::fixture::with_watchdog;

/// Futures in flight at once: more than the default pools hold, so the pools are sized for it.
const N: u32 = 128;

fn config() -> ChannelConfig {
    let mut c = SimSystem::default_config();
    c.contexts = 200;
    c.payloads_per_session = N as usize;
    c
}

/// The input bytes of call `i`: its own, so a mixed-up reply fails the check.
fn data(i: u32) -> Vec<u8> {
    (0..8 + i % 23)
        .map(|k| (k ^ i.wrapping_mul(7)) as u8)
        .collect()
}

/// `N` stub futures, a mix of every method (plain, buffers both ways, the method-31 escape),
/// joined on one executor; each checks its own result.
fn run_concurrent(s: &Session) {
    let stub = calculator::AsyncStub {
        invoker: s,
        handle: CALC_HANDLE,
    };
    let stub = &stub;
    let futs = (0..N).map(|i| async move {
        let d = data(i);
        match i % 4 {
            0 => {
                let values: Vec<u8> = [i, 2 * i, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
                let (total,) = stub.sum(&values).await.unwrap();
                assert_eq!(total, u64::from(3 * i + 7), "call {i}");
            }
            1 => {
                let (m,) = stub.max(-(i as i32), i as i32 - 64).await.unwrap();
                assert_eq!(m, (-(i as i32)).max(i as i32 - 64), "call {i}");
            }
            2 => {
                let key = i as u8 | 1;
                let mut dst = vec![0u8; d.len()];
                let (n,) = stub.xor(key, &d, &mut dst).await.unwrap();
                assert_eq!(n as usize, d.len(), "call {i}");
                let want: Vec<u8> = d.iter().map(|b| b ^ key).collect();
                assert_eq!(dst, want, "call {i} got another call's reply");
            }
            _ => {
                let mut reply = vec![0u8; d.len()];
                let (tag,) = stub.echo_far(i, &d, &mut reply).await.unwrap();
                assert_eq!((tag, &reply), (i, &d), "call {i} got another call's reply");
            }
        }
    });
    futures::executor::block_on(futures::future::join_all(futs));
}

#[test]
fn async_stub_128_concurrent_futures_every_reply_checked() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        with_watchdog(move || {
            let sys = SimSystem::new(config(), mode);
            let s = sys.attached_session();
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

/// The async stub returns what the blocking one returns, errors included (a skeleton's AEE
/// status, an unknown handle).
#[test]
fn async_stub_matches_the_blocking_stub() {
    with_watchdog(|| {
        let sys = SimSystem::new(config(), Completion::Interrupt);
        let s = sys.attached_session();
        let blocking = calculator::CalculatorStub {
            invoker: &s,
            handle: CALC_HANDLE,
        };
        let stub = calculator::AsyncStub {
            invoker: &s,
            handle: CALC_HANDLE,
        };
        assert_eq!(block_on(stub.max(3, -9)), blocking.max(3, -9));
        // `sum` wants whole u32 values: the skeleton's EBADPARM, typed.
        let want = Err(FastRpcError::Aee(AeeError(aee::dsp(aee::EBADPARM))));
        assert_eq!(blocking.sum(&[1, 2, 3]), want);
        assert_eq!(block_on(stub.sum(&[1, 2, 3])), want);
        let nowhere = calculator::AsyncStub {
            invoker: &s,
            handle: 0x77,
        };
        let blocking_nowhere = calculator::CalculatorStub {
            invoker: &s,
            handle: 0x77,
        };
        assert_eq!(block_on(nowhere.max(1, 2)), blocking_nowhere.max(1, 2));
        assert!(blocking_nowhere.max(1, 2).is_err());
    });
}

/// Stub futures dropped while the DSP holds their calls cancel them: the contexts keep their
/// payload buffers until the DSP answers, then everything is back, nothing counts as a timeout,
/// no out-buffer is written, and the session keeps working.
#[test]
fn async_stub_drop_while_pending_keeps_buffers_until_answered_then_frees_all() {
    use std::future::Future;
    with_watchdog(|| {
        let sys = SimSystem::new(config(), Completion::Interrupt);
        let s = sys.attached_session();
        let stub = calculator::AsyncStub {
            invoker: &s,
            handle: CALC_HANDLE,
        };
        let cap = s.payload_capacity();
        sys.dsp.set_fault(Fault::Hold);
        let mut dsts = vec![[0u8; 8]; 100];
        for (i, dst) in dsts.iter_mut().enumerate() {
            let src = [i as u8; 8];
            let mut fut = Box::pin(stub.xor(0x5a, &src, dst));
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
        wait_for(|| sys.dsp.held() == 100);
        sys.dsp.set_fault(Fault::None);
        sys.dsp.release();
        let st = sys.channel.stats(); // reaps the late answers
        assert_eq!(st.late_replies, 100);
        assert_eq!(st.timed_out, 0, "a cancel is not a timeout");
        assert_eq!(st.pool_free, st.pool_capacity, "a cancelled call leaked");
        assert_eq!(sys.channel.zombie_contexts(), 0);
        assert_eq!(s.payload_free(), cap, "a cancelled call leaked its payload");
        assert!(
            dsts.iter().all(|d| *d == [0u8; 8]),
            "a cancelled call's out-buffer was written"
        );
        run_concurrent(&s);
    });
}
