//! Interrupts: QEMU `virt`'s GICv3 through the `arm-gic` crate, handler registration, and the
//! IRQ path. The distributor and redistributor windows come from the device tree's `arm,gic-v3`
//! node; the devices' INTIDs from their `interrupts` property (`fwipc_virtio::discovery`).
//!
//! # Interrupt discipline (SMP)
//! - Both CPUs run with IRQs unmasked everywhere except inside the IRQ handler (the exception
//!   entry masks them) and the short `without_irqs` sections (heap, console, this module's
//!   locks), so no lock an IRQ handler takes can be held by the code it preempted.
//! - Every device SPI is routed to CPU 0 (`GICD_IROUTER`), so handlers run on CPU 0 while either
//!   CPU may be sending. The handler calls `ScmiVirtio::complete`, which never waits for a lock (it
//!   records the interrupt and lets the lock holder, on any CPU, run the pass), so it cannot
//!   deadlock against the code it preempted or against the other CPU.
//! - SPIs are configured edge-triggered, as the device tree says for virtio-mmio: `complete` may
//!   leave the device's interrupt unacknowledged until the lock holder runs the pass; a
//!   level-sensitive line would re-signal at once, forever, starving the very code that holds the
//!   lock on this CPU. An edge comes again only after the acknowledgement.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::{GicCpuInterface, GicV3};
use arm_gic::{IntId, InterruptGroup, Trigger, UniqueMmioPointer};
use fwipc_virtio::aarch64::without_irqs;
use fwipc_virtio::discovery::DeviceTree;

use crate::{Ctx, Res};

/// CPUs of the run (`-smp 2`); the GIC driver sets up this many redistributors.
pub const CPUS: usize = 2;

static GIC: spin::Once<spin::Mutex<GicV3<'static>>> = spin::Once::new();
/// Installed handlers by INTID. Only CPU 0 takes interrupts and only CPU 0 (un)registers, with
/// IRQs masked, so the IRQ path never finds the lock held by the code it preempted.
type Handler = Box<dyn Fn() + Send + Sync>;
static HANDLERS: spin::Mutex<Vec<(u32, Handler)>> = spin::Mutex::new(Vec::new());
/// Interrupts handled per CPU, and acknowledged ones with no handler. Relaxed everywhere:
/// statistics.
static HANDLED: [AtomicU64; CPUS] = [AtomicU64::new(0), AtomicU64::new(0)];
static UNCLAIMED: AtomicU64 = AtomicU64::new(0);

/// Set up the distributor and every redistributor, enable CPU 0's interface and unmask IRQs.
pub fn init(dt: &DeviceTree<'_>) -> Res {
    let mut regs = dt.compatible_regions("arm,gic-v3");
    let (Some(d), Some(r)) = (regs.next(), regs.next()) else {
        return Err("no arm,gic-v3 node with distributor and redistributor windows (run QEMU with gic-version=3)".into());
    };
    // SAFETY: the device tree's GICv3 windows, in the first GiB (Device memory in the initial page
    // table); this driver, kept in `GIC`, is the only thing that accesses them.
    let gic = unsafe {
        let gicd = UniqueMmioPointer::new(NonNull::new(d.base as *mut Gicd).ok_or("GICD at 0")?);
        GicV3::new(gicd, NonNull::new(r.base as *mut GicrSgi).ok_or("GICR at 0")?, CPUS)
    };
    let gic = gic.ctx("GICv3")?;
    let gic = GIC.call_once(|| spin::Mutex::new(gic));
    without_irqs(|| gic.lock().setup(0));
    println!("guest: GICv3 distributor {:#x}, redistributors {:#x}", d.base, r.base);
    init_cpu(0);
    Ok(())
}

/// Enable this CPU's interface (group 1, every priority) and unmask IRQs on it for good.
pub fn init_cpu(cpu: usize) {
    if let Some(gic) = GIC.get() {
        without_irqs(|| gic.lock().init_cpu(cpu));
    }
    GicCpuInterface::enable_group1(true);
    GicCpuInterface::set_priority_mask(0xff);
    arm_gic::irq_enable();
}

/// Keeps a handler installed; uninstalls it and disables its INTID when dropped (on CPU 0).
pub struct Registration(u32);

/// Install `run` as the handler of SPI `intid`, edge-triggered or level-sensitive, routed to
/// CPU 0, until the returned registration is dropped. Call on CPU 0.
pub fn register(intid: u32, edge: bool, run: Box<dyn Fn() + Send + Sync>) -> Res<Registration> {
    let gic = GIC.get().ok_or("GIC not initialised")?;
    let id = IntId::spi(intid.checked_sub(32).ok_or("not an SPI")?);
    let trigger = if edge { Trigger::Edge } else { Trigger::Level };
    without_irqs(|| {
        HANDLERS.lock().push((intid, run));
        let mut gic = gic.lock();
        gic.set_trigger(id, None, trigger)?;
        gic.set_interrupt_priority(id, None, 0x80)?;
        // MPIDR affinity 0.0.0.0: CPU 0.
        gic.distributor().set_routing(id, Some(0))?;
        gic.enable_interrupt(id, None, true)
    })
    .ctx("GIC SPI set-up")?;
    Ok(Registration(intid))
}

impl Drop for Registration {
    fn drop(&mut self) {
        let id = IntId::spi(self.0 - 32);
        without_irqs(|| {
            if let Some(gic) = GIC.get() {
                let _ = gic.lock().enable_interrupt(id, None, false);
            }
            HANDLERS.lock().retain(|(i, _)| *i != self.0);
        });
    }
}

/// The IRQ path (IRQs masked, caller-saved registers saved): acknowledge, dispatch, end.
pub fn handle_irq() {
    let Some(id) = GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1) else {
        UNCLAIMED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let intid = u32::from(id);
    let handlers = HANDLERS.lock();
    match handlers.iter().find(|(i, _)| *i == intid) {
        Some((_, run)) => {
            run();
            HANDLED
                [usize::from(arm_sysregs::el1::accessors::read_mpidr_el1().aff0()).min(CPUS - 1)]
            .fetch_add(1, Ordering::Relaxed);
        }
        None => {
            UNCLAIMED.fetch_add(1, Ordering::Relaxed);
        }
    }
    drop(handlers);
    GicCpuInterface::end_interrupt(id, InterruptGroup::Group1);
}

/// Interrupts handled so far, by CPU, and the unclaimed ones.
pub fn counts() -> ([u64; CPUS], u64) {
    let handled = [0, 1].map(|c| HANDLED[c].load(Ordering::Relaxed));
    (handled, UNCLAIMED.load(Ordering::Relaxed))
}

/// The idle step between polls: `wfe` until an event (an interrupt, a `sev` from a waker on the
/// other CPU, or the timer's event stream that bounds every sleep).
pub fn idle() {
    fwipc_virtio::aarch64::wfe();
}
