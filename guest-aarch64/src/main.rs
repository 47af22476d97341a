//! fwipc bare-metal aarch64 guest for QEMU `virt`.
//!
//! Boots at EL1 with the MMU off, reads the device tree QEMU hands it, builds an identity map from
//! it and turns the MMU and caches on ([`mmu`]), enables the GIC and unmasks interrupts ([`irq`]),
//! starts the second CPU with PSCI `CPU_ON` ([`smp`]), finds every virtio-mmio device
//! (`fwipc_virtio::discovery`), and drives every virtio-scmi device (id 32) among them through
//! `fwipc_virtio`'s modern virtio-mmio transport and identity-mapped `Hal`: discovers each SCMI
//! platform (vendor, protocols), reads its sensors, prints everything on the PL011 and powers off
//! with PSCI `SYSTEM_OFF`.
//!
//! Per device, four driver instances take it in turn, each after a device reset: the raw path
//! ([`scmi_raw`], a cross-check independent of the fwipc crates), then the fwipc stack
//! (`fwipc_scmi_virtio`'s `ScmiVirtio` under its SCMI agent) polled, then the same polled stack
//! with every DMA address in one explicitly shared bounce pool (`fwipc_virtio::bounce`, the mode
//! for protected VMs: the guest's private memory is never handed to the device), then the stack
//! interrupt-driven with the eventq and a SENSOR_UPDATE notification ([`scmi_agent`]). Each device
//! gets its own agent instances; lines are tagged with the device's index (`scmi[0]`, `agent[0]`,
//! `agent-irq[0]`...). The interrupt-driven agents stay up for the concurrent stage
//! ([`concurrent`]): both CPUs send commands to both devices at once, the device interrupts
//! completing them on CPU 0; then every agent is shut down.
//!
//! The last line is `guest: PASS` or `guest: FAIL: <why>`; it is FAIL if no SCMI device was found
//! or any found one could not be driven. `scripts/qemu-scmi.sh` checks it along with the discovered
//! values.
#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod concurrent;
pub mod console;
mod heap;
mod irq;
mod mmu;
mod psci;
mod scmi_agent;
mod scmi_raw;
mod smp;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use fwipc_virtio::aarch64::{enable_event_stream, GenericTimer};
use fwipc_virtio::bounce::{BounceHal, BouncePool, SharedRegion};
use fwipc_virtio::discovery::{DeviceTree, InterruptKind, VirtioMmioDevice};
use fwipc_virtio::hal::IdentityHal;
use fwipc_virtio::mmio::DEVICE_ID_SCMI;
use scmi_agent::{Live, Summary};
use scmi_raw::{le32, name, RawError, RawScmi};

const PROTO_BASE: u8 = 0x10;
const PROTO_SENSOR: u8 = 0x15;

/// Readings taken per sensor.
const READINGS: usize = 3;
/// Calls timed for the round-trip figure.
const ROUND_TRIPS: u64 = 200;

/// Bytes of the bounce pool the bounce stage shares with the host.
const BOUNCE_POOL: usize = 256 * 1024;

/// The guest's shared bounce pool, set up once at boot (virtio-drivers' `Hal` has no `self`, so
/// `BounceHal` finds its pool through a type).
struct GuestShared;
static SHARED: spin::Once<BouncePool> = spin::Once::new();
impl SharedRegion for GuestShared {
    fn pool() -> &'static BouncePool {
        SHARED.call_once(|| {
            // A page-aligned block of RAM, leaked: it stays shared for the rest of the run. A
            // protected VM would now ask the hypervisor to share it (pKVM `MEM_SHARE`, the CCA
            // RSI call); under QEMU the host can reach all guest RAM, so there is nothing to call.
            let page = virtio_drivers::PAGE_SIZE;
            let block: &'static mut [u8] =
                alloc::boxed::Box::leak(alloc::vec![0u8; BOUNCE_POOL + page].into_boxed_slice());
            let base = block
                .as_mut_ptr()
                .wrapping_add(block.as_ptr().align_offset(page));
            // SAFETY: `base` is page aligned with `BOUNCE_POOL` bytes of the leaked block after
            // it, used by nothing else; RAM is identity-mapped, so the device address is `base`.
            unsafe { BouncePool::new(base, BOUNCE_POOL, base as u64) }
                .expect("a page-aligned, non-empty bounce pool")
        })
    }
}

/// Why the guest failed.
#[derive(Debug)]
enum GuestError {
    NoDeviceTree,
    NoScmiDevice,
    Virtio(fwipc_virtio::Error),
    Raw(&'static str, RawError),
    Check(&'static str),
    Agent(scmi_agent::AgentError),
    Mmu(mmu::MmuError),
    Smp(smp::SmpError),
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestError::NoDeviceTree => f.write_str("no device tree in x0 or at the start of RAM"),
            GuestError::NoScmiDevice => f.write_str("no virtio-mmio device with id 32"),
            GuestError::Virtio(e) => write!(f, "virtio-mmio: {e}"),
            GuestError::Raw(what, e) => write!(f, "{what}: {e}"),
            GuestError::Check(what) => write!(f, "check failed: {what}"),
            GuestError::Agent(e) => write!(f, "agent: {e}"),
            GuestError::Mmu(e) => write!(f, "page tables: {e}"),
            GuestError::Smp(e) => write!(f, "CPU 1: {e}"),
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

/// Entered from `_start` with a stack, zeroed `.bss` and FP enabled; `x0` is what the boot loader
/// left in it (the device tree's address under the Linux arm64 boot protocol, 0 for QEMU's
/// bare-metal ELF boot).
#[no_mangle]
extern "C" fn guest_main(x0: usize) -> ! {
    println!("guest: fwipc aarch64 guest at EL{}", boot::current_el());
    let heap = heap::init();
    // Only fails if a logger is already set, which nothing else does.
    let _ = log::set_logger(&console::LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    println!("guest: heap {} KiB", heap / 1024);
    match run(x0) {
        Ok(()) => println!("guest: PASS"),
        Err(e) => println!("guest: FAIL: {e}"),
    }
    println!("guest: PSCI SYSTEM_OFF (hvc)");
    psci::system_off()
}

/// QEMU `virt`: guest RAM starts here, and for a bare-metal (non-Linux) `-kernel` image QEMU
/// places the device tree blob at its very start (QEMU's "virt" board documentation, "Hardware
/// configuration information for bare-metal programming").
const VIRT_RAM_START: usize = 0x4000_0000;
/// Big-endian FDT magic (Devicetree Specification v0.4 §5.2).
const FDT_MAGIC: u32 = 0xd00d_feed;

/// The device tree: at `x0` if it holds one (Linux arm64 boot protocol), else at the start of RAM.
fn device_tree(x0: usize) -> Result<(&'static str, DeviceTree<'static>), GuestError> {
    for (from, addr) in [("x0", x0), ("start of RAM", VIRT_RAM_START)] {
        // Only look inside RAM (QEMU `virt` RAM begins at 0x4000_0000): a stray x0 must not fault.
        if addr < VIRT_RAM_START || !addr.is_multiple_of(8) {
            continue;
        }
        // SAFETY: `addr` is 8-aligned and in guest RAM (checked above), which is readable (the
        // MMU is still off here); the read has no side effects.
        let magic = unsafe { (addr as *const u32).read_volatile() };
        if u32::from_be(magic) != FDT_MAGIC {
            continue;
        }
        // SAFETY: a blob with the FDT magic in RAM that nothing writes to for the whole run (the
        // image is linked above it, the heap and stack are in the image's own sections).
        let dt = unsafe { DeviceTree::from_ptr(addr as *const u8) }.map_err(GuestError::Virtio)?;
        return Ok((from, dt));
    }
    Err(GuestError::NoDeviceTree)
}

fn describe_irq(dev: &VirtioMmioDevice) -> alloc::string::String {
    match (dev.node.interrupt, dev.gic_intid()) {
        (Some(i), Some(intid)) if i.kind == InterruptKind::Spi => {
            format!("SPI {} (INTID {intid})", i.number)
        }
        (Some(i), _) => format!("{:?} {}", i.kind, i.number),
        (None, _) => "no interrupt".into(),
    }
}

/// Bring up the MMU, the GIC and CPU 1; discover every virtio-mmio device, drive every SCMI one
/// through its stages, run the concurrent stage on both CPUs, shut every agent down; fail unless
/// all of it worked.
fn run(x0: usize) -> Result<(), GuestError> {
    let timer = GenericTimer::new();
    let (from, dt) = device_tree(x0)?;
    println!("guest: device tree from {from}, {} bytes", dt.total_size());
    let mapped = mmu::init(&dt).map_err(GuestError::Mmu)?;
    println!(
        "guest: cpu0: {} (identity map: {} MiB RAM Normal WB inner-shareable, {} device windows \
         Device-nGnRE)",
        mmu::describe(mmu::sctlr()),
        mapped.ram >> 20,
        mapped.devices
    );
    irq::init_distributor();
    irq::init_cpu();
    // Bit 14 of the 62.5 MHz counter: an event about every 0.5 ms bounds every `wfe`, so an
    // interrupt or wake-up that arrives just before a `wfe` costs at most one period.
    enable_event_stream(14);
    let method = dt.psci_method();
    let cpu1 = smp::start_cpu1(method, mapped.regs, &timer).map_err(GuestError::Smp)?;
    println!(
        "guest: cpu1: online via PSCI CPU_ON ({}), {}, GIC CPU interface and IRQs on",
        method.unwrap_or("?"),
        mmu::describe(cpu1.sctlr)
    );
    let mut scmi = Vec::new();
    let mut windows = 0;
    for node in dt.virtio_mmio_nodes() {
        windows += 1;
        // SAFETY: `mmu::init` mapped every window the device tree declares at its physical
        // address as Device memory (what `IdentityHal` assumes); nothing else accesses the devices.
        match unsafe { node.probe::<IdentityHal>() } {
            Ok(None) => {}
            Ok(Some(dev)) => {
                println!(
                    "virtio-mmio: {:#x}: version {} device id {} vendor {:#x}, {}",
                    dev.node.base,
                    dev.header.version,
                    dev.device_id(),
                    dev.header.vendor_id,
                    describe_irq(&dev)
                );
                if dev.device_id() == DEVICE_ID_SCMI {
                    scmi.push(dev);
                }
            }
            Err(e) => println!("virtio-mmio: {:#x}: unreadable: {e}", node.base),
        }
    }
    println!(
        "guest: {windows} virtio-mmio windows, {} virtio-scmi devices",
        scmi.len()
    );
    if scmi.is_empty() {
        return Err(GuestError::NoScmiDevice);
    }
    let mut live = Vec::new();
    for (i, dev) in scmi.iter().enumerate() {
        match drive(i, dev, timer) {
            Ok((summary, agent)) => live.push((i, dev, summary, agent)),
            // Go on with the other devices; the verdict below fails the run.
            Err(e) => println!("device[{i}] @ {:#x}: FAIL: {e}", dev.node.base),
        }
    }
    // Every device's interrupt-driven agent is still up: both CPUs now use them at once.
    let concurrent = if live.len() == scmi.len() {
        let targets: Vec<_> = live
            .iter()
            .map(|(_, _, summary, agent)| concurrent::Target {
                agent: &agent.agent,
                sensor: summary.sensors.first().map(String::as_str).unwrap_or(""),
            })
            .collect();
        concurrent::run(&cpu1, &targets, &timer).map_err(GuestError::Agent)
    } else {
        Err(GuestError::Check(
            "every device up for the concurrent stage",
        ))
    };
    let mut driven = 0;
    for (i, dev, summary, agent) in live {
        match agent.finish() {
            Ok(()) => {
                print!(
                    "device[{i}] @ {:#x}: vendor \"{}\", sensors [",
                    dev.node.base, summary.vendor
                );
                for (n, s) in summary.sensors.iter().enumerate() {
                    print!("{}\"{s}\"", if n == 0 { "" } else { ", " });
                }
                println!("]");
                driven += 1;
            }
            Err(e) => println!("device[{i}] @ {:#x}: FAIL: {e}", dev.node.base),
        }
    }
    println!(
        "guest: drove {driven} of {} virtio-scmi devices",
        scmi.len()
    );
    concurrent?;
    check(driven == scmi.len(), "every virtio-scmi device driven")
}

/// The three driver instances of one SCMI device, each after a device reset; the last one, the
/// interrupt-driven agent, is returned running.
fn drive(
    i: usize,
    dev: &VirtioMmioDevice,
    timer: GenericTimer,
) -> Result<(Summary, Live), GuestError> {
    let intid = dev.gic_intid().ok_or(GuestError::Check(
        "the device tree gives the device a GIC interrupt",
    ))?;
    let tag = format!("scmi[{i}]");
    // SAFETY: the window is identity-mapped as Device memory (`mmu::init`); only this transport
    // drives the device, and each transport below is created after the previous one was consumed.
    let transport = unsafe { dev.transport::<IdentityHal>() }.map_err(GuestError::Virtio)?;
    println!(
        "{tag}: device id {} at {:#x} (modern virtio-mmio), INTID {intid}",
        transport.device_id(),
        dev.node.base
    );
    let mut scmi = RawScmi::new(transport, timer).ctx("virtio init")?;
    raw_session(&mut scmi, &timer, &tag)?;
    // Taking the transport back resets the device; the fwipc backend then takes it over from
    // scratch.
    let transport = scmi.into_transport();
    println!("{tag}: raw path done, device reset; now the fwipc backend + agent, polled");
    let polled =
        scmi_agent::session_polled::<IdentityHal>(transport, timer, &format!("agent[{i}]"))
            .map_err(GuestError::Agent)?;

    // Again polled, every DMA address now in the shared bounce pool.
    // SAFETY: as above; the previous transport was consumed and dropped with its `ScmiVirtio`.
    let transport = unsafe { dev.transport::<IdentityHal>() }.map_err(GuestError::Virtio)?;
    let pool = GuestShared::pool();
    let (start, len) = pool.device_window();
    let bounced = scmi_agent::session_polled::<BounceHal<GuestShared>>(
        transport,
        timer,
        &format!("agent-bounce[{i}]"),
    )
    .map_err(GuestError::Agent)?;
    println!(
        "agent-bounce[{i}]: every DMA address in the shared pool {start:#x}..{:#x}; {} bytes still \
         allocated after shutdown",
        start + len,
        pool.in_use()
    );
    check(
        bounced == polled,
        "the bounce-pool session sees the same platform",
    )?;
    check(
        pool.in_use() == 0,
        "the bounce pool is empty after the session",
    )?;

    // The backend's shutdown reset the device; drive it once more, interrupt-driven.
    // SAFETY: as above; the previous transport was consumed and dropped with its `ScmiVirtio`.
    let transport = unsafe { dev.transport::<IdentityHal>() }.map_err(GuestError::Virtio)?;
    // GIC binding flags: 1/2 edge rising/falling, 4/8 level high/low.
    let edge = dev.node.interrupt.is_some_and(|i| i.flags & 0x3 != 0);
    let (irq, live) =
        scmi_agent::session_interrupt(transport, timer, intid, edge, &format!("agent-irq[{i}]"))
            .map_err(GuestError::Agent)?;
    check(polled == irq, "both agent sessions see the same platform")?;
    Ok((irq, live))
}

fn raw_session<T: virtio_drivers::transport::Transport>(
    scmi: &mut RawScmi<T>,
    timer: &GenericTimer,
    tag: &str,
) -> Result<(), GuestError> {
    let t0 = timer.now_ns();
    let r = scmi
        .call(PROTO_BASE, 0x0, &[])
        .ctx("BASE PROTOCOL_VERSION")?;
    let version = le32(r, 0);
    println!("{tag}: base protocol version {:#x}", version);

    let r = scmi
        .call(PROTO_BASE, 0x1, &[])
        .ctx("BASE PROTOCOL_ATTRIBUTES")?;
    let attrs = le32(r, 0);
    let n_protocols = attrs & 0xff;
    println!(
        "{tag}: {} protocols besides base, {} agents",
        n_protocols,
        (attrs >> 8) & 0xff
    );

    let r = scmi
        .call(PROTO_BASE, 0x3, &[])
        .ctx("BASE DISCOVER_VENDOR")?;
    check(r.len() >= 16, "vendor reply holds a 16-byte name")?;
    let mut vendor = [0u8; 16];
    vendor.copy_from_slice(&r[..16]);
    println!("{tag}: vendor \"{}\"", name(&vendor));

    let r = scmi
        .call(PROTO_BASE, 0x5, &[])
        .ctx("BASE DISCOVER_IMPLEMENTATION_VERSION")?;
    println!("{tag}: implementation version {:#x}", le32(r, 0));

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
    print!("{tag}: protocols [");
    for (i, p) in protocols.iter().enumerate() {
        print!("{}{:#04x}", if i == 0 { "" } else { ", " }, p);
    }
    println!("]");

    if !protocols.contains(&PROTO_SENSOR) {
        println!("{tag}: no sensor protocol");
        return Ok(());
    }
    let r = scmi
        .call(PROTO_SENSOR, 0x0, &[])
        .ctx("SENSOR PROTOCOL_VERSION")?;
    println!("{tag}: sensor protocol version {:#x}", le32(r, 0));
    let r = scmi
        .call(PROTO_SENSOR, 0x1, &[])
        .ctx("SENSOR PROTOCOL_ATTRIBUTES")?;
    let n_sensors = le32(r, 0) & 0xffff;
    println!("{tag}: {} sensors", n_sensors);

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
            "{tag}: sensor {} \"{}\": {} axes, unit {}, attributes {:#x}/{:#x}",
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
                "{tag}: sensor {} axis {} \"{}\": unit {}",
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
            print!("{tag}: sensor {} reading {}:", id, n);
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
    println!("{tag}: raw session done in {} us", dt / 1000);

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
        "{tag}: raw round trip over {} calls: avg {} us, min {} us, max {} us",
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
