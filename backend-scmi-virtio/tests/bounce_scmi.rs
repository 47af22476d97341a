//! The SCMI agent on [`BounceHal`] against a simulated device that plays the host of a protected
//! VM: it may touch only the window the guest shared, and refuses (and counts) any ring or buffer
//! address outside it. With `BounceHal` nothing is refused and every listing and reading comes
//! back; the control run with an in-place `Hal` (the guest's private heap handed to the device)
//! is refused, which shows the window check bites.

use std::sync::{Arc, OnceLock};

use fwipc_scmi_virtio::platform::{Platform, PlatformConfig};
use fwipc_scmi_virtio::protocol::{Config, Scmi};
use fwipc_scmi_virtio::sim::{SimDevice, SimDeviceConfig, SimHal};
use fwipc_scmi_virtio::virtio::{ScmiFeatures, ScmiVirtio, ScmiVirtioConfig};
use fwipc_transport_api::{StdClock, Transport};
use fwipc_virtio::bounce::{BounceHal, BouncePool, SharedRegion};
use virtio_drivers::PAGE_SIZE;

const POOL_BYTES: usize = 512 * 1024;

struct Shared;
static POOL: OnceLock<BouncePool> = OnceLock::new();
impl SharedRegion for Shared {
    fn pool() -> &'static BouncePool {
        POOL.get_or_init(|| {
            let region: &'static mut [u8] =
                Box::leak(vec![0u8; POOL_BYTES + PAGE_SIZE].into_boxed_slice());
            let base = region
                .as_mut_ptr()
                .wrapping_add(region.as_ptr().align_offset(PAGE_SIZE));
            // SAFETY: a leaked, page-aligned region used only by this pool; the simulated device
            // addresses memory by its virtual address (identity).
            unsafe { BouncePool::new(base, POOL_BYTES, base as u64) }.expect("pool")
        })
    }
}

fn device(offer_access_platform: bool) -> SimDevice {
    let cfg = SimDeviceConfig {
        offer_access_platform,
        shared_window: Some(Shared::pool().device_window()),
        ..SimDeviceConfig::default()
    };
    let platform = PlatformConfig::full();
    SimDevice::start(cfg, move || Box::new(Platform::new(platform.clone())))
}

fn vcfg() -> ScmiVirtioConfig {
    ScmiVirtioConfig {
        cmdq_size: Some(32),
        eventq_size: Some(8),
        clock: Some(Arc::new(StdClock::new())),
        ..ScmiVirtioConfig::default()
    }
}

#[test]
fn the_agent_works_through_the_shared_pool_only() {
    let pool = Shared::pool();
    for offer in [true, false] {
        let dev = device(offer);
        let virtio = ScmiVirtio::<BounceHal<Shared>, _>::new(dev.transport(), vcfg()).unwrap();
        assert_eq!(
            virtio.features().contains(ScmiFeatures::ACCESS_PLATFORM),
            offer
        );
        assert!(virtio.features().contains(ScmiFeatures::P2A_CHANNELS));
        let scmi = Scmi::new(virtio, StdClock::new(), Config::default().polled()).unwrap();
        assert_eq!(scmi.base().vendor().unwrap(), "fwipc");
        let sensors = scmi.sensor().descriptions_vec().unwrap();
        assert!(sensors.len() >= 2, "{sensors:?}");
        for s in &sensors {
            scmi.sensor().set_enabled(s.id, true).unwrap();
            scmi.sensor().reading(s.id).unwrap();
        }
        assert!(
            pool.in_use() > 0,
            "queues and event buffers live in the pool"
        );
        assert_eq!(
            dev.outside_window(),
            0,
            "the device was handed private memory"
        );
        assert_eq!(dev.malformed_chains(), 0);
        scmi.transport().shutdown().unwrap();
        drop(scmi);
        assert_eq!(
            pool.in_use(),
            0,
            "every queue and bounce slot returned to the pool"
        );
    }
}

#[test]
fn an_in_place_hal_hands_private_memory_and_is_refused() {
    let dev = device(true);
    // SimHal shares buffers in place: the rings come from the heap, outside the window.
    match ScmiVirtio::<SimHal, _>::new(dev.transport(), vcfg()) {
        Ok(virtio) => {
            let r = Scmi::new(
                virtio,
                StdClock::new(),
                Config {
                    command_timeout: std::time::Duration::from_millis(200),
                    delayed_timeout: std::time::Duration::from_millis(200),
                    ..Config::default().polled()
                },
            )
            .and_then(|s| s.base().vendor());
            assert!(r.is_err(), "a refused ring cannot have answered: {r:?}");
        }
        Err(e) => println!("setup refused: {e}"),
    }
    assert!(dev.outside_window() > 0, "the window check never fired");
}
