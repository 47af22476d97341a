//! The SCMI agent over the real virtio transport ([`ScmiVirtio`]) driving the simulated
//! virtio-scmi device, which hosts the simulated [`Platform`]: the whole stack, shared-memory
//! rings included.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fwipc_scmi_virtio::platform::{Platform, PlatformConfig};
use fwipc_scmi_virtio::protocol::ids::{proto, sensor};
use fwipc_scmi_virtio::protocol::notify::Notification;
use fwipc_scmi_virtio::protocol::sensor::SensorValue;
use fwipc_scmi_virtio::protocol::{Config, Filter, Scmi, ScmiError};
use fwipc_scmi_virtio::sim::{SimDevice, SimDeviceConfig, SimHal, SimScmi};
use fwipc_scmi_virtio::status::ScmiStatus;
use fwipc_scmi_virtio::virtio::{ScmiVirtio, ScmiVirtioConfig};
use fwipc_transport_api::{Error, ProtocolError, StdClock, Transport};

type VScmi = Scmi<SimScmi, StdClock>;

/// Agent + device (+ interrupt thread in interrupt mode). Field order: the thread stops first.
struct Stack {
    irq: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    scmi: Arc<VScmi>,
    dev: SimDevice,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some((stop, h)) = self.irq.take() {
            stop.store(true, Ordering::Relaxed);
            self.dev.irq_line().poke();
            let _ = h.join();
        }
        let _ = self.scmi.transport().shutdown();
    }
}

fn stack(pc: PlatformConfig, interrupt: bool, agent_cfg: Config) -> Stack {
    let dev = SimDevice::start(SimDeviceConfig::default(), move || {
        Box::new(Platform::new(pc.clone()))
    });
    let vcfg = ScmiVirtioConfig {
        cmdq_size: Some(64),
        eventq_size: Some(16),
        clock: Some(Arc::new(StdClock::new())),
        ..ScmiVirtioConfig::default()
    };
    let virtio = ScmiVirtio::<SimHal, _>::new(dev.transport(), vcfg).expect("virtio setup");
    let c = if interrupt {
        agent_cfg
    } else {
        agent_cfg.polled()
    };
    let scmi = Arc::new(Scmi::new(virtio, StdClock::new(), c).unwrap());
    let irq = interrupt.then(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, a2, line) = (stop.clone(), scmi.clone(), dev.irq_line());
        let h = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                if line.wait(Duration::from_millis(20)) {
                    a2.transport().complete();
                }
            }
        });
        (stop, h)
    });
    Stack { irq, scmi, dev }
}

#[test]
fn virtio_base_and_sensor_like_vhost_device_scmi() {
    for interrupt in [false, true] {
        let s = stack(PlatformConfig::vhost_device_scmi_like(1), interrupt, cfg());
        let scmi = &s.scmi;
        assert_eq!(scmi.base().vendor().unwrap(), "rust-vmm");
        assert_eq!(scmi.base().version().unwrap().major, 2);
        assert_eq!(
            scmi.base().protocols().unwrap().as_slice(),
            &[proto::SENSOR]
        );
        assert_eq!(
            scmi.base().discover_agent(0).unwrap_err(),
            ScmiError::Status(ScmiStatus::NotSupported)
        );
        let d = scmi.sensor().descriptions_vec().unwrap();
        assert_eq!((d.len(), d[0].num_axes()), (1, 3));
        scmi.sensor().set_enabled(0, true).unwrap();
        let mut v = [SensorValue::default(); 3];
        assert_eq!(scmi.sensor().reading_axes(0, &mut v).unwrap(), 3);
        assert_eq!(v[2].value - v[0].value, 200);
        assert_eq!(
            scmi.sensor()
                .axis_descriptions_vec(0, Some(3))
                .unwrap()
                .len(),
            3
        );
    }
}

#[test]
fn virtio_20_sensors_paginated_in_136_byte_buffers() {
    let s = stack(PlatformConfig::with_sensors(20), false, cfg());
    let before = s.scmi.transport().stats().sent;
    let d = s.scmi.sensor().descriptions_vec().unwrap();
    assert_eq!(d.len(), 20);
    assert!(s.scmi.transport().stats().sent - before - 2 >= 5);
}

#[test]
fn virtio_list_protocols_with_8_protocols() {
    let s = stack(PlatformConfig::full(), false, cfg());
    let l = s.scmi.base().protocols().unwrap();
    assert_eq!(l.as_slice().len(), 8);
    assert!(l.contains(proto::VOLTAGE) && l.contains(proto::POWER));
}

#[test]
fn virtio_delayed_responses_and_notifications_through_the_eventq() {
    for interrupt in [false, true] {
        let s = stack(PlatformConfig::full(), interrupt, cfg());
        let scmi = &s.scmi;
        let mut v = [SensorValue::default(); 1];
        assert_eq!(scmi.sensor().reading_async(0, &mut v).unwrap(), 1);
        assert_eq!(v[0].value, 45_000);
        assert_eq!(
            scmi.clock().rate_set_async(0, 800_000_000, 0).unwrap(),
            800_000_000
        );
        scmi.reset().reset_async(0, 0).unwrap();
        assert_eq!(scmi.voltage().level_set_async(0, 950_000).unwrap(), 950_000);
        assert_eq!(scmi.stats().delayed_responses, 4);

        let (log, cb) = recorder();
        scmi.subscribe(Filter::exact(proto::SENSOR, sensor::N_UPDATE), cb)
            .unwrap();
        let body: Vec<u8> = [0u32, 2, 7, 0, 0, 0]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        for _ in 0..3 {
            s.dev.queue_p2a(proto::SENSOR, sensor::N_UPDATE, &body);
        }
        let t0 = std::time::Instant::now();
        while log.lock().unwrap().len() < 3 {
            scmi.pump();
            assert!(t0.elapsed() < Duration::from_secs(5), "notifications lost");
            std::thread::yield_now();
        }
        for (p, m, b) in log.lock().unwrap().iter() {
            match Notification::decode_body(*p, *m, b).unwrap() {
                Notification::SensorUpdate(u) => {
                    assert_eq!((u.sensor_id, u.count), (2, 1));
                    assert_eq!(u.value(b, 0).unwrap().value, 7);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

#[test]
fn virtio_reply_with_wrong_message_id_is_rejected_and_counted() {
    let s = stack(
        PlatformConfig::full(),
        false,
        cfg().with_timeouts(Duration::from_millis(300), Duration::from_millis(300)),
    );
    let before = s.scmi.transport().stats();
    s.dev.set_header_xor(1);
    let e = s.scmi.base().vendor().unwrap_err();
    // Right token, wrong message id: the transport refuses the reply (docs/protocols/scmi.md §8
    // item 4).
    assert_eq!(
        e,
        ScmiError::Transport(Error::Protocol(ProtocolError::UnexpectedMessage))
    );
    let after = s.scmi.transport().stats();
    assert_eq!(after.protocol_errors, before.protocol_errors + 1);
    assert_eq!(after.completed, before.completed);
    s.dev.set_header_xor(0);
    assert_eq!(s.scmi.base().vendor().unwrap(), "fwipc");
}

#[test]
fn virtio_two_platforms_concurrently_without_cross_talk() {
    let mk = |vendor: &str| {
        let mut pc = PlatformConfig::full();
        pc.vendor = vendor.to_string();
        stack(pc, true, cfg())
    };
    let a = mk("alpha");
    let b = mk("beta");
    let mut hs = Vec::new();
    for (scmi, vendor) in [(a.scmi.clone(), "alpha"), (b.scmi.clone(), "beta")] {
        for _ in 0..2 {
            let s = scmi.clone();
            hs.push(std::thread::spawn(move || {
                for _ in 0..100 {
                    assert_eq!(s.base().vendor().unwrap(), vendor);
                    assert_eq!(s.perf().level_get(0).unwrap(), 600);
                    let mut v = [SensorValue::default(); 1];
                    s.sensor().reading_async(0, &mut v).unwrap();
                    assert!(v[0].value >= 45_000);
                }
            }));
        }
    }
    for h in hs {
        h.join().unwrap();
    }
    for s in [&a, &b] {
        let st = s.scmi.stats();
        assert_eq!(st.delayed_responses, 200);
        assert_eq!(st.unexpected_delayed, 0);
        assert_eq!(
            s.scmi.transport().stats().pool_free,
            s.scmi.transport().stats().pool_capacity
        );
    }
}

/// The async face under a real executor: 128 command futures at once, through the whole stack
/// (interrupt thread → `ScmiVirtio::complete` → the futures' wakers), more than the transport's
/// slots (32 messages), each reply checked against the synchronous API's.
#[test]
fn async_face_128_concurrent_futures_every_reply_checked() {
    let s = stack(PlatformConfig::full(), true, cfg());
    let scmi = s.scmi.clone();
    let (done, finished) = std::sync::mpsc::channel();
    // On its own thread: a lost wake-up leaves the executor asleep, which the watchdog below
    // turns into a failure instead of a hung test run.
    std::thread::spawn(move || {
        run_128_futures(&scmi);
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the futures did not all resolve (a panic above, or a lost wake-up)");
}

fn run_128_futures(scmi: &VScmi) {
    let vendor = scmi.base().vendor().unwrap();
    let clock_rate = scmi.clock().rate_get(0).unwrap();
    let power = scmi.power().state_get(0).unwrap();
    let perf = scmi.perf().level_get(0).unwrap();
    let volts = scmi.voltage().level_get(0).unwrap();
    let slots = scmi.transport().caps().max_msg;
    let f = scmi.futures();
    // The simulated sensor counts up by one per reading: each reply's value is its own.
    let readings = std::cell::RefCell::new(Vec::new());
    let futs = (0..128u32).map(|i| {
        let (f, vendor, readings) = (&f, &vendor, &readings);
        async move {
            match i % 6 {
                0 => assert_eq!(f.vendor().await.unwrap(), *vendor, "future {i}"),
                1 => assert_eq!(f.clock_rate(0).await.unwrap(), clock_rate, "future {i}"),
                2 => assert_eq!(f.power_state(0).await.unwrap(), power, "future {i}"),
                3 => assert_eq!(f.perf_level(0).await.unwrap(), perf, "future {i}"),
                4 => assert_eq!(f.voltage_level(0).await.unwrap(), volts, "future {i}"),
                _ => {
                    let mut v = [SensorValue::default(); 2];
                    let n = f.sensor_reading_axes(0, &mut v).await.unwrap();
                    assert_eq!(n, 1, "future {i}");
                    readings.borrow_mut().push(v[0].value);
                }
            }
        }
    });
    assert!(
        slots < 128,
        "the run must oversubscribe the transport ({slots} slots)"
    );
    futures::executor::block_on(futures::future::join_all(futs));
    let mut readings = readings.into_inner();
    readings.sort_unstable();
    let expected: Vec<i64> = (0..readings.len() as i64).map(|k| 45_000 + k).collect();
    assert_eq!(readings, expected, "one distinct reading per future");
    let st = scmi.transport().stats();
    assert_eq!(
        st.pool_free, st.pool_capacity,
        "every buffer back in the pool"
    );
    assert_eq!((st.timed_out, st.protocol_errors), (0, 0));
    // A status other than SUCCESS arrives typed, as from the synchronous API.
    let bad = futures::executor::block_on(f.power_state(9999)).unwrap_err();
    assert_eq!(bad, scmi.power().state_get(9999).unwrap_err());
    assert!(bad.status().is_some(), "{bad:?}");
}

/// A command future dropped while its transfer is in flight ends the transfer (no slot or
/// buffer leaks), and the agent keeps working.
#[test]
fn async_face_drop_while_pending_returns_the_slot() {
    use std::future::Future;
    use std::task::{Context, Waker};
    let s = stack(PlatformConfig::full(), true, cfg());
    let scmi = &s.scmi;
    let f = scmi.futures();
    let mut dropped = 0;
    for _ in 0..64 {
        let mut fut = Box::pin(f.clock_rate(0));
        // One poll sends the command; the reply needs the device thread and the interrupt.
        if fut
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
        {
            dropped += 1;
        }
        drop(fut);
    }
    assert!(
        dropped > 0,
        "no future was still pending after its first poll"
    );
    // Replies to the cancelled commands may still be on their way: give them time, then every
    // buffer must be back.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let cap = scmi.transport().stats().pool_capacity;
    while scmi.transport().stats().pool_free != cap && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        scmi.transport().stats().pool_free,
        cap,
        "a cancelled transfer leaked its buffer"
    );
    let rate = scmi.clock().rate_get(0).unwrap();
    assert_eq!(futures::executor::block_on(f.clock_rate(0)).unwrap(), rate);
}
