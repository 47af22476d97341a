//! Setup, feature discipline, eventq discipline, teardown, and instance independence.

use std::time::{Duration, Instant};

use fwipc_scmi_virtio::header::{Header, MsgType};
use fwipc_scmi_virtio::sim::{
    BounceHal, EchoPlatform, ScmiFixture, SimDevice, SimDeviceConfig, SimHal,
};
use fwipc_scmi_virtio::virtio::{ScmiFeatures, ScmiVirtio, ScmiVirtioConfig, ScmiVirtioError};
use fwipc_transport_api::fixture::{Fault, Fixture, RemoteControl};
use fwipc_transport_api::{
    call, Completion, Error, Request, StdClock, ThreadParker, Transport, TxOutcome, Wait,
};

mod common;
use common::{echo_on, inverted, ECHO};

#[test]
fn p2a_not_offered_means_no_eventq() {
    let cfg = SimDeviceConfig {
        offer_p2a: false,
        ..SimDeviceConfig::default()
    };
    let dev = SimDevice::start(cfg, || Box::new(EchoPlatform::new()));
    let scmi = ScmiVirtio::<SimHal, _>::new(dev.transport(), ScmiVirtioConfig::default()).unwrap();
    assert_eq!(
        scmi.features(),
        ScmiFeatures::VERSION_1 | ScmiFeatures::RING_EVENT_IDX
    );
    assert_eq!(dev.driver_features() & 1, 0, "P2A_CHANNELS not written");
    assert!(!scmi.caps().notifications);
    assert_eq!(scmi.eventq_posted(), 0);
    assert_eq!(scmi.fetch_notification(&mut [0u8; 8]), Ok(None));
    assert_eq!(echo_on(&scmi, b"no p2a").unwrap(), inverted(b"no p2a"));
}

#[test]
fn p2a_declined_by_config() {
    let dev = SimDevice::start(SimDeviceConfig::default(), || Box::new(EchoPlatform::new()));
    let cfg = ScmiVirtioConfig {
        p2a: false,
        ..ScmiVirtioConfig::default()
    };
    let scmi = ScmiVirtio::<SimHal, _>::new(dev.transport(), cfg).unwrap();
    assert!(!scmi.features().contains(ScmiFeatures::P2A_CHANNELS));
    assert_eq!(
        dev.driver_features(),
        (ScmiFeatures::VERSION_1 | ScmiFeatures::RING_EVENT_IDX).bits()
    );
}

#[test]
fn access_platform_is_accepted_when_offered() {
    for offered in [false, true] {
        let cfg = SimDeviceConfig {
            offer_access_platform: offered,
            ..SimDeviceConfig::default()
        };
        let dev = SimDevice::start(cfg, || Box::new(EchoPlatform::new()));
        // The bouncing Hal: every address the device sees is a Hal-provided copy.
        let scmi =
            ScmiVirtio::<BounceHal, _>::new(dev.transport(), ScmiVirtioConfig::default()).unwrap();
        assert_eq!(
            scmi.features().contains(ScmiFeatures::ACCESS_PLATFORM),
            offered
        );
        assert_eq!(
            dev.driver_features() & ScmiFeatures::ACCESS_PLATFORM.bits() != 0,
            offered,
            "ACCESS_PLATFORM written back iff offered"
        );
        assert_eq!(echo_on(&scmi, b"dma").unwrap(), inverted(b"dma"));
    }
}

#[test]
fn bad_queue_sizes_are_refused() {
    let dev = SimDevice::start(
        SimDeviceConfig {
            queue_max: 256,
            ..SimDeviceConfig::default()
        },
        || Box::new(EchoPlatform::new()),
    );
    for (wanted, ok) in [(100, false), (512, false), (1, false), (256, true)] {
        let cfg = ScmiVirtioConfig {
            cmdq_size: Some(wanted),
            ..ScmiVirtioConfig::default()
        };
        let r = ScmiVirtio::<SimHal, _>::new(dev.transport(), cfg);
        match r {
            Ok(s) => {
                assert!(ok, "{wanted} accepted");
                assert_eq!(s.max_msg(), 128);
                s.shutdown().unwrap();
            }
            Err(e) => {
                assert!(!ok, "{wanted} refused: {e}");
                assert!(matches!(e, ScmiVirtioError::BadQueueSize { .. }), "{e:?}");
            }
        }
    }
    // The default picks the device maximum.
    let s = ScmiVirtio::<SimHal, _>::new(dev.transport(), ScmiVirtioConfig::default()).unwrap();
    assert_eq!(s.max_msg(), 128);
}

#[test]
fn payload_too_large_and_bad_target() {
    let fx = ScmiFixture::setup(Completion::Polled);
    let t = fx.transport();
    let big = vec![0u8; t.max_msg_size() + 1];
    assert_eq!(
        t.send(&Request::new(ECHO, &big)).err(),
        Some(Error::TooLarge)
    );
    assert_eq!(
        t.send(&Request::new(0x1_0000, b"x")).err(),
        Some(Error::InvalidArgument)
    );
    let max = vec![0x5Au8; t.max_msg_size()];
    assert_eq!(echo_on(t, &max).unwrap(), inverted(&max));
    // Unknown protocol: the platform answers NOT_SUPPORTED (-1), surfaced as Remote(-1).
    let clock = StdClock::new();
    let r = call(
        t,
        &clock,
        &Request::new(0x7001, b"").polled(),
        &mut [0u8; 8],
        Duration::from_secs(5),
        Wait::Poll,
    );
    assert_eq!(r, Err(Error::Remote(-1)));
    let s = t.stats();
    assert_eq!(s.pool_free, s.pool_capacity);
}

/// docs/protocols/scmi.md §8 item 9: P2A messages wait for eventq buffers; with the eventq drained
/// to empty and then refilled by fetching, every queued message arrives, in order.
#[test]
fn eventq_empty_then_refilled_delivers_everything() {
    let fx = ScmiFixture::setup(Completion::Interrupt);
    let t = fx.transport();
    let posted = t.eventq_posted();
    assert_eq!(posted, 64);
    let total = 3 * posted as u32;
    for i in 0..total {
        fx.device().queue_p2a(0x81, 0x00, &i.to_le_bytes());
    }
    // The device filled every buffer and holds the rest back.
    let start = Instant::now();
    while t.eventq_posted() != 0 || fx.device().eventq_buffers() != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "eventq never drained"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let start = Instant::now();
    while got.len() < total as usize {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "only {} of {total} arrived",
            got.len()
        );
        match t.fetch_notification(&mut buf).unwrap() {
            Some(n) => {
                let h = Header::decode(n.source).unwrap();
                assert_eq!(
                    (h.protocol_id, h.message_id, h.msg_type),
                    (0x81, 0, MsgType::Notification)
                );
                assert_eq!(n.len, 4);
                got.push(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]));
            }
            None => std::thread::sleep(Duration::from_micros(100)),
        }
    }
    assert_eq!(got, (0..total).collect::<Vec<_>>());
    // Every buffer went back to the device after its message was consumed.
    let start = Instant::now();
    while t.eventq_posted() + fx.device().eventq_buffers() < posted {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "eventq not refilled"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(t.fetch_notification(&mut buf), Ok(None));
}

#[test]
fn notification_too_large_for_buffer_stays_queued() {
    let fx = ScmiFixture::setup(Completion::Polled);
    let t = fx.transport();
    assert!(fx.remote().notify(&[7u8; 12]));
    let start = Instant::now();
    loop {
        match t.fetch_notification(&mut [0u8; 4]) {
            Err(Error::TooLarge) => break,
            Ok(None) => assert!(start.elapsed() < Duration::from_secs(5)),
            other => panic!("{other:?}"),
        }
    }
    let mut buf = [0u8; 12];
    let n = t.fetch_notification(&mut buf).unwrap().unwrap();
    assert_eq!((n.len, buf), (12, [7u8; 12]));
}

/// docs/protocols/scmi.md §8 item 1: two instances side by side, driven concurrently, no
/// cross-talk.
#[test]
fn two_instances_side_by_side() {
    let a = ScmiFixture::setup(Completion::Interrupt);
    let b = ScmiFixture::setup(Completion::Polled);
    let _ = (a.remote().take_seen_tags(), b.remote().take_seen_tags());
    std::thread::scope(|s| {
        for (fx, base) in [(&a, 0u32), (&b, 1 << 20)] {
            s.spawn(move || {
                let clock = StdClock::new();
                let parker = ThreadParker::new();
                for i in 0..300u32 {
                    let p = (base + i).to_le_bytes();
                    let r = Request::new(ECHO, &p);
                    let (r, w) = match fx.completion() {
                        Completion::Polled => (r.polled(), Wait::Poll),
                        Completion::Interrupt => (r, Wait::Completion(&parker)),
                    };
                    let mut out = [0u8; 4];
                    let n = call(
                        fx.transport(),
                        &clock,
                        &r,
                        &mut out,
                        Duration::from_secs(5),
                        w,
                    )
                    .unwrap();
                    assert_eq!(&out[..n], &inverted(&p)[..]);
                }
            });
        }
    });
    assert_eq!(a.remote().take_seen_tags(), (0..300).collect::<Vec<_>>());
    assert_eq!(
        b.remote().take_seen_tags(),
        (0..300).map(|i| (1 << 20) + i).collect::<Vec<_>>()
    );
    assert_eq!(
        (
            a.transport().stats().completed,
            b.transport().stats().completed
        ),
        (300, 300)
    );
    // Shutting one down leaves the other working.
    a.transport().shutdown().unwrap();
    assert_eq!(
        echo_on(b.transport(), b"b lives").unwrap(),
        inverted(b"b lives")
    );
}

/// Teardown with transfers the device will never return: bounded, in-flight transfers end with
/// Shutdown, the device reset gives every buffer back, sends are refused, shutdown is idempotent.
#[test]
fn shutdown_reclaims_device_owned_buffers() {
    let fx = ScmiFixture::setup(Completion::Polled);
    let t = fx.transport();
    fx.remote().set_fault(Fault::Drop);
    let live = t.send(&Request::new(ECHO, b"live").polled()).unwrap();
    let abandoned = t.send(&Request::new(ECHO, b"gone").polled()).unwrap();
    t.mark_txdone(abandoned, TxOutcome::TimedOut);
    assert_eq!(t.tokens_in_use(), 2);
    let start = Instant::now();
    t.shutdown().unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(t.poll_done(&live), Err(Error::Shutdown));
    t.mark_txdone(live, TxOutcome::Cancelled);
    let s = t.stats();
    assert_eq!(s.pool_free, s.pool_capacity);
    assert_eq!(t.tokens_in_use(), 0);
    assert_eq!(
        t.send(&Request::new(ECHO, b"x")).err(),
        Some(Error::Shutdown)
    );
    assert_eq!(t.shutdown(), Ok(()));
    assert_eq!(t.eventq_posted(), 0);
}

/// The same transport code over a bouncing Hal (like the vhost-user MemfdHal): data only moves
/// through share/unshare, so a missing or misdirected copy shows up as wrong data.
#[test]
fn bounce_hal_roundtrip_timeout_and_notifications() {
    let dev = SimDevice::start(SimDeviceConfig::default(), || Box::new(EchoPlatform::new()));
    let cfg = ScmiVirtioConfig {
        cmdq_size: Some(64),
        eventq_size: Some(16),
        ..ScmiVirtioConfig::default()
    };
    let scmi = ScmiVirtio::<BounceHal, _>::new(dev.transport(), cfg).unwrap();
    for len in [0usize, 1, 4, 17, 128] {
        let p: Vec<u8> = (0..len as u8).collect();
        assert_eq!(echo_on(&scmi, &p).unwrap(), inverted(&p));
    }
    dev.set_fault(Fault::Hold);
    let clock = StdClock::new();
    let r = call(
        &scmi,
        &clock,
        &Request::new(ECHO, b"late").polled(),
        &mut [0u8; 8],
        Duration::from_millis(20),
        Wait::Poll,
    );
    assert_eq!(r, Err(Error::Timeout));
    dev.set_fault(Fault::None);
    dev.release();
    assert_eq!(echo_on(&scmi, b"next").unwrap(), inverted(b"next"));
    assert_eq!(scmi.stats().late_replies, 1);
    assert!(dev.notify(b"evt!"));
    let mut buf = [0u8; 16];
    let start = Instant::now();
    let n = loop {
        if let Some(n) = scmi.fetch_notification(&mut buf).unwrap() {
            break n;
        }
        assert!(start.elapsed() < Duration::from_secs(5));
    };
    assert_eq!(&buf[..n.len], b"evt!");
    let s = scmi.stats();
    assert_eq!(s.pool_free, s.pool_capacity);
}

/// The platform resets with transfers in flight and the device signals DEVICE_NEEDS_RESET: the
/// interrupt path re-initialises the device (same queues, no allocation), cancels exactly the
/// transfers the device held, frees quarantined buffers, and the channel works again.
#[test]
fn needs_reset_cancels_in_flight_and_recovers() {
    let fx = ScmiFixture::setup(Completion::Interrupt);
    let t = fx.transport();
    fx.remote().set_fault(Fault::Hold);
    let abandoned = t.send(&Request::new(ECHO, b"old")).unwrap();
    t.mark_txdone(abandoned, TxOutcome::TimedOut);
    let polled = t.send(&Request::new(ECHO, b"p").polled()).unwrap();
    let irq = t.send(&Request::new(ECHO, b"i")).unwrap();
    let start = Instant::now();
    while fx.device().held() < 3 {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1));
    }
    fx.remote().set_fault(Fault::None);
    // A notification that arrived but is not fetched yet must survive the reset.
    assert!(fx.remote().notify(b"kept"));
    let start = Instant::now();
    while t.eventq_posted() == 64 {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now();
    fx.remote().reset_remote();
    let clock = StdClock::new();
    let parker = ThreadParker::new();
    let d = fwipc_transport_api::Deadline::after(&clock, Duration::from_secs(5));
    let r = fwipc_transport_api::wait_done(t, &irq, &clock, d, Wait::Completion(&parker));
    assert_eq!(r, Err(Error::Cancelled));
    assert_eq!(t.poll_done(&polled), Err(Error::Cancelled));
    // The wait's own deadline is 5 s; 3 s leaves room for a loaded 2-core machine.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "cancelled promptly, not timed out"
    );
    t.mark_txdone(irq, TxOutcome::Cancelled);
    t.mark_txdone(polled, TxOutcome::Cancelled);
    assert_eq!(t.device_resets(), 1);
    assert_eq!(t.tokens_in_use(), 0);
    let s = t.stats();
    assert_eq!(s.pool_free, s.pool_capacity);
    assert_eq!(
        echo_on(t, b"after reset").unwrap(),
        inverted(b"after reset")
    );
    assert_eq!(
        t.eventq_posted(),
        63,
        "the filled buffer is not re-posted before it is fetched"
    );
    let mut kept = [0u8; 8];
    let n = t
        .fetch_notification(&mut kept)
        .unwrap()
        .expect("notification kept across reset");
    assert_eq!(&kept[..n.len], b"kept");
    assert!(fx.remote().notify(b"evt"));
    let start = Instant::now();
    let mut buf = [0u8; 8];
    loop {
        if let Some(n) = t.fetch_notification(&mut buf).unwrap() {
            assert_eq!(&buf[..n.len], b"evt");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "eventq not re-fed after reset"
        );
    }
}

/// A polled fixture with one polled transfer the device holds (then un-faulted, so a reset
/// brings it back to normal service).
fn polled_transfer_held_by_the_device() -> (ScmiFixture, fwipc_transport_api::Ticket) {
    let fx = ScmiFixture::setup(Completion::Polled);
    fx.remote().set_fault(Fault::Hold);
    let tk = fx
        .transport()
        .send(&Request::new(ECHO, b"lost").polled())
        .unwrap();
    let start = Instant::now();
    while fx.device().held() < 1 {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1));
    }
    fx.remote().set_fault(Fault::None);
    (fx, tk)
}

/// Polled embedders (no interrupt) ask `needs_reset` and call `reset_device` themselves.
#[test]
fn polled_embedder_resets_device() {
    let (fx, tk) = polled_transfer_held_by_the_device();
    let t = fx.transport();
    assert!(!t.needs_reset());
    fx.remote().reset_remote();
    assert!(t.needs_reset());
    t.reset_device().unwrap();
    assert!(!t.needs_reset());
    assert_eq!(t.poll_done(&tk), Err(Error::Cancelled));
    t.mark_txdone(tk, TxOutcome::Cancelled);
    assert_eq!(echo_on(t, b"ok").unwrap(), inverted(b"ok"));
    let s = t.stats();
    assert_eq!(s.pool_free, s.pool_capacity);
    t.shutdown().unwrap();
    assert_eq!(t.reset_device(), Err(ScmiVirtioError::ShutDown));
}

/// A polled waiter whose embedder never asks `needs_reset`: the poller reads the status itself
/// (every `STATUS_POLL_PERIOD` empty polls), resets the device and ends with `Cancelled` long
/// before its deadline; the channel works again.
#[test]
fn polled_waiter_sees_needs_reset_by_itself() {
    let (fx, tk) = polled_transfer_held_by_the_device();
    let t = fx.transport();
    fx.remote().reset_remote();
    let clock = StdClock::new();
    let start = Instant::now();
    let d = fwipc_transport_api::Deadline::after(&clock, Duration::from_secs(10));
    let r = fwipc_transport_api::wait_done(t, &tk, &clock, d, Wait::Poll);
    assert_eq!(r, Err(Error::Cancelled));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "cancelled promptly, not timed out: {:?}",
        start.elapsed()
    );
    t.mark_txdone(tk, TxOutcome::Cancelled);
    assert_eq!(t.device_resets(), 1);
    assert_eq!(echo_on(t, b"ok").unwrap(), inverted(b"ok"));
    let s = t.stats();
    assert_eq!(s.pool_free, s.pool_capacity);
}

/// A platform that silently forgets commands (no DEVICE_NEEDS_RESET): the caller times out
/// within its deadline, the buffer stays quarantined, and shutdown takes it back.
#[test]
fn silent_forget_times_out_and_shutdown_reclaims() {
    let fx = ScmiFixture::setup(Completion::Interrupt);
    let t = fx.transport();
    fx.remote().set_fault(Fault::Hold);
    let h = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let clock = StdClock::new();
            let parker = ThreadParker::new();
            let start = Instant::now();
            let r = call(
                t,
                &clock,
                &Request::new(ECHO, b"x"),
                &mut [0u8; 4],
                Duration::from_millis(100),
                Wait::Completion(&parker),
            );
            (r, start.elapsed())
        });
        let start = Instant::now();
        while fx.device().held() < 1 {
            assert!(start.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(1));
        }
        fx.device().forget_in_flight();
        h.join().unwrap()
    });
    assert_eq!(h.0, Err(Error::Timeout));
    assert!(
        h.1 >= Duration::from_millis(100) && h.1 < Duration::from_millis(3000),
        "{:?}",
        h.1
    );
    assert_eq!(t.stats().pool_free, t.stats().pool_capacity - 1);
    fx.remote().set_fault(Fault::None);
    assert_eq!(echo_on(t, b"y").unwrap(), inverted(b"y"));
    t.shutdown().unwrap();
    assert_eq!(t.stats().pool_free, t.stats().pool_capacity);
    assert_eq!(t.tokens_in_use(), 0);
}

/// `into_transport` tears the channel down (a transfer held by the device ends, every buffer
/// comes back, the device is reset with no queue set and holds none of our eventq buffers) and
/// returns the virtio transport, from which a new channel is built: no unsafe re-creation of the
/// transport needed. Also after an explicit shutdown, and from a polled-mode channel.
#[test]
fn into_transport_gives_the_transport_back() {
    use virtio_drivers::transport::{DeviceStatus, Transport as _};
    let dev = SimDevice::start(SimDeviceConfig::default(), || Box::new(EchoPlatform::new()));
    let cfg = ScmiVirtioConfig {
        cmdq_size: Some(16),
        eventq_size: Some(8),
        ..ScmiVirtioConfig::default()
    };
    let scmi = ScmiVirtio::<SimHal, _>::new(dev.transport(), cfg.clone()).unwrap();
    assert_eq!(echo_on(&scmi, b"first").unwrap(), inverted(b"first"));
    assert_eq!(dev.eventq_buffers(), 8);
    dev.set_fault(Fault::Hold);
    let held = scmi.send(&Request::new(ECHO, b"held").polled()).unwrap();
    let start = Instant::now();
    while dev.held() < 1 {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = held; // the ticket dies with the channel
    let mut t = scmi.into_transport();
    assert_eq!(t.get_status(), DeviceStatus::empty(), "device reset");
    assert!(!t.queue_used(0) && !t.queue_used(1), "no queue configured");
    assert_eq!((dev.held(), dev.eventq_buffers()), (0, 0));
    dev.set_fault(Fault::None);
    // Rebuild on the same transport, twice (once after an explicit shutdown).
    let scmi = ScmiVirtio::<SimHal, _>::new(t, cfg.clone()).unwrap();
    assert_eq!(echo_on(&scmi, b"second").unwrap(), inverted(b"second"));
    scmi.shutdown().unwrap();
    let t = scmi.into_transport();
    let scmi = ScmiVirtio::<SimHal, _>::new(t, cfg).unwrap();
    assert_eq!(echo_on(&scmi, b"third").unwrap(), inverted(b"third"));
    let s = scmi.stats();
    assert_eq!(s.pool_free, s.pool_capacity);
}

/// An embedder with no interrupt path says so at construction (`interrupts: false`): a request
/// that names interrupt completion is then served by polling, in every wait strategy, instead of
/// waiting out its timeout for a `complete` that nobody calls.
#[test]
fn without_an_interrupt_path_every_request_is_served_by_polling() {
    let dev = SimDevice::start(SimDeviceConfig::default(), || Box::new(EchoPlatform::new()));
    let cfg = ScmiVirtioConfig {
        interrupts: false,
        ..ScmiVirtioConfig::default()
    };
    let scmi = ScmiVirtio::<SimHal, _>::new(dev.transport(), cfg).unwrap();
    let clock = StdClock::new();
    let parker = ThreadParker::new();
    for (i, wait) in [Wait::Poll, Wait::Completion(&parker)]
        .into_iter()
        .enumerate()
    {
        let payload = [b'i', b'r', b'q', i as u8];
        let mut out = [0u8; 16];
        let n = call(
            &scmi,
            &clock,
            &Request::new(ECHO, &payload), // interrupt completion: nothing calls `complete`
            &mut out,
            Duration::from_secs(5),
            wait,
        )
        .unwrap_or_else(|e| panic!("{wait:?}: {e}"));
        assert_eq!(&out[..n], inverted(&payload).as_slice(), "{wait:?}");
    }
    assert_eq!(scmi.stats().completed, 2);
}

/// A device that never reads back status 0 after a reset (virtio 1.2 §2.4) may still access
/// every buffer it held and both rings: `reset_device` ends with `ResetUnconfirmed`, the waiter
/// is released, and nothing the device can reach is reused (the held message buffer never
/// returns to the pool, the posted eventq buffers and the rings are leaked, all counted); the
/// channel is dead afterwards.
#[test]
fn unconfirmed_reset_quarantines_device_memory() {
    let (fx, tk) = polled_transfer_held_by_the_device();
    let t = fx.transport();
    let posted = t.eventq_posted() as u64;
    assert!(posted > 0);
    fx.device().set_refuse_reset(true);
    assert_eq!(t.reset_device(), Err(ScmiVirtioError::ResetUnconfirmed));
    assert_eq!(t.poll_done(&tk), Err(Error::Cancelled));
    t.mark_txdone(tk, TxOutcome::Cancelled);
    assert_eq!(t.quarantined_buffers(), 1 + posted);
    assert_eq!(t.eventq_posted(), 0, "the eventq is gone, not re-posted");
    let s = t.stats();
    assert_eq!(
        s.pool_free,
        s.pool_capacity - 1,
        "the held buffer stays quarantined"
    );
    assert_eq!(
        t.send(&Request::new(ECHO, b"dead").polled()).err(),
        Some(Error::Shutdown)
    );
    assert_eq!(t.stats().pool_free, s.pool_capacity - 1);
}

/// The same at shutdown: the reset is not confirmed, so `shutdown` reports it (`Timeout`, the
/// transport-level form of `ResetUnconfirmed`) and keeps the held buffer out of the pool.
#[test]
fn shutdown_with_unconfirmed_reset_keeps_buffers_quarantined() {
    let (fx, tk) = polled_transfer_held_by_the_device();
    let t = fx.transport();
    t.mark_txdone(tk, TxOutcome::TimedOut);
    let posted = t.eventq_posted() as u64;
    fx.device().set_refuse_reset(true);
    assert_eq!(t.shutdown(), Err(Error::Timeout));
    assert_eq!(t.quarantined_buffers(), 1 + posted);
    assert_eq!(
        t.tokens_in_use(),
        0,
        "the abandoned transfer's token is freed"
    );
    let s = t.stats();
    assert_eq!(s.pool_free, s.pool_capacity - 1);
    assert_eq!(t.shutdown(), Ok(()), "idempotent");
}
