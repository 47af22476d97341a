//! Reverse RPC through the listener, and docs/protocols/fastrpc.md §12.6: an interrupted call that
//! is waiting on a reverse call is resumed by its thread's retry, not sent twice.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fwipc_fastrpc::error::aee;
use fwipc_fastrpc::sim::fixture::SimSystem;
use fwipc_fastrpc::sim::objects::{AP_KV_HANDLE, KV_GET_METHOD, KV_HANDLE};
use fwipc_fastrpc::stubskel::ResumableInvoker;
use fwipc_fastrpc::{Arg, FastRpcError, Scalars, Session};
use fwipc_fastrpc::{Listener, ReverseService};

/// The AP key/value service: value = key * 10 + 1.
struct Kv {
    served: u32,
}

impl ReverseService for Kv {
    fn invoke(&mut self, handle: u32, sc: Scalars, ins: &[&[u8]], outs: &mut [&mut [u8]]) -> i32 {
        if handle != AP_KV_HANDLE || sc != Scalars::makex(0, KV_GET_METHOD, 1, 1, 0, 0) {
            return aee::dsp(aee::EUNSUPPORTED);
        }
        let (Ok(k), Some(o)) = (<[u8; 4]>::try_from(ins[0]), outs.first_mut()) else {
            return aee::dsp(aee::EBADPARM);
        };
        self.served += 1;
        o.copy_from_slice(&(u32::from_le_bytes(k) * 10 + 1).to_le_bytes());
        0
    }
}

fn get(
    s: &Session,
    sys: &SimSystem,
    key: u32,
    tid: i32,
    timeout: Duration,
) -> Result<u32, FastRpcError> {
    let mut v = [0u8; 4];
    s.with_wait(sys.wait().with_timeout(timeout))
        .invoke_resumable(
            KV_HANDLE,
            KV_GET_METHOD,
            &mut [Arg::In(&key.to_le_bytes()), Arg::Out(&mut v)],
            tid,
        )?;
    Ok(u32::from_le_bytes(v))
}

/// Runs a listener on `s` until `stop`; returns how many reverse calls it served.
fn listen(s: &Session, sys: &SimSystem, stop: &AtomicBool) -> u32 {
    let s = s.with_wait(sys.wait().with_timeout(Duration::from_millis(20)));
    let inv = ResumableInvoker {
        session: &s,
        tid: 99,
    };
    let mut l = Listener::new(inv, 1024);
    let mut kv = Kv { served: 0 };
    // Acquire: pairs with the test's Release store.
    while !stop.load(Ordering::Acquire) {
        match l.step(&mut kv) {
            Ok(_) | Err(FastRpcError::Timeout) => {}
            Err(e) => panic!("listener: {e:?}"),
        }
    }
    kv.served
}

#[test]
fn reverse_call_served_by_listener() {
    let sys = common::interrupt_system();
    let s = sys.attached_session();
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let h = sc.spawn(|| listen(&s, &sys, &stop));
        for key in 0..20 {
            assert_eq!(
                get(&s, &sys, key, 1, Duration::from_secs(5)),
                Ok(key * 10 + 1)
            );
        }
        // Release: the listener's Acquire load sees it.
        stop.store(true, Ordering::Release);
        assert_eq!(h.join().unwrap(), 20);
    });
    assert_eq!(sys.dsp.parked_calls(), 0);
}

#[test]
fn interrupted_call_waiting_on_reverse_is_resumed() {
    let sys = common::interrupt_system();
    let s = sys.attached_session();
    // No listener yet: the DSP issues the reverse call and waits; the caller times out.
    assert_eq!(
        get(&s, &sys, 4, 1, Duration::from_millis(20)),
        Err(FastRpcError::Timeout)
    );
    let sent = sys.dsp.received();
    assert_eq!(sys.dsp.parked_calls(), 1);
    // The thread retries (e.g. after a signal): resumed, not re-sent, so the DSP does not run
    // the method twice or issue a second reverse call.
    assert_eq!(
        get(&s, &sys, 4, 1, Duration::from_millis(20)),
        Err(FastRpcError::Timeout)
    );
    assert_eq!(sys.dsp.received(), sent);
    assert_eq!(sys.dsp.parked_calls(), 1);
    // The listener comes up and serves the reverse call; the retry gets the answer.
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let h = sc.spawn(|| listen(&s, &sys, &stop));
        assert_eq!(get(&s, &sys, 4, 1, Duration::from_secs(5)), Ok(41));
        // Release: the listener's Acquire load sees it.
        stop.store(true, Ordering::Release);
        assert_eq!(h.join().unwrap(), 1, "exactly one reverse call");
    });
    // The call itself was sent once (the rest are the listener's next2 calls).
    assert_eq!(sys.dsp.parked_calls(), 0);
}
