//! Bring-up and feature-negotiation tests of the virtio transport against the simulated device.

use std::time::Duration;

use fwipc_scmi_virtio::sim::{EchoPlatform, ScmiFixture, SimDevice, SimDeviceConfig, SimHal};
use fwipc_scmi_virtio::virtio::{ScmiFeatures, ScmiVirtio, ScmiVirtioConfig, ScmiVirtioError};
use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{call, Completion, Request, StdClock, Transport, Wait};

const ECHO: u32 = (0x81 << 8) | 0x03;

#[test]
fn polled_echo_roundtrip() {
    let dev = SimDevice::start(SimDeviceConfig::default(), || Box::new(EchoPlatform::new()));
    let scmi = ScmiVirtio::<SimHal, _>::new(dev.transport(), ScmiVirtioConfig::default()).unwrap();
    assert!(scmi
        .features()
        .contains(ScmiFeatures::VERSION_1 | ScmiFeatures::P2A_CHANNELS));
    let clock = StdClock::new();
    let mut out = [0u8; 64];
    let req = Request::new(ECHO, &[1, 2, 3, 4, 5]).polled();
    let n = call(
        &scmi,
        &clock,
        &req,
        &mut out,
        Duration::from_secs(5),
        Wait::Poll,
    )
    .unwrap();
    assert_eq!(&out[..n], &[!1u8, !2, !3, !4, !5]);
    let s = scmi.stats();
    assert_eq!((s.sent, s.completed), (1, 1));
    assert_eq!(s.pool_free, s.pool_capacity);
}

#[test]
fn interrupt_echo_roundtrip() {
    let fx = ScmiFixture::setup(Completion::Interrupt);
    let clock = StdClock::new();
    let parker = fwipc_transport_api::ThreadParker::new();
    let mut out = [0u8; 64];
    let req = Request::new(ECHO, &[9, 8, 7]);
    let n = call(
        fx.transport(),
        &clock,
        &req,
        &mut out,
        Duration::from_secs(5),
        Wait::Completion(&parker),
    )
    .unwrap();
    assert_eq!(&out[..n], &[!9u8, !8, !7]);
}

#[test]
fn legacy_device_refused() {
    let cfg = SimDeviceConfig {
        offer_version_1: false,
        ..SimDeviceConfig::default()
    };
    let dev = SimDevice::start(cfg, || Box::new(EchoPlatform::new()));
    let r = ScmiVirtio::<SimHal, _>::new(dev.transport(), ScmiVirtioConfig::default());
    assert_eq!(r.err(), Some(ScmiVirtioError::LegacyDevice));
}

/// A transport configured without interrupts (`ScmiVirtioConfig::interrupts` false, as the
/// polled fixture is) asks the device for none on either queue, with `EVENT_IDX` (a
/// `used_event` it never re-arms) and without (`VIRTQ_AVAIL_F_NO_INTERRUPT`), and again after a
/// device reset: its round trips cost the device no interrupt. One with interrupts, whose caller
/// does not spin, gets one per round trip.
#[test]
fn a_transport_without_interrupts_asks_for_none() {
    let clock = StdClock::new();
    let rounds_with = |fx: &ScmiFixture, n: usize, wait: Wait<'_>| {
        let mut out = [0u8; 16];
        for i in 0..n {
            let payload = [i as u8; 4];
            let req = Request::new(ECHO, &payload).polled();
            let got = call(
                fx.transport(),
                &clock,
                &req,
                &mut out,
                Duration::from_secs(5),
                wait,
            )
            .unwrap();
            assert_eq!(&out[..got], &[!(i as u8); 4]);
        }
    };
    let rounds = |fx: &ScmiFixture, n: usize| rounds_with(fx, n, Wait::Poll);
    for offer_event_idx in [true, false] {
        let dev_cfg = SimDeviceConfig {
            offer_event_idx,
            ..SimDeviceConfig::default()
        };
        let fx = ScmiFixture::with_config(Completion::Polled, 64, dev_cfg);
        rounds(&fx, 40);
        fx.virtio().reset_device().unwrap();
        rounds(&fx, 40);
        let (raised, suppressed) = fx.device().interrupts();
        assert_eq!(
            raised, 0,
            "interrupts raised for a polled transport (EVENT_IDX offered: {offer_event_idx})"
        );
        assert!(suppressed >= 80, "{suppressed} suppressed");

        // A waiter that spins asks for no interrupt while it does (`Transport::spinning`); one
        // that yields from its first poll on asks for each.
        let fx = ScmiFixture::with_config(Completion::Interrupt, 64, dev_cfg);
        let yielding = Wait::SpinThenYield {
            spins: 0,
            relax: &std::thread::yield_now,
        };
        rounds_with(&fx, 40, yielding);
        assert!(
            fx.device().interrupts().0 >= 40,
            "a transport with interrupts asks for them"
        );
    }
}
