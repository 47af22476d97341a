//! Interrupts: a small GICv2 driver for QEMU `virt,gic-version=2`, the IRQ entry glue, handler
//! registration, and the idle step. Register layout and semantics: Arm "Generic Interrupt
//! Controller Architecture Specification, GIC architecture version 2" (IHI 0048B), §4.3
//! (distributor) and §4.4 (CPU interface). The devices' INTIDs come from the device tree
//! (`fwipc_virtio::discovery`).
//!
//! (The `arm-gic` crate's GICv2 driver was considered: it has no way to set an SPI's target CPU
//! (`GICD_ITARGETSR`), which a multi-CPU GICv2 needs before it forwards an SPI anywhere, and it
//! wants exclusive `&mut` access where this guest shares the distributor between CPUs.)
//!
//! # Interrupt discipline (SMP)
//! - Every CPU enables its own (banked) CPU interface ([`init_cpu`]) and then runs with IRQs
//!   unmasked (`PSTATE.I` clear) everywhere, except inside the IRQ handler (the exception entry
//!   masks them) and inside the short [`without_irqs`] sections of the heap allocator and of
//!   handler (un)registration.
//! - Every device SPI is routed to CPU 0 only (`GICD_ITARGETSR`), so device handlers run on CPU 0
//!   while any CPU may be sending. The handler calls `ScmiVirtio::complete`, which never waits for
//!   a lock (it records the interrupt and lets the lock holder, on any CPU, run the pass), so it
//!   cannot deadlock against the code it preempted or another CPU.
//! - Handlers are registered and unregistered on CPU 0 with IRQs masked, so the handler slot a
//!   CPU-0 interrupt reads can never be freed under it.

use alloc::boxed::Box;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// QEMU `virt` GICv2 distributor (`VIRT_GIC_DIST`).
pub const VIRT_GICD_BASE: usize = 0x0800_0000;
/// QEMU `virt` GICv2 CPU interface (`VIRT_GIC_CPU`).
pub const VIRT_GICC_BASE: usize = 0x0801_0000;

const GICD_CTLR: usize = 0x000;
const GICD_ISENABLER: usize = 0x100;
const GICD_ICENABLER: usize = 0x180;
const GICD_ICPENDR: usize = 0x280;
const GICD_IPRIORITYR: usize = 0x400;
const GICD_ITARGETSR: usize = 0x800;
const GICD_ICFGR: usize = 0xc00;
const GICC_CTLR: usize = 0x000;
const GICC_PMR: usize = 0x004;
const GICC_IAR: usize = 0x00c;
const GICC_EOIR: usize = 0x010;
const SPURIOUS: u32 = 1023;

/// The CPU whose interface receives every device SPI.
pub const IRQ_CPU: usize = 0;
/// CPUs the counters track.
pub const MAX_CPUS: usize = 2;
/// Device handlers installed at once.
const SLOTS: usize = 4;

/// Interrupts handled, per CPU, and spurious/unclaimed ones.
static IRQS_HANDLED: [AtomicU64; MAX_CPUS] = [AtomicU64::new(0), AtomicU64::new(0)];
static IRQS_SPURIOUS: AtomicU64 = AtomicU64::new(0);

/// The registered handlers: each a `Box<Handler>` turned into a pointer, or null.
static HANDLERS: [AtomicPtr<Handler>; SLOTS] = [
    AtomicPtr::new(core::ptr::null_mut()),
    AtomicPtr::new(core::ptr::null_mut()),
    AtomicPtr::new(core::ptr::null_mut()),
    AtomicPtr::new(core::ptr::null_mut()),
];

/// A device interrupt handler for one INTID.
struct Handler {
    intid: u32,
    run: Box<dyn Fn() + Send + Sync>,
}

fn gicd(off: usize) -> *mut u32 {
    (VIRT_GICD_BASE + off) as *mut u32
}

fn gicc(off: usize) -> *mut u32 {
    (VIRT_GICC_BASE + off) as *mut u32
}

fn write(reg: *mut u32, v: u32) {
    // SAFETY: `reg` is a GICv2 register of QEMU `virt` (`gicd`/`gicc` with a register offset from
    // IHI 0048B), mapped Device-nGnRE by `mmu.rs`; volatile for device registers. Concurrent
    // writers touch distinct registers or write-1-to-set/clear ones, so no update is lost.
    unsafe { reg.write_volatile(v) }
}

fn read(reg: *mut u32) -> u32 {
    // SAFETY: as in `write`. Reading GICC_IAR acknowledges the interrupt (wanted).
    unsafe { reg.read_volatile() }
}

fn write_byte(reg: *mut u32, index: usize, v: u8) {
    // SAFETY: GICD_IPRIORITYR and GICD_ITARGETSR are byte-accessible (IHI 0048B §4.3.11,
    // §4.3.12); `index` is an INTID below 1020, inside the 1 KiB arrays. As in `write`.
    unsafe { reg.cast::<u8>().add(index).write_volatile(v) }
}

/// The index (MPIDR_EL1.Aff0) of the calling CPU: 0 or 1 on this guest's QEMU `virt`.
pub fn cpu_index() -> usize {
    let mpidr: u64;
    // SAFETY: reading MPIDR_EL1 at EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack)) };
    (mpidr & 0xff) as usize
}

/// Disable and clear every SPI, then enable the distributor (once, on the boot CPU, before any
/// CPU interface). Firmware or an earlier boot stage may have left SPIs enabled (QEMU's reset
/// state has none), and an enabled, pending SPI with no handler would storm once IRQs are on.
pub fn init_distributor() {
    write(gicd(GICD_CTLR), 0);
    // Words 1..32 cover INTIDs 32..1023 (IHI 0048B §4.3.6, §4.3.8); words past the implemented
    // ones are reserved, RAZ/WI.
    for w in 1..32 {
        write(gicd(GICD_ICENABLER + 4 * w), u32::MAX);
        write(gicd(GICD_ICPENDR + 4 * w), u32::MAX);
    }
    write(gicd(GICD_CTLR), 1);
}

/// Disable this CPU's (banked) PPIs, enable its CPU interface with every priority unmasked, then
/// unmask IRQs on this CPU for good.
pub fn init_cpu() {
    // Word 0 is banked per CPU: bits 16..31 are the PPIs (SGI enables may be fixed, IHI 0048B
    // §4.3.5); the guest uses neither.
    write(gicd(GICD_ICENABLER), 0xffff_0000);
    write(gicc(GICC_PMR), 0xff);
    write(gicc(GICC_CTLR), 1);
    // SAFETY: clearing PSTATE.I is safe once the vectors are installed (boot.rs does it before
    // any Rust code) and every lock an IRQ handler takes is interrupt-safe (see the module docs).
    // The isb makes the unmask take effect before the next instruction (Arm ARM, "Synchronization
    // requirements for AArch64 System registers": writes to PSTATE fields via MSR are
    // context-synchronized by an isb).
    unsafe { core::arch::asm!("msr daifclr, #2", "isb", options(nomem, nostack)) };
}

/// Run `f` with IRQs masked on this CPU (restoring the previous mask after): for locks that an
/// IRQ handler on this CPU may also take (the heap allocator's).
pub fn without_irqs<R>(f: impl FnOnce() -> R) -> R {
    let daif: u64;
    // SAFETY: reading DAIF and setting PSTATE.I only masks IRQs on this CPU. `nomem` is not given:
    // the asm also orders the caller's memory accesses after the mask. Masking needs no isb: an
    // MSR to DAIFSet takes effect for the instructions that follow it.
    unsafe { core::arch::asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif, options(nostack)) };
    let r = f();
    // SAFETY: restores the saved mask (unmasks only if IRQs were unmasked on entry).
    unsafe { core::arch::asm!("msr daif, {}", in(reg) daif, options(nostack)) };
    r
}

/// Install `run` as the handler of SPI `intid`, routed to CPU [`IRQ_CPU`], until the returned
/// registration is dropped. Call on CPU [`IRQ_CPU`]; `None` if every slot is taken or called on
/// another CPU.
///
/// `edge`: configure the SPI edge-triggered (the device tree's interrupt flags say so for QEMU
/// `virt`'s virtio-mmio devices, flag 1 "edge rising"). This matters with a handler that may defer
/// its work: `ScmiVirtio::complete` leaves the device's interrupt unacknowledged when the channel
/// lock is held (the lock holder acknowledges it at release), so a level-sensitive configuration
/// would re-signal the still-high line as soon as the handler returns, forever, starving the very
/// code that holds the lock on this CPU. Edge-triggered, the line's next rising edge comes only
/// after the acknowledgement (the pass acknowledges before it drains the queues, so nothing that
/// arrives later is missed).
pub fn register(intid: u32, edge: bool, run: Box<dyn Fn() + Send + Sync>) -> Option<Registration> {
    if cpu_index() != IRQ_CPU || !(32..1020).contains(&intid) {
        return None;
    }
    let handler = Box::into_raw(Box::new(Handler { intid, run }));
    let slot = without_irqs(|| {
        HANDLERS.iter().position(|s| {
            // Release: the handler's fields are visible to the IRQ path's Acquire load.
            s.compare_exchange(
                core::ptr::null_mut(),
                handler,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
        })
    });
    let Some(slot) = slot else {
        // SAFETY: `handler` came from `Box::into_raw` just above and was never published.
        drop(unsafe { Box::from_raw(handler) });
        return None;
    };
    let i = intid as usize;
    // GICD_ICFGR: two bits per INTID, the upper one set for edge-triggered (IHI 0048B §4.3.13).
    // Only this CPU writes it (registration is on CPU 0), so the read-modify-write is not racy.
    let cfg = gicd(GICD_ICFGR + 4 * (i / 16));
    let bit = 1 << (2 * (i % 16) + 1);
    write(
        cfg,
        if edge {
            read(cfg) | bit
        } else {
            read(cfg) & !bit
        },
    );
    write_byte(gicd(GICD_IPRIORITYR), i, 0xa0);
    // Bit n of a target byte is CPU interface n (IHI 0048B §4.3.12).
    write_byte(gicd(GICD_ITARGETSR), i, 1 << IRQ_CPU);
    write(gicd(GICD_ISENABLER + 4 * (i / 32)), 1 << (i % 32));
    Some(Registration { slot, intid })
}

/// Keeps a handler installed; uninstalls it (and disables its INTID) when dropped. Drop it on CPU
/// [`IRQ_CPU`] (the only CPU that runs handlers).
pub struct Registration {
    slot: usize,
    intid: u32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let i = self.intid as usize;
        // IRQs masked on the handling CPU: no handler is running (it would have to be this CPU's,
        // and it would have preempted us) and none starts until the slot is clear.
        let handler = without_irqs(|| {
            write(gicd(GICD_ICENABLER + 4 * (i / 32)), 1 << (i % 32));
            // Acquire: pairs with `register`'s Release (we free what it published).
            HANDLERS[self.slot].swap(core::ptr::null_mut(), Ordering::Acquire)
        });
        if let Some(h) = NonNull::new(handler) {
            // SAFETY: the pointer came from `Box::into_raw` in `register` and the slot no longer
            // holds it; no handler can be using it (see above).
            drop(unsafe { Box::from_raw(h.as_ptr()) });
        }
    }
}

/// Called from the IRQ vector (IRQs masked, registers saved): acknowledge, dispatch, end.
#[no_mangle]
extern "C" fn guest_irq() {
    let iar = read(gicc(GICC_IAR));
    let intid = iar & 0x3ff;
    if intid == SPURIOUS {
        // Nothing pending any more: on SMP, another CPU acknowledged the device (a level-triggered
        // line dropped) between the signal and this read. Relaxed: a statistics counter.
        IRQS_SPURIOUS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut handled = false;
    for slot in &HANDLERS {
        // Acquire: pairs with `register`'s Release store.
        let h = slot.load(Ordering::Acquire);
        // SAFETY: a non-null slot points to the live `Handler` of a `Registration`, which is only
        // freed with IRQs masked on this CPU (the only one handlers run on).
        if let Some(h) = unsafe { h.as_ref() } {
            if h.intid == intid {
                (h.run)();
                handled = true;
                break;
            }
        }
    }
    // Relaxed: statistics counters.
    if handled {
        IRQS_HANDLED[cpu_index().min(MAX_CPUS - 1)].fetch_add(1, Ordering::Relaxed);
    } else {
        IRQS_SPURIOUS.fetch_add(1, Ordering::Relaxed);
    }
    write(gicc(GICC_EOIR), iar);
}

/// Interrupts handled so far, by CPU.
pub fn handled_by_cpu() -> [u64; MAX_CPUS] {
    // Relaxed: statistics.
    [0, 1].map(|c| IRQS_HANDLED[c].load(Ordering::Relaxed))
}

/// Interrupts handled (all CPUs) and spurious/unclaimed ones so far.
pub fn counts() -> (u64, u64) {
    // Relaxed: statistics.
    (
        handled_by_cpu().iter().sum(),
        IRQS_SPURIOUS.load(Ordering::Relaxed),
    )
}

/// The idle step between polls: sleep until an event (an interrupt, a `sev` from a waker on
/// another CPU, or the generic timer's event stream that bounds every sleep, see
/// `fwipc_virtio::aarch64::enable_event_stream`). IRQs are unmasked, so a pending interrupt is
/// taken right away.
pub fn idle() {
    fwipc_virtio::aarch64::wfe();
}
