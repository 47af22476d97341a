//! fwipc bare-metal aarch64 guest for QEMU `virt`.
//!
//! Boots at EL1 with the MMU off, finds the virtio-scmi device (id 32) by scanning all 32
//! virtio-mmio slots, drives it through its own modern virtio-mmio [`mmio::ModernMmioTransport`]
//! and an identity-mapped [`hal::IdentityHal`], discovers the SCMI platform (vendor, protocols),
//! reads the sensors, prints everything on the PL011 and powers off with PSCI `SYSTEM_OFF`.
//!
//! Three driver instances take the device in turn, each after a device reset: the raw path
//! ([`scmi_raw`], a cross-check independent of the fwipc crates), then the fwipc stack
//! (`backend_scmi_virtio`'s `ScmiVirtio` under its SCMI agent) polled, then the same stack
//! interrupt-driven with the eventq and a SENSOR_UPDATE notification ([`scmi_agent`]).
//!
//! The last line is `guest: PASS` or `guest: FAIL: <why>`; `scripts/qemu-scmi.sh` checks it along
//! with the discovered values.
#![no_std]
#![no_main]

extern crate alloc;

mod boot;
pub mod console;
mod hal;
mod heap;
mod irq;
mod psci;
mod scmi_agent;
mod scmi_raw;
mod timer;

use core::fmt;

use fwipc_guest_aarch64::mmio::{self, ModernMmioTransport, SlotInfo, DEVICE_ID_SCMI};
use scmi_agent::Mode;
use scmi_raw::{le32, name, RawError, RawScmi};
use timer::GenericTimer;

const PROTO_BASE: u8 = 0x10;
const PROTO_SENSOR: u8 = 0x15;

/// Readings taken per sensor.
const READINGS: usize = 3;
/// Calls timed for the round-trip figure.
const ROUND_TRIPS: u64 = 200;

/// Why the guest failed.
#[derive(Debug)]
enum GuestError {
    NoScmiDevice,
    Mmio(mmio::MmioError),
    Raw(&'static str, RawError),
    Check(&'static str),
    Agent(scmi_agent::AgentError),
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestError::NoScmiDevice => f.write_str("no modern virtio-mmio device with id 32"),
            GuestError::Mmio(e) => write!(f, "{e}"),
            GuestError::Raw(what, e) => write!(f, "{what}: {e}"),
            GuestError::Check(what) => write!(f, "check failed: {what}"),
            GuestError::Agent(e) => write!(f, "agent: {e}"),
        }
    }
}

/// Attach a label to a raw-path error.
trait Ctx<T> {
    fn ctx(self, what: &'static str) -> Result<T, GuestError>;
}

impl<T> Ctx<T> for Result<T, RawError> {
    fn ctx(self, what: &'static str) -> Result<T, GuestError> {
        self.map_err(|e| GuestError::Raw(what, e))
    }
}

fn check(cond: bool, what: &'static str) -> Result<(), GuestError> {
    if cond {
        Ok(())
    } else {
        Err(GuestError::Check(what))
    }
}

/// Entered from `_start` with a stack, zeroed `.bss` and FP enabled.
#[no_mangle]
extern "C" fn guest_main() -> ! {
    println!("guest: fwipc aarch64 guest at EL{}", boot::current_el());
    let heap = heap::init();
    // Only fails if a logger is already set, which nothing else does.
    let _ = log::set_logger(&console::LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    println!("guest: heap {} KiB", heap / 1024);
    match run() {
        Ok(()) => println!("guest: PASS"),
        Err(e) => println!("guest: FAIL: {e}"),
    }
    println!("guest: PSCI SYSTEM_OFF (hvc)");
    psci::system_off()
}

fn find_scmi() -> Result<SlotInfo, GuestError> {
    let mut found = None;
    for slot in mmio::scan_virt() {
        if slot.device_id != 0 {
            println!(
                "virtio-mmio: slot {} @ {:#x}: version {} device id {} vendor {:#x}",
                slot.index, slot.base, slot.version, slot.device_id, slot.vendor_id
            );
        }
        if slot.device_id == DEVICE_ID_SCMI && found.is_none() {
            found = Some(slot);
        }
    }
    found.ok_or(GuestError::NoScmiDevice)
}

fn run() -> Result<(), GuestError> {
    let timer = GenericTimer::new();
    let slot = find_scmi()?;
    // SAFETY: `slot.base` is a virtio-mmio register block of QEMU `virt` holding device 32 (just
    // read); SCMI has no config space (size 0), and only this transport drives the device.
    let transport = unsafe { ModernMmioTransport::new(slot.base, 0) }.map_err(GuestError::Mmio)?;
    println!(
        "scmi: device id {} at slot {} (modern virtio-mmio)",
        transport.device_id(),
        slot.index
    );
    let mut scmi = RawScmi::new(transport, timer).ctx("virtio init")?;
    raw_session(&mut scmi, &timer)?;
    // Taking the transport back resets the device; the fwipc backend then takes it over from
    // scratch.
    let transport = scmi.into_transport();
    println!("scmi: raw path done, device reset; now the fwipc backend + agent, polled");
    scmi_agent::session(transport, timer, Mode::Polled).map_err(GuestError::Agent)?;

    // The backend's shutdown reset the device; drive it once more, interrupt-driven.
    // SAFETY: as above; the previous transport was consumed and dropped with its `ScmiVirtio`.
    let transport = unsafe { ModernMmioTransport::new(slot.base, 0) }.map_err(GuestError::Mmio)?;
    let intid = irq::VIRT_MMIO_FIRST_INTID + slot.index as u32;
    scmi_agent::session(transport, timer, Mode::Interrupt { intid }).map_err(GuestError::Agent)
}

fn raw_session<T: virtio_drivers::transport::Transport>(
    scmi: &mut RawScmi<T>,
    timer: &GenericTimer,
) -> Result<(), GuestError> {
    let t0 = timer.now_ns();
    let r = scmi
        .call(PROTO_BASE, 0x0, &[])
        .ctx("BASE PROTOCOL_VERSION")?;
    let version = le32(r, 0);
    println!("scmi: base protocol version {:#x}", version);

    let r = scmi
        .call(PROTO_BASE, 0x1, &[])
        .ctx("BASE PROTOCOL_ATTRIBUTES")?;
    let attrs = le32(r, 0);
    let n_protocols = attrs & 0xff;
    println!(
        "scmi: {} protocols besides base, {} agents",
        n_protocols,
        (attrs >> 8) & 0xff
    );

    let r = scmi
        .call(PROTO_BASE, 0x3, &[])
        .ctx("BASE DISCOVER_VENDOR")?;
    check(r.len() >= 16, "vendor reply holds a 16-byte name")?;
    let mut vendor = [0u8; 16];
    vendor.copy_from_slice(&r[..16]);
    println!("scmi: vendor \"{}\"", name(&vendor));

    let r = scmi
        .call(PROTO_BASE, 0x5, &[])
        .ctx("BASE DISCOVER_IMPLEMENTATION_VERSION")?;
    println!("scmi: implementation version {:#x}", le32(r, 0));

    // DISCOVER_LIST_PROTOCOLS(skip): num_returned, then ids packed 4 per word.
    let mut protocols = alloc::vec::Vec::new();
    while protocols.len() < n_protocols as usize {
        let skip = protocols.len() as u32;
        let r = scmi
            .call(PROTO_BASE, 0x6, &[skip])
            .ctx("BASE DISCOVER_LIST_PROTOCOLS")?;
        let returned = le32(r, 0) as usize;
        check(returned > 0, "list protocols makes progress")?;
        check(
            r.len() >= 4 + returned,
            "list protocols reply holds the ids",
        )?;
        protocols.extend_from_slice(&r[4..4 + returned]);
    }
    print!("scmi: protocols [");
    for (i, p) in protocols.iter().enumerate() {
        print!("{}{:#04x}", if i == 0 { "" } else { ", " }, p);
    }
    println!("]");

    if !protocols.contains(&PROTO_SENSOR) {
        println!("scmi: no sensor protocol");
        return Ok(());
    }
    let r = scmi
        .call(PROTO_SENSOR, 0x0, &[])
        .ctx("SENSOR PROTOCOL_VERSION")?;
    println!("scmi: sensor protocol version {:#x}", le32(r, 0));
    let r = scmi
        .call(PROTO_SENSOR, 0x1, &[])
        .ctx("SENSOR PROTOCOL_ATTRIBUTES")?;
    let n_sensors = le32(r, 0) & 0xffff;
    println!("scmi: {} sensors", n_sensors);

    for id in 0..n_sensors {
        // SENSOR_DESCRIPTION_GET(desc_index = id): num_descriptors flags, then descriptors of
        // id, attributes_low, attributes_high, name[16] (+ 24 bytes if extended attributes).
        let r = scmi
            .call(PROTO_SENSOR, 0x3, &[id])
            .ctx("SENSOR_DESCRIPTION_GET")?;
        check(r.len() >= 4 + 28, "sensor description holds one descriptor")?;
        let attrs_low = le32(r, 8);
        let attrs_high = le32(r, 12);
        let mut sname = [0u8; 16];
        sname.copy_from_slice(&r[16..32]);
        let axes = if attrs_high & (1 << 8) != 0 {
            (attrs_high >> 16) & 0x3f
        } else {
            1
        };
        println!(
            "scmi: sensor {} \"{}\": {} axes, unit {}, attributes {:#x}/{:#x}",
            le32(r, 4),
            name(&sname),
            axes,
            attrs_high & 0xff,
            attrs_low,
            attrs_high
        );
        check(
            axes as usize * 16 <= scmi_raw::MAX_REPLY - 8,
            "axes fit the reply",
        )?;
        for axis in 0..axes {
            // SENSOR_AXIS_DESCRIPTION_GET(id, axis_index): flags (returned 5:0), then descriptors
            // of axis id, attributes_low, attributes_high, name[16] (+ 20 bytes if extended).
            let r = scmi
                .call(PROTO_SENSOR, 0x7, &[id, axis])
                .ctx("SENSOR_AXIS_DESCRIPTION_GET")?;
            check(
                r.len() >= 4 + 28 && le32(r, 0) & 0x3f >= 1,
                "axis description holds one descriptor",
            )?;
            let mut aname = [0u8; 16];
            aname.copy_from_slice(&r[16..32]);
            println!(
                "scmi: sensor {} axis {} \"{}\": unit {}",
                id,
                le32(r, 4),
                name(&aname),
                le32(r, 12) & 0xff
            );
        }

        // Sensors of vhost-device-scmi start disabled: SENSOR_CONFIG_SET(id, enable).
        scmi.call(PROTO_SENSOR, 0xa, &[id, 1])
            .ctx("SENSOR_CONFIG_SET")?;
        let mut previous: Option<i64> = None;
        for n in 0..READINGS {
            // SENSOR_READING_GET(id, flags = 0 synchronous): per axis value low/high, timestamp
            // low/high.
            let r = scmi
                .call(PROTO_SENSOR, 0x6, &[id, 0])
                .ctx("SENSOR_READING_GET")?;
            check(r.len() >= axes as usize * 16, "reading holds every axis")?;
            print!("scmi: sensor {} reading {}:", id, n);
            let mut first = 0i64;
            for axis in 0..axes as usize {
                let v = (u64::from(le32(r, axis * 16)) | (u64::from(le32(r, axis * 16 + 4)) << 32))
                    as i64;
                if axis == 0 {
                    first = v;
                }
                print!(" {}", v);
            }
            println!();
            if let Some(p) = previous {
                check(first != p, "successive readings change")?;
            }
            previous = Some(first);
        }
    }
    let dt = timer.now_ns().saturating_sub(t0);
    println!("scmi: raw session done in {} us", dt / 1000);

    // Round-trip time of the smallest command (QEMU TCG + vhost-user + daemon; informational).
    let (mut min, mut max, mut total) = (u64::MAX, 0u64, 0u64);
    for _ in 0..ROUND_TRIPS {
        let t = timer.now_ns();
        scmi.call(PROTO_BASE, 0x0, &[])
            .ctx("BASE PROTOCOL_VERSION round trip")?;
        let d = timer.now_ns().saturating_sub(t);
        min = min.min(d);
        max = max.max(d);
        total = total.saturating_add(d);
    }
    println!(
        "scmi: raw round trip over {} calls: avg {} us, min {} us, max {} us",
        ROUND_TRIPS,
        total / ROUND_TRIPS / 1000,
        min / 1000,
        max / 1000
    );
    Ok(())
}

/// Called by the vector stubs in `boot.rs` for every exception: all are fatal.
#[no_mangle]
extern "C" fn guest_exception(kind: u64, esr: u64, elr: u64, far: u64) -> ! {
    println!(
        "guest: FAIL: exception {} (esr {:#x} elr {:#x} far {:#x})",
        kind, esr, elr, far
    );
    psci::system_off()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("guest: FAIL: panic: {info}");
    psci::system_off()
}
