//! The fwipc SCMI backend, unmodified (`ScmiVirtio` + the typed `Scmi` agent), driving the real
//! vhost-device-scmi through the harness: discovery, sensors, volume, index wrap, P2A
//! notifications, unsupported commands, teardown and reconnect.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fwipc_scmi_virtio::protocol::notify::Notification;
use fwipc_scmi_virtio::protocol::{Event, Filter, ScmiError};
use fwipc_scmi_virtio::status::ScmiStatus;
use fwipc_scmi_virtio::virtio::{ScmiFeatures, ScmiVirtioConfig};
use fwipc_transport_api::{Completion, Error, Request, Ticket, Transport};

use common::backend::BackendFixture;
use common::scenarios::{
    self, counter_of, finish, le_words, BASE_PROTOCOL_VERSION, SENSOR_READING_GET,
};
use common::TIMEOUT;

fn start(mode: Completion) -> Option<BackendFixture> {
    BackendFixture::start(mode, ScmiVirtioConfig::default())
}

#[test]
fn backend_base_discovery() {
    let Some(fx) = start(Completion::Interrupt) else {
        return;
    };
    let base = fx.agent.base();
    let v = base.version().expect("version");
    assert_eq!((v.major, v.minor), (2, 0));
    let a = base.attributes().expect("attributes");
    assert_eq!((a.num_protocols, a.num_agents), (1, 0));
    assert_eq!(base.vendor().expect("vendor"), "rust-vmm");
    assert_eq!(base.implementation_version().expect("impl version"), 0);
    let list = base.protocols().expect("protocol list");
    assert_eq!(list.as_slice(), &[0x15], "exactly the sensor protocol");
    assert!(fx.chan().features().contains(ScmiFeatures::VERSION_1));
    assert!(fx.chan().features().contains(ScmiFeatures::P2A_CHANNELS));
}

#[test]
fn backend_sensor_description_config_reading() {
    let Some(fx) = start(Completion::Interrupt) else {
        return;
    };
    let s = fx.agent.sensor();
    assert_eq!(s.version().expect("version").major, 3);
    assert_eq!(s.attributes().expect("attributes").num_sensors, 1);
    let d = s.descriptions_vec().expect("descriptions");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].id, 0);
    assert_eq!(d[0].name, "acc0");
    assert_eq!((d[0].attributes_high >> 16) & 0x3f, 3, "three axes");
    assert_ne!(
        d[0].attributes_low & (1 << 30),
        0,
        "continuous update notify"
    );
    let axes = s
        .axis_descriptions_vec(0, Some((d[0].attributes_high >> 16) & 0x3f))
        .expect("axis descriptions");
    assert_eq!(axes.len(), 3);
    assert_eq!(axes.iter().map(|a| a.id).collect::<Vec<_>>(), [0, 1, 2]);
    // Disabled until configured: a reading is refused with a typed status.
    assert_eq!(s.config_get(0).expect("config") & 1, 0);
    assert_eq!(
        s.reading(0).err(),
        Some(ScmiError::Status(ScmiStatus::InvalidParameters))
    );
    s.set_enabled(0, true).expect("enable");
    assert_eq!(s.config_get(0).expect("config") & 1, 1);
    let mut v = [Default::default(); 3];
    for n in 0..5i64 {
        assert_eq!(s.reading_axes(0, &mut v).expect("reading"), 3);
        assert_eq!(
            [v[0].value, v[1].value, v[2].value],
            [n, 100 + n, 200 + n],
            "fake accelerometer reading {n}"
        );
    }
}

#[test]
fn backend_1000_sequential_commands() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let Some(fx) = start(mode) else { return };
        let start = Instant::now();
        // Through the typed agent, whose requests use the fixture's completion mode (interrupt:
        // completed by the irq thread; polled: the waiting caller drains the cmdq).
        for i in 0..1000 {
            let v = fx
                .agent
                .base()
                .version()
                .unwrap_or_else(|e| panic!("{mode:?} #{i}: {e}"));
            assert_eq!(v.word(), 0x20000);
        }
        eprintln!(
            "{mode:?}: 1000 sequential commands in {:?}",
            start.elapsed()
        );
        let s = fx.chan().stats();
        assert!(s.completed >= 1000, "{s:?}");
        assert_eq!((s.protocol_errors, s.unknown_replies), (0, 0), "{s:?}");
        assert_eq!(s.pool_free, s.pool_capacity);
    }
}

#[test]
fn backend_pipelined_commands() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let Some(fx) = start(mode) else { return };
        let c0 = scenarios::enable_sensor(&fx);
        let t = fx.chan();
        let payload = le_words(&[0, 0]);
        let batch = t.max_msg();
        assert!(
            batch >= 256,
            "a 1024-entry cmdq carries 512 messages, got {batch}"
        );
        let mut n = 0usize;
        for round in 0..3 {
            let tickets: Vec<Ticket> = (0..batch)
                .map(|i| {
                    t.send(&scenarios::request(&fx, SENSOR_READING_GET, &payload))
                        .unwrap_or_else(|e| panic!("{mode:?} round {round} send {i}: {e}"))
                })
                .collect();
            for (i, tk) in tickets.into_iter().enumerate() {
                let r = finish(&fx, tk).unwrap_or_else(|e| panic!("{mode:?} #{i}: {e}"));
                n += 1;
                assert_eq!(
                    counter_of(&r),
                    c0.wrapping_add(n as u8),
                    "{mode:?}: pipelined reply {i} of round {round}"
                );
            }
        }
        assert!(n >= 1000);
        scenarios::assert_pool_full(&fx, "after pipelining");
    }
}

#[test]
fn backend_ring_index_wrap() {
    // 66 000 sequential commands: the cmdq's avail and used indices (u16) wrap. The backend
    // negotiates VIRTIO_F_RING_EVENT_IDX by default; pipelined batches across the wrap, in both
    // completion modes, are `daemon_event_idx::backend_event_idx_across_u16_wrap`.
    let Some(fx) = start(Completion::Polled) else {
        return;
    };
    let t = fx.chan();
    let payload = [];
    let mut out = [0u8; 16];
    let start = Instant::now();
    for i in 0..66_000u32 {
        let tk = t
            .send(&Request::new(BASE_PROTOCOL_VERSION, &payload).polled())
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
        let deadline = Instant::now() + TIMEOUT;
        while !t.poll_done(&tk).unwrap_or_else(|e| panic!("poll {i}: {e}")) {
            assert!(Instant::now() < deadline, "reply {i} deadline");
            std::hint::spin_loop();
        }
        let n = t.fetch_response(&tk, &mut out);
        t.mark_txdone(tk, fwipc_transport_api::TxOutcome::Done);
        assert_eq!(n, Ok(4), "reply {i}");
        assert_eq!(out[..4], 0x20000u32.to_le_bytes());
    }
    eprintln!("66000 polled commands in {:?}", start.elapsed());
    let s = t.stats();
    assert_eq!(s.protocol_errors, 0, "{s:?}");
    assert_eq!(s.pool_free, s.pool_capacity);
}

#[test]
fn backend_p2a_sensor_notification() {
    let Some(fx) = start(Completion::Interrupt) else {
        return;
    };
    assert!(fx.chan().features().contains(ScmiFeatures::P2A_CHANNELS));
    assert!(fx.chan().eventq_posted() > 0, "eventq buffers posted");
    let got: Arc<Mutex<Vec<[i64; 3]>>> = Arc::default();
    let sink = got.clone();
    fx.agent
        .subscribe(
            Filter::exact(0x15, 0x1),
            Arc::new(move |ev: &Event<'_>| {
                if let Ok(Notification::SensorUpdate(u)) = Notification::decode(ev) {
                    assert_eq!((u.agent_id, u.sensor_id, u.count), (0, 0, 3));
                    let v: Vec<i64> = (0..3)
                        .map(|i| u.value(ev.payload, i).expect("axis value").value)
                        .collect();
                    sink.lock().unwrap().push([v[0], v[1], v[2]]);
                }
            }),
        )
        .expect("subscribe");
    let s = fx.agent.sensor();
    s.set_enabled(0, true).expect("enable");
    s.continuous_update_notify(0, true).expect("notify on");
    // Nothing before the trigger.
    std::thread::sleep(Duration::from_millis(50));
    fx.agent.pump();
    assert!(
        got.lock().unwrap().is_empty(),
        "no notification before the trigger"
    );
    fx.daemon().trigger_notification().expect("trigger");
    let deadline = Instant::now() + TIMEOUT;
    while got.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "SENSOR_UPDATE never arrived");
        fx.agent.pump();
        std::thread::sleep(Duration::from_millis(1));
    }
    let v = got.lock().unwrap().clone();
    // Every update is a fresh reading of the fake sensor: x, x+100, x+200, and consecutive
    // updates carry consecutive counters (the daemon fills buffers LIFO, the backend delivers
    // them in used-ring order, which is the order the daemon produced them).
    for r in &v {
        assert_eq!([r[1], r[2]], [r[0] + 100, r[0] + 200], "{v:?}");
    }
    for p in v.windows(2) {
        assert_eq!(p[1][0], (p[0][0] + 1) & 0xff, "delivered in order: {v:?}");
    }
    assert!(fx.agent.stats().notifications >= 3);
}

#[test]
fn backend_unsupported_command_is_typed_error() {
    let Some(fx) = start(Completion::Interrupt) else {
        return;
    };
    let base = fx.agent.base();
    assert_eq!(
        base.discover_agent(0).err(),
        Some(ScmiError::Status(ScmiStatus::NotSupported)),
        "BASE_DISCOVER_AGENT"
    );
    assert_eq!(
        base.sub_vendor().err(),
        Some(ScmiError::Status(ScmiStatus::NotSupported)),
        "BASE_DISCOVER_SUB_VENDOR"
    );
    // At the transport level it is `Error::Remote(NOT_SUPPORTED)`, raw code kept.
    assert_eq!(
        scenarios::command(&fx, scenarios::target(0x13, 0x0), &[]),
        Err(Error::Remote(-1)),
        "an unimplemented protocol (performance)"
    );
    // And the channel keeps working.
    assert_eq!(base.version().expect("version").word(), 0x20000);
}

#[test]
fn backend_teardown_and_reconnect() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let Some(fx) = start(mode) else { return };
        assert_eq!(
            scenarios::command(&fx, BASE_PROTOCOL_VERSION, &[]),
            Ok(0x20000u32.to_le_bytes().to_vec())
        );
        let t = fx.chan();
        t.shutdown().expect("shutdown");
        assert_eq!(t.shutdown(), Ok(()), "idempotent");
        assert_eq!(
            scenarios::command(&fx, BASE_PROTOCOL_VERSION, &[]),
            Err(Error::Shutdown)
        );
        scenarios::assert_pool_full(&fx, "after shutdown");
        drop(fx);
        // A fresh daemon and channel.
        let fx = start(mode).expect("daemon available");
        assert_eq!(fx.agent.base().vendor().expect("vendor"), "rust-vmm");
    }
}

#[test]
fn backend_two_channels_side_by_side() {
    // No global state in the backend: two devices, two channels, driven at once.
    let (Some(a), Some(b)) = (start(Completion::Interrupt), start(Completion::Polled)) else {
        return;
    };
    let ca = scenarios::enable_sensor(&a);
    let cb = scenarios::enable_sensor(&b);
    std::thread::scope(|s| {
        let ha = s.spawn(|| (0..200).map(|_| scenarios::reading(&a)).collect::<Vec<_>>());
        let hb = s.spawn(|| (0..200).map(|_| scenarios::reading(&b)).collect::<Vec<_>>());
        let ra = ha.join().unwrap();
        let rb = hb.join().unwrap();
        for (i, (x, y)) in ra.iter().zip(&rb).enumerate() {
            assert_eq!(*x, ca.wrapping_add(1 + i as u8), "device A counter");
            assert_eq!(*y, cb.wrapping_add(1 + i as u8), "device B counter");
        }
    });
}

#[test]
fn backend_reconnect_same_daemon() {
    // The daemon serves one front-end at a time and builds a fresh device after a clean
    // disconnect: a channel can be torn down and a new one connected to the same daemon.
    let Some(d) = common::daemon(&["acc0"]) else {
        return;
    };
    for round in 0..3 {
        let vt = harness_vhost_user::VhostUserTransport::connect(
            d.socket(),
            harness_vhost_user::shared_memory(),
            TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("round {round}: connect: {e}"));
        let chan = common::backend::Chan::new(vt, ScmiVirtioConfig::default())
            .unwrap_or_else(|e| panic!("round {round}: ScmiVirtio::new: {e}"));
        let mut out = [0u8; 16];
        let n = fwipc_transport_api::call(
            &chan,
            &fwipc_transport_api::StdClock::new(),
            &Request::new(BASE_PROTOCOL_VERSION, &[]).polled(),
            &mut out,
            TIMEOUT,
            fwipc_transport_api::Wait::Poll,
        );
        assert_eq!(n, Ok(4), "round {round}");
        assert_eq!(out[..4], 0x20000u32.to_le_bytes());
        chan.shutdown().expect("shutdown");
        chan.with_transport(|t| assert!(t.error().is_none(), "round {round}: {:?}", t.error()));
    }
}

#[test]
fn backend_p2a_notification_polled() {
    // No interrupt thread: the P2A path must also work by polling `fetch_notification`.
    let Some(fx) = start(Completion::Polled) else {
        return;
    };
    let t = fx.chan();
    for (msg, what) in [(0xA, "enable"), (0xB, "notify on")] {
        assert!(
            scenarios::command(&fx, scenarios::target(0x15, msg), &[0, 1]).is_ok(),
            "{what}"
        );
    }
    let mut buf = [0u8; 128];
    assert_eq!(
        t.fetch_notification(&mut buf),
        Ok(None),
        "nothing before the trigger"
    );
    fx.daemon().trigger_notification().expect("trigger");
    let deadline = Instant::now() + TIMEOUT;
    let mut xs = Vec::new();
    while xs.len() < 4 {
        assert!(Instant::now() < deadline, "SENSOR_UPDATE never fetched");
        match t.fetch_notification(&mut buf).expect("fetch_notification") {
            Some(n) => {
                // source = raw header (SENSOR_UPDATE: protocol 0x15, message 1, type 3).
                assert_eq!(n.source & 0x3_ffff, 0x5701, "{:#x}", n.source);
                assert_eq!(n.len, 56, "agent, sensor, 3 axes x 16 bytes");
                let w: Vec<u32> = buf[..n.len]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                assert_eq!((w[0], w[1]), (0, 0), "agent 0, sensor 0");
                assert_eq!((w[6], w[10]), (w[2] + 100, w[2] + 200));
                xs.push(w[2]);
            }
            None => std::thread::yield_now(),
        }
    }
    for p in xs.windows(2) {
        assert_eq!(
            p[1],
            (p[0] + 1) & 0xff,
            "notifications delivered in order: {xs:?}"
        );
    }
}

/// The daemon dies while the typed agent waits for a reply: the front-end sees the socket hang
/// up, so the waiting call fails with `Cancelled` and later calls with `Shutdown`, each well
/// before the agent's timeout, and the vhost-user transport says why (`Disconnected`).
#[test]
fn backend_dead_daemon_fails_calls_fast_with_a_distinct_error() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let Some(fx) = start(mode) else { return };
        assert_eq!(fx.agent.base().vendor().expect("vendor"), "rust-vmm");
        fx.daemon().pause().expect("SIGSTOP daemon");
        let sent = fx.chan().stats().sent;
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let start = Instant::now();
                (fx.agent.base().version().map(|v| v.word()), start.elapsed())
            });
            let deadline = Instant::now() + TIMEOUT;
            while fx.chan().stats().sent == sent {
                assert!(
                    Instant::now() < deadline,
                    "{mode:?}: the call was never sent"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            fx.daemon().kill().expect("kill daemon");
            let (r, took) = waiter.join().expect("waiter panicked");
            assert_eq!(
                r,
                Err(ScmiError::Transport(Error::Cancelled)),
                "{mode:?}: in-flight call"
            );
            assert!(
                took < TIMEOUT / 2,
                "{mode:?}: in-flight call took {took:?} (timeout {TIMEOUT:?})"
            );
        });
        let start = Instant::now();
        assert_eq!(
            fx.agent.base().version().map(|v| v.word()),
            Err(ScmiError::Transport(Error::Shutdown)),
            "{mode:?}: a call after the daemon died"
        );
        assert!(start.elapsed() < Duration::from_millis(500), "{mode:?}");
        fx.chan().with_transport(|t| {
            assert!(t.peer_gone(), "{mode:?}");
            // The process is gone (killed and reaped): a reset is confirmed.
            assert!(t.peer_exited(), "{mode:?}");
            use virtio_drivers::transport::{DeviceStatus, Transport as _};
            t.set_status(DeviceStatus::empty());
            assert!(t.get_status().is_empty(), "{mode:?}: reset not confirmed");
            assert!(
                matches!(
                    t.error(),
                    Some(harness_vhost_user::VhostUserTransportError::Disconnected)
                ),
                "{mode:?}: {:?}",
                t.error()
            );
        });
        scenarios::assert_pool_full(&fx, "after the daemon died");
    }
}
