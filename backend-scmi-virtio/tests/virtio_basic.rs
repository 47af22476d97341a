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
