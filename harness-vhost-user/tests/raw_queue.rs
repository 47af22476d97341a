//! The harness itself (MemfdHal + VhostUserTransport) proven with a raw `VirtQueue` SCMI driver
//! against the real `vhost-device-scmi`, independently of the fwipc SCMI backend.

mod common;

use std::time::{Duration, Instant};

use common::raw::*;
use common::TIMEOUT;
use virtio_drivers::transport::Transport;

#[test]
fn raw_base_discovery() {
    let d = require_daemon!(&["acc0"]);
    let mut s = RawScmi::new(&d, Features::VERSION_1);
    let r = s.call(BASE, 0x0, &[]);
    assert_eq!(
        (r.status, r.words[0]),
        (0, 0x20000),
        "base PROTOCOL_VERSION"
    );
    let r = s.call(BASE, 0x1, &[]);
    assert_eq!(r.status, 0);
    assert_eq!(r.words[0] & 0xff, 1, "one protocol besides base");
    let r = s.call(BASE, 0x3, &[]);
    assert_eq!((r.status, name16(&r.bytes[..16]).as_str()), (0, "rust-vmm"));
    let r = s.call(BASE, 0x6, &[0]);
    assert_eq!(r.status, 0);
    assert_eq!(r.words[0], 1, "number of protocols listed");
    assert_eq!(r.words[1] & 0xff, 0x15, "sensor protocol listed");
    assert!(s.cmd_signals > 0, "the daemon signalled the call eventfd");
}

#[test]
fn raw_sensor_description_config_reading() {
    // One fake sensor per daemon: every `fake` device registers fd 1 with the daemon's epoll, and
    // a second registration panics at start-up (EEXIST).
    let d = require_daemon!(&["acc0"]);
    let mut s = RawScmi::new(&d, Features::VERSION_1);
    let r = s.call(SENSOR, 0x0, &[]);
    assert_eq!(
        (r.status, r.words[0]),
        (0, 0x30000),
        "sensor PROTOCOL_VERSION"
    );
    let r = s.call(SENSOR, 0x1, &[]);
    assert_eq!((r.status, r.words[0] & 0xffff), (0, 1), "one sensor");
    let r = s.call(SENSOR, 0x3, &[0]);
    assert_eq!(r.status, 0);
    assert_eq!(r.words[0] & 0xfff, 1, "one descriptor returned");
    assert_eq!(r.words[0] >> 16, 0, "none remaining");
    assert_eq!(r.words[1], 0, "sensor id");
    assert_eq!((r.words[3] >> 16) & 0xf, 3, "three axes");
    assert_eq!(name16(&r.bytes[4 + 12..4 + 28]), "acc0");
    // Past the end.
    assert_eq!(s.call(SENSOR, 0x3, &[1]).status, INVALID_PARAMETERS);
    // Disabled until configured.
    assert_eq!(s.call(SENSOR, 0x6, &[0, 0]).status, INVALID_PARAMETERS);
    assert_eq!(s.call(SENSOR, 0x9, &[0]).words[0] & 1, 0);
    assert_eq!(s.call(SENSOR, 0xA, &[0, 1]).status, 0);
    assert_eq!(s.call(SENSOR, 0x9, &[0]).words[0] & 1, 1);
    // Asynchronous reads are not supported.
    assert_eq!(s.call(SENSOR, 0x6, &[0, 1]).status, NOT_SUPPORTED);
    for n in 0..3u32 {
        let r = s.call(SENSOR, 0x6, &[0, 0]);
        assert_eq!(r.status, 0);
        let axes: Vec<u32> = r.words.chunks(4).map(|a| a[0]).collect();
        assert_eq!(axes, [n, 100 + n, 200 + n], "fake accelerometer values");
    }
}

#[test]
fn raw_unsupported_command() {
    let d = require_daemon!(&["acc0"]);
    let mut s = RawScmi::new(&d, Features::VERSION_1);
    // DISCOVER_AGENT and an unknown protocol.
    assert_eq!(s.call(BASE, 0x7, &[0]).status, NOT_SUPPORTED);
    assert_eq!(s.call(0x13, 0x0, &[]).status, NOT_SUPPORTED);
    assert_eq!(s.call(BASE, 0x0, &[]).status, 0, "still serving");
}

#[test]
fn raw_pipelined_batches() {
    let d = require_daemon!(&["acc0"]);
    let mut s = RawScmi::new(&d, Features::VERSION_1 | Features::RING_EVENT_IDX);
    const N: usize = 32;
    let mut reqs: Vec<Vec<u8>> = Vec::with_capacity(N);
    let mut resps = vec![[0u8; 16]; N];
    for round in 0..40 {
        reqs.clear();
        for _ in 0..N {
            let t = s.token();
            reqs.push(encode(BASE, 0x0, t, &[]));
        }
        let mut ids = Vec::with_capacity(N);
        for (req, resp) in reqs.iter().zip(resps.iter_mut()) {
            // SAFETY: both buffers outlive the pop_used below.
            ids.push(unsafe { s.cmdq.add(&[req], &mut [&mut resp[..]]) }.unwrap());
        }
        // Always kick after a batch: virtio-drivers' `should_notify` is not wrap-safe for
        // batches (docs/protocols/virtio.md §4 pitfall 10), and a spare kick is harmless.
        s.transport.notify(CMDQ);
        let deadline = Instant::now() + TIMEOUT;
        for (i, id) in ids.into_iter().enumerate() {
            s.wait_cmdq(deadline);
            // SAFETY: same buffers as added for `id`.
            let len = unsafe { s.cmdq.pop_used(id, &[&reqs[i]], &mut [&mut resps[i][..]]) }
                .unwrap_or_else(|e| panic!("round {round} #{i}: {e:?}"));
            assert_eq!(len, 12);
            assert_eq!(
                &resps[i][..4],
                &reqs[i][..4],
                "FIFO: reply i is for request i"
            );
            assert_eq!(words(&resps[i][4..12]), [0, 0x20000]);
        }
    }
}

#[test]
fn raw_event_idx_across_u16_wrap() {
    let d = require_daemon!(&["acc0"]);
    let mut s = RawScmi::new(&d, Features::VERSION_1 | Features::RING_EVENT_IDX);
    assert!(s.features.contains(Features::RING_EVENT_IDX));
    let mut req = encode(BASE, 0x0, 0, &[]);
    let mut resp = [0u8; 12];
    let start = Instant::now();
    // 66 000 > 65 536: both avail and used indices wrap once. One request in flight, kicks decided
    // by `should_notify` (EVENT_IDX avail_event), waits on the call eventfd (used_event).
    // The last requests (after both wraps) must each be announced by a used-buffer signal.
    const N: u32 = 66_000;
    const STRICT_FROM: u32 = 65_900;
    for i in 0..N {
        if i >= STRICT_FROM {
            s.clear_signals();
        }
        req[..4].copy_from_slice(&header(BASE, 0, (i & 0x3ff) as u16).to_le_bytes());
        // SAFETY: both buffers outlive the pop_used below.
        let id = unsafe { s.cmdq.add(&[&req], &mut [&mut resp]) }.unwrap();
        if s.cmdq.should_notify() {
            s.transport.notify(CMDQ);
        }
        if i >= STRICT_FROM {
            s.wait_cmdq_signalled(Instant::now() + TIMEOUT);
        } else {
            s.wait_cmdq(Instant::now() + TIMEOUT);
        }
        // SAFETY: same buffers as added for `id`.
        let len = unsafe { s.cmdq.pop_used(id, &[&req], &mut [&mut resp]) }.unwrap();
        assert_eq!(len, 12, "request {i}");
        assert_eq!(resp[..4], req[..4], "request {i}");
    }
    assert!(s.cmd_signals >= u64::from(N - STRICT_FROM));
    eprintln!("{N} requests in {:?}", start.elapsed());
}

#[test]
fn raw_p2a_sensor_notification() {
    let mut d = require_daemon!(&["acc0"]);
    let mut s = RawScmi::new(
        &d,
        Features::VERSION_1 | Features::P2A_CHANNELS | Features::RING_EVENT_IDX,
    );
    assert!(s.features.contains(Features::P2A_CHANNELS));
    assert_eq!(s.call(SENSOR, 0xA, &[0, 1]).status, 0, "enable");
    assert_eq!(s.call(SENSOR, 0xB, &[0, 1]).status, 0, "notify on");
    let mut bufs = vec![[0u8; EVENT_LEN]; 2];
    // SAFETY: `bufs` lives until the end of the test and is only touched through pop_event.
    let ids = unsafe { s.post_events(&mut bufs) };
    assert!(
        s.wait_event(Duration::from_millis(100)).is_none(),
        "no event before the trigger"
    );
    d.trigger_notification().unwrap();
    // vhost-device-scmi keeps posted event buffers in a Vec and takes the *last* one first, so
    // eventq buffers complete out of order: a driver must match them by descriptor id.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let id = s
            .wait_event(TIMEOUT)
            .expect("SENSOR_UPDATE within the deadline");
        let i = ids.iter().position(|&x| x == id).expect("a posted buffer");
        // SAFETY: `bufs[i]` was posted as `ids[i]` and not popped yet.
        let len = unsafe { s.pop_event(id, &mut bufs[i]) };
        assert_eq!(len, 60);
        let w = words(&bufs[i][..len]);
        assert_eq!(w[0], 0x5701, "SENSOR_UPDATE: protocol 0x15, msg 1, type 3");
        assert_eq!((w[1], w[2]), (0, 0), "agent 0, sensor 0");
        // Each update is a fresh reading: the counter advances per reading.
        seen.push([w[3], w[7], w[11]]);
    }
    assert_eq!(
        seen,
        [[0, 100, 200], [1, 101, 201]],
        "x/y/z values in order"
    );
    // The daemon keeps writing event buffers while the pipe is readable, even after the rings
    // are stopped: kill it before the queue memory goes back to the pool.
    d.kill().unwrap();
    drop(s);
}

#[test]
fn raw_teardown_and_reconnect() {
    let d = require_daemon!(&["acc0"]);
    {
        let mut s = RawScmi::new(&d, Features::VERSION_1);
        assert_eq!(s.call(BASE, 0x0, &[]).status, 0);
        // Reset with the rings running: GET_VRING_BASE stops them.
        s.transport
            .set_status(virtio_drivers::transport::DeviceStatus::empty());
        assert!(s.transport.error().is_none(), "{:?}", s.transport.error());
    }
    // Same daemon, new connection: it rebuilds its backend after a clean disconnect.
    let mut s = RawScmi::new(&d, Features::VERSION_1);
    assert_eq!(s.call(BASE, 0x3, &[]).status, 0);
    drop(s);
    drop(d);
    // A fresh daemon works too.
    let d2 = require_daemon!(&["acc9"]);
    let mut s = RawScmi::new(&d2, Features::VERSION_1);
    let r = s.call(SENSOR, 0x3, &[0]);
    assert_eq!(name16(&r.bytes[4 + 12..4 + 28]), "acc9");
    drop(s);
}

#[test]
fn raw_paused_daemon_holds_requests() {
    let mut d = require_daemon!(&["acc0"]);
    let mut s = RawScmi::new(&d, Features::VERSION_1);
    assert_eq!(s.call(BASE, 0x0, &[]).status, 0);
    d.pause().unwrap();
    let req = encode(BASE, 0x0, 7, &[]);
    let mut resp = [0u8; 12];
    s.clear_signals();
    // SAFETY: both buffers outlive the pop_used below.
    let id = unsafe { s.cmdq.add(&[&req], &mut [&mut resp]) }.unwrap();
    s.transport.notify(CMDQ);
    assert!(
        !s.transport
            .wait_call(CMDQ, Duration::from_millis(150))
            .unwrap(),
        "a frozen daemon answered"
    );
    assert!(!s.cmdq.can_pop());
    d.resume().unwrap();
    s.wait_cmdq_signalled(Instant::now() + TIMEOUT);
    // SAFETY: same buffers as added for `id`.
    let len = unsafe { s.cmdq.pop_used(id, &[&req], &mut [&mut resp]) }.unwrap();
    assert_eq!(len, 12);
    assert_eq!(words(&resp), [header(BASE, 0, 7), 0, 0x20000]);
}

#[test]
fn daemon_guard_kills_and_reaps() {
    let mut d = require_daemon!(&["acc0"]);
    assert!(d.is_alive(), "alive with a live stdout pipe:\n{}", d.log());
    let proc_dir = std::path::PathBuf::from(format!("/proc/{}", d.pid()));
    let sock = d.socket().to_path_buf();
    assert!(proc_dir.exists() && sock.exists());
    drop(d);
    assert!(
        !proc_dir.exists(),
        "daemon process gone (killed and reaped)"
    );
    assert!(!sock.exists(), "socket directory removed");
}

#[test]
fn daemon_rejects_unnamed_sensor() {
    // A nameless `fake` sensor kills the daemon's worker on SENSOR_DESCRIPTION_GET; the harness
    // refuses to start one.
    assert!(matches!(
        harness_vhost_user::Daemon::spawn(&[""], TIMEOUT),
        Err(harness_vhost_user::DaemonError::BadSensorName(_))
    ));
    assert!(matches!(
        harness_vhost_user::Daemon::spawn(&["a-name-longer-than-15"], TIMEOUT),
        Err(harness_vhost_user::DaemonError::BadSensorName(_))
    ));
    assert!(matches!(
        harness_vhost_user::Daemon::spawn(&["a", "b"], TIMEOUT),
        Err(harness_vhost_user::DaemonError::TooManyFakeSensors)
    ));
}

#[test]
fn raw_frozen_daemon_reset_is_bounded() {
    let mut d = require_daemon!(&["acc0"]);
    let mut s = RawScmi::new(&d, Features::VERSION_1);
    assert_eq!(s.call(BASE, 0x0, &[]).status, 0);
    d.pause().unwrap();
    s.transport.set_reply_timeout(Duration::from_millis(200));
    let t0 = Instant::now();
    // GET_VRING_BASE gets no answer: the watchdog disconnects after the reply timeout.
    s.transport
        .set_status(virtio_drivers::transport::DeviceStatus::empty());
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(2), "reset took {took:?}");
    assert!(s.transport.error().is_some(), "the failure is recorded");
    // The socket is shut down but the daemon is only frozen: it still maps the memory, so the
    // reset is not confirmed.
    assert!(s.transport.peer_gone());
    assert!(!s.transport.peer_exited());
    assert!(s
        .transport
        .get_status()
        .contains(virtio_drivers::transport::DeviceStatus::DEVICE_NEEDS_RESET));
    drop(s);
    // Killed while frozen (Drop): it never touches the memory again.
    drop(d);
}

#[test]
fn raw_malformed_chain_wedges_daemon_worker() {
    // Daemon pitfall, reproduced: a cmdq chain that is not exactly [readable request, writable
    // response] makes the worker thread exit silently; nothing is answered afterwards. Every wait
    // therefore needs a deadline, and a driver must never build such chains.
    let d = require_daemon!(&["acc0"]);
    let mut s = RawScmi::new(&d, Features::VERSION_1);
    assert_eq!(s.call(SENSOR, 0x9, &[0]).status, 0);
    let hdr = header(SENSOR, 0x9, 1).to_le_bytes();
    let param = 0u32.to_le_bytes();
    let mut resp = [0u8; 16];
    s.clear_signals();
    // SAFETY: the buffers outlive the queue (the chain is never popped; the reset in Drop stops
    // the ring first).
    unsafe { s.cmdq.add(&[&hdr, &param], &mut [&mut resp]) }.unwrap();
    s.transport.notify(CMDQ);
    assert!(
        !s.transport
            .wait_call(CMDQ, Duration::from_millis(300))
            .unwrap(),
        "a split request was answered"
    );
    assert!(!s.cmdq.can_pop());
    // The process lives on, the device is dead.
    let mut d = d;
    assert!(d.is_alive(), "the daemon process survives its worker");
    d.kill().unwrap();
    drop(s);
}
