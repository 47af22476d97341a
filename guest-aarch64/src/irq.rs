//! Interrupts: a GICv2 driver for QEMU `virt,gic-version=2`, the IRQ entry glue, and
//! [`wait_for_interrupt`], the idle step that takes interrupts only at a safe point (its `wfe` is
//! bounded by the generic timer's event stream, `fwipc_virtio::aarch64::enable_event_stream`). The
//! device's INTID comes from the device tree (`fwipc_virtio::discovery`).
//!
//! Locking discipline (one CPU): IRQs stay masked (`PSTATE.I`) everywhere except inside
//! [`wait_for_interrupt`], which the agent calls between polls while it holds no lock. So an
//! interrupt handler (which takes the SCMI transport's spin lock in `ScmiVirtio::complete`) can
//! never interrupt a holder of that lock and deadlock.
//!
//! Handler registration is necessarily global (there is one IRQ vector): [`Gic::register`] stores a
//! pointer to a handler in a registration slot guarded by an RAII [`Registration`] that clears it
//! on drop, so the handler can never outlive what it borrows.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// QEMU `virt` GICv2 distributor (`VIRT_GIC_DIST`).
pub const VIRT_GICD_BASE: usize = 0x0800_0000;
/// QEMU `virt` GICv2 CPU interface (`VIRT_GIC_CPU`).
pub const VIRT_GICC_BASE: usize = 0x0801_0000;

const GICD_CTLR: usize = 0x000;
const GICD_ISENABLER: usize = 0x100;
const GICD_ICENABLER: usize = 0x180;
const GICD_IPRIORITYR: usize = 0x400;
const GICD_ITARGETSR: usize = 0x800;
const GICC_CTLR: usize = 0x000;
const GICC_PMR: usize = 0x004;
const GICC_IAR: usize = 0x00c;
const GICC_EOIR: usize = 0x010;
const SPURIOUS: u32 = 1023;

/// Counts of interrupts taken, for the report.
static IRQS_HANDLED: AtomicU64 = AtomicU64::new(0);
static IRQS_SPURIOUS: AtomicU64 = AtomicU64::new(0);

/// The registered handler: a `*const Handler` or null.
static HANDLER: AtomicPtr<Handler> = AtomicPtr::new(core::ptr::null_mut());

/// A device interrupt handler for one INTID.
pub struct Handler {
    intid: u32,
    run: *const (dyn Fn() + Sync),
}

/// The GICv2 of QEMU `virt`.
pub struct Gic {
    gicd: NonNull<u32>,
    gicc: NonNull<u32>,
}

impl Gic {
    /// # Safety
    /// The GICv2 distributor and CPU interface must be at `VIRT_GICD_BASE`/`VIRT_GICC_BASE`
    /// (QEMU `virt` with `gic-version=2`), and nothing else may program them.
    pub unsafe fn virt() -> Self {
        Gic {
            // SAFETY: constant non-null addresses.
            gicd: unsafe { NonNull::new_unchecked(VIRT_GICD_BASE as *mut u32) },
            // SAFETY: constant non-null addresses.
            gicc: unsafe { NonNull::new_unchecked(VIRT_GICC_BASE as *mut u32) },
        }
    }

    fn gicd_write(&mut self, off: usize, v: u32) {
        // SAFETY: `off` is a distributor register offset (aligned, inside the 64 KiB frame
        // `virt` promises); volatile for device registers.
        unsafe { self.gicd.byte_add(off).write_volatile(v) }
    }

    fn gicd_write_byte(&mut self, off: usize, v: u8) {
        // SAFETY: IPRIORITYR/ITARGETSR are byte-accessible (GICv2 §4.3.11, §4.3.12); as above.
        unsafe { self.gicd.cast::<u8>().byte_add(off).write_volatile(v) }
    }

    fn gicc_write(&mut self, off: usize, v: u32) {
        // SAFETY: `off` is a CPU interface register offset; volatile for device registers.
        unsafe { self.gicc.byte_add(off).write_volatile(v) }
    }

    fn gicc_read(&self, off: usize) -> u32 {
        // SAFETY: as in `gicc_write`. Reading IAR acknowledges the interrupt (wanted).
        unsafe { self.gicc.byte_add(off).read_volatile() }
    }

    /// Enable the distributor and this CPU's interface, all priorities unmasked.
    pub fn init(&mut self) {
        self.gicd_write(GICD_CTLR, 1);
        self.gicc_write(GICC_PMR, 0xff);
        self.gicc_write(GICC_CTLR, 1);
    }

    /// Route `intid` (an SPI) to CPU 0 at a middle priority and enable it.
    pub fn enable(&mut self, intid: u32) {
        let i = intid as usize;
        self.gicd_write_byte(GICD_IPRIORITYR + i, 0xa0);
        self.gicd_write_byte(GICD_ITARGETSR + i, 1);
        self.gicd_write(GICD_ISENABLER + 4 * (i / 32), 1 << (i % 32));
    }

    /// Disable `intid`.
    pub fn disable(&mut self, intid: u32) {
        let i = intid as usize;
        self.gicd_write(GICD_ICENABLER + 4 * (i / 32), 1 << (i % 32));
    }

    /// Install `run` as the handler of `intid` until the returned registration is dropped.
    /// `handler` is storage for the registration (it must outlive it, hence the borrow).
    pub fn register<'a>(
        &'a mut self,
        intid: u32,
        run: &'a (dyn Fn() + Sync),
        handler: &'a mut Option<Handler>,
    ) -> Registration<'a> {
        // SAFETY: only the lifetime is erased. The pointer is dereferenced by `guest_irq` while
        // registered, and the `Registration<'a>` clears the slot before `'a` ends.
        let run: *const (dyn Fn() + Sync) = unsafe {
            core::mem::transmute::<&'a (dyn Fn() + Sync), &'static (dyn Fn() + Sync)>(run)
        };
        let h = handler.insert(Handler { intid, run });
        // Release: the handler's fields are visible to the IRQ path that Acquire-loads the slot.
        HANDLER.store(h as *mut Handler, Ordering::Release);
        self.enable(intid);
        Registration { gic: self, intid }
    }
}

/// Keeps a handler installed; uninstalls it (and disables its INTID) when dropped.
pub struct Registration<'a> {
    gic: &'a mut Gic,
    intid: u32,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.gic.disable(self.intid);
        // Release: pairs with the IRQ path's Acquire load (IRQs are masked here anyway: the
        // slot is only read by `guest_irq`, which cannot run outside `wait_for_interrupt`).
        HANDLER.store(core::ptr::null_mut(), Ordering::Release);
    }
}

/// Called from the IRQ vector (IRQs masked, registers saved): acknowledge, dispatch, end.
#[no_mangle]
extern "C" fn guest_irq() {
    // SAFETY: the guest only takes IRQs after `Gic::init` on QEMU `virt` (the vector is only
    // reachable from `wait_for_interrupt`), and this is the only other user of the CPU interface.
    let mut gic = unsafe { Gic::virt() };
    let iar = gic.gicc_read(GICC_IAR);
    let intid = iar & 0x3ff;
    if intid == SPURIOUS {
        // Relaxed: a statistics counter.
        IRQS_SPURIOUS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // Acquire: pairs with `register`'s Release store.
    let h = HANDLER.load(Ordering::Acquire);
    // SAFETY: a non-null slot points to the `Handler` of a live `Registration` (cleared before the
    // handler or what `run` borrows go away), and `run` is `Sync`.
    match unsafe { h.as_ref() } {
        Some(h) if h.intid == intid => {
            // SAFETY: as above; `run` lives as long as the registration.
            unsafe { (*h.run)() };
            // Relaxed: a statistics counter.
            IRQS_HANDLED.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            // Relaxed: a statistics counter.
            IRQS_SPURIOUS.fetch_add(1, Ordering::Relaxed);
        }
    }
    gic.gicc_write(GICC_EOIR, iar);
}

/// Interrupts handled and spurious/unclaimed ones so far.
pub fn counts() -> (u64, u64) {
    // Relaxed: statistics.
    (
        IRQS_HANDLED.load(Ordering::Relaxed),
        IRQS_SPURIOUS.load(Ordering::Relaxed),
    )
}

/// The idle step between polls: unmask IRQs, sleep until an event (an interrupt, or the event
/// stream), mask again. Pending interrupts are taken right after the unmask. Call only while
/// holding no lock an interrupt handler may take.
pub fn wait_for_interrupt() {
    // SAFETY: unmasking IRQs is safe here by the caller's contract (no lock held); the vector
    // saves and restores every caller-saved register, and `wfe` only waits.
    unsafe {
        core::arch::asm!(
            "msr daifclr, #2",
            "isb",
            "wfe",
            "msr daifset, #2",
            "isb",
            options(nostack)
        )
    };
}
