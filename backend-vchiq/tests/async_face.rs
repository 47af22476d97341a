//! The async face of the instance (`Vchiq::queue_message_async`, `wait_async`,
//! `wait_bulk_async`) under a real executor (`futures::executor`), against the simulated
//! VideoCore.

use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::Duration;

use fwipc_vchiq::consts::make_fourcc;
use fwipc_vchiq::sim::framed_echo::EchoService;
use fwipc_vchiq::sim::SimPair;
use fwipc_vchiq::{BulkMode, Deliver, Event, ServiceCtx, ServiceHandle, ServiceParams, VchiqError};

mod common;
use common::connect_with_reply_sink;
use fwipc_transport_api::fixture::with_watchdog;

const T: Duration = Duration::from_secs(10);
/// Message round trips in flight at once.
const N: u32 = 128;

/// A payload of its own for round trip `i`: a mixed-up reply fails the check.
fn payload(i: u32) -> Vec<u8> {
    let mut p = i.to_le_bytes().to_vec();
    p.extend((0..(i % 29) as u8).map(|k| k ^ i as u8));
    p
}

/// A pair whose VideoCore side answers each message on `pong` with its bytes inverted; the
/// ARM side's replies land in the returned list.
fn pong_pair() -> (SimPair, ServiceHandle, Arc<Mutex<Vec<Vec<u8>>>>) {
    let fourcc = make_fourcc(*b"pong");
    let pair = SimPair::new().unwrap();
    pair.master()
        .add_service(
            ServiceParams::new(fourcc),
            |ctx: &ServiceCtx<'_>, ev: Event<'_>| {
                let Event::Message(m) = ev else {
                    return Deliver::Done;
                };
                let reply: Vec<u8> = m.payload().iter().map(|b| !b).collect();
                match ctx.vchiq.queue_message(ctx.handle, &reply) {
                    Ok(()) => Deliver::Done,
                    // Back-pressure on the reply: take the message again on a later poll.
                    Err(VchiqError::Retry) => {
                        ctx.vchiq.kick();
                        Deliver::Retry
                    }
                    Err(e) => panic!("reply: {e:?}"),
                }
            },
        )
        .unwrap();
    let (h, replies) = connect_with_reply_sink(&pair, fourcc);
    (pair, h, replies)
}

#[test]
fn async_face_128_concurrent_message_round_trips_every_reply_checked() {
    with_watchdog(|| {
        let (pair, h, replies) = pong_pair();
        let v = pair.slave();
        let futs = (0..N).map(|i| {
            let replies = &replies;
            async move {
                let p = payload(i);
                v.queue_message_async(h, &p, T)
                    .await
                    .unwrap_or_else(|e| panic!("round trip {i}: queue: {e:?}"));
                let want: Vec<u8> = p.iter().map(|b| !b).collect();
                // This round trip's own reply, taken out of the list when it arrives.
                v.wait_async(T, || {
                    let mut r = replies.lock().unwrap();
                    let k = r.iter().position(|x| *x == want)?;
                    r.swap_remove(k);
                    Some(Ok(()))
                })
                .await
                .unwrap_or_else(|e| panic!("round trip {i}: reply: {e:?}"));
            }
        });
        futures::executor::block_on(futures::future::join_all(futs));
        assert!(
            replies.lock().unwrap().is_empty(),
            "a reply nobody sent for"
        );
    });
}

/// Bulk transfers through the echo service's bulk side, awaited as futures: each transmit and
/// the receive that brings it back resolve together, byte-exact.
#[test]
fn async_face_bulk_round_trips_byte_exact() {
    with_watchdog(|| {
        let (pair, h) = echo_pair();
        let v = pair.slave();
        for round in 0..32u64 {
            let len = 100 + 37 * round as usize;
            let pattern: Vec<u8> = (0..len).map(|k| (k as u64 ^ round) as u8).collect();
            let tag = 2 * round;
            v.bulk_transmit(h, pattern.clone(), 0, len, tag, BulkMode::NoCallback)
                .unwrap();
            v.bulk_receive(h, vec![0; len], 0, len, tag + 1, BulkMode::NoCallback)
                .unwrap();
            let (tx, rx) = futures::executor::block_on(futures::future::join(
                v.wait_bulk_async(h, tag, T),
                v.wait_bulk_async(h, tag + 1, T),
            ));
            assert_eq!(tx.unwrap().result, Ok(len));
            let rx = rx.unwrap();
            assert_eq!(rx.result, Ok(len), "round {round}");
            assert_eq!(rx.buf, pattern, "round {round}");
        }
        // An unknown tag is refused, as by the blocking wait.
        let r = futures::executor::block_on(v.wait_bulk_async(h, 999, T));
        assert_eq!(r.err(), Some(VchiqError::Invalid));
    });
}

fn echo_pair() -> (SimPair, ServiceHandle) {
    let echo = make_fourcc(*b"echo");
    let pair = SimPair::new().unwrap();
    pair.master()
        .add_service_arc(ServiceParams::new(echo), Arc::new(EchoService::new()))
        .unwrap();
    pair.connect().unwrap();
    let h = pair
        .slave()
        .open_service_wait(
            ServiceParams::new(echo),
            Arc::new(|_: &ServiceCtx<'_>, _: Event<'_>| Deliver::Done),
            T,
        )
        .unwrap();
    (pair, h)
}

/// Futures dropped while pending leave nothing behind: a bulk wait dropped before its transfer
/// completed leaves the completion (with its buffer) for the next wait; 100 message futures
/// dropped before their first poll send nothing; the service keeps working.
#[test]
fn async_face_drop_while_pending_loses_and_leaks_nothing() {
    use std::future::Future;
    with_watchdog(|| {
        let (pair, h, replies) = pong_pair();
        let v = pair.slave();
        let pending: Vec<_> = (0..100)
            .map(|_| v.queue_message_async(h, b"never", T))
            .collect();
        drop(pending);
        std::thread::sleep(Duration::from_millis(50));
        assert!(replies.lock().unwrap().is_empty(), "a dropped future sent");

        let (pair2, eh) = echo_pair();
        let e = pair2.slave();
        let mapped = pair2.bus().mapped_pages();
        let mut dropped_pending = 0;
        for round in 0..16u64 {
            let len = 4096 + round as usize;
            let pattern: Vec<u8> = (0..len).map(|k| (k as u64 + round) as u8).collect();
            let tag = 2 * round;
            e.bulk_transmit(eh, pattern.clone(), 0, len, tag, BulkMode::NoCallback)
                .unwrap();
            e.bulk_receive(eh, vec![0; len], 0, len, tag + 1, BulkMode::NoCallback)
                .unwrap();
            let mut fut = Box::pin(e.wait_bulk_async(eh, tag + 1, T));
            let rx = match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                // Completed by the first poll (the instance's poll inside it finished the
                // transfer): the future hands the completion over.
                std::task::Poll::Ready(rx) => rx.unwrap(),
                std::task::Poll::Pending => {
                    dropped_pending += 1;
                    drop(fut);
                    // The completion was kept: the blocking wait takes it, data intact.
                    e.wait_bulk(eh, tag + 1, T).unwrap()
                }
            };
            assert_eq!((rx.result, &rx.buf), (Ok(len), &pattern), "round {round}");
            assert_eq!(e.wait_bulk(eh, tag, T).unwrap().result, Ok(len));
        }
        assert!(
            dropped_pending > 0,
            "no bulk future was pending after one poll"
        );
        assert_eq!(
            pair2.bus().mapped_pages(),
            mapped,
            "a bulk's pages stayed mapped"
        );
        let _ = pair;
    });
}
