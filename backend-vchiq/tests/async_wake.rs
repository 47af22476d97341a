//! How the instance's futures wake: on a driven instance (a worker polls it whenever the peer
//! rings, `Vchiq::set_poll_driven`) a pending future sleeps until the poll that delivers what it
//! waits on wakes it; on an instance nothing else polls, it asks to be polled again at once.
//! Polls are counted under a real executor (`futures::executor`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fwipc_vchiq::consts::make_fourcc;
use fwipc_vchiq::sim::{SimPair, SIM_WAIT};
use fwipc_vchiq::{Config, Deliver, Event, ServiceCtx, ServiceHandle, ServiceParams};

mod common;
use common::connect_with_reply_sink;
use fwipc_transport_api::fixture::with_watchdog;

const T: Duration = Duration::from_secs(10);
/// How long the VideoCore side sits on the request before answering.
const DELAY: Duration = Duration::from_millis(200);

/// Counts the polls of the future it wraps.
struct Counted<'c, F> {
    inner: Pin<Box<F>>,
    polls: &'c AtomicUsize,
}

impl<F: Future> Future for Counted<'_, F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Relaxed: a count read after the future resolved, on the same thread.
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

/// A pair whose VideoCore side takes each message on `slow` and answers it, inverted, `DELAY`
/// later from a thread of its own; the ARM side's replies land in the returned list.
fn slow_pair(slave_worker: bool) -> (SimPair, ServiceHandle, Arc<Mutex<Vec<Vec<u8>>>>) {
    let fourcc = make_fourcc(*b"slow");
    let pair = SimPair::with_config(Config::default().with_wait(SIM_WAIT), slave_worker).unwrap();
    // Weak: the service's handler lives in the instance it would otherwise keep alive.
    let master = Arc::downgrade(pair.master());
    pair.master()
        .add_service(
            ServiceParams::new(fourcc),
            move |ctx: &ServiceCtx<'_>, ev: Event<'_>| {
                let Event::Message(m) = ev else {
                    return Deliver::Done;
                };
                let reply: Vec<u8> = m.payload().iter().map(|b| !b).collect();
                let (v, h) = (master.clone(), ctx.handle);
                std::thread::spawn(move || {
                    std::thread::sleep(DELAY);
                    if let Some(v) = v.upgrade() {
                        v.queue_message_wait(h, &reply, T).expect("reply");
                    }
                });
                Deliver::Done
            },
        )
        .unwrap();
    let (h, replies) = connect_with_reply_sink(&pair, fourcc);
    (pair, h, replies)
}

/// One round trip whose reply comes `DELAY` late, awaited as a counted future: returns the
/// polls of the reply wait and how long it took.
fn round_trip(
    pair: &SimPair,
    h: ServiceHandle,
    replies: &Mutex<Vec<Vec<u8>>>,
) -> (usize, Duration) {
    let v = pair.slave();
    futures::executor::block_on(v.queue_message_async(h, b"ping", T)).unwrap();
    let polls = AtomicUsize::new(0);
    let start = Instant::now();
    let reply = futures::executor::block_on(Counted {
        inner: Box::pin(v.wait_async(T, || replies.lock().unwrap().pop().map(Ok))),
        polls: &polls,
    })
    .unwrap();
    let took = start.elapsed();
    assert_eq!(reply, b"ping".map(|b| !b), "the reply");
    // Relaxed: see `Counted`.
    (polls.load(Ordering::Relaxed), took)
}

/// Driven (the simulator's ARM-side worker polls on every doorbell): the pending future is
/// woken by the poll that delivered its reply, not re-polled in a loop.
#[test]
fn a_pending_future_on_a_driven_instance_is_woken_not_repolled() {
    with_watchdog(|| {
        let (pair, h, replies) = slow_pair(true);
        assert!(pair.slave().is_poll_driven());
        let (polls, took) = round_trip(&pair, h, &replies);
        assert!(took >= DELAY / 2, "the reply came early ({took:?})");
        // The first poll, the wake-up with the reply, and a few for other work the worker's
        // polls did meanwhile (the peer recycling our slot): never a loop.
        assert!(
            polls <= 8,
            "{polls} polls in {took:?}: the future was re-polled instead of woken"
        );
    });
}

/// Not driven (nothing but the future polls the ARM side): the future polls the instance itself
/// and asks to be polled again, so it still resolves, busily.
#[test]
fn a_pending_future_on_an_undriven_instance_polls_itself() {
    with_watchdog(|| {
        let (pair, h, replies) = slow_pair(false);
        assert!(!pair.slave().is_poll_driven());
        let (polls, took) = round_trip(&pair, h, &replies);
        assert!(took >= DELAY / 2, "the reply came early ({took:?})");
        assert!(
            polls > 100,
            "{polls} polls in {took:?}: an undriven future must poll the instance itself"
        );
    });
}
