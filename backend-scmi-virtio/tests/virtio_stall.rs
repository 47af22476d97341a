//! A device that goes quiet without signalling anything (no `DEVICE_NEEDS_RESET`, no used
//! element), and a reset that is never confirmed: both are bounded on the configured clock
//! (`ScmiVirtioConfig::stall_timeout`, `ScmiVirtioConfig::reset_timeout`), not waited out per
//! call or counted in spins (docs/reliability.md, invariants 4 and 6).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fwipc_scmi_virtio::sim::{EchoPlatform, SimDevice, SimDeviceConfig, SimHal, SimTransport};
use fwipc_scmi_virtio::virtio::{ScmiVirtio, ScmiVirtioConfig, ScmiVirtioError};
use fwipc_transport_api::fixture::{Fault, RemoteControl};
use fwipc_transport_api::{
    call, Clock, Error, ManualClock, Request, StdClock, ThreadParker, Transport, TxOutcome, Wait,
};

mod common;
use common::{echo_on, inverted, ECHO};

fn channel(
    dev: &SimDevice,
    clock: Arc<dyn Clock + Send + Sync>,
    cfg: ScmiVirtioConfig,
) -> ScmiVirtio<SimHal, SimTransport> {
    let cfg = ScmiVirtioConfig {
        clock: Some(clock),
        ..cfg
    };
    ScmiVirtio::<SimHal, _>::new(dev.transport(), cfg).expect("device setup")
}

/// A device that stops consuming: the call in flight (30 s timeout) ends with `Cancelled` once
/// nothing came back for `stall_timeout`, later sends fail with `Shutdown` at once, and the
/// buffers the device holds stay quarantined even after it wakes up again.
#[test]
fn stalled_device_fails_the_call_in_flight_and_later_calls_fast() {
    let dev = SimDevice::start(SimDeviceConfig::default(), || Box::new(EchoPlatform::new()));
    let clock = Arc::new(StdClock::new());
    let cfg = ScmiVirtioConfig {
        // Far above a loaded machine's scheduling delays, far below the call's timeout.
        stall_timeout: Some(Duration::from_secs(1)),
        ..ScmiVirtioConfig::default()
    };
    let scmi = channel(&dev, clock.clone(), cfg);
    assert_eq!(echo_on(&scmi, b"alive").unwrap(), inverted(b"alive"));
    let posted = scmi.eventq_posted() as u64;
    assert!(posted > 0);
    dev.set_stop_consuming(true);
    // An interrupt-mode request in `Wait::Completion`: nothing polls the ring for it and no
    // interrupt comes; its waiter re-polls at least every 100 ms and sees the stall.
    let parker = ThreadParker::new();
    let mut out = [0u8; 16];
    let start = Instant::now();
    let r = call(
        &scmi,
        &*clock,
        &Request::new(ECHO, b"hung"),
        &mut out,
        Duration::from_secs(30),
        Wait::Completion(&parker),
    );
    let took = start.elapsed();
    assert_eq!(r, Err(Error::Cancelled));
    assert!(
        took < Duration::from_secs(10),
        "failed fast, not at the timeout: {took:?}"
    );
    assert_eq!(scmi.failure(), Some(ScmiVirtioError::DeviceStalled));
    let start = Instant::now();
    assert_eq!(
        scmi.send(&Request::new(ECHO, b"later").polled()).err(),
        Some(Error::Shutdown)
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    // The held request buffer and the posted eventq buffers are quarantined, never reused.
    assert_eq!(scmi.quarantined_buffers(), 1 + posted);
    let s = scmi.stats();
    assert_eq!(s.pool_free, s.pool_capacity - 1);
    // The device wakes up: its late writes land in quarantined memory; nothing comes back.
    dev.set_stop_consuming(false);
    assert_eq!(scmi.shutdown(), Ok(()));
    let s = scmi.stats();
    assert_eq!(
        s.pool_free,
        s.pool_capacity - 1,
        "still quarantined after shutdown"
    );
}

/// Only a device that holds requests and returns nothing for the whole `stall_timeout` is
/// stalled: one that holds a request forever (`Fault::Drop`) but keeps answering others is
/// merely slow, however long that goes on. Deterministic on a `ManualClock`.
#[test]
fn a_device_that_keeps_answering_is_never_stalled() {
    let dev = SimDevice::start(SimDeviceConfig::default(), || Box::new(EchoPlatform::new()));
    let clock = Arc::new(ManualClock::new());
    let cfg = ScmiVirtioConfig {
        interrupts: false,
        stall_timeout: Some(Duration::from_secs(5)),
        ..ScmiVirtioConfig::default()
    };
    let scmi = channel(&dev, clock.clone(), cfg);
    dev.set_fault(Fault::Drop);
    let swallowed = scmi.send(&Request::new(ECHO, b"lost").polled()).unwrap();
    let start = Instant::now();
    while dev.received() < 1 {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1));
    }
    dev.set_fault(Fault::None);
    scmi.mark_txdone(swallowed, TxOutcome::TimedOut);
    // 10 s with a request held all along, but an answer every 2 s.
    for i in 0..5u8 {
        clock.advance(Duration::from_secs(2));
        assert_eq!(echo_on(&scmi, &[i; 4]).unwrap(), inverted(&[i; 4]));
    }
    assert_eq!(scmi.failure(), None);
    // Now it stops: stalled exactly when 5 s pass with nothing returned.
    dev.set_stop_consuming(true);
    let tk = scmi.send(&Request::new(ECHO, b"hung").polled()).unwrap();
    assert_eq!(scmi.poll_done(&tk), Ok(false));
    clock.advance(Duration::from_secs(4));
    assert_eq!(scmi.poll_done(&tk), Ok(false));
    assert_eq!(scmi.failure(), None);
    clock.advance(Duration::from_secs(1));
    assert_eq!(scmi.poll_done(&tk), Err(Error::Cancelled));
    scmi.mark_txdone(tk, TxOutcome::Cancelled);
    assert_eq!(scmi.failure(), Some(ScmiVirtioError::DeviceStalled));
    let s = scmi.stats();
    assert_eq!(
        s.pool_free,
        s.pool_capacity - 2,
        "both held buffers quarantined"
    );
    assert_eq!(scmi.tokens_in_use(), 0);
}

/// Without a stall timeout (or without a clock) nothing is declared: the old behaviour, each
/// call ending at its own deadline.
#[test]
fn stall_detection_is_off_without_a_stall_timeout() {
    let dev = SimDevice::start(SimDeviceConfig::default(), || Box::new(EchoPlatform::new()));
    let clock = Arc::new(ManualClock::new());
    let cfg = ScmiVirtioConfig {
        interrupts: false,
        stall_timeout: None,
        ..ScmiVirtioConfig::default()
    };
    let scmi = channel(&dev, clock.clone(), cfg);
    dev.set_stop_consuming(true);
    let tk = scmi.send(&Request::new(ECHO, b"hung").polled()).unwrap();
    clock.advance(Duration::from_secs(3600));
    assert_eq!(scmi.poll_done(&tk), Ok(false));
    assert_eq!(scmi.failure(), None);
    scmi.mark_txdone(tk, TxOutcome::TimedOut);
}

/// A clock that moves 100 ms every time it is read, and counts its reads.
#[derive(Default)]
struct Ticking {
    reads: AtomicU64,
}

impl Clock for Ticking {
    fn now(&self) -> fwipc_transport_api::Instant {
        // Relaxed: a counter of this test's own clock.
        let n = self.reads.fetch_add(1, Ordering::Relaxed);
        fwipc_transport_api::Instant(n * 100_000_000)
    }
}

/// The reset wait runs on the configured clock: a device that never reads back status 0 is
/// given `reset_timeout` of clock time (here about ten reads of a clock that moves 100 ms per
/// read), not a fixed number of status reads.
#[test]
fn reset_wait_is_bounded_by_the_clock() {
    let dev = SimDevice::start(SimDeviceConfig::default(), || Box::new(EchoPlatform::new()));
    let clock = Arc::new(Ticking::default());
    let cfg = ScmiVirtioConfig {
        interrupts: false,
        stall_timeout: None,
        reset_timeout: Duration::from_secs(1),
        ..ScmiVirtioConfig::default()
    };
    let scmi = channel(&dev, clock.clone(), cfg);
    // A device that confirms: one read to arm the deadline, one to check it.
    let before = clock.reads.load(Ordering::Relaxed);
    assert_eq!(scmi.reset_device(), Ok(()));
    let reads = clock.reads.load(Ordering::Relaxed) - before;
    assert!((1..=3).contains(&reads), "{reads} clock reads");
    assert_eq!(echo_on(&scmi, b"after").unwrap(), inverted(b"after"));
    dev.set_refuse_reset(true);
    let before = clock.reads.load(Ordering::Relaxed);
    assert_eq!(scmi.reset_device(), Err(ScmiVirtioError::ResetUnconfirmed));
    let reads = clock.reads.load(Ordering::Relaxed) - before;
    assert!(
        (10..=13).contains(&reads),
        "1 s of a 100 ms-per-read clock, not a spin count: {reads} reads"
    );
    assert_eq!(scmi.failure(), Some(ScmiVirtioError::ResetUnconfirmed));
    assert_eq!(
        scmi.send(&Request::new(ECHO, b"dead").polled()).err(),
        Some(Error::Shutdown)
    );
}
