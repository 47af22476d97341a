//! fwipc bare-metal aarch64 guest for QEMU `virt`, the example of embedding fwipc in a guest.
//! Board glue comes from `aarch64-rt` (boot, MMU and caches, vectors, CPU 1), `arm-gic` ([`gic`])
//! and `arm-pl011-uart`; the virtio and SCMI stack from `fwipc-virtio` and `fwipc-scmi-virtio`.
//! Every virtio-scmi device of the device tree is driven by its own driver instances in turn
//! ([`session`]: polled, polled through a shared bounce pool, interrupt-driven), then both CPUs
//! send to every device at once ([`concurrent`]). The last line is `guest: PASS` or
//! `guest: FAIL: <why>`; `scripts/qemu-scmi.sh` checks it and the values before it.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{Display, Write};
use core::ptr::NonNull;

use aarch64_paging::descriptor::El1Attributes as Attr;
use aarch64_rt::{entry, exception_handlers, initial_pagetable, ExceptionHandlers};
use aarch64_rt::{InitialPagetable, RegisterStateRef};
use arm_pl011_uart::{PL011Registers, Uart, UniqueMmioPointer};
use fwipc_virtio::aarch64::{enable_event_stream, without_irqs, GenericTimer};
use fwipc_virtio::bounce::SharedRegion;
use fwipc_virtio::discovery::{DeviceTree, VirtioMmioDevice};
use fwipc_virtio::hal::IdentityHal;
use fwipc_virtio::mmio::DEVICE_ID_SCMI;

/// Print to the board UART (IRQs masked while its lock is held, so a handler may print too).
macro_rules! print {
    ($($arg:tt)*) => { $crate::console(format_args!($($arg)*)) };
}
/// Print a line to the board UART.
macro_rules! println {
    ($($arg:tt)*) => { print!("{}\n", format_args!($($arg)*)) };
}

mod concurrent;
mod gic;
mod session;
mod smp;

/// Every failure of the run, as the line printed after `guest: FAIL: `.
type Res<T = ()> = Result<T, String>;

/// Label a failure.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Res<T>;
}
impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// `items` as text, separated by `sep`.
fn join<T: Display>(items: impl Iterator<Item = T>, sep: &str) -> String {
    let mut out = String::new();
    for (i, item) in items.enumerate() {
        let _ = write!(out, "{}{item}", if i == 0 { "" } else { sep });
    }
    out
}

fn check(ok: bool, what: &str) -> Res {
    ok.then_some(()).ok_or_else(|| format!("check failed: {what}"))
}

/// The identity map `aarch64-rt` turns on before any Rust code runs (on CPU 1 too), with the MMU
/// and both caches: the first GiB (PL011, GIC, virtio-mmio) Device-nGnRE (MAIR index 0), never
/// executable; the second (RAM) Normal write-back inner-shareable (index 1).
const DEVICE: Attr = Attr::VALID
    .union(Attr::ATTRIBUTE_INDEX_0)
    .union(Attr::ACCESSED)
    .union(Attr::PXN)
    .union(Attr::UXN);
const RAM: Attr = Attr::VALID
    .union(Attr::ATTRIBUTE_INDEX_1)
    .union(Attr::INNER_SHAREABLE)
    .union(Attr::ACCESSED)
    .union(Attr::UXN);
initial_pagetable!({
    let mut idmap = [0; 512];
    idmap[0] = DEVICE.bits();
    idmap[1] = RAM.bits() | 0x4000_0000;
    InitialPagetable(idmap)
});

entry!(main, 64);
exception_handlers!(Exceptions);

/// IRQs go to the GIC ([`gic::handle_irq`]); every other exception panics (the default), which
/// prints it and powers off.
struct Exceptions;
impl ExceptionHandlers for Exceptions {
    extern "C" fn irq_current(_: RegisterStateRef) {
        gic::handle_irq();
    }
}

/// QEMU `virt`'s PL011 (QEMU's "virt" board documentation: `VIRT_UART`); it transmits without
/// set-up.
const PL011: *mut PL011Registers = 0x0900_0000 as _;
static UART: spin::Mutex<Option<Uart<'static>>> = spin::Mutex::new(None);

fn console(args: core::fmt::Arguments<'_>) {
    without_irqs(|| {
        let mut uart = UART.lock();
        let uart = uart.get_or_insert_with(|| {
            // SAFETY: the PL011 is mapped Device memory by the initial page table, and this
            // `Uart`, created once under the lock, is the only thing that ever accesses it.
            Uart::new(unsafe { UniqueMmioPointer::new(NonNull::new(PL011).unwrap()) })
        });
        let _ = uart.write_fmt(args);
    });
}

/// `log` records on the console.
struct Logger;
impl log::Log for Logger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        println!("[{} {}] {}", r.level(), r.target(), r.args());
    }
    fn flush(&self) {}
}

/// The heap: `linked_list_allocator` behind a spin lock held with IRQs masked, so it is safe
/// from both CPUs and from an interrupt handler. `#[global_allocator]` is one static per program.
struct Heap(spin::Mutex<linked_list_allocator::Heap>);
// SAFETY: every access goes through the lock (CPUs exclude each other) with IRQs masked (no
// re-entry from a handler on the same CPU); the heap hands out disjoint blocks.
unsafe impl core::alloc::GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        let block = without_irqs(|| self.0.lock().allocate_first_fit(layout));
        block.map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        // SAFETY: the caller passes a non-null block this allocator returned for `layout`.
        without_irqs(|| unsafe { self.0.lock().deallocate(NonNull::new_unchecked(ptr), layout) });
    }
}
#[global_allocator]
static ALLOCATOR: Heap = Heap(spin::Mutex::new(linked_list_allocator::Heap::empty()));
const HEAP_SIZE: usize = 8 << 20;
static mut HEAP: [u8; HEAP_SIZE] = [0; HEAP_SIZE];

fn main(_: u64, _: u64, _: u64, _: u64) -> ! {
    // SAFETY: `HEAP` is used by the allocator alone, handed over once, before any allocation.
    unsafe { ALLOCATOR.0.lock().init((&raw mut HEAP).cast(), HEAP_SIZE) };
    // Only fails if a logger is already set, which nothing else does.
    let _ = log::set_logger(&Logger);
    log::set_max_level(log::LevelFilter::Info);
    println!("guest: fwipc aarch64 guest at EL1, heap {} KiB", HEAP_SIZE >> 10);
    match run() {
        Ok(()) => println!("guest: PASS"),
        Err(e) => println!("guest: FAIL: {e}"),
    }
    power_off()
}

fn power_off() -> ! {
    println!("guest: PSCI SYSTEM_OFF (hvc)");
    let _ = smccc::psci::system_off::<smccc::Hvc>();
    loop {
        fwipc_virtio::aarch64::wfe();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("guest: FAIL: panic: {info}");
    power_off()
}

/// For a bare-metal ELF, QEMU `virt` places the device tree blob at the start of RAM (QEMU's
/// "virt" board documentation, "Hardware configuration information for bare-metal programming").
const DTB: *const u8 = 0x4000_0000 as _;

/// Bring up the GIC, find and drive every SCMI device, run the concurrent stage, shut every agent
/// down; fail unless all of it worked.
fn run() -> Res {
    let timer = GenericTimer::new();
    // SAFETY: RAM mapped by the initial page table; nothing writes the blob (the image is above).
    let dt = unsafe { DeviceTree::from_ptr(DTB) }.ctx("device tree at the start of RAM")?;
    println!("guest: device tree from start of RAM, {} bytes", dt.total_size());
    println!("guest: cpu0: {}", smp::describe_mmu());
    gic::init(&dt)?;
    // Bit 14 of the 62.5 MHz counter: an event about every 0.5 ms bounds every `wfe`, so a wake-up
    // that arrives just before a `wfe` costs at most one period.
    enable_event_stream(14);
    let mut scmi = Vec::new();
    // SAFETY: every window is in the first GiB, identity-mapped Device memory (what `IdentityHal`
    // assumes); nothing else accesses the devices.
    for dev in unsafe { dt.virtio_mmio_devices::<IdentityHal>() } {
        let dev = dev.ctx("virtio-mmio probe")?;
        let irq = match (dev.node.interrupt, dev.gic_intid()) {
            (Some(i), Some(intid)) => format!("SPI {} (INTID {intid})", i.number),
            _ => "no GIC SPI".into(),
        };
        let (h, id) = (&dev.header, dev.device_id());
        let base = dev.node.base;
        println!(
            "virtio-mmio: {base:#x}: version {} device id {id} vendor {:#x}, {irq}",
            h.version, h.vendor_id
        );
        if id == DEVICE_ID_SCMI {
            scmi.push(dev);
        }
    }
    let windows = dt.virtio_mmio_nodes().count();
    println!("guest: {windows} virtio-mmio windows, {} virtio-scmi devices", scmi.len());
    check(!scmi.is_empty(), "a virtio-mmio device with id 32")?;
    let mut live = Vec::new();
    for (i, dev) in scmi.iter().enumerate() {
        match drive(i, dev, timer) {
            Ok(agent) => live.push(agent),
            // Go on with the other devices; the verdict below fails the run.
            Err(e) => println!("device[{i}] @ {:#x}: FAIL: {e}", dev.node.base),
        }
    }
    // Every device's interrupt-driven agent is still up: both CPUs now use them at once.
    let concurrent = if live.len() == scmi.len() {
        concurrent::run(&live, dt.psci_method().unwrap_or("?"), timer)
    } else {
        Err("check failed: every device up for the concurrent stage".into())
    };
    let mut driven = 0;
    for (i, (dev, agent)) in scmi.iter().zip(live).enumerate() {
        let found =
            format!("vendor \"{}\", sensors {:?}", agent.summary.vendor, agent.summary.sensors);
        match agent.finish() {
            Ok(()) => driven += 1,
            Err(e) => println!("device[{i}] @ {:#x}: FAIL: {e}", dev.node.base),
        }
        println!("device[{i}] @ {:#x}: {found}", dev.node.base);
    }
    println!("guest: drove {driven} of {} virtio-scmi devices", scmi.len());
    concurrent?;
    check(driven == scmi.len(), "every virtio-scmi device driven")
}

/// The three driver instances of one SCMI device, each after a device reset; the last one, the
/// interrupt-driven agent, is returned running.
fn drive(i: usize, dev: &VirtioMmioDevice, timer: GenericTimer) -> Res<session::Live> {
    let fresh = || {
        // SAFETY: the window is identity-mapped Device memory; only this transport drives the
        // device, and each is created after the previous one was shut down.
        unsafe { dev.transport::<IdentityHal>() }.ctx("virtio-mmio")
    };
    let transport = fresh()?;
    let polled = session::polled::<IdentityHal>(transport, timer, &format!("agent[{i}]"))?;

    let transport = fresh()?;
    let tag = format!("agent-bounce[{i}]");
    let bounced = session::polled::<session::SharedHal>(transport, timer, &tag)?;
    let pool = session::Shared::pool();
    let (start, len) = pool.device_window();
    println!(
        "{tag}: every DMA address in the shared pool {start:#x}..{:#x}; {} bytes still allocated after shutdown",
        start + len,
        pool.in_use()
    );
    check(bounced == polled, "the bounce-pool session sees the same platform")?;
    check(pool.in_use() == 0, "the bounce pool is empty after the session")?;

    let intid = dev.gic_intid().ok_or("the device tree gives the device no GIC interrupt")?;
    // GIC binding flags: 1/2 edge rising/falling, 4/8 level high/low.
    let edge = dev.node.interrupt.is_some_and(|i| i.flags & 0x3 != 0);
    let transport = fresh()?;
    let live = session::interrupt(transport, timer, intid, edge, &format!("agent-irq[{i}]"))?;
    check(live.summary == polled, "every agent session sees the same platform")?;
    Ok(live)
}
