//! List and read every sensor of the simulated SCMI platform through the whole stack: the typed
//! SCMI agent, the virtio-scmi transport and its shared-memory rings, and the simulated virtio
//! device hosting the platform model.
//!
//! `cargo run -p fwipc-scmi-virtio --example sensors`

use std::sync::Arc;

use fwipc_scmi_virtio::platform::{Platform, PlatformConfig};
use fwipc_scmi_virtio::protocol::{Config, Scmi};
use fwipc_scmi_virtio::sim::{SimDevice, SimDeviceConfig, SimHal};
use fwipc_scmi_virtio::virtio::{ScmiVirtio, ScmiVirtioConfig};
use fwipc_transport_api::{StdClock, Transport};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The simulated device runs the platform model on its own thread, over shared rings.
    let platform = PlatformConfig::full();
    let dev = SimDevice::start(SimDeviceConfig::default(), move || {
        Box::new(Platform::new(platform.clone()))
    });
    let vcfg = ScmiVirtioConfig {
        clock: Some(Arc::new(StdClock::new())),
        ..ScmiVirtioConfig::default()
    };
    let virtio = ScmiVirtio::<SimHal, _>::new(dev.transport(), vcfg)?;
    // Nothing here services the device interrupt, so completion is polled: chosen explicitly.
    let scmi = Scmi::new(virtio, StdClock::new(), Config::default().polled())?;

    let base = scmi.base();
    println!("vendor: {} / {}", base.vendor()?, base.sub_vendor()?);

    let sensors = scmi.sensor().descriptions_vec()?;
    if sensors.is_empty() {
        return Err("the platform announced no sensors".into());
    }
    for s in &sensors {
        match scmi.sensor().reading(s.id) {
            Ok(v) => println!("sensor {:3} {:<16} = {}", s.id, s.name, v.value),
            Err(e) => println!("sensor {:3} {:<16}   ({e})", s.id, s.name),
        }
    }
    println!("{} sensors listed", sensors.len());
    scmi.transport().shutdown()?;
    Ok(())
}
