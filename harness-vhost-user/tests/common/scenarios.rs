//! The conformance scenarios a real platform can take, rewritten for vhost-device-scmi (it has no
//! echo service and no fault knobs). They assert the same properties as the generic suite, using
//! SCMI commands as requests:
//!
//! - *FIFO*: SENSOR_READING_GET on the fake sensor returns a per-read counter, so the values in the
//!   replies show the order in which the device executed the requests.
//! - *Hold*: the daemon is frozen with SIGSTOP ([`harness_vhost_user::Daemon::pause`]); it keeps
//!   every posted buffer until SIGCONT.
//!
//! Every function is generic over [`DaemonFixture`], so the same scenario runs in interrupt and
//! polled mode.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fwipc_transport_api::{
    call, wait_done, yield_now, Completion, Deadline, Error, Request, StdClock, ThreadParker,
    Ticket, Transport, TxOutcome, Wait,
};

/// SCMI request target: (protocol << 8) | message.
pub const fn target(protocol: u8, msg: u8) -> u32 {
    ((protocol as u32) << 8) | msg as u32
}
pub const BASE_PROTOCOL_VERSION: u32 = target(0x10, 0x0);
pub const SENSOR_READING_GET: u32 = target(0x15, 0x6);
pub const SENSOR_CONFIG_SET: u32 = target(0x15, 0xA);
/// 3 axes × (value_low, value_high, timestamp_low, timestamp_high).
pub const READING_LEN: usize = 48;

/// A transport under test connected to a live daemon.
pub trait DaemonFixture: Sized + Sync {
    type T: Transport;
    /// A fresh daemon and channel; `None` when the daemon is not installed (skip).
    fn setup(mode: Completion) -> Option<Self>;
    fn transport(&self) -> &Self::T;
    fn mode(&self) -> Completion;
    /// Freeze the device (it holds every request it was given).
    fn hold(&self);
    /// Let it run again.
    fn release(&self);
    fn reply_timeout(&self) -> Duration {
        super::TIMEOUT
    }
}

pub fn le_words(p: &[u32]) -> Vec<u8> {
    p.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn first_word(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("at least one word"))
}

pub fn request<'a, F: DaemonFixture>(fx: &F, target: u32, payload: &'a [u8]) -> Request<'a> {
    let r = Request::new(target, payload);
    match fx.mode() {
        Completion::Polled => r.polled(),
        Completion::Interrupt => r,
    }
}

pub fn with_wait<F: DaemonFixture, R>(fx: &F, f: impl FnOnce(Wait<'_>) -> R) -> R {
    match fx.mode() {
        Completion::Polled => f(Wait::SpinThenYield {
            spins: 64,
            relax: &yield_now,
        }),
        Completion::Interrupt => {
            let parker = ThreadParker::new();
            f(Wait::Completion(&parker))
        }
    }
}

/// One command through `fwipc_transport_api::call`; the reply payload (after the status).
pub fn command<F: DaemonFixture>(fx: &F, target: u32, params: &[u32]) -> Result<Vec<u8>, Error> {
    let payload = le_words(params);
    let t = fx.transport();
    let mut out = vec![0u8; t.max_msg_size()];
    let n = with_wait(fx, |w| {
        call(
            t,
            &StdClock::new(),
            &request(fx, target, &payload),
            &mut out,
            fx.reply_timeout(),
            w,
        )
    })?;
    out.truncate(n);
    Ok(out)
}

/// Wait for `ticket`, fetch its reply, and end the transfer.
pub fn finish<F: DaemonFixture>(fx: &F, ticket: Ticket) -> Result<Vec<u8>, Error> {
    let t = fx.transport();
    let clock = StdClock::new();
    let r = with_wait(fx, |w| {
        wait_done(
            t,
            &ticket,
            &clock,
            Deadline::after(&clock, fx.reply_timeout()),
            w,
        )
    });
    match r {
        Ok(()) => {
            let mut out = vec![0u8; t.max_msg_size()];
            let r = t.fetch_response(&ticket, &mut out);
            t.mark_txdone(ticket, TxOutcome::Done);
            r.map(|n| {
                out.truncate(n);
                out
            })
        }
        Err(e) => {
            t.mark_txdone(ticket, TxOutcome::TimedOut);
            Err(e)
        }
    }
}

/// Enable the fake sensor and return the counter of one reading (the next one is this + 1).
pub fn enable_sensor<F: DaemonFixture>(fx: &F) -> u8 {
    command(fx, SENSOR_CONFIG_SET, &[0, 1]).expect("SENSOR_CONFIG_SET");
    reading(fx)
}

/// One SENSOR_READING_GET; the fake sensor's per-read counter (the x axis value).
pub fn reading<F: DaemonFixture>(fx: &F) -> u8 {
    let r = command(fx, SENSOR_READING_GET, &[0, 0]).expect("SENSOR_READING_GET");
    assert_eq!(r.len(), READING_LEN);
    counter_of(&r)
}

/// The counter in a reading reply, checking the other axes agree (y = x + 100, z = x + 200).
pub fn counter_of(r: &[u8]) -> u8 {
    let w: Vec<u32> = r
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(w.len(), 12, "3 axes x 4 words");
    let x = w[0];
    assert!(x <= 0xff, "the fake sensor's counter is a u8");
    assert_eq!((w[4], w[8]), (x + 100, x + 200), "axes of one reading");
    x as u8
}

pub fn assert_pool_full<F: DaemonFixture>(fx: &F, when: &str) {
    let s = fx.transport().stats();
    assert_eq!(s.pool_free, s.pool_capacity, "pool not full {when}: {s:?}");
}

/// FIFO: one thread sends `max_msg` readings back to back, then collects. The device must have
/// executed them in send order (consecutive counters), every reply must belong to its ticket, and
/// completion must be in order (when the last is done, all earlier ones are).
pub fn fifo_ordering<F: DaemonFixture>() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let Some(fx) = F::setup(mode) else { return };
        let t = fx.transport();
        let c0 = enable_sensor(&fx);
        let payload = le_words(&[0, 0]);
        let n = t.max_msg().min(256);
        let tickets: Vec<Ticket> = (0..n)
            .map(|i| {
                t.send(&request(&fx, SENSOR_READING_GET, &payload))
                    .unwrap_or_else(|e| panic!("{mode:?}: send {i} of {n}: {e}"))
            })
            .collect();
        let last = tickets.last().unwrap();
        let clock = StdClock::new();
        with_wait(&fx, |w| {
            wait_done(
                t,
                last,
                &clock,
                Deadline::after(&clock, fx.reply_timeout()),
                w,
            )
        })
        .expect("last reply");
        if mode == Completion::Interrupt {
            for (i, tk) in tickets.iter().enumerate() {
                assert_eq!(
                    t.poll_done(tk),
                    Ok(true),
                    "{mode:?}: #{i} not done before the last"
                );
            }
        }
        for (i, tk) in tickets.into_iter().enumerate() {
            let r = finish(&fx, tk).unwrap_or_else(|e| panic!("{mode:?}: #{i}: {e}"));
            let expect = c0.wrapping_add(1).wrapping_add(i as u8);
            assert_eq!(counter_of(&r), expect, "{mode:?}: reply {i} out of order");
        }
        assert_pool_full(&fx, "after fifo");
    }
}

/// `threads` × `per_thread` readings through `call`: every call completes exactly once with a
/// well-formed reading, and the device's counters cover exactly `threads × per_thread` reads.
pub fn concurrent_senders<F: DaemonFixture>(threads: usize, per_thread: usize) {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let Some(fx) = F::setup(mode) else { return };
        let c0 = enable_sensor(&fx);
        let before = fx.transport().stats();
        let all: Vec<u8> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    let fx = &fx;
                    s.spawn(move || (0..per_thread).map(|_| reading(fx)).collect::<Vec<u8>>())
                })
                .collect();
            hs.into_iter()
                .flat_map(|h| h.join().expect("sender panicked"))
                .collect()
        });
        let total = threads * per_thread;
        assert_eq!(all.len(), total);
        // Counters c0+1 .. c0+total (mod 256): each residue exactly as often as a gap-free,
        // duplicate-free run of `total` reads produces it.
        let mut seen: HashMap<u8, usize> = HashMap::new();
        for c in all {
            *seen.entry(c).or_default() += 1;
        }
        let mut want: HashMap<u8, usize> = HashMap::new();
        for i in 0..total {
            *want
                .entry(c0.wrapping_add(1).wrapping_add(i as u8))
                .or_default() += 1;
        }
        assert_eq!(seen, want, "{mode:?}: lost or duplicated executions");
        let after = fx.transport().stats();
        assert_eq!(after.completed - before.completed, total as u64, "{mode:?}");
        assert_eq!(after.duplicate_replies, 0);
        assert_eq!(after.unknown_replies, 0);
        assert_pool_full(&fx, "after concurrent senders");
    }
}

/// The device holds everything: sends are accepted up to `max_msg`, then refused with `Busy`
/// (promptly, counted); after release every held request completes correctly, the pool is full
/// again and ordinary commands work.
pub fn pool_exhaustion<F: DaemonFixture>() {
    let Some(fx) = F::setup(Completion::Interrupt) else {
        return;
    };
    let t = fx.transport();
    let c0 = enable_sensor(&fx);
    let payload = le_words(&[0, 0]);
    fx.hold();
    let mut tickets = Vec::new();
    let refused = loop {
        let start = Instant::now();
        match t.send(&request(&fx, SENSOR_READING_GET, &payload)) {
            Ok(tk) => {
                tickets.push(tk);
                assert!(tickets.len() <= t.max_msg(), "more than max_msg accepted");
            }
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_millis(500),
                    "refusal blocked"
                );
                break e;
            }
        }
    };
    assert_eq!(refused, Error::Busy);
    assert_eq!(tickets.len(), t.max_msg(), "the whole pool was usable");
    assert!(t.stats().busy >= 1, "Busy counted");
    assert_eq!(t.stats().pool_free, 0);
    fx.release();
    for (i, tk) in tickets.into_iter().enumerate() {
        let r = finish(&fx, tk).unwrap_or_else(|e| panic!("held #{i} after release: {e}"));
        assert_eq!(counter_of(&r), c0.wrapping_add(1).wrapping_add(i as u8));
    }
    assert_pool_full(&fx, "after exhaustion recovered");
    assert_eq!(
        command(&fx, BASE_PROTOCOL_VERSION, &[]).map(|r| first_word(&r)),
        Ok(0x20000)
    );
}

/// Requests in flight on a frozen device, waiters blocked on them: `shutdown()` completes them
/// all with `Shutdown` within a bound, is idempotent and refuses new sends. The stopped daemon
/// still maps the memory, so its reset is never confirmed: `shutdown()` reports `Timeout` and
/// the buffers it held stay quarantined, out of the pool (docs/reliability.md, "Invariants").
/// A fresh daemon and channel then work.
pub fn teardown_in_flight<F: DaemonFixture>(shutdown_bound: Duration) {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let Some(fx) = F::setup(mode) else { return };
        let t = fx.transport();
        assert_eq!(
            command(&fx, BASE_PROTOCOL_VERSION, &[]).map(|r| first_word(&r)),
            Ok(0x20000)
        );
        fx.hold();
        let waiters: usize = 4;
        let before = t.stats().sent;
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..waiters)
                .map(|_| {
                    let fx = &fx;
                    s.spawn(move || command(fx, BASE_PROTOCOL_VERSION, &[]))
                })
                .collect();
            let deadline = Instant::now() + fx.reply_timeout();
            while t.stats().sent < before + waiters as u64 {
                assert!(Instant::now() < deadline, "{mode:?}: waiters never sent");
                std::thread::sleep(Duration::from_millis(1));
            }
            let start = Instant::now();
            assert_eq!(
                t.shutdown(),
                Err(Error::Timeout),
                "{mode:?}: a frozen daemon's reset must stay unconfirmed"
            );
            let took = start.elapsed();
            assert!(took < shutdown_bound, "{mode:?}: shutdown took {took:?}");
            for h in hs {
                assert_eq!(
                    h.join().expect("waiter panicked"),
                    Err(Error::Shutdown),
                    "{mode:?}: waiter not completed with Shutdown"
                );
            }
        });
        assert_eq!(t.shutdown(), Ok(()), "{mode:?}: shutdown not idempotent");
        assert_eq!(
            t.send(&request(&fx, BASE_PROTOCOL_VERSION, &[])).err(),
            Some(Error::Shutdown)
        );
        let st = t.stats();
        assert_eq!(
            st.pool_free,
            st.pool_capacity - waiters as u64,
            "{mode:?}: the buffers the frozen daemon held stay quarantined: {st:?}"
        );
        drop(fx);
        let again = F::setup(mode).expect("daemon was there a moment ago");
        assert_eq!(
            command(&again, BASE_PROTOCOL_VERSION, &[]).map(|r| first_word(&r)),
            Ok(0x20000),
            "{mode:?}: a fresh daemon works after teardown"
        );
    }
}

/// A silent (frozen) device: a call times out within its deadline, the buffer stays device-owned
/// (not reused) until the device returns it; after release the late reply is dropped and counted,
/// the pool is full again, and commands work.
pub fn timeout_late_reply<F: DaemonFixture>() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let Some(fx) = F::setup(mode) else { return };
        let t = fx.transport();
        let before = t.stats();
        fx.hold();
        let short = Duration::from_millis(100);
        let payload = [];
        let mut out = vec![0u8; t.max_msg_size()];
        let start = Instant::now();
        let r = with_wait(&fx, |w| {
            call(
                t,
                &StdClock::new(),
                &request(&fx, BASE_PROTOCOL_VERSION, &payload),
                &mut out,
                short,
                w,
            )
        });
        let took = start.elapsed();
        assert_eq!(r, Err(Error::Timeout), "{mode:?}");
        assert!(
            // Generous slack: the box is shared (2 cores, parallel builds).
            took >= short && took < short + Duration::from_secs(1),
            "{mode:?}: timed out after {took:?}"
        );
        let s = t.stats();
        assert_eq!(s.timed_out, before.timed_out + 1, "{mode:?}");
        assert_eq!(
            s.pool_free,
            s.pool_capacity - 1,
            "{mode:?}: the device still owns the timed-out buffer"
        );
        fx.release();
        // The late reply comes back: dropped, counted, buffer and token freed. In polled mode the
        // next poller drains it, so keep issuing commands until it is seen.
        let deadline = Instant::now() + fx.reply_timeout();
        while t.stats().late_replies == before.late_replies {
            assert!(
                Instant::now() < deadline,
                "{mode:?}: late reply never processed"
            );
            assert_eq!(
                command(&fx, BASE_PROTOCOL_VERSION, &[]).map(|r| first_word(&r)),
                Ok(0x20000),
                "{mode:?}: commands work after the timeout"
            );
        }
        assert_eq!(t.stats().late_replies, before.late_replies + 1, "{mode:?}");
        assert_pool_full(&fx, "after the late reply");
    }
}

/// How long a wait against a dead peer may take at most in [`peer_death_in_flight`]: well below
/// [`DEAD_PEER_DEADLINE`], so a wait that ran into its deadline fails the test.
pub const DEAD_PEER_BOUND: Duration = Duration::from_secs(2);
/// The deadline of each wait in [`peer_death_in_flight`].
pub const DEAD_PEER_DEADLINE: Duration = Duration::from_secs(10);

/// The device process dies with requests in flight. The front-end sees the socket hang up and
/// the device reads DEVICE_NEEDS_RESET: every in-flight wait ends with `Cancelled` long before
/// its deadline (interrupt mode: the interrupt thread is woken by the hang-up; polled mode: the
/// poller reads the status), later sends fail with `Shutdown` at once, `shutdown()` is bounded
/// and gives every buffer back.
pub fn peer_death_in_flight<F: DaemonFixture>(kill: impl Fn(&F)) {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let Some(fx) = F::setup(mode) else { return };
        let t = fx.transport();
        assert_eq!(
            command(&fx, BASE_PROTOCOL_VERSION, &[]).map(|r| first_word(&r)),
            Ok(0x20000)
        );
        fx.hold();
        let payload = [];
        let tickets: Vec<Ticket> = (0..8)
            .map(|_| {
                t.send(&request(&fx, BASE_PROTOCOL_VERSION, &payload))
                    .expect("send")
            })
            .collect();
        kill(&fx);
        let clock = StdClock::new();
        let start = Instant::now();
        for tk in tickets {
            let r = with_wait(&fx, |w| {
                wait_done(
                    t,
                    &tk,
                    &clock,
                    Deadline::after(&clock, DEAD_PEER_DEADLINE),
                    w,
                )
            });
            assert_eq!(r, Err(Error::Cancelled), "{mode:?}: in-flight wait");
            t.mark_txdone(tk, TxOutcome::Cancelled);
        }
        assert!(
            start.elapsed() < DEAD_PEER_BOUND,
            "{mode:?}: in-flight waits took {:?} against a dead peer",
            start.elapsed()
        );
        let start = Instant::now();
        assert_eq!(
            command(&fx, BASE_PROTOCOL_VERSION, &[]),
            Err(Error::Shutdown),
            "{mode:?}: a call after the peer died"
        );
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{mode:?}: a call after the peer died took {:?}",
            start.elapsed()
        );
        assert_pool_full(&fx, "after the peer died");
        let start = Instant::now();
        let _ = t.shutdown();
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{mode:?}: shutdown against a dead peer took {:?}",
            start.elapsed()
        );
        assert_pool_full(&fx, "after shutdown with a dead peer");
    }
}
