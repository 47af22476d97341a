//! Tests of the simulated device over hand-built rings and a driver.

use std::time::{Duration, Instant};

use virtio_drivers::transport::{DeviceStatus, Transport};

use super::guest_mem::{read_desc, write_mem};
use super::*;
use crate::sim::hal::SimHal;
use crate::virtio::ring::SplitRing;
use crate::virtio::ring::{Descriptor, DESC_F_NEXT, DESC_F_WRITE};
use crate::virtio::ScmiFeatures;

/// Driver and device racing on the same memory, both through the atomic accessors: the
/// device serves a round trip over the shared rings, and once the driver has seen it complete a
/// hostile device-side writer (this crate's `write_mem`, what the device thread uses) keeps
/// rewriting the return values while the driver reads them. The writer covers exactly the
/// range the driver copies (`shared_mem`'s rule: the same range ends, so each word is moved
/// the same way by both); it starts after the device's own reply write, which covers those
/// bytes differently and which the driver's completion orders before it. Under Miri
/// (`cargo +nightly miri test -p fwipc-scmi-virtio --lib sim::device::tests::hostile`, with
/// `-Zmiri-permissive-provenance`) any non-atomic or mixed-size access on either side is a
/// reported data race; natively it checks that the driver returns either the echo or the
/// hostile bytes, never anything else.
#[test]
fn hostile_device_rewriting_a_reply_is_no_data_race() {
    use crate::virtio::{ScmiVirtio, ScmiVirtioConfig};
    use fwipc_transport_api::{Request, Transport};
    let dev = SimDevice::start(SimDeviceConfig::default(), || {
        Box::new(crate::sim::EchoPlatform::new())
    });
    let cfg = ScmiVirtioConfig {
        cmdq_size: Some(4),
        eventq_size: Some(2),
        interrupts: false,
        ..ScmiVirtioConfig::default()
    };
    let scmi = ScmiVirtio::<SimHal, _>::new(dev.transport(), cfg).unwrap();
    let tk = scmi
        .send(&Request::new((0x81 << 8) | 0x03, &[1, 2, 3, 4]).polled())
        .unwrap();
    // The reply area of the chain just posted: its device-writable descriptor.
    let resp = {
        let d = lock(&dev.sh.dev);
        let head = (tk.slot() * 2) as u16;
        // SAFETY: a descriptor of the live cmdq table (the driver posted it above).
        unsafe { read_desc(d.queues[0].desc + 16 * u64::from(head + 1)) }
    };
    assert_eq!(resp.flags & DESC_F_WRITE, DESC_F_WRITE);
    let mut out = [0u8; 8];
    let completed = std::sync::atomic::AtomicBool::new(false);
    let got = std::thread::scope(|s| {
        s.spawn(|| {
            // Acquire: pairs with the Release below, so the device's reply write (ordered
            // before the driver's completion) happens before these writes.
            while !completed.load(std::sync::atomic::Ordering::Acquire) {
                std::thread::yield_now();
            }
            for _ in 0..16 {
                // SAFETY: the reply area's return values (8 + 4 ≤ its length), memory the
                // driver shared for this chain and keeps alive until `mark_txdone`.
                unsafe { write_mem(resp.addr + 8, &[0xee; 4]) };
                std::thread::yield_now();
            }
        });
        let start = Instant::now();
        while !scmi.poll_done(&tk).unwrap() {
            assert!(start.elapsed() < Duration::from_secs(60));
            std::thread::yield_now();
        }
        // Release: publishes the completion (and so the device's reply write) to the writer.
        completed.store(true, std::sync::atomic::Ordering::Release);
        scmi.fetch_response(&tk, &mut out)
    });
    assert_eq!(got, Ok(4));
    // Each byte is the echo's (inverted) or the hostile writer's.
    for (b, sent) in out[..4].iter().zip([1u8, 2, 3, 4]) {
        assert!(*b == !sent || *b == 0xee, "byte {b:#x}");
    }
    scmi.mark_txdone(tk, fwipc_transport_api::TxOutcome::Done);
    assert_eq!(scmi.shutdown(), Ok(()));
}

/// Drive the device's cmdq by hand: a malformed chain (one descriptor, or a readable response)
/// is returned empty and counted, and fails only itself (docs/protocols/scmi.md §8 item 11).
/// The device delivers its interrupt line to the registered handler on its own thread (no
/// interrupt thread): an interrupt-mode call completes through it, every delivery runs on the
/// device thread, and once the handler is removed a raised line no longer reaches it.
#[test]
fn irq_handler_runs_on_the_device_thread() {
    use crate::virtio::{ScmiVirtio, ScmiVirtioConfig};
    use fwipc_transport_api::{call, Request, StdClock, ThreadParker, Wait};
    use std::sync::atomic::AtomicU32;
    let dev = SimDevice::start(SimDeviceConfig::default(), || {
        Box::new(crate::sim::EchoPlatform::new())
    });
    let scmi = Arc::new(
        ScmiVirtio::<SimHal, _>::new(dev.transport(), ScmiVirtioConfig::default()).unwrap(),
    );
    // Deliveries on the device thread / elsewhere. Relaxed: counts read after the fact.
    let on_device = Arc::new(AtomicU32::new(0));
    let elsewhere = Arc::new(AtomicU32::new(0));
    let (weak, on2, else2) = (Arc::downgrade(&scmi), on_device.clone(), elsewhere.clone());
    dev.set_irq_handler(Some(Box::new(move || {
        let n = if std::thread::current().name() == Some("sim-virtio-scmi") {
            &on2
        } else {
            &else2
        };
        n.fetch_add(1, Ordering::Relaxed);
        if let Some(v) = weak.upgrade() {
            v.complete();
        }
    })));
    let (clock, parker) = (StdClock::new(), ThreadParker::new());
    let mut out = [0u8; 8];
    // A waiter that spins asks for no interrupt while it does (`Transport::spinning`), and may
    // take every reply so; one that yields from its first poll on asks for each.
    let yielding = Wait::SpinThenYield {
        spins: 0,
        relax: &std::thread::yield_now,
    };
    for i in 0..8u8 {
        let payload = [i, 2, 3];
        let req = Request::new((0x81 << 8) | 0x03, &payload);
        let wait = if i % 2 == 0 {
            yielding
        } else {
            Wait::Completion(&parker)
        };
        let n = call(
            &*scmi,
            &clock,
            &req,
            &mut out,
            Duration::from_secs(10),
            wait,
        )
        .unwrap();
        assert_eq!(&out[..n], &[!i, !2, !3]);
    }
    assert!(on_device.load(Ordering::Relaxed) > 0, "no delivery");
    assert_eq!(elsewhere.load(Ordering::Relaxed), 0);
    dev.set_irq_handler(None);
    let before = on_device.load(Ordering::Relaxed);
    *lock(&dev.sh.isr) |= 1;
    dev.sh.signal_irq();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        on_device.load(Ordering::Relaxed),
        before,
        "delivered after removal"
    );
    let _ = fwipc_transport_api::Transport::shutdown(&*scmi);
}

#[test]
fn malformed_chain_fails_only_itself() {
    let dev = SimDevice::start(SimDeviceConfig::default(), || {
        Box::new(crate::sim::EchoPlatform::new())
    });
    let mut t = dev.transport();
    t.set_status(DeviceStatus::empty());
    t.write_driver_features(ScmiFeatures::VERSION_1.bits());
    let mut ring = SplitRing::<SimHal>::new(8, false).unwrap();
    let (d, a, u) = ring.addrs();
    t.queue_set(0, 8, d, a, u);
    t.set_status(
        DeviceStatus::ACKNOWLEDGE
            | DeviceStatus::DRIVER
            | DeviceStatus::FEATURES_OK
            | DeviceStatus::DRIVER_OK,
    );
    let hdr = crate::header::Header::command(0x81, 0x03, 5).encode();
    let mut req = hdr.to_le_bytes().to_vec();
    req.extend_from_slice(&[1, 2, 3, 4]);
    let mut resp = vec![0u8; 16];
    let desc = |addr: u64, len: usize, flags: u16, next: u16| Descriptor {
        addr,
        len: len as u32,
        flags,
        next,
    };
    // The device writes `resp` through this address: derive it from a mutable pointer.
    let (rq, rs) = (req.as_ptr() as u64, resp.as_mut_ptr() as u64);
    // Chain 0: a lone readable descriptor. Chain 2: response marked readable. Chain 4: good.
    ring.set_desc(0, desc(rq, req.len(), 0, 0));
    ring.set_desc(2, desc(rq, req.len(), DESC_F_NEXT, 3));
    ring.set_desc(3, desc(rs, resp.len(), 0, 0));
    ring.set_desc(4, desc(rq, req.len(), DESC_F_NEXT, 5));
    ring.set_desc(5, desc(rs, resp.len(), DESC_F_WRITE, 0));
    for head in [0, 2, 4] {
        ring.post(head);
    }
    t.notify(0);
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "device returned {got:?}"
        );
        match ring.pop_used() {
            Ok(Some(e)) => got.push((e.id, e.len)),
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(got, vec![(0, 0), (2, 0), (4, 12)]);
    assert_eq!(dev.malformed_chains(), 2);
    assert_eq!(
        u32::from_le_bytes([resp[0], resp[1], resp[2], resp[3]]),
        hdr
    );
    assert_eq!(&resp[8..12], &[!1u8, !2, !3, !4]);
    t.set_status(DeviceStatus::empty());
}

/// EVENT_IDX end to end at ring level across the u16 wrap, with batches: the driver posts
/// each round as one or two sub-batches (sometimes deciding after the first, always after
/// the second), kicks only when `should_notify` (wrap-safe `avail_event` check) says so, and
/// the device (`kick_only` without `watch_when_idle`: it looks at the ring only when kicked)
/// must never stall. Replies
/// are collected only once the whole round is in, so `used_event` stays armed at the
/// round's first entry and the device must raise exactly one interrupt per round.
#[test]
fn event_idx_batches_cross_u16_wrap() {
    const SIZE: u16 = 16;
    const SLOTS: usize = SIZE as usize / 2;
    let cfg = SimDeviceConfig {
        watch_when_idle: false,
        ..SimDeviceConfig::default()
    };
    let dev = SimDevice::start(cfg, || Box::new(crate::sim::EchoPlatform::new()));
    let mut t = dev.transport();
    t.set_status(DeviceStatus::empty());
    assert_ne!(
        t.read_device_features() & ScmiFeatures::RING_EVENT_IDX.bits(),
        0
    );
    t.write_driver_features((ScmiFeatures::VERSION_1 | ScmiFeatures::RING_EVENT_IDX).bits());
    let mut ring = SplitRing::<SimHal>::new(SIZE, true).unwrap();
    let (d, a, u) = ring.addrs();
    t.queue_set(0, u32::from(SIZE), d, a, u);
    t.set_status(
        DeviceStatus::ACKNOWLEDGE
            | DeviceStatus::DRIVER
            | DeviceStatus::FEATURES_OK
            | DeviceStatus::DRIVER_OK,
    );
    let mut reqs = [[0u8; 8]; SLOTS];
    let mut resps = [[0u8; 16]; SLOTS];
    let (mut total, mut rounds, mut kicks, mut seed) = (0u32, 0u64, 0u64, 0x2545_f491u32);
    while total < 66_000 + 3 * u32::from(SIZE) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let batch = 1 + (seed as usize % SLOTS);
        let split = (seed >> 8) as usize % batch; // 0 = one sub-batch
        for k in 0..batch {
            let tag = total + k as u32;
            let hdr = crate::header::Header::command(0x81, 0x03, (tag & 0x3ff) as u16);
            reqs[k][..4].copy_from_slice(&hdr.encode().to_le_bytes());
            reqs[k][4..].copy_from_slice(&tag.to_le_bytes());
            resps[k] = [0; 16];
            let head = 2 * k as u16;
            ring.set_desc(
                head,
                Descriptor {
                    addr: reqs[k].as_ptr() as u64,
                    len: 8,
                    flags: DESC_F_NEXT,
                    next: head + 1,
                },
            );
            ring.set_desc(
                head + 1,
                Descriptor {
                    addr: resps[k].as_mut_ptr() as u64,
                    len: 16,
                    flags: DESC_F_WRITE,
                    next: 0,
                },
            );
            ring.post(head);
            if k + 1 == split && (seed >> 16) & 1 == 1 && ring.should_notify() {
                t.notify(0);
                kicks += 1;
            }
        }
        if ring.should_notify() {
            t.notify(0);
            kicks += 1;
        }
        // A decision with nothing new posted never kicks.
        assert!(!ring.should_notify());
        let start = Instant::now();
        while ring.device_used_idx().wrapping_sub(ring_last_used(&ring)) < batch as u16 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "stalled at request {total} (round {rounds}): a needed kick was skipped"
            );
            std::thread::yield_now();
        }
        // The device decides on the interrupt after it publishes `used.idx`: let it decide for
        // every entry of the round before collecting them, or the final empty `pop_used` can
        // re-arm `used_event` past an entry the device is still deciding on, and that entry's
        // interrupt is (rightly) suppressed: the driver has already taken it.
        let want = u64::from(total) + batch as u64;
        while {
            let (r, s) = dev.interrupts();
            r + s < want
        } {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the device never decided on the interrupt for request {total} (round {rounds})"
            );
            std::thread::yield_now();
        }
        let mut seen = [false; SLOTS];
        for _ in 0..batch {
            let e = ring.pop_used().unwrap().expect("entry");
            let k = e.id as usize / 2;
            assert!(
                e.id.is_multiple_of(2) && k < batch && !seen[k],
                "bad used id {}",
                e.id
            );
            seen[k] = true;
            assert_eq!(e.len, 12);
            let tag = total + k as u32;
            assert_eq!(&resps[k][..4], &reqs[k][..4]);
            assert_eq!(&resps[k][4..8], &[0; 4]);
            assert_eq!(resps[k][8..12], (!tag).to_le_bytes(), "reply to {tag}");
        }
        assert_eq!(ring.pop_used(), Ok(None));
        total += batch as u32;
        rounds += 1;
    }
    assert!(total > 65_536 + u32::from(SIZE), "indices wrapped");
    assert_eq!(dev.kicks(), kicks);
    assert!(kicks >= rounds, "at least one kick per round");
    let (raised, suppressed) = dev.interrupts();
    assert_eq!(
        raised, rounds,
        "one interrupt per round (used_event honoured)"
    );
    assert_eq!(suppressed, u64::from(total) - rounds);
    t.set_status(DeviceStatus::empty());
}

fn ring_last_used(r: &SplitRing<SimHal>) -> u16 {
    r.last_used()
}

/// A driver kick takes no lock the device thread holds while it serves (on a spinning device
/// that lock's line would move to the driver and back once per request); the next device pass
/// serves it, once.
#[test]
fn a_kick_takes_no_device_lock() {
    use fwipc_transport_api::fixture::RemoteControl;
    let dev = SimDevice::start(SimDeviceConfig::default(), || {
        Box::new(crate::sim::EchoPlatform::new())
    });
    assert!(dev.set_sim_mode(SimMode::Stepped));
    let mut t = dev.transport();
    {
        // The device lock held (as by a device pass in progress): the kick must still return.
        let _held = lock(&dev.sh.dev);
        let (tx, rx) = std::sync::mpsc::channel();
        let kicker = std::thread::spawn(move || {
            t.notify(0);
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("a kick waited for the device lock");
        kicker.join().expect("kicker");
    }
    assert_eq!(dev.kicks(), 1);
    assert!(dev.step(), "the kick is served");
    assert!(!dev.step(), "and only once");
    assert!(dev.set_sim_mode(SimMode::Normal));
}

/// A simulated device (`EVENT_IDX` offered or not) and a polled SCMI driver on it, without
/// interrupts, with a small command queue.
fn polled_driver(event_idx: bool) -> (SimDevice, crate::virtio::ScmiVirtio<SimHal, SimTransport>) {
    let dev = SimDevice::start(
        SimDeviceConfig {
            offer_event_idx: event_idx,
            ..SimDeviceConfig::default()
        },
        || Box::new(crate::sim::EchoPlatform::new()),
    );
    let cfg = crate::virtio::ScmiVirtioConfig {
        cmdq_size: Some(8),
        eventq_size: Some(2),
        interrupts: false,
        ..crate::virtio::ScmiVirtioConfig::default()
    };
    let scmi = crate::virtio::ScmiVirtio::new(dev.transport(), cfg).unwrap();
    (dev, scmi)
}

/// In `Normal` a device that finds nothing to do watches its command queue for one bounded spin
/// with the driver's notifications off (`SimDeviceConfig::watch_when_idle`, virtio 1.2
/// §2.7.10), so back-to-back round trips mostly carry no kick; when the spin runs out it asks
/// for them again before it sleeps, so a later send kicks (and is served).
#[test]
fn an_idle_device_watches_with_kicks_off_then_asks_for_them_before_it_sleeps() {
    use fwipc_transport_api::{Request, Ticket, Transport as _, TxOutcome};
    for event_idx in [true, false] {
        let (dev, scmi) = polled_driver(event_idx);
        let round_trip = || {
            let tk: Ticket = scmi
                .send(&Request::new((0x81 << 8) | 0x03, &[1, 2, 3, 4]).polled())
                .unwrap();
            let start = Instant::now();
            while !scmi.poll_done(&tk).unwrap() {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "event_idx {event_idx}: no reply"
                );
                std::hint::spin_loop();
            }
            let mut out = [0u8; 16];
            scmi.fetch_response(&tk, &mut out).unwrap();
            scmi.mark_txdone(tk, TxOutcome::Done);
        };
        round_trip();
        let before = dev.kicks();
        // Fewer under Miri (`.ci/run` runs this test there: the watch reads the ring the driver
        // writes, without the driver's lock), but not too few: there a step takes long enough
        // that a watch, its learned spin phase shrunk, runs out now and then before the next
        // post (a handful of 40 kick in a typical run), and one run with 10 saw all 10 kick.
        let n = if cfg!(miri) { 40 } else { 200 };
        for _ in 0..n {
            round_trip();
        }
        let kicked = dev.kicks() - before;
        assert!(
            kicked < n,
            "event_idx {event_idx}: every one of {n} back-to-back posts kicked a watching device"
        );
        // The watch runs out (bounded), and the device asks for kicks again before it sleeps;
        // woken by its timer alone it sleeps again without watching. So the next send kicks.
        let start = Instant::now();
        let kicks_off = loop {
            let (asleep, kicks_off) = dev.asleep_and_kicks_off();
            if asleep {
                break kicks_off;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "event_idx {event_idx}: the device never went to sleep"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(
            !kicks_off,
            "event_idx {event_idx}: the device sleeps with kicks off"
        );
        let before = dev.kicks();
        round_trip();
        assert_eq!(
            dev.kicks(),
            before + 1,
            "event_idx {event_idx}: the device went to sleep without asking for kicks again"
        );
    }
}

/// A device that polls (`SimMode::Spin`, or stepped as polling: `SimMode::SteppedPolling`) asks
/// the driver for no notifications (virtio 1.2 §2.7.10: `avail_event` far ahead with
/// `EVENT_IDX`, `VIRTQ_USED_F_NO_NOTIFY` without), so a round trip carries no kick; in another
/// mode it asks for them again, serves what was posted while none came, and every send kicks
/// once more.
#[test]
fn a_polling_device_asks_for_no_kicks() {
    use fwipc_transport_api::fixture::RemoteControl;
    use fwipc_transport_api::{Request, Ticket, Transport as _, TxOutcome};
    for event_idx in [true, false] {
        let (dev, scmi) = polled_driver(event_idx);
        let send = || {
            scmi.send(&Request::new((0x81 << 8) | 0x03, &[1, 2, 3, 4]).polled())
                .unwrap()
        };
        let finish = |tk: Ticket| {
            let mut out = [0u8; 16];
            scmi.fetch_response(&tk, &mut out).unwrap();
            scmi.mark_txdone(tk, TxOutcome::Done);
        };
        let wait = |tk: &Ticket| {
            let start = Instant::now();
            while !scmi.poll_done(tk).unwrap() {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "event_idx {event_idx}: no reply"
                );
                std::thread::yield_now();
            }
        };
        assert!(dev.set_sim_mode(SimMode::Spin));
        // The first round trip may still kick: the device asks at its first pass.
        let tk = send();
        wait(&tk);
        finish(tk);
        let before = dev.kicks();
        // Fewer under Miri (`.ci/run` runs this test there: the watch reads the rings the
        // driver writes).
        for _ in 0..if cfg!(miri) { 20 } else { 200 } {
            let tk = send();
            wait(&tk);
            finish(tk);
        }
        assert_eq!(
            dev.kicks(),
            before,
            "event_idx {event_idx}: a polling device was kicked"
        );
        // A post made while the driver still sees notifications suppressed kicks nobody; the
        // first stepped pass must look anyway.
        assert!(dev.set_sim_mode(SimMode::Stepped));
        let tk = send();
        assert_eq!(dev.kicks(), before, "event_idx {event_idx}");
        dev.step();
        assert!(
            scmi.poll_done(&tk).unwrap(),
            "event_idx {event_idx}: the post made while quiet was not served"
        );
        finish(tk);
        // Notifications are asked for again: every send kicks, and a step serves it.
        for i in 1..=3 {
            let tk = send();
            assert_eq!(dev.kicks(), before + i, "event_idx {event_idx}");
            dev.step();
            assert!(scmi.poll_done(&tk).unwrap(), "event_idx {event_idx}");
            finish(tk);
        }
        // Stepped as a polling device: after the first step (which still finds kicks asked
        // for), a send kicks nobody and a step serves it all the same.
        assert!(dev.set_sim_mode(SimMode::SteppedPolling));
        let tk = send();
        dev.step();
        assert!(scmi.poll_done(&tk).unwrap(), "event_idx {event_idx}");
        finish(tk);
        let quiet = dev.kicks();
        for _ in 0..3 {
            let tk = send();
            dev.step();
            assert!(scmi.poll_done(&tk).unwrap(), "event_idx {event_idx}");
            finish(tk);
        }
        assert_eq!(
            dev.kicks(),
            quiet,
            "event_idx {event_idx}: a device stepped as polling was kicked"
        );
        // And plain steps ask for kicks again.
        assert!(dev.set_sim_mode(SimMode::Stepped));
        let tk = send();
        dev.step();
        assert!(scmi.poll_done(&tk).unwrap(), "event_idx {event_idx}");
        finish(tk);
        let tk = send();
        assert_eq!(dev.kicks(), quiet + 1, "event_idx {event_idx}");
        dev.step();
        assert!(scmi.poll_done(&tk).unwrap(), "event_idx {event_idx}");
        finish(tk);
        assert!(dev.set_sim_mode(SimMode::Normal));
    }
}
