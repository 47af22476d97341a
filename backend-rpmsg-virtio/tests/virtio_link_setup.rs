//! Setting up the ring link: what it negotiates and sizes, and every way set-up is refused
//! (typed `VirtioLinkError`, device left `FAILED` or untouched).

use std::time::Duration;

use fwipc_rpmsg_virtio::addr::{VIRTIO_ID_RPMSG, VIRTIO_RPMSG_F_NS};
use fwipc_rpmsg_virtio::{VirtioLink, VirtioLinkConfig, VirtioLinkError};
use fwipc_transport_api::StdClock;
use fwipc_virtio::hal::IdentityHal;
use fwipc_virtio::negotiate::{F_RING_EVENT_IDX, F_VERSION_1};
use fwipc_virtio::sim_device::{SimDevice, SimDeviceConfig};
use virtio_drivers::transport::{DeviceStatus, Transport};

const NS: u64 = 1 << VIRTIO_RPMSG_F_NS;

fn device(device_id: u32, features: u64, queue_max: u32) -> SimDevice {
    SimDevice::new(SimDeviceConfig {
        device_id,
        features,
        queues: 2,
        queue_max,
    })
}

fn link(
    d: &SimDevice,
    cfg: VirtioLinkConfig,
) -> Result<
    VirtioLink<IdentityHal, fwipc_virtio::sim_device::SimTransport, StdClock>,
    VirtioLinkError,
> {
    VirtioLink::new(d.transport(), StdClock::new(), cfg)
}

#[test]
fn negotiates_and_sizes_like_linux() {
    let d = device(
        VIRTIO_ID_RPMSG,
        F_VERSION_1 | NS | F_RING_EVENT_IDX | (1 << 7),
        1024,
    );
    let l = link(&d, VirtioLinkConfig::default()).unwrap();
    // Bit 7 is no feature the link knows: not accepted.
    assert_eq!(l.features(), F_VERSION_1 | NS | F_RING_EVENT_IDX);
    assert_eq!(d.driver_features(), l.features());
    assert!(l.name_service());
    assert_eq!(l.queue_size(), 256, "at most 256 buffers per direction");
    assert!(d.driver_ok());
    assert!(
        d.kicks() >= 1,
        "the receive queue is kicked after DRIVER_OK"
    );
    drop(l);
    assert!(!d.driver_ok(), "dropping the link resets the device");
}

#[test]
fn without_f_ns_or_event_idx() {
    let d = device(VIRTIO_ID_RPMSG, F_VERSION_1 | NS | F_RING_EVENT_IDX, 100);
    let cfg = VirtioLinkConfig {
        event_idx: false,
        ..VirtioLinkConfig::default()
    };
    let l = link(&d, cfg).unwrap();
    assert_eq!(l.features(), F_VERSION_1 | NS);
    assert_eq!(l.queue_size(), 64, "rounded down to a power of two");
    let d = device(VIRTIO_ID_RPMSG, F_VERSION_1, 8);
    let l = link(&d, VirtioLinkConfig::default()).unwrap();
    assert!(!l.name_service());
    assert_eq!(l.queue_size(), 8);
}

#[test]
fn refusals_are_typed() {
    let d = device(32, F_VERSION_1, 8);
    assert_eq!(
        link(&d, VirtioLinkConfig::default()).err(),
        Some(VirtioLinkError::WrongDevice)
    );
    let d = device(VIRTIO_ID_RPMSG, NS, 8);
    assert_eq!(
        link(&d, VirtioLinkConfig::default()).err(),
        Some(VirtioLinkError::Negotiation(
            fwipc_virtio::Error::MissingFeatures(F_VERSION_1)
        ))
    );
    assert_eq!(d.transport().get_status(), DeviceStatus::FAILED);
    let d = device(VIRTIO_ID_RPMSG, F_VERSION_1, 8);
    d.refuse_features_ok(true);
    assert!(matches!(
        link(&d, VirtioLinkConfig::default()).err(),
        Some(VirtioLinkError::Negotiation(
            fwipc_virtio::Error::FeaturesRejected(_)
        ))
    ));
    let d = device(VIRTIO_ID_RPMSG, F_VERSION_1, 0);
    assert_eq!(
        link(&d, VirtioLinkConfig::default()).err(),
        Some(VirtioLinkError::QueueUnavailable(0))
    );
    assert_eq!(d.transport().get_status(), DeviceStatus::FAILED);
    let d = device(VIRTIO_ID_RPMSG, F_VERSION_1, 8);
    d.transport().set_status(DeviceStatus::ACKNOWLEDGE);
    d.refuse_reset(true);
    let cfg = VirtioLinkConfig {
        reset_timeout: Duration::from_millis(5),
        ..VirtioLinkConfig::default()
    };
    assert_eq!(link(&d, cfg).err(), Some(VirtioLinkError::ResetUnconfirmed));
    assert_eq!(d.driver_features(), 0, "nothing negotiated with it");
}
