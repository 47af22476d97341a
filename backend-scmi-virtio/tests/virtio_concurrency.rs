//! Many transfers in flight at once: 1024 commands (a 2048-entry cmdq) queued from several
//! threads, in interrupt and polled mode, with in-order and reversed completion; and mixed
//! polled / interrupt transfers (docs/protocols/scmi.md §8 item 15).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fwipc_scmi_virtio::sim::{default_platform, ScmiFixture, SimDevice, SimDeviceConfig, SimScmi};
use fwipc_scmi_virtio::virtio::ScmiVirtioConfig;
use fwipc_transport_api::fixture::{echo_reply, Fault, Fixture, RemoteControl};
use fwipc_transport_api::{
    wait_done, Completion, Deadline, Error, Parker, Request, StdClock, ThreadParker, Ticket,
    Transport, TxOutcome, Wait,
};

/// A barrier whose wait is bounded: a party that panicked (or never arrives) fails the others
/// after `BARRIER_TIMEOUT` instead of hanging the test binary (std's `Barrier` waits forever).
struct Barrier {
    n: usize,
    arrived: AtomicUsize,
}

const BARRIER_TIMEOUT: Duration = Duration::from_secs(20);

impl Barrier {
    fn new(n: usize) -> Self {
        Barrier {
            n,
            arrived: AtomicUsize::new(0),
        }
    }

    fn wait(&self) {
        // AcqRel/Acquire: everything a party did before arriving is visible to the others after.
        self.arrived.fetch_add(1, Ordering::AcqRel);
        let start = Instant::now();
        while self.arrived.load(Ordering::Acquire) < self.n {
            assert!(
                start.elapsed() < BARRIER_TIMEOUT,
                "barrier: only {} of {} parties arrived",
                self.arrived.load(Ordering::Acquire),
                self.n
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

const ECHO: u32 = (0x81 << 8) | 0x03;
const THREADS: u32 = 4;
const PER_THREAD: u32 = 256;

fn payload(tag: u32) -> Vec<u8> {
    let mut p = tag.to_le_bytes().to_vec();
    p.extend_from_slice(&(tag.wrapping_mul(2654435761)).to_le_bytes());
    p
}

fn send(fx: &ScmiFixture, p: &[u8]) -> Result<Ticket, Error> {
    let r = Request::new(ECHO, p);
    let r = match fx.completion() {
        Completion::Polled => r.polled(),
        Completion::Interrupt => r,
    };
    fx.transport().send(&r)
}

fn finish(
    fx: &ScmiFixture,
    t: Ticket,
    p: &[u8],
    parker: &(dyn Parker + Sync),
) -> Result<(), String> {
    let clock = StdClock::new();
    let tr = fx.transport();
    let wait = match fx.completion() {
        Completion::Polled => Wait::Poll,
        Completion::Interrupt => Wait::Completion(parker),
    };
    let d = Deadline::after(&clock, Duration::from_secs(20));
    if let Err(e) = wait_done(tr, &t, &clock, d, wait) {
        let outcome = if e == Error::Timeout {
            TxOutcome::TimedOut
        } else {
            TxOutcome::Cancelled
        };
        tr.mark_txdone(t, outcome);
        return Err(format!("wait: {e}"));
    }
    let mut out = [0u8; 64];
    let n = tr.fetch_response(&t, &mut out);
    tr.mark_txdone(t, TxOutcome::Done);
    let n = n.map_err(|e| format!("fetch: {e}"))?;
    let mut want = vec![0u8; p.len()];
    echo_reply(p, &mut want);
    if out[..n] != want[..] {
        return Err(format!("reply mismatch for tag {:?}", &p[..4]));
    }
    Ok(())
}

/// All 1024 commands are queued (held by the device) before any completes; then released.
fn thousand_in_flight(mode: Completion, reversed: bool) {
    let fx = ScmiFixture::with_config(mode, 2048, SimDeviceConfig::default());
    let t = fx.transport();
    assert_eq!(
        t.max_msg(),
        1024,
        "a 2048-entry cmdq carries 1024 two-descriptor messages"
    );
    fx.device().set_reorder(reversed);
    fx.remote().set_fault(Fault::Hold);
    let _ = fx.remote().take_seen_tags();
    let queued = Barrier::new(THREADS as usize + 1);
    let released = Barrier::new(THREADS as usize + 1);
    std::thread::scope(|s| {
        for th in 0..THREADS {
            let (fx, queued, released) = (&fx, &queued, &released);
            s.spawn(move || {
                let parker = ThreadParker::new();
                let mine: Vec<(Ticket, Vec<u8>)> = (0..PER_THREAD)
                    .map(|i| {
                        let p = payload((th << 16) | i);
                        (send(fx, &p).expect("send while below max_msg"), p)
                    })
                    .collect();
                queued.wait();
                released.wait();
                for (t, p) in mine.into_iter().rev() {
                    finish(fx, t, &p, &parker).unwrap();
                }
            });
        }
        queued.wait();
        let total = (THREADS * PER_THREAD) as usize;
        let start = Instant::now();
        while fx.device().held() < total {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "device saw {} of {total}",
                fx.device().held()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let s = t.stats();
        assert_eq!(s.pool_free, 0, "all 1024 buffers in flight at once");
        assert_eq!(t.tokens_in_use(), 1024);
        assert_eq!(
            send(&fx, b"more").err(),
            Some(Error::Busy),
            "pool full: the next send is Busy"
        );
        fx.remote().set_fault(Fault::None);
        fx.remote().release();
        released.wait();
    });
    let s = t.stats();
    let total = u64::from(THREADS * PER_THREAD);
    assert_eq!(s.sent, total);
    assert_eq!(
        s.completed, total,
        "no lost or duplicated completion: {s:?}"
    );
    assert_eq!(
        s.duplicate_replies + s.unknown_replies + s.protocol_errors + s.late_replies,
        0
    );
    assert_eq!(s.pool_free, s.pool_capacity, "pool full at the end");
    assert_eq!(t.tokens_in_use(), 0);
    let seen = fx.remote().take_seen_tags();
    let unique: HashSet<u32> = seen.iter().copied().collect();
    assert_eq!(
        (seen.len(), unique.len()),
        (total as usize, total as usize),
        "each request seen once"
    );
}

#[test]
fn in_flight_1024_interrupt_mode() {
    thousand_in_flight(Completion::Interrupt, false);
}

#[test]
fn in_flight_1024_interrupt_mode_reversed_completion() {
    thousand_in_flight(Completion::Interrupt, true);
}

#[test]
fn in_flight_1024_polled_mode_reversed_completion() {
    // Each thread polls its own transfers; the first poller dequeues everyone's replies (deferred
    // processing for the others), so nothing may be lost.
    thousand_in_flight(Completion::Polled, true);
}

/// Streaming: threads keep many calls outstanding while the device completes in reversed
/// batches; in both modes every reply matches its own request.
#[test]
fn streaming_out_of_order_both_modes() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let fx = ScmiFixture::with_config(mode, 2048, SimDeviceConfig::default());
        fx.device().set_reorder(true);
        std::thread::scope(|s| {
            for th in 0..THREADS {
                let fx = &fx;
                s.spawn(move || {
                    let parker = ThreadParker::new();
                    for round in 0..8u32 {
                        let batch: Vec<_> = (0..64u32)
                            .map(|i| {
                                let p = payload((th << 24) | (round << 8) | i);
                                (send(fx, &p).unwrap(), p)
                            })
                            .collect();
                        for (t, p) in batch {
                            finish(fx, t, &p, &parker).unwrap();
                        }
                    }
                });
            }
        });
        let s = fx.transport().stats();
        assert_eq!(s.completed, u64::from(THREADS * 8 * 64), "{mode:?}: {s:?}");
        assert_eq!(s.pool_free, s.pool_capacity);
    }
}

/// Mixed polled and interrupt transfers answered in reverse order (docs/protocols/scmi.md §8 item
/// 15): each is identified by its own slot, not by used-index movement.
#[test]
fn mixed_polled_and_interrupt_reverse_order() {
    let fx = ScmiFixture::with_config(Completion::Interrupt, 64, SimDeviceConfig::default());
    let t = fx.transport();
    fx.device().set_reorder(true);
    fx.remote().set_fault(Fault::Hold);
    let mut sent = Vec::new();
    for i in 0..16u32 {
        let p = payload(i);
        let r = Request::new(ECHO, &p);
        let r = if i % 2 == 0 { r.polled() } else { r };
        sent.push((t.send(&r).unwrap(), p, i % 2 == 0));
    }
    let start = Instant::now();
    while fx.device().held() < 16 {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1));
    }
    fx.remote().release();
    let parker = ThreadParker::new();
    let clock = StdClock::new();
    for (ticket, p, polled) in sent {
        let d = Deadline::after(&clock, Duration::from_secs(5));
        let w = if polled {
            Wait::Poll
        } else {
            Wait::Completion(&parker)
        };
        wait_done(t, &ticket, &clock, d, w).unwrap();
        let mut out = [0u8; 16];
        let n = t.fetch_response(&ticket, &mut out).unwrap();
        t.mark_txdone(ticket, TxOutcome::Done);
        let mut want = vec![0u8; p.len()];
        echo_reply(&p, &mut want);
        assert_eq!(&out[..n], &want[..]);
    }
    assert_eq!(t.stats().pool_free, t.stats().pool_capacity);
}

/// Without any interrupt delivery, interrupt-mode transfers are still completed (and their wakers
/// run) when a poller dequeues their replies: deferred, never lost. A transport configured for
/// interrupts (`interrupts: true`, so it accepts wakers) whose device never gets its interrupt
/// handler (the polled fixture says `interrupts: false`, so it is built here).
#[test]
fn poller_completes_interrupt_transfers_without_irq() {
    let dev = SimDevice::start(SimDeviceConfig::default(), default_platform);
    let cfg = ScmiVirtioConfig {
        cmdq_size: Some(64),
        clock: Some(std::sync::Arc::new(StdClock::new())),
        ..ScmiVirtioConfig::default()
    };
    assert!(cfg.interrupts);
    let scmi = SimScmi::new(dev.transport(), cfg).unwrap();
    let t = &scmi;
    dev.set_fault(Fault::Hold);
    let others: Vec<_> = (0..4u32)
        .map(|i| {
            let p = payload(100 + i);
            (t.send(&Request::new(ECHO, &p)).unwrap(), p)
        })
        .collect();
    let woken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    struct Count(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            // SeqCst: a test counter; the strongest ordering keeps the reasoning trivial.
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Count(woken.clone())));
    for (tk, _) in &others {
        assert!(t.register_waker(tk, &waker));
        assert_eq!(t.poll_done(tk), Ok(false));
    }
    let mine_p = payload(7);
    let mine = t.send(&Request::new(ECHO, &mine_p).polled()).unwrap();
    dev.set_fault(Fault::None);
    dev.release();
    let clock = StdClock::new();
    wait_done(
        t,
        &mine,
        &clock,
        Deadline::after(&clock, Duration::from_secs(5)),
        Wait::Poll,
    )
    .unwrap();
    t.mark_txdone(mine, TxOutcome::Done);
    assert_eq!(
        // SeqCst: see the waker.
        woken.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "the poller ran the others' wakers"
    );
    for (tk, p) in others {
        assert_eq!(t.poll_done(&tk), Ok(true));
        let mut out = [0u8; 16];
        let n = t.fetch_response(&tk, &mut out).unwrap();
        let mut want = vec![0u8; p.len()];
        echo_reply(&p, &mut want);
        assert_eq!(&out[..n], &want[..]);
        t.mark_txdone(tk, TxOutcome::Done);
    }
    assert_eq!(t.stats().pool_free, t.stats().pool_capacity);
}

/// A parallel device: a slow command and a fast one complete in the other order, and each caller
/// gets its own reply (docs/protocols/scmi.md §1.1: the device may complete out of order).
#[test]
fn delayed_completion_out_of_order() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let fx = ScmiFixture::with_config(mode, 64, SimDeviceConfig::default());
        let t = fx.transport();
        let parker = ThreadParker::new();
        fx.remote()
            .set_fault(Fault::Delay(Duration::from_millis(60)));
        let slow_p = payload(1);
        // Taken before the send: the device's delay starts when it receives the request, which
        // may be before `send` returns.
        let start = Instant::now();
        let slow = send(&fx, &slow_p).unwrap();
        while fx.remote().received() < 1 {
            assert!(start.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(1));
        }
        fx.remote().set_fault(Fault::None);
        let fast_p = payload(2);
        let fast = send(&fx, &fast_p).unwrap();
        finish(&fx, fast, &fast_p, &parker).unwrap();
        assert_eq!(
            t.poll_done(&slow),
            Ok(false),
            "{mode:?}: the slow one is still in flight"
        );
        finish(&fx, slow, &slow_p, &parker).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(60));
        let s = t.stats();
        assert_eq!((s.completed, s.pool_free), (2, s.pool_capacity));
    }
}

/// Shutdown racing busy senders, pollers and the interrupt thread: every call ends with a reply or
/// `Shutdown` (nothing hangs or panics), and afterwards every buffer and token is back.
#[test]
fn shutdown_races_senders() {
    for (round, mode) in [
        Completion::Interrupt,
        Completion::Polled,
        Completion::Interrupt,
    ]
    .into_iter()
    .enumerate()
    {
        let fx = ScmiFixture::with_config(mode, 64, SimDeviceConfig::default());
        fx.device().set_reorder(round == 2);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let delivered = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..THREADS)
                .map(|th| {
                    let (fx, stop, delivered) = (&fx, &stop, &delivered);
                    s.spawn(move || {
                        let parker = ThreadParker::new();
                        let mut ok = 0u32;
                        for i in 0.. {
                            let p = payload((th << 20) | i);
                            match send(fx, &p) {
                                Ok(t) => match finish(fx, t, &p, &parker) {
                                    Ok(()) => {
                                        ok += 1;
                                        // Relaxed: a progress hint for the main thread only.
                                        delivered
                                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    }
                                    Err(e) => assert!(
                                        e.contains("Shutdown") || e.contains("shut down"),
                                        "{e}"
                                    ),
                                },
                                Err(Error::Shutdown) => break,
                                Err(Error::Busy) => std::thread::yield_now(),
                                Err(e) => panic!("send: {e}"),
                            }
                            // Relaxed: a stop hint only.
                            if stop.load(std::sync::atomic::Ordering::Relaxed) && i > 10_000 {
                                break;
                            }
                        }
                        ok
                    })
                })
                .collect();
            // Let the senders get going: at least one completed call (bounded; a fixed sleep
            // was too short on a loaded 2-core machine), then a little more traffic.
            let start = Instant::now();
            // Relaxed: a progress hint; the joins below synchronise the real counts.
            while delivered.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{mode:?}: no call completed"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(10));
            let start = Instant::now();
            fx.transport().shutdown().unwrap();
            assert!(start.elapsed() < Duration::from_secs(3));
            // Relaxed: a stop hint; the joins below synchronise.
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let total: u32 = hs.into_iter().map(|h| h.join().unwrap()).sum();
            assert!(total > 0, "some calls completed before shutdown");
        });
        let t = fx.transport();
        let s = t.stats();
        assert_eq!(s.pool_free, s.pool_capacity, "{mode:?}: {s:?}");
        assert_eq!(t.tokens_in_use(), 0);
    }
}
