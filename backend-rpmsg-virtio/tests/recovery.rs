//! How the channel recovers from a remote that stops answering: transfers given up on (timed
//! out, or dropped by their caller) keep their pool buffer and reply address until the late
//! reply arrives or the remote is reset, and then the whole pool is usable again. On both
//! links: the in-memory queues and the real rings.

use std::time::{Duration, Instant};

use fwipc_rpmsg_virtio::sim::{QueueLinks, RingLinks, RpmsgFixtureOf, SimLinks};
use fwipc_transport_api::fixture::{Fault, Fixture};
use fwipc_transport_api::{
    call, Completion, Error, Request, StdClock, Transfer, Transport, TxOutcome, Wait,
};

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(5), "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn echo_ok<K: SimLinks>(fx: &RpmsgFixtureOf<K>) -> bool {
    let mut out = [0u8; 8];
    let req = Request::new(fx.echo_target(), b"ping").polled();
    let r = call(
        fx.transport(),
        &StdClock::new(),
        &req,
        &mut out,
        Duration::from_secs(2),
        Wait::Poll,
    );
    r == Ok(4)
}

/// With the remote misbehaving under `fault`, fill the whole pool with transfers that are given
/// up on: half time out (`mark_txdone`), half are dropped by their caller (`Transfer`'s
/// `Drop`). Returns the pool's capacity.
fn abandon_the_pool<K: SimLinks>(fx: &RpmsgFixtureOf<K>, fault: Fault) -> u64 {
    let t = fx.transport();
    let cap = t.stats().pool_capacity;
    fx.remote().set_fault(fault);
    let before = fx.remote().received();
    for i in 0..cap {
        let payload = (i as u32).to_le_bytes();
        let req = Request::new(fx.echo_target(), &payload).polled();
        if i % 2 == 0 {
            let ticket = t.send(&req).expect("a free buffer");
            t.mark_txdone(ticket, TxOutcome::TimedOut);
        } else {
            drop(Transfer::send(t, &req).expect("a free buffer"));
        }
    }
    eventually("the remote did not receive every request", || {
        fx.remote().received() >= before + cap
    });
    let req = Request::new(fx.echo_target(), b"one more").polled();
    assert_eq!(t.send(&req).err(), Some(Error::Busy));
    assert_eq!(t.stats().pool_free, 0);
    cap
}

fn remote_reset_returns_abandoned_buffers<K: SimLinks>() {
    let fx = RpmsgFixtureOf::<K>::setup(Completion::Polled);
    let t = fx.transport();
    let cap = abandon_the_pool(&fx, Fault::Drop);
    // The remote behaves again, but it swallowed those requests: nothing comes back by itself.
    fx.remote().set_fault(Fault::None);
    t.handle_interrupt();
    assert_eq!(t.stats().pool_free, 0);
    // It restarts (and announces its echo service again): every abandoned transfer ends.
    fx.remote().reset_remote();
    eventually(
        "abandoned buffers not returned at the remote's reset",
        || {
            t.handle_interrupt();
            t.stats().pool_free == cap
        },
    );
    assert_eq!(t.peer_resets(), 1);
    assert!(echo_ok(&fx), "the channel did not recover after the reset");
    t.shutdown().unwrap();
    assert_eq!(t.stats().pool_free, cap);
}

fn late_replies_return_abandoned_buffers<K: SimLinks>() {
    let fx = RpmsgFixtureOf::<K>::setup(Completion::Polled);
    let t = fx.transport();
    let cap = abandon_the_pool(&fx, Fault::Hold);
    fx.remote().set_fault(Fault::None);
    fx.remote().release();
    eventually("late replies did not return the buffers", || {
        t.handle_interrupt();
        t.stats().pool_free == cap
    });
    assert_eq!(t.stats().late_replies, cap);
    assert_eq!(t.peer_resets(), 0);
    assert!(echo_ok(&fx));
}

fn in_flight_transfers_end_at_the_remote_reset<K: SimLinks>() {
    let fx = RpmsgFixtureOf::<K>::setup(Completion::Polled);
    let t = fx.transport();
    fx.remote().set_fault(Fault::Hold);
    let req = Request::new(fx.echo_target(), b"held").polled();
    let tickets: Vec<_> = (0..3).map(|_| t.send(&req).unwrap()).collect();
    eventually("requests not received", || fx.remote().received() >= 3);
    fx.remote().reset_remote();
    // Cancelled as soon as the re-announcement is read, not at the caller's timeout.
    for tk in tickets {
        let mut r = t.poll_done(&tk);
        eventually("an in-flight transfer outlived the reset", || {
            r = t.poll_done(&tk);
            r != Ok(false)
        });
        assert_eq!(r, Err(Error::Cancelled));
        t.mark_txdone(tk, TxOutcome::Cancelled);
    }
    assert_eq!(t.stats().pool_free, t.stats().pool_capacity);
    assert!(echo_ok(&fx));
}

fn embedder_reported_reset_returns_abandoned_buffers<K: SimLinks>() {
    let fx = RpmsgFixtureOf::<K>::setup(Completion::Polled);
    let t = fx.transport();
    let cap = abandon_the_pool(&fx, Fault::Drop);
    fx.remote().set_fault(Fault::None);
    // Without the name service the embedder learns of the reset itself and says so.
    t.peer_reset();
    assert_eq!(t.stats().pool_free, cap);
    assert_eq!(t.peer_resets(), 1);
    let req = Request::new(fx.echo_target(), b"after").polled();
    // The remote's announcements are void: its echo service is unknown until announced again,
    // but the address still answers.
    let tk = t.send(&req).unwrap();
    t.mark_txdone(tk, TxOutcome::Cancelled);
}

macro_rules! on_both_links {
    ($($name:ident),*) => {
        mod queues {
            $(#[test] fn $name() { super::$name::<super::QueueLinks>() })*
        }
        mod rings {
            $(#[test] fn $name() { super::$name::<super::RingLinks>() })*
        }
    };
}

on_both_links!(
    remote_reset_returns_abandoned_buffers,
    late_replies_return_abandoned_buffers,
    in_flight_transfers_end_at_the_remote_reset,
    embedder_reported_reset_returns_abandoned_buffers
);
